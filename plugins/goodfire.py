"""Goodfire's Llama 3.x residual SAEs: one pickled state dict (``encoder_linear``,
``decoder_linear``) at the repository root, named ``…-SAE-l{layer}.pt[h]``.

Math (Goodfire's announcement; SAELens checks the same against Goodfire's module):
f = ReLU(x @ encoder_linear.weightᵀ + encoder_linear.bias), x̂ = f @ decoder_linear.weightᵀ
+ decoder_linear.bias. No b_dec subtraction, no input normalization. Both weights are
nn.Linear [out, in]: W_enc and W_dec are their transposes. Kept in the file's dtype.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.formats import Format, Release, SAEEntry, hookimpl

from ._pickled import LinearPickleFormat, keys_of

_FILE = re.compile(r"-SAE-l(\d+)\.pth?$")
#: Published sizes: residual width by model family, and the (fixed) dictionary width.
_D_IN = {"Llama-3.1-8B": 4096, "Llama-3.3-70B": 8192}
_D_SAE = 65536


class GoodfireFormat(LinearPickleFormat):
    name = "goodfire"
    keys = keys_of(
        "encoder_linear.weight",
        "decoder_linear.weight",
        "encoder_linear.bias",
        "decoder_linear.bias",
        linear=True,
    )
    summary = "Goodfire Llama 3.x SAEs (.pt/.pth state dict)"
    file_name = _FILE

    def name_confidence(self, name: str) -> float:
        """Goodfire names its files after the Llama 3.x model or DeepSeek-R1 itself (not a
        distill, which is qresearch's); ``.pth`` is Goodfire's alone."""
        if name.endswith(".pth") or name.startswith(("Llama-3", "DeepSeek-R1-SAE")):
            return 0.8
        return 0.5

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _FILE.search(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} does not end in -SAE-l{{layer}}.pt or .pth")
        layer = int(match.group(1))
        out: dict[str, Any] = {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "d_sae": _D_SAE,
            "architecture": "relu",
            "normalize_activations": "none",
        }
        for family, width in _D_IN.items():
            if family in (release.repo_id or ""):
                out["d_in"] = width
        return out


@hookimpl
def saereg_formats() -> list[Format]:
    return [GoodfireFormat()]
