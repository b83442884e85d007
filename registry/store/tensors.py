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


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _count(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    )


def _check_entries(header: Mapping[str, Any], where: str, data_size: int | None) -> None:
    """The layout rules of the safetensors format, as its reference reader enforces them
    (and a little stricter): every entry a known dtype, a shape of non-negative integers
    and two offsets; sorted by offset, the ranges start at 0, follow each other without
    gap or overlap, each holds exactly shape × dtype bytes, and (when the data size is
    known) the last ends exactly where the file does."""
    spans = []
    for name, info in header.items():
        if (
            not isinstance(info, dict)
            or info.get("dtype") not in DTYPES
            or not _count(info.get("shape"))
            or not _count(info.get("data_offsets"))
            or len(info["data_offsets"]) != 2
        ):
            raise CanonicalFileError(f"{where}: corrupted safetensors header entry {name!r}")
        start, end = info["data_offsets"]
        n = DTYPES[info["dtype"]][1]
        for s in info["shape"]:
            n *= s
        if end - start != n:
            raise CanonicalFileError(
                f"{where}: corrupted safetensors header: tensor {name!r} ({info['dtype']} "
                f"{info['shape']}) needs {n} bytes but its offsets span {end - start}"
            )
        spans.append((start, end, name))
    spans.sort()
    at = 0
    for start, end, name in spans:
        if start != at:
            what = "overlaps the tensor before it" if start < at else "leaves a gap before it"
            raise CanonicalFileError(
                f"{where}: corrupted safetensors header: the byte range of tensor {name!r} "
                f"{what} (offsets {start}..{end}, expected to start at {at})"
            )
        at = end
    if data_size is not None and at != data_size:
        raise CanonicalFileError(
            f"{where}: the header describes {at} bytes of tensor data, the file holds "
            f"{data_size} (truncated, padded, or an interrupted download or copy?)"
        )


def parse_header(
    raw: bytes, where: str, data_size: int | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """safetensors header bytes (after the 8-byte length) → ({name: info}, metadata).

    Checked at least as strictly as the `safetensors` library does before it maps a file
    (saereg maps publisher files itself, see in_place.py): JSON object without duplicate
    keys, string-only metadata, and the layout rules of `_check_entries`. `data_size`
    is the number of bytes after the header, where known."""
    try:
        header = json.loads(raw, object_pairs_hook=_object_without_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CanonicalFileError(f"{where}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CanonicalFileError(f"{where}: corrupted safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CanonicalFileError(
            f"{where}: corrupted safetensors header (__metadata__ must map strings to strings)"
        )
    _check_entries(header, where, data_size)
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
    return parse_header(raw, where, None if file_size is None else file_size - 8 - n)


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    with path.open("rb") as fh:
        return read_header_from(fh, str(path), path.stat().st_size)


def tensor_shapes(header: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(info["shape"]) for name, info in header.items()}
