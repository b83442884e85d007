"""`saereg cache ls|verify|prune|rm`: the command line over `saereg.store.cache`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from saereg.cli.output import EXIT_FAILURE, EXIT_OK, Subparsers
from saereg.store import cache
from saereg.store.fetch import sha256_of


def cmd_ls(args: argparse.Namespace) -> int:
    rows = cache.entries()
    if args.json:
        print(cache.as_json(rows))
        return EXIT_OK
    if rows:
        for line in cache.table(rows):
            print(line)
    print(cache.summary(rows))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    for ref in args.refs or ():
        cache.check_ref(ref)
    rows = [e for ref in args.refs for e in cache.matching(ref)] if args.refs else cache.entries()
    hasher = lru_cache(maxsize=None)(sha256_of)  # a blob several entries read: hashed once
    failed = 0
    report = []
    for e in rows:
        problems = cache.verify(e, hasher)
        failed += bool(problems)
        report.append({"ref": e.ref, "revision": e.revision, "problems": problems})
        if not args.json:
            status = "ok" if not problems else "FAILED: " + "; ".join(problems)
            print(f"{e.ref}@{e.revision[:12]} ({e.storage}): {status}")
    if args.json:
        print(json.dumps(report, indent=2))
    elif not rows:
        print("no entries to verify")
    if failed:
        print(
            f"{failed} of {len(rows)} entries failed; remove them with `saereg cache rm REF` "
            "and load again (or `saereg fetch REF --force`)",
            file=sys.stderr,
        )
    return EXIT_FAILURE if failed else EXIT_OK


def _report(action: str, rows: list[Any], freed: int, dry_run: bool) -> None:
    for e in rows:
        print(f"{'would remove' if dry_run else 'removed'} {e.ref}@{e.revision[:12]} ({e.path})")
    verb = "would free" if dry_run else "freed"
    print(f"{action}: {len(rows)} entries, {verb} {cache.human(freed)} in saereg's cache")
    shared = cache.hf_bytes(rows)
    if shared:
        print(
            f"(the {cache.human(shared)} of publisher files they read stay in the Hugging Face "
            "cache; `hf cache ls` / `hf cache rm` manage it)"
        )


def cmd_prune(args: argparse.Namespace) -> int:
    rows = cache.entries()
    if args.all:
        selected = rows
    elif args.unused:
        selected = cache.unused(rows)
    else:
        cutoff = time.time() - cache.parse_age(args.older_than)
        selected = [e for e in rows if e.last_used < cutoff]
    freed = sum(e.size for e in selected) if args.dry_run else cache.remove(selected)
    _report("prune", selected, freed, args.dry_run)
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    cache.check_ref(args.ref)
    selected = cache.matching(args.ref, args.revision)
    if not selected:
        print(
            f"saereg cache rm: no cached entry for {args.ref!r}"
            + (f" at revision {args.revision}" if args.revision else "")
            + " (`saereg cache ls` lists them)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    freed = sum(e.size for e in selected) if args.dry_run else cache.remove(selected)
    _report("rm", selected, freed, args.dry_run)
    return EXIT_OK


def _add_cache(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "cache",
        help=summary,
        description="Manage $SAEREG_CACHE/canonical. In-place entries read their weights from "
        "publisher files in the Hugging Face cache; these commands never delete those.",
    )
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True

    q = csub.add_parser("ls", help="entries, sizes, source revision, last use")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_ls)

    q = csub.add_parser(
        "verify",
        help="check entries (header, config, tensor digest) and, for in-place entries, "
        "their publisher files by sha256",
    )
    q.add_argument("refs", nargs="*", metavar="REF", help="only these SAEs (default: all)")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_verify)

    q = csub.add_parser("prune", help="remove entries by age, unused ones, or all")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--older-than", metavar="AGE", help="not used for AGE (days, or e.g. 12h, 30d, 2w)"
    )
    which.add_argument(
        "--unused",
        action="store_true",
        help="entries nothing would load: older revisions, SAEs no longer catalogued, "
        "unreadable entries, in-place entries whose publisher files are gone",
    )
    which.add_argument("--all", action="store_true", help="every entry")
    q.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    q.set_defaults(func=cmd_prune)

    q = csub.add_parser("rm", help="remove the cached entries of one SAE")
    q.add_argument("ref", help="RELEASE/SAE_ID, a Neuronpedia id, or an entry file")
    q.add_argument(
        "--revision", help="only the entry of this revision (the short form `ls` prints works)"
    )
    q.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    q.set_defaults(func=cmd_rm)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {"cache": _add_cache}
