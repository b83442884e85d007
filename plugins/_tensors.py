"""Reading publisher tensor files lazily and safely, for the built-in formats.

Tensors are described first (shape, dtype from the file header) and read only when the
core writes them, one at a time, so converting never holds two copies of the weights.
Pickles are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from saereg.canonical import (
    CODE_OF,
    FLOAT_DTYPES,
    CanonicalFileError,
    LazyArray,
    Origin,
    read_header_from,
)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalFileError(f"{what} ({path.name}) is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CanonicalFileError(f"{what} ({path.name}) must be a JSON object")
    return data


def safetensors_arrays(path: Path) -> dict[str, LazyArray]:
    """Every tensor of a safetensors file, unread, each with its origin in the file."""
    with path.open("rb") as fh:
        header, _ = read_header_from(fh, str(path), path.stat().st_size)
        data_start = fh.tell()

    def loader(name: str) -> Callable[[], Any]:
        def load() -> Any:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                return fh.get_tensor(name)

        return load

    out = {}
    for name, info in header.items():
        dtype = FLOAT_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CanonicalFileError(f"{path.name}: tensor {name!r} has dtype {info['dtype']}")
        shape = tuple(info["shape"])
        origin = Origin(path, name, data_start + info["data_offsets"][0], shape, dtype)
        out[name] = LazyArray(shape, dtype, loader(name), origin)
    return out


def _npz_origin(
    path: Path, archive: zipfile.ZipFile, member: str, npy_header: int, shape: Any, dtype: Any
) -> Origin | None:
    """Where an uncompressed, C-ordered, little-endian float member's data starts in the
    archive file (a local file header, then the .npy header, then the raw array)."""
    import struct

    info = archive.getinfo(member)
    name = str(dtype.newbyteorder("="))
    if info.compress_type != zipfile.ZIP_STORED or dtype.byteorder == ">" or name not in CODE_OF:
        return None
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + npy_header
    return Origin(path, member[: -len(".npy")], offset, tuple(shape), name)


def npz_arrays(path: Path) -> dict[str, LazyArray]:
    """Every array of a .npz file, unread (shapes come from each member's .npy header).
    Uncompressed members carry their origin in the archive, so they can be mapped."""
    import numpy as np

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CanonicalFileError(f"{path.name} is not a valid .npz archive: {exc}") from None
    out = {}
    with archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read(fh)
                npy_header = fh.tell()
            name = member[: -len(".npy")]
            origin = (
                None if fortran else _npz_origin(path, archive, member, npy_header, shape, dtype)
            )

            def load(member: str = member) -> Any:
                with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
                    return np.lib.format.read_array(fh, allow_pickle=False)

            out[name] = LazyArray(
                tuple(shape), str(np.dtype(dtype).newbyteorder("=")), load, origin
            )
    return out


def torch_load(path: Path) -> dict[str, Any]:
    """A pickled state dict, read without executing code (weights_only=True)."""
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CanonicalFileError(
            f"{path.name} contains objects other than tensors and plain values (the pickle "
            f"would run code to load them); refusing to unpickle it. Detail: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CanonicalFileError(f"{path.name} is not a readable PyTorch file: {exc}") from None
    if not isinstance(data, Mapping):
        raise CanonicalFileError(f"{path.name} holds a {type(data).__name__}, not a state dict")
    return dict(data)


def mapped(
    value: Any,
    fn: Callable[[Any], Any],
    shape: tuple[int, ...] | None = None,
    dtype: str | None = None,
) -> Any:
    """Apply `fn` to a tensor now, or to a LazyArray when it is read (which then no longer
    has an origin: its bytes differ from the publisher's)."""
    if isinstance(value, LazyArray):
        return LazyArray(shape or value.shape, dtype or value.dtype, lambda: fn(value.load()))
    return fn(value)


def _view(
    value: Any, fn: Callable[[Any], Any], shape: tuple[int, ...], *op: Any, dtype: str | None = None
) -> Any:
    """Like `mapped` for a view the loader can redo (transpose, slice, dtype cast): the
    origin is kept, with `op` appended."""
    out = mapped(value, fn, shape=shape, dtype=dtype)
    if isinstance(value, LazyArray) and value.origin is not None:
        out = dataclasses.replace(out, origin=value.origin.then(*op))
    return out


def as_float32(value: Any) -> Any:
    if isinstance(value, LazyArray) and value.dtype == "float32":
        return value  # nothing to cast: keep it a view of the publisher's bytes

    def cast(t: Any) -> Any:
        import torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.to(torch.float32)

    return _view(value, cast, _shape(value), "cast", "float32", dtype="float32")


def transposed(value: Any) -> Any:
    def tr(t: Any) -> Any:
        import torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.T.contiguous()

    shape = tuple(reversed(_shape(value)))
    return _view(value, tr, shape, "transpose")


def sliced(value: Any, dim: int, start: int, stop: int) -> Any:
    """value[..., start:stop, ...] along `dim`."""

    def cut(t: Any) -> Any:
        import torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.narrow(dim, start, stop - start).contiguous()

    shape = list(_shape(value))
    if not 0 <= start <= stop <= shape[dim]:
        raise CanonicalFileError(f"slice {start}:{stop} out of range for dimension {shape[dim]}")
    shape[dim] = stop - start
    return _view(value, cut, tuple(shape), "slice", dim, start, stop)


def scaled(value: Any, factor: float) -> Any:
    def mul(t: Any) -> Any:
        import torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t * factor

    return mapped(value, mul)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape)


def fold_norm_scaling_factor(tensors: dict[str, Any], factor: float) -> dict[str, Any]:
    """Fold a dataset-norm input scale s: SAE(s·x)/s == SAE'(x) with W_enc·s, W_dec/s,
    b_dec/s (b_enc and threshold unchanged)."""
    out = dict(tensors)
    out["W_enc"] = scaled(tensors["W_enc"], factor)
    out["W_dec"] = scaled(tensors["W_dec"], 1.0 / factor)
    out["b_dec"] = scaled(tensors["b_dec"], 1.0 / factor)
    return out


def require(tensors: Mapping[str, Any], names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CanonicalFileError(
            f"{where} lacks tensor(s) {', '.join(missing)} (it has: {', '.join(sorted(tensors))})"
        )
