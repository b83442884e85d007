"""Goodfire's Llama 3.x SAEs: one pickled state dict at the repository root."""

from __future__ import annotations

from ._case import LayoutCase
from ._linear import linear_reference, linear_state
from ._util import pt_bytes


def _case(name: str, repo: str, path: str, *, legacy: bool) -> LayoutCase:
    state = linear_state("encoder_linear", "decoder_linear", 8, 24)
    return LayoutCase(
        format="goodfire",
        name=name,
        files={path: pt_bytes(state, legacy=legacy)},
        sae={"id": "layer_19", "path": path, "hook_name": "blocks.19.hook_resid_post"},
        input_shape=(5, 8),
        reference=lambda x: linear_reference(state, "encoder_linear", "decoder_linear", x),
        repo_id=repo,
    )


CASES = [
    # a legacy (pre-zip) pickle cannot be memory-mapped: the fallback path
    _case(
        "llama-3.1-8b-pth-legacy-pickle",
        "Goodfire/Llama-3.1-8B-Instruct-SAE-l19",
        "Llama-3.1-8B-Instruct-SAE-l19.pth",
        legacy=True,
    ),
    _case(
        "llama-3.3-70b-pt",
        "Goodfire/Llama-3.3-70B-Instruct-SAE-l50",
        "Llama-3.3-70B-Instruct-SAE-l50.pt",
        legacy=False,
    ),
]
