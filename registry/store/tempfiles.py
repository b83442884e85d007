"""Temporary files of atomic writes, and removing those their writers left behind.

A writer creates ``.NAME.XXXX.tmp`` beside its target (so the final rename stays on one
file system and is atomic: readers on any node see the old file or the whole new one,
never a partial one), with the mode `open()` would give it (the umask decides who may
read it, see base/file_modes.py), and holds an exclusive `flock` on it until the rename;
the lock dies with the process. So a temporary file that is not locked (and old enough
that its writer has had time to lock it) belongs to a writer that was killed, and can go.

Locks cannot always tell that: where `fcntl` is missing (Windows), where `flock` fails
(some NFS mounts answer ENOLCK), and on network file systems, where a lock taken on one
node may be invisible on another (NFS, CIFS, Lustre, GPFS, FUSE mounts), a file is
presumed abandoned only when it is a day old. A cache several nodes write into is
therefore safe: a live writer's file is never removed under it, whatever the locks do.
Removal is best effort: files this user may not delete (a shared cache written by a
colleague) are left alone, silently.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from saereg.base.file_modes import honour_umask

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".tmp"
#: A writer locks its file microseconds after creating it; younger files are left alone.
MIN_AGE_S = 10.0
#: Without locks that can be trusted, only this old a file is presumed abandoned.
UNLOCKED_AGE_S = 24 * 3600.0
#: File system types whose locks may not be seen by other nodes (prefixes of the type).
NETWORK_FS = ("nfs", "cifs", "smb", "lustre", "gpfs", "fuse", "9p", "afs", "ceph", "glusterfs")


def create_locked(target: Path) -> tuple[int, Path]:
    """A new temporary file beside `target`, locked (where locks work) while the returned
    fd stays open, with the mode `open()` would have given it."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=SUFFIX)
    honour_umask(fd)
    if fcntl is not None:
        with contextlib.suppress(OSError):  # ENOLCK and kin: removal falls back on age
            fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(name)


def fs_type(path: Path) -> str:
    """The type of the file system holding `path` ('' where /proc/mounts is missing)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return ""
    best, kind = "", ""
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def locks_trusted(directory: Path) -> bool:
    """Whether an unlocked temporary file in `directory` proves its writer is dead."""
    return fcntl is not None and not fs_type(directory).startswith(NETWORK_FS)


def remove_stale(directory: Path, min_age_s: float = MIN_AGE_S) -> int:
    """Remove temporary files of dead writers in `directory`; return how many went."""
    removed = 0
    now = time.time()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(SUFFIX)]
    except OSError:
        return 0
    if not names:
        return 0
    trusted = locks_trusted(directory)
    for name in names:
        path = directory / name
        try:
            if now - path.stat().st_mtime < (min_age_s if trusted else UNLOCKED_AGE_S):
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if trusted:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:
            continue  # not ours to delete (a read-only or colleague's cache)
        finally:
            os.close(fd)
    return removed
