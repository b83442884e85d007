"""EleutherAI sparsify: SAEs and transcoders against sparsify's own math; bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save

import saereg
from saereg.base.errors import SaeregError
from saereg.catalogue.records import Release, SAEEntry
from saereg.formats import get_registry
from saereg.loading import load_config

from .layouts import sparsify as sp
from .layouts._serve import compare, serve

CASES = {case.name: case for case in sp.CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_sparsify(hubenv, name: str) -> None:
    case = CASES[name]
    sae = saereg.load_sae(serve(hubenv, case), dtype=None)
    compare(sae, case)
    x = torch.randn(*case.input_shape, generator=torch.Generator().manual_seed(6))
    assert int((sae.encode(x) != 0).sum(-1).max()) <= sp.K


def test_w_dec_is_not_transposed(hubenv) -> None:
    """sparsify stores W_dec [num_latents, d_in], the canonical orientation."""
    case = CASES["sae"]
    sae = saereg.load_sae(serve(hubenv, case), dtype=None)
    stored = sp.state(21)["W_dec"]
    assert torch.equal(sae.W_dec, stored)
    assert torch.equal(sae.W_enc, sp.state(21)["encoder.weight"].T)


def test_transcoder_hooks_and_config_from_headers(hubenv) -> None:
    case = CASES["skip-transcoder"]
    ref = serve(hubenv, case)
    cfg = load_config(ref)
    assert list(hubenv.hf_cache.rglob("sae.safetensors")) == []  # a header read, no download
    assert (cfg.transcoder, cfg.hook_name, cfg.hook_name_out, cfg.hf_hook_name) == (
        True,
        "blocks.1.ln2.hook_normalized",
        "blocks.1.hook_mlp_out",
        "layers.1.mlp",
    )
    assert (cfg.d_in, cfg.d_sae, cfg.k) == (sp.D_IN, sp.M, sp.K)
    assert (cfg.context_size, cfg.dataset) == (256, "test/data")  # from the run's config.json


def test_transcoder_output_hook_is_derived(hubenv) -> None:
    """A transcoder entry without hook_name_out gets the MLP output from its hookpoint."""
    sae = saereg.load_sae(serve(hubenv, CASES["transcoder"]), dtype=None)
    assert sae.cfg.hook_name_out == "blocks.4.hook_mlp_out"


@pytest.mark.parametrize(
    ("hookpoint", "transcoder", "expected"),
    [
        ("layers.10", False, {"hook_name": "blocks.10.hook_resid_post", "hook_layer": 10}),
        ("layers.10.mlp", False, {"hook_name": "blocks.10.hook_mlp_out", "hook_layer": 10}),
        ("layers.0.attention", False, {"hook_name": "blocks.0.hook_attn_out", "hook_layer": 0}),
        ("layers.5.self_attn", False, {"hook_name": "blocks.5.hook_attn_out"}),
        ("embed_tokens", False, {"hook_name": "hook_embed", "hook_layer": 0}),
        ("h.3", False, {"hook_name": "blocks.3.hook_resid_post"}),
        (
            "model.layers.18.mlp",
            True,
            {
                "hook_name": "blocks.18.ln2.hook_normalized",
                "hook_name_out": "blocks.18.hook_mlp_out",
            },
        ),
    ],
)
def test_describe_translates_hookpoints(hookpoint: str, transcoder: bool, expected: dict) -> None:
    repo = "EleutherAI/skip-transcoder-x" if transcoder else "EleutherAI/sae-pythia-70m-32k"
    rel = Release(
        name="r", format="sparsify", publisher="p", model="m", revision=None, saes=(), repo_id=repo
    )
    out = get_registry().format("sparsify").describe(rel, SAEEntry(id=hookpoint, path=hookpoint))
    assert out["hf_hook_name"] == hookpoint
    for key, value in expected.items():
        assert out[key] == value
    if not transcoder:
        assert out["d_sae"] == 32768


def test_describe_refuses_unknown_hookpoints() -> None:
    rel = Release(name="r", format="sparsify", publisher="p", model="m", revision=None, saes=())
    with pytest.raises(ValueError, match="is not a decoder layer"):
        get_registry().format("sparsify").describe(rel, SAEEntry(id="x", path="lm_head"))


# --------------------------------------------------------------------------- bad files


def _bad(hubenv, name: str, *, tensors=None, cfg: dict | None = None) -> str:
    case = CASES["sae"]
    files = dict(case.files)
    if tensors is not None:
        files["layers.3/sae.safetensors"] = save(tensors)
    if cfg is not None:
        files["layers.3/cfg.json"] = json.dumps(cfg).encode()
    bad = type(case)(**{**case.__dict__, "files": files, "name": name})
    with pytest.raises(SaeregError) as info:
        saereg.load_sae(serve(hubenv, bad), dtype=None)
    return str(info.value)


def test_wrong_keys(hubenv) -> None:
    s = sp.state(21)
    s["decoder.weight"] = s.pop("W_dec")
    msg = _bad(hubenv, "wrong-keys", tensors=s)
    assert "layers.3/sae.safetensors" in msg
    assert f"missing W_dec (expected shape [{sp.M}, {sp.D_IN}])" in msg
    assert "unexpected tensor 'decoder.weight'" in msg


def test_wrong_shapes(hubenv) -> None:
    s = sp.state(21)
    s["W_dec"] = s["W_dec"].T.contiguous()  # as SAELens' loader would have it
    msg = _bad(hubenv, "wrong-shapes", tensors=s)
    assert "layers.3/sae.safetensors" in msg
    assert f"W_dec has shape [{sp.D_IN}, {sp.M}], expected [{sp.M}, {sp.D_IN}]" in msg


def test_unsupported_activation(hubenv) -> None:
    cfg = json.loads(sp.cfg_json(activation="groupmax"))
    msg = _bad(hubenv, "groupmax", cfg=cfg)
    assert "layers.3/cfg.json" in msg and "'groupmax'" in msg


def test_missing_d_in(hubenv) -> None:
    cfg = json.loads(sp.cfg_json())
    del cfg["d_in"]
    msg = _bad(hubenv, "no-d-in", cfg=cfg)
    assert "layers.3/cfg.json" in msg and "d_in" in msg


def test_repository_without_run_config(hubenv) -> None:
    """config.json beside the hookpoints is optional (hand-uploaded repositories lack it)."""
    case = CASES["sae"]
    files = {p: b for p, b in case.files.items() if p != "config.json"}
    bare = type(case)(**{**case.__dict__, "files": files, "name": "no-run-config"})
    sae = saereg.load_sae(serve(hubenv, bare), dtype=None)
    assert sae.cfg.context_size is None
    compare(sae, case)


def test_discover_lists_hookpoint_folders() -> None:
    listing = [
        "config.json",
        "layers.0/cfg.json",
        "layers.0/sae.safetensors",
        "layers.1.mlp/cfg.json",
        "layers.1.mlp/sae.safetensors",
        "layers.2/cfg.json",  # no weights: not an SAE
    ]
    found = get_registry().format("sparsify").discover("EleutherAI/x", listing)
    assert found == [
        {"id": "layers.0", "path": "layers.0"},
        {"id": "layers.1.mlp", "path": "layers.1.mlp"},
    ]
