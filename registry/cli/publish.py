"""`saereg docs`, `new`, `sync-check` and `import`: generating the docs, scaffolding a
release for a contributor, comparing releases with their repositories, and importing
an upstream catalogue."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saereg.base.file_modes import write_bytes
from saereg.catalogue.index import render_shipped_index, shipped_index_path
from saereg.catalogue.refs import close_matches
from saereg.catalogue.release_check import REPO_ID_RE, unsafe_release_name
from saereg.catalogue.release_dirs import all_release_names, builtin_release_dir, release_dirs
from saereg.catalogue.release_files import read_releases
from saereg.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Subparsers, print_json
from saereg.formats import get_registry
from saereg.publish import docs
from saereg.publish.importer import import_saelens, write_outputs
from saereg.publish.scaffold import default_release_name, scaffold, sync_check, write_new_release


def _all_releases() -> list[Any]:
    return read_releases(release_dirs())


def cmd_docs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check and not out.is_dir():
        print(
            f"saereg docs --check: there is no {args.out}/ directory here ({out.resolve()}) to "
            "compare with; run it in a checkout of saereg, or pass --out DIR",
            file=sys.stderr,
        )
        return EXIT_USAGE
    releases = _all_releases()
    pages = docs.generate(releases)
    # The compiled index shipped with the built-in releases is generated like the pages.
    index_path = shipped_index_path()
    index_bytes = render_shipped_index(releases)
    index_stale = not index_path.is_file() or index_path.read_bytes() != index_bytes
    if args.check:
        stale = docs.stale_files(pages, out)
        problems = []
        if stale:
            problems.append(
                f"{len(stale)} generated page(s) in {out} are stale: {', '.join(stale)}"
            )
        if index_stale:
            problems.append(f"the shipped catalogue index {index_path} is stale")
        if problems:
            print(
                f"saereg docs: {'; '.join(problems)}. Run `saereg docs --out {out}` and commit "
                "the result.",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        print(f"{out}: {len(pages)} pages up to date; {index_path.name} up to date")
        return EXIT_OK
    changed = docs.write(pages, out)
    if index_stale:
        if not write_bytes(index_path, index_bytes, mode=0o644):
            print(f"saereg docs: cannot write {index_path}", file=sys.stderr)
            return EXIT_FAILURE
        changed.append(str(index_path))
    print(f"{out}: {len(pages)} pages, {len(changed)} changed")
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    if not REPO_ID_RE.match(args.repo):
        print(
            f"saereg new: --repo {args.repo[:200]!r} is not a Hugging Face repository id ORG/NAME",
            file=sys.stderr,
        )
        return EXIT_USAGE
    registry = get_registry()
    if args.format is not None and args.format not in registry.formats:
        near = close_matches(args.format, registry.formats)
        tip = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
        print(
            f"saereg new: unknown format {args.format!r}; {tip}installed formats: "
            f"{', '.join(sorted(registry.formats))} (`saereg plugins` says which package "
            "provides each)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fmt = registry.format(args.format) if args.format else None
    name = args.release or default_release_name(args.repo)
    why = unsafe_release_name(name)
    if why:
        print(f"saereg new: {why}; choose another --release name", file=sys.stderr)
        return EXIT_USAGE
    if name in all_release_names():
        print(
            f"saereg new: a release called {name!r} already exists; saereg new never "
            "overwrites a release (choose another --release name)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    name, text, n = scaffold(args.repo, fmt, name, args.revision)
    out = Path(args.out) if args.out else builtin_release_dir()
    target = write_new_release(text, name, out)
    print(
        f"{target}: {n} SAEs scaffolded from {args.repo}. Fill in the TODOs at the top, then "
        f"run `saereg validate {target}`."
    )
    return EXIT_OK


def cmd_sync_check(args: argparse.Namespace) -> int:
    registry = get_registry()
    releases = _all_releases()
    by_name = {r.name: r for r in releases}
    if args.releases:
        unknown = [n for n in args.releases if n not in by_name]
        if unknown:
            hints = close_matches(unknown[0], list(by_name))
            tip = f" Did you mean: {', '.join(hints)}?" if hints else ""
            print(
                f"saereg sync-check: unknown release(s) {', '.join(unknown)}.{tip}", file=sys.stderr
            )
            return EXIT_USAGE
        chosen = [by_name[n] for n in args.releases]
    else:
        chosen = [r for r in releases if r.repo_id]
    registered: dict[str, set[str]] = {}
    for rel in releases:
        if rel.repo_id:
            registered.setdefault(rel.repo_id, set()).update(e.path.rstrip("/") for e in rel.saes)
    reports = []
    for rel in chosen:
        if not rel.repo_id:
            print(
                f"{rel.name}: served from plain URLs ({rel.base_url}); nothing to compare",
                file=sys.stderr,
            )
            continue
        reports.append(sync_check(rel, registry.format(rel.format), registered[rel.repo_id]))
    if args.json:
        print_json([r.__dict__ | {"in_sync": r.in_sync} for r in reports])
    else:
        for r in reports:
            state = (
                "in sync"
                if r.in_sync
                else (f"{len(r.vanished)} vanished, {len(r.unregistered)} not registered")
            )
            print(f"{r.release} ({r.repo_id} @ {r.revision[:12]}): {state}")
            for item in r.vanished[: args.limit]:
                print(f"  - vanished: {item}")
            for item in r.unregistered[: args.limit]:
                print(f"  + not registered: {item}")
            extra = len(r.vanished) + len(r.unregistered) - 2 * args.limit
            if not r.in_sync and extra > 0:
                print("  … (--limit shows more; --json shows all)")
    return EXIT_OK if all(r.in_sync for r in reports) else EXIT_FAILURE


def cmd_import(args: argparse.Namespace) -> int:
    cards: dict[str, Path] = {}
    for spec in args.model_card or []:
        repo, sep, path = spec.partition("=")
        if not sep:
            print(f"saereg import: --model-card takes REPO_ID=FILE, got {spec!r}", file=sys.stderr)
            return EXIT_USAGE
        cards[repo] = Path(path)
    sources = [Path(args.path), *(Path(t) for t in args.tables or []), *cards.values()]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        print(f"saereg import: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    outputs, report = import_saelens(
        Path(args.path), get_registry().formats, [Path(t) for t in args.tables or []], cards
    )
    stale = write_outputs(outputs, Path(args.out))
    text = report.render()
    if stale:
        text += f"Files in {args.out} not produced by this import (left untouched): {stale}\n"
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
        print(text.split("Repaired")[0].rstrip())
        print(f"Full report: {args.report}")
    else:
        print(text, end="")
    return EXIT_OK


# --------------------------------------------------------------------------- parsers


def _add_docs(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "docs",
        help=summary,
        description="Write catalogue.html, pretrained_saes.md, index.md and models/*.md "
        "from the release files alone (offline, deterministic), and the compiled index "
        "shipped with the built-in releases (releases/compiled/index.json). --check only "
        "compares.",
    )
    p.add_argument("--out", default="docs", help="docs directory (default: docs)")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 and name the stale pages if the committed docs differ",
    )
    p.set_defaults(func=cmd_docs)


def _add_new(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "new",
        help=summary,
        description="List the repository's files at its current commit (pinned as the "
        "revision), detect the format (or take --format), let it discover the SAEs and "
        "derive every field it can, and "
        "write releases/NAME.yaml with TODO marks for what the contributor must fill. "
        "Never overwrites a release.",
    )
    p.add_argument("--repo", required=True, help="Hugging Face repository, ORG/NAME")
    p.add_argument(
        "--format",
        help="format plugin, e.g. gemma_scope (default: detected from the files, as "
        "`saereg detect hf:ORG/NAME` does)",
    )
    p.add_argument("--release", help="release name (default: from the repository name)")
    p.add_argument("--revision", help="branch, tag or commit to scaffold from (default: main)")
    p.add_argument("--out", help="directory to write to (default: the catalogue's releases/)")
    p.set_defaults(func=cmd_new)


def _add_sync_check(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "sync-check",
        help=summary,
        description="For each release, list its repository at the pinned revision and "
        "report SAE paths that vanished and SAE folders no release registers. Exit 0 in "
        "sync, 1 with differences, 2 offline or bad usage.",
    )
    p.add_argument("releases", nargs="*", help="release names (default: all hub releases)")
    p.add_argument("--limit", type=int, default=10, help="items shown per list (default 10)")
    p.add_argument("--json", action="store_true", help="print reports as JSON")
    p.set_defaults(func=cmd_sync_check)


def _add_import(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("import", help=summary)
    isub = p.add_subparsers(dest="source", metavar="SOURCE")
    isub.required = True
    q = isub.add_parser(
        "saelens",
        help="SAELens' pretrained_saes.yaml",
        description="Write one release file per release of SAELens' pretrained_saes.yaml, "
        "joining metadata tables and model cards. Deterministic: re-running gives "
        "byte-identical files.",
    )
    q.add_argument("path", help="path to pretrained_saes.yaml")
    q.add_argument(
        "--tables",
        nargs="*",
        metavar="TABLE",
        help="SAELens docs tables (.tsv, or the 2024 .md page), most trusted first",
    )
    q.add_argument(
        "--model-card",
        action="append",
        metavar="REPO_ID=FILE",
        help="a model card with a 'layer | SAE ID | width | l0 | explained variance' "
        "table for the releases of REPO_ID (repeatable)",
    )
    q.add_argument("--out", default="releases", help="output directory (default: releases)")
    q.add_argument("--report", help="write the full import report to this file")
    q.set_defaults(func=cmd_import)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {
    "docs": _add_docs,
    "new": _add_new,
    "sync-check": _add_sync_check,
    "import": _add_import,
}
