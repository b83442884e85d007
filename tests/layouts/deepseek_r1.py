"""qresearch's DeepSeek-R1-Distill-Llama-8B SAE: a bfloat16 nn.Linear state dict."""

from __future__ import annotations

import torch

from ._case import LayoutCase
from ._linear import linear_reference, linear_state
from ._util import pt_bytes

PATH = "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"
state = linear_state("encoder", "decoder", 8, 24, dtype=torch.bfloat16)

CASES = [
    LayoutCase(
        format="deepseek_r1",
        name="bfloat16-linear",
        files={PATH: pt_bytes(state)},
        sae={"id": "blocks.19.hook_resid_post", "path": PATH},
        input_shape=(5, 8),
        reference=lambda x: linear_reference(state, "encoder", "decoder", x),
        repo_id="qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19",
        check=lambda sae: sae.dtype == torch.bfloat16,
    )
]
