"""ckkissane's crosscoders (crosscoder-model-diff-replication): one dictionary over the
same site of two models (Gemma 2 2B base and instruction-tuned).

``ckkissane_crosscoder``: the entry's path is a folder (named by the hook point, e.g.
``blocks.14.hook_resid_pre``) holding ``cfg.json`` (``d_in``, ``dict_size``,
``hook_point``, ``enc_dtype``, …) and ``cc_weights.pt``, a torch state dict (read with
weights_only=True) of ``W_enc [2, d_in, dict_size]``, ``W_dec [dict_size, 2, d_in]``,
``b_enc [dict_size]`` and ``b_dec [2, d_in]`` (the publisher's `CrossCoder` hard-codes two
models). Math (its encode/decode): f = ReLU(einsum(x [.., 2, d], W_enc) + b_enc),
y = einsum(f, W_dec) + b_dec; canonical tensors keep these orientations, sites first
(site 0 = model A, the base model; site 1 = model B, the fine-tuned one).

**What is lost.** Nothing of the math. The publisher's notebook folds per-model
activation scaling factors into the weights after loading; those are not published in
the files and are not applied.
"""

from __future__ import annotations

import json
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
    folders_holding,
    hookimpl,
    read_small_json,
)

from ._tensors import torch_load, uniform_dtype

N_MODELS = 2  # the publisher's CrossCoder hard-codes a pair of models
_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")


def _file(entry: SAEEntry, name: str) -> str:
    folder = entry.path.strip("/")
    return name if folder in ("", ".") else f"{folder}/{name}"


class CkkissaneCrosscoderFormat(MultiLayerFormat):
    name = "ckkissane_crosscoder"
    kind = "crosscoder"
    summary = "ckkissane crosscoders over two models (cfg.json + cc_weights.pt)"

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(_file(entry, "cfg.json"))]

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        return {"kind": "crosscoder", "n_layers": N_MODELS, "normalize_activations": "none"}

    def n_layers(self, release: Release, entry: SAEEntry, small_files: Mapping[str, Path]) -> int:
        return N_MODELS

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding ``cc_weights.pt`` beside ``cfg.json``; certain when cfg.json
        has the publisher's keys (``dict_size``, ``hook_point``)."""
        folders = folders_holding(listing, "cc_weights.pt", "cfg.json")
        if not folders:
            return None
        read = [_file(SAEEntry(id="-", path=f), "cfg.json") for f in folders]
        configs = [read_small_json(read_small, name) for name in read]
        sure = all(c is not None and {"dict_size", "hook_point"} <= set(c) for c in configs)
        return Match(
            tuple(folders),
            1.0 if sure else 0.8,
            "cc_weights.pt beside cfg.json"
            + (" with dict_size and hook_point (a crosscoder over 2 models)" if sure else ""),
            tuple(read),
            {folder: N_MODELS for folder in folders},
        )

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> list[RemoteFile]:
        return [RemoteFile(_file(entry, "cc_weights.pt"), weights=True)]

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg_name, weights_name = _file(entry, "cfg.json"), _file(entry, "cc_weights.pt")
        try:
            cfg = json.loads(local_files[cfg_name].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CanonicalFileError(f"{cfg_name} is not valid JSON: {exc}") from None
        state = torch_load(local_files[weights_name])
        missing = [n for n in _TENSORS if n not in state]
        if missing or set(state) - set(_TENSORS):
            raise CanonicalFileError(
                f"{weights_name} holds {sorted(state)}; a ckkissane crosscoder has exactly "
                f"{', '.join(_TENSORS)}"
            )
        w_enc = state["W_enc"]
        if len(w_enc.shape) != 3 or w_enc.shape[0] != N_MODELS:
            raise CanonicalFileError(
                f"{weights_name}: W_enc has shape {list(w_enc.shape)}; expected "
                f"[{N_MODELS}, d_in, dict_size]"
            )
        _, d_in, d_sae = (int(s) for s in w_enc.shape)
        expected = {
            "W_dec": (d_sae, N_MODELS, d_in),
            "b_enc": (d_sae,),
            "b_dec": (N_MODELS, d_in),
        }
        for name, shape in expected.items():
            if tuple(state[name].shape) != shape:
                raise CanonicalFileError(
                    f"{weights_name}: {name} has shape {list(state[name].shape)}, expected "
                    f"{list(shape)} (from W_enc {list(w_enc.shape)})"
                )
        for key, value in (("d_in", d_in), ("dict_size", d_sae)):
            if key in cfg and cfg[key] != value:
                raise CanonicalFileError(
                    f"{cfg_name} says {key}={cfg[key]} but {weights_name} holds {value}"
                )
        hook = cfg.get("hook_point") or entry.hook_name
        config = {
            "kind": "crosscoder",
            "layer": 0,
            "n_layers": N_MODELS,
            "architecture": "relu",
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": d_in,
            "hook_names": [hook] * N_MODELS,
            "hook_names_out": [hook] * N_MODELS,
        }
        tensors = {name: state[name] for name in _TENSORS}
        return config, uniform_dtype(config, tensors)


@hookimpl
def saereg_formats() -> list[MultiLayerFormat]:
    return [CkkissaneCrosscoderFormat()]
