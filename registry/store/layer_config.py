"""One layer of a multi-layer dictionary, as a canonical file (no torch here).

A cross-layer transcoder (CLT) or a transcoder set is stored one file per source layer,
so that one layer loads without reading (or downloading) any other: circuit-tracer's
sets reach 57–160 GiB. Each file is a canonical safetensors file like a single SAE's
(config as JSON in the header metadata, under ``saereg_layer``; written atomically with a
tensor digest; in place on the publisher's safetensors where only views are needed, see
in_place.py), holding layer ``layer`` of ``n_layers``:

* ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, optional ``threshold [d_sae]`` (jumprelu):
  the encoder reading this layer's input site;
* ``b_dec [d_out]``: the bias of this layer's output (its reconstruction);
* ``W_dec``: for a CLT ``[d_sae, n_layers - layer, d_out]``, the decoders from this
  layer's latents to target layers ``layer, layer + 1, …, n_layers - 1`` (circuit-tracer's
  layout, kept as is so it maps in place); for a transcoder set ``[d_sae, d_out]``;
* optional ``W_skip [d_out, d_in]``: the affine skip path, ``x @ W_skipᵀ``.

A crosscoder (one dictionary over several sites: every latent reads every site) is one
file, "layer" 0 of ``n_layers`` sites: ``W_enc [n, d_in, d_sae]``, ``b_enc [d_sae]``,
``W_dec [d_sae, n, d_out]``, ``b_dec [n, d_out]``, ``threshold [d_sae]`` where jumprelu,
and optional ``code_norm [d_sae]``, ``activation_mean [n, d_in]``, ``activation_scale [n]``
(see saereg.sae.crosscoder for their math).

The config (schemas/dictionary.v1.json) repeats what the whole dictionary is (kind,
n_layers, widths, hooks of every layer) so that any one file describes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from saereg.catalogue.records import plain_dict
from saereg.catalogue.release_dirs import builtin_schema_dir
from saereg.store.canonical import shape_problems, write_safetensors
from saereg.store.in_place import referenced_dtypes, referenced_shapes
from saereg.store.sae_config import LAYER_METADATA_KEY, ConfigError, schema_problems
from saereg.store.tensors import CanonicalFileError, LazyArray, read_header, tensor_shapes

LAYER_CONFIG_VERSION = 1
#: The kinds of multi-layer dictionary stored in layer files (a crosscoder, whose
#: latents read every site, is one file: "layer" 0 of its n_layers sites).
LAYERED_KINDS = ("clt", "transcoder_set", "crosscoder")
#: What joins a dictionary's SAE id and a layer number in a layer file's cache id.
LAYER_ID_SEP = "/layer_"


def layer_id(sae_id: str, layer: int) -> str:
    """The cache id of one layer file of the dictionary `sae_id` (``clt/layer_3``)."""
    return f"{sae_id}{LAYER_ID_SEP}{layer}"


@dataclass(frozen=True)
class LayerConfig:
    """Validated config of one layer file of a multi-layer dictionary."""

    kind: str
    layer: int
    n_layers: int
    architecture: str
    d_in: int
    d_sae: int
    d_out: int
    dtype: str
    source: Mapping[str, Any]
    hook_names: tuple[str | None, ...]
    hook_names_out: tuple[str | None, ...]
    config_version: int = LAYER_CONFIG_VERSION
    k: int | None = None
    model: str | None = None
    storage: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "layer config") -> LayerConfig:
        values = {"config_version": LAYER_CONFIG_VERSION, **data}
        validate_layer_config(values, where)
        for key in ("hook_names", "hook_names_out"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        cfg.check(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in plain_dict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes: Any) -> LayerConfig:
        return replace(self, **changes)

    def check(self, where: str) -> None:
        """Cross-field rules the schema cannot express."""
        if not 0 <= self.layer < self.n_layers:
            raise ConfigError(f"{where}: layer {self.layer} is not in 0..{self.n_layers - 1}")
        for name in ("hook_names", "hook_names_out"):
            value = getattr(self, name)
            if value is not None and len(value) != self.n_layers:
                raise ConfigError(
                    f"{where}: {name} lists {len(value)} layers, but n_layers is {self.n_layers}"
                )
        if self.kind == "crosscoder" and self.layer != 0:
            raise ConfigError(f"{where}: a crosscoder is one file (layer 0 of its sites)")
        if self.architecture == "topk" and not self.k:
            raise ConfigError(f"{where}: a topk dictionary needs k")
        if self.k is not None and self.k > self.d_sae:
            raise ConfigError(f"{where}: k={self.k} is larger than d_sae={self.d_sae}")

    @property
    def n_targets(self) -> int:
        """How many layers this layer's latents write to (CLT: itself and every later one)."""
        return self.n_layers - self.layer if self.kind == "clt" else 1

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "crosscoder":  # every site at once; n_layers counts the sites
            n = self.n_layers
            shapes = {
                "W_enc": (n, self.d_in, self.d_sae),
                "b_enc": (self.d_sae,),
                "W_dec": (self.d_sae, n, self.d_out),
                "b_dec": (n, self.d_out),
            }
            if self.architecture == "jumprelu":  # relu(h) kept where relu(h)·code_norm > θ
                shapes["threshold"] = (self.d_sae,)
            return shapes
        w_dec: tuple[int, ...] = (self.d_sae, self.d_out)
        if self.kind == "clt":
            w_dec = (self.d_sae, self.n_targets, self.d_out)
        shapes: dict[str, tuple[int, ...]] = {
            "W_enc": (self.d_in, self.d_sae),
            "b_enc": (self.d_sae,),
            "W_dec": w_dec,
            "b_dec": (self.d_out,),
        }
        if self.architecture == "jumprelu":
            shapes["threshold"] = (self.d_sae,)
        return shapes

    def optional_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "crosscoder":
            n = self.n_layers
            return {
                # the per-latent scale of the latents (decoder norms, by the publisher's
                # code normalization); a jumprelu crosscoder compares relu(h)·code_norm
                "code_norm": (self.d_sae,),
                # input normalisation, undone after decoding:
                # x' = (x - activation_mean) · activation_scale, y = y' / (scale + 1e-8) + mean
                "activation_mean": (n, self.d_in),
                "activation_scale": (n,),
            }
        return {"W_skip": (self.d_out, self.d_in)}

    def same_dictionary(self, other: LayerConfig) -> list[str]:
        """The fields on which two layer files of one dictionary disagree."""
        ignore = {"layer", "storage", "source"}
        return [
            f.name
            for f in fields(self)
            if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)
        ]


