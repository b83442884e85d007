"""Kissane & Krzyzanowski attention SAEs: a .pt state dict in SAELens naming and a
sibling _cfg.json; the SAE reads hook_z with the heads concatenated."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._util import json_bytes, pt_bytes, rand

PATH = (
    "gpt2-small_L2_Hcat_z_lr1.20e-03_l11.00e+00_ds24_bs4096_dc1.00e-06_"
    "rsanthropic_rie25000_nr4_v4.pt"
)
CFG = PATH.removesuffix(".pt") + "_cfg.json"
N_HEADS, D_HEAD, D_SAE = 3, 4, 24
t = {
    "W_enc": rand(N_HEADS * D_HEAD, D_SAE),
    "W_dec": rand(D_SAE, N_HEADS * D_HEAD),
    "b_enc": rand(D_SAE, scale=0.1),
    "b_dec": rand(N_HEADS * D_HEAD, scale=0.1),
}
cfg = {
    "act_size": N_HEADS * D_HEAD,
    "dict_size": D_SAE,
    "act_name": "blocks.2.attn.hook_z",
    "layer": 2,
    "site": "z",
    "model_name": "gpt2-small",
}


def reference(z: torch.Tensor) -> Reference:
    """Their AutoEncoder: f = ReLU((z - b_dec) @ W_enc + b_enc); ẑ = f @ W_dec + b_dec."""
    d = {k: v.double() for k, v in t.items()}
    flat = z.double().flatten(-2)
    f = torch.relu((flat - d["b_dec"]) @ d["W_enc"] + d["b_enc"])
    y = (f @ d["W_dec"] + d["b_dec"]).unflatten(-1, (N_HEADS, D_HEAD))
    return Reference(encode=f, decode=y, forward=y)


CASES = [
    LayoutCase(
        format="hook_z_kk",
        name="hook-z-concatenated-heads",
        files={PATH: pt_bytes(t), CFG: json_bytes(cfg)},
        sae={"id": "blocks.2.hook_z", "path": PATH, "hook_layer": 2},
        input_shape=(2, 5, N_HEADS, D_HEAD),
        reference=reference,
        repo_id="ckkissane/attn-saes-gpt2-small-all-layers",
        check=lambda sae: (
            (sae.cfg.reshape, sae.cfg.hook_name) == ("hook_z", "blocks.2.attn.hook_z")
        ),
    )
]
