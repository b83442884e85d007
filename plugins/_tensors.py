"""Reading publisher tensor files lazily and safely, for the built-in formats.

Tensors are described first (shape, dtype from the file header) and read only when the
core writes them, one at a time, so converting never holds two copies of the weights.
Pickles are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import mmap
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from saereg.formats import (
    CODE_OF,
    FLOAT_DTYPES,
    CanonicalFileError,
    LazyArray,
    Origin,
    read_header_from,
)

#: Local files by repository path, and safetensors headers by file ({tensor: (code,
#: shape)}): the arguments of `Format.config_only`.
Files = Mapping[str, Path]
Headers = Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]]


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
            from safetensors import safe_open  # deferred: safetensors

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
    info = archive.getinfo(member)
    name = str(dtype.newbyteorder("="))
    if info.compress_type != zipfile.ZIP_STORED or dtype.byteorder == ">" or name not in CODE_OF:
        return None
    count = 1
    for n in shape:
        count *= int(n)
    if info.file_size != npy_header + count * dtype.itemsize:
        return None  # a truncated (or padded) member: numpy's reader says what is wrong
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + npy_header
    return Origin(path, member[: -len(".npy")], offset, tuple(shape), name)


def header_arrays(shapes: Mapping[str, tuple[str, tuple[int, ...]]]) -> dict[str, LazyArray]:
    """Tensors known only from a safetensors header ({name: (dtype code, shape)}), for
    `config_only`: a conversion built on them describes everything and reads nothing."""

    def unread() -> Any:
        raise RuntimeError("header-only tensor: config_only must not read weights")

    out = {}
    for name, (code, shape) in shapes.items():
        dtype = FLOAT_DTYPES.get(code)
        if dtype is None:
            raise CanonicalFileError(f"tensor {name!r} has dtype {code}")
        out[name] = LazyArray(tuple(shape), dtype, unread)
    return out


def npz_arrays(path: Path) -> dict[str, LazyArray]:
    """Every array of a .npz file, unread (shapes come from each member's .npy header).
    Uncompressed members carry their origin in the archive, so they can be mapped."""
    import numpy as np  # deferred: numpy

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
    return _torch_load(path, mmap=False)[0]


def torch_load_mapped(path: Path) -> tuple[dict[str, Any], bool]:
    """Like `torch_load`, but the tensors of zip-format files stay in the file
    (memory-mapped, private) until read. Returns (state dict, whether it is mapped);
    legacy-format pickles cannot be mapped and are read whole."""
    return _torch_load(path, mmap=True)


def _torch_load(path: Path, *, mmap: bool) -> tuple[dict[str, Any], bool]:
    import torch  # deferred: torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or "mmap" not in str(exc):
                raise
            mmap = False
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
    return dict(data), mmap


#: How much of a source matrix a streamed transpose reads at a time.
_BLOCK_BYTES = 8 << 20


def _drop_mapped_pages(t: Any) -> None:
    """Tell the kernel the pages behind a memory-mapped (private, file-backed) tensor are
    no longer needed, so they leave this process's RSS; a later read maps them again
    from the file. Only ever called on tensors `torch_load_mapped` mapped (on ordinary
    memory, MADV_DONTNEED would zero the data). Linux only; elsewhere a no-op."""
    madvise = _madvise()
    if madvise is None:
        return
    page = mmap.PAGESIZE
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    lo, hi = -(-start // page) * page, end // page * page
    if hi > lo:
        madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


_MADV_DONTNEED = 4  # Linux


@functools.lru_cache(maxsize=1)
def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None


def transposed_mapped(value: Any, mapped: bool, *, rows: int | None = None) -> LazyArray:
    """The transpose of a 2-d tensor, built block by block. When `mapped` (from
    `torch_load_mapped`), the source pages are released as it goes, so converting holds
    one copy of the tensor, not two."""

    def load() -> Any:
        import torch  # deferred: torch

        src = value
        out = torch.empty((src.shape[1], src.shape[0]), dtype=src.dtype)
        step = rows or max(1, _BLOCK_BYTES // max(1, src.shape[1] * src.element_size()))
        for i in range(0, src.shape[0], step):
            block = src[i : i + step]
            out[:, i : i + step] = block.T
            if mapped:
                _drop_mapped_pages(block)
        return out

    return LazyArray((int(value.shape[1]), int(value.shape[0])), _dtype_name(value), load)


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


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


def relu_jump_threshold(value: Any) -> Any:
    """The canonical threshold of a JumpReLU computed as ReLU(h) · 1[h > θ] (SAELens,
    Gemma Scope): canonical jumprelu is h · 1[h > θ] without the ReLU, which agrees for
    θ ≥ 0, and for θ < 0 the ReLU makes it h · 1[h > 0]; so the canonical threshold is
    max(θ, 0), exact in both cases. Thresholds are small ([d_sae]): they are read here,
    and only a threshold with a negative entry is replaced (the others stay views of the
    publisher's bytes, read in place)."""
    import torch  # deferred: torch

    loaded = value.load() if isinstance(value, LazyArray) else value
    t = torch.as_tensor(loaded)
    if not bool((t < 0).any()):
        return value
    return t.clamp(min=0)


def _view(
    value: Any, fn: Callable[[Any], Any], shape: tuple[int, ...], *op: Any, dtype: str | None = None
) -> Any:
    """Like `mapped` for a view the loader can redo (transpose, slice, dtype cast): the
    origin is kept, with `op` appended."""
    out = mapped(value, fn, shape=shape, dtype=dtype)
    if isinstance(value, LazyArray) and value.origin is not None:
        out = dataclasses.replace(out, origin=value.origin.then(*op))
    return out


def uniform_dtype(config: dict[str, Any], tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Tensors in one dtype (float32 if the file mixes them); sets config['dtype']."""
    dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values()}
    if len(dtypes) == 1:
        config["dtype"] = dtypes.pop()
        return dict(tensors)
    config["dtype"] = "float32"
    return {n: as_float32(t) for n, t in tensors.items()}


def as_float32(value: Any) -> Any:
    if isinstance(value, LazyArray) and value.dtype == "float32":
        return value  # nothing to cast: keep it a view of the publisher's bytes

    def cast(t: Any) -> Any:
        import torch  # deferred: torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.to(torch.float32)

    return _view(value, cast, _shape(value), "cast", "float32", dtype="float32")


def transposed(value: Any) -> Any:
    def tr(t: Any) -> Any:
        import torch  # deferred: torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.T.contiguous()

    shape = tuple(reversed(_shape(value)))
    return _view(value, tr, shape, "transpose")


def sliced(value: Any, dim: int, start: int, stop: int) -> Any:
    """value[..., start:stop, ...] along `dim`."""

    def cut(t: Any) -> Any:
        import torch  # deferred: torch

        t = torch.as_tensor(t) if not hasattr(t, "detach") else t
        return t.narrow(dim, start, stop - start).contiguous()

    shape = list(_shape(value))
    if not 0 <= start <= stop <= shape[dim]:
        raise CanonicalFileError(f"slice {start}:{stop} out of range for dimension {shape[dim]}")
    shape[dim] = stop - start
    return _view(value, cut, tuple(shape), "slice", dim, start, stop)


def scaled(value: Any, factor: float) -> Any:
    def mul(t: Any) -> Any:
        import torch  # deferred: torch

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
