"""Getting publisher files onto local disk: the only module that talks to the network.

* Hugging Face repositories go through ``huggingface_hub.hf_hub_download``: its cache
  (``HF_HOME`` / ``HF_HUB_CACHE``), ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read at
  each call, so they can change within one process. A file already in the cache (for a
  pinned commit, or for a branch whose ref the cache records) is used without any
  network call.
* Plain URLs (``base_url`` releases) go through ``requests`` into
  ``$SAEREG_CACHE/downloads``, resumable. ``SAEREG_URL_MIRRORS`` maps URL prefixes to
  mirrors, as ``HF_ENDPOINT`` does for the hub:
  ``SAEREG_URL_MIRRORS="https://openaipublic.blob.core.windows.net/=http://mirror.local/oai/"``
  (several pairs separated by commas).

Every file's sha256 is recorded (for LFS files in the HF cache, the one the cache names them
by; other files are hashed). A file the release pins a checksum for is hashed from its bytes
(pins.py: once, then while the file is unchanged), and a mismatch refuses to load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from saereg.base.errors import SaeregError, UnknownReferenceError
from saereg.base.settings import cache_dir
from saereg.catalogue.records import Release, SAEEntry
from saereg.catalogue.refs import close_matches
from saereg.catalogue.release_check import unsafe_path
from saereg.store.pins import pinned_files, verified_sha256, verify_checksums
from saereg.store.tensors import MAX_HEADER, parse_header

MIRRORS_ENV = "SAEREG_URL_MIRRORS"
OFFLINE_ENV = "SAEREG_OFFLINE"
TIMEOUT_ENV = "SAEREG_TIMEOUT"
#: Seconds a host gets to accept a connection and to answer a request.
DEFAULT_TIMEOUT = 5.0
#: Hosts that answered recently (base URL → monotonic time), so they are probed once.
_ANSWERED: dict[str, float] = {}
#: Hosts that timed out (base URL → (monotonic time, reason)): the next files of the same
#: load fail at once instead of waiting out the timeout again.
_UNANSWERED: dict[str, tuple[float, str]] = {}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file a format needs: a path inside the release's repository (or under its
    base_url). `optional` files may be missing upstream without failing the load;
    `weights` marks the large tensor files that `load_config` avoids downloading."""

    path: str
    optional: bool = False
    weights: bool = False


class FetchError(SaeregError):
    """A file could not be downloaded (missing upstream, offline, network failure)."""


class UnknownRevisionError(FetchError, UnknownReferenceError):
    """The repository has no such branch, tag or commit (exit code 2)."""


def unknown_revision(repo_id: str, rev: str) -> UnknownRevisionError:
    """The error for a revision the hub does not know, naming the cached branches and
    tags that look like it. A short commit is expanded only against downloaded ones."""
    refs = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs"
    names = {"main"}
    with contextlib.suppress(OSError):
        names.update(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file())
    hint = ""
    if re.match(r"^[0-9a-f]{7,39}$", rev):
        hint = (
            " (a short commit is expanded only against commits saereg or the Hugging Face "
            "cache already hold: give all 40 hex digits)"
        )
    return UnknownRevisionError(
        f"{repo_id} has no revision {rev!r}{hint}.", close_matches(rev, sorted(names))
    )


@dataclass(frozen=True)
class FetchedFiles:
    """Local copies of a release's files for one SAE."""

    paths: dict[str, Path]  # repository path → local file (missing optional files absent)
    sha256: dict[str, str]
    revision: str | None  # the commit (hub) or ETag (URL) the files came from


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    return _truthy("HF_HUB_OFFLINE") or _truthy(OFFLINE_ENV) or _truthy("TRANSFORMERS_OFFLINE")


def hf_cache_dir() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hf_endpoint() -> str:
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(
            f"HF_ENDPOINT={endpoint!r} is not an http(s) URL (the default is "
            "https://huggingface.co); fix or unset it"
        )
    return endpoint


