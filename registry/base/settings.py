"""Where saereg keeps what it writes: one cache root, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$SAEREG_CACHE`, else `$XDG_CACHE_HOME/saereg`, else `~/.cache/saereg`."""
    explicit = os.environ.get("SAEREG_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "saereg"
