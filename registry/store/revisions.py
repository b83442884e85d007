"""Which revision a load means, from what is on disk: short commit forms, and, offline,
the newest revision saereg has already converted.

* ``--revision`` accepts the 12-character form `saereg cache ls` prints (any unique
  prefix of at least 7 hex digits): it is expanded against the commits the HF cache has
  snapshots of and the revisions of saereg's own entries for that SAE.
* Offline (``SAEREG_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``), an unpinned release's branch
  cannot be asked where it points. A canonical entry that needs no publisher file (a
  self-contained one) still holds the whole SAE, so the newest such entry that passes
  the identity check is served, and the user is told which revision it is, once per
  process. README promises exactly that: cached loads need no network.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

from saereg.base.errors import CacheWarning, SaeregError
from saereg.base.settings import cache_dir
from saereg.catalogue.records import Release, SAEEntry
from saereg.store.fetch import hf_cache_dir
from saereg.store.layer_config import LAYER_ID_SEP, LAYERED_KINDS

_SHORT = re.compile(r"^[0-9a-f]{7,39}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: (release, SAE id) already told which revision is served offline.
_TOLD: set[tuple[str, str]] = set()


class RevisionError(SaeregError):
    """A short revision matches no commit, or several (exit code 2)."""

    exit_code = 2


def entry_revisions(release: str, sae_id: str, *, layers: bool = False) -> list[tuple[str, Path]]:
    """(revision, file) of saereg's canonical entries of one SAE, newest use first; with
    `layers`, those of a multi-layer dictionary's layer files (``ID/layer_N@REVISION``)."""
    folder = cache_dir() / "canonical" / quote(release, safe="")
    prefix = quote(sae_id + LAYER_ID_SEP if layers else sae_id, safe="")
    try:
        files = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    found = []
    for path in files:
        if not path.name.endswith(".safetensors"):
            continue
        rest = path.name[len(prefix) : -len(".safetensors")]
        if layers:
            layer, at, rest = rest.partition("@")
            if not (layer.isdigit() and at):
                continue
        elif not rest.startswith("@"):
            continue
        else:
            rest = rest[1:]
        try:
            used = path.stat().st_mtime
        except OSError:
            continue
        found.append((used, unquote(rest), path))
    return [(rev, path) for _, rev, path in sorted(found, reverse=True)]


def expand_revision(
    repo_id: str | None, release: str, sae_id: str, revision: str | None, *, layers: bool = False
) -> str | None:
    """`revision` as given, or the full commit a short hex form stands for: one the HF
    cache has a snapshot of, or one of saereg's entries of this SAE (with `layers`, of
    this multi-layer dictionary's layer files) was converted from."""
    if revision is None or not _SHORT.match(revision):
        return revision
    commits = snapshot_commits(repo_id) if repo_id else set()
    known = entry_revisions(release, sae_id, layers=layers)
    commits.update(rev for rev, _ in known if _COMMIT.match(rev))
    return _unique(revision, commits)


def expand_commit(repo_id: str, revision: str | None) -> str | None:
    """`revision` as given, or the full commit a short hex form stands for among those
    the HF cache has snapshots of (a repository no release describes, whose listing is
    all there is to go by)."""
    if revision is None or not _SHORT.match(revision):
        return revision
    return _unique(revision, snapshot_commits(repo_id))


def snapshot_commits(repo_id: str) -> set[str]:
    """The commits of `repo_id` the HF cache holds snapshots of."""
    snapshots = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    with contextlib.suppress(OSError):
        return {p.name for p in snapshots.iterdir() if _COMMIT.match(p.name)}
    return set()


def _unique(revision: str, commits: set[str]) -> str:
    """The one commit starting with `revision`; `revision` itself when none does (a
    branch or tag named like hex, maybe); RevisionError when several do."""
    matches = sorted(c for c in commits if c.startswith(revision))
    if len(matches) > 1:
        raise RevisionError(
            f"revision {revision!r} is ambiguous: it starts {', '.join(matches[:5])}; give "
            "more of the commit"
        )
    return matches[0] if matches else revision  # a branch or tag named like hex, maybe


def revision_to_fetch(release: Release, entry: SAEEntry, revision: str | None) -> str | None:
    """The revision to fetch an entry at, short commit forms expanded: the one path
    single SAEs and multi-layer dictionaries (whose cache entries are per layer) share,
    so that a short and a full commit name one cache entry either way."""
    layered = entry.resolved_kind in LAYERED_KINDS
    return expand_revision(release.repo_id, release.name, entry.id, revision, layers=layered)


def newest_cached(release: str, sae_id: str, usable: Callable[[Path, str], bool]) -> Path | None:
    """Offline: the most recently used entry of an unpinned release's SAE that `usable`
    accepts (the identity check, and for in-place entries the publisher files present);
    says once which revision is served."""
    for revision, path in entry_revisions(release, sae_id):
        if usable(path, revision):
            if (release, sae_id) not in _TOLD:
                _TOLD.add((release, sae_id))
                warnings.warn(
                    f"offline: {release}/{sae_id} is not pinned and its branch cannot be "
                    f"looked up; serving revision {revision[:12]}, the newest saereg has "
                    "cached (pass --revision to choose another)",
                    CacheWarning,
                    3,
                )
            return path
    return None
