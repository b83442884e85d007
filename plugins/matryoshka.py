"""Matryoshka SAEs saved by SAELens (chanind's BatchTopK Matryoshka releases).

The files are SAELens-native JumpReLU SAEs; what makes them Matryoshka is that every
prefix of the latents listed in ``nested_widths`` is itself a usable smaller SAE.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from saereg.formats import Format, Release, SAEEntry, hookimpl

from ._common import TL_HOOK, parse_width, tl_hook_fields
from .saelens import SAELensFormat, matryoshka_widths

_REPO_WIDTH = re.compile(r"-w-(\d+[km])-")


class MatryoshkaFormat(SAELensFormat):
    name = "matryoshka"
    summary = "SAELens-saved Matryoshka SAEs (JumpReLU, nested prefix widths)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        derived: dict[str, Any] = {"architecture": "jumprelu"}
        leaf = entry.path.rstrip("/").rsplit("/", 1)[-1]
        if TL_HOOK.match(leaf):
            derived.update(tl_hook_fields(leaf))
        match = _REPO_WIDTH.search(release.repo_id or "")
        if match:
            derived["d_sae"] = parse_width(match.group(1))
        return derived

    def config_says(self, raw: dict[str, Any]) -> bool | None:
        """Only a SAELens config that records its nested widths is certainly Matryoshka."""
        return bool("d_sae" in raw and matryoshka_widths(raw))

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """SAELens folders; variants (`standard/`, `snap/`) keep their prefix in the id."""
        return super().discover(repo_id, listing)


@hookimpl
def saereg_formats() -> list[Format]:
    return [MatryoshkaFormat()]
