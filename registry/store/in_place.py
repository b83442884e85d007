"""In-place entries: tensors read straight from the publisher's files in the HF cache.

When a conversion only renames, transposes or slices tensors of a file that can be
memory-mapped (safetensors, uncompressed npz), writing them again would cost a second
copy on disk and the time to write it. Such an entry is still one canonical safetensors
file with the config in its header, but it holds only the tensors that really changed;
the config's ``storage`` block names, for every other tensor, the Hugging Face cache blob
(path relative to the cache, repository, revision, sha256, size), the byte offset, dtype
and shape of its data there, and the views to apply (transpose, slice, or a dtype cast,
which is done in memory when loading: the file on disk stays the publisher's)::

    "storage": {"kind": "in_place",
                "files": {"L5/params.safetensors": {"blob": "models--org--repo/blobs/<sha256>",
                          "repo_id": "org/repo", "revision": "<commit>",
                          "sha256": "<sha256>", "size": 123}},
                "tensors": {"W_enc": {"file": "L5/params.safetensors", "tensor": "encoder.weight",
                            "offset": 96, "dtype": "float32", "source_shape": [32, 16],
                            "shape": [16, 32], "ops": [["transpose"]]}}}

Loading maps each referenced range copy-on-write (nothing is read until used; in-place
changes to a tensor never reach the file). A blob is identified by its sha256 (the HF
cache names LFS blobs by it), so a new upstream revision never changes what an existing
entry reads; a blob deleted from the HF cache makes the entry invalid (`load_sae` then
fetches and converts again; `SAE.load` says what is missing).

Set ``SAEREG_IN_PLACE=0`` to always write self-contained canonical files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saereg.base.settings import in_place
from saereg.store.fetch import hf_cache_dir
from saereg.store.tensors import (
    CODE_OF,
    DTYPES,
    CanonicalFileError,
    LazyArray,
    Origin,
    read_header,
)

if TYPE_CHECKING:
    import torch

    from saereg.store.sae_config import SAEConfig

KIND = "in_place"
_FLOATS = ("float16", "bfloat16", "float32", "float64")


class SourceFileError(CanonicalFileError):
    """A publisher file an in-place entry reads from is missing or changed."""


def in_place_enabled() -> bool:
    """`$SAEREG_IN_PLACE` (0 or 1; anything else raises SettingError)."""
    return in_place()


def _shape_after(shape: tuple[int, ...], ops: Any) -> tuple[int, ...]:
    out = list(shape)
    for op in ops:
        if op[0] == "transpose":
            out.reverse()
        elif op[0] == "slice":
            _, dim, start, stop = op
            if dim >= len(out) or stop > out[dim]:
                raise CanonicalFileError(f"view {op!r} is out of range for shape {out}")
            out[dim] = stop - start
        elif op[0] != "cast":
            raise CanonicalFileError(f"unknown view operation {op!r} in an in-place entry")
    return tuple(out)


def _dtype_after(dtype: str, ops: Any) -> str:
    for op in ops:
        if op[0] == "cast":
            dtype = op[1]
    return dtype


def _size(dtype: str) -> int:
    return DTYPES[CODE_OF[dtype]][1]


def _widening(dtype: str, ops: Any) -> bool:
    """Whether every cast keeps every value exactly (float16/bfloat16 → float32 → float64)."""
    for op in ops:
        if op[0] == "cast":
            if op[1] not in ("float32", "float64") or _size(op[1]) < _size(dtype):
                return False
            dtype = op[1]
    return True


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    n = _size(dtype)
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------------- planning


def plan_in_place(
    tensors: Mapping[str, Any],
    local_files: Mapping[str, Path],
    sha256: Mapping[str, str],
    repo_id: str | None,
    revision: str | None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Split a conversion's tensors into references (views of HF cache blobs) and the
    tensors the entry file must hold. Returns (storage block or None, tensors to write)."""
    if not (in_place_enabled() and repo_id):
        return None, dict(tensors)
    root = hf_cache_dir().resolve()
    by_real = {}
    for repo_path, local in local_files.items():
        real = local.resolve()
        if real.is_relative_to(root) and repo_path in sha256:
            by_real[real] = repo_path
    files: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    keep: dict[str, Any] = {}
    for name, value in tensors.items():
        origin = value.origin if isinstance(value, LazyArray) else None
        repo_path = by_real.get(origin.path.resolve()) if origin is not None else None
        if repo_path is None or not _consistent(value):
            keep[name] = value
            continue
        assert origin is not None
        real = origin.path.resolve()
        if origin.offset + _nbytes(origin.shape, origin.dtype) > real.stat().st_size:
            keep[name] = value  # a plugin bug; writing it will fail with a clear error
            continue
        files[repo_path] = {
            "blob": real.relative_to(root).as_posix(),
            "repo_id": repo_id,
            "revision": revision,
            "sha256": sha256[repo_path],
            "size": real.stat().st_size,
        }
        refs[name] = _reference(repo_path, origin)
    if not refs:
        return None, keep
    return {"kind": KIND, "files": files, "tensors": refs}, keep


