"""Pinned files are checked against their bytes, not their names.

The Hugging Face cache names an LFS blob by the sha256 the hub advertised for it; that
name is what an unpinned file is trusted by. A release's ``sha256`` pin exists for the
case where a hub or mirror (``HF_ENDPOINT``) serves other bytes than it names, so a file
a pin covers is hashed from its bytes. Hashing a multi-gigabyte file on every load would
make loads slow, so a verified digest is remembered with the file's identity and state
(device, inode, size, modification and change times, all from one ``stat``): while
those stay the same, the bytes are taken as the ones hashed. Any rewrite of the file
changes them, and the next check hashes it again.

The memo lives in this process and in ``$SAEREG_CACHE/verified-sha256.json``, so later
processes stay cheap too; a cache directory this user cannot write (a shared cache read
by colleagues) only costs the hashing, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from saereg.base.settings import cache_dir
from saereg.store.tempfiles import create_locked

MEMO_NAME = "verified-sha256.json"
_CHUNK = 1 << 20
#: At most this many files are remembered (the oldest records go first).
MAX_RECORDS = 10_000

#: file path → (device, inode, size, mtime_ns, ctime_ns, sha256); per memo file.
_memo: dict[Path, dict[str, list[object]]] = {}


def _stamp(path: Path) -> list[object]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _memo_file() -> Path:
    return cache_dir() / MEMO_NAME


def _records(memo_file: Path) -> dict[str, list[object]]:
    records = _memo.get(memo_file)
    if records is None:
        try:
            loaded = json.loads(memo_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        records = {
            k: v
            for k, v in (loaded.items() if isinstance(loaded, dict) else ())
            if isinstance(v, list) and len(v) == 6
        }
        _memo[memo_file] = records
    return records


def _remember(memo_file: Path, records: dict[str, list[object]]) -> None:
    """Write the memo atomically; silently skipped where the cache cannot be written."""
    while len(records) > MAX_RECORDS:
        records.pop(next(iter(records)))
    with contextlib.suppress(OSError):
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_locked(memo_file)
        try:
            with os.fdopen(os.dup(fd), "w", encoding="utf-8") as fh:
                json.dump(records, fh, separators=(",", ":"))
            os.replace(tmp, memo_file)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified_sha256(path: Path) -> str:
    """The sha256 of the bytes of `path` (a symlink is followed): hashed in full the
    first time, and again whenever the file's identity or state changed since."""
    real = path.resolve()
    memo_file = _memo_file()
    records = _records(memo_file)
    before = _stamp(real)
    known = records.get(str(real))
    if known is not None and known[:5] == before and isinstance(known[5], str):
        return known[5]
    digest = hash_file(real)
    if _stamp(real) == before:  # not rewritten while it was read
        records.pop(str(real), None)
        records[str(real)] = [*before, digest]
        _remember(memo_file, records)
    return digest


def forget() -> None:
    """Drop the in-process memo (tests; the file stays)."""
    _memo.clear()