@lru_cache(maxsize=1)
def layer_schema() -> dict[str, Any]:
    path = builtin_schema_dir() / f"dictionary.v{LAYER_CONFIG_VERSION}.json"
    with path.open(encoding="utf-8") as fh:
        return dict(json.load(fh))


def validate_layer_config(data: Mapping[str, Any], where: str) -> None:
    """Against schemas/dictionary.v1.json (minischema: no jsonschema import on load)."""
    lines = schema_problems(layer_schema(), data)
    if lines:
        raise ConfigError(f"{where}: invalid multi-layer dictionary config: " + "; ".join(lines))


def check_layer_shapes(cfg: LayerConfig, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Every expected tensor present with its exact shape, nothing unexpected: one error
    naming the file and each disagreement."""
    problems = shape_problems(cfg.expected_shapes(), cfg.optional_shapes(), shapes)
    if problems:
        raise CanonicalFileError(f"{where}: " + "; ".join(problems[:5]))


def read_layer_config(path: Path) -> LayerConfig:
    """The config of a layer file (header only), its tensors checked against it."""
    header, metadata = read_header(path)
    raw = metadata.get(LAYER_METADATA_KEY)
    if raw is None:
        raise CanonicalFileError(
            f"{path}: not a layer of a saereg multi-layer dictionary (no '{LAYER_METADATA_KEY}' "
            "in its metadata)"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CanonicalFileError(f"{path}: corrupted saereg layer config ({exc})") from None
    cfg = LayerConfig.from_dict(data, str(path))
    shapes = {**tensor_shapes(header), **referenced_shapes(cfg)}  # type: ignore[arg-type]
    check_layer_shapes(cfg, shapes, str(path))
    return cfg


def is_layer_file(path: Path) -> bool:
    """Whether a cache file is a layer of a multi-layer dictionary (header only)."""
    try:
        return LAYER_METADATA_KEY in read_header(path)[1]
    except (CanonicalFileError, OSError):
        return False


def write_layer(
    path: Path, cfg: LayerConfig, tensors: Mapping[str, Any], progress: bool = False
) -> Path:
    """Write one layer file atomically (with its tensor digest), after checking every
    tensor's shape and dtype against the config."""
    described = {n: _describe(v) for n, v in tensors.items()}
    shapes = {n: shape for n, (shape, _) in described.items()}
    check_layer_shapes(cfg, {**shapes, **referenced_shapes(cfg)}, str(path))  # type: ignore[arg-type]
    dtypes = {dtype for _, dtype in described.values()} | referenced_dtypes(cfg)  # type: ignore[arg-type]
    if dtypes != {cfg.dtype}:
        raise ConfigError(f"{path}: tensors have dtypes {sorted(dtypes)}, config says {cfg.dtype}")
    metadata = {LAYER_METADATA_KEY: cfg.to_json(), "format": "pt"}
    write_safetensors(path, tensors, metadata, progress, digest=True)
    return path


def _describe(value: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(value, LazyArray):
        return tuple(value.shape), value.dtype
    return tuple(int(s) for s in value.shape), str(value.dtype).removeprefix("torch.")
