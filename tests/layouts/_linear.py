"""The plain ReLU SAE in nn.Linear layout (Goodfire, qresearch): the reference math."""

from __future__ import annotations

import torch

from ._case import Reference
from ._util import rand, same


def linear_state(prefix_enc: str, prefix_dec: str, d_in: int, d_sae: int, dtype=torch.float32):
    """encoder [d_sae, d_in] and decoder [d_in, d_sae] weights, as nn.Linear stores them."""
    return {
        f"{prefix_enc}.weight": rand(d_sae, d_in, dtype=dtype),
        f"{prefix_enc}.bias": rand(d_sae, scale=0.1, dtype=dtype),
        f"{prefix_dec}.weight": rand(d_in, d_sae, dtype=dtype),
        f"{prefix_dec}.bias": rand(d_in, scale=0.1, dtype=dtype),
    }


def linear_reference(state: dict, enc: str, dec: str, x: torch.Tensor) -> Reference:
    """relu(Linear_enc(x)) → Linear_dec: f = ReLU(x Wₑᵀ + bₑ), x̂ = f W_dᵀ + b_d."""
    d = {k: v.double() for k, v in state.items()}
    f = torch.relu(x.double() @ d[f"{enc}.weight"].T + d[f"{enc}.bias"])
    return same(f, f @ d[f"{dec}.weight"].T + d[f"{dec}.bias"])
