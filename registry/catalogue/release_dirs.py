"""Where release files live: the directory shipped with saereg, `SAEREG_RELEASES`, and
the directories plugin packages ship (read only when a name is not found in the first
two, so resolving a built-in release never loads a plugin)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from saereg.base import plugin_host
from saereg.base.errors import ReleaseFileError

#: `SAEREG_RELEASES`: extra release directories (os.pathsep-separated).
RELEASES_ENV = "SAEREG_RELEASES"
#: The installed `saereg` package (registry/ in a checkout).
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent

#: The models table, relative to a release directory (a subfolder, so that it is never
#: taken for a release file).
MODELS_FILE = "models/models.yaml"


def is_builtin(path: Path) -> bool:
    """Whether `path` is one of the release files shipped with saereg."""
    try:
        return path.resolve().parent == builtin_release_dir()
    except (OSError, RuntimeError):
        return False


def _shipped(name: str) -> Path:
    """A data folder shipped with saereg: inside the installed package (the wheel maps
    releases/ and schemas/ into it), or beside registry/ in a checkout."""
    package = _PACKAGE_ROOT
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    return package / name


def builtin_release_dir() -> Path:
    """The releases shipped with saereg."""
    return _shipped("releases")


def builtin_schema_dir() -> Path:
    """The JSON schemas shipped with saereg (release, model and canonical SAE config)."""
    return _shipped("schemas")


def release_files(directory: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ReleaseFileError(
            f"{directory}: cannot list release files: {exc.strerror or exc} (release "
            "directories hold *.yaml files; check SAEREG_RELEASES)"
        ) from None
    for name in names:
        if name.endswith(".yaml") and not name.startswith("."):
            yield directory / name


def release_names(directory: Path) -> list[str]:
    return [p.name[: -len(".yaml")] for p in release_files(directory)]


def env_release_dirs() -> list[Path]:
    """`SAEREG_RELEASES`: extra release directories (os.pathsep-separated), for release
    files kept outside any package — a lab's private SAEs, or a release being written."""
    raw = os.environ.get(RELEASES_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def extra_release_dirs() -> list[Path]:
    """`SAEREG_RELEASES`, then the directories plugins ship (this loads the plugins)."""
    return [*env_release_dirs(), *plugin_host.plugin_release_dirs()]


def release_dirs() -> list[Path]:
    """Every directory of release files: the built-in one, `SAEREG_RELEASES`, plugins'."""
    return [builtin_release_dir(), *extra_release_dirs()]


def all_release_names() -> list[str]:
    names: list[str] = []
    for d in release_dirs():
        names.extend(n for n in release_names(d) if n not in names)
    return names
