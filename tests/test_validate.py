"""`saereg validate`: every bad input is reported with file, line, JSON path and a sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saereg.catalogue.release_dirs import builtin_release_dir

from .conftest import run_saereg, write

GOOD = """\
schema: 1
name: {name}
format: saelens
publisher: Test
model: gpt2-small
repo_id: org/repo
revision: 0123456789abcdef0123456789abcdef01234567
defaults:
  d_sae: 64
  context_size: 128
  normalize_activations: none
saes:
- id: blocks.1.hook_resid_pre
  path: blocks.1.hook_resid_pre
  hook_name: blocks.1.hook_resid_pre
  hook_layer: 1
  neuronpedia: {np}
"""


def validate(path: Path, *extra: str):
    return run_saereg("validate", str(path), *extra)


def test_whole_catalogue_passes() -> None:
    result = run_saereg("validate", "--no-hints")
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.strip().endswith("0 errors, 187 hints")
    assert f"OK: {len(list(builtin_release_dir().glob('*.yaml')))} release files" in result.stdout


def test_good_file_passes(tmp_path: Path) -> None:
    path = write(tmp_path / "good.yaml", GOOD.format(name="good", np="gpt2-small/1-test"))
    result = validate(path)
    assert result.returncode == 0
    assert result.stdout == "OK: 1 release files, 0 errors, 0 hints\n"


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "schema: 1\nname: bad\nsaes: [\n  - id: x\n")
    result = validate(path)
    assert result.returncode == 1
    assert (
        f"- {path}:4: error [yaml] $: not valid YAML: did not find expected node content "
        "(while parsing a flow node)"
    ) in result.stdout


def test_not_a_mapping(tmp_path: Path) -> None:
    result = validate(write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert result.returncode == 1
    assert "error [yaml] $: a release file must be a YAML mapping, got a list" in result.stdout


def test_schema_violations_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.format(name="schema-bad", np="gpt2-small/1-test")
    text = (
        text.replace("d_sae: 64", "d_sae: lots")
        .replace("normalize_activations: none", "normalize_activations: sometimes")
        .replace("0123456789abcdef0123456789abcdef01234567", "main")
        + "  d_sea: 12\n"
    )
    path = write(tmp_path / "schema-bad.yaml", text)
    result = validate(path)
    assert result.returncode == 1
    expected = [
        f"- {path}:9: error [schema] $.defaults.d_sae: expected an integer or null, got 'lots' "
        "(a string)",
        f"- {path}:11: error [schema] $.defaults.normalize_activations: 'sometimes' (a string) is "
        "not one of: none, expected_average_only_in, constant_norm_rescale, layer_norm, "
        "constant_scalar_rescale, null",
        f"- {path}:7: error [schema] $.revision: 'main' is not a 40-character lowercase "
        "hexadecimal commit hash (or null)",
        f"- {path}:18: error [schema] $.saes[0].d_sea: unknown field 'd_sea'; did you mean "
        "'d_sae'?",
    ]
    for line in expected:
        assert line in result.stdout
    assert "FAILED: 1 release files, 4 errors, 0 hints" in result.stdout


def test_missing_required_release_field(tmp_path: Path) -> None:
    text = GOOD.format(name="nopub", np="gpt2-small/1-test").replace("publisher: Test\n", "")
    path = write(tmp_path / "nopub.yaml", text)
    result = validate(path)
    assert f"- {path}:1: error [schema] $: missing required field 'publisher'" in result.stdout


def test_repo_id_or_base_url(tmp_path: Path) -> None:
    text = GOOD.format(name="both", np="gpt2-small/1-test").replace(
        "repo_id: org/repo", "repo_id: org/repo\nbase_url: https://example.org/files/"
    )
    result = validate(write(tmp_path / "both.yaml", text))
    assert "error [schema] $: set only one of 'repo_id' and 'base_url'" in result.stdout


def test_duplicates_path_traversal_and_hook_layer(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dups.yaml",
        """\
