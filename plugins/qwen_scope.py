"""Qwen Scope: TopK SAEs on Qwen3 / Qwen3.5 residual streams, ``layer{L}.sae.pt``.

The repository name carries the model, the width and k:
``Qwen/SAE-Res-{model}-W{N}K-L0_{k}``. Each file is a dict ``W_enc [d_sae, d_in]``,
``W_dec [d_in, d_sae]``, ``b_enc``, ``b_dec`` (both matrices [out, in]).

Math, from the model card's own example: h = x @ W_encᵀ + b_enc; keep the k largest h
*as they are* (exactly k latents non-zero, negative ones included); x̂ = f @ W_decᵀ + b_dec.
SAELens loads these as its topk SAE, which applies a ReLU to the k values; where that
differs (a negative value among the top k) we follow Qwen's code (`topk_relu: false`).
k comes from the release (the repository name's L0_{k}); no b_dec subtraction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saereg.formats import CanonicalFileError, Format, Release, SAEEntry, hookimpl

from ._pickled import Found, LinearPickleFormat, keys_of, relu_config

_REPO = re.compile(r"SAE-Res-(.+)-W(\d+)K-L0_(\d+)$")
_FILE = re.compile(r"^layer(\d+)\.sae\.pt$")
#: Residual width of each supported model.
MODEL_WIDTH = {
    "Qwen3-1.7B-Base": 2048,
    "Qwen3-8B-Base": 4096,
    "Qwen3-30B-A3B-Base": 2048,
    "Qwen3.5-2B-Base": 2048,
    "Qwen3.5-9B-Base": 4096,
    "Qwen3.5-27B": 5120,
    "Qwen3.5-35B-A3B-Base": 2048,
}


class QwenScopeFormat(LinearPickleFormat):
    name = "qwen_scope"
    keys = keys_of("W_enc", "W_dec", "b_enc", "b_dec", linear=True)
    summary = "Qwen Scope TopK SAEs (layer{L}.sae.pt)"
    file_name = _FILE

    def name_confidence(self, name: str) -> float:
        return 0.9  # ``.sae.pt`` is Qwen Scope's own suffix

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        repo = _REPO.search(release.repo_id or "")
        if not repo:
            raise ValueError(
                f"repository {release.repo_id!r} does not match Qwen Scope's "
                "SAE-Res-{model}-W{N}K-L0_{k} naming"
            )
        layer_match = _FILE.match(entry.path)
        if not layer_match:
            raise ValueError(f"path {entry.path!r} is not a Qwen Scope layer{{L}}.sae.pt file")
        layer = int(layer_match.group(1))
        out: dict[str, Any] = {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hf_hook_name": f"model.layers.{layer}",
            "hook_layer": layer,
            "d_sae": int(repo.group(2)) * 1024,
            "k": int(repo.group(3)),
            "architecture": "topk",
            "context_size": 1024,
            "normalize_activations": "none",
        }
        if repo.group(1) in MODEL_WIDTH:
            out["d_in"] = MODEL_WIDTH[repo.group(1)]
        return out

    def config(self, found: Found, local_files: Mapping[str, Path]) -> dict[str, Any]:
        k = found.entry.k
        if k is None:
            repo = _REPO.search(found.release.repo_id or "")
            if not repo:
                raise CanonicalFileError(
                    f"{found.entry.path}: a Qwen Scope TopK SAE, but its files do not say k "
                    "(how many latents it keeps; Qwen names it in the repository, "
                    "…-L0_{k}); pass k=N (CLI: --k N)"
                )
            k = int(repo.group(3))
        if not 1 <= k <= found.d_sae:
            raise CanonicalFileError(f"{found.entry.path}: k={k} does not fit d_sae={found.d_sae}")
        return {**relu_config(found), "architecture": "topk", "k": k, "topk_relu": False}


@hookimpl
def saereg_formats() -> list[Format]:
    return [QwenScopeFormat()]
