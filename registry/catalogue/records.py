"""The catalogue's records: a release and its SAEs as frozen dataclasses, and the naming
conventions (layers in hook names, width spellings) release files are read with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from types import MappingProxyType
from typing import Any

#: SAE fields a release's `defaults` may set for all of its entries.
INHERITABLE = (
    "architecture",
    "d_in",
    "d_out",
    "d_sae",
    "k",
    "context_size",
    "normalize_activations",
    "nested_widths",
    "dataset",
    "hook_name_out",
    "kind",
    "n_layers",
)

#: What an entry is: a single-hook SAE or transcoder, or a multi-layer dictionary.
KINDS = ("sae", "transcoder", "clt", "transcoder_set", "crosscoder")
#: The kinds `load_sae` returns as multi-layer objects (saereg.sae.clt, transcoder_set).
DICTIONARY_KINDS = ("clt", "transcoder_set", "crosscoder")
#: How each kind is shown (saereg list, docs, the catalogue page).
KIND_LABELS = {
    "sae": "SAE",
    "transcoder": "transcoder",
    "clt": "CLT",
    "transcoder_set": "transcoder set",
    "crosscoder": "crosscoder",
}


#: Fields every SAE must state (in the entry or through defaults), even if only as null.
REQUIRED_SAE_FIELDS = ("hook_name", "hook_layer", "d_sae", "context_size", "normalize_activations")


def plain_dict(obj: Any) -> dict[str, Any]:
    """A frozen dataclass as JSON-ready data (read-only mappings and tuples unwrapped)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


@dataclass(frozen=True)
class SAEEntry:
    """One SAE of a release, with the release defaults already applied."""

    id: str
    path: str
    hook_name: str | None = None
    hook_layer: int | None = None
    d_sae: int | None = None
    context_size: int | None = None
    normalize_activations: str | None = None
    architecture: str | None = None
    d_in: int | None = None
    d_out: int | None = None
    k: int | None = None
    hook_name_out: str | None = None
    hf_hook_name: str | None = None
    nested_widths: tuple[int, ...] | None = None
    dataset: str | None = None
    neuronpedia: str | None = None
    l0: float | None = None
    variance_explained: float | None = None
    norm_scaling_factor: float | None = None
    sha256: Mapping[str, str] | None = None
    #: None: "sae", or "transcoder" for a transcoder architecture (see `kind_of`).
    kind: str | None = None
    #: Multi-layer dictionaries: how many layers (hook_name is layer 0's input site).
    n_layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)

    @cached_property
    def resolved_kind(self) -> str:
        """What the entry is (see `kind_of`); worked out once per entry, as listing,
        indexing and the docs ask it several times for each of 140,000 SAEs."""
        return kind_of(self.kind, self.architecture)


SAE_FIELDS = tuple(f.name for f in fields(SAEEntry))


def kind_of(kind: str | None, architecture: str | None) -> str:
    """An entry's kind: the one it states, else what its architecture says."""
    if kind:
        return kind
    return "transcoder" if architecture and "transcoder" in architecture else "sae"


@dataclass(frozen=True)
class Release:
    """A release: where its files live, which format reads them, and its SAEs."""

    name: str
    format: str
    publisher: str
    model: str
    revision: str | None
    saes: tuple[SAEEntry, ...]
    repo_id: str | None = None
    base_url: str | None = None
    # Former names of repo_id (a repository that moved): hf: references with them resolve here.
    repo_aliases: tuple[str, ...] = ()
    license: str | None = None
    description: str | None = None
    links: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    model_from_pretrained_kwargs: Mapping[str, Any] | None = None
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_file: str | None = None

    def sae(self, sae_id: str) -> SAEEntry | None:
        for entry in self.saes:
            if entry.id == sae_id:
                return entry
        return None

    @property
    def location(self) -> str:
        """Human-readable origin of the files: the hub repo or the base URL."""
        return self.repo_id or self.base_url or "?"


_LAYER_IN_HOOK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)(?:\.|$)")


#: Publishers name power-of-two widths loosely ("65k" is 65536, "131k" is 131072).
POW2_WIDTH_NAMES = {
    "2k": 2**11,
    "4k": 2**12,
    "8k": 2**13,
    "16k": 2**14,
    "32k": 2**15,
    "64k": 2**16,
    "65k": 2**16,
    "128k": 2**17,
    "131k": 2**17,
    "256k": 2**18,
    "262k": 2**18,
    "512k": 2**19,
    "524k": 2**19,
    "1m": 2**20,
}


def layer_of_hook(hook_name: str | None) -> int | None:
    """The block index a TransformerLens or Hugging Face hook name points into.

    ``hook_embed`` (before block 0) counts as layer 0, as the SAELens tables do.
    """
    if not hook_name:
        return None
    match = _LAYER_IN_HOOK.search(hook_name)
    if match:
        return int(match.group(1))
    return 0 if hook_name in {"hook_embed", "hook_pos_embed", "embed_tokens"} else None


def parse_width(text: str) -> int:
    """'16k' → 16384, '65k' → 65536, '1m' → 1048576, '2pow14' → 16384, '24576' → 24576."""
    text = text.strip().lower()
    if text.startswith("2pow") and text[4:].isdigit():
        return 2 ** int(text[4:])
    if text in POW2_WIDTH_NAMES:
        return POW2_WIDTH_NAMES[text]
    if text.isdigit():
        return int(text)
    raise ValueError(f"unrecognised width {text!r}")
