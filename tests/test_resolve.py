"""Resolving and listing: the API, the CLI output, exit codes and what gets imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import saereg
from saereg.cli import main

from .conftest import run_saereg

GPT2 = "gpt2-small-res-jb/blocks.8.hook_resid_pre"


def test_resolve_returns_frozen_full_record() -> None:
    info = saereg.resolve(GPT2)
    assert info.release == "gpt2-small-res-jb"
    assert info.id == "blocks.8.hook_resid_pre"
    assert info.model == "gpt2-small"
    assert info.repo_id == "jbloom/GPT2-Small-SAEs-Reformatted"
    assert info.format == "saelens"
    assert info.path == "blocks.8.hook_resid_pre"
    assert (info.hook_name, info.hook_layer) == ("blocks.8.hook_resid_pre", 8)
    assert (info.d_sae, info.context_size, info.normalize_activations) == (24576, 128, "none")
    assert info.neuronpedia == "gpt2-small/8-res-jb"
    assert info.neuronpedia_url == "https://www.neuronpedia.org/gpt2-small/8-res-jb"
    assert info.l0 == 60.0 and info.variance_explained == 0.9
    assert info.links["dashboards"] == "https://www.neuronpedia.org/gpt2sm-res-jb"
    assert dict(info.model_from_pretrained_kwargs or {}) == {"center_writing_weights": True}
    with pytest.raises(AttributeError):
        info.d_sae = 1  # type: ignore[misc]


def test_cli_resolve_prints_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", GPT2]) == 0
    out = capsys.readouterr().out
    for line in (
        "release             gpt2-small-res-jb",
        "model               gpt2-small",
        "repo_id             jbloom/GPT2-Small-SAEs-Reformatted",
        "revision            not pinned (default branch)",
        "hook_name           blocks.8.hook_resid_pre",
        "hook_layer          8",
        "d_sae               24576",
        "context_size        128",
        "normalization       none",
        "neuronpedia_url     https://www.neuronpedia.org/gpt2-small/8-res-jb",
        "l0                  60",
        "variance_explained  0.9",
        "d_in                768",
        "hf_hook             transformer.h.8 (input)",
    ):
        assert line in out


def test_cli_resolve_json_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", GPT2, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(saereg.resolve(GPT2).to_dict(), default=str))
    assert data["neuronpedia"] == "gpt2-small/8-res-jb"


def test_neuronpedia_and_hf_references() -> None:
    assert saereg.resolve("gpt2-small/8-res-jb").ref == GPT2
    assert (
        saereg.resolve("hf:jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre").ref == GPT2
    )
    # The -canonical alias points at the same folder; the release named by its path wins.
    ref = saereg.resolve("hf:google/gemma-scope-2b-pt-res/layer_0/width_16k/average_l0_105").ref
    assert ref == "gemma-scope-2b-pt-res/layer_0/width_16k/average_l0_105"


def test_ids_may_contain_slashes() -> None:
    info = saereg.resolve("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")
    assert info.path == "layer_12/width_16k/average_l0_82"
    assert info.hook_name == "blocks.12.hook_resid_post"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "gpt2-small-res-jb/blocks.8.hook_resid_px",
            "Release 'gpt2-small-res-jb' has no SAE 'blocks.8.hook_resid_px'. Did you mean: "
            "blocks.8.hook_resid_pre, blocks.9.hook_resid_pre, blocks.7.hook_resid_pre?",
        ),
        (
            "gpt2-small-res-jbb/blocks.8.hook_resid_pre",
            "Unknown reference 'gpt2-small-res-jbb/blocks.8.hook_resid_pre': no release is called "
            "'gpt2-small-res-jbb' and no SAE has that Neuronpedia id. Did you mean: "
            "gpt2-small-res-jb, gpt2-small-res_sll-ajt, gpt2-small-res_sle-ajt?",
        ),
        (
            "gpt2-smal/8-res-jb",
            "Unknown reference 'gpt2-smal/8-res-jb': no release is called 'gpt2-smal' and no SAE "
            "has that Neuronpedia id. Did you mean: gpt2-small/8-res-jb, gpt2-small/9-res-jb, "
            "gpt2-small/7-res-jb?",
        ),
        (
            "hf:nobody/nothing/x",
            "Repository 'nobody/nothing' is not in the catalogue: load_sae and `saereg fetch` "
            "read it by format detection (`saereg detect hf:nobody/nothing` shows what it "
            "holds); `saereg new --repo nobody/nothing` adds it (see CONTRIBUTING.md).",
        ),
        ("hf:broken", "Malformed reference 'hf:broken': expected hf:ORG/REPO[@REVISION]/PATH"),
        ("hf:a/b/../c", "reference 'hf:a/b/../c' (a path must stay inside a/b): path '../c'"),
        ("gpt2-small-res-jb/", "Malformed reference 'gpt2-small-res-jb/': nothing after '/'"),
    ],
)
def test_unknown_references_exit_2_with_suggestions(ref: str, message: str) -> None:
    with pytest.raises(saereg.UnknownReferenceError) as err:
        saereg.resolve(ref)
    assert str(err.value).startswith(message)
    result = run_saereg("resolve", ref)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"saereg resolve: {message}")


def test_bare_release_name_explains_how_to_name_an_sae() -> None:
    result = run_saereg("resolve", "gpt2-small-res-jb")
    assert result.returncode == 2
    assert (
        "'gpt2-small-res-jb' is a release with 13 SAEs; name one as gpt2-small-res-jb/SAE_ID"
        in (result.stderr)
    )


def test_bad_usage_exits_2() -> None:
    assert run_saereg("resolve").returncode == 2
    assert run_saereg("frobnicate").returncode == 2
    assert run_saereg("list", "--width", "lots").returncode == 2


def test_resolve_path_imports_no_torch_jsonschema_or_plugins() -> None:
    code = (
        f"import sys, saereg.cli as c; c.main(['resolve', '{GPT2}']);"
        "bad = [m for m in ('torch', 'jsonschema', 'pluggy', 'numpy', 'saereg.plugins') "
        "if m in sys.modules]; print('LOADED', bad)"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in out.stdout


def test_list_filters(capsys: pytest.CaptureFixture[str]) -> None:
    rows = saereg.list_saes(
        model="gemma-2-2b", release="gemma-scope-2b-pt-res", layer=12, width=16384
    )
    assert {r["id"] for r in rows} == {
        f"layer_12/width_16k/average_l0_{n}" for n in (22, 41, 82, 176, 445)
    }
    assert all(r["hook_name"] == "blocks.12.hook_resid_post" for r in rows)
    hooks = saereg.list_saes(release="gpt2-small-res-jb", hook="*resid_post")
    assert [r["id"] for r in hooks] == ["blocks.11.hook_resid_post"]
    assert saereg.list_saes(format="llama_scope", layer=15, hook="*hook_attn_out")[0][
        "release"
    ] in {"llama_scope_lxa_8x", "llama_scope_lxa_32x"}
    assert main(["list", "--release", "gpt2-small-res-jb", "--layer", "11", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in data] == ["blocks.11.hook_resid_pre", "blocks.11.hook_resid_post"]
    assert data[0]["model"] == "gpt2-small" and data[0]["format"] == "saelens"
    assert (
        main(
            [
                "list",
                "--model",
                "gemma-2-2b",
                "--width",
                "16k",
                "--layer",
                "3",
                "--release",
                "gemma-scope-2b-pt-att",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["reference", "kind", "hook_name", "layer", "d_sae", "neuronpedia"]
    assert all(line.split()[1] == "SAE" for line in table[1:])
    assert all("blocks.3.attn.hook_z" in line for line in table[1:])


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "llama_scope_lxr_8x", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_saes"] == 32 and data["layers"] == list(range(32))
    assert data["widths"] == [32768]
    assert data["defaults"]["normalize_activations"] == "expected_average_only_in"
    assert main(["info", "gpt2-small-res-jb"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpt2-small-res-jb  (saelens format, 13 SAEs)")
    assert "hooks       blocks.0.hook_resid_pre, blocks.1.hook_resid_pre" in out
    assert run_saereg("info", "no-such-release").returncode == 2


def test_a_mistyped_command_names_the_close_ones() -> None:
    result = run_saereg("resolv", "gpt2-small-res-jb/blocks.8.hook_resid_pre")
    assert result.returncode == 2
    assert "no command 'resolv'. Did you mean: resolve?" in result.stderr
