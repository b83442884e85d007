"""OpenAI's original GPT-2 small SAEs (``sparse_autoencoder``), as published on their
public blob storage (``sparse_autoencoder/paths.py``):

* v5: ``{location}_v5_{32k|128k}/autoencoders/{layer}.pt``, TopK(32) with per-token
  LayerNorm on the input (unbiased std, eps added to the std), 64-token contexts;
* v1 and v4: ``{location}/autoencoders/{layer}.pt`` and ``{location}_v4/…``, for
  ``mlp_post_act`` and ``resid_delta_mlp`` only: ReLU, 32,768 latents, inputs not layer
  normed ("Layer normed inputs: false" in paths.py).

Math (``model.py``): latents = act((x - pre_bias) @ encoderᵀ + latent_bias), recon =
latents @ decoderᵀ + pre_bias; `from_state_dict` normalizes only TopK SAEs' inputs.
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

from ._tensors import as_float32, require, torch_load, transposed

#: OpenAI's Autoencoder adds eps to the (unbiased) std in its LayerNorm.
LN_EPS = 1e-5

_PATH = re.compile(r"^(\w+?)(?:_v(4)|_v5_(32k|128k))?/autoencoders/(\d+)\.pt$")
#: The locations of the ReLU SAEs (v1, v4), per paths.py.
RELU_LOCATIONS = ("mlp_post_act", "resid_delta_mlp")
_LAYER_FILE = re.compile(r"(?:^|/)\d+\.pt$")
#: OpenAI location → TransformerLens hook (from the sparse_autoencoder README).
LOCATION_HOOK = {
    "resid_post_mlp": "hook_resid_post",
    "resid_post_attn": "hook_resid_mid",
    "resid_delta_mlp": "hook_mlp_out",
    "resid_delta_attn": "hook_attn_out",
    "mlp_post_act": "mlp.hook_post",
}


class OAIFormat(Format):
    name = "oai"
    summary = "OpenAI sparse_autoencoder GPT-2 small v5 .pt files (TopK + LayerNorm)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _PATH.match(entry.path)
        location, _, width, layer_text = match.groups() if match else ("", None, None, "0")
        if (
            not match
            or location not in LOCATION_HOOK
            or (width is None and location not in RELU_LOCATIONS)
        ):
            raise ValueError(
                f"path {entry.path!r} does not follow OpenAI's "
                "{location}_v5_{32k|128k}/autoencoders/{layer}.pt (or, for mlp_post_act and "
                "resid_delta_mlp, {location}[_v4]/autoencoders/{layer}.pt) layout"
            )
        layer = int(layer_text)
        common = {
            "hook_name": f"blocks.{layer}.{LOCATION_HOOK[location]}",
            "hook_layer": layer,
            "d_in": 3072 if location == "mlp_post_act" else 768,
        }
        if width is None:  # v1 / v4
            return {
                **common,
                "d_sae": 32768,
                "architecture": "relu",
                "normalize_activations": "none",
            }
        return {
            **common,
            "d_sae": 32768 if width == "32k" else 131072,
            "k": 32,
            "architecture": "topk",
            "normalize_activations": "layer_norm",
            "context_size": 64,
        }

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """``{layer}.pt`` files: certain under OpenAI's ``{location}_v{N}_{width}/
        autoencoders/`` folders, likely under any ``autoencoders/`` folder, a guess for
        a bare ``{layer}.pt`` (the pickle is checked when it loads)."""
        paths = sorted(p for p in listing if _LAYER_FILE.search(p))
        if not paths:
            return None
        if all((m := _PATH.match(p)) and m.group(1) in LOCATION_HOOK for p in paths):
            confidence, why = 1.0, "OpenAI's {location}_v{N}[_{width}]/autoencoders/{layer}.pt"
        elif all("autoencoders/" in p for p in paths):
            confidence, why = 0.8, "autoencoders/{layer}.pt, as OpenAI names them"
        else:
            confidence, why = 0.3, "a {layer}.pt file (OpenAI's name for its SAE pickles)"
        return Match(tuple(paths), confidence, why)

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(entry.path, weights=True)]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        state = torch_load(local_files[entry.path])
        where = entry.path
        require(state, ("pre_bias", "latent_bias", "encoder.weight"), where)
        match = _PATH.match(entry.path)
        relu_release = bool(match) and match.group(3) is None  # v1 / v4, per paths.py
        activation = state.get("activation", "ReLU" if relu_release else "TopK")
        if activation == "TopK":
            params = state.get("activation_state_dict") or {}
            k = params.get("k")
            if not isinstance(k, int):
                raise CanonicalFileError(f"{where}: TopK activation without an integer k")
            if params.get("postact_fn", "ReLU") != "ReLU":
                raise CanonicalFileError(
                    f"{where}: postact_fn {params['postact_fn']!r} is not "
                    "supported (OpenAI's v5 SAEs use ReLU)"
                )
            arch: dict[str, Any] = {"architecture": "topk", "k": k}
        elif activation == "ReLU":
            arch = {"architecture": "relu"}
        else:
            raise CanonicalFileError(f"{where}: activation {activation!r} is not supported")
        encoder = state["encoder.weight"]
        # A tied autoencoder stores no decoder: it decodes with the encoder's transpose.
        decoder = state.get("decoder.weight", encoder.T)
        d_sae, d_in = encoder.shape
        if tuple(decoder.shape) != (d_in, d_sae):
            raise CanonicalFileError(
                f"{where}: decoder.weight has shape {list(decoder.shape)}, "
                f"expected [{d_in}, {d_sae}]"
            )
        config = {
            **arch,
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": d_in,
            "apply_b_dec_to_input": True,
            # OpenAI's from_state_dict: "normalize = activation == 'TopK'".
            "normalization": {"kind": "layer_norm", "eps": LN_EPS}
            if activation == "TopK"
            else {"kind": "none"},
            "reshape": "none",
            "dtype": "float32",
        }
        tensors = {
            "W_enc": as_float32(transposed(encoder)),
            "W_dec": as_float32(transposed(decoder)),
            "b_enc": as_float32(state["latent_bias"]),
            "b_dec": as_float32(state["pre_bias"]),
        }
        return config, tensors


@hookimpl
def saereg_formats() -> list[Format]:
    return [OAIFormat()]
