"""The sha256 of a safetensors file's tensor bytes, kept in the file's own header:
computed once when a file is written, compared whenever its content is verified
(integrity.py says when)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from saereg.store.tensors import CanonicalFileError, read_header

#: Header metadata key holding "sha256:<hex>" of every byte after the header.
DIGEST_KEY = "saereg_tensor_sha256"


#: What the header holds while the tensors are still being written (same length).
PLACEHOLDER = "sha256:" + "0" * 64


_CHUNK = 8 << 20


def data_span(path: Path) -> tuple[int, int]:
    """Byte range [start, end) of the tensor data in a safetensors file."""
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
    header, _ = read_header(path)
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    return 8 + n, 8 + n + end


def tensor_digest(path: Path) -> str:
    """'sha256:<hex>' of the tensor bytes of a safetensors file (everything the header
    describes after itself)."""
    start, end = data_span(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                raise CanonicalFileError(f"{path}: truncated tensor data")
            digest.update(chunk)
            left -= len(chunk)
    return "sha256:" + digest.hexdigest()


def stored_digest(path: Path) -> str | None:
    _, metadata = read_header(path)
    value = metadata.get(DIGEST_KEY)
    return value if isinstance(value, str) else None
