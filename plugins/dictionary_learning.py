"""saprmarks/dictionary_learning checkpoints: ``{path}/ae.pt`` + ``{path}/config.json``.

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
    SAEEntry,
    hookimpl,
    read_small_json,
)

from ._common import FolderFormat, in_folder
from ._dl_classes import (
    CONFIG,
    CROSSCODER_CLASSES,
    CROSSCODER_FORMAT,
    WEIGHTS,
    canonical_config,
    convert_state,
)
from ._tensors import read_json

_LAYER = re.compile(r"(?:^|/)resid_post_layer_(\d+)(?:_checkpoints)?/trainer_\d+(?:_step_\d+)?$")
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
        reason says how many are among single SAEs otherwise."""
        match = super().detect(listing, read_small)
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
        path = f"{entry.path.rstrip('/')}/{CONFIG}"
        return read_json(local_files[path], path)

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        """config.json names the class and its widths: enough without ae.pt."""
        config = canonical_config(self._config_json(entry, local_files), entry.path.rstrip("/"))
        return None if config is None else _catalogue_first(config, entry)

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = entry.path.rstrip("/")
        raw = self._config_json(entry, local_files)
        config, tensors = convert_state(raw, local_files[f"{folder}/{WEIGHTS}"], folder)
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
