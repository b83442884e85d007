"""Small parsing helpers shared by the built-in formats (hook names, widths)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from saereg.formats import (
    Format,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    folders_holding,
    layer_of_hook,
    parse_width,
    read_small_json,
)

TL_HOOK = re.compile(r"^blocks\.(\d+)\.(?:(?:attn|mlp|ln1|ln2)\.)?hook_[a-z_]+$")

__all__ = [
    "TL_HOOK",
    "FolderFormat",
    "folder_entries",
    "in_folder",
    "layer_of_hook",
    "parse_width",
    "tl_hook_fields",
]


def in_folder(folder: str, name: str) -> str:
    """`name` inside `folder` (``""`` is the listing's root)."""
    folder = folder.rstrip("/")
    return f"{folder}/{name}" if folder else name


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

    def config_says(self, raw: dict[str, Any]) -> bool | None:
        """Whether a config this format reads (already parsed) is one of its own: True
        (certain), False (another format's file of the same name), None (cannot tell)."""
        return None

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding both files; each config is read to tell this format's from
        another's of the same file names. 1.0 when every config says so, 0.6 when none
        can tell; a folder whose config is another format's is left out."""
        folders, read, certain = [], [], True
        for folder in folders_holding(listing, self.config_file, self.weights_file):
            path = in_folder(folder, self.config_file)
            read.append(path)
            raw = read_small_json(read_small, path)
            verdict = None if raw is None else self.config_says(raw)
            if verdict is False:
                continue
            certain = certain and verdict is True
            folders.append(folder)
        if not folders:
            return None
        files = f"{self.config_file} + {self.weights_file}"
        if certain:
            return Match(
                tuple(folders), 1.0, f"{files}, and the config is {self.name}'s", tuple(read)
            )
        return Match(tuple(folders), 0.6, f"{files} (the config does not say more)", tuple(read))
