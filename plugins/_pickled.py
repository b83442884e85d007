"""One pickled state dict holding a plain linear SAE (encoder, decoder, two biases).

Goodfire, qresearch (DeepSeek-R1), Qwen Scope and Kissane & Krzyzanowski all publish
this shape under different key names and orientations; `linear_sae_tensors` maps one
such file to canonical tensors, checking every key and shape against the file's own
d_in/d_sae, and streams the transposes from the memory-mapped pickle (one copy of a
matrix at a time, whatever the SAE's size).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from saereg.formats import (
    CanonicalFileError,
    Format,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
)

from ._tensors import as_float32, torch_load_mapped, transposed_mapped, uniform_dtype

#: What each canonical tensor is, for error messages.
_MEANING = {
    "W_enc": "encoder",
    "W_dec": "decoder",
    "b_enc": "encoder bias",
    "b_dec": "decoder bias",
}


@dataclass(frozen=True)
class Key:
    """Where a canonical tensor lives in the publisher's file. `linear`: stored as an
    nn.Linear weight [out, in], so the canonical tensor is its transpose."""

    name: str
    linear: bool = False


def keys_of(w_enc: str, w_dec: str, b_enc: str, b_dec: str, *, linear: bool) -> Mapping[str, Key]:
    """The publisher's names of W_enc, W_dec, b_enc, b_dec (matrices [out, in] if
    `linear`), read-only."""
    return MappingProxyType(
        {
            "W_enc": Key(w_enc, linear),
            "W_dec": Key(w_dec, linear),
            "b_enc": Key(b_enc),
            "b_dec": Key(b_dec),
        }
    )


def linear_sae_tensors(
    path: Path, where: str, keys: Mapping[str, Key]
) -> tuple[dict[str, Any], int, int, str]:
    """(canonical tensors, d_in, d_sae, dtype) of one pickled linear SAE.

    `keys` maps W_enc, W_dec, b_enc, b_dec to the publisher's keys. Extra entries in the
    file (training statistics, configs) are ignored; missing keys, non-tensors and
    shapes that disagree are errors naming the file and what was expected.
    """
    import torch  # deferred: torch

    state, mapped = torch_load_mapped(path)
    missing = [k.name for k in keys.values() if k.name not in state]
    if missing:
        raise CanonicalFileError(
            f"{where} lacks {', '.join(missing)}; expected the keys "
            f"{', '.join(k.name for k in keys.values())} (it has: {', '.join(sorted(state))})"
        )
    for canonical, key in keys.items():
        if not isinstance(state[key.name], torch.Tensor):
            raise CanonicalFileError(
                f"{where}: {key.name} ({_MEANING[canonical]}) is a "
                f"{type(state[key.name]).__name__}, not a tensor"
            )
    enc = keys["W_enc"]
    enc_shape = tuple(state[enc.name].shape)
    if len(enc_shape) != 2:
        raise CanonicalFileError(
            f"{where}: {enc.name} has shape {list(enc_shape)}; expected a 2-d encoder matrix"
        )
    d_sae, d_in = enc_shape if enc.linear else enc_shape[::-1]
    canonical_shapes = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_enc": (d_sae,),
        "b_dec": (d_in,),
    }
    tensors: dict[str, Any] = {}
    for canonical, key in keys.items():
        value = state[key.name]
        want = canonical_shapes[canonical]
        stored = want[::-1] if key.linear else want
        if tuple(value.shape) != stored:
            raise CanonicalFileError(
                f"{where}: {key.name} ({_MEANING[canonical]}) has shape {list(value.shape)}, "
                f"expected {list(stored)} (d_in={d_in}, d_sae={d_sae}, from {enc.name})"
            )
        tensors[canonical] = transposed_mapped(value, mapped) if key.linear else value
    config: dict[str, Any] = {}
    tensors = uniform_dtype(config, tensors)
    if config["dtype"] not in ("float32", "float16", "bfloat16", "float64"):
        tensors = {n: as_float32(t) for n, t in tensors.items()}
        config["dtype"] = "float32"
    return tensors, d_in, d_sae, config["dtype"]


class Found(NamedTuple):
    """What one pickled SAE turned out to be, with where it came from."""

    release: Release
    entry: SAEEntry
    d_in: int
    d_sae: int
    dtype: str


def relu_config(found: Found) -> dict[str, Any]:
    """The canonical config of a plain ReLU SAE that does not subtract b_dec."""
    return {
        "architecture": "relu",
        "d_in": found.d_in,
        "d_sae": found.d_sae,
        "d_out": found.d_in,
        "apply_b_dec_to_input": False,
        "normalization": {"kind": "none"},
        "reshape": "none",
        "dtype": found.dtype,
    }


class LinearPickleFormat(Format):
    """A format whose SAE is one pickle at `entry.path` holding a linear SAE under `keys`."""

    keys: Mapping[str, Key] = keys_of("W_enc", "W_dec", "b_enc", "b_dec", linear=False)
    #: The publisher's file names (searched in each file's name, not its folder).
    file_name: re.Pattern[str] | None = None

    def name_confidence(self, name: str) -> float:
        """How sure a file name alone makes this format (pickles are not opened to
        detect: their keys are checked when loading)."""
        return 0.5

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Every file named as this publisher names its pickles."""
        if self.file_name is None:
            return None
        pattern = self.file_name
        paths = sorted(p for p in listing if pattern.search(p.rpartition("/")[2]))
        if not paths:
            return None
        confidence = min(self.name_confidence(p.rpartition("/")[2]) for p in paths)
        return Match(
            tuple(paths),
            confidence,
            f"file name matches {pattern.pattern} (a pickled state dict: its keys are "
            "checked when it loads)",
        )

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(entry.path, weights=True)]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors, d_in, d_sae, dtype = linear_sae_tensors(
            local_files[entry.path], entry.path, self.keys
        )
        found = Found(release, entry, d_in, d_sae, dtype)
        return self.config(found, local_files), tensors

    def config(self, found: Found, local_files: Mapping[str, Path]) -> dict[str, Any]:
        """The canonical config of what was found (override per format)."""
        return relu_config(found)
