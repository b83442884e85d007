"""Canonical-file integrity: is this cached file the SAE asked for, with the bytes written?

Two checks, for two costs:

* identity (`verify_canonical(path, expect=...)`), on every load: the header's embedded
  config must parse and name the release, SAE id and revision asked for (and, where the
  release pins checksums, the publisher files it was converted from must match them; the
  pinned files an in-place entry reads are checked by their bytes, see pins.py).
  It reads only the header, so a file copied over another SAE's cache entry, or one
  whose header was damaged, is never served.
* content (`verify_canonical(..., deep=True)`), on request and once right after each
  write: the sha256 of the tensor bytes, stored in the file's own header under
  `DIGEST_KEY`, must match the bytes on disk. It reads the whole file.

`tensor_digest` and `verify_canonical` work on any safetensors file written with a
digest, so other kinds of cache entries can reuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saereg.base.errors import SaeregError
from saereg.store import fetch
from saereg.store.canonical import read_config
from saereg.store.digest import PLACEHOLDER, stored_digest, tensor_digest
from saereg.store.in_place import blob_path, missing_sources, source_files
from saereg.store.pins import pinned_path, verified_sha256
from saereg.store.sae_config import CONVERSION, SAEConfig
from saereg.store.tensors import CanonicalFileError


class IntegrityError(CanonicalFileError):
    """A cached canonical file is not the SAE it should be, or its bytes changed."""


class PublisherFileChanged(IntegrityError):
    """A publisher file an in-place entry reads no longer has its recorded sha256: it must
    be downloaded again, not just converted again."""


class Expected:
    """What a cache entry must describe: release, SAE id, the revision its files came
    from, and the release's sha256 pins (relative keys, as in release files).

    (A plain class: a dataclass costs a millisecond to create, on every load.)"""

    __slots__ = ("pins", "release", "revision", "sae_id", "sae_path")

    def __init__(
        self,
        release: str,
        sae_id: str,
        revision: str | None,
        sae_path: str = "",
        pins: Mapping[str, str] | None = None,
    ) -> None:
        self.release, self.sae_id, self.revision = release, sae_id, revision
        self.sae_path, self.pins = sae_path, dict(pins or {})


def conversion_problem(source: Mapping[str, Any]) -> str | None:
    """Why an entry's `source` record was not converted as this saereg converts (another
    `CONVERSION`; absent means 1), or None. Single SAEs and dictionary layers alike."""
    if source.get("conversion", 1) == CONVERSION:
        return None
    return (
        f"was converted by another saereg (conversion {source.get('conversion', 1)}, this one "
        f"converts as {CONVERSION})"
    )


def identity_problem(cfg: SAEConfig, expect: Expected) -> str | None:
    """Why `cfg` does not describe `expect`, or None."""
    src: Mapping[str, Any] = cfg.source or {}
    got = (src.get("release"), src.get("sae_id"), src.get("revision"))
    want = (expect.release, expect.sae_id, expect.revision)
    if got != want:
        return (
            f"holds {got[0]}/{got[1]} at revision {got[2] or 'unknown'}, not "
            f"{want[0]}/{want[1]} at revision {want[2] or 'unknown'}"
        )
    stale = conversion_problem(src)
    if stale:
        return stale
    files = src.get("files") or {}
    if expect.pins and isinstance(files, Mapping):
        for key, pin in expect.pins.items():
            path = pinned_path(expect.sae_path, key, files)
            if path is not None and files[path] != pin:
                return f"was converted from a {path} whose sha256 differs from the release's pin"
    return None


def verify_canonical(
    path: Path, expect: Expected | None = None, *, deep: bool = False
) -> SAEConfig:
    """The config of a canonical file that passed the identity check (and with `deep`,
    the tensor digest); IntegrityError / CanonicalFileError say what is wrong."""
    try:
        cfg = read_config(path)
    except CanonicalFileError:
        raise
    except SaeregError as exc:  # a damaged embedded config
        raise IntegrityError(str(exc)) from None
    if expect is not None:
        problem = identity_problem(cfg, expect)
        if problem:
            raise IntegrityError(f"{path}: {problem}")
    if cfg.storage:  # an in-place entry: the publisher files it reads must be there
        gone = missing_sources(cfg)
        if gone:
            raise IntegrityError(f"{path}: " + "; ".join(gone))
        if expect is not None and expect.pins:
            for problem in pinned_source_problems(cfg, expect):
                raise PublisherFileChanged(f"{path}: {problem}")
    if deep:
        stored = stored_digest(path)
        if stored is None or stored == PLACEHOLDER:
            raise IntegrityError(
                f"{path}: no tensor digest in its header (written by an older saereg, or "
                "its writer was interrupted), so its bytes cannot be verified"
            )
        actual = tensor_digest(path)
        if actual != stored:
            raise IntegrityError(
                f"{path}: tensor bytes changed since it was written (digest {actual[:19]}…, "
                f"header says {stored[:19]}…)"
            )
        for problem in source_problems(cfg):
            raise PublisherFileChanged(f"{path}: {problem}")
    return cfg


def pinned_source_problems(cfg: SAEConfig, expect: Expected) -> list[str]:
    """In-place entries read publisher files at every load: those a pin covers must
    still hold the pinned bytes (hashed once, then while the file is unchanged; pins.py)."""
    problems = []
    for repo_path, record in source_files(cfg).items():
        for key, pin in expect.pins.items():
            if pinned_path(expect.sae_path, key, (repo_path,)) is None:
                continue
            blob = blob_path(record)
            try:
                digest = verified_sha256(blob)
            except OSError as exc:
                problems.append(f"publisher file {repo_path} ({blob}) cannot be read: {exc}")
                continue
            if digest != pin:
                problems.append(
                    f"publisher file {repo_path} ({blob}) has sha256 {digest}, but the "
                    f"release pins {pin}"
                )
    return problems


def source_problems(cfg: SAEConfig) -> list[str]:
    """In-place entries: publisher files whose bytes no longer match the sha256 recorded
    when the entry was made (a full read of each)."""
    problems = []
    for repo_path, record in source_files(cfg).items():
        blob = blob_path(record)
        digest = fetch.sha256_of(blob)  # looked up at call time: tests count the hashing
        if digest != record.get("sha256"):
            problems.append(f"publisher file {repo_path} ({blob}) changed: sha256 {digest}")
    return problems
