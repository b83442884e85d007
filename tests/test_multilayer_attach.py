"""`attach(model, clt)`: a multi-layer dictionary as a replacement model, on a tiny
random-weight Hugging Face Gemma 2 (built from a config, offline) and on a
TransformerLens-style model with hook points. Each written output is compared with the
reconstruction computed by hand from the inputs the sites saw in the same pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import saereg
from saereg.catalogue.hooks import hf_hook
from saereg.sae.clt import CrossLayerTranscoder
from saereg.sae.multilayer import DictionaryConfig
from saereg.sae.transcoder_set import TranscoderSet

from .test_attach import VOCAB, _hook_point, _model

D, D_SAE, LAYERS = 32, 24, 2
IN, OUT = "hook_resid_mid", "hook_mlp_out"


def _dictionary(kind: str, family: str | None = "gemma2", skip: bool = False) -> Any:
    torch.manual_seed(3)
    names_in = tuple(f"blocks.{i}.{IN}" for i in range(LAYERS))
    names_out = tuple(f"blocks.{i}.{OUT}" for i in range(LAYERS))

    def hf(names: tuple[str, ...]) -> tuple[Any, ...] | None:
        return tuple(hf_hook(family, n).to_dict() for n in names) if family else None

    cfg = DictionaryConfig(
        kind=kind,
        n_layers=LAYERS,
        layers=tuple(range(LAYERS)),
        architecture="jumprelu",
        d_in=D,
        d_sae=D_SAE,
        d_out=D,
        dtype="float32",
        hook_names=names_in,
        hook_names_out=names_out,
        source={"release": "test", "sae_id": kind, "format": "t", "files": {}},
        hf_hooks=hf(names_in),
        hf_hooks_out=hf(names_out),
    )
    tensors = []
    for i in range(LAYERS):
        w_dec = torch.randn(D_SAE, LAYERS - i, D) if kind == "clt" else torch.randn(D_SAE, D)
        t = {
            "W_enc": torch.randn(D, D_SAE) * 0.3,
            "b_enc": torch.randn(D_SAE) * 0.1,
            "threshold": torch.rand(D_SAE) * 0.2,
            "W_dec": w_dec * 0.1,
            "b_dec": torch.randn(D) * 0.1,
        }
        if skip:
            t["W_skip"] = torch.randn(D, D) * 0.1
        tensors.append(t)
    cls = CrossLayerTranscoder if kind == "clt" else TranscoderSet
    return cls(cfg, tensors)


def _expected(d: Any, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each target layer's output, by hand: Σ_{s≤t} f_s W_dec_s[:, t-s] + b_dec_t (+ skip)."""
    f = [d.encode_layer(x, s) for s, x in enumerate(xs)]
    out = []
    for t in range(LAYERS):
        y = d.block(t).b_dec.clone()
        for s in range(t + 1):
            if d.kind == "clt":
                y = y + f[s] @ d.block(s).W_dec[:, t - s]
            elif s == t:
                y = y + f[s] @ d.block(s).W_dec
        if d.block(t).W_skip is not None:
            y = y + xs[t] @ d.block(t).W_skip.T
        out.append(y)
    return out


@pytest.mark.parametrize(("kind", "skip"), [("clt", False), ("transcoder_set", True)])
def test_hf_replacement_model(kind: str, skip: bool) -> None:
    model = _model("gemma2")
    d = _dictionary(kind, skip=skip)
    ids = torch.randint(0, VOCAB, (2, 5))
    layers = model.model.layers
    with torch.no_grad():
        clean = model(ids).logits
        with saereg.attach(model, d, mode="error") as seen:
            kept = model(ids).logits
        assert torch.equal(kept, clean)  # bit-identical
        assert seen.error is not None and seen.error.shape == (LAYERS, 2, 5, D)
        with saereg.attach(model, d, mode="record") as rec:
            assert torch.equal(model(ids).logits, clean)
        assert rec.latents is not None and rec.latents.shape == (LAYERS, 2, 5, D_SAE)
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        with saereg.attach(model, d, mode="replace"):
            probes = [
                layer.pre_feedforward_layernorm.register_forward_pre_hook(
                    lambda _m, args: xs.append(args[0])
                )
                for layer in layers
            ] + [
                layer.post_feedforward_layernorm.register_forward_hook(
                    lambda _m, _a, out: ys.append(out)
                )
                for layer in layers
            ]
            try:
                replaced = model(ids).logits
            finally:
                for p in probes:
                    p.remove()
        assert not torch.allclose(replaced, clean)
        # Layer 1 read the stream that layer 0's replaced MLP output wrote.
        for y, want in zip(ys, _expected(d, xs), strict=True):
            torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rec.latents, d.encode(torch.stack(_clean_inputs(model, ids))))
    assert torch.equal(model(ids).logits, clean)  # hooks are gone


