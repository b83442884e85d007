"""Keeping the imported releases fresh: a new upstream catalogue merged into the release
files without undoing what was curated here.

`saereg import saelens` regenerates release files from SAELens' pretrained_saes.yaml
alone. Run on a newer upstream, its output would silently replace what was fixed or added
here (canonical model names, hook names, links, pinned revisions) and blank every value
that came from sources the automated run does not have (docs tables, model cards). The
merge therefore takes, field by field:

* hand-curated fields (`CURATED_RELEASE`, `CURATED_SAE`): ours, always; where upstream
  now says something else, the summary lists the conflict for a person to decide;
* a value upstream does not know (null or absent): ours, never blanked;
* what pretrained_saes.yaml itself publishes (`UPSTREAM_RELEASE`, `UPSTREAM_SAE`: paths,
  L0, Neuronpedia ids, ...): upstream's, each change listed (paths on their own: a
  changed path changes what loads);
* what the import derives from naming conventions (widths, hook names of new SAEs, ...):
  only where ours is unknown. The committed values came from better sources (configs
  read from the repositories, model cards) that an automated run does not have;
* SAEs and releases upstream no longer lists: kept, listed as vanished for review (a
  vanished entry may still load, and references to it must not break silently).

The result is deterministic; the summary is markdown for the pull request's body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.catalogue.migrations import migrate
from saereg.catalogue.records import INHERITABLE, REQUIRED_SAE_FIELDS, Release
from saereg.catalogue.release_files import (
    dump_release,
    factor_defaults,
    read_release_file,
    release_from_doc,
)
from saereg.catalogue.safeyaml import decode, load_yaml
from saereg.publish.importer import HEADER

#: Release fields set or fixed by hand here: never overwritten by an import.
CURATED_RELEASE = (
    "model",
    "links",
    "revision",
    "description",
    "license",
    "publisher",
    "repo_id",  # a repository moved here (repo_aliases keep the old names)
    "repo_aliases",
)
#: SAE fields set or fixed by hand here (the hooks): never overwritten by an import.
CURATED_SAE = ("hook_name", "hook_layer", "hook_name_out", "hf_hook_name")
#: Release fields pretrained_saes.yaml publishes: upstream's value wins.
UPSTREAM_RELEASE = ("schema", "name", "format", "model_from_pretrained_kwargs")
#: SAE fields pretrained_saes.yaml publishes per SAE: upstream's value wins.
UPSTREAM_SAE = ("path", "l0", "neuronpedia", "variance_explained", "norm_scaling_factor")
#: How many items of each list the summary shows before counting the rest.
SHOWN = 50


@dataclass
class RefreshSummary:
    """What a refresh changes, for the pull request and for `--dry-run`."""

    new_releases: list[tuple[str, int]] = field(default_factory=list)
    changed_releases: list[str] = field(default_factory=list)
    new_saes: list[str] = field(default_factory=list)
    changed_paths: list[str] = field(default_factory=list)
    changed_values: list[str] = field(default_factory=list)
    vanished_saes: list[str] = field(default_factory=list)
    vanished_releases: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    docs_changed: list[str] = field(default_factory=list)
    upstream: str = ""

    @property
    def touched(self) -> list[str]:
        """Releases whose files are new or rewritten (what `sync-check` should look at)."""
        return sorted({name for name, _ in self.new_releases} | set(self.changed_releases))

    def render(self) -> str:
        lines = [f"## Catalogue refresh from {self.upstream}", ""]
        if not (
            self.touched
            or self.vanished_saes
            or self.vanished_releases
            or self.conflicts
            or self.docs_changed
        ):
            return "\n".join([*lines, "Nothing changed: the catalogue is up to date.", ""])
        lines.append(
            f"{len(self.new_releases)} new releases, {len(self.changed_releases)} changed, "
            f"{len(self.new_saes)} new SAEs, {len(self.changed_paths)} changed paths, "
            f"{len(self.vanished_saes)} vanished SAEs, {len(self.vanished_releases)} vanished "
            f"releases, {len(self.conflicts)} conflicts with hand-curated fields."
        )
        sections = [
            ("New releases", [f"`{n}` ({k} SAEs)" for n, k in self.new_releases]),
            ("New SAEs in existing releases", self.new_saes),
            ("Changed paths (what loads changes)", self.changed_paths),
            ("Other changed values", self.changed_values),
            (
                "Vanished SAEs (upstream no longer lists them; kept, please review)",
                self.vanished_saes,
            ),
            ("Vanished releases (kept, please review)", [f"`{n}`" for n in self.vanished_releases]),
            ("Conflicts: upstream differs from a hand-curated field (ours kept)", self.conflicts),
            ("Generated pages that change", [f"`{p}`" for p in self.docs_changed]),
        ]
        for title, items in sections:
            if not items:
                continue
            lines += ["", f"### {title} ({len(items)})", ""]
            lines += [f"- {item}" for item in items[:SHOWN]]
            if len(items) > SHOWN:
                lines.append(f"- … and {len(items) - SHOWN} more")
        return "\n".join(lines) + "\n"


def _entries(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """SAE id → the entry with the release's defaults applied."""
    defaults = {k: v for k, v in (doc.get("defaults") or {}).items() if k in INHERITABLE}
    out: dict[str, dict[str, Any]] = {}
    for raw in doc.get("saes") or []:
        entry = {**defaults, **raw}
        out[str(entry["id"])] = entry
    return out


