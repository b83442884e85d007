"""OpenAI's original GPT-2 small SAEs (``sparse_autoencoder``), as published on their
public blob storage: ``{location}_v5_{32k|128k}/autoencoders/{layer}.pt``.

TopK(32) with per-token LayerNorm on the input (unbiased std, eps added to the std),
trained on 64-token contexts.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_PATH = re.compile(r"^(\w+?)_v5_(32k|128k)/autoencoders/(\d+)\.pt$")
#: OpenAI location → TransformerLens hook (from the sparse_autoencoder README).
LOCATION_HOOK = {
    "resid_post_mlp": "hook_resid_post",
    "resid_post_attn": "hook_resid_mid",
    "resid_delta_mlp": "hook_mlp_out",
    "resid_delta_attn": "hook_attn_out",
    "mlp_post_act": "mlp.hook_post",
}


class OAIFormat(Format):
    name = "oai"
    summary = "OpenAI sparse_autoencoder GPT-2 small v5 .pt files (TopK + LayerNorm)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _PATH.match(entry.path)
        if not match or match.group(1) not in LOCATION_HOOK:
            raise ValueError(
                f"path {entry.path!r} does not follow OpenAI's "
                "{location}_v5_{32k|128k}/autoencoders/{layer}.pt layout"
            )
        location, width, layer = match.group(1), match.group(2), int(match.group(3))
        return {
            "hook_name": f"blocks.{layer}.{LOCATION_HOOK[location]}",
            "hook_layer": layer,
            "d_sae": 32768 if width == "32k" else 131072,
            "d_in": 3072 if location == "mlp_post_act" else 768,
            "k": 32,
            "architecture": "topk",
            "normalize_activations": "layer_norm",
            "context_size": 64,
        }


@hookimpl
def saereg_formats() -> list[Format]:
    return [OAIFormat()]
