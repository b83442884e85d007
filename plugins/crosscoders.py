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

``dictionary_learning_crosscoder``: dictionary_learning's ``CrossCoder`` and
``BatchTopKCrossCoder`` (the science-of-finetuning fork,
https://github.com/science-of-finetuning/dictionary_learning/blob/173f7facbe80f16c837e7b5e4dca78a50c000115/dictionary_learning/dictionary.py).
The entry's path is a folder holding ``config.json`` and either ``model_final.pt`` (the
trainer's save: a state dict, read with weights_only=True, beside ``{"trainer":
{"dict_class": "CrossCoder" | "BatchTopKCrossCoder", ...}}``) or ``model.safetensors``
(``push_to_hub``/``save_pretrained`` of its hub mixin, beside the constructor's
arguments ``activation_dim``, ``dict_size``, ``num_layers``, ``code_normalization``, …).
The trainer's intermediate saves (``trainSAE(save_steps=N)``: ``save_model(trainer,
f"checkpoint_{step}.pt", save_dir)``, the same state dict) beside that config.json are
crosscoders too: an entry's path may name one (``{folder}/checkpoint_{step}.pt``), and
detection lists them after the folder, in step order.
Tensors: ``encoder.weight [L, d, F]``, ``encoder.bias [F]``, ``decoder.weight [L, F, d]``,
``decoder.bias [L, d]``, optional ``code_normalization_id``, input-normalisation buffers
(``activation_mean``/``activation_std [L, d]``, ``activation_global_scale [L]``,
``target_rms``; NaN means none) and, for BatchTopK, ``k`` and a scalar ``threshold``.
Their math: f = ReLU(Σ_l x̃_l W_l + b), x̃ = (x - mean) · global_scale; BatchTopK at
inference keeps f_j where f_j · c_j > threshold, c the code normalization (CROSSCODER:
Σ_l ‖W_dec[l, j]‖; SAE: ‖W_dec[:, j]‖; MIXED: α_sae·SAE + α_cc·CROSSCODER; NONE: 1);
y_l = f W_dec[l] + b_dec[l], then y / (global_scale + 1e-8) + mean. Canonical: the
same tensors (W_dec as [F, L, d]), c as ``code_norm`` (computed with their ops in the
checkpoint's dtype), the threshold repeated per latent, the normalisation as
``activation_mean``/``activation_scale`` (saereg.sae.crosscoder).

**What is refused** (a clear error naming the field): DECOUPLED code normalization
(per-site latents and thresholds), ``encoder_layers``, ``num_decoder_layers`` other than
``num_layers``, a ``latent_processor``. A hub checkpoint's class is not recorded: one
saving ``threshold`` and ``k`` reads as a BatchTopKCrossCoder, unless a
``trainer_config.json`` beside it (as science-of-finetuning's ``push_dictionary_model``
uploads) names the class. The sites' hook names
come from the release entry (the files do not name them).
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

from ._common import in_folder
from ._dl_classes import CLASSES as SAE_CLASSES
from ._dl_classes import WEIGHTS
from ._dl_crosscoder import (
    DL_CONFIG,
    DL_HUB_WEIGHTS,
    DL_TRAINER_CONFIG,
    DL_TRAINER_WEIGHTS,
    checkpoints,
    dl_crosscoder,
    dl_file,
    hub_config,
    pushed_class,
    read_config,
    run_files,
    trainer_config,
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


class DictionaryLearningCrosscoderFormat(MultiLayerFormat):
    name = "dictionary_learning_crosscoder"
    kind = "crosscoder"
    summary = (
        "dictionary_learning CrossCoder / BatchTopKCrossCoder (config.json + model_final.pt "
        "or model.safetensors)"
    )

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        # science-of-finetuning's push_dictionary_model uploads the trainer's config.json
        # as trainer_config.json beside the hub mixin's files: it names the class
        return [
            RemoteFile(dl_file(entry, DL_CONFIG)),
            RemoteFile(dl_file(entry, DL_TRAINER_CONFIG), optional=True),
        ]

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        return {"kind": "crosscoder", "normalize_activations": "none"}

    def n_layers(self, release: Release, entry: SAEEntry, small_files: Mapping[str, Path]) -> int:
        """The hub config's num_layers, else the release's n_layers; 0 when neither says
        (the trainer's config.json does not record it: the weights tell, at conversion)."""
        _, cfg = read_config(entry, small_files)
        n = cfg.get("num_layers") if hub_config(cfg) else None
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            return n
        return entry.n_layers or 0

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding config.json beside model_final.pt (trainer) or
        model.safetensors (hub mixin), claimed only when config.json says so; and the
        trainer's checkpoint_{step}.pt beside such a config.json, each a crosscoder of
        its own (a run still training has no model_final.pt yet)."""
        found: dict[str, int | None] = {}
        read = []
        singles: set[str] = set()
        for weights in (DL_TRAINER_WEIGHTS, DL_HUB_WEIGHTS):
            for folder in folders_holding(listing, weights, DL_CONFIG):
                name = in_folder(folder, DL_CONFIG)
                cfg = read_small_json(read_small, name)
                read.append(name)
                if cfg is None:
                    continue
                trainer = cfg.get("trainer")
                named = trainer.get("dict_class") if isinstance(trainer, Mapping) else None
                if weights == DL_HUB_WEIGHTS and hub_config(cfg):
                    n = cfg.get("num_layers")
                elif weights == DL_TRAINER_WEIGHTS and trainer_config(cfg):
                    n = None  # the trainer's config does not record it
                elif weights == DL_TRAINER_WEIGHTS and named in SAE_CLASSES:
                    singles.add(named)  # a single SAE saved the trainer's way: say what it is
                    n = None
                else:
                    continue
                found[folder] = n if isinstance(n, int) and n >= 1 else None
        saved, configs = checkpoints(listing, read_small)
        read += [name for name in configs if name not in read]
        found.update(dict.fromkeys(saved))
        if not found:
            return None
        reason = "config.json of a dictionary_learning CrossCoder beside its weights"
        if saved:
            reason += f" ({len(saved)} of them checkpoint_STEP.pt)"
        confidence = 1.0
        if singles:
            note = (
                f"config.json names {' / '.join(sorted(singles))}, a dictionary_learning "
                f"single SAE saved as {DL_TRAINER_WEIGHTS}: format 'dictionary_learning' "
                f"reads it once the weights are renamed {WEIGHTS}"
            )
            confidence = 0.3 if len(found) == len(singles) else 1.0
            reason = note if confidence < 1 else f"{reason}; some folders: {note}"
        return Match(
            tuple(sorted(found)),
            confidence,
            reason,
            tuple(read),
            {path: n for path, n in found.items() if n is not None},
        )

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> list[RemoteFile]:
        _, cfg = read_config(entry, small_files)
        return [RemoteFile(_weights(entry, cfg), weights=True)]

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg_name, cfg = read_config(entry, local_files)
        weights = _weights(entry, cfg)
        config, tensors = dl_crosscoder(
            cfg_name,
            cfg,
            weights,
            local_files[weights],
            entry.hook_name,
            pushed_class(entry, local_files) if hub_config(cfg) else None,
        )
        if n_layers and config["n_layers"] != n_layers:
            raise CanonicalFileError(
                f"{weights} holds {config['n_layers']} sites but the dictionary has "
                f"n_layers={n_layers} (from {cfg_name} or the release)"
            )
        return config, tensors


def _weights(entry: SAEEntry, cfg: Mapping[str, Any]) -> str:
    """The weights file: the checkpoint the entry names, else the final save (the hub
    mixin's model.safetensors or the trainer's model_final.pt)."""
    checkpoint = run_files(entry.path)[1]
    if checkpoint is not None and trainer_config(cfg):
        return checkpoint
    if checkpoint is not None:
        raise CanonicalFileError(
            f"{checkpoint}: a training checkpoint, but {dl_file(entry, DL_CONFIG)} is not the "
            "trainer's config.json (trainer.dict_class CrossCoder or BatchTopKCrossCoder)"
        )
    return dl_file(entry, DL_HUB_WEIGHTS if hub_config(cfg) else DL_TRAINER_WEIGHTS)


@hookimpl
def saereg_formats() -> list[MultiLayerFormat]:
    return [CkkissaneCrosscoderFormat(), DictionaryLearningCrosscoderFormat()]
