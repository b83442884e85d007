"""Finding, blocking and loading plugins.

Plugins are found through the ``saereg`` entry-point group of every installed
distribution. `SAEREG_DISABLE_PLUGINS` is the kill switch: ``1``/``all`` disables
every plugin not shipped with saereg itself; a comma-separated list disables plugins by
entry-point name (built-ins included, should one misbehave).

This module only loads plugins and calls their hooks; what the hooks return is checked by
the layer that uses it (formats by `saereg.formats`, release directories by
`saereg.catalogue.release_dirs`). Plugins are loaded at most once per process, and only
when something asks for them: resolving a built-in release never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from saereg.base.file_modes import write_bytes
from saereg.base.settings import cache_dir

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    import pluggy

DISABLE_ENV = "SAEREG_DISABLE_PLUGINS"
#: The entry-point group plugins register in (hookspecs.GROUP, without importing pluggy).
GROUP = "saereg"


class PluginInfo(NamedTuple):
    """One entry point of the group: where it comes from, and whether it loaded.

    (A named tuple, not a dataclass: this module is imported on the resolve path, and a
    dataclass costs about a millisecond to define.)"""

    name: str
    distribution: str
    version: str
    builtin: bool
    enabled: bool
    module: str
    formats: tuple[str, ...] = ()
    error: str | None = None


class LoadedPlugins:
    """The pluggy manager holding every enabled plugin, and what was found of each."""

    __slots__ = ("infos", "manager")

    def __init__(self, manager: pluggy.PluginManager, infos: tuple[PluginInfo, ...]) -> None:
        self.manager, self.infos = manager, infos


def _blocked_names() -> tuple[bool, set[str]]:
    raw = os.environ.get(DISABLE_ENV, "").strip()
    if raw.lower() in {"1", "all", "true", "yes"}:
        return True, set()
    return False, {n.strip() for n in raw.split(",") if n.strip()}


def _entry_points(group: str) -> list[tuple[EntryPoint, str, str]]:
    """Entry points of the group, with their distribution (read only for those)."""
    # importlib.metadata costs ~15 ms to import: only processes that load plugins pay it.
    import importlib.metadata

    seen: set[str] = set()
    found = []
    # A distribution's METADATA (saereg's carries the whole README) is parsed anew on every
    # `.name` / `.version`: read it once per distribution, not twice per entry point.
    named: dict[int, tuple[str, str]] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        dist = ep.dist
        if dist is None:
            found.append((ep, "?", "?"))
            continue
        if id(dist) not in named:
            meta = dist.metadata
            named[id(dist)] = (meta["Name"] or "?", meta["Version"] or "?")
        found.append((ep, *named[id(dist)]))
    return sorted(found, key=lambda t: t[0].name)


@lru_cache(maxsize=1)
def loaded_plugins() -> LoadedPlugins:
    """Load every plugin once per process (see `reset` for tests)."""
    # pluggy (and with it the hook declarations) is imported only here: short-lived
    # commands that never load a plugin do not pay for it.
    import pluggy

    from saereg.base import hookspecs  # deferred: pluggy, with the hook declarations

    manager = pluggy.PluginManager(hookspecs.GROUP)
    manager.add_hookspecs(hookspecs)
    block_third_party, blocked = _blocked_names()
    infos: list[PluginInfo] = []
    for ep, dist_name, version in _entry_points(hookspecs.GROUP):
        builtin = dist_name.lower() == "saereg"
        enabled = not (ep.name in blocked or (block_third_party and not builtin))
        info = PluginInfo(ep.name, dist_name, version, builtin, enabled, ep.value)
        if not enabled:
            manager.set_blocked(ep.name)
            infos.append(info)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break saereg
            infos.append(info._replace(enabled=False, error=f"{type(exc).__name__}: {exc}"))
            continue
        try:
            manager.register(plugin, name=ep.name)
        except ValueError as exc:  # pluggy: not a valid plugin, or registered twice
            infos.append(info._replace(enabled=False, error=str(exc)))
            continue
        infos.append(info)
    _drop_plugins_with_unknown_hooks(manager, infos)
    return LoadedPlugins(manager, tuple(infos))


def _drop_plugins_with_unknown_hooks(
    manager: pluggy.PluginManager, infos: list[PluginInfo]
) -> None:
    """A plugin implementing a hook saereg does not define (a typo, or a newer contract)
    is disabled and reported, instead of stopping every other plugin from loading."""
    import pluggy  # already imported by loaded_plugins; named here for the exception class

    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin)
            manager.unregister(exc.plugin)
            for i, info in enumerate(infos):
                if info.name == name:
                    infos[i] = info._replace(enabled=False, error=f"unknown hook: {exc}")


def _path_stamp() -> list[list[Any]]:
    """The import path and each folder's mtime: installing or removing a distribution
    adds or removes its ``*.dist-info`` folder, which changes its folder's mtime."""
    stamp: list[list[Any]] = []
    for entry in sys.path:
        try:
            stamp.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            stamp.append([entry, None])
    return stamp


def group_members(group: str = GROUP) -> list[tuple[str, str]]:
    """(entry-point name, distribution name) of every entry point of `group`, without
    scanning every installed distribution each time: the list is kept in
    ``$SAEREG_CACHE/index`` for the state of the import path it was read in (see
    `_path_stamp`). Scanning costs ~50 ms in an environment of a few hundred packages,
    which `list` would pay on every call just to learn that no third-party plugin is
    installed."""
    stamp = _path_stamp()
    digest = hashlib.sha256(json.dumps([e for e, _ in stamp]).encode()).hexdigest()[:16]
    target = cache_dir() / "index" / f"entry-points-{group}-{digest}.json"
    try:
        cached = json.loads(target.read_bytes())
        if cached["stamp"] == stamp:
            return [(str(name), str(dist)) for name, dist in cached["members"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, another state of the path, or damaged: scan
    members = [(ep.name, dist) for ep, dist, _ in _entry_points(group)]
    write_bytes(target, json.dumps({"stamp": stamp, "members": members}).encode())
    return members


def _third_party_enabled() -> bool:
    """Whether any enabled plugin comes from a distribution other than saereg."""
    block_third_party, blocked = _blocked_names()
    if block_third_party:
        return False
    return any(dist.lower() != "saereg" and name not in blocked for name, dist in group_members())


def plugin_release_dirs() -> list[Path]:
    """The release directories enabled plugins ship (hook `saereg_release_dirs`).

    The plugins shipped with saereg ship none (saereg's own catalogue is its releases/
    folder), so while no third-party plugin is installed nothing is loaded to ask: `list`
    and Neuronpedia lookups then skip importing every format module."""
    if loaded_plugins.cache_info().currsize == 0 and not _third_party_enabled():
        return []
    dirs: list[Path] = []
    for result in loaded_plugins().manager.hook.saereg_release_dirs():
        dirs.extend(Path(p) for p in result or [])
    return dirs


def reset() -> None:
    """Forget the loaded plugins (tests change the environment between cases)."""
    loaded_plugins.cache_clear()
