"""Small parsing helpers shared by the built-in formats (hook names, widths)."""

from __future__ import annotations

import re

_LAYER_IN_HOOK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)(?:\.|$)")
TL_HOOK = re.compile(r"^blocks\.(\d+)\.(?:(?:attn|mlp|ln1|ln2)\.)?hook_[a-z_]+$")

#: Publishers name power-of-two widths loosely ("65k" is 65536, "131k" is 131072).
POW2_WIDTH_NAMES = {
    "2k": 2**11,
    "4k": 2**12,
    "8k": 2**13,
    "16k": 2**14,
    "32k": 2**15,
    "65k": 2**16,
    "64k": 2**16,
    "128k": 2**17,
    "131k": 2**17,
    "256k": 2**18,
    "262k": 2**18,
    "512k": 2**19,
    "524k": 2**19,
    "1m": 2**20,
}


def layer_of_hook(hook_name: str) -> int | None:
    """The block index a TransformerLens or Hugging Face hook name points into.

    ``hook_embed`` (before block 0) counts as layer 0, as the SAELens tables do.
    """
    match = _LAYER_IN_HOOK.search(hook_name)
    if match:
        return int(match.group(1))
    if hook_name in {"hook_embed", "hook_pos_embed", "embed_tokens"}:
        return 0
    return None


def parse_width(text: str) -> int:
    """'16k' → 16384, '1m' → 1048576, '2pow14' → 16384, '24576' → 24576."""
    text = text.strip().lower()
    if text.startswith("2pow"):
        return 2 ** int(text[4:])
    if text in POW2_WIDTH_NAMES:
        return POW2_WIDTH_NAMES[text]
    if text.isdigit():
        return int(text)
    raise ValueError(f"unrecognised width {text!r}")


def tl_hook_fields(hook_name: str) -> dict[str, object]:
    """hook_name plus the layer it implies."""
    return {"hook_name": hook_name, "hook_layer": layer_of_hook(hook_name)}
