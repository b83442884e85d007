"""qresearch's DeepSeek-R1-Distill-Llama-8B SAE: one ``…-SAE-l{layer}.pt`` state dict
in nn.Linear layout (``encoder.weight``, ``decoder.weight``, their biases).

Math: f = ReLU(x @ encoder.weightᵀ + encoder.bias), x̂ = f @ decoder.weightᵀ +
decoder.bias; no b_dec subtraction, no normalization. Kept in the file's dtype.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.formats import Format, Release, SAEEntry, hookimpl

from ._pickled import LinearPickleFormat, keys_of

_FILE = re.compile(r"-SAE-l(\d+)\.pt$")


class DeepSeekR1Format(LinearPickleFormat):
    name = "deepseek_r1"
    keys = keys_of("encoder.weight", "decoder.weight", "encoder.bias", "decoder.bias", linear=True)
    summary = "qresearch DeepSeek-R1-Distill-Llama-8B SAE (.pt state dict)"
    file_name = _FILE

    def name_confidence(self, name: str) -> float:
        """qresearch's file is named after the distilled model."""
        return 0.8 if name.startswith("DeepSeek-R1-Distill-Llama") else 0.5

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _FILE.search(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} does not end in -SAE-l{{layer}}.pt")
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "d_in": 4096,
            "architecture": "relu",
            "context_size": 1024,
            "normalize_activations": "none",
        }


@hookimpl
def saereg_formats() -> list[Format]:
    return [DeepSeekR1Format()]