def _consistent(value: LazyArray) -> bool:
    """The origin's data, with its views, is exactly what the array announces (and is
    aligned for its dtype, so it can be mapped)."""
    o = value.origin
    if o is None or o.dtype not in _FLOATS or o.offset % _size(o.dtype):
        return False
    try:
        after = _shape_after(o.shape, o.ops)
    except (CanonicalFileError, IndexError, TypeError, ValueError):
        return False
    return (
        all(_valid_op(list(op)) for op in o.ops)
        and after == tuple(value.shape)
        and _dtype_after(o.dtype, o.ops) == value.dtype
    )


def _reference(repo_path: str, origin: Origin) -> dict[str, Any]:
    return {
        "file": repo_path,
        "tensor": origin.tensor,
        "offset": origin.offset,
        "dtype": origin.dtype,
        "source_shape": list(origin.shape),
        "shape": list(_shape_after(origin.shape, origin.ops)),
        "ops": [list(op) for op in origin.ops],
    }


# --------------------------------------------------------------------------- reading


def referenced(cfg: SAEConfig) -> dict[str, Mapping[str, Any]]:
    """{tensor name: reference} of an in-place entry ({} for a self-contained file)."""
    storage = cfg.storage
    if not storage:
        return {}
    _check_storage(storage)
    return dict(storage["tensors"])


def _valid_op(op: Any) -> bool:
    if not isinstance(op, list) or not op:
        return False
    if op == ["transpose"]:
        return True
    if op[0] == "cast":
        return len(op) == 2 and op[1] in _FLOATS
    return (
        op[0] == "slice"
        and len(op) == 4
        and all(isinstance(v, int) and v >= 0 for v in op[1:])
        and op[2] <= op[3]
    )


def _check_storage(storage: Mapping[str, Any]) -> None:
    """The structure the loader relies on (the schema says the same; files are read
    without jsonschema)."""

    def bad(what: str) -> CanonicalFileError:
        return CanonicalFileError(f"invalid storage block in canonical config: {what}")

    if storage.get("kind") != KIND:
        raise bad(f"unknown kind {storage.get('kind')!r}")
    files, tensors = storage.get("files"), storage.get("tensors")
    if not isinstance(files, Mapping) or not isinstance(tensors, Mapping):
        raise bad("files and tensors must be mappings")
    for path, rec in files.items():
        if not (
            isinstance(rec, Mapping)
            and isinstance(rec.get("blob"), str)
            and isinstance(rec.get("size"), int)
            and isinstance(rec.get("sha256"), str)
        ):
            raise bad(f"file {path!r}")
    for name, ref in tensors.items():
        ok = (
            isinstance(ref, Mapping)
            and ref.get("file") in files
            and isinstance(ref.get("offset"), int)
            and ref.get("dtype") in _FLOATS
            and all(isinstance(ref.get(k), list) for k in ("shape", "source_shape", "ops"))
            and all(_valid_op(op) for op in ref["ops"])
        )
        if not ok:
            raise bad(f"tensor {name!r}")


def referenced_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    return {name: tuple(ref["shape"]) for name, ref in referenced(cfg).items()}


def referenced_dtypes(cfg: SAEConfig) -> set[str]:
    return {_dtype_after(ref["dtype"], ref["ops"]) for ref in referenced(cfg).values()}


def source_files(cfg: SAEConfig) -> dict[str, Mapping[str, Any]]:
    """{repository path: file record} of the publisher files an entry reads from."""
    return dict((cfg.storage or {}).get("files") or {})


def blob_path(record: Mapping[str, Any]) -> Path:
    blob = Path(record["blob"])
    if blob.is_absolute() or ".." in blob.parts:
        raise CanonicalFileError(f"in-place entry names a blob outside the HF cache: {blob}")
    return hf_cache_dir() / blob


def missing_sources(cfg: SAEConfig) -> list[str]:
    """Why the publisher files of an in-place entry cannot be read (cheap: stat only)."""
    problems = []
    for repo_path, record in source_files(cfg).items():
        where = f"{record.get('repo_id')}/{repo_path} (revision {record.get('revision')})"
        path = blob_path(record)
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{where} is no longer in the Hugging Face cache ({path})")
            continue
        if size != record["size"]:
            problems.append(f"{where} has {size} bytes in the HF cache, expected {record['size']}")
    return problems


