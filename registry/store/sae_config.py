"""The canonical SAE config: what one canonical file is, independent of its publisher.

Kept free of torch so `load_config` (and `saereg inspect`) can read it cheaply.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

from saereg.base.errors import SaeregError
from saereg.catalogue.minischema import iter_errors
from saereg.catalogue.records import plain_dict
from saereg.catalogue.release_dirs import builtin_schema_dir

CONFIG_VERSION = 1
#: The revision of saereg's built-in conversions, recorded in every canonical file's
#: `source.conversion`. Bump it when a conversion's math or layout changes, so entries
#: cached by an older saereg are rebuilt from the publisher files (usually still in the
#: Hugging Face cache) instead of serving the old result. 2: SAELens / Gemma Scope
#: JumpReLU thresholds stored as max(θ, 0); SAELens transcoders and rescaled TopK.
CONVERSION = 2
METADATA_KEY = "saereg_config"
#: The key of a multi-layer dictionary's layer files (saereg.store.layer_config).
LAYER_METADATA_KEY = "saereg_layer"


class ConfigError(SaeregError):
    """A canonical config (from a plugin or from a file) is not valid."""


@dataclass(frozen=True)
class SAEConfig:
    """Validated canonical config. `normalization` is a dict: {"kind": ...} plus parameters."""

    architecture: str
    d_in: int
    d_sae: int
    d_out: int
    apply_b_dec_to_input: bool
    normalization: Mapping[str, Any]
    reshape: str
    dtype: str
    source: Mapping[str, Any]
    config_version: int = CONFIG_VERSION
    transcoder: bool = False
    k: int | None = None
    # topk: ReLU after choosing the k largest (the default), or keep the k values as
    # they are (Qwen Scope's published math: exactly k latents are non-zero)
    topk_relu: bool = True
    hook_name: str | None = None
    hook_name_out: str | None = None
    hf_hook_name: str | None = None
    hook_layer: int | None = None
    model: str | None = None
    model_hub_id: str | None = None
    hf_hook: Mapping[str, str] | None = None
    hf_hook_out: Mapping[str, str] | None = None
    context_size: int | None = None
    dataset: str | None = None
    nested_widths: tuple[int, ...] | None = None
    neuronpedia: str | None = None
    folded: tuple[str, ...] = field(default_factory=tuple)
    # architecture "temporal": {"n_heads", "n_attn_layers", "d_attn"} (see saereg.sae)
    temporal: Mapping[str, int] | None = None
    #: None: the canonical file holds every tensor. Else which publisher files back the
    #: tensors it lacks (an in-place entry; see in_place.py).
    storage: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], where: str = "config", *, full_schema: bool = True
    ) -> SAEConfig:
        """Validate and build. `full_schema=False` (reading files saereg wrote) checks only
        the structure, by hand, instead of walking the whole schema."""
        values = {"config_version": CONFIG_VERSION, **data}
        if full_schema:
            validate_config(values, where)
        else:
            _check_structure(values, where)
        if values.get("nested_widths") is not None:
            values["nested_widths"] = tuple(values["nested_widths"])
        values["folded"] = tuple(values.get("folded") or ())
        cfg = cls(**values)
        cfg.check(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = plain_dict(self)
        if out.get("topk_relu") is True:  # the default: files written before it stay identical
            del out["topk_relu"]
        return {k: v for k, v in out.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes: Any) -> SAEConfig:
        return replace(self, **changes)

    def check(self, where: str) -> None:
        """Cross-field rules the schema cannot express."""
        if self.architecture == "topk" and not self.k:
            raise ConfigError(f"{where}: a topk SAE needs k")
        if (self.architecture == "temporal") != (self.temporal is not None):
            raise ConfigError(
                f"{where}: the 'temporal' settings go with architecture 'temporal' (and only it)"
            )
        if self.temporal is not None:
            t = self.temporal
            if self.transcoder or t["d_attn"] % t["n_heads"] or self.d_sae % t["n_heads"]:
                raise ConfigError(
                    f"{where}: temporal attention needs d_attn ({t['d_attn']}) and d_sae "
                    f"({self.d_sae}) divisible by n_heads ({t['n_heads']}), and no transcoder"
                )
        if self.k is not None and self.k > self.d_sae:
            raise ConfigError(f"{where}: k={self.k} is larger than d_sae={self.d_sae}")
        if not self.transcoder and self.d_out != self.d_in:
            raise ConfigError(
                f"{where}: d_out ({self.d_out}) differs from d_in ({self.d_in}) but the SAE is "
                "not marked as a transcoder"
            )
        if self.transcoder and self.apply_b_dec_to_input:
            raise ConfigError(f"{where}: transcoders never subtract b_dec from their input")
        widths = self.nested_widths
        if widths:
            if any(b <= a for a, b in itertools.pairwise(widths)):
                raise ConfigError(f"{where}: nested_widths {list(widths)} must be increasing")
            if widths[-1] != self.d_sae:
                raise ConfigError(
                    f"{where}: the last nested width {widths[-1]} must equal d_sae {self.d_sae}"
                )

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the canonical file must hold, with its shape."""
        shapes: dict[str, tuple[int, ...]] = {
            "W_enc": (self.d_in, self.d_sae),
            "W_dec": (self.d_sae, self.d_out),
            "b_dec": (self.d_out,),
        }
        if self.architecture == "gated":
            shapes.update(b_gate=(self.d_sae,), b_mag=(self.d_sae,), r_mag=(self.d_sae,))
        else:
            shapes["b_enc"] = (self.d_sae,)
        if self.architecture == "jumprelu":
            shapes["threshold"] = (self.d_sae,)
        if self.temporal is not None:
            shapes.update(temporal_attention_shapes(self.d_sae, self.temporal))
        return shapes

    def optional_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W_skip": (self.d_out, self.d_in)} if self.transcoder else {}


