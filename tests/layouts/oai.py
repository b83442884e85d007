"""OpenAI's original sparse_autoencoder .pt files, fetched from plain URLs."""

from __future__ import annotations

from ..publishers import oai_pt, oai_reference
from ._case import LayoutCase
from ._util import same

BASE = "https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/"
PATH = "resid_post_mlp_v5_32k/autoencoders/8.pt"
data, state = oai_pt(d_in=12, d_sae=32, k=4)

CASES = [
    LayoutCase(
        format="oai",
        name="topk-layer-norm",
        files={PATH: data},
        sae={
            "id": "blocks.8.hook_resid_post",
            "path": PATH,
            "hook_name": "blocks.8.hook_resid_post",
            "hook_layer": 8,
            "normalize_activations": "layer_norm",
        },
        input_shape=(6, 12),
        reference=lambda x: same(*oai_reference(state, x)),
        release={"base_url": BASE},
        plain_url=True,
    )
]
