"""`saereg export --format sparsify`: EleutherAI sparsify's layout, one folder per hookpoint
(``{hookpoint}/cfg.json`` + ``{hookpoint}/sae.safetensors``), as ``SparseCoder.save_to_disk``
writes it and ``SparseCoder.load_from_disk`` reads it (eai-sparsify 1.3.3).

sparsify's math (``sparse_coder.py``, ``fused_encoder.py``)::

    x' = x - b_dec                       (autoencoders; a transcoder encodes x as is)
    z  = top-k of ReLU(x' @ encoder.weightᵀ + encoder.bias)
    y  = z @ W_dec + b_dec  (+ x @ W_skipᵀ with skip_connection)

So a canonical SAE exports when it is TopK with a ReLU, reads its hook unreshaped, and
outputs as many features as it reads. A constant input scale is folded into the weights;
an autoencoder that does not subtract b_dec gets b_enc + b_dec @ W_enc instead, which
cancels the subtraction sparsify makes. Everything else (ReLU or JumpReLU SAEs, LayerNorm
inputs, hook_z reshapes) has no sparsify form and is refused with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saereg.store.canonical import (
    atomic_path,
    check_exportable,
    fold_input_scale,
    write_safetensors,
)
from saereg.store.sae_config import SAEConfig
from saereg.store.tensors import CanonicalFileError

CFG = "cfg.json"
WEIGHTS = "sae.safetensors"


def _refusal(cfg: SAEConfig) -> str | None:
    if cfg.architecture != "topk":
        return f"sparsify runs only TopK SAEs; this one is {cfg.architecture}"
    if not cfg.topk_relu:
        return "sparsify applies a ReLU before its top-k; this SAE keeps negative values"
    if cfg.normalization["kind"] not in ("none", "scale"):
        return f"sparsify has no {cfg.normalization['kind']} input normalization"
    if cfg.reshape != "none":
        return f"sparsify reads its hookpoint as is; this SAE reshapes its input ({cfg.reshape})"
    if cfg.d_out != cfg.d_in:
        return f"sparsify's decoder writes d_in={cfg.d_in} features; this one writes {cfg.d_out}"
    return None


def hookpoint_name(cfg: SAEConfig) -> str:
    """The folder name: the Hugging Face module the SAE reads (sparsify's hookpoint),
    else the TransformerLens hook, else ``sae``."""
    name = cfg.hf_hook_name or cfg.hook_name or "sae"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sae"
    return name


def export_sparsify(cfg: SAEConfig, tensors: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write `out_dir/{hookpoint}/cfg.json` and `sae.safetensors`; return both paths."""
    check_exportable(cfg)
    why = _refusal(cfg)
    if why:
        raise CanonicalFileError(f"cannot export to sparsify: {why}; keep the canonical file")
    import torch  # deferred: torch

    values = {n: t for n, t in tensors.items()}
    if cfg.normalization["kind"] == "scale":
        values = fold_input_scale(values, float(cfg.normalization["factor"]))
    if not cfg.transcoder and not cfg.apply_b_dec_to_input:
        # sparsify subtracts b_dec; adding b_dec @ W_enc to b_enc makes that a no-op.
        w_enc = values["W_enc"].double()
        values["b_enc"] = (values["b_enc"].double() + values["b_dec"].double() @ w_enc).to(
            values["b_enc"].dtype
        )
    dtype = getattr(torch, cfg.dtype)
    state: dict[str, Any] = {
        "encoder.weight": values["W_enc"].T.contiguous(),
        "encoder.bias": values["b_enc"],
        "W_dec": values["W_dec"],
        "b_dec": values["b_dec"],
    }
    skip = "W_skip" in values
    if skip:
        state["W_skip"] = values["W_skip"]
    state = {n: t.to(dtype).contiguous() for n, t in state.items()}
    sparsify_cfg = {
        "activation": "topk",
        "expansion_factor": max(1, cfg.d_sae // cfg.d_in),
        "normalize_decoder": False,
        "num_latents": cfg.d_sae,
        "k": cfg.k,
        "multi_topk": False,
        "skip_connection": skip,
        "transcode": cfg.transcoder,
        "d_in": cfg.d_in,
    }
    folder = out_dir / hookpoint_name(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    weights, cfg_path = folder / WEIGHTS, folder / CFG
    write_safetensors(weights, state, {"format": "pt"})
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(json.dumps(sparsify_cfg, indent=2) + "\n", encoding="utf-8")
    return [cfg_path, weights]
