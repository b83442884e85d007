"""The hooks a saereg plugin may implement, declared for pluggy.

A plugin is any module or object registered under the entry-point group ``saereg``
(built-in formats register through exactly the same group). It implements one or both
hooks below with ``@saereg.hookimpl`` (also ``saereg.formats.hookimpl``).
`saereg.formats` is the contract plugins are written against: the `Format` class these
hooks return, and the helpers a plugin may use. The declarations live here, at the bottom
layer, because the catalogue needs `saereg_release_dirs` before any format is loaded.

A plugin **describes, detects and converts**; it never downloads (the core hands it local
files, and to `Format.detect` a file listing and a reader of small configs) and never
builds torch modules (it returns tensors and a config dict). Detection is a method of the
formats `saereg_formats` returns, not a hook of its own: a format is one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy

#: The entry-point group plugins register under, and pluggy's project name.
GROUP = "saereg"

hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


@hookspec
def saereg_formats() -> Sequence[Any]:  # type: ignore[empty-body]
    """Return the `saereg.formats.Format` objects this plugin provides. Format names must
    be unique across all installed plugins; a clash is reported naming both plugins."""


@hookspec
def saereg_release_dirs() -> Sequence[Path]:  # type: ignore[empty-body]
    """Return extra directories of release files shipped by this plugin package."""
