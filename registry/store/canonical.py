"""The canonical file: one safetensors file per SAE, its config in the header metadata.

Writing streams tensor by tensor (a plugin may hand over lazy arrays that are read only
when written), so converting a large publisher file never holds two copies of the
weights; unchanged ranges of publisher files are copied by the kernel. Files appear
atomically: written to a temporary name, fsynced once, renamed. Entries that read their
large tensors in place from the publisher's files are described in in_place.py.
Reading the config needs only the header, never torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from saereg.base.errors import ArgumentError, SaeregError
from saereg.base.settings import cache_dir
from saereg.store.digest import DIGEST_KEY, PLACEHOLDER, tensor_digest
from saereg.store.in_place import referenced_dtypes, referenced_shapes
from saereg.store.sae_config import (
    LAYER_METADATA_KEY,
    METADATA_KEY,
    ConfigError,
    SAEConfig,
    validate_config,
)
from saereg.store.tempfiles import create_locked, remove_stale
from saereg.store.tensors import (
    CODE_OF,
    DTYPES,
    CanonicalFileError,
    LazyArray,
    read_header,
    tensor_shapes,
)


def _describe(value: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(value, LazyArray):
        return tuple(value.shape), value.dtype
    shape = tuple(int(s) for s in value.shape)
    dtype = str(value.dtype).removeprefix("torch.")
    return shape, dtype


def _as_bytes(value: Any) -> memoryview:
    """A little-endian, C-contiguous byte view of a numpy array or torch tensor."""
    if hasattr(value, "detach"):  # torch.Tensor
        import torch  # deferred: torch

        t = value.detach().to("cpu").contiguous()
        return memoryview(t.view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
    import numpy as np  # deferred: numpy

    arr = np.ascontiguousarray(value)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(arr).cast("B")


def encode_header(
    tensors: Mapping[str, tuple[tuple[int, ...], str]], metadata: Mapping[str, str]
) -> tuple[bytes, list[tuple[str, int]]]:
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    order = []
    for name in sorted(tensors):
        shape, dtype = tensors[name]
        if dtype not in CODE_OF:
            raise CanonicalFileError(f"tensor {name!r} has unsupported dtype {dtype}")
        n = 1
        for s in shape:
            n *= s
        size = n * DTYPES[CODE_OF[dtype]][1]
        header[name] = {
            "dtype": CODE_OF[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        order.append((name, size))
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, order


class TargetIsDirectory(SaeregError):
    """A directory stands where saereg must write a file (a cache entry, an export)."""


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it becomes `target` only on success.

    The temporary file stays locked until then, so temporary files of killed writers
    can be told from live ones and are removed here (see tempfiles.py)."""
    if target.is_dir():
        raise TargetIsDirectory(
            f"{target} is a directory, where saereg must write a file; nothing there is "
            "saereg's: move or remove that directory and retry"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent)
    fd, tmp = create_locked(target)
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_safetensors(
    path: Path,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str],
    progress: bool = False,
    *,
    digest: bool = False,
) -> None:
    """Stream `tensors` (torch, numpy or LazyArray) into a safetensors file, atomically.

    Unchanged ranges of publisher files are copied by the kernel (copy_file_range), other
    tensors written straight from their memory: no intermediate copies, one fsync.

    With `digest`, the sha256 of the tensor bytes goes into the header (integrity.py),
    and the file is read back and checked against it before it takes its name."""
    described = {name: _describe(value) for name, value in tensors.items()}
    if digest:
        metadata = {**metadata, DIGEST_KEY: PLACEHOLDER}
    header, order = encode_header(described, metadata)
    hasher = hashlib.sha256() if digest else None
    bar = _progress_bar(sum(size for _, size in order), f"converting {path.name}", progress)
    pool = ThreadPoolExecutor(1) if digest else None
    with bar, atomic_path(path) as tmp, tmp.open("wb", buffering=0) as fh, pool or nullcontext():
        fd = fh.fileno()
        _write_all(fd, memoryview(header))
        for name, size in order:
            value = tensors[name]
            if _copy_origin(fd, value, size):
                if hasher is not None:  # the kernel copied it: hash the source range
                    _hash_range(hasher, value.origin.path, value.origin.offset, size)
                bar.update(size)
                continue
            if isinstance(value, LazyArray):
                value = value.load()
                if _describe(value) != described[name]:
                    raise CanonicalFileError(
                        f"tensor {name!r} loaded as {_describe(value)} but was announced as "
                        f"{described[name]}"
                    )
            data = _as_bytes(value)
            if data.nbytes != size:
                raise CanonicalFileError(f"tensor {name!r}: {data.nbytes} bytes, expected {size}")
            # Hash (in a thread: hashlib releases the GIL) while the same bytes are written.
            hashed = pool.submit(hasher.update, data) if pool and hasher else None
            _write_all(fd, data)
            if hashed is not None:
                hashed.result()
            bar.update(size)
            del value, data
        if hasher is not None:
            _seal(fd, tmp, header, hasher)


