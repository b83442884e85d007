"""Llama Scope (OpenMOSS/fnlp, Llama-3.1-8B) and its R1-distill sibling.

Base releases: folders ``Llama3_1-8B-Base-L{layer}{R|A|M|TC}-{8|32}x`` holding
``hyperparams.json`` and ``checkpoints/final.safetensors``. R1-distill: folders
``{dataset mix}/L{layer}R`` holding ``config.json`` and ``sae_weights.safetensors``.
Both were trained on dataset-wise normalized activations (normalize_activations
``expected_average_only_in``): the canonical SAE scales its input by the release's
norm_scaling_factor (normalization ``scale``) and reads the publisher's matrices as they are.

Transcoders (``TC``: ``hook_point_in`` blocks.L.ln2.hook_normalized, ``hook_point_out``
blocks.L.hook_mlp_out) carry two dataset-average norms, ``in`` and ``out``; their
threshold was computed (lm_saes ``post_process_topk_to_jumprelu_for_inference``) on the
module lm_saes' ``SparseAutoEncoder.from_config`` builds, so they are converted to exactly
that module (see `_transcoder_tensors`).
"""

from __future__ import annotations

import math
import re
import warnings
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
    folders_holding,
    hookimpl,
    read_small_json,
)

from ._tensors import as_float32, mapped, read_json, require, transposed
from ._tensors import safetensors_arrays as _arrays

_BASE = re.compile(r"^Llama3_1-8B-Base-L(\d+)(R|A|M|TC)-(8|32)x$")
_R1 = re.compile(r"^[^/]+/L(\d+)R$")
_D_MODEL = 4096
_HP, _FINAL = "hyperparams.json", "checkpoints/final.safetensors"
_R1_CFG, _R1_WEIGHTS = "config.json", "sae_weights.safetensors"
_SITE_HOOK = {"R": "hook_resid_post", "A": "hook_attn_out", "M": "hook_mlp_out"}


