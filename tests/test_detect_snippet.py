"""`saereg detect`'s release-file snippet, and the `saereg new` file it shares code with.

Fixtures are tiny SAEs in each publisher's exact layout (tests/layouts, tests/publishers):
the snippet must name the model the publisher's own config names (canonicalised through
the models table) and every field the config states, and, once the TODOs a person fills
(publisher, repo_id) are filled, pass the real `saereg validate`. A small models table in
SAEREG_RELEASES gives the fixtures' models their tiny widths, so the validator's width
check against the model's shape runs too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from saereg.cli.app import main

from .conftest import write
from .layouts import _circuit_tracer as ct
from .layouts import dictionary_learning as dl
from .layouts import mwhanna_transcoder as mwhanna
from .layouts import sparsify
from .publishers import rand, saelens_folder, st_save

#: Two tiny models (8 and 12 wide, the fixtures' widths), named by alias and hub id in
#: the fixtures' configs, so the snippet's canonical name is checked.
MODELS = """schema: 1
models:
  - {name: tiny-lm, hub_id: test-org/Tiny-LM, aliases: [test-model], family: llama,
     d_model: 8, n_layers: 4, n_heads: 2, d_head: 4, d_mlp: 16,
     source: 'https://huggingface.co/test-org/Tiny-LM/blob/main/config.json'}
  - {name: tiny-lm-12, hub_id: test-org/Tiny-LM-12, family: llama,
     d_model: 12, n_layers: 4, n_heads: 3, d_head: 4, d_mlp: 24,
     source: 'https://huggingface.co/test-org/Tiny-LM-12/blob/main/config.json'}
