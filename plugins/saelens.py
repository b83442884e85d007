"""SAELens-native releases: ``{path}/cfg.json`` + ``{path}/sae_weights.safetensors``.

Serves jbloom's releases and every release saved by SAELens itself, including the
re-saved OpenAI v5 GPT-2 SAEs (folders ``v5_32k_layer_8`` or ``v5_32k_layer_8.pt``).
Most metadata of these releases lives in each cfg.json; offline we derive only what the
naming conventions guarantee.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

from ._common import TL_HOOK, tl_hook_fields

# jbloom's re-saves of OpenAI's GPT-2 small v5 SAEs (see the `oai` format for the originals).
_OAI_RESAVE = re.compile(r"^v5_(32k|128k)_layer_(\d+)(?:\.pt)?$")


class SAELensFormat(Format):
    name = "saelens"
    summary = "SAELens-native folders (cfg.json + sae_weights.safetensors)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        derived: dict[str, Any] = {}
        if TL_HOOK.match(entry.id):
            derived.update(tl_hook_fields(entry.id))
        leaf = entry.path.rstrip("/").rsplit("/", 1)[-1]
        match = _OAI_RESAVE.match(leaf)
        if match:
            derived.update(
                d_sae=32768 if match.group(1) == "32k" else 131072,
                d_in=768,
                k=32,
                architecture="topk",
                normalize_activations="layer_norm",
                context_size=64,
            )
            if derived.get("hook_layer") not in (None, int(match.group(2))):
                raise ValueError(
                    f"path {entry.path!r} names layer {match.group(2)} but id {entry.id!r} "
                    f"names layer {derived['hook_layer']}"
                )
        return derived


@hookimpl
def saereg_formats() -> list[Format]:
    return [SAELensFormat()]
