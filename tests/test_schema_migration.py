"""Schema versions: a version-0 file (SAELens' shape) is migrated on load and by `migrate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from saereg.base.errors import ReleaseFileError
from saereg.catalogue.migrations import CURRENT_SCHEMA, MIGRATIONS, migrate
from saereg.catalogue.release_files import read_release_file

from .conftest import run_saereg, write

VERSION_0 = """\
schema: 0
name: legacy-release
model: gpt2-small
repo_id: someone/legacy-saes
conversion_func: null
config_overrides:
  dataset_path: Skylion007/openwebtext
  model_from_pretrained_kwargs: {center_writing_weights: true}
defaults: {d_sae: 128, context_size: 64, normalize_activations: none}
saes:
- id: layer_2
  path: 2
  hook_name: blocks.2.hook_resid_post
  hook_layer: 2
"""


def test_every_old_version_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(CURRENT_SCHEMA))


def test_version_0_is_migrated_when_loaded(tmp_path: Path) -> None:
    release = read_release_file(write(tmp_path / "legacy-release.yaml", VERSION_0))
    assert release.format == "saelens"  # conversion_func: null meant SAELens-native
    assert release.publisher == "someone"
    assert release.revision is None
    assert release.defaults["dataset"] == "Skylion007/openwebtext"
    assert dict(release.model_from_pretrained_kwargs or {}) == {"center_writing_weights": True}
    assert release.saes[0].path == "2"


def test_migrate_function_is_pure_and_stepwise() -> None:
    doc = {"schema": 0, "name": "x", "conversion_func": "gemma_2", "repo_id": "a/b", "saes": []}
    out = migrate(doc)
    assert out["schema"] == 1 and out["format"] == "gemma_2" and out["publisher"] == "a"
    assert doc["schema"] == 0 and "format" not in doc  # the input is not modified
    with pytest.raises(ReleaseFileError, match="unknown schema version -3"):
        migrate({"schema": -3})


def test_validate_hints_and_migrate_command_rewrites(tmp_path: Path) -> None:
    path = write(tmp_path / "legacy-release.yaml", VERSION_0)
    result = run_saereg("validate", str(path), "--standalone")
    assert result.returncode == 0, result.stdout
    assert (
        f"{path}:1: hint [old-schema] $.schema: written in schema version 0; it was migrated in "
        f"memory — rewrite it as version 1 (`saereg migrate {path}`)"
    ) in result.stdout
    done = run_saereg("migrate", str(path))
    assert done.returncode == 0
    assert done.stdout == f"{path}: migrated from schema version 0 to 1\n"
    assert path.read_text().startswith("schema: 1\n")
    again = run_saereg("validate", str(path), "--standalone", "--no-hints")
    assert again.stdout == "OK: 1 release files, 0 errors, 1 hints\n"
    assert run_saereg("migrate", str(path)).stdout == f"{path}: already schema version 1\n"
