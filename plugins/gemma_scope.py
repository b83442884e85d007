"""Gemma Scope (Gemma 2, ``params.npz``) and Gemma Scope 2 (Gemma 3, ``params.safetensors``).

Generation 1 paths look like ``layer_12/width_16k/average_l0_82`` (or ``embedding/…``)
and the repository name says the site (res, mlp, att, transcoders). Generation 2 paths
look like ``resid_post_all/layer_3_width_262k_l0_big[_affine]`` and the folder says the
site. Everything below follows from those names.
"""

from __future__ import annotations

import re
from typing import Any

from saereg.catalog import Release, SAEEntry
from saereg.hookspecs import Format, hookimpl

from ._common import parse_width

_GS1_PATH = re.compile(r"^(?:layer_(\d+)|(embedding))/width_(\w+?)/(?:average_l0_\d+|canonical)$")
_GS2_PATH = re.compile(
    r"^(resid_post|attn_out|mlp_out|transcoder)(?:_all)?/"
    r"layer_(\d+)_width_(\w+?)_l0_(small|medium|big)(_affine)?(?:_seed_\d+)?$"
)
_GS1_MODEL = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att|transcoders)$")
_GS2_MODEL = re.compile(r"gemma-scope-2-(\d+[mb])-(pt|it)$")

# Gemma 2: residual width, and the width of the concatenated attention heads (hook_z).
_GEMMA2_DIMS = {"2b": (2304, 2048), "9b": (3584, 4096), "27b": (4608, 4608)}
# Gemma 3 widths confirmed from published weights; others are read from the file header.
_GEMMA3_DIMS = {"1b": (1152, 1024)}


class GemmaScopeFormat(Format):
    name = "gemma_scope"
    summary = "Gemma Scope 1 (params.npz) and Gemma Scope 2 (params.safetensors)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        repo = (release.repo_id or "").rsplit("/", 1)[-1]
        if _GS2_MODEL.search(repo):
            return self._describe_gs2(repo, entry)
        return self._describe_gs1(repo, entry)

    def _describe_gs1(self, repo: str, entry: SAEEntry) -> dict[str, Any]:
        model = _GS1_MODEL.search(repo)
        if not model:
            raise ValueError(
                f"repository {repo!r} is not a Gemma Scope repository "
                "(expected gemma-scope-{2b,9b,27b}-{pt,it}-{res,mlp,att,transcoders})"
            )
        match = _GS1_PATH.match(entry.path)
        if not match:
            raise ValueError(
                f"path {entry.path!r} does not follow Gemma Scope's "
                "layer_L/width_W/average_l0_N layout"
            )
        size, site = model.group(1), model.group(3)
        d_model, d_z = _GEMMA2_DIMS[size]
        layer = 0 if match.group(2) else int(match.group(1))
        out: dict[str, Any] = {
            "d_sae": parse_width(match.group(3)),
            "architecture": "jumprelu",
            "context_size": 1024,
            "normalize_activations": "none",
            "hook_layer": layer,
            "d_in": d_model,
        }
        if match.group(2):
            if site != "res":
                raise ValueError(f"embedding SAEs exist only in -res repositories, not {repo!r}")
            out["hook_name"] = "hook_embed"
        elif site == "res":
            out["hook_name"] = f"blocks.{layer}.hook_resid_post"
        elif site == "mlp":
            out["hook_name"] = f"blocks.{layer}.hook_mlp_out"
        elif site == "att":
            out.update(hook_name=f"blocks.{layer}.attn.hook_z", d_in=d_z)
        else:  # transcoders: RMSNorm-ed MLP input → MLP output
            out.update(
                hook_name=f"blocks.{layer}.ln2.hook_normalized",
                hook_name_out=f"blocks.{layer}.hook_mlp_out",
                architecture="jumprelu_transcoder",
                d_out=d_model,
            )
        return out

    def _describe_gs2(self, repo: str, entry: SAEEntry) -> dict[str, Any]:
        model = _GS2_MODEL.search(repo)
        assert model is not None
        match = _GS2_PATH.match(entry.path)
        if not match:
            raise ValueError(
                f"path {entry.path!r} does not follow Gemma Scope 2's "
                "SITE/layer_L_width_W_l0_SIZE layout"
            )
        site, layer, width, _, affine = match.groups()
        layer_n = int(layer)
        hf = f"model.layers.{layer_n}"
        out: dict[str, Any] = {
            "d_sae": parse_width(width),
            "architecture": "jumprelu",
            "context_size": 1024,
            "normalize_activations": "none",
            "hook_layer": layer_n,
        }
        d_model, d_z = _GEMMA3_DIMS.get(model.group(1), (None, None))
        if site == "resid_post":
            out.update(hook_name=f"blocks.{layer_n}.hook_resid_post", hf_hook_name=f"{hf}.output")
            if d_model:
                out["d_in"] = d_model
        elif site == "mlp_out":
            out.update(
                hook_name=f"blocks.{layer_n}.hook_mlp_out",
                hf_hook_name=f"{hf}.post_feedforward_layernorm.output",
            )
            if d_model:
                out["d_in"] = d_model
        elif site == "attn_out":
            out.update(
                hook_name=f"blocks.{layer_n}.attn.hook_z",
                hf_hook_name=f"{hf}.self_attn.o_proj.input",
            )
            if d_z:
                out["d_in"] = d_z
        else:
            out.update(
                hook_name=f"blocks.{layer_n}.hook_mlp_in",
                hook_name_out=f"blocks.{layer_n}.hook_mlp_out",
                hf_hook_name=f"{hf}.pre_feedforward_layernorm.output",
                architecture="jumprelu_skip_transcoder" if affine else "jumprelu_transcoder",
            )
            if d_model:
                out.update(d_in=d_model, d_out=d_model)
        return out


@hookimpl
def saereg_formats() -> list[Format]:
    return [GemmaScopeFormat()]
