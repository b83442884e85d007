"""Llama Scope (OpenMOSS/fnlp, Llama-3.1-8B) and its R1-distill sibling.

Base releases: folders ``Llama3_1-8B-Base-L{layer}{R|A|M|TC}-{8|32}x`` holding
``hyperparams.json`` and ``checkpoints/final.safetensors``. R1-distill: folders
``{dataset mix}/L{layer}R`` holding ``config.json`` and ``sae_weights.safetensors``.
Both were trained on dataset-wise normalized activations (normalize_activations
``expected_average_only_in``, folded with the release's norm_scaling_factor).
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_BASE = re.compile(r"^Llama3_1-8B-Base-L(\d+)(R|A|M|TC)-(8|32)x$")
_R1 = re.compile(r"^[^/]+/L(\d+)R$")
_D_MODEL = 4096
_SITE_HOOK = {"R": "hook_resid_post", "A": "hook_attn_out", "M": "hook_mlp_out"}


class LlamaScopeFormat(Format):
    name = "llama_scope"
    summary = "Llama Scope (hyperparams.json + checkpoints/final.safetensors) and R1-distill"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        common = {
            "architecture": "jumprelu",
            "context_size": 1024,
            "normalize_activations": "expected_average_only_in",
            "d_in": _D_MODEL,
        }
        base = _BASE.match(entry.path)
        if base:
            layer, site, factor = int(base.group(1)), base.group(2), int(base.group(3))
            out: dict[str, Any] = {**common, "hook_layer": layer, "d_sae": _D_MODEL * factor}
            if site == "TC":
                out.update(
                    hook_name=f"blocks.{layer}.ln2.hook_normalized",
                    hook_name_out=f"blocks.{layer}.hook_mlp_out",
                    architecture="jumprelu_transcoder",
                    d_out=_D_MODEL,
                )
            else:
                out["hook_name"] = f"blocks.{layer}.{_SITE_HOOK[site]}"
            return out
        r1 = _R1.match(entry.path)
        if r1:
            layer = int(r1.group(1))
            return {**common, "hook_layer": layer, "hook_name": f"blocks.{layer}.hook_resid_post"}
        raise ValueError(
            f"path {entry.path!r} follows neither Llama Scope's "
            "Llama3_1-8B-Base-L{L}{R|A|M|TC}-{8|32}x nor the R1-distill {mix}/L{L}R layout"
        )


@hookimpl
def saereg_formats() -> list[Format]:
    return [LlamaScopeFormat()]
