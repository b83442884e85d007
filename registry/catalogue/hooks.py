"""Hook sites: TransformerLens hook names ↔ Hugging Face `transformers` module paths.

Release files name hook points the TransformerLens way (``blocks.8.hook_resid_pre``).
Most users run Hugging Face models, where the same activation is the input or the
output of some module (``transformer.h.8``, input side). The module layout depends on
the model family only, so one table per family translates every site the catalogue
uses; the width of a site follows from the model's shape (see `SITE_WIDTH`).

Paths are those of the family's ``*ForCausalLM`` class. A multimodal checkpoint nests
the language model one level deeper (``model.language_model.layers.3``); `attach`
finds those by suffix. Conventions worth knowing:

- ``hook_mlp_in``, ``mlp.hook_in`` and ``ln2.hook_normalized`` all name what the MLP
  reads: the *normalized* residual stream (for Gemma 2/3 the output of
  ``pre_feedforward_layernorm``, as Gemma Scope 2 publishes). TransformerLens' own
  ``hook_mlp_in`` is the un-normalized stream; publishers use the name for the MLP input.
- For Gemma 2/3, ``hook_attn_out`` and ``hook_mlp_out`` come after the extra
  post-attention / post-feedforward norms, as in TransformerLens.
- ``mlp.hook_post`` (the MLP's hidden activation) has no single module in a
  mixture-of-experts layer; it is left undefined there.
- GPT-NeoX (Pythia) adds attention and MLP in parallel, so it has no ``hook_resid_mid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: Site → which shape number fixes its width ("heads" = n_heads · d_head).
SITE_WIDTH = {
    "resid_pre": "d_model",
    "resid_mid": "d_model",
    "resid_post": "d_model",
    "attn_out": "d_model",
    "mlp_out": "d_model",
    "mlp_in": "d_model",
    "embed": "d_model",
    "pos_embed": "d_model",
    "attn_z": "heads",
    "mlp_post": "d_mlp",
}

_BLOCK_SITES = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "hook_mlp_in": "mlp_in",
    "mlp.hook_in": "mlp_in",
    "ln2.hook_normalized": "mlp_in",
    "attn.hook_z": "attn_z",
    "mlp.hook_post": "mlp_post",
}
_GLOBAL_SITES = {"hook_embed": "embed", "hook_pos_embed": "pos_embed"}
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")

#: The TransformerLens name of each site (the inverse of the table above, one name each).
TL_NAME = {
    "resid_pre": "blocks.{L}.hook_resid_pre",
    "resid_mid": "blocks.{L}.hook_resid_mid",
    "resid_post": "blocks.{L}.hook_resid_post",
    "attn_out": "blocks.{L}.hook_attn_out",
    "mlp_out": "blocks.{L}.hook_mlp_out",
    "mlp_in": "blocks.{L}.hook_mlp_in",
    "attn_z": "blocks.{L}.attn.hook_z",
    "mlp_post": "blocks.{L}.mlp.hook_post",
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
}


@lru_cache(maxsize=8192)  # a catalogue of 140,000 SAEs names a few hundred hooks
def site_of(hook_name: str | None) -> tuple[str, int | None] | None:
    """``blocks.8.hook_resid_pre`` → ("resid_pre", 8); ``hook_embed`` → ("embed", None)."""
    if not hook_name:
        return None
    if hook_name in _GLOBAL_SITES:
        return _GLOBAL_SITES[hook_name], None
    match = _BLOCK_HOOK.match(hook_name)
    if match is None:
        return None
    site = _BLOCK_SITES.get(match.group(2))
    return (site, int(match.group(1))) if site else None


_LLAMA = {
    "resid_pre": ("model.layers.{L}", "input"),
    "resid_mid": ("model.layers.{L}.post_attention_layernorm", "input"),
    "resid_post": ("model.layers.{L}", "output"),
    "attn_out": ("model.layers.{L}.self_attn", "output"),
    "mlp_out": ("model.layers.{L}.mlp", "output"),
    "mlp_in": ("model.layers.{L}.mlp", "input"),
    "attn_z": ("model.layers.{L}.self_attn.o_proj", "input"),
    "mlp_post": ("model.layers.{L}.mlp.down_proj", "input"),
    "embed": ("model.embed_tokens", "output"),
}
_MOE = {k: v for k, v in _LLAMA.items() if k != "mlp_post"}
# Hybrid linear-attention models: full attention only on some layers.
_HYBRID_MOE = {k: v for k, v in _MOE.items() if k not in ("attn_out", "attn_z")}
_HYBRID = {**_HYBRID_MOE, "mlp_post": _LLAMA["mlp_post"]}
_GEMMA2 = {
    **_LLAMA,
    "resid_mid": ("model.layers.{L}.pre_feedforward_layernorm", "input"),
    "attn_out": ("model.layers.{L}.post_attention_layernorm", "output"),
    "mlp_out": ("model.layers.{L}.post_feedforward_layernorm", "output"),
    "mlp_in": ("model.layers.{L}.pre_feedforward_layernorm", "output"),
}
_GPT2 = {
    "resid_pre": ("transformer.h.{L}", "input"),
    "resid_mid": ("transformer.h.{L}.ln_2", "input"),
    "resid_post": ("transformer.h.{L}", "output"),
    "attn_out": ("transformer.h.{L}.attn", "output"),
    "mlp_out": ("transformer.h.{L}.mlp", "output"),
    "mlp_in": ("transformer.h.{L}.mlp", "input"),
    "attn_z": ("transformer.h.{L}.attn.c_proj", "input"),
    "mlp_post": ("transformer.h.{L}.mlp.c_proj", "input"),
    "embed": ("transformer.wte", "output"),
    "pos_embed": ("transformer.wpe", "output"),
}
_NEOX = {
    "resid_pre": ("gpt_neox.layers.{L}", "input"),
    "resid_post": ("gpt_neox.layers.{L}", "output"),
    "attn_out": ("gpt_neox.layers.{L}.attention", "output"),
    "mlp_out": ("gpt_neox.layers.{L}.mlp", "output"),
    "mlp_in": ("gpt_neox.layers.{L}.mlp", "input"),
    "attn_z": ("gpt_neox.layers.{L}.attention.dense", "input"),
    "mlp_post": ("gpt_neox.layers.{L}.mlp.dense_4h_to_h", "input"),
    "embed": ("gpt_neox.embed_in", "output"),
}

#: family → site → (module path template, side). A site missing here is undefined.
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "gpt2": _GPT2,
    "gpt-neox": _NEOX,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "qwen3-moe": _MOE,
    "gpt-oss": _MOE,
    "qwen3.5": _HYBRID,
    "qwen3.5-moe": _HYBRID_MOE,
    "gemma2": _GEMMA2,
    "gemma3": _GEMMA2,
}

#: Families whose MLP is a mixture of experts (mlp.hook_post has no single width).
MOE_FAMILIES = frozenset({"qwen3-moe", "gpt-oss", "qwen3.5-moe"})


@dataclass(frozen=True)
class HFHook:
    """Where a site lives in a Hugging Face model: a module path and which side of it."""

    module: str
    side: str  # "input" | "output"

    def __str__(self) -> str:
        return f"{self.module} ({self.side})"

    @property
    def name(self) -> str:
        """The dotted form Gemma Scope 2 publishes: ``model.layers.9.output``."""
        return f"{self.module}.{self.side}"

    def to_dict(self) -> dict[str, str]:
        return {"module": self.module, "side": self.side}


def hf_hook(family: str | None, hook_name: str | None) -> HFHook | None:
    """The Hugging Face module path and side of a TransformerLens hook, or None where the
    family or the site is unknown (or undefined for that family)."""
    layout = LAYOUTS.get(family or "")
    found = site_of(hook_name)
    if layout is None or found is None:
        return None
    site, layer = found
    entry = layout.get(site)
    if entry is None:
        return None
    template, side = entry
    if "{L}" in template and layer is None:
        return None
    return HFHook(template.replace("{L}", str(layer)), side)


def tl_hook_name(family: str | None, module: str, side: str) -> str | None:
    """The inverse of `hf_hook`: the TransformerLens name of a module path and side."""
    layout = LAYOUTS.get(family or "", {})
    match = re.search(r"\.(\d+)(?=\.|$)", module)
    layer = match.group(1) if match else None
    for site, (template, s) in layout.items():
        if s != side:
            continue
        if template.replace("{L}", layer or "") == module:
            return TL_NAME[site].replace("{L}", layer or "")
    return None


def site_width(shape: Any, hook_name: str | None) -> int | None:
    """The width of `hook_name` for a model with this shape (an object with d_model,
    n_heads, d_head, d_mlp and family attributes), or None where it is not defined."""
    found = site_of(hook_name)
    if found is None:
        return None
    kind = SITE_WIDTH[found[0]]
    if kind == "heads":
        if shape.n_heads is None or shape.d_head is None:
            return None
        return int(shape.n_heads) * int(shape.d_head)
    if kind == "d_mlp" and shape.family in MOE_FAMILIES:
        return None
    value = getattr(shape, kind)
    return int(value) if value is not None else None
