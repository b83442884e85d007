"""Llama Scope (hyperparams.json + checkpoints/final.safetensors), its transcoders (the
same layout, with separate input and output dataset norms) and its R1-distill sibling
(config.json + sae_weights.safetensors); dataset-norm factors folded."""

from __future__ import annotations

import torch

from ..publishers import (
    llama_scope_folder,
    llama_scope_lm_saes_reference,
    llama_scope_reference,
    rand,
)
from ._case import LayoutCase, Reference
from ._util import json_bytes, same, st_save


def _base() -> LayoutCase:
    folder = "Llama3_1-8B-Base-L5R-8x"
    files, raw = llama_scope_folder(folder, d_model=8, factor=3)
    s = raw["s"]
    return LayoutCase(
        format="llama_scope",
        name="base-dataset-norm",
        files=files,
        sae={
            "id": "l5r_8x",
            "path": folder,
            "hook_name": "blocks.5.hook_resid_post",
            "hook_layer": 5,
            "norm_scaling_factor": s,
            "normalize_activations": "expected_average_only_in",
        },
        input_shape=(5, 8),
        reference=lambda x: same(*llama_scope_reference(raw, x, s)),
        repo_id="fnlp/Llama3_1-8B-Base-LXR-8x",
        atol=1e-4,  # the published weights are bfloat16
    )


def _transcoder() -> LayoutCase:
    """LXTC: ln2.hook_normalized → hook_mlp_out, in ≠ out norms (as published: e.g.
    64.0 and 6.09375 for L19TC-8x); compared with lm_saes' own loading math."""
    folder = "Llama3_1-8B-Base-L3TC-8x"
    files, raw = llama_scope_folder(
        folder,
        d_model=8,
        factor=3,
        jrt=0.05,
        avg_norm=6.0,
        avg_norm_out=0.7,
        site_hook="blocks.3.ln2.hook_normalized",
        out_hook="blocks.3.hook_mlp_out",
    )

    def check(sae: object) -> None:
        cfg = sae.cfg  # type: ignore[attr-defined]
        assert cfg.transcoder and cfg.d_out == 8
        assert cfg.hook_name_out == "blocks.3.hook_mlp_out"
        assert cfg.normalization == {"kind": "none"}

    return LayoutCase(
        format="llama_scope",
        name="transcoder",
        files=files,
        sae={
            "id": "l3tc_8x",
            "path": folder,
            "hook_name": "blocks.3.ln2.hook_normalized",
            "hook_name_out": "blocks.3.hook_mlp_out",
            "hook_layer": 3,
            "architecture": "jumprelu_transcoder",
            "d_out": 8,
            "normalize_activations": "expected_average_only_in",
        },
        input_shape=(5, 8),
        reference=lambda x: same(*llama_scope_lm_saes_reference(raw, x)),
        repo_id="OpenMOSS-Team/Llama3_1-8B-Base-LXTC-8x",
        atol=1e-4,
        check=check,
    )


def _r1() -> LayoutCase:
    """R1-distill: threshold exp(log_jumprelu_threshold), trained on s·x."""
    t = {
        "encoder.weight": rand(24, 8),
        "encoder.bias": rand(24, scale=0.1),
        "decoder.weight": rand(8, 24),
        "decoder.bias": rand(8, scale=0.1),
        "log_jumprelu_threshold": rand(24, scale=0.1),
    }
    folder = "800M-Slimpajama-0-OpenR1-Math-220k/L7R"
    s = 1.7

    def reference(x: torch.Tensor) -> Reference:
        d = {k: v.double() for k, v in t.items()}
        h = (s * x.double()) @ d["encoder.weight"].T + d["encoder.bias"]
        f = torch.relu(h) * (h > d["log_jumprelu_threshold"].exp()).double()
        return same(f, (f @ d["decoder.weight"].T + d["decoder.bias"]) / s)

    return LayoutCase(
        format="llama_scope",
        name="r1-distill",
        files={
            f"{folder}/config.json": json_bytes(
                {"d_model": 8, "expansion_factor": 3, "hook_point_in": "blocks.7.hook_resid_post"}
            ),
            f"{folder}/sae_weights.safetensors": st_save(t),
        },
        sae={
            "id": "l7r",
            "path": folder,
            "hook_name": "blocks.7.hook_resid_post",
            "hook_layer": 7,
            "norm_scaling_factor": s,
            "normalize_activations": "expected_average_only_in",
        },
        input_shape=(5, 8),
        reference=reference,
        repo_id="fnlp/Llama-Scope-R1-Distill",
    )


CASES = [_base(), _transcoder(), _r1()]
