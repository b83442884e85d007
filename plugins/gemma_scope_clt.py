"""Gemma Scope 2 cross-layer transcoders, one file per source layer.

``gemma_scope_2_clt``: the entry's path is the CLT's folder, holding
``params_layer_{L}.safetensors`` for L = 0 … n_layers - 1, each with ``w_enc [d_in,
d_sae]`` (already x @ W), ``b_enc [d_sae]``, ``threshold [d_sae]`` (JumpReLU, strict >),
``b_dec [d_out]``, ``w_dec [d_sae, n_layers, d_out]`` (a decoder to every layer; only
layers L … n_layers - 1 are read) and optionally ``affine_skip_connection [d_in, d_out]``
(skip = x @ affine). This is how circuit-tracer's `load_gemma_scope_2_clt` reads them
(w_dec[L][:, L:], W_skip = the affine matrix used as x @ W_skip). Canonical: w_enc as
it is, W_dec the slice [:, L:] and W_skip the transpose (x @ W_skipᵀ), all views read in
place. Sites default to Gemma Scope 2's transcoder sites (``hook_mlp_in`` → ``hook_mlp_out``,
as SAELens maps them); the release's layer-0 hook names override them.

**What is lost.** The decoders to earlier layers (w_dec[:, :L], which a CLT never uses)
are not kept. circuit-tracer reads every layer into memory; here each layer is its own
cache entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import (
    CanonicalFileError,
    Match,
    MultiLayerFormat,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
)

from ._tensors import require, safetensors_arrays, sliced, transposed, uniform_dtype

_LAYER_FILE = re.compile(r"^params_layer_(\d+)\.safetensors$")
_TENSORS = frozenset(("w_enc", "w_dec", "b_enc", "b_dec", "threshold", "affine_skip_connection"))


def _layer_file(entry: SAEEntry, layer: int) -> str:
    folder = entry.path.strip("/")
    name = f"params_layer_{layer}.safetensors"
    return name if folder in ("", ".") else f"{folder}/{name}"


def _per_layer(name: str | None, default: str, layer: int) -> str:
    """Layer `layer`'s site from layer 0's (``blocks.0.…``)."""
    base = name or default
    return re.sub(r"(^|\.)blocks\.0\.", rf"\1blocks.{layer}.", base, count=1)


class GemmaScope2CLTFormat(MultiLayerFormat):
    name = "gemma_scope_2_clt"
    kind = "clt"
    summary = "Gemma Scope 2 cross-layer transcoders (params_layer_{L}.safetensors)"

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return []

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        return {"kind": "clt", "architecture": "jumprelu", "normalize_activations": "none"}

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding ``params_layer_{L}.safetensors`` (a name only these CLTs use):
        one CLT per folder, as many layers as the highest L + 1 (a missing layer is an
        error naming its file when it loads; w_dec's decoder count is checked against
        the count in every layer file). Certain under Gemma Scope 2's ``clt/`` folder."""
        found: dict[str, list[int]] = {}
        for path in listing:
            folder, _, leaf = path.rpartition("/")
            match = _LAYER_FILE.match(leaf)
            if match:
                found.setdefault(folder, []).append(int(match.group(1)))
        if not found:
            return None
        counts = {folder: max(layers) + 1 for folder, layers in found.items()}
        named = all("clt" in folder.split("/") for folder in counts)
        return Match(
            tuple(sorted(counts)),
            1.0 if named else 0.9,
            "params_layer_{L}.safetensors (Gemma Scope 2 CLT: "
            + ", ".join(f"{n} layers in {f or '.'}" for f, n in sorted(counts.items()))
            + ")",
            n_layers=counts,
        )

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> list[RemoteFile]:
        return [RemoteFile(_layer_file(entry, layer), weights=True)]

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        name = _layer_file(entry, layer)
        arrays = safetensors_arrays(local_files[name])
        require(arrays, ("w_enc", "w_dec", "b_enc", "b_dec", "threshold"), name)
        unknown = sorted(set(arrays) - _TENSORS)
        if unknown:
            raise CanonicalFileError(
                f"{name} holds tensor(s) {', '.join(unknown)} that a Gemma Scope 2 CLT layer "
                f"does not have (expected: {', '.join(sorted(_TENSORS))})"
            )
        w_enc, w_dec = arrays["w_enc"], arrays["w_dec"]
        if len(w_enc.shape) != 2:
            raise CanonicalFileError(f"{name}: w_enc has shape {list(w_enc.shape)}; expected 2-D")
        d_in, d_sae = w_enc.shape
        if len(w_dec.shape) != 3 or w_dec.shape[0] != d_sae:
            raise CanonicalFileError(
                f"{name}: w_dec has shape {list(w_dec.shape)}; expected [{d_sae}, n_layers, "
                "d_out] (a decoder to every layer)"
            )
        if w_dec.shape[1] != n_layers:
            raise CanonicalFileError(
                f"{name}: w_dec has decoders to {w_dec.shape[1]} layers, but the CLT has "
                f"n_layers={n_layers} (stated by the release, or counted from the "
                "params_layer_{L} files of a folder); is a layer file missing, or the wrong one?"
            )
        tensors: dict[str, Any] = {
            "W_enc": w_enc,
            "b_enc": arrays["b_enc"],
            "threshold": arrays["threshold"],
            "W_dec": sliced(w_dec, 1, layer, n_layers),
            "b_dec": arrays["b_dec"],
        }
        if "affine_skip_connection" in arrays:
            tensors["W_skip"] = transposed(arrays["affine_skip_connection"])
        config = {
            "kind": "clt",
            "layer": layer,
            "n_layers": n_layers,
            "architecture": "jumprelu",
            "d_in": int(d_in),
            "d_sae": int(d_sae),
            "d_out": int(w_dec.shape[2]),
            "hook_names": [
                _per_layer(entry.hook_name, "blocks.0.hook_mlp_in", i) for i in range(n_layers)
            ],
            "hook_names_out": [
                _per_layer(entry.hook_name_out, "blocks.0.hook_mlp_out", i) for i in range(n_layers)
            ],
        }
        return config, uniform_dtype(config, tensors)


@hookimpl
def saereg_formats() -> list[MultiLayerFormat]:
    return [GemmaScope2CLTFormat()]
