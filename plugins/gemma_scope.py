"""Gemma Scope (Gemma 2, ``params.npz``) and Gemma Scope 2 (Gemma 3, ``params.safetensors``).

Generation 1 paths look like ``layer_12/width_16k/average_l0_82`` (or ``embedding/…``)
and the repository name says the site (res, mlp, att, transcoders). Generation 2 paths
look like ``resid_post_all/layer_3_width_262k_l0_big[_affine]`` and the folder says the
site. Everything below follows from those names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import (
    FLOAT_DTYPES,
    CanonicalFileError,
    Format,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
)

from ._common import parse_width
from ._tensors import (
    npz_arrays,
    read_json,
    relu_jump_threshold,
    require,
    safetensors_arrays,
    scaled,
    transposed,
)

_GS1_PATH = re.compile(r"^(?:layer_(\d+)|(embedding))/width_(\w+?)/(?:average_l0_\d+|canonical)$")
_GS2_PATH = re.compile(
    r"^(resid_post|attn_out|mlp_out|transcoder)(?:_all)?/"
    r"layer_(\d+)_width_(\w+?)_l0_(small|medium|big)(_affine)?(?:_seed_\d+)?$"
)
_WEIGHTS = ("params.npz", "params.safetensors")
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

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """Folders holding params.npz (generation 1) or params.safetensors (generation 2)
        whose path follows the layout; the id is the path."""
        gen2 = bool(_GS2_MODEL.search(repo_id.rsplit("/", 1)[-1]))
        weights, layout = ("params.safetensors", _GS2_PATH) if gen2 else ("params.npz", _GS1_PATH)
        folders = sorted(p[: -len(weights) - 1] for p in listing if p.endswith(f"/{weights}"))
        return [{"id": f, "path": f} for f in folders if layout.match(f)]

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding params.npz (generation 1) or params.safetensors (generation 2):
        file names no other format uses, certain when the folder is named as Gemma Scope
        names its SAEs, else likely."""
        folders = sorted(
            {p.rpartition("/")[0] for p in listing if p.rpartition("/")[2] in _WEIGHTS}
        )
        if not folders:
            return None
        named = all(_GS1_PATH.search(f) or _GS2_PATH.search(f) for f in folders)
        return Match(
            tuple(folders),
            1.0 if named else 0.9,
            "params.npz (Gemma Scope) or params.safetensors (Gemma Scope 2)"
            + ("" if named else ", in a folder not named as Gemma Scope names its SAEs"),
        )

    # ------------------------------------------------------------------ weights

    @staticmethod
    def _generation(release: Release) -> int:
        """1 or 2 from the repository's name; 0 when it names neither (a local folder or
        an uncatalogued repository): then the file that is there decides."""
        repo = (release.repo_id or "").rsplit("/", 1)[-1]
        if _GS2_MODEL.search(repo):
            return 2
        return 1 if _GS1_MODEL.search(repo) else 0

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        folder = entry.path.rstrip("/")
        gen = self._generation(release)
        gen1 = [RemoteFile(f"{folder}/params.npz", weights=True, optional=gen == 0)]
        gen2 = [
            RemoteFile(f"{folder}/config.json", optional=True),
            RemoteFile(f"{folder}/params.safetensors", weights=True, optional=gen == 0),
        ]
        return gen1 if gen == 1 else gen2 if gen == 2 else gen1 + gen2

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = entry.path.rstrip("/")
        if f"{folder}/params.npz" in local_files:
            arrays = npz_arrays(local_files[f"{folder}/params.npz"])
            config, tensors = self._gs1(release, entry, arrays)
        else:
            arrays = safetensors_arrays(local_files[f"{folder}/params.safetensors"])
            raw = self._gs2_raw(local_files.get(f"{folder}/config.json"))
            shapes = {n: (a.dtype, a.shape) for n, a in arrays.items()}
            config = self._gs2_config(release, entry, raw, shapes)
            tensors = self._gs2_tensors(arrays)
        # Gemma Scope's JumpReLU is ReLU(h) · 1[h > θ] (its reference code and SAELens)
        tensors["threshold"] = relu_jump_threshold(tensors["threshold"])
        return config, tensors

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        folder = entry.path.rstrip("/")
        if f"{folder}/params.safetensors" not in tensor_shapes:
            return None  # npz: shapes are known only from the archive itself
        shapes = {
            n: (FLOAT_DTYPES.get(d, d), s)
            for n, (d, s) in tensor_shapes[f"{folder}/params.safetensors"].items()
        }
        raw = self._gs2_raw(local_files.get(f"{folder}/config.json"))
        return self._gs2_config(release, entry, raw, shapes)

    @staticmethod
    def _normalized_keys(arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Gemma Scope files spell the weights W_enc or w_enc; canonical names are W_*."""
        out = {}
        for name, value in arrays.items():
            key = "W_" + name[2:] if name.startswith("w_") else name
            out[key] = value
        return out

    def _gs1(
        self, release: Release, entry: SAEEntry, arrays: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors = self._normalized_keys(arrays)
        scaling = tensors.pop("scaling_factor", None)
        if scaling is not None:
            import numpy as np  # deferred: numpy

            if not np.all(scaling.load() == 1):
                raise CanonicalFileError(
                    f"{entry.path}/params.npz has a non-trivial "
                    "scaling_factor, which Gemma Scope never publishes"
                )
        shapes = {n: t.shape for n, t in tensors.items()}
        config, _ = self._jumprelu_config(
            release, entry, shapes, tensors["W_enc"].dtype, f"{entry.path}/params.npz"
        )
        d_in = config["d_in"]
        config["folded"] = []
        if config["hook_name"] == "hook_embed":
            # Gemma multiplies token embeddings by sqrt(d_model); these SAEs were trained on
            # unscaled embeddings. b_dec is left as published.
            root = math.sqrt(d_in)
            tensors["W_enc"] = scaled(tensors["W_enc"], 1.0 / root)
            tensors["W_dec"] = scaled(tensors["W_dec"], root)
            config["folded"].append(f"embedding scale: W_enc/sqrt({d_in}), W_dec*sqrt({d_in})")
        return config, tensors

    def _jumprelu_config(
        self,
        release: Release,
        entry: SAEEntry,
        shapes: Mapping[str, tuple[int, ...]],
        dtype: str,
        where: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What both generations share: JumpReLU, no input normalization, no b_dec
        subtraction; site, hooks and transcoder-ness from the path conventions."""
        require(shapes, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), where)
        d_in, d_sae = shapes["W_enc"]
        try:
            derived = self.describe(release, entry)
        except ValueError:  # not named as Gemma Scope names its SAEs: what the entry says
            derived = {}
        hooks = self._hooks(entry, derived)
        config: dict[str, Any] = {
            "architecture": "jumprelu",
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": shapes["W_dec"][-1],
            "apply_b_dec_to_input": False,
            "normalization": {"kind": "none"},
            "reshape": "hook_z" if (hooks["hook_name"] or "").endswith("hook_z") else "none",
            "transcoder": hooks["hook_name_out"] is not None or shapes["W_dec"][-1] != d_in,
            "dtype": dtype,
            **hooks,
        }
        return config, derived

    @staticmethod
    def _hooks(entry: SAEEntry, derived: Mapping[str, Any]) -> dict[str, Any]:
        """Hook fields from the release, else from the path conventions."""
        return {
            "hook_name": entry.hook_name or derived.get("hook_name"),
            "hook_name_out": entry.hook_name_out or derived.get("hook_name_out"),
            "hook_layer": entry.hook_layer
            if entry.hook_layer is not None
            else derived.get("hook_layer"),
        }

    @staticmethod
    def _gs2_raw(path: Path | None) -> dict[str, Any]:
        return read_json(path, "config.json") if path is not None else {}

    def _gs2_config(
        self,
        release: Release,
        entry: SAEEntry,
        raw: Mapping[str, Any],
        shapes: Mapping[str, tuple[str, tuple[int, ...]]],
    ) -> dict[str, Any]:
        where = f"{entry.path}/params.safetensors"
        named = self._normalized_keys(shapes)
        arch = raw.get("architecture", "jump_relu")
        if arch != "jump_relu":
            raise CanonicalFileError(
                f"{entry.path}/config.json: architecture {arch!r} is not "
                "supported (Gemma Scope 2 publishes jump_relu)"
            )
        dtypes = {d for d, _ in named.values()}
        config, derived = self._jumprelu_config(
            release,
            entry,
            {n: s for n, (_, s) in named.items()},
            dtypes.pop() if len(dtypes) == 1 else "float32",
            where,
        )
        config["hf_hook_name"] = raw.get("hf_hook_point_in") or derived.get("hf_hook_name")
        if raw.get("type") == "transcoder" or "affine_skip_connection" in named:
            config["transcoder"] = True
        if raw.get("affine_connection") and "affine_skip_connection" not in named:
            raise CanonicalFileError(
                f"{where}: config.json declares an affine connection but "
                "the file has no affine_skip_connection tensor"
            )
        return config

    def _gs2_tensors(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        tensors = self._normalized_keys(arrays)
        skip = tensors.pop("affine_skip_connection", None)
        if skip is not None:  # stored [d_in, d_out]; canonical W_skip is [d_out, d_in]
            tensors["W_skip"] = transposed(skip)
        return tensors


@hookimpl
def saereg_formats() -> list[Format]:
    return [GemmaScopeFormat()]
