"""saereg's cache of canonical entries: list, verify, prune, remove (`saereg cache`).

What the hub's own ``hf cache scan`` / ``delete`` are for its cache, for saereg's:
entries are ``$SAEREG_CACHE/canonical/RELEASE/ID@REVISION.safetensors``. An in-place
entry is small and reads its weights from publisher files in the HF cache; those files
belong to the hub's cache and are never deleted here (their share is reported, so a
user can see what `hf cache delete` would break). "Last use" is the entry file's
modification time, which `load_sae` / `fetch_canonical` set on every load (access times
are unreliable: relatime mounts, and reading a header for `ls` would update them).
No torch import: every command reads headers only (and hashes files for `verify`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from saereg.base.errors import SaeregError, UnknownReferenceError
from saereg.base.settings import cache_dir
from saereg.catalogue.refs import close_matches
from saereg.catalogue.resolver import get_release, resolve_entry
from saereg.store import fetch
from saereg.store.canonical import read_config
from saereg.store.digest import PLACEHOLDER, stored_digest, tensor_digest
from saereg.store.in_place import blob_path, source_files
from saereg.store.layer_config import (
    LAYER_ID_SEP,
    LAYERED_KINDS,
    is_layer_file,
    read_layer_config,
)
from saereg.store.local import HF_RELEASE_PREFIX, LOCAL_RELEASE
from saereg.store.sae_config import ConfigError
from saereg.store.tensors import CanonicalFileError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


class CacheUsageError(SaeregError):
    """A `saereg cache` argument is not valid (exit code 2)."""

    exit_code = 2


@dataclass
class Source:
    """A publisher file an in-place entry reads from."""

    repo_path: str
    blob: Path
    size: int
    sha256: str

    @property
    def present(self) -> bool:
        try:
            return self.blob.stat().st_size == self.size
        except OSError:
            return False


@dataclass
class Entry:
    path: Path
    release: str
    sae_id: str
    revision: str
    size: int
    last_used: float
    storage: str  # "file", "in_place" or "unreadable"
    sources: list[Source] = field(default_factory=list)
    problem: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.release}/{self.sae_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "revision": self.revision,
            "path": str(self.path),
            "storage": self.storage,
            "size": self.size,
            "publisher_bytes": sum(s.size for s in self.sources),
            "sources_present": all(s.present for s in self.sources),
            "last_used": self.last_used,
            "problem": self.problem,
        }


def canonical_root() -> Path:
    return cache_dir() / "canonical"


def mark_used(path: Path) -> None:
    """Record a load (the file's contents never change after it is written)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _entry(path: Path) -> Entry:
    stem = path.name.removesuffix(".safetensors")
    sae_id, _, revision = stem.rpartition("@")
    st = path.stat()
    entry = Entry(
        path,
        unquote(path.parent.name),
        unquote(sae_id),
        unquote(revision),
        st.st_size,
        st.st_mtime,
        "file",
    )
    try:
        cfg = _read_any_config(path)
    except (CanonicalFileError, ConfigError, OSError) as exc:
        entry.storage, entry.problem = "unreadable", str(exc)
        return entry
    files = source_files(cfg)  # type: ignore[arg-type]
    if files:
        entry.storage = "in_place"
        entry.sources = [
            Source(repo_path, blob_path(rec), int(rec["size"]), str(rec["sha256"]))
            for repo_path, rec in sorted(files.items())
        ]
        missing = [s.repo_path for s in entry.sources if not s.present]
        if missing:
            entry.problem = "publisher file(s) gone from the HF cache: " + ", ".join(missing)
    return entry


def _read_any_config(path: Path, full_schema: bool = False) -> Any:
    """The config of a canonical file: one SAE's, or one layer's of a multi-layer
    dictionary (entries ``RELEASE/ID%2Flayer_N@REVISION.safetensors``)."""
    if is_layer_file(path):
        return read_layer_config(path)
    return read_config(path, full_schema=full_schema)


def _dictionary_of(sae_id: str) -> str | None:
    """The dictionary id of a layer entry's id (``clt/layer_3`` → ``clt``)."""
    base, _, layer = sae_id.rpartition(LAYER_ID_SEP)
    return base if base and layer.isdigit() else None


def entries() -> list[Entry]:
    root = canonical_root()
    if not root.is_dir():
        return []
    found = [_entry(p) for p in sorted(root.glob("*/*.safetensors")) if p.is_file()]
    return sorted(found, key=lambda e: (e.release, e.sae_id, -e.last_used))


def hf_bytes(selected: Iterable[Entry]) -> int:
    """Bytes of the HF cache that the entries read from (each blob counted once)."""
    blobs = {s.blob: s.size for e in selected for s in e.sources if s.present}
    return sum(blobs.values())


# --------------------------------------------------------------------------- selection


def parse_age(text: str) -> float:
    """'30' (days), '30d', '12h', '2w', '90m', '45s' → seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise CacheUsageError(f"--older-than {text!r}: use a number of days, or e.g. 12h, 30d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _current(ref: str) -> tuple[str, str] | None:
    """(release, id) that `ref` resolves to in the catalogue today, or None."""
    try:
        release, entry = resolve_entry(ref)
    except (UnknownReferenceError, SaeregError):
        return None
    return release.name, entry.id


def _catalogued(entry: Entry) -> bool:
    """Whether the catalogue still lists the entry's release and SAE id (by name, no index).
    SAEs loaded by path or from a repository no release describes count as listed: they
    load again as long as their files exist (older revisions are still pruned)."""
    if entry.release == LOCAL_RELEASE or entry.release.startswith(HF_RELEASE_PREFIX):
        return True
    try:
        release = get_release(entry.release)
    except SaeregError:
        return False
    if release.sae(entry.sae_id) is not None:
        return True
    base = _dictionary_of(entry.sae_id)
    found = release.sae(base) if base is not None else None
    return found is not None and found.resolved_kind in LAYERED_KINDS


def unused(all_entries: list[Entry]) -> list[Entry]:
    """Entries nothing would load any more: unreadable ones, in-place entries whose
    publisher files left the HF cache, SAEs the catalogue no longer lists, and older
    revisions of an SAE beside the most recently used one."""
    out = []
    newest: dict[str, Entry] = {}
    for e in all_entries:
        if e.problem is not None or not _catalogued(e):
            out.append(e)
            continue
        keep = newest.get(e.ref)
        if keep is None or e.last_used > keep.last_used:
            if keep is not None:
                out.append(keep)
            newest[e.ref] = e
        else:
            out.append(e)
    return out


def check_ref(ref: str) -> None:
    """Raise UnknownReferenceError (exit code 2) when `ref` names nothing: no catalogued
    SAE, no cached entry (RELEASE/ID as cached, for SAEs the catalogue dropped) and no
    entry file; with the catalogue's close matches and the cached entries like it."""
    candidate = Path(ref)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return
    try:
        resolve_entry(ref)
        return
    except UnknownReferenceError as exc:
        problem = str(exc)
    except SaeregError:
        return  # a release file problem: `matching` still finds entries by name
    cached = sorted({e.ref for e in entries()})
    if ref in cached:
        return
    near = close_matches(ref, cached)
    more = f"; cached entries like it: {', '.join(near)}" if near else ""
    raise UnknownReferenceError(f"{problem}{more}")


def matching(ref: str, revision: str | None = None) -> list[Entry]:
    """The entries of one SAE (a reference or RELEASE/ID as cached), or one entry file."""
    candidate = Path(ref)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return [_entry(candidate)]
    names = {ref}
    current = _current(ref)
    if current is not None:
        names.add("/".join(current))
    return [
        e
        for e in entries()
        if (e.ref in names or f"{e.release}/{_dictionary_of(e.sae_id)}" in names)
        and _same_revision(e.revision, revision)
    ]


def _same_revision(have: str, asked: str | None) -> bool:
    """`asked` is None, the revision, or the short form `ls` prints (7+ hex digits)."""
    if asked is None or have == asked:
        return True
    return (
        len(asked) >= 7
        and re.fullmatch(r"[0-9a-f]+", asked) is not None
        and (have.startswith(asked))
    )


def remove(selected: Iterable[Entry]) -> int:
    """Delete entry files (never the HF cache's). Returns the bytes freed."""
    freed = 0
    for e in selected:
        try:
            e.path.unlink()
        except FileNotFoundError:
            continue
        freed += e.size
        with contextlib.suppress(OSError):
            e.path.parent.rmdir()  # the release folder, once empty
    return freed


# --------------------------------------------------------------------------- verify


def verify(entry: Entry, hasher: Any = None) -> list[str]:
    """Problems of one entry: its own file (header, config, shapes, the digest of its
    tensor bytes) and, for in-place entries, every publisher file by size and sha256
    (read in full, once)."""
    hasher = hasher or fetch.sha256_of
    if entry.storage == "unreadable":
        return [entry.problem or "unreadable"]

    try:
        _read_any_config(entry.path, full_schema=True)
        stored = stored_digest(entry.path)
        actual = tensor_digest(entry.path)
    except (CanonicalFileError, ConfigError, OSError) as exc:
        return [str(exc)]
    problems = []
    if stored is None or stored == PLACEHOLDER:
        problems.append("no tensor digest in its header, so its own bytes cannot be verified")
    elif actual != stored:
        problems.append(f"its tensor bytes changed since it was written (digest {actual[:19]}…)")
    for s in entry.sources:
        if not s.blob.is_file():
            problems.append(f"{s.repo_path}: gone from the HF cache ({s.blob})")
            continue
        size = s.blob.stat().st_size
        if size != s.size:
            problems.append(f"{s.repo_path}: {size} bytes in the HF cache, expected {s.size}")
            continue
        digest = hasher(s.blob)
        if digest != s.sha256:
            problems.append(f"{s.repo_path}: sha256 {digest}, expected {s.sha256} ({s.blob})")
    return problems


# --------------------------------------------------------------------------- output


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def age(seconds_since_epoch: float, now: float | None = None) -> str:
    delta = max(0.0, (now or time.time()) - seconds_since_epoch)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta / size:.0f}{unit} ago"
    return "just now"


