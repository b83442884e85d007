"""The file listing of a Hugging Face repository, for SAEs no release file describes.

Online, the hub lists the repository at a revision (and names the commit it resolved);
offline (``HF_HUB_OFFLINE`` / ``SAEREG_OFFLINE``), the Hugging Face cache lists what it
holds of that commit (the files downloaded before), found through the cache's refs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from saereg.base.errors import UnknownReferenceError
from saereg.store.fetch import (
    FetchError,
    cached_commit,
    check_reachable,
    hf_cache_dir,
    hf_download,
    hf_endpoint,
    net_timeout,
    offline,
    unknown_revision,
)
from saereg.store.revisions import expand_commit


def _snapshot(repo_id: str, commit: str) -> Path:
    return hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit


def cached_listing(repo_id: str, revision: str | None) -> tuple[str, list[str]] | None:
    """(commit, files) of what the HF cache holds of `repo_id` at `revision`, or None."""
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return None
    root = _snapshot(repo_id, commit)
    if not root.is_dir():
        return None
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(root).parts) and p.is_file()
    )
    return commit, files


def hub_listing(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """(commit, every file path) of `repo_id` at `revision` (default main): from the hub
    online, from the HF cache offline. UnknownReferenceError when the repository or
    revision does not exist; FetchError when neither source can answer."""
    rev = expand_commit(repo_id, revision) or "main"  # a short commit: the cached one
    if offline():
        cached = cached_listing(repo_id, rev)
        if cached is None:
            raise FetchError(
                f"{repo_id} (revision {rev}) is not in the Hugging Face cache at "
                f"{hf_cache_dir()} and downloads are off (HF_HUB_OFFLINE / SAEREG_OFFLINE); "
                "load it once online"
            )
        return cached
    from huggingface_hub import HfApi  # deferred: huggingface_hub
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub

    endpoint = hf_endpoint()
    check_reachable(endpoint, f"the file listing of {repo_id}")
    api = HfApi(endpoint=endpoint)
    try:
        info: Any = api.model_info(repo_id, revision=rev, timeout=net_timeout())
    except hf_errors.RevisionNotFoundError:
        raise unknown_revision(repo_id, rev) from None
    except hf_errors.RepositoryNotFoundError:
        raise UnknownReferenceError(
            f"Repository {repo_id!r} was not found on {endpoint} (renamed, private, or gated? "
            "log in with `hf auth login` if you have access)."
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise FetchError(
            f"could not list {repo_id} on {endpoint}: {exc}. Set HF_HUB_OFFLINE=1 to use "
            "the Hugging Face cache only."
        ) from None
    files = sorted(s.rfilename for s in (info.siblings or []))
    _remember_ref(repo_id, rev, str(info.sha))
    return str(info.sha), files


def _remember_ref(repo_id: str, revision: str, commit: str) -> None:
    """Record which commit a branch or tag named, in the HF cache's refs (as
    huggingface_hub does when it downloads by branch), so that offline the same reference
    finds the same files."""
    if revision == commit:
        return
    ref = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        if ref.is_file() and ref.read_text(encoding="utf-8").strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit, encoding="utf-8")
        os.replace(tmp, ref)
    except OSError:
        pass  # a read-only cache: offline loads then need the commit spelled out


def hub_read_small(repo_id: str, commit: str, path: str, limit: int) -> bytes:
    """A small file of a repository at a commit, through the HF cache (a config read to
    detect the format; it is the same download loading would make)."""
    local = hf_download(repo_id, path, commit, quiet=True)
    assert local is not None
    size = local.stat().st_size
    if size > limit:
        raise FetchError(f"{repo_id}/{path} is {size} bytes, too large to read as a config")
    return local.read_bytes()
