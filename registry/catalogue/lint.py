"""`saereg validate`: the schema plus the checks a reviewer would otherwise do by hand.

Findings are split, as conda-forge's recipe linter does, into blocking **errors** (the
file is wrong: the PR cannot merge) and advisory **hints** (worth a look, never fail).
Every problem is reported, not just the first.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.catalogue.model_lint import check_models_table, lint_model
from saereg.catalogue.records import (
    DICTIONARY_KINDS,
    INHERITABLE,
    REQUIRED_SAE_FIELDS,
    kind_of,
    layer_of_hook,
)
from saereg.catalogue.refs import close_matches
from saereg.catalogue.release_check import unsafe_path
from saereg.catalogue.release_dirs import MODELS_FILE, release_files
from saereg.catalogue.schema import Finding, ParsedFile, check_schema, read_and_check
from saereg.catalogue.text_lint import text_problems


@dataclass
class ValidationResult:
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def hints(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "hint"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, *, hints: bool = True, max_per_hint: int = 5) -> str:
        """One report, errors first, that could be posted on a pull request as it is."""
        lines: list[str] = []
        errors = self.errors
        if errors:
            lines.append(f"## Errors ({len(errors)}) — these block merging")
            lines.extend(f"- {f.render()}" for f in errors)
        if hints and self.hints:
            lines.append(f"## Hints ({len(self.hints)}) — advisory, not blocking")
            by_code: dict[str, list[Finding]] = defaultdict(list)
            for f in self.hints:
                by_code[f.code].append(f)
            for code, items in sorted(by_code.items()):
                for f in items[:max_per_hint]:
                    lines.append(f"- {f.render()}")
                if len(items) > max_per_hint:
                    lines.append(f"- … and {len(items) - max_per_hint} more [{code}] hints")
        verdict = "FAILED" if errors else "OK"
        lines.append(
            f"{verdict}: {len(self.files)} release files, {len(errors)} errors, "
            f"{len(self.hints)} hints"
        )
        return "\n".join(lines)


def lint_release(
    parsed: ParsedFile,
    doc: dict[str, Any],
    formats: Iterable[str],
    dictionary_kinds: Mapping[str, str] | None = None,
) -> None:
    """Checks on one structurally valid (migrated) release document. `dictionary_kinds`
    maps each multi-layer format to the kind it produces (the other formats produce
    single SAEs and transcoders); None skips the kind check."""
    file = parsed.file
    add = parsed.findings.append

    def at(path: tuple[Any, ...], message: str, code: str, severity: str = "error") -> None:
        add(Finding(file, parsed.line_of(path), path, message, severity, code))

    stem = Path(file).name.removesuffix(".yaml")
    if doc["name"] != stem:
        at(
            ("name",),
            f"release name {doc['name']!r} does not match the file name "
            f"{Path(file).name!r}; rename the file to {doc['name']}.yaml",
            "file-name",
        )
    known = sorted(formats)
    if doc["format"] not in known:
        guess = close_matches(doc["format"], known, n=1)
        tip = f"; did you mean {guess[0]!r}?" if guess else ""
        at(
            ("format",),
            f"unknown format {doc['format']!r}{tip} (installed formats: {', '.join(known)})",
            "unknown-format",
        )
    if doc.get("revision") is None and doc.get("repo_id"):
        at(
            ("revision",),
            "revision is not pinned; pin the repository's current commit so the "
            "files cannot change under users",
            "unpinned-revision",
            "hint",
        )
    for i, alias in enumerate(doc.get("repo_aliases") or ()):
        if not doc.get("repo_id") or alias == doc["repo_id"]:
            at(
                ("repo_aliases", i),
                f"repo_aliases[{i}] {alias!r} "
                + ("is repo_id itself" if doc.get("repo_id") else "needs a repo_id to stand for")
                + "; list only former names of repo_id",
                "repo-alias",
            )
    for key in ("model", "publisher"):
        if str(doc.get(key, "")).startswith("TODO"):
            at((key,), f"{key} is still the TODO placeholder from `saereg new`", "todo", "hint")
    for key, url in (doc.get("links") or {}).items():
        if "TODO" in url:
            at(("links", key), f"links.{key} still contains TODO", "todo", "hint")
    for path, message in text_problems(doc):
        at(path, message, "markup")
    defaults = doc.get("defaults") or {}
    seen_ids: dict[str, int] = {}
    for i, sae in enumerate(doc["saes"]):
        here = ("saes", i)
        sae_id = sae["id"]
        if sae_id in seen_ids:
            at(
                (*here, "id"),
                f"duplicate SAE id {sae_id!r} (first used at saes[{seen_ids[sae_id]}], "
                f"line {parsed.line_of(('saes', seen_ids[sae_id], 'id'))})",
                "duplicate-id",
            )
        else:
            seen_ids[sae_id] = i
        why = unsafe_path(sae["path"])
        if why:
            at((*here, "path"), f"path {sae['path']!r} {why}", "unsafe-path")
        for key in sae.get("sha256") or {}:
            why = unsafe_path(key)
            if why:
                at((*here, "sha256", key), f"pinned file {key!r} {why}", "unsafe-path")
        values = {k: v for k, v in defaults.items() if k in INHERITABLE}
        values.update(sae)
        missing = [f for f in REQUIRED_SAE_FIELDS if f not in values]
        if missing:
            at(
                here,
                f"SAE {sae_id!r} does not state {', '.join(missing)} (neither in the entry "
                "nor in defaults); write null where upstream does not publish a value",
                "missing-field",
            )
        if dictionary_kinds is not None and doc["format"] in known:
            problem = _kind_problem(doc["format"], values, dictionary_kinds)
            if problem:
                where = (
                    (*here, "kind")
                    if "kind" in sae
                    else (("defaults", "kind") if "kind" in defaults else here)
                )
                at(where, f"SAE {sae_id!r}: {problem}", "kind")
        hook = values.get("hook_name")
        layer = values.get("hook_layer")
        if isinstance(hook, str) and layer is not None:
            implied = layer_of_hook(hook)
            if implied is not None and implied != layer:
                at(
                    (*here, "hook_layer"),
                    f"hook_layer {layer} does not match hook_name {hook!r} "
                    f"(which is layer {implied})",
                    "hook-layer",
                )
        widths = values.get("nested_widths")
        if widths:
            if any(b <= a for a, b in itertools.pairwise(widths)):
                at(
                    (*here, "nested_widths"),
                    f"nested_widths {widths} must be strictly increasing",
                    "nested-widths",
                )
            elif values.get("d_sae") is not None and widths[-1] != values["d_sae"]:
                at(
                    (*here, "nested_widths"),
                    f"the last nested width {widths[-1]} must equal d_sae {values['d_sae']}",
                    "nested-widths",
                )
        if (
            values.get("normalize_activations") == "expected_average_only_in"
            and values.get("norm_scaling_factor") is None
        ):
            at(
                here,
                f"SAE {sae_id!r} expects inputs scaled by a dataset norm "
                "(expected_average_only_in) but has no norm_scaling_factor, so it will run on "
                "unscaled inputs",
                "missing-norm-factor",
                "hint",
            )
    lint_model(parsed, doc)


def _kind_problem(fmt: str, values: Mapping[str, Any], dictionary_kinds: Mapping[str, str]) -> str:
    """Why an entry's kind is one its format cannot produce ("" if it can)."""
    kind = kind_of(values.get("kind"), values.get("architecture"))
    makes = dictionary_kinds.get(fmt)
    if makes is not None and kind != makes:
        return (
            f"format {fmt!r} reads whole multi-layer dictionaries of kind {makes!r}, but the "
            f"entry's kind is {kind!r}; write kind: {makes} (and n_layers)"
        )
    if makes is None and kind in DICTIONARY_KINDS:
        readers = sorted(f for f, k in dictionary_kinds.items() if k == kind)
        return (
            f"kind {kind!r} is a multi-layer dictionary, but format {fmt!r} reads single SAEs "
            f"and transcoders; use a format that reads whole {kind} dictionaries ("
            + (", ".join(readers) or "none is installed")
            + ") or drop kind"
        )
    return ""


