"""saereg: one registry and one canonical format for pretrained sparse autoencoders.

The public API is small and stable::

    import saereg
    info = saereg.resolve("gpt2-small-res-jb/blocks.8.hook_resid_pre")
    rows = saereg.list_saes(model="gemma-2-2b", hook="*resid_post")
    sae = saereg.load_sae("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82",
                          device="cuda", dtype="bfloat16")
    with saereg.attach(hf_model, sae, mode="record") as seen:  # or a HookedTransformer
        hf_model(input_ids)
    seen.latents

Attributes are imported lazily so that ``import saereg`` costs almost nothing: the
resolve/list/validate paths never import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: Public name → the module that defines it, imported on first use.
_LAZY = {
    "__version__": "saereg.base.version",
    "resolve": "saereg.catalogue.resolver",
    "list_saes": "saereg.catalogue.resolver",
    "get_release": "saereg.catalogue.resolver",
    "ResolvedSAE": "saereg.catalogue.resolver",
    "Release": "saereg.catalogue.records",
    "SAEEntry": "saereg.catalogue.records",
    "canonical_model": "saereg.catalogue.models",
    "get_model": "saereg.catalogue.models",
    "ModelInfo": "saereg.catalogue.models",
    "load_sae": "saereg.loading",
    "load_config": "saereg.loading",
    "fetch_canonical": "saereg.loading",
    "load_dictionary": "saereg.loading",
    "fetch_dictionary": "saereg.loading",
    "CrossLayerTranscoder": "saereg.sae.clt",
    "CrossCoder": "saereg.sae.crosscoder",
    "TranscoderSet": "saereg.sae.transcoder_set",
    "SAE": "saereg.sae.module",
    "NormState": "saereg.sae.norm",
    "Latents": "saereg.sae.norm",
    "SparseLatents": "saereg.sae.latents",
    "attach": "saereg.sae.attach",
    "Attachment": "saereg.sae.attach",
    "AttachError": "saereg.sae.attach",
    "SAEConfig": "saereg.store.sae_config",
    "LazyArray": "saereg.store.tensors",
    "Format": "saereg.formats",
    "RemoteFile": "saereg.formats",
    "hookimpl": "saereg.formats",
    "SaeregError": "saereg.base.errors",
    "UnknownReferenceError": "saereg.base.errors",
    "ReleaseFileError": "saereg.base.errors",
    "PluginError": "saereg.base.errors",
}

__all__ = [
    "SAE",
    "AttachError",
    "Attachment",
    "CrossCoder",
    "CrossLayerTranscoder",
    "Format",
    "Latents",
    "LazyArray",
    "ModelInfo",
    "NormState",
    "PluginError",
    "Release",
    "ReleaseFileError",
    "RemoteFile",
    "ResolvedSAE",
    "SAEConfig",
    "SAEEntry",
    "SaeregError",
    "SparseLatents",
    "TranscoderSet",
    "UnknownReferenceError",
    "__version__",
    "attach",
    "canonical_model",
    "fetch_canonical",
    "fetch_dictionary",
    "get_model",
    "get_release",
    "hookimpl",
    "list_saes",
    "load_config",
    "load_dictionary",
    "load_sae",
    "resolve",
]

if TYPE_CHECKING:
    from saereg.base.errors import PluginError, ReleaseFileError, SaeregError, UnknownReferenceError
    from saereg.base.version import __version__
    from saereg.catalogue.models import ModelInfo, canonical_model, get_model
    from saereg.catalogue.records import Release, SAEEntry
    from saereg.catalogue.resolver import ResolvedSAE, get_release, list_saes, resolve
    from saereg.formats import Format, RemoteFile, hookimpl
    from saereg.loading import (
        fetch_canonical,
        fetch_dictionary,
        load_config,
        load_dictionary,
        load_sae,
    )
    from saereg.sae.attach import AttachError, Attachment, attach
    from saereg.sae.clt import CrossLayerTranscoder
    from saereg.sae.crosscoder import CrossCoder
    from saereg.sae.latents import SparseLatents
    from saereg.sae.module import SAE
    from saereg.sae.norm import Latents, NormState
    from saereg.sae.transcoder_set import TranscoderSet
    from saereg.store.sae_config import SAEConfig
    from saereg.store.tensors import LazyArray


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saereg' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
