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

Which file a ``sha256:`` key names (`pinned_path`), and the check of fetched files
against the pins (`verify_checksums`), live here too: fetch.py downloads, this module
decides whether the bytes are the ones the release pinned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from saereg.base.errors import SaeregError
from saereg.base.settings import cache_dir
from saereg.catalogue.records import Release, SAEEntry
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


# --------------------------------------------------------------------------- pins


class ChecksumError(SaeregError):
    """A downloaded file does not match the checksum pinned in its release."""


def pinned_path(sae_path: str, key: str, candidates: Iterable[str]) -> str | None:
    """The file a `sha256:` key names. Keys are relative to the SAE's path (as the schema
    documents); a full repository path, or the file name of an SAE whose path is a file,
    are understood too."""
    base = sae_path.strip("/")
    pool = set(candidates)
    for candidate in (f"{base}/{key}", key):
        if candidate in pool:
            return candidate
    if base in pool and base.rsplit("/", 1)[-1] == key:
        return base
    return None


def pinned_files(entry: SAEEntry, candidates: Iterable[str]) -> set[str]:
    """The repository paths among `candidates` that the entry's sha256 pins cover."""
    pool = list(candidates)
    found = (pinned_path(entry.path, key, pool) for key in entry.sha256 or {})
    return {path for path in found if path is not None}


def verify_checksums(
    release: Release,
    entry: SAEEntry,
    hashes: Mapping[str, str],
    declared: Iterable[str] = (),
) -> None:
    """Every pin names a file this SAE reads, and every fetched pinned file matches."""
    declared = list(declared)
    for key, expected in (entry.sha256 or {}).items():
        path = pinned_path(entry.path, key, hashes)
        if path is None:
            if pinned_path(entry.path, key, declared) is not None:
                continue  # an optional file upstream does not have, or not fetched now
            raise ChecksumError(
                f"{release.name}/{entry.id}: the release pins a checksum for {key!r}, which "
                f"is none of the files this SAE reads ({', '.join(declared) or 'none'}); "
                "sha256 keys are paths relative to the SAE's path"
            )
        got = hashes[path]
        if got != expected:
            raise ChecksumError(
                f"{release.name}/{entry.id}: {path} has sha256 {got}, but the release pins "
                f"{expected}. The upstream file changed (or the download is corrupt); refusing "
                "to load it. Delete it from the cache to retry, or report the release."
            )
