"""Checking `device` and `dtype` before anything is downloaded or converted.

Without this, `load_sae(..., dtype="int8")` or `device="cuda"` on a CPU-only torch
downloads and converts the SAE and only then fails inside torch with an unrelated
message.
"""

from __future__ import annotations

from typing import Any

from saereg.base.errors import ArgumentError

#: The dtypes an SAE can be loaded in, by the names users write.
FLOAT_NAMES = ("float32", "float16", "bfloat16", "float64")
_ALIASES = {"float": "float32", "half": "float16", "double": "float64", "fp32": "float32",
            "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}  # fmt: skip


def check_dtype(dtype: Any) -> Any:
    """None, or the torch floating dtype `dtype` names (a torch.dtype or a name)."""
    import torch  # deferred: torch

    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ArgumentError(f"dtype {dtype} is not a floating-point type; use {_WORDS}")
        return dtype
    if not isinstance(dtype, str):
        raise ArgumentError(f"dtype must be a torch.dtype or a name such as 'float32', not a "
                            f"{type(dtype).__name__}")  # fmt: skip
    key = dtype.strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in FLOAT_NAMES:
        raise ArgumentError(f"unknown dtype {dtype[:50]!r}; use {_WORDS}")
    return getattr(torch, key)


_WORDS = ", ".join(FLOAT_NAMES)


def check_device(device: Any) -> Any:
    """A torch.device that exists on this machine."""
    import torch  # deferred: torch

    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ArgumentError(
            f"{str(device)[:50]!r} is not a device; use 'cpu', 'cuda', 'cuda:1', 'mps' or 'meta'"
        ) from None
    if dev.type in ("cpu", "meta"):
        if dev.index not in (None, 0):
            raise ArgumentError(f"device {str(dev)!r} does not exist (there is one {dev.type})")
        return torch.device(dev.type)  # 'cpu:0' is 'cpu' (safetensors only takes the latter)
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ArgumentError(
            f"device {str(dev)!r} is not available in this torch ({torch.__version__}); "
            "use device='cpu', or install a torch build with that backend"
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ArgumentError(f"device {str(dev)!r} does not exist ({count()} {dev.type} devices)")
    return dev
