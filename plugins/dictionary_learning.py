"""saprmarks/dictionary_learning checkpoints: ``{path}/ae.pt`` + ``{path}/config.json``.

``trainSAE(save_steps=[...])`` also writes intermediate checkpoints,
``{path}/checkpoints/ae_{step}.pt`` (``torch.save`` of the same state dict as ``ae.pt`` at
that step, biases scaled back by the norm factor as the final save does): an entry whose
path is such a file reads it with the trainer's ``{path}/config.json``, with the same
math. Detection lists each one as an SAE of the trainer's folder, after the final ae.pt;
a run still training (config.json and checkpoints, no ae.pt yet) lists its checkpoints.

The dictionary class named in ``config.json`` (``trainer.dict_class``) decides how the
state dict in ``ae.pt`` maps to the canonical SAE; see ``_dl_classes`` for each class's
math as the publisher's package (dictionary-learning 0.1.0) computes it.

Paths look like ``{sweep}/resid_post_layer_{L}[_checkpoints]/trainer_{N}[_step_S]``;
sweep names carry the width (``width-2pow14``), the architecture and sometimes the
context length (``ctx128``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import (
    Format,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
    read_small_json,
)

from ._common import FolderFormat, in_folder
from ._dl_classes import (
    CLASSES,
    CONFIG,
    CROSSCODER_CLASSES,
    CROSSCODER_FORMAT,
    WEIGHTS,
    canonical_config,
    convert_state,
)
from ._tensors import read_json

_LAYER = re.compile(
    r"(?:^|/)resid_post_layer_(\d+)(?:_checkpoints)?/trainer_\d+(?:_step_\d+)?"
    r"(?:/checkpoints/ae_\d+\.pt)?$"
)
#: trainSAE's intermediate checkpoint, in the trainer's folder (group 1, may be empty).
_CHECKPOINT = re.compile(r"^(?:(.+)/)?checkpoints/ae_(\d+)\.pt$")
_WIDTH = re.compile(r"width-2pow(\d+)")
_CTX = re.compile(r"ctx(\d+)")
# Sweep-name token → architecture at inference (BatchTopK/Matryoshka save as JumpReLU).
_ARCH_TOKENS = (
    ("matryoshka", "jumprelu"),
    ("batchtopk", "jumprelu"),
    ("batch_top_k", "jumprelu"),
    ("jumprelu", "jumprelu"),
    ("topk", "topk"),
    ("gated", "gated"),
    ("vanilla", "relu"),
    ("standard", "relu"),
    ("panneal", "relu"),
)
_D_MODEL = {"gemma-2-2b": 2304, "pythia-70m-deduped": 512}


def sae_files(path: str) -> tuple[str, str]:
    """(the trainer's folder, the weights file) of an entry path: a folder holding ae.pt,
    or one of its checkpoints/ae_{step}.pt (whose config.json is the folder's)."""
    checkpoint = _CHECKPOINT.match(path.strip("/"))
    if checkpoint is not None:
        return checkpoint.group(1) or "", path.strip("/")
    folder = path.rstrip("/")
    return folder, in_folder(folder, WEIGHTS)


def _step(path: str) -> int:
    match = _CHECKPOINT.match(path)
    return int(match.group(2)) if match else -1


class DictionaryLearningFormat(FolderFormat):
    name = "dictionary_learning"
    summary = "saprmarks/dictionary_learning (ae.pt + config.json)"
    config_file, weights_file = CONFIG, WEIGHTS

    def config_says(self, raw: dict[str, Any]) -> bool | None:
        """dictionary_learning's config.json holds the trainer's settings under "trainer"."""
        return isinstance(raw.get("trainer"), dict) and "dict_class" in raw["trainer"]

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """ae.pt beside config.json (see FolderFormat.detect); a folder whose config.json
        names a crosscoder class is reported as what it is, with the way to load it: it
        is claimed at 0.3 when every folder found is one (loading it explains), and the
        reason says how many are among single SAEs otherwise. Each checkpoints/ae_{step}.pt
        beside a config.json that names a single-SAE class is an SAE too (see
        `_with_checkpoints`)."""
        match = self._crosscoders(super().detect(listing, read_small), read_small)
        return self._with_checkpoints(match, listing, read_small)

    def _crosscoders(self, match: Match | None, read_small: ReadSmall) -> Match | None:
        if match is None:
            return None
        crosscoders = set()
        for folder in match.paths:
            raw = read_small_json(read_small, in_folder(folder, CONFIG)) or {}
            trainer = raw.get("trainer")
            name = trainer.get("dict_class") if isinstance(trainer, dict) else None
            if name in CROSSCODER_CLASSES:
                crosscoders.add((folder, name))
        if not crosscoders:
            return match
        classes = " / ".join(sorted({name for _, name in crosscoders}))
        note = (
            f"config.json names {classes}, a dictionary_learning crosscoder saved as "
            f"{WEIGHTS}: format {CROSSCODER_FORMAT!r} reads it once {WEIGHTS} is renamed "
            "model_final.pt"
        )
        if len(crosscoders) == len(match.paths):
            return Match(match.paths, 0.3, f"{CONFIG} + {WEIGHTS}, but {note}", match.read)
        reason = f"{match.reason}; {len(crosscoders)} of the {len(match.paths)}: {note}"
        return Match(match.paths, match.confidence, reason, match.read)

    def _with_checkpoints(
        self, match: Match | None, listing: Sequence[str], read_small: ReadSmall
    ) -> Match | None:
        """`match` plus every checkpoints/ae_{step}.pt whose folder's config.json names
        one of the single-SAE classes (read to be sure: no guess from a file name), in
        step order after the folders."""
        by_folder: dict[str, list[str]] = {}
        files = set(listing)
        for path in listing:
            checkpoint = _CHECKPOINT.match(path)
            if checkpoint is not None and in_folder(checkpoint.group(1) or "", CONFIG) in files:
                by_folder.setdefault(checkpoint.group(1) or "", []).append(path)
        found, read = [], list(match.read) if match is not None else []
        for folder, paths in sorted(by_folder.items()):
            config = in_folder(folder, CONFIG)
            if config not in read:
                read.append(config)
            raw = read_small_json(read_small, config) or {}
            trainer = raw.get("trainer")
            if isinstance(trainer, dict) and trainer.get("dict_class") in CLASSES:
                found += sorted(paths, key=_step)
        if not found:
            return match
        what = f"{len(found)} checkpoints/ae_STEP.pt beside the trainer's {CONFIG}"
        if match is None:
            return Match(tuple(found), 1.0, f"{what} (no final {WEIGHTS} yet)", tuple(read))
        paths = (*match.paths, *found)
        return Match(paths, match.confidence, f"{match.reason}; {what}", tuple(read))

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        """The folder's config.json and ae.pt; for a checkpoint, the trainer folder's
        config.json and the checkpoint."""
        folder, weights = sae_files(entry.path)
        return [RemoteFile(in_folder(folder, CONFIG)), RemoteFile(weights, weights=True)]

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _LAYER.search(entry.path)
        if not match:
            raise ValueError(
                f"path {entry.path!r} does not end in resid_post_layer_L/trainer_N "
                "(dictionary_learning layout)"
            )
        layer = int(match.group(1))
        out: dict[str, Any] = {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "normalize_activations": "none",
        }
        names = f"{release.name} {entry.path} {release.repo_id or ''}"
        width = _WIDTH.search(names)
        if width:
            out["d_sae"] = 2 ** int(width.group(1))
        ctx = _CTX.search(names)
        if ctx:
            out["context_size"] = int(ctx.group(1))
        lowered = entry.path.split("/", 1)[0].lower() + " " + release.name.lower()
        for token, arch in _ARCH_TOKENS:
            if token in lowered:
                out["architecture"] = arch
                break
        if release.model in _D_MODEL:
            out["d_in"] = _D_MODEL[release.model]
        return out

    def _config_json(self, entry: SAEEntry, local_files: Mapping[str, Path]) -> dict[str, Any]:
        path = in_folder(sae_files(entry.path)[0], CONFIG)
        return read_json(local_files[path], path)

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        """config.json names the class and its widths: enough without ae.pt."""
        folder = sae_files(entry.path)[0]
        config = canonical_config(self._config_json(entry, local_files), folder)
        return None if config is None else _catalogue_first(config, entry)

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder, weights = sae_files(entry.path)
        raw = self._config_json(entry, local_files)
        config, tensors = convert_state(raw, local_files[weights], folder, weights)
        return _catalogue_first(config, entry), tensors


def _catalogue_first(config: dict[str, Any], entry: SAEEntry) -> dict[str, Any]:
    """config.json's context length and hook only where the release states none."""
    if entry.context_size is not None:
        config.pop("context_size", None)
    if entry.hook_name is not None or entry.hook_layer is not None:
        config.pop("hook_name", None)
        config.pop("hook_layer", None)
    return config


@hookimpl
def saereg_formats() -> list[Format]:
    return [DictionaryLearningFormat()]
