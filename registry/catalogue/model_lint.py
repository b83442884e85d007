"""`saereg validate` checks that involve the models table.

Two kinds: the table itself (schema, one owner per name, shapes that agree with
themselves), and each release against it (a known `model`, listed widths that agree with
the width the model's shape gives the hook site).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from saereg.catalogue.models import ModelInfo, get_model, model_table
from saereg.catalogue.records import INHERITABLE
from saereg.catalogue.refs import close_matches
from saereg.catalogue.release_dirs import builtin_schema_dir
from saereg.catalogue.schema import Finding, ParsedFile, _humanize, read_and_check

ADD_A_MODEL = "add it to releases/models/models.yaml (CONTRIBUTING.md, 'How to add a model')"


def lint_model(parsed: ParsedFile, doc: dict[str, Any]) -> None:
    """Findings for one structurally valid release document, appended to `parsed`."""

    def at(path: tuple[Any, ...], message: str, code: str) -> None:
        parsed.findings.append(Finding(parsed.file, parsed.line_of(path), path, message, code=code))

    name = doc.get("model")
    if not isinstance(name, str) or name.startswith("TODO"):
        return  # the TODO placeholder already has its own hint
    model = get_model(name)
    if model is None:
        near = close_matches(name, model_table().all_names(), n=3)
        tip = f"did you mean {', '.join(repr(n) for n in near)}? Otherwise " if near else ""
        at(("model",), f"unknown model {name!r}; {tip}{ADD_A_MODEL}", "unknown-model")
        return
    defaults = doc.get("defaults") or {}
    for i, sae in enumerate(doc.get("saes") or []):
        values = {k: v for k, v in defaults.items() if k in INHERITABLE}
        values.update(sae)
        for width_key, hook_key in (("d_in", "hook_name"), ("d_out", "hook_name_out")):
            listed = values.get(width_key)
            derived = model.width(values.get(hook_key))
            if listed is None or derived is None or listed == derived:
                continue
            where = ("saes", i, width_key) if width_key in sae else ("defaults", width_key)
            at(
                where,
                f"{width_key} {listed} disagrees with {model.name}'s shape: "
                f"{values.get(hook_key)} is {derived} wide ({model.source}); fix the release, "
                "or the model's entry in releases/models/models.yaml",
                "model-width",
            )


@lru_cache(maxsize=1)
def _model_validator() -> Any:
    from jsonschema import Draft202012Validator  # deferred: jsonschema

    with (builtin_schema_dir() / "model.v1.json").open(encoding="utf-8") as fh:
        schema = json.load(fh)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_models_table(path: Path) -> ParsedFile:
    """Schema findings and cross-checks for a models table file."""
    parsed = read_and_check(path)
    if parsed.doc is None:
        return parsed
    add = parsed.findings.append
    errors = sorted(
        _model_validator().iter_errors(parsed.doc), key=lambda e: list(map(str, e.absolute_path))
    )
    for error in errors:
        base = tuple(error.absolute_path)
        for sub, message in _humanize(error):
            full = (*base, *sub)
            add(Finding(parsed.file, parsed.line_of(full), full, message))
    if errors:
        return parsed
    owners: dict[str, tuple[str, int]] = {}
    for i, raw in enumerate(parsed.doc["models"]):
        model = ModelInfo.from_dict(raw)
        for spelling in dict.fromkeys(n.lower() for n in model.names):
            if spelling in owners and owners[spelling][0] != model.name:
                other, j = owners[spelling]
                add(
                    Finding(
                        parsed.file,
                        parsed.line_of(("models", i, "name")),
                        ("models", i),
                        f"{spelling!r} already names {other!r} (models[{j}]); every name and "
                        "alias must mean one model",
                        code="duplicate-model-name",
                    )
                )
            owners.setdefault(spelling, (model.name, i))
    return parsed
