"""saereg: one registry and one canonical format for pretrained sparse autoencoders.

The public API is small and stable::

    import saereg
    info = saereg.resolve("gpt2-small-res-jb/blocks.8.hook_resid_pre")
    rows = saereg.list_saes(model="gemma-2-2b", hook="*resid_post")

Attributes are imported lazily so that ``import saereg`` costs almost nothing: the
resolve/list/validate paths never import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "resolve": ".resolver",
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
    "Format",
    "PluginError",
    "Release",
    "ReleaseFileError",
    "RemoteFile",
    "ResolvedSAE",
    "SAEEntry",
    "SaeregError",
    "UnknownReferenceError",
    "__version__",
    "get_release",
    "hookimpl",
    "list_saes",
    "resolve",
]

if TYPE_CHECKING:
    from .catalog import Release, SAEEntry
    from .errors import PluginError, ReleaseFileError, SaeregError, UnknownReferenceError
    from .hookspecs import Format, RemoteFile, hookimpl
    from .resolver import ResolvedSAE, get_release, list_saes, resolve


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'saereg' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
