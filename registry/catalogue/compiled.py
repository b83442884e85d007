"""YAML read once, kept as JSON.

Release files and models tables are parsed (and migrated) once; the result is stored in
``$SAEREG_CACHE/index`` keyed by the file's path, size and mtime. Reading JSON is ~10x
faster than YAML and never imports yaml, which matters on the resolve path (see
benchmarks/bench_registry.py). Every write here is best effort: an unwritable cache only
costs speed, never correctness.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

from saereg.base.errors import ReleaseFileError
from saereg.base.file_modes import write_bytes
from saereg.base.settings import cache_dir
from saereg.catalogue import safeyaml

#: Bumped when the shape of what is compiled changes, so stale copies are ignored.
COMPILED_VERSION = 1


def index_dir() -> Path:
    return cache_dir() / "index"


def stamp_of(path: Path, version: int) -> list[Any]:
    """What a compiled copy must match: the file's resolved path, size, mtime and the
    version of what was compiled. Raises OSError (or RuntimeError for a symlink loop)."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, version]


def read_compiled(target: Path, stamp: list[Any]) -> dict[str, Any] | None:
    """The compiled payload at `target` if it was made from the file `stamp` describes."""
    try:
        with safeyaml.gc_paused():
            cached = json.loads(target.read_bytes())
        if isinstance(cached, dict) and cached.get("stamp") == stamp:
            return cached
    except (OSError, ValueError, TypeError):
        pass
    return None


def write_compiled(target: Path, payload: dict[str, Any]) -> None:
    """Write `payload` as JSON at `target`, atomically; failures are ignored."""
    try:
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
    except (TypeError, ValueError):
        return
    write_bytes(target, data)


# --------------------------------------------------------------------------- sectioned files
#
# The catalogue index is one file in two parts: a JSON header line, then a body of
# sections, one per release, each a few lines of text. The header gives each release's
# byte span in the body, so a command that needs a few releases (`list --model M`) reads
# only their rows, and its cost does not grow with the rest of the catalogue.


def encode_sectioned(header: dict[str, Any], sections: dict[str, bytes]) -> bytes:
    """`header` (with `spans` added: name → [start, end] in the body) and the sections."""
    spans: dict[str, list[int]] = {}
    pos = 0
    for name, data in sections.items():
        spans[name] = [pos, pos + len(data)]
        pos += len(data) + 1  # the newline after each section
    head = json.dumps(
        {**header, "spans": spans}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return head.encode() + b"\n" + b"".join(data + b"\n" for data in sections.values())


def read_sectioned_header(fh: BinaryIO) -> tuple[dict[str, Any], int]:
    """The header of a sectioned file open at its start, and where its body starts;
    ValueError if it is not one."""
    line = fh.readline()
    if not line.endswith(b"\n"):
        raise ValueError("not a sectioned file")
    with safeyaml.gc_paused():
        header = json.loads(line)
    if not isinstance(header, dict) or not isinstance(header.get("spans"), dict):
        raise ValueError("not a sectioned file")
    return header, len(line)


def compiled_release_path(resolved: str) -> Path:
    """Where the migrated document of the release file at `resolved` is kept."""
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:24]
    return index_dir() / "releases" / f"{digest}.json"


def load_model_docs(path: Path) -> list[dict[str, Any]]:
    """The entries of a models table (releases/models/models.yaml), compiled to JSON.

    Only the structure is checked here; full checking is `saereg validate`
    (schemas/model.v1.json).
    """
    try:
        stamp = stamp_of(path, COMPILED_VERSION)
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read the models table: {exc.strerror}") from None
    digest = hashlib.sha256(stamp[0].encode()).hexdigest()[:16]
    target = index_dir() / f"models-v{COMPILED_VERSION}-{digest}.json"
    cached = read_compiled(target, stamp)
    if cached is not None and isinstance(cached.get("models"), list):
        return list(cached["models"])
    try:
        doc = safeyaml.load_yaml(safeyaml.decode(path.read_bytes(), str(path)), str(path))
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read the models table: {exc.strerror}") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ReleaseFileError(f"{path}: a models table is a mapping with a 'models:' list")
    write_compiled(target, {"stamp": stamp, "models": models})
    return models