def validate_paths(
    paths: Sequence[Path],
    formats: Iterable[str],
    *,
    catalogue: Mapping[str, str] | None = None,
    catalogue_neuronpedia: Mapping[str, tuple[str, str]] | None = None,
    dictionary_kinds: Mapping[str, str] | None = None,
) -> ValidationResult:
    """Validate release files (directories are expanded to their *.yaml files).

    Cross-file checks (unique release names, unique Neuronpedia ids) run over the given
    files and against the rest of the catalogue: `catalogue` maps release name → file and
    `catalogue_neuronpedia` maps Neuronpedia id → (release, SAE id). Entries that come
    from one of the files being validated are ignored there. `dictionary_kinds`: as for
    `lint_release`.
    """
    formats = list(formats)
    result = ValidationResult()
    targets: list[Path] = []
    tables: list[Path] = []
    for p in paths:
        targets.extend(release_files(p) if p.is_dir() else [p])
        table = p / MODELS_FILE if p.is_dir() else p
        if table.as_posix().endswith(MODELS_FILE):
            tables.append(table)
    targets = [t for t in targets if t not in tables]
    target_files = {_resolved(t) for t in targets}
    names: dict[str, str] = {
        name: file
        for name, file in (catalogue or {}).items()
        if _resolved(Path(file)) not in target_files
    }
    neuronpedia: dict[str, str] = {
        np_id: f"{rel}/{sae_id}"
        for np_id, (rel, sae_id) in (catalogue_neuronpedia or {}).items()
        if rel in names
    }
    for path in targets:
        parsed = read_and_check(path)
        before = len(parsed.findings)
        doc = check_schema(parsed, invalid_too=True) if parsed.doc is not None else None
        schema_errors = [f for f in parsed.findings[before:] if f.severity == "error"]
        if doc is not None and not schema_errors:
            lint_release(parsed, doc, formats, dictionary_kinds)
            _cross_file(parsed, doc, names, neuronpedia)
        elif doc is not None:
            _lint_despite_schema_errors(parsed, doc, formats, schema_errors, dictionary_kinds)
        result.files.append(str(path))
        result.findings.extend(parsed.findings)
    for table in (t for t in tables if t.is_file()):
        result.findings.extend(check_models_table(table).findings)
    return result


