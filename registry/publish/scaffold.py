"""The contributor path: scaffold a release from a repository, and check releases against
their repositories (what upstream's daily sync job does).

Both read the repository listing through huggingface_hub (so `HF_ENDPOINT` and tokens
apply) and let the format plugin's `discover` and `describe` do the format-specific work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.base.errors import SaeregError
from saereg.catalogue.records import REQUIRED_SAE_FIELDS, Release, SAEEntry
from saereg.catalogue.release_files import dump_release, factor_defaults
from saereg.formats import SMALL_FILE_LIMIT, CanonicalFileError, Format, get_registry
from saereg.store.fetch import FetchError, check_reachable, hf_endpoint, offline
from saereg.store.hub_listing import hub_read_small

TODO = "TODO"


class OfflineError(SaeregError):
    """The command needs the hub and the hub cannot be used (exit code 2)."""

    exit_code = 2


def _api() -> Any:
    from huggingface_hub import HfApi  # deferred: huggingface_hub

    if offline():
        raise OfflineError(
            "this command reads repository listings from the hub, but downloads are off "
            "(HF_HUB_OFFLINE / SAEREG_OFFLINE); run it online"
        )
    try:
        endpoint = hf_endpoint()
        check_reachable(endpoint, "the repository listing")  # fail fast, not after retries
    except FetchError as exc:
        raise OfflineError(str(exc)) from None
    return HfApi(endpoint=endpoint)


def _hub_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub

    try:
        return fn(*args, **kwargs)
    except hf_errors.RepositoryNotFoundError:
        raise SaeregError(f"{what}: repository not found on {hf_endpoint()}") from None
    except hf_errors.RevisionNotFoundError:
        raise SaeregError(f"{what}: revision not found") from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise OfflineError(
            f"{what}: cannot reach {hf_endpoint()} ({exc}); check the network or HF_ENDPOINT"
        ) from None


def repo_listing(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """(commit, every file path) of a model repository at `revision` (default: main)."""
    api = _api()
    info = _hub_call(repo_id, api.model_info, repo_id, revision=revision or "main")
    files = _hub_call(repo_id, api.list_repo_files, repo_id, revision=info.sha)
    return info.sha, sorted(files)


def default_release_name(repo_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repo_id.split("/", 1)[1]).strip("-").lower()


def detect_repo_format(repo_id: str, commit: str, listing: list[str]) -> tuple[Format, list[str]]:
    """The format of a repository's SAEs, by the formats' own detection (the same that
    `saereg detect` and `load_sae("hf:…")` use): the most confident format. Two formats
    equally sure (of the same SAEs, or of different ones in a repository that mixes
    formats) is an error naming both: a release file has one format."""

    def read_small(path: str) -> bytes:
        try:
            return hub_read_small(repo_id, commit, path, SMALL_FILE_LIMIT)
        except FetchError as exc:
            raise CanonicalFileError(str(exc)) from None

    found = get_registry().detect(listing, read_small)
    if not found:
        raise SaeregError(
            f"no installed format recognises the files of {repo_id} at {commit[:12]} "
            f"({len(listing)} files); pass --format NAME (`saereg plugins` lists them)"
        )
    ranked = sorted(found, key=lambda fm: (-fm[1].confidence, fm[0].name))
    best, match = ranked[0]
    tied = [f"{f.name} ({len(m.paths)})" for f, m in ranked[1:] if m.confidence == match.confidence]
    if tied:
        raise SaeregError(
            f"{repo_id}: formats {best.name} ({len(match.paths)}), {', '.join(tied)} each "
            "recognise SAEs in it equally surely (the number of SAEs in parentheses); "
            "choose one with --format"
        )
    return best, [p for p in match.paths if p]


def scaffold(
    repo_id: str, fmt: Format | None, name: str | None = None, revision: str | None = None
) -> tuple[str, str, int]:
    """A release file for every SAE `fmt` (by default: the detected format) finds in
    `repo_id`: (name, YAML text, n SAEs)."""
    commit, listing = repo_listing(repo_id, revision)
    detected: list[str] = []
    if fmt is None:
        fmt, detected = detect_repo_format(repo_id, commit, listing)
    found = fmt.discover(repo_id, listing) or [{"id": p, "path": p} for p in detected]
    if not found:
        raise SaeregError(
            f"format {fmt.name!r} found no SAEs in {repo_id} at {commit[:12]} ({len(listing)} "
            "files); check --format, or that the repository holds this format's files"
        )
    name = name or default_release_name(repo_id)
    provisional = Release(
        name=name,
        format=fmt.name,
        publisher=TODO,
        model=TODO,
        revision=commit,
        saes=(),
        repo_id=repo_id,
    )
    entries = []
    for item in found:
        entry = dict(item)
        try:
            derived = fmt.describe(provisional, SAEEntry(id=entry["id"], path=entry["path"]))
        except ValueError:
            derived = {}
        for key, value in derived.items():
            entry.setdefault(key, value)
        for key in REQUIRED_SAE_FIELDS:
            entry.setdefault(key, None)
        entries.append(entry)
    defaults, saes = factor_defaults(entries)
    doc: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "format": fmt.name,
        "publisher": repo_id.split("/", 1)[0],
        "model": TODO,
        "repo_id": repo_id,
        "revision": commit,
        "license": None,
        "links": {"model": f"https://huggingface.co/{TODO}"},
    }
    if defaults:
        doc["defaults"] = defaults
    doc["saes"] = saes
    unknown = sorted({k for e in entries for k in REQUIRED_SAE_FIELDS if e.get(k) is None})
    header = [
        f"# Scaffolded by `saereg new --repo {repo_id} --format {fmt.name}` at commit {commit}"
        + (" (format detected)." if detected else "."),
        "# Before opening a pull request (see CONTRIBUTING.md):",
        "#  - set `model` to the model the SAEs were trained on, and `links.model` to its page;",
        "#  - check `publisher`; set `license` if the repository states one;",
    ]
    if unknown:
        header.append(
            f"#  - fill in {', '.join(unknown)} where the repository publishes them "
            "(leave null where it does not);"
        )
    header += [
        "#  - add `neuronpedia`, `l0` and `variance_explained` per SAE where they exist;",
        "#  - run `saereg validate` and `saereg docs`.",
    ]
    return name, "\n".join(header) + "\n" + dump_release(doc), len(saes)


@dataclass
class SyncReport:
    release: str
    repo_id: str
    revision: str
    vanished: list[str] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.vanished and not self.unregistered


def sync_check(release: Release, fmt: Format, registered_paths: set[str]) -> SyncReport:
    """Paths the release lists that the repository no longer has, and SAE folders in the
    repository that no release of it registers (`registered_paths`, across releases)."""
    assert release.repo_id is not None
    commit, listing = repo_listing(release.repo_id, release.revision)
    files = set(listing)
    report = SyncReport(release.name, release.repo_id, commit)
    for entry in release.saes:
        missing = [
            f.path for f in fmt.files(release, entry) if not f.optional and f.path not in files
        ]
        if missing:
            report.vanished.append(f"{entry.id} ({', '.join(missing)})")
    for item in fmt.discover(release.repo_id, listing):
        if item["path"].rstrip("/") not in registered_paths:
            report.unregistered.append(item["path"])
    return report


def write_new_release(text: str, name: str, out_dir: Path) -> Path:
    target = out_dir / f"{name}.yaml"
    if target.exists():
        raise SaeregError(
            f"{target} already exists; saereg new never overwrites a release (choose another "
            "--release name, or edit the existing file)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