class LlamaScopeFormat(Format):
    name = "llama_scope"
    summary = "Llama Scope (hyperparams.json + checkpoints/final.safetensors) and R1-distill"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        common = {
            "architecture": "jumprelu",
            "context_size": 1024,
            "normalize_activations": "expected_average_only_in",
            "d_in": _D_MODEL,
        }
        base = _BASE.match(entry.path)
        if base:
            layer, site, factor = int(base.group(1)), base.group(2), int(base.group(3))
            out: dict[str, Any] = {**common, "hook_layer": layer, "d_sae": _D_MODEL * factor}
            if site == "TC":
                out.update(
                    hook_name=f"blocks.{layer}.ln2.hook_normalized",
                    hook_name_out=f"blocks.{layer}.hook_mlp_out",
                    architecture="jumprelu_transcoder",
                    d_out=_D_MODEL,
                    # both dataset-wise norms are folded into the weights at conversion
                    normalize_activations="none",
                )
            else:
                out["hook_name"] = f"blocks.{layer}.{_SITE_HOOK[site]}"
            return out
        r1 = _R1.match(entry.path)
        if r1:
            layer = int(r1.group(1))
            return {**common, "hook_layer": layer, "hook_name": f"blocks.{layer}.hook_resid_post"}
        raise ValueError(
            f"path {entry.path!r} follows neither Llama Scope's "
            "Llama3_1-8B-Base-L{L}{R|A|M|TC}-{8|32}x nor the R1-distill {mix}/L{L}R layout"
        )

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """Base folders with hyperparams.json (ids like l15r_8x, as upstream names them),
        and R1-distill folders with config.json and sae_weights.safetensors."""
        files = set(listing)
        out = []
        for path in sorted(files):
            folder = path.rsplit("/", 1)[0]
            base = _BASE.match(folder)
            if (
                base
                and path.endswith("/hyperparams.json")
                and f"{folder}/checkpoints/final.safetensors" in files
            ):
                layer, site, factor = base.groups()
                out.append({"id": f"l{layer}{site.lower()}_{factor}x", "path": folder})
            elif (
                _R1.match(folder)
                and path.endswith("/config.json")
                and f"{folder}/sae_weights.safetensors" in files
            ):
                out.append({"id": folder.replace("/", "_").lower(), "path": folder})
        return out

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Base layout: hyperparams.json + checkpoints/final.safetensors (Llama Scope's
        own file names: certain). R1-distill layout: config.json + sae_weights.safetensors
        whose config names OpenMOSS' hook_point_in (other formats never write it)."""
        paths = folders_holding(listing, _HP, _FINAL)
        read = []
        for folder in folders_holding(listing, _R1_CFG, _R1_WEIGHTS):
            path = f"{folder}/{_R1_CFG}" if folder else _R1_CFG
            read.append(path)
            raw = read_small_json(read_small, path)
            if raw is not None and "hook_point_in" in raw:
                paths.append(folder)
        if not paths:
            return None
        return Match(
            tuple(sorted(paths)),
            1.0,
            f"{_HP} + {_FINAL}, or {_R1_CFG} with hook_point_in + {_R1_WEIGHTS}",
            tuple(read),
        )

    # ------------------------------------------------------------------ weights

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        folder = entry.path.rstrip("/")
        base = [RemoteFile(f"{folder}/{_HP}"), RemoteFile(f"{folder}/{_FINAL}", weights=True)]
        r1 = [
            RemoteFile(f"{folder}/{_R1_CFG}"),
            RemoteFile(f"{folder}/{_R1_WEIGHTS}", weights=True),
        ]
        if _BASE.match(folder):
            return base
        if _R1.match(folder):
            return r1
        # Named otherwise (a local copy, an uncatalogued repository): whichever is there.
        return [RemoteFile(f.path, optional=True, weights=f.weights) for f in (*base, *r1)]

    def _read(
        self, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[bool, dict[str, Any], str]:
        folder = entry.path.rstrip("/")
        if f"{folder}/{_R1_CFG}" not in local_files and f"{folder}/{_HP}" not in local_files:
            raise CanonicalFileError(
                f"{folder} holds neither {_HP} (Llama Scope) nor {_R1_CFG} (R1-distill)"
            )
        if f"{folder}/{_HP}" in local_files:
            return (
                True,
                read_json(local_files[f"{folder}/hyperparams.json"], "hyperparams.json"),
                f"{folder}/checkpoints/final.safetensors",
            )
        return (
            False,
            read_json(local_files[f"{folder}/config.json"], "config.json"),
            f"{folder}/sae_weights.safetensors",
        )

    def _config(
        self,
        release: Release,
        entry: SAEEntry,
        base: bool,
        hp: Mapping[str, Any],
        shapes: Mapping[str, tuple[int, ...]],
        where: str,
    ) -> tuple[dict[str, Any], float | None]:
        """Canonical fields and (base releases) the threshold."""
        require(shapes, ("encoder.weight", "encoder.bias", "decoder.weight"), where)
        d_sae, d_in = shapes["encoder.weight"]
        if base and _is_transcoder(hp):
            return _transcoder_config(entry, hp, shapes, where), None
        if _is_transcoder(hp):
            raise CanonicalFileError(
                f"{entry.path}: {_R1_CFG} describes a transcoder "
                f"(hook_point_out={hp.get('hook_point_out')!r}); only the base layout's "
                f"transcoders ({_HP}) are converted"
            )
        if shapes["decoder.weight"] != (d_in, d_sae):
            raise CanonicalFileError(
                f"{where}: decoder.weight has shape "
                f"{list(shapes['decoder.weight'])}, expected [{d_in}, {d_sae}]"
            )
        if hp.get("use_glu_encoder"):
            raise CanonicalFileError(f"{entry.path}: GLU encoders are not supported")
        d_model = int(hp.get("d_model", d_in))
        threshold = None
        s_h = None
        if base:
            avg = (hp.get("dataset_average_activation_norm") or {}).get("in")
            if avg is None or hp.get("jump_relu_threshold") is None:
                raise CanonicalFileError(
                    f"{entry.path}/hyperparams.json lacks jump_relu_threshold "
                    "or dataset_average_activation_norm.in"
                )
            s_h = math.sqrt(d_model) / float(avg)
            threshold = float(hp["jump_relu_threshold"]) * s_h
        fold = entry.norm_scaling_factor
        if fold is None:
            fold = s_h
        elif s_h is not None and not math.isclose(fold, s_h, rel_tol=1e-3):
            warnings.warn(
                f"{release.name}/{entry.id}: the release's norm_scaling_factor {fold} differs from "
                f"sqrt(d_model)/average norm = {s_h} in hyperparams.json; using the release's",
                stacklevel=2,
            )
        config: dict[str, Any] = {
            "architecture": "jumprelu",
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": d_in,
            "apply_b_dec_to_input": bool(hp.get("apply_decoder_bias_to_pre_encoder", False)),
            # The dataset-wise norm is an input scale (not folded into the weights, so the
            # publisher's matrices can be read in place).
            "normalization": {"kind": "scale", "factor": float(fold)}
            if fold is not None
            else {"kind": "none"},
            "reshape": "none",
            "dtype": "float32",
            "hook_name": entry.hook_name or hp.get("hook_point_in"),
            "folded": [],
        }
        return config, threshold

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        base, hp, weights = self._read(entry, local_files)
        shapes = {n: s for n, (_, s) in tensor_shapes[weights].items()}
        return self._config(release, entry, base, hp, shapes, weights)[0]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch  # deferred: torch

        base, hp, weights = self._read(entry, local_files)
        arrays = _arrays(local_files[weights])
        shapes = {n: a.shape for n, a in arrays.items()}
        config, threshold = self._config(release, entry, base, hp, shapes, weights)
        if config.get("transcoder"):
            return config, _transcoder_tensors(hp, arrays, config)
        d_sae, d_in = shapes["encoder.weight"]
        tensors: dict[str, Any] = {
            "W_enc": as_float32(transposed(arrays["encoder.weight"])),
            "W_dec": as_float32(transposed(arrays["decoder.weight"])),
            "b_enc": as_float32(arrays["encoder.bias"]),
            "b_dec": as_float32(arrays["decoder.bias"])
            if "decoder.bias" in arrays
            else torch.zeros(d_in),
        }
        if base:
            assert threshold is not None
            tensors["threshold"] = torch.full((d_sae,), threshold, dtype=torch.float32)
        else:
            require(arrays, ("log_jumprelu_threshold",), weights)
            tensors["threshold"] = as_float32(mapped(arrays["log_jumprelu_threshold"], torch.exp))
        return config, tensors


def _is_transcoder(hp: Mapping[str, Any]) -> bool:
    return hp.get("hook_point_out") not in (None, hp.get("hook_point_in"))


def _norm_factors(hp: Mapping[str, Any], where: str) -> tuple[float, float]:
    """lm_saes' dataset-wise factors s = sqrt(d_model) / average norm, for in and out."""
    avg = hp.get("dataset_average_activation_norm") or {}
    if hp.get("norm_activation") != "dataset-wise" or "in" not in avg or "out" not in avg:
        raise CanonicalFileError(
            f"{where}: a Llama Scope transcoder needs norm_activation 'dataset-wise' and "
            "dataset_average_activation_norm with 'in' and 'out' "
            f"(found {hp.get('norm_activation')!r}, {sorted(avg)})"
        )
    root = math.sqrt(float(hp["d_model"]))
    return root / float(avg["in"]), root / float(avg["out"])


def _transcoder_config(
    entry: SAEEntry, hp: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: str
) -> dict[str, Any]:
    """Canonical fields of a transcoder: JumpReLU, no input normalization (both dataset
    norms are folded into the weights, see `_transcoder_tensors`)."""
    d_sae, d_in = shapes["encoder.weight"]
    d_out = shapes["decoder.weight"][0]
    if shapes["decoder.weight"] != (d_out, d_sae) or shapes.get("decoder.bias", (d_out,)) != (
        d_out,
    ):
        raise CanonicalFileError(
            f"{where}: decoder.weight has shape {list(shapes['decoder.weight'])}, "
            f"expected [d_out, {d_sae}]"
        )
    if "decoder.bias" not in shapes or hp.get("use_decoder_bias") is False:
        raise CanonicalFileError(f"{where}: a Llama Scope transcoder has decoder.bias")
    if hp.get("apply_decoder_bias_to_pre_encoder"):
        raise CanonicalFileError(
            f"{entry.path}/hyperparams.json: apply_decoder_bias_to_pre_encoder is set on a "
            "transcoder (its decoder bias lives in the output space)"
        )
    if hp.get("act_fn") != "jumprelu" or hp.get("jump_relu_threshold") is None:
        raise CanonicalFileError(
            f"{entry.path}/hyperparams.json: act_fn {hp.get('act_fn')!r}; only the published "
            "JumpReLU transcoders (act_fn 'jumprelu' with jump_relu_threshold) are converted"
        )
    if "d_model" not in hp:
        raise CanonicalFileError(f"{entry.path}/hyperparams.json lacks d_model")
    _norm_factors(hp, f"{entry.path}/hyperparams.json")
    return {
        "architecture": "jumprelu",
        "transcoder": True,
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_out,
        "apply_b_dec_to_input": False,
        "normalization": {"kind": "none"},
        "reshape": "none",
        "dtype": "float32",
        "hook_name": entry.hook_name or hp.get("hook_point_in"),
        "hook_name_out": entry.hook_name_out or hp.get("hook_point_out"),
        "folded": [
            "dataset-wise input norm sqrt(d_model)/in into W_enc, b_enc",
            "dataset-wise output norm sqrt(d_model)/out into W_dec, b_dec",
            "decoder norms into W_enc, b_enc (unit-norm W_dec rows)",
        ],
    }


def _transcoder_tensors(
    hp: Mapping[str, Any], arrays: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The module lm_saes' `SparseAutoEncoder.from_config` builds from these files
    (src/lm_saes/sae.py, OpenMOSS/Language-Model-SAEs@fdd5a4dd), in canonical form.

    Trained math, s_in = sqrt(d)/avg_in and s_out = sqrt(d)/avg_out:
    z = (s_in·x) @ encᵀ + b_enc, y = (topk(z) @ decᵀ + b_dec) / s_out. At load, lm_saes
    (1) `standardize_parameters_of_dataset_activation_scaling`: b_enc /= s_in,
    b_dec /= s_out, dec *= s_in/s_out (norm_activation becomes 'inference'), then
    (2) `transform_to_unit_decoder_norm` with n_i = ‖dec[:, i]‖ after (1): dec[:, i] /= n_i,
    enc[i] *= n_i, b_enc[i] *= n_i; the published scalar jump_relu_threshold θ applies to
    that pre-activation (`post_process_topk_to_jumprelu_for_inference` computed it there).

    The canonical module has one constant input scale that it also undoes on the output,
    so an input scale and a different output scale cannot both be expressed: both are
    folded into the weights here, exactly as lm_saes folds them (normalization 'none').
    A latent whose decoder column is all zeros (n_i = 0; lm_saes would divide by zero)
    gets zero encoder and decoder weights: it never fires, as its output is zero anyway.
    """
    import torch  # deferred: torch

    s_in, s_out = _norm_factors(hp, "hyperparams.json")
    enc = torch.as_tensor(arrays["encoder.weight"].load()).double()  # [d_sae, d_in]
    b_enc = torch.as_tensor(arrays["encoder.bias"].load()).double()
    dec = torch.as_tensor(arrays["decoder.weight"].load()).double()  # [d_out, d_sae]
    b_dec = torch.as_tensor(arrays["decoder.bias"].load()).double()
    dec = dec * (s_in / s_out)
    n = dec.norm(dim=0)  # [d_sae]
    alive = n > 0
    inv = torch.where(alive, 1.0 / torch.where(alive, n, 1.0), 0.0)
    return {
        "W_enc": (enc * n[:, None]).T.contiguous().float(),
        "b_enc": (b_enc / s_in * n).float(),
        "W_dec": (dec * inv).T.contiguous().float(),
        "b_dec": (b_dec / s_out).float(),
        "threshold": torch.full(
            (config["d_sae"],), float(hp["jump_relu_threshold"]), dtype=torch.float32
        ),
    }


@hookimpl
def saereg_formats() -> list[Format]:
    return [LlamaScopeFormat()]
