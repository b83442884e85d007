"""Small parsing helpers shared by the built-in formats (hook names, widths)."""

from __future__ import annotations

import re

from saereg.catalog import layer_of_hook, parse_width

TL_HOOK = re.compile(r"^blocks\.(\d+)\.(?:(?:attn|mlp|ln1|ln2)\.)?hook_[a-z_]+$")

__all__ = ["TL_HOOK", "layer_of_hook", "parse_width", "tl_hook_fields"]


def tl_hook_fields(hook_name: str) -> dict[str, object]:
    """hook_name plus the layer it implies."""
    return {"hook_name": hook_name, "hook_layer": layer_of_hook(hook_name)}
