"""safetensors as saereg reads it: dtype codes, header parsing with every length checked,
and the lazy tensors (with their origin in a publisher file) that plugins hand to the
core. Nothing here imports torch."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from saereg.base.errors import SaeregError

#: safetensors dtype code ↔ name used in configs ↔ bytes per element.
DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}


CODE_OF = {name: code for code, (name, _) in DTYPES.items()}


#: The floating-point codes SAE weights come in, with their config dtype names.
FLOAT_DTYPES = {code: DTYPES[code][0] for code in ("F64", "F32", "F16", "BF16")}


MAX_HEADER = 100 * 1024 * 1024


class CanonicalFileError(SaeregError):
    """A canonical (or publisher) safetensors file is corrupt, truncated or inconsistent."""


@dataclass(frozen=True)
class Origin:
    """Where a lazy tensor's bytes lie in a publisher file, and the views taken of them.

    `offset` is the byte offset of the raw little-endian, C-ordered data in `path`,
    stored with `shape` and `dtype`; `ops` are applied in order: ("transpose",),
    ("slice", dim, start, stop) or ("cast", dtype). A tensor with an origin can be
    memory-mapped in place instead of copied (see in_place.py).
    """

    path: Path
    tensor: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    ops: tuple[tuple[Any, ...], ...] = ()

    def then(self, *op: Any) -> Origin:
        return replace(self, ops=(*self.ops, tuple(op)))


@dataclass(frozen=True)
class LazyArray:
    """A tensor a plugin can describe before reading it: written when its turn comes.

    `load` returns a numpy array or a torch tensor of exactly `shape` and `dtype`
    (a config dtype name such as 'float32'). `origin`, when set, says the tensor is
    an unchanged view of bytes in a publisher file.
    """

    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], Any]
    origin: Origin | None = None


def parse_header(raw: bytes, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """safetensors header bytes (after the 8-byte length) → ({name: info}, metadata)."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalFileError(f"{where}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CanonicalFileError(f"{where}: corrupted safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    for name, info in header.items():
        if (
            not isinstance(info, dict)
            or info.get("dtype") not in DTYPES
            or not isinstance(info.get("shape"), list)
            or not isinstance(info.get("data_offsets"), list)
        ):
            raise CanonicalFileError(f"{where}: corrupted safetensors header entry {name!r}")
    return header, metadata


def read_header_from(
    fh: IO[bytes], where: str, file_size: int | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    head = fh.read(8)
    if len(head) != 8:
        raise CanonicalFileError(f"{where}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER or (file_size is not None and 8 + n > file_size):
        raise CanonicalFileError(f"{where}: corrupted safetensors header (declares {n} bytes)")
    raw = fh.read(n)
    if len(raw) != n:
        raise CanonicalFileError(f"{where}: truncated safetensors header")
    header, metadata = parse_header(raw, where)
    if file_size is not None:
        end = max((info["data_offsets"][1] for info in header.values()), default=0)
        if 8 + n + end > file_size:
            raise CanonicalFileError(
                f"{where}: truncated: the header describes {8 + n + end} bytes, the file has "
                f"{file_size} (an interrupted download or copy?)"
            )
    return header, metadata


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    with path.open("rb") as fh:
        return read_header_from(fh, str(path), path.stat().st_size)


def tensor_shapes(header: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(info["shape"]) for name, info in header.items()}
