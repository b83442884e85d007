"""Per-layer transcoders published as one safetensors file per layer.

* ``mwhanna_transcoder``: mwhanna's Qwen3 transcoders, ``layer_{L}.safetensors`` with
  wandb-config.yaml / config.yaml at the repository root; MLP input → MLP output.
* ``mntss_clt``: mntss's cross-layer transcoder split per layer (``W_enc_{L}`` /
  ``W_dec_{L}`` files); the decoder is summed over target layers, so only the feature
  activations are faithful.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_MWHANNA_FILE = re.compile(r"^layer_(\d+)\.safetensors$")


class MwhannaTranscoderFormat(Format):
    name = "mwhanna_transcoder"
    summary = "mwhanna per-layer transcoders (layer_{L}.safetensors)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _MWHANNA_FILE.match(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} is not a layer_{{L}}.safetensors file")
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.mlp.hook_in",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out",
            "hook_layer": layer,
            "architecture": "transcoder",
            "normalize_activations": "none",
        }


class MntssCLTFormat(Format):
    name = "mntss_clt"
    summary = "mntss cross-layer transcoders, one layer at a time (feature activations only)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        if not entry.path.isdigit():
            raise ValueError(f"path {entry.path!r} should be the layer number")
        layer = int(entry.path)
        return {"hook_layer": layer, "architecture": "transcoder", "normalize_activations": "none"}


@hookimpl
def saereg_formats() -> list[Format]:
    return [MwhannaTranscoderFormat(), MntssCLTFormat()]
