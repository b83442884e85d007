"""Temporary files of atomic writes, and removing those their writers left behind.

A writer creates ``.NAME.XXXX.tmp`` beside its target and holds an exclusive `flock` on
it until the rename; the lock dies with the process. So a temporary file that is not
locked (and old enough that its writer has had time to lock it) belongs to a writer that
was killed, and can go. Where `fcntl` is missing (Windows), only files a day old are
removed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".tmp"
#: A writer locks its file microseconds after creating it; younger files are left alone.
MIN_AGE_S = 10.0
#: Without locks, only this old a file is presumed abandoned.
UNLOCKED_AGE_S = 24 * 3600.0


def create_locked(target: Path) -> tuple[int, Path]:
    """A new temporary file beside `target`, locked while the returned fd stays open."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=SUFFIX)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(name)


def remove_stale(directory: Path, min_age_s: float = MIN_AGE_S) -> int:
    """Remove temporary files of dead writers in `directory`; return how many went."""
    removed = 0
    now = time.time()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(SUFFIX)]
    except OSError:
        return 0
    for name in names:
        path = directory / name
        try:
            if now - path.stat().st_mtime < (min_age_s if fcntl else UNLOCKED_AGE_S):
                continue
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