def _hash_range(hasher: Any, path: Path, offset: int, size: int) -> None:
    with path.open("rb") as src:
        src.seek(offset)
        while size > 0:
            chunk = src.read(min(size, 8 << 20))
            if not chunk:
                raise CanonicalFileError(f"{path}: unexpected end of file")
            hasher.update(chunk)
            size -= len(chunk)


def _seal(fd: int, tmp: Path, header: bytes, hasher: Any) -> None:
    """Put the digest of the bytes written into the header, then read the file back and
    check it, so a cache entry is never born corrupt."""
    written = "sha256:" + hasher.hexdigest()
    field = json.dumps({DIGEST_KEY: PLACEHOLDER}, separators=(",", ":"))[1:-1].encode()
    sealed = header.replace(field, field.replace(PLACEHOLDER.encode(), written.encode()), 1)
    done = 0
    while done < len(sealed):
        done += os.pwrite(fd, sealed[done:], done)
    if tensor_digest(tmp) != written:
        raise CanonicalFileError(
            f"{tmp}: the bytes read back differ from those written (disk full or failing?); "
            "nothing was cached"
        )


def _write_all(fd: int, data: memoryview) -> None:
    while data.nbytes:
        data = data[os.write(fd, data) :]


def _copy_origin(fd: int, value: Any, size: int) -> bool:
    """Copy an untransformed publisher range file-to-file; False if `value` is not one."""
    origin = value.origin if isinstance(value, LazyArray) else None
    if origin is None or origin.ops or (origin.shape, origin.dtype) != _describe(value):
        return False
    with origin.path.open("rb") as src:
        if os.fstat(src.fileno()).st_size < origin.offset + size:
            raise CanonicalFileError(f"{origin.path}: too short for tensor {origin.tensor!r}")
        offset, left = origin.offset, size
        copy = getattr(os, "copy_file_range", None)
        while left:
            try:
                n = copy(src.fileno(), fd, left, offset) if copy else 0
            except OSError:  # e.g. across file systems on old kernels
                copy, n = None, 0
            if not n:
                src.seek(offset)
                chunk = src.read(min(left, 64 << 20))
                if not chunk:
                    raise CanonicalFileError(f"{origin.path}: unexpected end of file")
                _write_all(fd, memoryview(chunk))
                n = len(chunk)
            offset += n
            left -= n
    return True


class _NoBar(nullcontext):  # type: ignore[type-arg]
    """A disabled progress bar, without importing tqdm (~0.1 s)."""

    def update(self, n: int) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from huggingface_hub.utils import tqdm  # deferred: huggingface_hub

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc)


