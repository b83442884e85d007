"""The plugin contract: what a saereg plugin provides, declared in one place.

A plugin is any module or object registered under the entry-point group ``saereg``
(built-in formats register through exactly the same group). It implements one or both
hooks below with ``@saereg.hookimpl``.

A plugin **describes and converts**; it never downloads (the core hands it local files)
and never builds torch modules (it returns tensors and a config dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .catalog import Release, SAEEntry

hookspec = pluggy.HookspecMarker("saereg")
hookimpl = pluggy.HookimplMarker("saereg")


@dataclass(frozen=True)
class RemoteFile:
    """One file a format needs: a path inside the release's repository (or under its
    base_url). `optional` files may be missing upstream without failing the load;
    `weights` marks the large tensor files that `load_config` avoids downloading."""

    path: str
    optional: bool = False
    weights: bool = False


class Format:
    """Base class for a publisher format. Subclasses set `name` and override methods.

    `name` is the value of ``format:`` in release files. Methods receive the frozen
    Release and SAEEntry from the catalogue.
    """

    name: str = ""
    #: One line shown by `saereg plugins`.
    summary: str = ""

    @property
    def loads(self) -> bool:
        """Whether `load_sae` can fetch and convert this format's SAEs (it overrides
        `files` and `convert`), or only describe them."""
        cls = type(self)
        return cls.files is not Format.files and cls.convert is not Format.convert

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        """Metadata derivable without downloading anything: any of hook_name,
        hook_layer, d_sae, d_in, d_out, context_size, normalize_activations,
        architecture, k, hook_name_out, hf_hook_name, nested_widths, dataset.

        Return only what follows from release metadata and path conventions for
        certain; leave a key out rather than guess. Raise ValueError with a plain
        sentence when the path does not follow the format's conventions.
        """
        return {}

    def files(self, release: Release, entry: SAEEntry) -> Sequence[RemoteFile]:
        """The files to fetch for one SAE."""
        raise NotImplementedError(
            f"format {self.name!r} cannot download weights yet (only its metadata is "
            "catalogued); see the project's issue tracker"
        )

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Publisher files → (canonical config dict, {tensor name: tensor})."""
        raise NotImplementedError(
            f"format {self.name!r} cannot convert weights yet (only its metadata is "
            "catalogued); see the project's issue tracker"
        )

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        """The canonical config without the weights, where the format allows it.

        `local_files` holds the files not marked `weights`; `tensor_shapes` maps each
        safetensors weights file to {tensor: (dtype, shape)} read from its header (from
        the cache, or over HTTP range requests); it is empty when a weights file is not
        safetensors. Return None when only the weights can tell (npz or pickle files
        without a config naming the shapes); the core then converts the SAE fully.
        """
        return None

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """Scaffold release entries (id, path, derived fields) from a repository listing."""
        return []


@hookspec
def saereg_formats() -> list[Format]:  # type: ignore[empty-body]
    """Return the Format objects this plugin provides. Format names must be unique
    across all installed plugins; a clash is reported naming both plugins."""


@hookspec
def saereg_release_dirs() -> list[Path]:  # type: ignore[empty-body]
    """Return extra directories of release files shipped by this plugin package."""
