"""circuit-tracer transcoder sets (config.yaml listing hf:// layer files), written by
circuit-tracer's own to_safetensors; the reference is TranscoderSet's math from its code."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._circuit_tracer import D_MODEL, D_SAE, N_LAYERS, SET_REPO, set_files, set_math


def _reference(x: torch.Tensor) -> Reference:
    out = set_math(x.double())
    return Reference(encode=out["encode"], decode=out["decode"], forward=out["forward"])


def _check(ts) -> None:
    assert ts.cfg.kind == "transcoder_set" and len(ts) == N_LAYERS
    assert ts[2].W_skip is not None and ts[0].W_skip is None
    assert ts.cfg.architecture == "relu"


CASES = [
    LayoutCase(
        format="circuit_tracer_set",
        name="hf-list",
        files=set_files(),
        sae={
            "id": "set",
            "path": ".",
            "kind": "transcoder_set",
            "n_layers": N_LAYERS,
            "hook_name": "blocks.0.mlp.hook_in",
            "hook_name_out": "blocks.0.hook_mlp_out",
            "hook_layer": 0,
            "d_sae": D_SAE,
            "context_size": None,
            "normalize_activations": "none",
        },
        input_shape=(N_LAYERS, 5, D_MODEL),
        reference=_reference,
        repo_id=SET_REPO,
        check=_check,
    )
]