def temporal_attention_shapes(
    d_sae: int, temporal: Mapping[str, int]
) -> dict[str, tuple[int, ...]]:
    """The attention layers of a temporal SAE, named as the publisher names them.

    Projections are `F.linear` weights, [out, in] (the only canonical tensors not stored
    as `x @ W`): the value and output projections are d_sae x d_sae, and keeping the
    publisher's orientation means no transposed copy of them at conversion.
    """
    d_attn = int(temporal["d_attn"])
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(int(temporal["n_attn_layers"])):
        for proj, width in (("k_ctx", d_attn), ("q_target", d_attn), ("v_ctx", d_sae)):
            shapes[f"attn_layers.{i}.{proj}.weight"] = (width, d_sae)
            shapes[f"attn_layers.{i}.{proj}.bias"] = (width,)
        shapes[f"attn_layers.{i}.c_proj.weight"] = (d_sae, d_sae)
        shapes[f"attn_layers.{i}.c_proj.bias"] = (d_sae,)
    return shapes


_ENUMS = {
    "architecture": {"relu", "jumprelu", "topk", "gated", "temporal"},
    "reshape": {"none", "hook_z"},
    "dtype": {"float32", "float16", "bfloat16", "float64"},
}
_NORM_PARAMS = {
    "none": set(),
    "scale": {"factor"},
    "constant_norm_rescale": set(),
    "layer_norm": {"eps"},
}


def _check_structure(data: Mapping[str, Any], where: str) -> None:
    """What schemas/sae.v1.json requires, checked without jsonschema."""

    def fail(message: str) -> None:
        raise ConfigError(f"{where}: invalid canonical config: {message}")

    allowed = {f.name for f in fields(SAEConfig)}
    unknown = set(data) - allowed
    if unknown:
        fail(f"unknown field(s) {sorted(unknown)}")
    if data.get("config_version") != CONFIG_VERSION:
        fail(f"config_version {data.get('config_version')!r} is not {CONFIG_VERSION}")
    for key in ("d_in", "d_sae", "d_out"):
        if not isinstance(data.get(key), int) or isinstance(data[key], bool) or data[key] < 1:
            fail(f"{key} must be a positive integer, got {data.get(key)!r}")
    for key, options in _ENUMS.items():
        if data.get(key) not in options:
            fail(f"{key} {data.get(key)!r} is not one of {sorted(options)}")
    if not isinstance(data.get("apply_b_dec_to_input"), bool):
        fail("apply_b_dec_to_input must be true or false")
    if not isinstance(data.get("topk_relu", True), bool):
        fail("topk_relu must be true or false")
    norm = data.get("normalization")
    if (
        not isinstance(norm, Mapping)
        or norm.get("kind") not in _NORM_PARAMS
        or set(norm) - {"kind"} != _NORM_PARAMS[norm["kind"]]
    ):
        fail(f"normalization {norm!r} is not valid")
    storage = data.get("storage")
    if storage is not None and not isinstance(storage, Mapping):
        fail("storage must be a mapping")
    source = data.get("source")
    if not isinstance(source, Mapping) or not isinstance(source.get("files"), Mapping):
        fail("source must be a mapping with a 'files' mapping")
    temporal = data.get("temporal")
    if temporal is not None and (
        not isinstance(temporal, Mapping)
        or set(temporal) != {"n_heads", "n_attn_layers", "d_attn"}
        or not all(type(v) is int and v >= 1 for v in temporal.values())
    ):
        fail(f"temporal {temporal!r} must hold positive integers n_heads, n_attn_layers, d_attn")


@lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    with (builtin_schema_dir() / f"sae.v{CONFIG_VERSION}.json").open(encoding="utf-8") as fh:
        return dict(json.load(fh))


def validate_config(data: Mapping[str, Any], where: str = "config") -> None:
    """Against schemas/sae.v1.json, with minischema (jsonschema's import alone costs more
    than the rest of a first load; tests hold the two to the same verdicts)."""
    lines = schema_problems(config_schema(), data)
    if lines:
        raise ConfigError(f"{where}: invalid canonical config: " + "; ".join(lines))


def schema_problems(schema: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Each way `data` breaks `schema`, as "$.json.path: message", in path order (canonical
    configs and dictionary layer configs alike)."""
    errors = sorted(iter_errors(schema, dict(data)), key=lambda e: list(map(str, e[0])))
    return [
        "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where) + f": {message}"
        for where, message in errors
    ]