schema: 1
name: dups
format: saelens
publisher: Test
model: gpt2-small
repo_id: org/repo
revision: null
defaults: {d_sae: 64, context_size: 128, normalize_activations: none}
saes:
- id: a
  path: ../../etc
  hook_name: blocks.1.hook_resid_pre
  hook_layer: 2
- id: a
  path: /abs/path
  hook_name: blocks.3.hook_resid_pre
  hook_layer: 3
- id: b
  path: ok
  hook_layer: 3
- id: c
  path: C:/weights
  hook_name: hook_embed
  hook_layer: 0
""",
    )
    result = validate(path)
    assert result.returncode == 1
    expected = [
        f"- {path}:11: error [unsafe-path] $.saes[0].path: path '../../etc' contains '..'; a path "
        "must stay inside its repository",
        f"- {path}:13: error [hook-layer] $.saes[0].hook_layer: hook_layer 2 does not match "
        "hook_name 'blocks.1.hook_resid_pre' (which is layer 1)",
        f"- {path}:14: error [duplicate-id] $.saes[1].id: duplicate SAE id 'a' (first used at "
        "saes[0], line 10)",
        f"- {path}:15: error [unsafe-path] $.saes[1].path: path '/abs/path' is absolute; paths are "
        "relative to the repository",
        f"- {path}:18: error [missing-field] $.saes[2]: SAE 'b' does not state hook_name (neither "
        "in the entry nor in defaults); write null where upstream does not publish a value",
        f"- {path}:22: error [unsafe-path] $.saes[3].path: path 'C:/weights' is absolute; paths "
        "are relative to the repository",
        f"- {path}:7: hint [unpinned-revision] $.revision: revision is not pinned; pin the "
        "repository's current commit so the files cannot change under users",
    ]
    for line in expected:
        assert line in result.stdout, result.stdout
    assert "FAILED: 1 release files, 6 errors, 1 hints" in result.stdout


def test_duplicates_across_the_catalogue(tmp_path: Path) -> None:
    # A contributor's new file reusing a release name and a Neuronpedia id of the catalogue.
    path = write(
        tmp_path / "gpt2-small-res-jb.yaml",
        GOOD.format(name="gpt2-small-res-jb", np="gpt2-small/8-res-jb"),
    )
    result = validate(path)
    assert result.returncode == 1
    catalogue_file = builtin_release_dir() / "gpt2-small-res-jb.yaml"
    assert (
        f"- {path}:2: error [duplicate-release] $.name: release name 'gpt2-small-res-jb' is "
        f"already used by {catalogue_file}"
    ) in result.stdout
    assert (
        f"- {path}:17: error [duplicate-neuronpedia] $.saes[0].neuronpedia: Neuronpedia id "
        "'gpt2-small/8-res-jb' is already used by gpt2-small-res-jb/blocks.8.hook_resid_pre"
    ) in result.stdout


def test_duplicate_names_between_given_files(tmp_path: Path) -> None:
    write(tmp_path / "a" / "twin.yaml", GOOD.format(name="twin", np="gpt2-small/1-x"))
    write(tmp_path / "b" / "twin.yaml", GOOD.format(name="twin", np="gpt2-small/1-y"))
    result = run_saereg("validate", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 1
    assert "error [duplicate-release] $.name: release name 'twin' is already used by" in (
        result.stdout
    )


def test_unknown_format(tmp_path: Path) -> None:
    text = GOOD.format(name="fmt", np="gpt2-small/1-test").replace(
        "format: saelens", "format: gemma_scop"
    )
    path = write(tmp_path / "fmt.yaml", text)
    result = validate(path)
    assert result.returncode == 1
    assert (
        f"- {path}:3: error [unknown-format] $.format: unknown format 'gemma_scop'; did you mean "
        "'gemma_scope'? (installed formats: circuit_tracer_clt, circuit_tracer_set, "
        "ckkissane_crosscoder, deepseek_r1, "
        "dictionary_learning, dictionary_learning_crosscoder, gemma_scope,"
    ) in result.stdout


def test_kind_the_format_cannot_produce(tmp_path: Path) -> None:
    # A single-SAE format asked for a cross-layer transcoder.
    text = GOOD.format(name="kinds", np="gpt2-small/1-test").replace(
        "  hook_layer: 1\n", "  hook_layer: 1\n  kind: clt\n  n_layers: 12\n"
    )
    path = write(tmp_path / "kinds.yaml", text)
    result = validate(path)
    assert result.returncode == 1
    assert (
        f"- {path}:17: error [kind] $.saes[0].kind: SAE 'blocks.1.hook_resid_pre': kind 'clt' "
        "is a multi-layer dictionary, but format 'saelens' reads single SAEs and transcoders; "
        "use a format that reads whole clt dictionaries (circuit_tracer_clt, "
        "gemma_scope_2_clt) or drop kind"
    ) in result.stdout
    # A multi-layer format whose entry does not say its kind (inherited from defaults here).
    text = (
        GOOD.format(name="kinds", np="gpt2-small/1-test")
        .replace("format: saelens", "format: circuit_tracer_set")
        .replace("  normalize_activations: none\n", "  normalize_activations: none\n  kind: clt\n")
    )
    path = write(tmp_path / "kinds.yaml", text)
    result = validate(path)
    assert result.returncode == 1
    assert (
        f"- {path}:12: error [kind] $.defaults.kind: SAE 'blocks.1.hook_resid_pre': format "
        "'circuit_tracer_set' reads whole multi-layer dictionaries of kind 'transcoder_set', "
        "but the entry's kind is 'clt'; write kind: transcoder_set (and n_layers)"
    ) in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "schema: 7\nname: x\n",
            "schema version 7 is newer than this saereg understands (it "
            "knows versions 0 to 1); upgrade saereg",
        ),
        ("schema: -1\nname: x\n", "unknown schema version -1; known versions are 0, 1"),
        ("schema: one\nname: x\n", "'schema' must be an integer, got 'one'"),
        ("name: x\n", "missing 'schema:' (the schema version); add 'schema: 1' as the first line"),
    ],
)
def test_schema_versions(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "x.yaml", text)
    result = validate(path)
    assert result.returncode == 1
    assert f"- {path}:1: error [schema-version] $.schema: {message}" in result.stdout


def test_file_name_must_match_release_name(tmp_path: Path) -> None:
    path = write(tmp_path / "other.yaml", GOOD.format(name="good", np="gpt2-small/1-test"))
    result = validate(path)
    assert (
        f"- {path}:2: error [file-name] $.name: release name 'good' does not match the file name "
        "'other.yaml'; rename the file to good.yaml"
    ) in result.stdout


def test_nested_widths_lint(tmp_path: Path) -> None:
    text = GOOD.format(name="nest", np="gpt2-small/1-test").replace(
        "  neuronpedia:", "  nested_widths: [8, 4, 64]\n  neuronpedia:"
    )
    result = validate(write(tmp_path / "nest.yaml", text))
    assert (
        "error [nested-widths] $.saes[0].nested_widths: nested_widths [8, 4, 64] must be "
        "strictly increasing" in result.stdout
    )
    text = text.replace("[8, 4, 64]", "[8, 16, 32]")
    result = validate(write(tmp_path / "nest.yaml", text))
    assert "the last nested width 32 must equal d_sae 64" in result.stdout


def test_json_output_and_missing_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "fmt.yaml",
        GOOD.format(name="fmt", np="gpt2-small/1-t").replace("format: saelens", "format: nope"),
    )
    result = validate(path, "--json")
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["findings"][0] == {
        "file": str(path),
        "line": 3,
        "json_path": "$.format",
        "severity": "error",
        "code": "unknown-format",
        "message": data["findings"][0]["message"],
    }
    missing = run_saereg("validate", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert "no such file or directory" in missing.stderr
