"""The models table: one canonical name per model, its aliases, hub id, family and shape.

`releases/models/models.yaml` is the data (checked against `schemas/model.v1.json`). It is
compiled to JSON once (compiled.py), so the resolve path reads a small JSON file
and never imports yaml. Everything that shows a model name goes through
`canonical_model`, so a model has one name in `resolve`, `list`, `info`, the docs and
canonical configs, whichever spelling a release file used.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from saereg.base.errors import ReleaseFileError
from saereg.catalogue.compiled import load_model_docs
from saereg.catalogue.hooks import HFHook, hf_hook, site_width
from saereg.catalogue.release_dirs import MODELS_FILE, builtin_release_dir, release_dirs

SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "d_head", "d_mlp")


@dataclass(frozen=True)
class ModelInfo:
    """One model of the table. Shape numbers are None where they are not known."""

    name: str
    hub_id: str
    family: str
    d_model: int | None
    n_layers: int | None
    n_heads: int | None
    d_head: int | None
    d_mlp: int | None
    source: str
    aliases: tuple[str, ...] = ()
    n_experts: int | None = None
    evidence: str | None = None
    notes: str | None = None

    @property
    def hub_url(self) -> str:
        return f"https://huggingface.co/{self.hub_id}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every spelling that means this model: name, hub id, aliases."""
        return (self.name, self.hub_id, *self.aliases)

    def width(self, hook_name: str | None) -> int | None:
        """The width of a TransformerLens hook site of this model, where it is defined."""
        return site_width(self, hook_name)

    def hf_hook(self, hook_name: str | None) -> HFHook | None:
        return hf_hook(self.family, hook_name)

    def shape_text(self) -> str:
        def show(v: int | None) -> str:
            return "?" if v is None else str(v)

        text = (
            f"d_model {show(self.d_model)}, {show(self.n_layers)} layers, "
            f"{show(self.n_heads)} heads × d_head {show(self.d_head)}, d_mlp {show(self.d_mlp)}"
        )
        if self.n_experts:
            text += f" (per expert, {self.n_experts} experts)"
        return text

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["aliases"] = list(self.aliases)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["aliases"] = tuple(str(a) for a in values.get("aliases") or ())
        return cls(**values)


@dataclass(frozen=True)
class ModelTable:
    models: tuple[ModelInfo, ...]
    by_key: Mapping[str, ModelInfo] = field(default_factory=dict)

    @classmethod
    def build(cls, models: list[ModelInfo]) -> ModelTable:
        by_key: dict[str, ModelInfo] = {}
        for m in models:
            for name in m.names:
                by_key.setdefault(name.lower(), m)
        return cls(tuple(models), by_key)

    def get(self, name: str | None) -> ModelInfo | None:
        if not name:
            return None
        return self.by_key.get(name.strip().lower())

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models)

    def all_names(self) -> list[str]:
        return [n for m in self.models for n in m.names]


def models_file() -> Path:
    return builtin_release_dir() / MODELS_FILE


@lru_cache(maxsize=1)
def model_table() -> ModelTable:
    """The built-in models table (compiled to JSON once, cached for the process)."""
    return ModelTable.build([ModelInfo.from_dict(d) for d in load_model_docs(models_file())])


@lru_cache(maxsize=8)
def extra_model_table(tables: tuple[Path, ...]) -> ModelTable:
    """Models tables shipped beside releases outside saereg (`SAEREG_RELEASES`
    directories, plugins' release directories), for models the built-in table lacks."""
    models = []
    for table in tables:
        for i, doc in enumerate(load_model_docs(table)):
            try:
                models.append(ModelInfo.from_dict(doc))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ReleaseFileError(
                    f"{table}: models[{i}] is not a valid model entry ({type(exc).__name__}: "
                    f"{exc}); run `saereg validate {table.parent.parent}`"
                ) from None
    return ModelTable.build(models)


def _extra_tables() -> tuple[Path, ...]:
    builtin = builtin_release_dir().resolve()
    return tuple(
        d / MODELS_FILE
        for d in release_dirs()
        if d.resolve() != builtin and (d / MODELS_FILE).is_file()
    )


def get_model(name: str | None) -> ModelInfo | None:
    """The model any alias (case-insensitive) names, or None if no table has it.

    Other release directories' tables are read only when the built-in table lacks the
    name, so resolving a built-in release never loads plugins."""
    found = model_table().get(name)
    if found is None and name:
        found = extra_model_table(_extra_tables()).get(name)
    return found


def canonical_model(name: str) -> str:
    """The canonical name for any spelling of a model (hub id, TransformerLens name, an
    alias); a name the table does not know comes back unchanged."""
    info = get_model(name)
    return info.name if info is not None else name


def derive_widths(values: dict[str, Any], model: ModelInfo) -> None:
    """Fill `d_in` (and `d_out` for transcoders) of one SAE's fields from its hook sites
    and the model's shape, where the release leaves them null."""
    if values.get("d_in") is None:
        width = model.width(values.get("hook_name"))
        if width is not None:
            values["d_in"] = width
    out_hook = values.get("hook_name_out")
    if out_hook and values.get("d_out") is None:
        width = model.width(out_hook)
        if width is not None:
            values["d_out"] = width


def hf_hooks(model_name: str, entry: Any) -> dict[str, Any]:
    """The hub id and Hugging Face hook points of one SAE (`entry` has hook_name and
    hook_name_out), as JSON-ready values: what `resolve` and canonical configs carry."""
    model = get_model(model_name)
    if model is None:
        return {"model_hub_id": None, "hf_hook": None, "hf_hook_out": None}
    hook = model.hf_hook(entry.hook_name)
    out = model.hf_hook(entry.hook_name_out) if entry.hook_name_out else None
    return {
        "model_hub_id": model.hub_id,
        "hf_hook": hook.to_dict() if hook else None,
        "hf_hook_out": out.to_dict() if out else None,
    }


def model_matches(model_name: str, pattern: str | None) -> bool:
    """Whether a release's model is the one `pattern` names: any alias, case-insensitively,
    or a glob (``gemma-2-*``) over the canonical name and every alias."""
    if pattern is None:
        return True

    wanted = get_model(pattern)
    info = get_model(model_name)
    if wanted is not None:
        return info is wanted
    names = info.names if info is not None else (model_name,)
    return any(fnmatch.fnmatchcase(n.lower(), pattern.lower()) for n in names)
