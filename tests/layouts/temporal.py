"""Temporal SAEs (canrager/temporalSAEs): {path}/conf.yaml + latest_ckpt.safetensors.

The reference is the publisher's TemporalSAE.forward written out with an explicit
causal softmax (not scaled_dot_product_attention), on inputs scaled by scaling_factor
(and outputs unscaled), as the publisher's pipeline feeds it.
"""

from __future__ import annotations

import math

import torch
import yaml

from ._case import LayoutCase, Reference
from ._util import rand, st_save

D_IN, EXP, N_HEADS, BOTTLENECK = 8, 4, 2, 4
WIDTH = D_IN * EXP
D_ATTN = WIDTH // BOTTLENECK
SCALE = 0.5


def _weights(tied: bool, n_layers: int) -> dict[str, torch.Tensor]:
    t = {"D": rand(WIDTH, D_IN, scale=0.5), "b": rand(1, D_IN, scale=0.1)}
    if not tied:
        t["E"] = rand(D_IN, WIDTH, scale=0.5)
    for i in range(n_layers):
        for proj, out in (("k_ctx", D_ATTN), ("q_target", D_ATTN), ("v_ctx", WIDTH)):
            t[f"attn_layers.{i}.{proj}.weight"] = rand(out, WIDTH)
            t[f"attn_layers.{i}.{proj}.bias"] = rand(out, scale=0.1)
        t[f"attn_layers.{i}.c_proj.weight"] = rand(WIDTH, WIDTH)
        t[f"attn_layers.{i}.c_proj.bias"] = rand(WIDTH, scale=0.1)
    return t


def _attention(t: dict, i: int, ctx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    def lin(name: str, v: torch.Tensor) -> torch.Tensor:
        return v @ t[f"attn_layers.{i}.{name}.weight"].T + t[f"attn_layers.{i}.{name}.bias"]

    B, T, _ = ctx.shape
    k = lin("k_ctx", ctx).view(B, T, N_HEADS, -1).transpose(1, 2)
    q = lin("q_target", target).view(B, T, N_HEADS, -1).transpose(1, 2)
    v = lin("v_ctx", ctx).view(B, T, N_HEADS, -1).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(B, T, WIDTH)
    return lin("c_proj", out)


def _reference(raw: dict, tied: bool, n_layers: int, k: int | None):
    t = {n: v.double() for n, v in raw.items()}

    def reference(x: torch.Tensor) -> Reference:
        lam = 1 / (4 * D_IN)
        E = t["D"].T if tied else t["E"]
        xi = SCALE * x.double() - t["b"]
        z_pred = torch.zeros(*xi.shape[:-1], WIDTH, dtype=torch.float64)
        for i in range(n_layers):
            z_in = torch.relu((xi * lam) @ E)
            z_ctx = torch.cat((torch.zeros_like(z_in[:, :1]), z_in[:, :-1]), dim=1)
            zp = torch.relu(_attention(t, i, z_ctx, z_in))
            dz = zp @ t["D"]
            scale = (dz * xi).sum(-1, keepdim=True) / (dz.norm(dim=-1, keepdim=True) + 1e-6) ** 2
            z_pred = z_pred + zp * scale
            xi = xi - scale * dz
        z_novel = torch.relu((xi * lam) @ E)
        if k is not None:
            idx = z_novel.topk(k, dim=-1).indices
            z_novel = z_novel * torch.zeros_like(z_novel).scatter(-1, idx, 1.0)
        novel = (z_novel @ t["D"] + t["b"]) / SCALE
        full = ((z_novel + z_pred) @ t["D"] + t["b"]) / SCALE
        return Reference(encode=z_novel, decode=novel, forward=full)

    return reference


def _case(name: str, *, tied: bool, n_layers: int, k: int | None) -> LayoutCase:
    folder = "gemma-2-2B/layer_12/temporal"
    raw = _weights(tied, n_layers)
    conf = {
        "llm": {"dimin": D_IN, "name": "google/gemma-2-2b", "layer": 12},
        "sae": {
            "exp_factor": EXP,
            "n_heads": N_HEADS,
            "n_attn_layers": n_layers,
            "bottleneck_factor": BOTTLENECK,
            "sae_diff_type": "topk" if k else "relu",
            "kval_topk": k,
            "tied_weights": tied,
            "scaling_factor": SCALE,
        },
        "data": {"dtype": "float32"},
    }

    def check(sae) -> None:
        assert sae.cfg.architecture == "temporal" and sae.cfg.k == k
        assert sae.cfg.temporal == {"n_heads": N_HEADS, "n_attn_layers": n_layers, "d_attn": D_ATTN}
        x = torch.randn(2, 5, D_IN, generator=torch.Generator().manual_seed(3))
        novel, predicted = sae.encode_with_predictions(x)
        torch.testing.assert_close(sae(x), sae.decode(novel + predicted, norm=sae.input_norm(x)))

    return LayoutCase(
        format="temporal",
        name=name,
        files={
            f"{folder}/conf.yaml": yaml.safe_dump(conf).encode(),
            f"{folder}/latest_ckpt.safetensors": st_save(raw),
        },
        sae={"id": "blocks.12.hook_resid_post", "path": folder, "hook_layer": 12},
        input_shape=(3, 6, D_IN),
        reference=_reference(raw, tied, n_layers, k),
        repo_id="canrager/temporalSAEs",
        check=check,
    )


CASES = [
    _case("tied-topk", tied=True, n_layers=1, k=6),
    _case("untied-relu-two-attention-layers", tied=False, n_layers=2, k=None),
]
