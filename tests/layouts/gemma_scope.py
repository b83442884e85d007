"""Gemma Scope 1 (params.npz) and Gemma Scope 2 (params.safetensors [+ config.json])."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..publishers import gemma_scope2, gemma_scope_npz, jumprelu_reference
from ._case import LayoutCase, Reference
from ._util import as_torch, json_bytes, same


def _jumprelu(p: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acts, recon = jumprelu_reference(p, x.numpy())
    return as_torch(acts), as_torch(recon)


def _gs1(name: str, repo: str, path: str, d_in: int, *, lower: bool = False, **kw: Any):
    npz, p = gemma_scope_npz(d_in=d_in, d_sae=24, lower=lower)
    return LayoutCase(
        format="gemma_scope",
        name=name,
        files={f"{path}/params.npz": npz},
        sae={"id": path, "path": path},
        input_shape=(5, d_in),
        reference=lambda x: same(*_jumprelu(p, x)),
        repo_id=f"google/{repo}",
        **kw,
    )


def _embedding() -> LayoutCase:
    """Embedding SAEs read unscaled embeddings: W_enc/sqrt(d), W_dec*sqrt(d)."""
    path = "embedding/width_4k/average_l0_6"
    npz, p = gemma_scope_npz(d_in=9, d_sae=24)
    adjusted = {**p, "W_enc": p["W_enc"] / math.sqrt(9), "W_dec": p["W_dec"] * math.sqrt(9)}
    return LayoutCase(
        format="gemma_scope",
        name="gs1-embedding",
        files={f"{path}/params.npz": npz},
        sae={"id": path, "path": path},
        input_shape=(5, 9),
        reference=lambda x: same(*_jumprelu(adjusted, x)),
        repo_id="google/gemma-scope-2b-pt-res",
    )


def _attention() -> LayoutCase:
    """att SAEs read hook_z: [..., n_heads, d_head] flattened, output restored."""
    path = "layer_4/width_16k/average_l0_9"
    npz, p = gemma_scope_npz(d_in=8, d_sae=24)

    def reference(z: torch.Tensor) -> Reference:
        acts, recon = _jumprelu(p, z.reshape(*z.shape[:-2], 8))
        recon = recon.reshape(z.shape)
        return Reference(encode=acts, decode=recon, forward=recon)

    return LayoutCase(
        format="gemma_scope",
        name="gs1-att-hook-z",
        files={f"{path}/params.npz": npz},
        sae={"id": path, "path": path},
        input_shape=(3, 5, 2, 4),
        reference=reference,
        repo_id="google/gemma-scope-2b-pt-att",
        check=lambda sae: sae.cfg.reshape == "hook_z",
    )


def _gs2(name: str, folder: str, *, affine: bool = False, config: dict | None = None):
    weights, t = gemma_scope2(d_in=8, d_sae=24, d_out=6 if affine else None, affine=affine)
    p = {k.replace("w_", "W_"): v.numpy().astype(np.float64) for k, v in t.items()}
    files = {f"{folder}/params.safetensors": weights}
    if config is not None:
        files[f"{folder}/config.json"] = json_bytes(config)

    def reference(x: torch.Tensor) -> Reference:
        acts, recon = _jumprelu(p, x)
        if not affine:
            return same(acts, recon)
        skip = x.double() @ as_torch(p["affine_skip_connection"])  # stored [d_in, d_out]
        return Reference(encode=acts, decode=recon, forward=recon + skip)

    def check(sae: Any) -> None:
        assert sae.cfg.transcoder == folder.startswith("transcoder")
        assert (sae.W_skip is not None) == affine

    return LayoutCase(
        format="gemma_scope",
        name=name,
        files=files,
        sae={"id": folder, "path": folder},
        input_shape=(5, 8),
        reference=reference,
        repo_id="google/gemma-scope-2-1b-pt",
        check=check,
    )


CASES = [
    _gs1("gs1-res", "gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_5", 8, lower=True),
    _embedding(),
    _attention(),
    _gs1("gs1-transcoder", "gemma-scope-2b-pt-transcoders", "layer_7/width_16k/average_l0_70", 8),
    _gs2("gs2-resid-no-config", "resid_post_all/layer_3_width_16k_l0_big"),
    _gs2(
        "gs2-affine-transcoder",
        "transcoder/layer_9_width_16k_l0_small_affine",
        affine=True,
        config={"architecture": "jump_relu", "affine_connection": True, "type": "transcoder"},
    ),
]
