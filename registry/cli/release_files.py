"""`saereg validate` and `migrate`: checking release files as a reviewer would, and
rewriting files of an older schema version."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from saereg.base.errors import SaeregError
from saereg.catalogue.index import load_index
from saereg.catalogue.lint import validate_paths
from saereg.catalogue.migrations import CURRENT_SCHEMA, migrate
from saereg.catalogue.release_dirs import builtin_release_dir, release_dirs
from saereg.catalogue.safeyaml import decode, load_yaml
from saereg.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subparsers, print_json
from saereg.formats import MultiLayerFormat, get_registry


def cmd_validate(args: argparse.Namespace) -> int:
    registry = get_registry()
    paths = [Path(p) for p in args.paths] or [builtin_release_dir()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"saereg validate: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    catalogue: dict[str, str] = {}
    by_np: dict[str, tuple[str, str]] = {}
    if not args.standalone:
        try:
            with warnings.catch_warnings():  # the files' problems are in the report below
                warnings.simplefilter("ignore")
                index = load_index(release_dirs())
            catalogue = {name: rel["file"] for name, rel in index.releases.items()}
            by_np = index.by_neuronpedia()
        except SaeregError:  # a broken catalogue file is reported when it is validated itself
            pass
    kinds = {n: f.kind for n, f in registry.formats.items() if isinstance(f, MultiLayerFormat)}
    result = validate_paths(
        paths,
        registry.formats,
        catalogue=catalogue,
        catalogue_neuronpedia=by_np,
        dictionary_kinds=kinds,
    )
    if args.json:
        print_json(
            {
                "ok": result.ok,
                "files": result.files,
                "findings": [
                    {
                        "file": f.file,
                        "line": f.line,
                        "json_path": f.json_path,
                        "severity": f.severity,
                        "code": f.code,
                        "message": f.message,
                    }
                    for f in result.findings
                ],
            }
        )
    else:
        print(result.render(hints=not args.no_hints))
    return EXIT_OK if result.ok else EXIT_FAILURE


def cmd_migrate(args: argparse.Namespace) -> int:
    import yaml  # deferred: yaml

    status = EXIT_OK
    for name in args.paths:
        path = Path(name)
        try:
            text = decode(path.read_bytes(), str(path))
        except OSError as exc:
            print(f"saereg migrate: {path}: cannot read: {exc.strerror}", file=sys.stderr)
            missing = isinstance(exc, (FileNotFoundError, IsADirectoryError))
            status = EXIT_USAGE if missing else max(status, EXIT_FAILURE)
            continue
        doc = load_yaml(text, str(path))
        if not isinstance(doc, dict):
            print(f"saereg migrate: {path}: not a release file (not a mapping)", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        before = doc.get("schema")
        if before == CURRENT_SCHEMA:
            print(f"{path}: already schema version {CURRENT_SCHEMA}")
            continue
        doc = migrate(doc, str(path))
        ordered = {"schema": doc.pop("schema"), **doc}
        path.write_text(
            yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=4096),
            encoding="utf-8",
        )
        print(f"{path}: migrated from schema version {before} to {CURRENT_SCHEMA}")
    return status


# --------------------------------------------------------------------------- parsers


def _add_validate(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "validate",
        help=summary,
        description="Check release files against the schema and the lints a reviewer would "
        "do by hand. Errors block (exit 1); hints are advisory.",
    )
    p.add_argument(
        "paths", nargs="*", help="files or directories (default: the built-in catalogue)"
    )
    p.add_argument("--no-hints", action="store_true", help="print only blocking errors")
    p.add_argument(
        "--standalone",
        action="store_true",
        help="check the files as a catalogue of their own, without comparing release names "
        "and Neuronpedia ids with the installed catalogue",
    )
    p.add_argument("--json", action="store_true", help="print findings as JSON")
    p.set_defaults(func=cmd_validate)


def _add_migrate(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("migrate", help=summary)
    p.add_argument("paths", nargs="+", help="release files to rewrite in place")
    p.set_defaults(func=cmd_migrate)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {
    "validate": _add_validate,
    "migrate": _add_migrate,
}
