"""circuit-tracer cross-layer transcoders (config.yaml, W_enc_{i}/W_dec_{i}), written by
circuit-tracer's own to_safetensors; the reference is the CLT math from its code."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._circuit_tracer import CLT_REPO, D_MODEL, D_SAE, N_LAYERS, clt_files, clt_math


def _reference(x: torch.Tensor) -> Reference:
    out = clt_math(x.double())
    return Reference(encode=out["encode"], decode=out["decode"], forward=out["forward"])


def _check(clt) -> None:
    assert clt.cfg.kind == "clt" and clt.layers == tuple(range(N_LAYERS))
    assert clt.cfg.hook_names[1] == "blocks.1.hook_resid_mid"
    assert clt.cfg.hook_names_out[2] == "blocks.2.hook_mlp_out"


CASES = [
    LayoutCase(
        format="circuit_tracer_clt",
        name="jumprelu",
        files=clt_files(),
        sae={
            "id": "clt",
            "path": ".",
            "kind": "clt",
            "n_layers": N_LAYERS,
            "hook_name": "blocks.0.hook_resid_mid",
            "hook_name_out": "blocks.0.hook_mlp_out",
            "hook_layer": 0,
            "d_sae": D_SAE,
            "context_size": None,
            "normalize_activations": "none",
        },
        input_shape=(N_LAYERS, 5, D_MODEL),
        reference=_reference,
        repo_id=CLT_REPO,
        check=_check,
    )
]