def _clean_inputs(model: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    xs: list[torch.Tensor] = []
    probes = [
        layer.pre_feedforward_layernorm.register_forward_pre_hook(
            lambda _m, args: xs.append(args[0])
        )
        for layer in model.model.layers
    ]
    try:
        model(ids)
    finally:
        for p in probes:
            p.remove()
    return xs


class TinyHookedMLP(torch.nn.Module):
    """A TransformerLens stand-in with per-layer hook_resid_mid and hook_mlp_out points."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.mlps = torch.nn.ModuleList(torch.nn.Linear(D, D) for _ in range(LAYERS))
        self.unembed = torch.nn.Linear(D, VOCAB)
        names = [f"blocks.{i}.{h}" for i in range(LAYERS) for h in (IN, OUT)]
        self.points = torch.nn.ModuleDict({n.replace(".", "_"): _hook_point() for n in names})
        self.hook_dict = {n: self.points[n.replace(".", "_")] for n in names}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        resid = self.embed(ids)
        for i, mlp in enumerate(self.mlps):
            mid = self.hook_dict[f"blocks.{i}.{IN}"](resid)
            resid = mid + self.hook_dict[f"blocks.{i}.{OUT}"](torch.tanh(mlp(mid)))
        return self.unembed(resid)


def test_transformer_lens_replacement_model() -> None:
    model = TinyHookedMLP().eval()
    d = _dictionary("clt", family=None)
    ids = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        clean = model(ids)
        with saereg.attach(model, d, mode="error"):
            assert torch.equal(model(ids), clean)
        with saereg.attach(model, d, mode="replace"):
            replaced = model(ids)
        # The replacement model by hand: each MLP output is the CLT's reconstruction.
        resid = model.embed(ids)
        xs: list[torch.Tensor] = []
        for t in range(LAYERS):
            xs.append(resid)
            resid = resid + _expected(d, xs + [resid] * (LAYERS - len(xs)))[t]
        torch.testing.assert_close(replaced, model.unembed(resid), atol=1e-5, rtol=1e-5)
    missing = _dictionary("clt", family=None)
    object.__setattr__(
        missing.cfg, "hook_names", ("blocks.0.hook_resid_mdi", *missing.cfg.hook_names[1:])
    )
    with (
        pytest.raises(saereg.AttachError, match=r"Did you mean: blocks\.0\.hook_resid_mid"),
        saereg.attach(model, missing),
    ):
        pass


def _sites(model: Any, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer 0's MLP output, layer 1's MLP input site and output in one forward pass."""
    layers, seen = model.model.layers, {}
    hooks = [
        layers[0].post_feedforward_layernorm.register_forward_hook(
            lambda _m, _a, out: seen.setdefault("out0", out)
        ),
        layers[1].pre_feedforward_layernorm.register_forward_pre_hook(
            lambda _m, args: seen.setdefault("x1", args[0])
        ),
        layers[1].post_feedforward_layernorm.register_forward_hook(
            lambda _m, _a, out: seen.setdefault("out1", out)
        ),
    ]
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_a_loaded_subset_replaces_only_its_layers() -> None:
    """With layers=[1] only layer 1's MLP output is written, from layer 1's latents alone
    (layer 0's contribution to it is not loaded)."""
    model = _model("gemma2")
    full = _dictionary("clt")
    part = CrossLayerTranscoder(
        full.cfg.replace(layers=(1,)), [dict(full.block(1).named_parameters())]
    )
    ids = torch.randint(0, VOCAB, (1, 4))
    with torch.no_grad():
        clean = _sites(model, ids)
        with saereg.attach(model, part, mode="replace") as got:
            seen = _sites(model, ids)
        assert got.latents is not None and got.latents.shape == (1, 1, 4, D_SAE)
        assert torch.equal(seen["out0"], clean["out0"])  # layer 0 is not replaced
        torch.testing.assert_close(seen["x1"], clean["x1"])
        f1 = full.encode_layer(seen["x1"], 1)
        want = f1 @ full.block(1).W_dec[:, 0] + full.block(1).b_dec
        torch.testing.assert_close(seen["out1"], want, atol=1e-5, rtol=1e-5)
