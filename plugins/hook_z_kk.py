"""Kissane & Krzyzanowski's GPT-2 small attention SAEs on ``hook_z``.

One pickle per layer (``gpt2-small_L{L}_Hcat_z_…_ds{d_sae}_….pt``) plus a sibling
``…_cfg.json``; the SAE reads the concatenated heads (12 × 64 = 768).
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_FILE = re.compile(r"_L(\d+)_Hcat_z_.*_ds(\d+)_.*\.pt$")


class HookZFormat(Format):
    name = "hook_z_kk"
    summary = "Kissane & Krzyzanowski attention (hook_z) SAEs, .pt + _cfg.json"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _FILE.search(entry.path)
        if not match:
            raise ValueError(
                f"path {entry.path!r} does not look like …_L{{L}}_Hcat_z_…_ds{{d_sae}}_….pt"
            )
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.attn.hook_z",
            "hook_layer": layer,
            "d_sae": int(match.group(2)),
            "d_in": 768,
            "architecture": "relu",
            "context_size": 128,
            "normalize_activations": "none",
        }


@hookimpl
def saereg_formats() -> list[Format]:
    return [HookZFormat()]
