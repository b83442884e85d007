"""Tiny SAEs in each publisher's exact file layout, and the publishers' own math.

The reference functions here are written from the publishers' published formulas
(Gemma Scope's JumpReLU tutorial, OpenAI's Autoencoder, Llama Scope's dataset-wise
normalization, SAELens' architectures), independently of saereg's module.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

G = torch.Generator().manual_seed(0)


def rand(*shape: int, scale: float = 0.3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=G) * scale).to(dtype)


def release_yaml(
    name: str,
    fmt: str,
    saes: list[dict[str, Any]],
    *,
    repo_id: str | None = None,
    base_url: str | None = None,
    model: str = "test-model",
    revision: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> str:
    import yaml

    doc: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "format": fmt,
        "publisher": "Test",
        "model": model,
    }
    if repo_id:
        doc["repo_id"] = repo_id
    if base_url:
        doc["base_url"] = base_url
    doc["revision"] = revision
    doc["defaults"] = {"context_size": 128, "normalize_activations": "none", **(defaults or {})}
    doc["saes"] = saes
    return yaml.safe_dump(doc, sort_keys=False)


# --------------------------------------------------------------------------- SAELens


def saelens_folder(
    folder: str,
    *,
    d_in: int = 8,
    d_sae: int = 16,
    arch: str = "standard",
    normalize: Any = "none",
    k: int | None = None,
    v6: bool = False,
    hook: str = "blocks.3.hook_resid_pre",
    extra_cfg: dict[str, Any] | None = None,
    scaling_factor: torch.Tensor | None = None,
) -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    t: dict[str, torch.Tensor] = {
        "W_enc": rand(d_in, d_sae),
        "W_dec": rand(d_sae, d_in),
        "b_dec": rand(d_in, scale=0.1),
    }
    if arch == "gated":
        t.update(
            b_gate=rand(d_sae, scale=0.1),
            b_mag=rand(d_sae, scale=0.1),
            r_mag=rand(d_sae, scale=0.1),
        )
    else:
        t["b_enc"] = rand(d_sae, scale=0.1)
    if arch == "jumprelu":
        t["threshold"] = rand(d_sae, scale=0.05).abs()
    stored = dict(t)
    if scaling_factor is not None:
        stored["scaling_factor"] = scaling_factor
    if v6:
        cfg: dict[str, Any] = {
            "architecture": arch,
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "float32",
            "apply_b_dec_to_input": True,
            "normalize_activations": normalize,
            "reshape_activations": "none",
            "metadata": {"sae_lens_version": "6.5.0", "hook_name": hook, "context_size": 128},
        }
        if k is not None:
            cfg["k"] = k
    else:
        cfg = {
            "model_name": "test-model",
            "hook_point": hook,
            "hook_point_layer": 3,
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "torch.float32",
            "context_size": 128,
            "apply_b_dec_to_input": True,
            "normalize_activations": normalize,
            "sae_lens_training_version": "3.0.0",
        }
        if k is not None:
            cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": k})
        if arch != "standard":
            cfg["architecture"] = arch
    cfg.update(extra_cfg or {})
    files = {
        f"{folder}/cfg.json": json.dumps(cfg).encode(),
        f"{folder}/sae_weights.safetensors": st_save(stored),
        f"{folder}/sparsity.safetensors": st_save({"sparsity": -rand(d_sae).abs()}),
    }
    return files, t


def saelens_reference(
    t: dict[str, torch.Tensor],
    x: torch.Tensor,
    arch: str,
    normalize: str = "none",
    k: int | None = None,
) -> tuple[Any, Any]:
    """SAELens' inference math (saes/*.py): returns (feature acts, reconstruction)."""
    x = x.double()
    t = {n: v.double() for n, v in t.items()}
    if normalize == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        sd = xc.std(-1, keepdim=True)
        xin = xc / (sd + 1e-5)
    elif normalize == "constant_norm_rescale":
        c = x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True)
        xin = x * c
    else:
        xin = x
    x2 = xin - t["b_dec"]
    if arch == "gated":
        gate = x2 @ t["W_enc"] + t["b_gate"]
        mag = x2 @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"]
        f = (gate > 0).double() * torch.relu(mag)
    else:
        h = x2 @ t["W_enc"] + t["b_enc"]
        if arch == "jumprelu":
            f = torch.relu(h) * (h > t["threshold"]).double()
        elif arch == "topk":
            vals, idx = h.topk(k or 1, dim=-1)
            f = torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))
        else:
            f = torch.relu(h)
    y = f @ t["W_dec"] + t["b_dec"]
    if normalize == "layer_norm":
        y = y * sd + mu
    elif normalize == "constant_norm_rescale":
        y = y / c
    return f, y


