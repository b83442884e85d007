"""The contract between per-format layout modules and the catalogue-wide loading test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Reference:
    """What the publisher's own math gives for an input batch `x`."""

    encode: torch.Tensor  # latents
    decode: torch.Tensor  # decode(encode(x)): what the latents produce (no skip path)
    forward: torch.Tensor  # forward(x): the full output (skip path included, if any)


@dataclass
class LayoutCase:
    """One tiny SAE in a publisher's layout.

    `files` maps repository-relative paths to bytes (served by the fake hub under
    `repo_id`, or under `base_url` when `plain_url` is true). `release` holds the
    release-level fields besides schema/name/format/repo_id (model, defaults, ...);
    `sae` is the SAE entry (id, path, hook_name, ...). `input_shape` is the shape of one
    test batch (e.g. (5, 12) or, for hook_z, (5, n_heads, d_head)).
    """

    format: str
    name: str  # unique within the format, e.g. "AutoEncoderTopK"
    files: dict[str, bytes]
    sae: dict[str, Any]
    input_shape: tuple[int, ...]
    reference: Callable[[torch.Tensor], Reference]
    release: dict[str, Any] = field(default_factory=dict)
    repo_id: str = "test-org/test-repo"
    plain_url: bool = False
    atol: float = 1e-5
    # Extra checks on the loaded module (e.g. architecture, nested widths), if any.
    check: Callable[[Any], None] | None = None
