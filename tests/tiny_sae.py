"""Tiny canonical SAEs of every architecture and normalization, and their reference math.

The reference is written from the publishers' formulas, independently of saereg.sae:
SAELens's `run_time_activation_ln_in/out` (mean, unbiased std, eps added to the std) and
`run_time_activation_norm_fn_in/out` (x · sqrt(d_in)/‖x‖, undone by dividing), the
constant `scaling_factor`, OpenAI's `LN` (the same as SAELens's layer_norm), and the
activations of FORMATS.md (strict > for JumpReLU, ReLU after top-k, gated's two paths).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from saereg.sae.module import SAE
from saereg.store.sae_config import SAEConfig

NORMS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "scale": {"kind": "scale", "factor": 0.5},
    "constant_norm_rescale": {"kind": "constant_norm_rescale"},
    "layer_norm": {"kind": "layer_norm", "eps": 1e-5},
}
HEADS, D_HEAD = 2, 4
D_IN, D_SAE, K = HEADS * D_HEAD, 24, 4


def make(
    arch: str = "relu",
    norm: str = "none",
    reshape: str = "none",
    *,
    d_sae: int = D_SAE,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **extra: Any,
) -> SAE:
    """A random SAE whose latents are sparse but not empty."""
    g = torch.Generator().manual_seed(seed)
    temporal = {"n_heads": 2, "n_attn_layers": 1, "d_attn": 8} if arch == "temporal" else None
    cfg = SAEConfig.from_dict(
        {
            "architecture": arch,
            "d_in": D_IN,
            "d_sae": d_sae,
            "d_out": D_IN,
            "apply_b_dec_to_input": arch != "temporal",
            "normalization": NORMS[norm],
            "reshape": reshape,
            "dtype": str(dtype).removeprefix("torch."),
            "source": {"release": "tiny", "sae_id": arch, "format": "test", "files": {}},
            "hook_name": "blocks.0.attn.hook_z"
            if reshape == "hook_z"
            else "blocks.0.hook_resid_pre",
            "k": K if arch in ("topk",) else None,
            "temporal": temporal,
            **extra,
        },
        full_schema=False,
    )
    shapes = {**cfg.expected_shapes(), **cfg.optional_shapes()}

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    tensors = {name: rand(*shape, scale=0.5) for name, shape in shapes.items()}
    if "b_enc" in tensors:
        tensors["b_enc"] = rand(d_sae, scale=0.5) - 0.3
    if "threshold" in tensors:
        tensors["threshold"] = rand(d_sae, scale=0.2).abs() + 0.1
    if "r_mag" in tensors:
        tensors["r_mag"] = rand(d_sae, scale=0.1)
    return SAE.from_tensors(cfg, tensors)


def inputs(reshape: str = "none", *lead: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tail = (HEADS, D_HEAD) if reshape == "hook_z" else (D_IN,)
    return torch.randn(*(lead or (3, 5)), *tail, generator=g) * 3 + 0.5


# --------------------------------------------------------------------------- reference


def ref_norm_in(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(normalized x, what the out-function needs), float64, from the publishers' code."""
    norm = sae.cfg.normalization
    x = x.double()
    if norm["kind"] == "scale":
        return x * norm["factor"], {"div": torch.tensor(norm["factor"], dtype=torch.float64)}
    if norm["kind"] == "constant_norm_rescale":
        coeff = (sae.cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True)
        return x * coeff, {"div": coeff}
    if norm["kind"] == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        x = x - mu
        std = x.std(dim=-1, keepdim=True)
        return x / (std + norm["eps"]), {"mu": mu, "std": std}
    return x, {}


def ref_norm_out(y: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    if "div" in stats:
        return y / stats["div"]
    if "mu" in stats:
        return y * stats["std"] + stats["mu"]
    return y


def _p(sae: SAE, name: str) -> torch.Tensor:
    return getattr(sae, name).detach().double()


def ref_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """Dense latents of `x` ([..., d_in] or hook_z [..., heads, d_head]), float64."""
    flat = x.flatten(-2) if x.shape[-1] != sae.cfg.d_in else x
    xn, _ = ref_norm_in(sae, flat)
    if sae.cfg.apply_b_dec_to_input:
        xn = xn - _p(sae, "b_dec")
    arch = sae.cfg.architecture
    if arch == "gated":
        gate = xn @ _p(sae, "W_enc") + _p(sae, "b_gate")
        mag = xn @ (_p(sae, "W_enc") * _p(sae, "r_mag").exp()) + _p(sae, "b_mag")
        return (gate > 0).double() * torch.relu(mag)
    h = xn @ _p(sae, "W_enc") + _p(sae, "b_enc")
    if arch == "relu":
        return torch.relu(h)
    if arch == "jumprelu":
        return h * (h > _p(sae, "threshold")).double()
    if arch == "topk":
        top = h.topk(int(sae.cfg.k or 0), dim=-1)
        vals = torch.relu(top.values) if sae.cfg.topk_relu else top.values
        return torch.zeros_like(h).scatter(-1, top.indices, vals)
    raise AssertionError(arch)


def ref_decode(sae: SAE, f: torch.Tensor, x_rows: torch.Tensor) -> torch.Tensor:
    """What latents `f` (of the inputs `x_rows`) decode to, float64."""
    flat = x_rows.flatten(-2) if x_rows.shape[-1] != sae.cfg.d_in else x_rows
    _, stats = ref_norm_in(sae, flat)
    y = f.double() @ _p(sae, "W_dec") + _p(sae, "b_dec")
    y = ref_norm_out(y, stats)
    if x_rows.shape[-1] != sae.cfg.d_in and not sae.cfg.transcoder:
        y = y.unflatten(-1, tuple(x_rows.shape[-2:]))
    return y


def close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    assert type(actual) is torch.Tensor, f"{what}: decode returned {type(actual).__name__}"
    assert actual.shape == expected.shape, (
        f"{what}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    tol = 1e-4 * max(1.0, math.sqrt(float(expected.abs().max())))
    torch.testing.assert_close(actual.double(), expected.double(), atol=tol, rtol=1e-4, msg=what)