def table(rows: list[Entry]) -> Iterator[str]:
    header = ("SAE", "REVISION", "STORAGE", "SIZE", "PUBLISHER FILES", "LAST USED", "NOTE")
    lines = [
        (
            e.ref,
            e.revision[:12],
            e.storage,
            human(e.size),
            human(sum(s.size for s in e.sources)) if e.sources else "-",
            age(e.last_used),
            e.problem or "",
        )
        for e in rows
    ]
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    for r in [header, *lines]:
        yield "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()


def downloads_bytes() -> int:
    """Publisher files of plain-URL releases, which saereg downloads itself."""
    root = cache_dir() / "downloads"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def summary(rows: list[Entry]) -> str:
    own = sum(e.size for e in rows)
    in_place = [e for e in rows if e.storage == "in_place"]
    text = (
        f"{len(rows)} entries, {human(own)} in {canonical_root()}; {len(in_place)} in place, "
        f"reading {human(hf_bytes(rows))} of publisher files from the Hugging Face cache"
    )
    downloads = downloads_bytes()
    if downloads:
        text += f"; {human(downloads)} of plain-URL downloads in {cache_dir() / 'downloads'}"
    return text


def as_json(rows: list[Entry]) -> str:
    return json.dumps(
        {
            "root": str(canonical_root()),
            "entries": [e.to_dict() for e in rows],
            "size": sum(e.size for e in rows),
            "hf_cache_bytes": hf_bytes(rows),
            "downloads_bytes": downloads_bytes(),
        },
        indent=2,
    )