def _unknown(value: Any) -> bool:
    return value is None or value == {} or value == []


def merge_release(
    name: str, ours: Mapping[str, Any], theirs: Mapping[str, Any], summary: RefreshSummary
) -> dict[str, Any]:
    """Our release document updated with upstream's (`theirs`, a fresh import), by the
    rules in the module docstring; what changed goes into `summary`."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys([*ours, *theirs]):
        if key in ("saes", "defaults"):
            continue
        mine, new = ours.get(key), theirs.get(key)
        if key == "links" and isinstance(mine, Mapping) and isinstance(new, Mapping):
            links = dict(mine)
            for k, url in new.items():
                if k not in links:
                    links[k] = url
                elif links[k] != url:
                    summary.conflicts.append(
                        f"`{name}` links.{k}: upstream `{url}`, kept `{links[k]}`"
                    )
            merged[key] = links
        elif key in CURATED_RELEASE and key in ours:
            merged[key] = mine
            if not _unknown(new) and new != mine and key not in ("revision", "license"):
                summary.conflicts.append(f"`{name}` {key}: upstream `{new}`, kept `{mine}`")
        elif key not in theirs or _unknown(new) or (key not in UPSTREAM_RELEASE and key in ours):
            merged[key] = mine if key in ours else new
        else:
            if key in ours and new != mine:
                summary.changed_values.append(f"`{name}` {key}: `{mine}` → `{new}`")
            merged[key] = new
    our_saes, their_saes = _entries(ours), _entries(theirs)
    saes: list[dict[str, Any]] = []
    for sae_id, new in their_saes.items():
        ref = f"`{name}/{sae_id}`"
        mine = our_saes.get(sae_id)
        if mine is None:
            summary.new_saes.append(ref)
            saes.append(new)
            continue
        entry: dict[str, Any] = {}
        for key in dict.fromkeys([*mine, *new]):
            a, b = mine.get(key), new.get(key)
            if key in CURATED_SAE and key in mine:
                entry[key] = a
                if not _unknown(b) and b != a:
                    summary.conflicts.append(f"{ref} {key}: upstream `{b}`, kept `{a}`")
            elif key not in new or _unknown(b) or (key not in UPSTREAM_SAE and not _unknown(a)):
                entry[key] = a
            else:
                if key in mine and a != b:
                    where = summary.changed_paths if key == "path" else summary.changed_values
                    where.append(f"{ref} {key}: `{a}` → `{b}`")
                entry[key] = b
        saes.append(entry)
    for sae_id, mine in our_saes.items():
        if sae_id not in their_saes:
            summary.vanished_saes.append(f"`{name}/{sae_id}` (path `{mine.get('path')}`)")
            saes.append(mine)
    for entry in saes:  # every SAE states the required fields, if only as null
        for key in REQUIRED_SAE_FIELDS:
            entry.setdefault(key, None)
    merged["defaults"], merged["saes"] = factor_defaults(saes)
    if not merged["defaults"]:
        del merged["defaults"]
    order = [k for k in theirs if k in merged] + [k for k in merged if k not in theirs]
    return {k: merged[k] for k in order}


def _read(path: Path) -> dict[str, Any]:
    doc = load_yaml(decode(path.read_bytes(), str(path)), str(path))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a release file must be a YAML mapping")
    return doc


def refresh(
    imported: Mapping[str, str], releases_dir: Path, summary: RefreshSummary
) -> dict[str, str]:
    """{file name: new text} for the release files a fresh import (`imported`: what
    `import_saelens` returns) adds or changes in `releases_dir`; `summary` says why."""
    writes: dict[str, str] = {}
    for fname, text in sorted(imported.items()):
        name = fname[: -len(".yaml")]
        theirs = load_yaml(text.split("\n", 1)[1] if text.startswith("#") else text, fname)
        target = releases_dir / fname
        if not target.is_file():
            summary.new_releases.append((name, len(theirs.get("saes") or [])))
            writes[fname] = text
            continue
        ours = _read(target)
        merged = merge_release(name, ours, theirs, summary)
        if _entries(merged) == _entries(ours) and {
            k: v for k, v in merged.items() if k not in ("saes", "defaults")
        } == {k: v for k, v in ours.items() if k not in ("saes", "defaults")}:
            continue  # nothing but order or factoring differs: leave the file as it is
        summary.changed_releases.append(name)
        current = target.read_text(encoding="utf-8")
        head = HEADER if current.startswith(HEADER) else ""
        writes[fname] = head + dump_release(merged)
    for path in sorted(releases_dir.glob("*.yaml")):
        if path.name not in imported and path.read_text(encoding="utf-8").startswith(HEADER):
            summary.vanished_releases.append(path.name[: -len(".yaml")])
    return writes


def preview_releases(releases_dir: Path, writes: Mapping[str, str]) -> list[Release]:
    """The releases of `releases_dir` as they will be once `writes` are written (for the
    docs a refresh regenerates, and for `--dry-run`)."""
    out = []
    for path in sorted(releases_dir.glob("*.yaml")):
        if path.name not in writes:
            out.append(read_release_file(path))
    for fname, text in sorted(writes.items()):
        where = str(releases_dir / fname)
        doc = migrate(load_yaml(text, where), where)
        out.append(release_from_doc(doc, where))
    return sorted(out, key=lambda r: r.name)
