"""`SAE.from_weights`: your own SAE in one call, checked, and attachable.

The math of the wrapped SAE is compared with the formulas written out here; `attach`
is proved on a tiny Hugging Face GPT-2 built from a config (by `model=`, by an explicit
`hf_hook`, and by the live model's own family) and on TransformerLens-style hook points
without any model name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saereg
from saereg.base.errors import ArgumentError

D, D_SAE = 32, 64


def _tensors(seed: int = 0, d_in: int = D) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, D_SAE, generator=g) / 4,
        "W_dec": torch.randn(D_SAE, d_in, generator=g) / 4,
        "b_enc": torch.randn(D_SAE, generator=g) / 4,
        "b_dec": torch.randn(d_in, generator=g) / 4,
    }


def test_topk_from_weights_matches_its_formula() -> None:
    t = _tensors()
    sae = saereg.SAE.from_weights(
        **t, architecture="topk", k=5, hook_name="blocks.1.hook_resid_pre", model="gpt2-small",
        apply_b_dec_to_input=True,
    )  # fmt: skip
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, sae.cfg.model) == (D, D_SAE, 5, "gpt2-small")
    assert sae.cfg.hf_hook == {"module": "transformer.h.1", "side": "input"}
    assert sae.cfg.source["release"] == "user" and not sae.cfg.transcoder
    x = torch.randn(7, D)
    h = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    top = h.topk(5, dim=-1)
    f = torch.zeros_like(h).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(sae.encode(x).plain(), f)
    torch.testing.assert_close(sae(x), f @ t["W_dec"] + t["b_dec"])


def test_other_architectures_numpy_and_defaults() -> None:
    t = {n: v.numpy() for n, v in _tensors().items()}
    jump = saereg.SAE.from_weights(
        W_enc=t["W_enc"], W_dec=t["W_dec"], architecture="jumprelu", threshold=0.3,
        normalization="layer_norm",
    )  # fmt: skip
    assert jump.threshold.shape == (D_SAE,) and jump.cfg.normalization["kind"] == "layer_norm"
    assert torch.equal(jump.b_enc, torch.zeros(D_SAE)) and jump.dtype == torch.float32
    x = torch.randn(3, D)
    xn = (x - x.mean(-1, keepdim=True)) / (
        (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True) + 1e-5
    )
    h = xn @ torch.from_numpy(t["W_enc"])
    torch.testing.assert_close(jump.encode(x).plain(), h * (h > 0.3))
    half = saereg.SAE.from_weights(**_tensors(), dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and half(x).dtype == torch.bfloat16
    gated = saereg.SAE.from_weights(
        W_enc=t["W_enc"], W_dec=t["W_dec"], architecture="gated", b_gate=np.zeros(D_SAE),
        b_mag=np.zeros(D_SAE), r_mag=np.zeros(D_SAE), normalization=2.0,
    )  # fmt: skip
    assert gated.cfg.normalization == {"kind": "scale", "factor": 2.0}
    tc = saereg.SAE.from_weights(W_enc=t["W_enc"], W_dec=np.zeros((D_SAE, 8), np.float32))
    assert tc.cfg.transcoder and tc(x).shape == (3, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"W_dec": torch.zeros(D, D_SAE)}, r"W_dec has shape \(32, 64\) .* pass W_dec\.T"),
        ({"b_enc": torch.zeros(D)}, r"b_enc has shape \(32,\) but must be \[64\]"),
        ({"W_enc": torch.zeros(D)}, r"W_enc must be a matrix \[d_in, d_sae\]"),
        ({"architecture": "topk"}, r"architecture='topk' needs k"),
        ({"architecture": "relu", "k": 3}, r"k is for architecture='topk'"),
        ({"architecture": "jumprelu"}, r"architecture='jumprelu' needs threshold \[d_sae=64\]"),
        ({"architecture": "topkk", "k": 3}, r"unknown architecture 'topkk'.*Did you mean 'topk'"),
        ({"normalization": "layernorm"}, r"unknown normalization.*Did you mean 'layer_norm'"),
        ({"threshold": torch.zeros(D_SAE)}, r"threshold is not used by a relu SAE"),
        ({"hf_hook": "transformer.h.1"}, r"must name a module and a side"),
        ({"W_enc": "weights"}, r"W_enc must be a tensor"),
    ],
)
def test_clear_errors(change: dict, message: str) -> None:
    args = {**_tensors(), **change}
    with pytest.raises(ArgumentError, match=message):
        saereg.SAE.from_weights(**args)


transformers = pytest.importorskip("transformers")


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=D, n_layer=2, n_head=4, vocab_size=50, n_positions=16)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("how", ["model", "hf_hook", "family"])
def test_attach_to_a_hugging_face_model(how: str) -> None:
    model = _gpt2()
    where = {
        "model": {"model": "gpt2-small"},
        "hf_hook": {"hf_hook": "transformer.h.1.input"},
        "family": {},  # found from model.config.model_type
    }[how]
    sae = saereg.SAE.from_weights(
        **_tensors(), architecture="topk", k=4, hook_name="blocks.1.hook_resid_pre", **where
    )
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[1]
        with saereg.attach(model, sae, mode="record") as seen:
            model(ids)
        torch.testing.assert_close(seen.latents.plain(), sae.encode(hidden).plain())
        with saereg.attach(model, sae, mode="record", sparse=True) as sparse_seen:
            model(ids)
        torch.testing.assert_close(sparse_seen.latents.to_dense(), seen.latents.plain())
        clean = model(ids).logits
        with saereg.attach(model, sae, mode="error"):
            assert torch.equal(model(ids).logits, clean)


def test_attach_without_any_hf_site_says_what_to_give() -> None:
    class Unknown(torch.nn.Module):
        config = type("C", (), {"model_type": "mamba"})()

    sae = saereg.SAE.from_weights(**_tensors(), hook_name="blocks.1.hook_resid_pre")
    with (
        pytest.raises(saereg.AttachError, match="give the SAE hf_hook="),
        saereg.attach(Unknown(), sae),
    ):
        pass


def test_attach_on_transformer_lens_hook_points_without_a_model() -> None:
    from tests.test_attach import TinyHooked

    model = TinyHooked().eval()
    ids = torch.randint(0, 50, (2, 6))
    sae = saereg.SAE.from_weights(
        **_tensors(), architecture="topk", k=4, hook_name="blocks.0.hook_resid_pre",
        normalization="layer_norm",
    )  # fmt: skip
    with torch.no_grad():
        resid = model.embed(ids)
        with saereg.attach(model, sae, mode="record") as seen:
            model(ids)
        torch.testing.assert_close(seen.latents.plain(), sae.encode(resid).plain())
        replaced = sae(resid)
        with saereg.attach(model, sae, mode="replace"):
            out = model(ids)
        model.hook_dict["blocks.0.hook_resid_pre"].register_forward_hook(lambda m, i, o: replaced)
        torch.testing.assert_close(out, model(ids))


def test_a_hook_z_sae_reads_the_heads_layout_unless_told_not_to() -> None:
    """TransformerLens' hook_z is [..., n_heads, d_head]; an SAE built for a hook_z hook
    reads it flattened (and writes it back in that shape) without being told, as the
    saelens format sets it; reshape="none" keeps the plain [..., d_in] contract."""
    g = torch.Generator().manual_seed(3)
    weights = {"W_enc": torch.randn(16, 24, generator=g), "W_dec": torch.randn(24, 16, generator=g)}
    sae = saereg.SAE.from_weights(**weights, architecture="relu", hook_name="blocks.0.attn.hook_z")
    assert sae.cfg.reshape == "hook_z"
    z = torch.randn(2, 5, 4, 4, generator=g)
    torch.testing.assert_close(sae.encode(z), sae.encode(z.flatten(-2)))
    assert sae(z).shape == (2, 5, 4, 4)
    plain = saereg.SAE.from_weights(
        **weights, architecture="relu", hook_name="blocks.0.attn.hook_z", reshape="none"
    )
    assert plain.cfg.reshape == "none"
    with pytest.raises(ValueError, match="last dimension"):
        plain.encode(z)
    other = saereg.SAE.from_weights(
        **weights, architecture="relu", hook_name="blocks.0.hook_resid_pre"
    )
    assert other.cfg.reshape == "none"
