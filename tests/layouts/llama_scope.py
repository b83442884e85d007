"""Llama Scope (hyperparams.json + checkpoints/final.safetensors) and its R1-distill
sibling (config.json + sae_weights.safetensors); dataset-norm factors folded."""

from __future__ import annotations

import torch

from ..publishers import llama_scope_folder, llama_scope_reference, rand
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


CASES = [_base(), _r1()]