def _lint_despite_schema_errors(
    parsed: ParsedFile,
    doc: dict[str, Any],
    formats: Iterable[str],
    errors: list[Finding],
    dictionary_kinds: Mapping[str, str] | None = None,
) -> None:
    """The reviewer's lints on a file that breaks the schema, so one run reports both.
    The lints expect a valid document: they stop quietly at the first part whose shape
    the schema already reported, and say nothing again about a path it reported."""
    before = len(parsed.findings)
    with contextlib.suppress(KeyError, TypeError, AttributeError, ValueError, IndexError):
        lint_release(parsed, doc, formats, dictionary_kinds)
    reported = {f.json_path for f in errors}
    linted = parsed.findings[before:]
    del parsed.findings[before:]
    parsed.findings.extend(f for f in linted if f.json_path not in reported)


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (reported when read)
        return str(path)


def _cross_file(
    parsed: ParsedFile, doc: dict[str, Any], names: dict[str, str], neuronpedia: dict[str, str]
) -> None:
    name = doc["name"]
    if name in names:
        parsed.findings.append(
            Finding(
                parsed.file,
                parsed.line_of(("name",)),
                ("name",),
                f"release name {name!r} is already used by {names[name]}",
                code="duplicate-release",
            )
        )
    else:
        names[name] = f"{parsed.file}:{parsed.line_of(('name',))}"
    for i, sae in enumerate(doc["saes"]):
        np_id = sae.get("neuronpedia")
        if not np_id:
            continue
        here = ("saes", i, "neuronpedia")
        if np_id in neuronpedia:
            parsed.findings.append(
                Finding(
                    parsed.file,
                    parsed.line_of(here),
                    here,
                    f"Neuronpedia id {np_id!r} is already used by {neuronpedia[np_id]}",
                    code="duplicate-neuronpedia",
                )
            )
        else:
            neuronpedia[np_id] = f"{name}/{sae['id']} ({parsed.file}:{parsed.line_of(here)})"
