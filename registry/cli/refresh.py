"""`saereg refresh saelens`: a newer upstream catalogue merged into the release files,
keeping what was curated here (publish/refresh.py), with a summary for a pull request.
The weekly workflow (.github/workflows/refresh-catalogue.yml) runs it; `--dry-run` runs the
same steps and writes nothing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from saereg.catalogue.release_dirs import builtin_release_dir
from saereg.cli.output import EXIT_OK, EXIT_USAGE, Subparsers
from saereg.formats import get_registry
from saereg.publish import docs
from saereg.publish.importer import import_saelens
from saereg.publish.refresh import RefreshSummary, preview_releases, refresh


def cmd_refresh(args: argparse.Namespace) -> int:
    cards: dict[str, Path] = {}
    for spec in args.model_card or []:
        repo, sep, path = spec.partition("=")
        if not sep:
            print(f"saereg refresh: --model-card takes REPO_ID=FILE, got {spec!r}", file=sys.stderr)
            return EXIT_USAGE
        cards[repo] = Path(path)
    upstream = Path(args.path)
    releases_dir = Path(args.releases) if args.releases else builtin_release_dir()
    sources = [upstream, *(Path(t) for t in args.tables or []), *cards.values()]
    missing = [str(p) for p in sources if not p.is_file()]
    if not releases_dir.is_dir():
        missing.append(str(releases_dir))
    if missing:
        print(f"saereg refresh: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    imported, _ = import_saelens(
        upstream, get_registry().formats, [Path(t) for t in args.tables or []], cards
    )
    summary = RefreshSummary(upstream=args.label or upstream.name)
    writes = refresh(imported, releases_dir, summary)
    if args.docs:
        pages = docs.generate(preview_releases(releases_dir, writes))
        summary.docs_changed = docs.stale_files(pages, Path(args.docs))
    text = summary.render()
    if args.dry_run:
        text += (
            f"\n(dry run: {len(writes)} release files would be written in {releases_dir}; "
            "nothing was written)\n"
        )
    else:
        for fname, content in writes.items():
            (releases_dir / fname).write_text(content, encoding="utf-8")
        if args.docs:
            docs.write(pages, Path(args.docs))
    if args.summary and not args.dry_run:
        Path(args.summary).write_text(text, encoding="utf-8")
    if args.changed and not args.dry_run:
        Path(args.changed).write_text("".join(f"{n}\n" for n in summary.touched), encoding="utf-8")
    print(text, end="")
    return EXIT_OK


def _add_refresh(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "refresh",
        help=summary,
        description="Import SAELens' pretrained_saes.yaml (as `saereg import saelens`) and "
        "merge it into the release files: new releases and SAEs are added; what the file "
        "publishes (paths, L0, Neuronpedia ids, ...) replaces ours; hand-curated fields "
        "(model, links, revision, description, license, publisher, repo_id, repo_aliases; "
        "hook names and layers) "
        "are never overwritten (conflicts are listed); values the import only derives "
        "fill in unknowns but never replace ours; vanished SAEs and releases are kept. "
        "Prints a markdown summary (new releases, changed paths, vanished SAEs, "
        "conflicts).",
    )
    p.add_argument("source", choices=["saelens"], help="the upstream catalogue's kind")
    p.add_argument("path", help="SAELens' pretrained_saes.yaml")
    p.add_argument("--tables", nargs="*", help="metadata tables, as for `saereg import`")
    p.add_argument("--model-card", action="append", help="REPO_ID=FILE, as for `saereg import`")
    p.add_argument(
        "--releases", help="the release directory to merge into (default: the built-in one)"
    )
    p.add_argument("--docs", help="also regenerate (or, with --dry-run, compare) this docs dir")
    p.add_argument("--summary", help="write the markdown summary to this file too")
    p.add_argument("--changed", help="write the new and changed release names, one a line")
    p.add_argument("--label", help="what to call the upstream in the summary (e.g. its version)")
    p.add_argument(
        "--dry-run", action="store_true", help="run every step but write nothing; print the summary"
    )
    p.set_defaults(func=cmd_refresh)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {"refresh": _add_refresh}
