"""`saereg plugins`: the installed plugins, where they come from, and their formats."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from saereg.base.plugin_host import DISABLE_ENV
from saereg.cli.output import EXIT_OK, Subparsers, print_json
from saereg.formats import get_registry


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = get_registry()
    rows = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "builtin": i.builtin,
            "enabled": i.enabled,
            "module": i.module,
            "formats": list(i.formats),
            "format_details": [
                {
                    "name": f,
                    "summary": registry.formats[f].summary,
                    "loads": registry.formats[f].loads,
                }
                for f in i.formats
                if f in registry.formats
            ],
            "error": i.error,
        }
        for i in registry.infos
    ]
    if args.json:
        print_json(rows)
        return EXIT_OK
    for r in rows:
        state = (
            "enabled" if r["enabled"] else ("failed: " + r["error"] if r["error"] else "disabled")
        )
        origin = "built-in" if r["builtin"] else "third-party"
        describe_only = {d["name"] for d in r["format_details"] if not d["loads"]}
        names = [f + (" (describe only)" if f in describe_only else "") for f in r["formats"]]
        print(
            f"{r['name']:<22} {r['distribution']} {r['version']:<10} {origin:<11} {state:<8} "
            f"formats: {', '.join(names) or '-'}"
        )
    print(
        f"({len(rows)} plugins; set {DISABLE_ENV}=1 to disable third-party plugins, "
        f"or {DISABLE_ENV}=name,... to disable some)",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- parsers


def _add_plugins(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("plugins", help=summary)
    p.add_argument("--json", action="store_true", help="print plugins as JSON")
    p.set_defaults(func=cmd_plugins)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {
    "plugins": _add_plugins,
}