# --------------------------------------------------------------------------- Gemma Scope


def gemma_scope_npz(
    *, d_in: int, d_sae: int, lower: bool = False, negative: bool = False
) -> tuple[bytes, dict[str, np.ndarray]]:
    """`negative`: thresholds shifted so some are below zero (where the ReLU decides)."""
    rng = np.random.default_rng(1)
    arrays = {
        "W_enc": rng.normal(0, 0.3, (d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(0, 0.3, (d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(0, 0.1, d_sae).astype(np.float32),
        "b_dec": rng.normal(0, 0.1, d_in).astype(np.float32),
        "threshold": np.abs(rng.normal(0, 0.1, d_sae)).astype(np.float32),
    }
    if negative:
        arrays["threshold"] -= np.float32(0.1)
    stored = {(k.lower() if lower else k): v for k, v in arrays.items()}
    buf = io.BytesIO()
    np.savez(buf, **stored)
    return buf.getvalue(), arrays


def jumprelu_reference(p: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gemma Scope tutorial: pre = x@W_enc+b_enc; acts = (pre>θ)·ReLU(pre); x̂ = acts@W_dec+b_dec."""
    x = x.astype(np.float64)
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = (pre > p["threshold"]) * np.maximum(pre, 0)
    return acts, acts @ p["W_dec"] + p["b_dec"]


def gemma_scope2(
    *,
    d_in: int,
    d_sae: int,
    d_out: int | None = None,
    affine: bool = False,
    config: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, torch.Tensor]]:
    d_out = d_out or d_in
    t = {
        "w_enc": rand(d_in, d_sae),
        "w_dec": rand(d_sae, d_out),
        "b_enc": rand(d_sae, scale=0.1),
        "b_dec": rand(d_out, scale=0.1),
        "threshold": rand(d_sae, scale=0.05).abs(),
    }
    if affine:
        t["affine_skip_connection"] = rand(d_in, d_out)
    return st_save(t), t


# --------------------------------------------------------------------------- Llama Scope


def llama_scope_folder(
    folder: str,
    *,
    d_model: int = 16,
    factor: int = 2,
    jrt: float = 0.2,
    avg_norm: float = 3.0,
    site_hook: str = "blocks.5.hook_resid_post",
    out_hook: str | None = None,
    avg_norm_out: float | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A base Llama Scope folder; with `out_hook` and `avg_norm_out`, a transcoder."""
    d_sae = d_model * factor
    t = {
        "encoder.weight": rand(d_sae, d_model, dtype=torch.bfloat16),
        "encoder.bias": rand(d_sae, scale=0.1, dtype=torch.bfloat16),
        "decoder.weight": rand(d_model, d_sae, dtype=torch.bfloat16),
        "decoder.bias": rand(d_model, scale=0.1, dtype=torch.bfloat16),
    }
    hp = {
        "d_model": d_model,
        "d_sae": d_sae,
        "hook_point_in": site_hook,
        "hook_point_out": out_hook or site_hook,
        "act_fn": "jumprelu",
        "jump_relu_threshold": jrt,
        "norm_activation": "dataset-wise",
        "dataset_average_activation_norm": {
            "in": avg_norm,
            "out": avg_norm if avg_norm_out is None else avg_norm_out,
        },
        "sparsity_include_decoder_norm": True,
        "apply_decoder_bias_to_pre_encoder": False,
        "use_decoder_bias": True,
        "top_k": 4,
    }
    files = {
        f"{folder}/hyperparams.json": json.dumps(hp).encode(),
        f"{folder}/lm_config.json": b"{}",
        f"{folder}/checkpoints/final.safetensors": st_save(t),
    }
    return files, {"tensors": t, "jrt": jrt, "s": d_model**0.5 / avg_norm, "hp": hp}


def llama_scope_reference(
    ref: dict[str, Any], x: torch.Tensor, s_y: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-space math: h = (s·x)@encᵀ+b; f = h·1[h > θ·s_h]; x̂ = (f@decᵀ+b)/s."""
    t = {n: v.double() for n, v in ref["tensors"].items()}
    h = (s_y * x.double()) @ t["encoder.weight"].T + t["encoder.bias"]
    f = torch.relu(h) * (h > ref["jrt"] * ref["s"]).double()
    return f, (f @ t["decoder.weight"].T + t["decoder.bias"]) / s_y


def llama_scope_lm_saes_reference(
    ref: dict[str, Any], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What lm_saes' `SparseAutoEncoder.from_config` (src/lm_saes/sae.py,
    OpenMOSS/Language-Model-SAEs@fdd5a4dd) computes, step by step: the state dict is
    standardized (`standardize_parameters_of_dataset_activation_scaling`), then made
    unit-decoder-norm (`transform_to_unit_decoder_norm`, sparsity_include_decoder_norm);
    encode is `hidden_pre.where(hidden_pre > jump_relu_threshold, 0)` on the raw input
    (norm_activation is 'inference' after loading), decode is the decoder Linear."""
    hp = ref["hp"]
    sd = {n: v.double() for n, v in ref["tensors"].items()}
    s_in = hp["d_model"] ** 0.5 / hp["dataset_average_activation_norm"]["in"]
    s_out = hp["d_model"] ** 0.5 / hp["dataset_average_activation_norm"]["out"]
    sd["encoder.bias"] = sd["encoder.bias"] / s_in
    sd["decoder.bias"] = sd["decoder.bias"] / s_out
    sd["decoder.weight"] = sd["decoder.weight"] * s_in / s_out
    norm = torch.norm(sd["decoder.weight"], p=2, dim=0)
    sd["decoder.weight"] = sd["decoder.weight"] / norm
    sd["encoder.weight"] = sd["encoder.weight"] * norm[:, None]
    sd["encoder.bias"] = sd["encoder.bias"] * norm
    hidden_pre = x.double() @ sd["encoder.weight"].T + sd["encoder.bias"]
    f = hidden_pre.where(hidden_pre > hp["jump_relu_threshold"], 0)
    return f, f @ sd["decoder.weight"].T + sd["decoder.bias"]


# --------------------------------------------------------------------------- OpenAI


def oai_pt(*, d_in: int = 12, d_sae: int = 32, k: int = 4) -> tuple[bytes, dict[str, Any]]:
    state = {
        "pre_bias": rand(d_in, scale=0.1),
        "latent_bias": rand(d_sae, scale=0.1),
        "encoder.weight": rand(d_sae, d_in),
        "decoder.weight": rand(d_in, d_sae),
        "stats_last_nonzero": torch.zeros(d_sae, dtype=torch.int64),
        "latents_activation_frequency": torch.ones(d_sae),
        "latents_mean_square": torch.zeros(d_sae),
        "activation": "TopK",
        "activation_state_dict": {"k": k, "postact_fn": "ReLU"},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), state


def oai_reference(state: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """openai/sparse_autoencoder Autoencoder.forward with TopK and LN-normalized inputs."""
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    std = xc.std(-1, keepdim=True)
    xn = xc / (std + 1e-5)
    pre = (xn - state["pre_bias"].double()) @ state["encoder.weight"].double().T + state[
        "latent_bias"
    ].double()
    k = state["activation_state_dict"]["k"]
    top = pre.topk(k, dim=-1)
    latents = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    recon = latents @ state["decoder.weight"].double().T + state["pre_bias"].double()
    return latents, recon * std + mu
