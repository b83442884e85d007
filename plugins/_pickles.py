"""PyTorch state-dict pickles read one tensor at a time, safely and memory-mapped.

`torch_load` reads a whole state dict into memory: converting a large ``.pt`` file then
holds the file's tensors plus each transposed copy (about 1.5x the weights). Here every
large tensor becomes a LazyArray that re-opens the file memory-mapped when the core
writes it, so only that tensor's pages (and its converted copy) are resident at a time,
and they are released as soon as the tensor is written. Everything still goes through
``torch.load(weights_only=True)``: no code in the pickle runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from saereg.formats import LazyArray

from ._tensors import torch_load, torch_load_mapped

#: Tensors smaller than this are read eagerly (biases, buffers): not worth re-opening.
LAZY_MIN_BYTES = 1 << 20
_FLOAT_NAMES = {"float32", "float16", "bfloat16", "float64"}


def _open(path: Path, key: str | None, mmap: bool) -> Mapping[str, Any]:
    """The state dict in `path` (or its `key` entry, for wrapped training checkpoints)."""
    state = torch_load_mapped(path)[0] if mmap else torch_load(path)
    return state[key] if key is not None else state


def lazy_state_dict(path: Path, unwrap: str | None = None) -> dict[str, Any]:
    """{name: LazyArray for large float tensors, the value itself otherwise}.

    `unwrap`: when the file is a training checkpoint holding the state dict under this
    key (with the optimizer and step beside it), read that state dict.

    Files saved without the zip format (pre-1.6 torch) cannot be memory-mapped; each
    read then loads the file again (same values, slower).
    """
    import torch  # deferred: torch

    state = _open(path, None, mmap=True)
    key = None
    if unwrap is not None and isinstance(state.get(unwrap), Mapping):
        key, state = unwrap, state[unwrap]
    out: dict[str, Any] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            out[name] = value
            continue
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype in _FLOAT_NAMES and value.numel() * value.element_size() >= LAZY_MIN_BYTES:
            out[name] = LazyArray(tuple(value.shape), dtype, _reader(path, key, name))
        else:
            out[name] = value.clone()  # small: detach it from the file mapping
    return out


def _reader(path: Path, key: str | None, name: str) -> Callable[[], Any]:
    def load() -> Any:
        # The mapping lives as long as this tensor (or a view of it) is referenced.
        return _open(path, key, mmap=True)[name]

    return load
