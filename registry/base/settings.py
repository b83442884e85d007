"""Where saereg keeps what it writes: one cache root, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

from saereg.base.errors import SaeregError


def cache_dir() -> Path:
    """`$SAEREG_CACHE`, else `$XDG_CACHE_HOME/saereg`, else `~/.cache/saereg`."""
    explicit = os.environ.get("SAEREG_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "saereg"


IN_PLACE_ENV = "SAEREG_IN_PLACE"


class SettingError(SaeregError):
    """An environment variable saereg reads holds a value it does not understand."""


def in_place() -> bool:
    """`$SAEREG_IN_PLACE`: 1 (the default) lets cache entries read publisher files in
    place, 0 always writes self-contained files. Anything else is an error, not a guess."""
    raw = os.environ.get(IN_PLACE_ENV, "").strip()
    if raw in ("", "1"):
        return True
    if raw == "0":
        return False
    raise SettingError(
        f"{IN_PLACE_ENV}={raw[:40]!r} is not 0 or 1 (1, the default, reads publisher files "
        "in place; 0 writes self-contained cache entries); fix or unset it"
    )