def check_sources(cfg: SAEConfig, where: str) -> None:
    problems = missing_sources(cfg)
    if problems:
        src = cfg.source
        raise SourceFileError(
            f"{where}: this entry reads its weights in place from publisher files, but "
            + "; ".join(problems)
            + f". Run `saereg fetch {src.get('release')}/{src.get('sae_id')} --force` "
            "(or load_sae again) to download and convert it again."
        )


def _map(
    storage: torch.UntypedStorage, offset: int, nbytes: int, dtype: torch.dtype
) -> torch.Tensor:
    """`nbytes` at `offset` of a mapped file, as a flat tensor of `dtype` (no copy)."""
    import torch  # deferred: torch

    t = torch.empty(0, dtype=torch.uint8)
    t.set_(storage, offset, (nbytes,))
    return t.view(dtype)


def _mapped_file(path: Path) -> torch.UntypedStorage:
    """The whole file mapped private and copy-on-write, as safetensors maps its files
    (no file descriptor stays open; pages are read when first used)."""
    import torch  # deferred: torch

    size = path.stat().st_size
    if size == 0:
        return torch.UntypedStorage(0)
    return torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)


def apply_ops(t: torch.Tensor, ops: Any) -> torch.Tensor:
    import torch  # deferred: torch

    for op in ops:
        if op[0] == "transpose":
            t = t.permute(*reversed(range(t.dim())))
        elif op[0] == "cast":
            t = t.to(getattr(torch, op[1]))
        else:
            _, dim, start, stop = op
            t = t.narrow(dim, start, stop - start)
    return t


def read_tensors(
    path: Path, cfg: SAEConfig, device: str | torch.device, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Every tensor of a canonical entry on `device`: the entry file's own tensors and,
    for an in-place entry, views of the publisher's files (mapped, not copied, on CPU).
    With `dtype`, referenced tensors are cast once, straight from the publisher's dtype
    (the same values as through the entry's own cast when that cast only widens)."""
    import torch  # deferred: torch
    from safetensors.torch import load_file  # deferred: safetensors

    device = torch.device(device)
    if device.type == "meta":  # shapes and dtypes only (safetensors maps no meta tensors)
        return _meta_tensors(path, cfg, dtype)
    tensors = load_file(path, device=str(device))
    refs = referenced(cfg)
    if not refs:
        return tensors
    check_sources(cfg, str(path))
    files = source_files(cfg)
    maps: dict[str, torch.UntypedStorage] = {}
    for name, ref in refs.items():
        record = files[ref["file"]]
        shape = tuple(ref["source_shape"])
        nbytes = _nbytes(shape, ref["dtype"])
        if ref["offset"] < 0 or ref["offset"] + nbytes > record["size"]:
            raise SourceFileError(f"{path}: tensor {name} lies outside {ref['file']}")
        if _shape_after(shape, ref["ops"]) != tuple(ref["shape"]):
            raise SourceFileError(f"{path}: the views of tensor {name} do not give its shape")
        if ref["file"] not in maps:
            maps[ref["file"]] = _mapped_file(blob_path(record))
        flat = _map(maps[ref["file"]], ref["offset"], nbytes, getattr(torch, ref["dtype"]))
        ops = ref["ops"]
        if dtype is not None and _widening(ref["dtype"], ops):
            ops = [op for op in ops if op[0] != "cast"]
        t = apply_ops(flat.reshape(shape), ops)
        if dtype is not None:
            t = t.to(dtype)
        if tuple(t.shape) != tuple(ref["shape"]):
            raise SourceFileError(f"{path}: tensor {name} maps to {list(t.shape)}")
        tensors[name] = t if device.type == "cpu" else t.to(device)
    return tensors


def _meta_tensors(path: Path, cfg: SAEConfig, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """What `read_tensors` gives, on the meta device: every tensor's shape and dtype
    (`dtype`, else the entry's own or, in place, the publisher's after its casts)."""
    import torch  # deferred: torch

    header, _ = read_header(path)
    kinds = {n: DTYPES[i["dtype"]][0] for n, i in header.items()}
    shapes = {n: tuple(i["shape"]) for n, i in header.items()}
    for name, ref in referenced(cfg).items():
        kinds[name] = _dtype_after(ref["dtype"], ref["ops"])
        shapes[name] = tuple(ref["shape"])
    return {
        name: torch.empty(shape, dtype=dtype or getattr(torch, kinds[name]), device="meta")
        for name, shape in shapes.items()
    }
