"""Local folders and files as a source of publisher files: ``saereg.load_sae("/data/my_sae")``.

A local SAE is read through a `Release` whose ``base_url`` is the ``file://`` URI of the
folder its paths are relative to (`local_release_url`). `fetch_files` and
`known_revision` here are `saereg.store.fetch`'s, extended to such releases: a local
file is used where it lies (nothing is copied), and its "revision" is a digest of the
files' sha256s, so a changed folder is converted again. Hashing a large file once per
change is enough: digests are remembered by (path, size, mtime, inode) in
``$SAEREG_CACHE/local-digests.json``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from saereg.base.errors import SaeregError
from saereg.base.settings import cache_dir
from saereg.catalogue.records import Release, SAEEntry
from saereg.catalogue.release_check import unsafe_path
from saereg.store import fetch
from saereg.store.canonical import atomic_path
from saereg.store.fetch import FetchedFiles, FetchError, RemoteFile, content_revision

#: A folder holding more files than this is not one SAE's folder (a home directory?).
MAX_FILES = 20_000
#: Nesting deeper than this is not an SAE layout.
MAX_DEPTH = 12
#: Digests remembered for local files (the oldest are forgotten first).
MAX_DIGESTS = 4096
_SCHEME = "file://"
#: The release name of SAEs loaded from local folders, and the prefix of those of
#: repositories no release describes (canonical cache entries are kept under them).
LOCAL_RELEASE = "local"
HF_RELEASE_PREFIX = "hf:"


class LocalSourceError(SaeregError):
    """A local folder cannot be read as a source of SAE files (exit code 1)."""


def local_release_url(root: Path) -> str:
    """The ``base_url`` of a release whose files are under the local folder `root`."""
    return root.as_uri().rstrip("/") + "/"


def local_root(release: Release) -> Path | None:
    """The folder a local release's paths are relative to; None for hub/URL releases."""
    url = release.base_url or ""
    if not url.startswith(_SCHEME):
        return None
    return Path(unquote(urlsplit(url).path))


def list_folder(folder: Path) -> list[str]:
    """Every file under `folder` as ``/``-separated relative paths, sorted, following
    symbolic links (a Hugging Face snapshot is made of them). Hidden entries (``.git``,
    ``.cache``) are skipped. A symlink loop, an unreadable folder, or a tree too large or
    too deep to be an SAE's is a LocalSourceError naming the place."""
    found: list[str] = []

    def walk(directory: Path, prefix: str, ancestors: frozenset[tuple[int, int]]) -> None:
        if prefix.count("/") >= MAX_DEPTH:
            raise LocalSourceError(
                f"{directory}: nested more than {MAX_DEPTH} folders deep; name the SAE's own "
                "folder instead"
            )
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise LocalSourceError(f"{directory}: cannot list it: {exc.strerror or exc}") from None
        for item in entries:
            if item.name.startswith("."):
                continue
            where = directory / item.name
            try:
                info = item.stat()  # follows symbolic links
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise LocalSourceError(
                        f"{where}: a symbolic link loop (it leads back to itself); fix or "
                        "remove the link"
                    ) from None
                if item.is_symlink():
                    continue  # a dangling link: nothing to read there
                raise LocalSourceError(f"{where}: cannot read it: {exc.strerror or exc}") from None
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    raise LocalSourceError(
                        f"{where}: a symbolic link loop (it leads back to a folder above it); "
                        "fix or remove the link"
                    )
                walk(where, f"{prefix}{item.name}/", ancestors | {key})
            elif stat.S_ISREG(info.st_mode):
                found.append(prefix + item.name)
                if len(found) > MAX_FILES:
                    raise LocalSourceError(
                        f"{folder} holds more than {MAX_FILES} files, too many for an SAE's "
                        "folder; name the SAE's own folder instead"
                    )

    top = folder.stat()
    walk(folder, "", frozenset({(top.st_dev, top.st_ino)}))
    return found


def read_small(root: Path, path: str, limit: int) -> bytes:
    """The bytes of the small file `path` under `root` (a config, read to detect a
    format); FetchError if it is unsafe, missing or larger than `limit`."""
    why = unsafe_path(path)
    if why:
        raise FetchError(f"{path!r} {why}")
    local = root / path
    try:
        size = local.stat().st_size
        if size > limit:
            raise FetchError(f"{local} is {size} bytes, too large to read as a config")
        return local.read_bytes()
    except OSError as exc:
        raise FetchError(f"{local}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- digests


def _digest_file() -> Path:
    return cache_dir() / "local-digests.json"


def _load_digests() -> dict[str, Any]:
    try:
        data = json.loads(_digest_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digests(paths: Sequence[Path]) -> dict[Path, str]:
    """sha256 of each local file, hashed again only when its size, mtime or inode changed."""
    memo = _load_digests()
    out: dict[Path, str] = {}
    changed = False
    for path in paths:
        real = str(path.resolve())
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        known = memo.get(real)
        if isinstance(known, dict) and known.get("stamp") == stamp:
            out[path] = str(known.get("sha256"))
            continue
        out[path] = fetch.sha256_of(path)
        memo.pop(real, None)
        memo[real] = {"stamp": stamp, "sha256": out[path]}
        changed = True
    if changed:
        while len(memo) > MAX_DIGESTS:
            memo.pop(next(iter(memo)))
        try:
            _digest_file().parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(_digest_file()) as tmp:
                tmp.write_text(json.dumps(memo), encoding="utf-8")
        except OSError:
            pass  # a read-only cache only costs hashing again next time
    return out


# --------------------------------------------------------------------------- fetching


def _local_files(
    root: Path, files: Sequence[RemoteFile], include_weights: bool = True
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for f in files:
        if f.weights and not include_weights:
            continue
        why = unsafe_path(f.path)
        if why:
            raise FetchError(f"{root}: path {f.path!r} {why}; refusing to read it")
        local = root / f.path
        if local.is_file():
            paths[f.path] = local
        elif not f.optional:
            raise FetchError(f"{local} does not exist (the format reads it)")
    return paths


def known_revision(
    release: Release, files: Sequence[RemoteFile], revision: str | None
) -> str | None:
    """`saereg.store.fetch.known_revision`, and for a local release the digest of its files."""
    root = local_root(release)
    if root is None:
        return fetch.known_revision(release, files, revision)
    try:
        paths = _local_files(root, files)
    except FetchError:
        return None
    return content_revision(file_digests(list(paths.values())).values())


def fetch_files(
    release: Release,
    entry: SAEEntry,
    files: Sequence[RemoteFile],
    revision: str | None = None,
    *,
    force: bool = False,
    quiet: bool | None = None,
    include_weights: bool = True,
) -> FetchedFiles:
    """`saereg.store.fetch.fetch_files`, and for a local release the files where they lie."""
    root = local_root(release)
    if root is None:
        return fetch.fetch_files(
            release,
            entry,
            files,
            revision,
            force=force,
            quiet=quiet,
            include_weights=include_weights,
        )
    paths = _local_files(root, files, include_weights)
    digests = file_digests(list(paths.values()))
    hashes = {name: digests[local] for name, local in paths.items()}
    everything = _local_files(root, files) if not include_weights else paths
    revision_of = content_revision(file_digests(list(everything.values())).values())
    return FetchedFiles(paths, hashes, revision_of)
