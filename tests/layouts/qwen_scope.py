"""Qwen Scope: layer{L}.sae.pt dicts (W_enc [d_sae, d_in], W_dec [d_in, d_sae]), TopK
with k from the release, exactly as the model card computes it (no ReLU)."""

from __future__ import annotations

import torch

from ._case import LayoutCase
from ._util import pt_bytes, rand, same

D_IN, D_SAE, K = 8, 24, 5
t = {
    "W_enc": rand(D_SAE, D_IN),
    "W_dec": rand(D_IN, D_SAE),
    # strongly negative biases: some of the k largest pre-activations are negative,
    # which the publisher keeps (and a ReLU would zero)
    "b_enc": rand(D_SAE, scale=0.1) - 1.0,
    "b_dec": rand(D_IN, scale=0.1),
}


def reference(x: torch.Tensor):
    """Model card: pre = x @ W_encᵀ + b_enc; keep the top-k values; x̂ = f @ W_decᵀ + b_dec."""
    d = {k: v.double() for k, v in t.items()}
    pre = x.double() @ d["W_enc"].T + d["b_enc"]
    vals, idx = pre.topk(K, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, vals)
    return same(f, f @ d["W_dec"].T + d["b_dec"])


def _check(sae) -> None:
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.topk_relu) == ("topk", K, False)
    x = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(1))
    f = sae.encode(x)
    assert ((f != 0).sum(-1) == K).all() and (f < 0).any()


CASES = [
    LayoutCase(
        format="qwen_scope",
        name="topk-k-from-release",
        files={"layer3.sae.pt": pt_bytes(t)},
        sae={"id": "layer3", "path": "layer3.sae.pt", "k": K, "hook_layer": 3},
        input_shape=(6, D_IN),
        reference=reference,
        repo_id="Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50",
        check=_check,
    )
]
