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

__version__ = "0.1.0"

_LAZY = {
    "resolve": ".resolver",
    "attach": ".attach",
    "Attachment": ".attach",
    "AttachError": ".attach",
    "canonical_model": ".models",
    "get_model": ".models",
    "ModelInfo": ".models",
    "load_sae": ".loading",
    "load_config": ".loading",
    "fetch_canonical": ".loading",
    "SAE": ".sae",
    "NormState": ".sae",
    "SAEConfig": ".sae_config",
    "LazyArray": ".canonical",
    "list_saes": ".resolver",
    "get_release": ".resolver",
    "ResolvedSAE": ".resolver",
    "Release": ".catalog",
    "SAEEntry": ".catalog",
    "Format": ".hookspecs",
    "RemoteFile": ".hookspecs",
    "hookimpl": ".hookspecs",
    "SaeregError": ".errors",
    "UnknownReferenceError": ".errors",
    "ReleaseFileError": ".errors",
    "PluginError": ".errors",
}

__all__ = [
    "SAE",
    "AttachError",
    "Attachment",
    "Format",
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
    "UnknownReferenceError",
    "__version__",
    "attach",
    "canonical_model",
    "fetch_canonical",
    "get_model",
    "get_release",
    "hookimpl",
    "list_saes",
    "load_config",
    "load_sae",
    "resolve",
]

if TYPE_CHECKING:
    from .attach import AttachError, Attachment, attach
    from .canonical import LazyArray
    from .catalog import Release, SAEEntry
    from .errors import PluginError, ReleaseFileError, SaeregError, UnknownReferenceError
    from .hookspecs import Format, RemoteFile, hookimpl
    from .loading import fetch_canonical, load_config, load_sae
    from .models import ModelInfo, canonical_model, get_model
    from .resolver import ResolvedSAE, get_release, list_saes, resolve
    from .sae import SAE, NormState
    from .sae_config import SAEConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saereg' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
