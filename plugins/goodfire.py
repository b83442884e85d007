"""Goodfire's Llama 3.x residual SAEs: one pickled state dict (``encoder_linear``,
``decoder_linear``) at the repository root, named ``…-SAE-l{layer}.pt[h]``."""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_FILE = re.compile(r"-SAE-l(\d+)\.pth?$")
#: Published sizes: residual width by model family, and the (fixed) dictionary width.
_D_IN = {"Llama-3.1-8B": 4096, "Llama-3.3-70B": 8192}
_D_SAE = 65536


class GoodfireFormat(Format):
    name = "goodfire"
    summary = "Goodfire Llama 3.x SAEs (.pt/.pth state dict)"

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
