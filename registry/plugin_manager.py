"""Finding, blocking and listing plugins.

Plugins are found through the ``saereg`` entry-point group of every installed
distribution. `SAEREG_DISABLE_PLUGINS` is the kill switch: ``1``/``all`` disables
every plugin not shipped with saereg itself; a comma-separated list disables plugins by
entry-point name (built-ins included, should one misbehave).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pluggy

from . import hookspecs
from .errors import PluginError
from .hookspecs import Format

GROUP = "saereg"
DISABLE_ENV = "SAEREG_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool
    enabled: bool
    module: str
    formats: tuple[str, ...] = ()
    error: str | None = None


def _blocked_names() -> tuple[bool, set[str]]:
    raw = os.environ.get(DISABLE_ENV, "").strip()
    if raw.lower() in {"1", "all", "true", "yes"}:
        return True, set()
    return False, {n.strip() for n in raw.split(",") if n.strip()}


class Registry:
    """The loaded plugins and the formats they provide, by name."""

    def __init__(self, manager: pluggy.PluginManager, infos: list[PluginInfo]) -> None:
        self.manager = manager
        self.infos = infos
        self.formats: dict[str, Format] = {}
        #: format name → the plugin that provides it (for provenance in canonical files).
        self.format_owner: dict[str, PluginInfo] = {}
        owner: dict[str, str] = {}
        enriched = []
        by_plugin: dict[str, list[Format]] = {}
        for impl in manager.hook.saereg_formats.get_hookimpls():
            by_plugin[impl.plugin_name] = list(impl.function() or [])
        for info in infos:
            names: list[str] = []
            for fmt in by_plugin.get(info.name, []):
                if not isinstance(fmt, Format) or not fmt.name:
                    raise PluginError(
                        f"plugin {info.name!r} ({info.distribution}) returned {fmt!r} from "
                        "saereg_formats(); expected saereg.Format instances with a name"
                    )
                if fmt.name in self.formats:
                    raise PluginError(
                        f"format {fmt.name!r} is provided by two plugins: "
                        f"{owner[fmt.name]!r} and {info.name!r} ({info.distribution}); "
                        f"uninstall one, or disable it with {DISABLE_ENV}={info.name}"
                    )
                self.formats[fmt.name] = fmt
                self.format_owner[fmt.name] = info
                owner[fmt.name] = info.name
                names.append(fmt.name)
            enriched.append(_replace(info, formats=tuple(names)))
        self.infos = enriched

    def format(self, name: str) -> Format:
        try:
            return self.formats[name]
        except KeyError:
            known = ", ".join(sorted(self.formats)) or "none"
            raise PluginError(
                f"unknown format {name!r}; installed formats: {known}. "
                "Install the plugin that provides it, or check the release's 'format:' field."
            ) from None

    def release_dirs(self) -> list[Path]:
        dirs: list[Path] = []
        for result in self.manager.hook.saereg_release_dirs():
            dirs.extend(Path(p) for p in result or [])
        return dirs


def _replace(info: PluginInfo, **changes: object) -> PluginInfo:
    values = {**info.__dict__, **changes}
    return PluginInfo(**values)  # type: ignore[arg-type]


def _entry_points() -> list[tuple[importlib.metadata.EntryPoint, str, str]]:
    """Entry points of the group, with their distribution (read only for those)."""
    seen: set[str] = set()
    found = []
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        dist = ep.dist
        found.append((ep, dist.name if dist else "?", dist.version if dist else "?"))
    return sorted(found, key=lambda t: t[0].name)


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Load every plugin once per process (see reset_registry for tests)."""
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    block_third_party, blocked = _blocked_names()
    infos: list[PluginInfo] = []
    for ep, dist_name, version in _entry_points():
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
            infos.append(_replace(info, enabled=False, error=f"{type(exc).__name__}: {exc}"))
            continue
        try:
            manager.register(plugin, name=ep.name)
        except ValueError as exc:  # pluggy: not a valid plugin, or registered twice
            infos.append(_replace(info, enabled=False, error=str(exc)))
            continue
        infos.append(info)
    _drop_plugins_with_unknown_hooks(manager, infos)
    return Registry(manager, infos)


def _drop_plugins_with_unknown_hooks(
    manager: pluggy.PluginManager, infos: list[PluginInfo]
) -> None:
    """A plugin implementing a hook saereg does not define (a typo, or a newer contract)
    is disabled and reported, instead of stopping every other plugin from loading."""
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin)
            manager.unregister(exc.plugin)
            for i, info in enumerate(infos):
                if info.name == name:
                    infos[i] = _replace(info, enabled=False, error=f"unknown hook: {exc}")


def reset_registry() -> None:
    get_registry.cache_clear()