def net_timeout() -> float:
    """`$SAEREG_TIMEOUT` seconds (default 5): how long a host may stay silent."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise FetchError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds (0 < s <= 3600)")
    return value


def check_reachable(url: str, what: str) -> None:
    """Fail within `net_timeout()` seconds, with a message naming the host, when the host
    of `url` refuses connections or never answers.

    huggingface_hub retries such failures with back-off for tens of seconds (minutes for
    a silent host); one HEAD request with a short deadline tells the cases apart first.
    Any HTTP answer, even an error status, counts as reachable.
    """
    import requests  # deferred: requests

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    now = time.monotonic()
    if now - _ANSWERED.get(base, -1e9) < 300:
        return
    failed_at, reason = _UNANSWERED.get(base, (-1e9, ""))
    if now - failed_at < 30:
        raise FetchError(_unreachable(parts.netloc, what, reason))
    timeout = net_timeout()
    try:
        requests.head(base + "/", timeout=(timeout, timeout), allow_redirects=False).close()
    except requests.Timeout as exc:
        reason = (
            f"no connection within {timeout:g} s"
            if isinstance(exc, requests.ConnectTimeout)
            else f"it accepted the connection but did not answer within {timeout:g} s"
        )
        _UNANSWERED[base] = (time.monotonic(), reason)  # (a refusal costs nothing to retry)
        raise FetchError(_unreachable(parts.netloc, what, reason)) from None
    except requests.RequestException as exc:
        text = str(exc).lower()
        reason = (
            "connection refused"
            if "refused" in text
            else "host name not found"
            if "resolve" in text or "name or service" in text
            else type(exc).__name__
        )
        raise FetchError(_unreachable(parts.netloc, what, reason)) from None
    _ANSWERED[base] = time.monotonic()
    _UNANSWERED.pop(base, None)


def _unreachable(host: str, what: str, reason: str) -> str:
    return (
        f"cannot reach {host} to download {what}: {reason}. Check the network (and "
        f"HF_ENDPOINT / {MIRRORS_ENV}), raise {TIMEOUT_ENV} for a slow link, or use cached "
        f"files only with {OFFLINE_ENV}=1 (or HF_HUB_OFFLINE=1)"
    )


def show_progress(quiet: bool | None) -> bool:
    if quiet is not None:
        return not quiet
    return sys.stderr.isatty() and not _truthy("SAEREG_QUIET")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def lfs_sha256(path: Path) -> str | None:
    """The sha256 an HF cache file is already known by, without reading it: the cache
    stores LFS files as blobs named by their sha256 (the hub's X-Linked-Etag)."""
    real = path.resolve()
    if real.parent.name == "blobs" and _SHA256.match(real.name):
        return real.name
    return None


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit `revision` means, from the local HF cache only (no network)."""
    rev = revision or "main"
    if _COMMIT.match(rev):
        return rev
    ref = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / rev
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def _in_cache(repo_id: str, path: str, revision: str) -> Path | None:
    """The cached file of a commit (or, offline, of the branch the cache's ref names),
    found without importing huggingface_hub's network stack: what hf_hub_download would
    return. Online, a branch goes through hf_hub_download, which asks the hub where it
    points now. A snapshot link whose blob was deleted does not count."""
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return None
    local = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit / path
    return local if ".." not in Path(path).parts and local.is_file() else None


def _commit_of_snapshot(path: Path) -> str | None:
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _tqdm_class(progress: bool) -> Any:
    from huggingface_hub.utils import tqdm  # deferred: huggingface_hub

    if progress:
        return tqdm

    class Quiet(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def hf_download(
    repo_id: str,
    path: str,
    revision: str | None,
    *,
    optional: bool = False,
    force: bool = False,
    quiet: bool | None = None,
) -> Path | None:
    """One file from the hub through huggingface_hub; None for a missing optional file."""
    rev = revision or "main"
    if not force and (offline() or _COMMIT.match(rev)):
        hit = _in_cache(repo_id, path, rev)
        if hit is not None:
            return hit
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub
    from huggingface_hub import hf_hub_download, try_to_load_from_cache  # deferred: huggingface_hub

    endpoint = hf_endpoint()
    local_only = offline()
    cached = None if local_only else try_to_load_from_cache(repo_id, path, hf_cache_dir(), rev)
    if not local_only and (force or not isinstance(cached, str) or not _COMMIT.match(rev)):
        try:
            check_reachable(endpoint, f"{repo_id}/{path} (revision {rev})")
        except FetchError:
            if force or not isinstance(cached, str):
                raise
            local_only = True  # the host is down but the cache has the file: use it
    try:
        local = hf_hub_download(
            repo_id,
            path,
            revision=rev,
            cache_dir=hf_cache_dir(),
            endpoint=endpoint,
            local_files_only=local_only,
            force_download=force and not local_only,
            etag_timeout=net_timeout(),
            tqdm_class=_tqdm_class(show_progress(quiet)),
        )
    except hf_errors.LocalEntryNotFoundError:
        if optional and local_only:
            return None
        if not local_only:  # the hub did not answer in time: say which host and what to do
            raise FetchError(
                _unreachable(urlsplit(endpoint).netloc, f"{repo_id}/{path}", "no answer")
            ) from None
        raise FetchError(
            f"{repo_id}/{path} (revision {rev}) is not in the Hugging Face cache at "
            f"{hf_cache_dir()} and downloads are off (HF_HUB_OFFLINE / SAEREG_OFFLINE), or "
            f"{hf_endpoint()} could not be reached. Download it once while online."
        ) from None
    except hf_errors.EntryNotFoundError:
        if optional:
            return None
        raise FetchError(
            f"{repo_id} has no file {path!r} at revision {rev}; the release may be out of date "
            "(`saereg sync-check` compares it with the repository)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise unknown_revision(repo_id, rev) from None
    except hf_errors.RepositoryNotFoundError:
        raise FetchError(
            f"repository {repo_id!r} was not found on {hf_endpoint()} (renamed, private, or "
            "gated? log in with `hf auth login` if you have access)"
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise FetchError(
            f"could not download {repo_id}/{path} from {hf_endpoint()}: {exc}. Set "
            "HF_HUB_OFFLINE=1 to use cached files only."
        ) from None
    return Path(str(local))


# --------------------------------------------------------------------------- plain URLs


def mirrored(url: str) -> str:
    raw = os.environ.get(MIRRORS_ENV, "")
    for pair in (p.strip() for p in raw.split(",") if p.strip()):
        prefix, sep, target = pair.partition("=")
        if not sep:
            raise FetchError(f"{MIRRORS_ENV}: {pair!r} is not PREFIX=REPLACEMENT")
        if url.startswith(prefix):
            return target + url[len(prefix) :]
    return url


def _download_dir(url: str) -> Path:
    return cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:24]


def url_cached(url: str) -> tuple[Path, dict[str, Any]] | None:
    directory = _download_dir(url)
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = directory / meta.get("name", "")
    return (path, meta) if path.is_file() else None


def url_download(
    url: str, *, force: bool = False, quiet: bool | None = None
) -> tuple[Path, dict[str, Any]]:
    """Download `url` into saereg's cache (resuming a partial download); return the file
    and its metadata (url, etag, sha256, size)."""
    import requests  # deferred: requests

    hit = None if force else url_cached(url)
    if hit is not None:
        return hit
    if offline():
        raise FetchError(
            f"{url} is not in saereg's download cache and downloads are off "
            "(HF_HUB_OFFLINE / SAEREG_OFFLINE)"
        )
    directory = _download_dir(url)
    directory.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "file"
    part = directory / f"{name}.part"
    source = mirrored(url)
    check_reachable(source, url)
    done = part.stat().st_size if part.exists() and not force else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    timeout = (net_timeout(), max(net_timeout(), 30.0))
    try:
        with requests.get(source, stream=True, timeout=timeout, headers=headers) as resp:
            if resp.status_code == 416 and done:  # the partial file is already complete
                pass
            elif resp.status_code not in (200, 206):
                raise FetchError(f"could not download {source}: HTTP {resp.status_code}")
            else:
                mode = "ab" if resp.status_code == 206 else "wb"
                if mode == "wb":
                    done = 0
                total = resp.headers.get("Content-Length")
                total_size = int(total) + done if total is not None else None
                with part.open(mode) as fh, _bar(total_size, done, name, quiet) as bar:
                    for chunk in resp.iter_content(_CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
            etag = (resp.headers.get("ETag") or "").strip('"') or None
    except requests.RequestException as exc:
        raise FetchError(
            f"could not download {source}: {exc}. Partial data is kept and the "
            "next attempt resumes."
        ) from None
    final = directory / name
    os.replace(part, final)
    meta = {
        "url": url,
        "name": name,
        "etag": etag,
        "sha256": sha256_of(final),
        "size": final.stat().st_size,
    }
    (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return final, meta


def _bar(total: int | None, initial: int, name: str, quiet: bool | None) -> Any:
    from huggingface_hub.utils import tqdm  # deferred: huggingface_hub

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        desc=name,
        disable=not show_progress(quiet),
    )


# --------------------------------------------------------------------------- releases


def source_url(release: Release, path: str) -> str:
    """The URL of `path` under the release's base URL; never anywhere else."""
    assert release.base_url is not None
    why = unsafe_path(path)
    if why:
        raise FetchError(f"{release.name}: path {path!r} {why}; refusing to request it")
    return release.base_url + path


def content_revision(hashes: Iterable[str]) -> str:
    """The 'revision' of files served from plain URLs: a digest of their contents."""
    return "sha256-" + hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]


def known_revision(
    release: Release, files: Sequence[RemoteFile], revision: str | None
) -> str | None:
    """The revision the files would come from, known without any network call, or None."""
    if release.repo_id:
        return cached_commit(release.repo_id, revision or release.revision)
    hashes = []
    for f in files:
        hit = url_cached(source_url(release, f.path))
        if hit is None:
            if f.optional:
                continue
            return None
        hashes.append(hit[1]["sha256"])
    return content_revision(hashes)


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
    paths: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    resolved: str | None = None
    pinned = pinned_files(entry, [f.path for f in files])
    for f in files:
        if f.weights and not include_weights:
            continue
        if release.repo_id:
            local = hf_download(
                release.repo_id,
                f.path,
                resolved or revision or release.revision,  # one commit for every file
                optional=f.optional,
                force=force,
                quiet=quiet,
            )
            if local is None:
                continue
            resolved = resolved or _commit_of_snapshot(local)
            paths[f.path] = local
            if f.path in pinned:  # a pin trusts bytes, never the name the hub gave them
                hashes[f.path] = verified_sha256(local)
            else:
                hashes[f.path] = lfs_sha256(local) or sha256_of(local)
        else:
            url = source_url(release, f.path)
            try:
                local, meta = url_download(url, force=force, quiet=quiet)
            except FetchError:
                if f.optional:
                    continue
                raise
            paths[f.path] = local
            hashes[f.path] = verified_sha256(local) if f.path in pinned else meta["sha256"]
    if not release.repo_id and hashes:
        resolved = content_revision(hashes.values())
    verify_checksums(release, entry, hashes, [f.path for f in files])
    return FetchedFiles(paths, hashes, resolved)


def remote_safetensors_header(
    repo_id: str, path: str, revision: str | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A safetensors header over two HTTP range requests, without the weights.

    Used only when the file is not in the local cache.
    """
    import requests  # deferred: requests
    from huggingface_hub import hf_hub_url  # deferred: huggingface_hub
    from huggingface_hub.utils import build_hf_headers  # deferred: huggingface_hub

    if offline():
        raise FetchError(f"{repo_id}/{path} is not cached and downloads are off")
    url = hf_hub_url(repo_id, path, revision=revision or "main", endpoint=hf_endpoint())
    check_reachable(url, f"the header of {repo_id}/{path}")
    headers = build_hf_headers()

    def get(start: int, end: int) -> bytes:
        try:
            resp = requests.get(
                url, headers={**headers, "Range": f"bytes={start}-{end}"}, timeout=net_timeout()
            )
        except requests.RequestException as exc:
            raise FetchError(f"could not read {url}: {exc}") from None
        if resp.status_code not in (200, 206):
            raise FetchError(f"could not read the header of {url}: HTTP {resp.status_code}")
        return resp.content[: end - start + 1]

    first = get(0, 7)
    if len(first) != 8:
        raise FetchError(f"{url}: too short to be a safetensors file")
    size = int.from_bytes(first, "little")
    if size > MAX_HEADER:
        raise FetchError(f"{url}: corrupted safetensors header (declares {size} bytes)")
    return parse_header(get(8, 8 + size - 1), url)
