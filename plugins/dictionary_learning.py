"""saprmarks/dictionary_learning checkpoints: ``{path}/ae.pt`` + ``{path}/config.json``.

Paths look like ``{sweep}/resid_post_layer_{L}[_checkpoints]/trainer_{N}[_step_S]``;
sweep names carry the width (``width-2pow14``), the architecture and sometimes the
context length (``ctx128``).
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

_LAYER = re.compile(r"(?:^|/)resid_post_layer_(\d+)(?:_checkpoints)?/trainer_\d+(?:_step_\d+)?$")
_WIDTH = re.compile(r"width-2pow(\d+)")
_CTX = re.compile(r"ctx(\d+)")
# Sweep-name token → architecture at inference (BatchTopK/Matryoshka save as JumpReLU).
_ARCH_TOKENS = (
    ("matryoshka", "jumprelu"),
    ("batchtopk", "jumprelu"),
    ("batch_top_k", "jumprelu"),
    ("jumprelu", "jumprelu"),
    ("topk", "topk"),
    ("gated", "gated"),
    ("vanilla", "relu"),
    ("standard", "relu"),
    ("panneal", "relu"),
)
_D_MODEL = {"gemma-2-2b": 2304, "pythia-70m-deduped": 512}


class DictionaryLearningFormat(Format):
    name = "dictionary_learning"
    summary = "saprmarks/dictionary_learning (ae.pt + config.json)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _LAYER.search(entry.path)
        if not match:
            raise ValueError(
                f"path {entry.path!r} does not end in resid_post_layer_L/trainer_N "
                "(dictionary_learning layout)"
            )
        layer = int(match.group(1))
        out: dict[str, Any] = {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "normalize_activations": "none",
        }
        names = f"{release.name} {entry.path} {release.repo_id or ''}"
        width = _WIDTH.search(names)
        if width:
            out["d_sae"] = 2 ** int(width.group(1))
        ctx = _CTX.search(names)
        if ctx:
            out["context_size"] = int(ctx.group(1))
        lowered = entry.path.split("/", 1)[0].lower() + " " + release.name.lower()
        for token, arch in _ARCH_TOKENS:
            if token in lowered:
                out["architecture"] = arch
                break
        if release.model in _D_MODEL:
            out["d_in"] = _D_MODEL[release.model]
        return out


@hookimpl
def saereg_formats() -> list[Format]:
    return [DictionaryLearningFormat()]
