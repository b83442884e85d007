"""The mode a new file gets from `open()`: 0o666 less the process's umask.

`tempfile.mkstemp` creates files 0600 whatever the umask, so a file written through a
temporary name and renamed (every cache entry, export and `SAE.save`) would be private
to its writer; a colleague could not read an exported SAE or a lab's shared cache. The
writers give their temporary file this mode instead, as `open()` would have;
`write_bytes` is the small-file writer that does both (indexes, compiled copies).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The umask, read without changing it where the system says it (Linux 4.7+)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    return 0o666 & ~current_umask()


def honour_umask(fd: int) -> None:
    """Give a file created private by mkstemp the mode `open()` would have given it."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no fchmod (Windows)
        os.fchmod(fd, new_file_mode())


def write_bytes(target: Path, data: bytes, mode: int | None = None) -> bool:
    """Write `data` at `target` atomically (a reader sees the old file or the new one,
    never half of one); False if it could not be written. `mode`: the file's permissions
    (default: what `open()` would give, the umask honoured)."""
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        honour_umask(fd)  # readable by the colleagues a shared cache is shared with
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
        return True
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
