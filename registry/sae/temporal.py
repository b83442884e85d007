"""Temporal SAEs (canrager/temporalSAEs): the attention that predicts each token's codes
from the earlier tokens' codes. The math is in saereg.sae.module's docstring; kept apart
because no other architecture shares it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def temporal_codes(sae: Any, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Novel codes, their pre-activations and the predicted codes of a temporal SAE, from
    its normalized input `xn [..., T, d_in]` (the math: saereg.sae.module's docstring)."""
    if xn.dim() < 2:
        raise ValueError("a temporal SAE reads a sequence: input [..., tokens, d_in]")
    lead = xn.shape[:-2]
    r = xn.reshape(-1, *xn.shape[-2:])
    assert sae.cfg.temporal is not None
    n_heads = int(sae.cfg.temporal["n_heads"])
    predicted = torch.zeros((*r.shape[:-1], sae.cfg.d_sae), dtype=r.dtype, device=r.device)
    for layer in sae.attn_layers:
        z = torch.relu(r @ sae.W_enc + sae.b_enc)
        ctx = torch.cat((torch.zeros_like(z[:, :1]), z[:, :-1]), dim=1)
        q, k, v = (
            _heads(layer.q_target(z), n_heads),
            _heads(layer.k_ctx(ctx), n_heads),
            _heads(layer.v_ctx(ctx), n_heads),
        )
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        p = torch.relu(layer.c_proj(a.transpose(1, 2).flatten(-2)))
        d = p @ sae.W_dec
        s = (d * r).sum(-1, keepdim=True) / (d.norm(dim=-1, keepdim=True) + 1e-6).pow(2)
        predicted = predicted + p * s
        r = r - s * d
    h = r @ sae.W_enc + sae.b_enc
    f = torch.relu(h)
    if sae.cfg.k:
        top = f.topk(int(sae.cfg.k), dim=-1).indices
        f = f * torch.zeros_like(f).scatter(-1, top, 1.0)
    shape = (*lead, *xn.shape[-2:-1], sae.cfg.d_sae)
    return f.reshape(shape), h.reshape(shape), predicted.reshape(shape)


def temporal_attention(
    d_sae: int, d_attn: int, device: str | torch.device | None, dtype: torch.dtype | None
) -> nn.Module:
    """One attention layer of a temporal SAE: projections named as the publisher's."""
    layer = nn.Module()
    for name, width in (("k_ctx", d_attn), ("q_target", d_attn), ("v_ctx", d_sae)):
        setattr(layer, name, nn.Linear(d_sae, width, device=device, dtype=dtype))
    layer.c_proj = nn.Linear(d_sae, d_sae, device=device, dtype=dtype)
    return layer


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, T, n·d] → [B, n, T, d]."""
    return t.unflatten(-1, (n_heads, -1)).transpose(1, 2)
