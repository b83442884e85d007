"""Release-file schema versions: each older version's documents are rewritten, step by
step, into the current one (`saereg migrate` writes the result back)."""

from __future__ import annotations

from typing import Any

from saereg.base.errors import ReleaseFileError

CURRENT_SCHEMA = 1


def _migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 0 is the SAELens `pretrained_saes.yaml` shape of one release.

    It names the converter `conversion_func` (null meaning the SAELens-native layout),
    may carry a `config_overrides` mapping, and has no publisher field.
    """
    doc = dict(doc)
    conversion = doc.pop("conversion_func", None)
    doc.setdefault("format", conversion or "saelens")
    overrides = dict(doc.pop("config_overrides", None) or {})
    kwargs = overrides.pop("model_from_pretrained_kwargs", None)
    if kwargs:
        doc.setdefault("model_from_pretrained_kwargs", kwargs)
    defaults = dict(doc.get("defaults") or {})
    if "dataset_path" in overrides:
        defaults.setdefault("dataset", overrides.pop("dataset_path"))
    if "normalize_activations" in overrides:
        defaults.setdefault("normalize_activations", overrides.pop("normalize_activations"))
    if defaults:
        doc["defaults"] = defaults
    if "publisher" not in doc:
        repo = doc.get("repo_id") or ""
        doc["publisher"] = repo.split("/", 1)[0] if "/" in repo else "unknown"
    doc.setdefault("revision", None)
    saes = []
    for entry in doc.get("saes") or []:
        if isinstance(entry, dict) and not isinstance(entry.get("path"), str | type(None)):
            entry = {**entry, "path": str(entry["path"])}
        saes.append(entry)
    doc["saes"] = saes
    doc["schema"] = 1
    return doc


#: from-version → function returning the document at from-version + 1.
MIGRATIONS: dict[int, Any] = {0: _migrate_0_to_1}


def migrate(doc: dict[str, Any], where: str = "<release>") -> dict[str, Any]:
    """Bring a parsed release document up to CURRENT_SCHEMA, one version at a time."""
    version = doc.get("schema")
    if version is None:
        raise ReleaseFileError(
            f"{where}: missing 'schema:' (the schema version); add 'schema: {CURRENT_SCHEMA}' "
            "as the first line"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReleaseFileError(f"{where}: 'schema' must be an integer, got {version!r}")
    if version > CURRENT_SCHEMA:
        raise ReleaseFileError(
            f"{where}: schema version {version} is newer than this saereg understands "
            f"(it knows versions 0 to {CURRENT_SCHEMA}); upgrade saereg"
        )
    while version < CURRENT_SCHEMA:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ReleaseFileError(
                f"{where}: unknown schema version {version}; known versions are "
                f"{', '.join(str(v) for v in sorted([*MIGRATIONS, CURRENT_SCHEMA]))}"
            )
        doc = step(doc)
        version = doc["schema"]
    return doc
