"""Small parsing helpers shared by the built-in formats (hook names, widths)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from saereg.formats import Format, Release, RemoteFile, SAEEntry, layer_of_hook, parse_width

TL_HOOK = re.compile(r"^blocks\.(\d+)\.(?:(?:attn|mlp|ln1|ln2)\.)?hook_[a-z_]+$")

__all__ = [
    "TL_HOOK",
    "FolderFormat",
    "folder_entries",
    "layer_of_hook",
    "parse_width",
    "tl_hook_fields",
]


def tl_hook_fields(hook_name: str) -> dict[str, object]:
    """hook_name plus the layer it implies."""
    return {"hook_name": hook_name, "hook_layer": layer_of_hook(hook_name)}


def folder_entries(listing: Sequence[str], config: str, weights: str) -> list[dict[str, Any]]:
    """One entry (id = path = folder) per folder of a listing holding both files."""
    files = set(listing)
    folders = sorted(
        p[: -len(config) - 1]
        for p in files
        if p.endswith(f"/{config}") and p[: -len(config)] + weights in files
    )
    return [{"id": f, "path": f} for f in folders]


class FolderFormat(Format):
    """A format with one folder per SAE (its path) holding a config and a weights file."""

    config_file = ""
    weights_file = ""

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """Every folder holding both files."""
        return folder_entries(listing, self.config_file, self.weights_file)

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        folder = entry.path.rstrip("/")
        return [
            RemoteFile(f"{folder}/{self.config_file}"),
            RemoteFile(f"{folder}/{self.weights_file}", weights=True),
        ]
