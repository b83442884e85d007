"""Kissane & Krzyzanowski's GPT-2 small attention SAEs on ``hook_z``.

One pickle per layer (``gpt2-small_L{L}_Hcat_z_…_ds{d_sae}_….pt``) plus a sibling
``…_cfg.json`` (``act_size``, ``dict_size``, ``act_name``); the SAE reads the
concatenated heads (12 × 64 = 768): inputs [..., n_heads, d_head] are flattened, and
outputs restored, by the canonical ``reshape: hook_z``.

The pickle holds W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec already in
canonical orientation. Math (their training code, and SAELens' loader): f =
ReLU((z - b_dec) @ W_enc + b_enc), ẑ = f @ W_dec + b_dec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import (
    CanonicalFileError,
    Format,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
)

from ._pickled import Found, LinearPickleFormat, relu_config
from ._tensors import read_json

_FILE = re.compile(r"_L(\d+)_Hcat_z_.*_ds(\d+)_.*\.pt$")


class HookZFormat(LinearPickleFormat):
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

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """``…_L{L}_Hcat_z_…_ds{d_sae}_….pt`` beside its ``_cfg.json``: their own naming."""
        files = set(listing)
        paths = sorted(
            p for p in files if _FILE.search(p) and p.split(".pt")[0] + "_cfg.json" in files
        )
        if not paths:
            return None
        return Match(tuple(paths), 1.0, "…_Hcat_z_….pt beside its _cfg.json")

    @staticmethod
    def _cfg_path(entry: SAEEntry) -> str:
        return entry.path.split(".pt")[0] + "_cfg.json"

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(self._cfg_path(entry)), *super().files(release, entry)]

    def config(self, found: Found, local_files: Mapping[str, Path]) -> dict[str, Any]:
        entry = found.entry
        cfg_path = self._cfg_path(entry)
        raw = read_json(local_files[cfg_path], cfg_path)
        for key, value in (("act_size", found.d_in), ("dict_size", found.d_sae)):
            if raw.get(key) not in (None, value):
                raise CanonicalFileError(
                    f"{cfg_path} says {key}={raw[key]} but {entry.path} holds "
                    f"d_in={found.d_in}, d_sae={found.d_sae}"
                )
        hook = entry.hook_name or raw.get("act_name")
        if not hook or not str(hook).endswith("hook_z"):
            raise CanonicalFileError(
                f"{cfg_path}: act_name {raw.get('act_name')!r} is not an attention hook_z"
            )
        return {
            **relu_config(found),
            "apply_b_dec_to_input": True,
            "reshape": "hook_z",
            "hook_name": hook,
        }


@hookimpl
def saereg_formats() -> list[Format]:
    return [HookZFormat()]