"""
MARK = "then `saereg validate`):\n\n"


@pytest.fixture
def env(hubenv: Any) -> Any:
    write(hubenv.releases / "models" / "models.yaml", MODELS)
    return hubenv


def _files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _detect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """(what detect printed before the snippet, the snippet's YAML text)."""
    capsys.readouterr()
    assert main(["detect", *args]) == 0
    head, _, text = capsys.readouterr().out.partition(MARK)
    assert text, head
    return head, text


def _validate(text: str, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Fill the TODOs a person fills (publisher, repo_id), write the file where its name
    says, and run the real validator on it."""
    assert text.count("TODO") == 2, text  # publisher and repo_id, nothing else
    name = yaml.safe_load(text)["name"]
    filled = text.replace("publisher: TODO", "publisher: Test Publisher").replace(
        "repo_id: TODO (upload the folder to the hub first)", f"repo_id: test-org/{name}"
    )
    path = out / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(filled, encoding="utf-8")
    capsys.readouterr()
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def _saelens_v6(tmp_path: Path, model: str, **kw: Any) -> Path:
    files, _ = saelens_folder("sae", v6=True, **kw)
    cfg = json.loads(files["sae/cfg.json"])
    cfg["metadata"]["model_name"] = model
    files["sae/cfg.json"] = json.dumps(cfg).encode()
    return _files(tmp_path / "saelens-v6", files) / "sae"


def _dictionary_learning(tmp_path: Path, lm_name: str) -> Path:
    files = dict(dl.topk().files)
    cfg = json.loads(files[f"{dl.PATH}/config.json"])
    cfg["trainer"]["lm_name"] = lm_name
    files[f"{dl.PATH}/config.json"] = json.dumps(cfg).encode()
    return _files(tmp_path / "dl", files) / dl.PATH


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    ("stated", "model"),
    [
        ("gpt2-small", "gpt2-small"),  # the canonical name itself
        ("openai-community/gpt2", "gpt2-small"),  # a hub id
        ("test-model", "tiny-lm"),  # an alias from another release directory's table
    ],
)
def test_the_model_a_saelens_config_names_is_canonical(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], stated: str, model: str
) -> None:
    files, _ = saelens_folder("blocks.8.hook_resid_pre", extra_cfg={"model_name": stated})
    folder = _files(tmp_path / "pre6", files) / "blocks.8.hook_resid_pre"
    head, text = _detect(capsys, str(folder))
    assert f"model: {stated} (from cfg.json model_name)" in head
    assert yaml.safe_load(text)["model"] == model
    assert f"\nmodel: {model}\n" in text  # no comment: the table knows it


def test_other_publishers_configs_name_the_model(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v6 = _saelens_v6(tmp_path, "test-org/Tiny-LM")
    head, text = _detect(capsys, str(v6))
    assert "cfg.json metadata.model_name" in head and yaml.safe_load(text)["model"] == "tiny-lm"
    # dictionary_learning: trainer.lm_name, a hub id (google/gemma-2-2b is gemma-2-2b)
    folder = _files(tmp_path / "dl-gemma", dl.topk().files) / dl.PATH
    head, text = _detect(capsys, str(folder))
    assert "config.json trainer.lm_name" in head
    assert yaml.safe_load(text)["model"] == "gemma-2-2b"
    # sparsify: the run's config.json above the hookpoint folders
    root = _files(tmp_path / "sparsify", sparsify.CASES[0].files)
    head, text = _detect(capsys, str(root), "--sae", "layers.3")
    assert "(from config.json model)" in head and yaml.safe_load(text)["model"] == "tiny-lm"
    # circuit-tracer: config.yaml model_name (a multi-layer dictionary)
    clt = _files(tmp_path / "clt", ct.clt_files())
    head, text = _detect(capsys, str(clt))
    assert "config.yaml model_name" in head and yaml.safe_load(text)["model"] == "tiny-lm"
    # nothing names it: TODO, and --model says it instead
    files, _ = saelens_folder("plain", v6=True)
    plain = _files(tmp_path / "plain", files) / "plain"
    head, text = _detect(capsys, str(plain))
    assert "model:" not in head and yaml.safe_load(text)["model"] == "TODO"
    _, text = _detect(capsys, str(plain), "--model", "gpt2")
    assert yaml.safe_load(text)["model"] == "gpt2-small"


def test_a_model_the_table_lacks_is_written_as_given_with_a_comment(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _saelens_v6(tmp_path, "acme/Secret-LM-7B")
    _, text = _detect(capsys, str(folder))
    line = next(x for x in text.splitlines() if x.startswith("model:"))
    assert line.startswith("model: acme/Secret-LM-7B  # not in the models table: add it to ")
    assert "releases/models/models.yaml" in line and "saereg validate" in line
    assert yaml.safe_load(text)["model"] == "acme/Secret-LM-7B"
    rc, out = _validate(text, tmp_path / "out", capsys)
    assert rc == 1 and "unknown model 'acme/Secret-LM-7B'" in out  # what the comment says
    capsys.readouterr()
    assert main(["detect", str(folder), "--json"]) == 0
    sae = json.loads(capsys.readouterr().out)["saes"][0]
    assert sae["model"] == {
        "name": "acme/Secret-LM-7B",
        "stated": "acme/Secret-LM-7B",
        "from": "cfg.json metadata.model_name",
        "known": False,
    }
    assert sae["entry"]["d_sae"] == 16


# --------------------------------------------------------------------------- the fields


def _cases(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Detect arguments and the entry fields the snippet must state, per layout."""
    topk = _saelens_v6(tmp_path, "test-model", arch="topk", k=5, normalize="layer_norm")
    sp = _files(tmp_path / "sparsify-tc", sparsify.CASES[2].files)  # skip transcoder
    run = json.loads((sp / "config.json").read_text())
    (sp / "config.json").write_text(json.dumps({**run, "model": "test-org/Tiny-LM-12"}))
    relu_tc = _files(tmp_path / "mwhanna-relu", mwhanna.CASES[0].files)
    skip_tc = _files(tmp_path / "mwhanna-skip", mwhanna.CASES[1].files)
    for root in (relu_tc, skip_tc):  # the model of the tiny fixture, by its hub id
        (root / "config.yaml").write_text("model_name: test-org/Tiny-LM\n")
    clt = _files(tmp_path / "clt", ct.clt_files())
    saelens_tc = _files(
        tmp_path / "saelens-tc",
        {
            "cfg.json": json.dumps(
                {  # as SAELens 6's save_model writes a JumpReLU skip transcoder
                    "architecture": "jumprelu_skip_transcoder",
                    "d_in": 8,
                    "d_sae": 24,
                    "d_out": 8,
                    "dtype": "float32",
                    "device": "cpu",
                    "apply_b_dec_to_input": False,
                    "normalize_activations": "none",
                    "reshape_activations": "none",
                    "metadata": {
                        "sae_lens_version": "6.54.12",
                        "model_name": "test-model",
                        "hook_name": "blocks.2.ln2.hook_normalized",
                        "hook_name_out": "blocks.2.hook_mlp_out",
                        "context_size": 1024,
                    },
                }
            ).encode(),
            "sae_weights.safetensors": st_save(
                {
                    "W_enc": rand(8, 24),
                    "b_enc": rand(24),
                    "W_dec": rand(24, 8),
                    "b_dec": rand(8),
                    "threshold": rand(24).abs(),
                    "W_skip": rand(8, 8),
                }
            ),
        },
    )
    return {
        "saelens-transcoder": (
            [str(saelens_tc)],
            {
                "hook_name": "blocks.2.ln2.hook_normalized",
                "hook_layer": 2,
                "hook_name_out": "blocks.2.hook_mlp_out",
                "architecture": "jumprelu_skip_transcoder",
                "d_in": 8,
                "d_out": 8,
                "d_sae": 24,
                "context_size": 1024,
            },
        ),
        "saelens-topk": (
            [str(topk)],
            {
                "hook_name": "blocks.3.hook_resid_pre",
                "hook_layer": 3,
                "architecture": "topk",
                "d_in": 8,
                "d_sae": 16,
                "k": 5,
                "context_size": 128,
                "normalize_activations": "layer_norm",
            },
        ),
        "sparsify-skip-transcoder": (
            [str(sp), "--sae", "layers.1.mlp"],
            {
                "hook_name": "blocks.1.ln2.hook_normalized",
                "hook_layer": 1,
                "hook_name_out": "blocks.1.hook_mlp_out",
                "hf_hook_name": "layers.1.mlp",
                "kind": "transcoder",  # a TopK transcoder: no architecture name for it
                "d_in": 12,
                "d_out": 12,
                "d_sae": 40,
                "k": 5,
                "context_size": 256,
            },
        ),
        "transcoder": (
            [str(relu_tc / "layer_3.safetensors")],
            {
                "hook_name": "blocks.3.mlp.hook_in",
                "hook_name_out": "blocks.3.hook_mlp_out",
                "architecture": "transcoder",
                "d_in": 8,
                "d_out": 8,
                "d_sae": 24,
            },
        ),
        "skip-transcoder": (
            [str(skip_tc / "layer_3.safetensors")],
            {"architecture": "jumprelu_skip_transcoder", "hook_layer": 3},
        ),
        "dictionary-learning": (
            [str(_dictionary_learning(tmp_path, "test-org/tiny-lm-12"))],
            {
                "hook_name": "blocks.3.hook_resid_post",  # config.json submodule_name
                "hook_layer": 3,
                "architecture": "topk",
                "d_in": 12,
                "d_sae": 40,
                "k": 6,
                "context_size": 128,
                "normalize_activations": "none",
            },
        ),
        "cross-layer-transcoder": (
            [str(clt)],
            {
                "kind": "clt",
                "n_layers": 3,
                "hook_name": "blocks.0.hook_resid_mid",
                "hook_layer": 0,
                "hook_name_out": "blocks.0.hook_mlp_out",
                "architecture": "jumprelu",
                "d_in": 8,
                "d_out": 8,
                "d_sae": 12,
                "normalize_activations": "none",
            },
        ),
    }


CASE_NAMES = [
    "saelens-topk",
    "saelens-transcoder",
    "sparsify-skip-transcoder",
    "transcoder",
    "skip-transcoder",
    "dictionary-learning",
    "cross-layer-transcoder",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_snippet_states_the_config_and_passes_validate(
    env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    args, want = _cases(tmp_path / "in")[name]
    _, text = _detect(capsys, *args)
    doc = yaml.safe_load(text)
    (entry,) = doc["saes"]
    assert {k: entry.get(k) for k in want} == want
    if want.get("kind") == "transcoder":
        assert "architecture" not in entry
    rc, out = _validate(text, tmp_path / "out", capsys)
    assert rc == 0 and "OK: 1 release files, 0 errors" in out, out


def test_a_hub_repository_snippet_and_saereg_new_fill_the_model(
    env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files: dict[str, bytes] = {}
    for hook in ("blocks.0.hook_resid_pre", "blocks.5.hook_resid_pre"):
        files.update(saelens_folder(hook, hook=hook, extra_cfg={"model_name": "gpt2"})[0])
    commit = env.hub.add_commit("someone/gpt2-saes", files)
    head, text = _detect(capsys, "hf:someone/gpt2-saes/blocks.5.hook_resid_pre")
    assert "model: gpt2 (from blocks.5.hook_resid_pre/cfg.json model_name)" in head
    doc = yaml.safe_load(text)
    assert (doc["model"], doc["publisher"], doc["repo_id"]) == (
        "gpt2-small",
        "someone",
        "someone/gpt2-saes",
    )
    assert doc["revision"] == commit and "TODO" not in text
    out = ["--out", str(env.releases)]
    assert main(["new", "--repo", "someone/gpt2-saes", "--release", "gpt2-saes", *out]) == 0
    written = (env.releases / "gpt2-saes.yaml").read_text()
    new = yaml.safe_load(written)
    assert new["model"] == "gpt2-small"
    assert new["links"]["model"] == "https://huggingface.co/openai-community/gpt2"
    assert "check `model` (blocks.0.hook_resid_pre/cfg.json model_name names it)" in written


def test_a_hub_transcoders_skip_connection_is_read_from_its_header(
    env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = dict(mwhanna.CASES[1].files)  # JumpReLU with W_skip
    files["config.yaml"] = b"model_name: test-org/Tiny-LM\n"
    env.hub.add_commit("someone/transcoders", files)
    _, text = _detect(capsys, "hf:someone/transcoders/layer_3.safetensors")
    (entry,) = yaml.safe_load(text)["saes"]
    assert entry["architecture"] == "jumprelu_skip_transcoder"
    assert (entry["d_in"], entry["d_out"], entry["hook_name_out"]) == (
        8,
        8,
        "blocks.3.hook_mlp_out",
    )
