"""Byte builders and small helpers shared by the layout modules (test-only)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from ..publishers import rand
from ._case import Reference

__all__ = [
    "Reference",
    "activation",
    "as_torch",
    "json_bytes",
    "pt_bytes",
    "rand",
    "same",
    "st_save",
]


def pt_bytes(state: dict[str, Any], *, legacy: bool = False) -> bytes:
    """A torch.save pickle (zip format, or the legacy format some publishers used)."""
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()


def as_torch(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def activation(pre: torch.Tensor, threshold: torch.Tensor | None) -> torch.Tensor:
    """circuit-tracer's activations: JumpReLU (x·1[x > θ], strict) when a threshold is
    published, else ReLU."""
    return torch.relu(pre) if threshold is None else pre * (pre > threshold).double()


def same(f: torch.Tensor, y: torch.Tensor) -> Reference:
    """An SAE without a skip path or predicted part: decode(encode(x)) == forward(x)."""
    return Reference(encode=f, decode=y, forward=y)
