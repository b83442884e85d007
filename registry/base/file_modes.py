"""The mode a new file gets from `open()`: 0o666 less the process's umask.

`tempfile.mkstemp` creates files 0600 whatever the umask, so a file written through a
temporary name and renamed (every cache entry, export and `SAE.save`) would be private
to its writer; a colleague could not read an exported SAE or a lab's shared cache. The
writers give their temporary file this mode instead, as `open()` would have.
"""

from __future__ import annotations

import contextlib
import os


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