def read_config(path: Path, *, full_schema: bool = False) -> SAEConfig:
    """The canonical config of a canonical file (header only; no torch).

    Files are checked structurally; `full_schema=True` also validates against
    schemas/sae.v1.json (every file saereg writes was validated so when written)."""
    header, metadata = read_header(path)
    raw = metadata.get(METADATA_KEY)
    if raw is None and LAYER_METADATA_KEY in metadata:
        raise CanonicalFileError(
            f"{path}: one layer file of a multi-layer dictionary, not a single SAE's "
            "canonical file (`saereg inspect` describes it); load the dictionary with "
            "saereg.load_sae(REF, layers=[...])"
        )
    if raw is None:
        raise CanonicalFileError(
            f"{path}: not a saereg canonical file (no '{METADATA_KEY}' in its metadata); "
            "convert publisher files with `saereg fetch`"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CanonicalFileError(f"{path}: corrupted saereg config ({exc})") from None
    cfg = SAEConfig.from_dict(data, str(path), full_schema=full_schema)
    check_shapes(cfg, entry_shapes(cfg, header), str(path))
    return cfg


def entry_shapes(cfg: SAEConfig, header: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of an entry's tensors: its file's own and, for an in-place entry, those
    it reads from publisher files."""
    return {**tensor_shapes(header), **referenced_shapes(cfg)}


def shape_problems(
    expected: Mapping[str, tuple[int, ...]],
    optional: Mapping[str, tuple[int, ...]],
    shapes: Mapping[str, tuple[int, ...]],
) -> list[str]:
    """What is wrong with a file's tensor `shapes`: an expected tensor missing or of
    another shape, an optional one of another shape, anything else present. Single SAEs
    and dictionary layers are checked alike (layer_config.check_layer_shapes)."""
    problems = []
    for name, shape in expected.items():
        if name not in shapes:
            problems.append(f"missing tensor {name!r} (expected shape {list(shape)})")
        elif tuple(shapes[name]) != shape:
            problems.append(f"{name} has shape {list(shapes[name])}, expected {list(shape)}")
    for name, shape in shapes.items():
        if name in expected:
            continue
        if name in optional:
            if tuple(shape) != optional[name]:
                problems.append(f"{name} has shape {list(shape)}, expected {list(optional[name])}")
        else:
            problems.append(f"unexpected tensor {name!r}")
    return problems


def check_shapes(cfg: SAEConfig, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Every expected tensor present with its exact shape; nothing unexpected."""
    problems = shape_problems(cfg.expected_shapes(), cfg.optional_shapes(), shapes)
    if problems:
        more = f"; and {len(problems) - 5} more problems" if len(problems) > 5 else ""
        raise CanonicalFileError(f"{where}: " + "; ".join(problems[:5]) + more)


def write_canonical(
    path: Path, cfg: SAEConfig, tensors: Mapping[str, Any], progress: bool = False
) -> Path:
    validate_config(cfg.to_dict(), str(path))
    shapes = {n: _describe(v)[0] for n, v in tensors.items()}
    check_shapes(cfg, {**shapes, **referenced_shapes(cfg)}, str(path))
    dtypes = {_describe(v)[1] for v in tensors.values()} | referenced_dtypes(cfg)
    if dtypes != {cfg.dtype}:
        raise ConfigError(f"{path}: tensors have dtypes {sorted(dtypes)}, config says {cfg.dtype}")
    write_safetensors(
        path, tensors, {METADATA_KEY: cfg.to_json(), "format": "pt"}, progress, digest=True
    )
    return path


# --------------------------------------------------------------------------- cache


def canonical_cache_path(release: str, sae_id: str, revision: str | None) -> Path:
    """Where the converted SAE for (release, id, resolved revision) lives."""
    rev = revision or "unversioned"
    folder = quote(release, safe="")
    if folder in ("", ".", ".."):  # never a path that leaves canonical/
        folder = folder.replace(".", "%2E") or "%00"
    return (
        cache_dir()
        / "canonical"
        / folder
        / f"{quote(sae_id, safe='')}@{quote(rev, safe='')}.safetensors"
    )


def fold_input_scale(tensors: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The same SAE without its constant input scale s (for layouts that have none):
    SAE(s·x)/s == SAE'(x) with W_enc·s, and W_dec, b_dec, W_skip divided by s."""
    out = dict(tensors)
    out["W_enc"] = tensors["W_enc"] * factor
    for name in ("W_dec", "b_dec", "W_skip"):
        if name in tensors:
            out[name] = tensors[name] * (1.0 / factor)
    return out


class NotExportableError(ArgumentError):
    """Export was asked of what no single-SAE layout holds: a multi-layer dictionary or
    one of its layer files (exit code 2)."""


#: What export takes, said in every refusal.
EXPORTABLE = (
    "export writes one single-hook SAE or transcoder (a catalogue entry of kind sae or "
    "transcoder, a local folder, file or hf: repository holding one, or its canonical "
    "file) in SAELens' or sparsify's layout"
)


def _dictionary_advice(kind: str, ref: str, layer: int | str) -> str:
    """What to do instead, per kind of dictionary."""
    load = f"saereg.load_sae({ref!r}, layers=[{layer}])"
    if kind == "transcoder_set":
        return (
            f"each layer of a transcoder set is a single transcoder: `{load}.layer({layer})"
            f".save('layer_{layer}.safetensors')` writes one as a canonical file, which "
            "`saereg export` takes"
        )
    if kind == "clt":
        return (
            "load it with saereg.load_sae (no SAELens or sparsify class runs a cross-layer "
            f"transcoder); `{load}.layer({layer}).save('layer_{layer}.safetensors')` writes "
            "one layer as a single transcoder with its decoders summed over the target "
            "layers (the mntss_clt releases' per-layer form), which `saereg export` takes"
        )
    return "load it with saereg.load_sae (no SAELens or sparsify class runs one)"


def dictionary_refusal(ref: str, kind: str, n_layers: int | None) -> NotExportableError:
    """The error for `saereg export` of a multi-layer dictionary reference."""
    size = f"{n_layers}-layer " if n_layers else ""
    return NotExportableError(
        f"{ref} is a {size}{kind}, a multi-layer dictionary: {EXPORTABLE}. To use it, "
        + _dictionary_advice(kind, ref, "L")
    )


def layer_file_refusal(path: Path | str, cfg: Any) -> NotExportableError:
    """The error for exporting one canonical layer file of a multi-layer dictionary
    (`cfg` its LayerConfig: kind, layer, n_layers, source)."""
    src = getattr(cfg, "source", {}) or {}
    ref = f"{src.get('release')}/{src.get('sae_id')}"
    kind, layer = getattr(cfg, "kind", "dictionary"), getattr(cfg, "layer", "L")
    return NotExportableError(
        f"{path} is layer {layer} of {ref}, a {getattr(cfg, 'n_layers', '?')}-layer {kind} "
        f"(a saereg layer file, not an SAE's canonical file): {EXPORTABLE}. Instead, "
        + _dictionary_advice(kind, ref, layer)
    )


def check_exportable(cfg: Any, where: str = "this config") -> None:
    """Exporters take one SAE's canonical config; anything else is refused with what
    export takes and what to do instead."""
    if isinstance(cfg, SAEConfig):
        return
    if hasattr(cfg, "layer") and hasattr(cfg, "n_layers"):  # a LayerConfig (layer_config.py)
        raise layer_file_refusal(where, cfg)
    raise NotExportableError(f"{where} is not a canonical SAE config: {EXPORTABLE}")


def _any_negative(value: Any) -> bool:
    import torch  # deferred: torch

    return bool((torch.as_tensor(value.load() if hasattr(value, "load") else value) < 0).any())


def export_saelens(cfg: SAEConfig, tensors: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the SAELens folder layout (cfg.json + sae_weights.safetensors, v6 config)."""
    check_exportable(cfg)
    # (topk_relu means something for TopK SAEs only: a layer view of a dictionary,
    # whatever its architecture, says false)
    if cfg.architecture == "temporal" or (cfg.architecture == "topk" and not cfg.topk_relu):
        what = "temporal SAEs" if cfg.architecture == "temporal" else "TopK without a ReLU"
        raise CanonicalFileError(
            f"no SAELens layout runs {what} with this math; keep the canonical file"
        )
    negative = "threshold" in tensors and _any_negative(tensors["threshold"])
    if cfg.architecture == "jumprelu" and negative:
        raise CanonicalFileError(
            "this JumpReLU has thresholds below zero, so it lets negative latents through "
            "(h · 1[h > θ], circuit-tracer's math); SAELens' JumpReLU applies a ReLU "
            "first and would silently change them: keep the canonical file"
        )
    if cfg.normalization["kind"] == "scale":
        tensors = fold_input_scale(tensors, float(cfg.normalization["factor"]))
        cfg = replace(cfg, normalization={"kind": "none"})
    arch = cfg.architecture
    if cfg.transcoder:
        arch = {"relu": "transcoder", "jumprelu": "jumprelu_transcoder"}.get(arch, "")
        if not arch:
            raise CanonicalFileError(f"SAELens has no {cfg.architecture} transcoder class")
        if "W_skip" in tensors:
            arch = arch.replace("transcoder", "skip_transcoder")
    else:
        arch = {"relu": "standard"}.get(arch, arch)
    saelens_cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalization["kind"],
        "reshape_activations": cfg.reshape,
        "metadata": {
            "sae_lens_version": "6.0.0",
            "model_name": cfg.model,
            "hook_name": cfg.hook_name,
            "hook_name_out": cfg.hook_name_out,
            "context_size": cfg.context_size,
            "dataset_path": cfg.dataset,
            "neuronpedia_id": cfg.neuronpedia,
            "saereg_source": dict(cfg.source),
        },
    }
    if cfg.architecture == "topk":
        saelens_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    if cfg.transcoder:
        saelens_cfg["d_out"] = cfg.d_out
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "cfg.json"
    weights = out_dir / "sae_weights.safetensors"
    write_safetensors(weights, tensors, {"format": "pt"})
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(json.dumps(saelens_cfg, indent=2) + "\n", encoding="utf-8")
    return [cfg_path, weights]
