"""OpenAI's original sparse_autoencoder .pt files, fetched from plain URLs."""

from __future__ import annotations

import torch

from ..publishers import oai_pt, oai_reference
from ._case import LayoutCase
from ._util import same

BASE = "https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/"
PATH = "resid_post_mlp_v5_32k/autoencoders/8.pt"
data, state = oai_pt(d_in=12, d_sae=32, k=4)
# v1 (paths.py: ReLU, inputs not layer normed), saved as model.py's state_dict does.
V1_PATH = "mlp_post_act/autoencoders/3.pt"
_, relu_state = oai_pt(d_in=12, d_sae=32, k=4)
relu_state = {k: v for k, v in relu_state.items() if k != "activation_state_dict"}
relu_state["activation"] = "ReLU"


def _saved(state: dict) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def relu_reference(state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """openai/sparse_autoencoder Autoencoder with a ReLU and no input normalization."""
    x = x.double()
    pre = (x - state["pre_bias"].double()) @ state["encoder.weight"].double().T
    latents = torch.relu(pre + state["latent_bias"].double())
    return latents, latents @ state["decoder.weight"].double().T + state["pre_bias"].double()


def _relu_check(sae: object) -> None:
    cfg = sae.cfg  # type: ignore[attr-defined]
    assert cfg.architecture == "relu" and cfg.normalization["kind"] == "none"


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
    ),
    LayoutCase(
        format="oai",
        name="relu-v1-mlp-post-act",
        files={V1_PATH: _saved(relu_state)},
        sae={
            "id": "blocks.3.mlp.hook_post",
            "path": V1_PATH,
            "hook_name": "blocks.3.mlp.hook_post",
            "hook_layer": 3,
            "normalize_activations": "none",
        },
        input_shape=(6, 12),
        reference=lambda x: same(*relu_reference(relu_state, x)),
        release={"base_url": BASE},
        plain_url=True,
        check=_relu_check,
    ),
]
