"""The `saereg` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or unknown reference.

Each command imports what it needs when it runs, so `saereg resolve` stays a
short-lived process that never imports torch or jsonschema.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


# --------------------------------------------------------------------------- commands


def cmd_resolve(args: argparse.Namespace) -> int:
    from .resolver import resolve

    info = resolve(args.ref)
    data = info.to_dict()
    if args.json:
        _print_json(data)
        return EXIT_OK
    rows = [
        ("release", info.release),
        ("id", info.id),
        ("model", info.model + (f" ({info.model_hub_id})" if info.model_hub_id else "")),
        ("publisher", info.publisher),
        ("format", info.format),
        ("repo_id" if info.repo_id else "base_url", info.repo_id or info.base_url),
        (
            "revision",
            info.revision
            or (
                "not pinned (default branch)"
                if info.repo_id
                else "none (plain URLs; files are sha256-checked)"
            ),
        ),
        ("path", info.path),
        ("hook_name", info.hook_name),
        ("hook_layer", info.hook_layer),
    ]
    for name in ("hook_name_out", "hf_hook_name"):
        if data[name] is not None:
            rows.append((name, data[name]))
    for name in ("hf_hook", "hf_hook_out"):
        if data[name] is not None or name == "hf_hook":
            hook = data[name]
            rows.append((name, f"{hook['module']} ({hook['side']})" if hook else None))
    rows += [
        ("architecture", info.architecture),
        ("d_in", info.d_in),
        ("d_sae", info.d_sae),
    ]
    for name in ("d_out", "k", "nested_widths"):
        if data[name] is not None:
            rows.append((name, data[name]))
    rows += [
        ("context_size", info.context_size),
        ("normalization", info.normalize_activations),
    ]
    if info.norm_scaling_factor is not None:
        rows.append(("norm_scaling_factor", info.norm_scaling_factor))
    rows += [
        ("dataset", info.dataset),
        ("neuronpedia", info.neuronpedia or "none"),
        ("neuronpedia_url", info.neuronpedia_url or "none"),
        ("l0", info.l0),
        ("variance_explained", info.variance_explained),
        ("license", info.license),
    ]
    if info.model_from_pretrained_kwargs:
        rows.append(("model_kwargs", dict(info.model_from_pretrained_kwargs)))
    for key, url in info.links.items():
        rows.append((f"link.{key}", url))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {_fmt(value)}")
    return EXIT_OK


def _parse_width(text: str) -> int:
    from .catalog import parse_width

    try:
        return parse_width(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid width {text!r}: use a number of latents such as 16384, or 16k, 65k, 1m"
        ) from None


def cmd_list(args: argparse.Namespace) -> int:
    from .resolver import list_saes

    records = list_saes(
        model=args.model,
        release=args.release,
        hook=args.hook,
        layer=args.layer,
        width=args.width,
        format=args.format,
    )
    if args.json:
        _print_json(records)
        return EXIT_OK
    if not records:
        print("No SAEs match these filters.", file=sys.stderr)
        return EXIT_OK
    header = ("reference", "hook_name", "layer", "d_sae", "neuronpedia")
    table = [
        (
            f"{r['release']}/{r['id']}",
            r["hook_name"] or "?",
            _fmt(r["hook_layer"]),
            _fmt(r["d_sae"]),
            r["neuronpedia"] or "",
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(records)} SAEs", file=sys.stderr)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .models import get_model
    from .resolver import get_release

    rel = get_release(args.release)
    layers = sorted({e.hook_layer for e in rel.saes if e.hook_layer is not None})
    widths = sorted({e.d_sae for e in rel.saes if e.d_sae is not None})
    hooks = sorted(
        {
            (e.hook_layer if e.hook_layer is not None else -1, e.hook_name)
            for e in rel.saes
            if e.hook_name
        }
    )
    hooks = list(dict.fromkeys(h for _, h in hooks))
    model = get_model(rel.model)
    hub = model.hub_id if model is not None else None
    summary = {
        "name": rel.name,
        "format": rel.format,
        "publisher": rel.publisher,
        "model": rel.model,
        "model_hub_id": hub,
        "repo_id": rel.repo_id,
        "base_url": rel.base_url,
        "revision": rel.revision,
        "license": rel.license,
        "links": dict(rel.links),
        "defaults": dict(rel.defaults),
        "n_saes": len(rel.saes),
        "layers": layers,
        "widths": widths,
        "hooks": hooks,
        "with_neuronpedia": sum(1 for e in rel.saes if e.neuronpedia),
        "saes": [e.id for e in rel.saes],
        "file": rel.source_file,
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    print(f"{rel.name}  ({rel.format} format, {len(rel.saes)} SAEs)")
    print(f"  model       {rel.model}" + (f" ({summary['model_hub_id']})" if hub else ""))
    print(f"  publisher   {rel.publisher}")
    print(f"  location    {rel.location}")
    print(f"  revision    {rel.revision or 'not pinned'}")
    print(f"  license     {_fmt(rel.license)}")
    for key, url in rel.links.items():
        print(f"  {key:<11} {url}")
    for key, value in rel.defaults.items():
        print(f"  default     {key} = {_fmt(value)}")
    print(f"  layers      {_fmt(layers) if layers else 'unknown'}")
    print(f"  widths      {_fmt(widths) if widths else 'unknown'}")
    shown = hooks[:6]
    more = f" (+{len(hooks) - 6} more)" if len(hooks) > 6 else ""
    print(f"  hooks       {', '.join(shown)}{more}")
    print(f"  neuronpedia {summary['with_neuronpedia']} of {len(rel.saes)} SAEs have an id")
    print("  ids:")
    limit = None if args.all else 20
    for e in rel.saes[:limit]:
        print(f"    {e.id}")
    if limit is not None and len(rel.saes) > limit:
        print(f"    … {len(rel.saes) - limit} more (--all lists every id)")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from .models import SHAPE_FIELDS, model_table

    models = list(model_table())
    if args.json:
        _print_json([m.to_dict() for m in models])
        return EXIT_OK
    header = ("name", "hub_id", "family", "d_model", "layers", "heads", "d_head", "d_mlp")
    table = [
        (m.name, m.hub_id, m.family, *(_fmt(getattr(m, k)) for k in SHAPE_FIELDS)) for m in models
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    for row in (header, *table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"{len(models)} models (releases/models/models.yaml; --json adds aliases and sources)",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .catalog import builtin_release_dir
    from .errors import SaeregError
    from .index import load_index
    from .lint import validate_paths
    from .plugin_manager import get_registry
    from .resolver import release_dirs

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
    result = validate_paths(
        paths, registry.formats, catalogue=catalogue, catalogue_neuronpedia=by_np
    )
    if args.json:
        _print_json(
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


def cmd_fetch(args: argparse.Namespace) -> int:
    from .canonical import read_config
    from .loading import fetch_canonical

    path = fetch_canonical(
        args.ref,
        revision=args.revision,
        force=args.force,
        quiet=True if args.quiet else None,
        verify=args.verify,
    )
    if args.json:
        cfg = read_config(path)
        _print_json({"path": str(path), "config": cfg.to_dict()})
    else:
        print(path)
    return EXIT_OK


def _canonical_file(ref: str, revision: str | None, quiet: bool) -> Path:
    """A canonical file given as a path, or fetched for a catalogue reference."""
    candidate = Path(ref)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return candidate
    from .loading import fetch_canonical

    return fetch_canonical(ref, revision=revision, quiet=True if quiet else None)


def cmd_export(args: argparse.Namespace) -> int:
    from .canonical import export_saelens, read_config
    from .storage import read_tensors

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"saereg export: --out {out} is a file; give a directory", file=sys.stderr)
        return EXIT_USAGE
    path = _canonical_file(args.ref, args.revision, args.quiet)
    cfg = read_config(path)
    tensors = read_tensors(path, cfg, "cpu")
    written = export_saelens(cfg, tensors, out)
    for p in written:
        print(p)
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from .canonical import CODE_OF, read_config, read_header
    from .storage import referenced

    path = Path(args.path)
    if not path.is_file():
        print(f"saereg inspect: no such file: {path}", file=sys.stderr)
        return EXIT_USAGE
    cfg = read_config(path, full_schema=True)
    header, _ = read_header(path)
    tensors = {n: {"dtype": i["dtype"], "shape": i["shape"]} for n, i in header.items()}
    for name, ref in referenced(cfg).items():
        tensors[name] = {"dtype": CODE_OF[ref["dtype"]], "shape": ref["shape"], "in_place": ref}
    tensors = dict(sorted(tensors.items()))
    if args.json:
        _print_json({"path": str(path), "config": cfg.to_dict(), "tensors": tensors})
        return EXIT_OK
    print(f"{path}")
    src = cfg.source
    print(
        f"  source        {src.get('release')}/{src.get('sae_id')} ({src.get('format')} format, "
        f"revision {src.get('revision') or 'unknown'})"
    )
    kind = cfg.architecture + (" transcoder" if cfg.transcoder else "")
    print(f"  architecture  {kind}" + (f", k={cfg.k}" if cfg.k else ""))
    print(
        f"  d_in/d_sae    {cfg.d_in} / {cfg.d_sae}"
        + (f" -> d_out {cfg.d_out}" if cfg.transcoder else "")
    )
    print(
        f"  hook          {cfg.hook_name}"
        + (f" -> {cfg.hook_name_out}" if cfg.hook_name_out else "")
    )
    norm = ", ".join(f"{k}={v}" for k, v in cfg.normalization.items())
    print(f"  normalization {norm}; b_dec subtracted from input: {cfg.apply_b_dec_to_input}")
    print(f"  reshape       {cfg.reshape}; dtype {cfg.dtype}")
    if cfg.nested_widths:
        print(f"  nested widths {', '.join(map(str, cfg.nested_widths))}")
    for note in cfg.folded:
        print(f"  folded        {note}")
    print("  tensors:")
    for name, info in tensors.items():
        ref = info.get("in_place")
        where = f"  in place: {ref['file']} {ref['tensor']}" if ref else ""
        ops = "".join(f" {op[0]}" for op in ref["ops"]) if ref else ""
        print(f"    {name:<10} {info['dtype']:<5} {info['shape']}{where}{ops}")
    return EXIT_OK


def _all_releases() -> list[Any]:
    from .catalog import read_releases
    from .resolver import release_dirs

    return read_releases(release_dirs())


def cmd_docs(args: argparse.Namespace) -> int:
    from . import docs

    out = Path(args.out)
    pages = docs.generate(_all_releases())
    if args.check:
        stale = docs.stale_files(pages, out)
        if stale:
            print(
                f"saereg docs: {len(stale)} generated page(s) in {out} are stale: "
                f"{', '.join(stale)}. Run `saereg docs --out {out}` and commit the result.",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        print(f"{out}: {len(pages)} pages up to date")
        return EXIT_OK
    changed = docs.write(pages, out)
    print(f"{out}: {len(pages)} pages, {len(changed)} changed")
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    from .catalog import builtin_release_dir
    from .contribute import default_release_name, scaffold, write_new_release
    from .plugin_manager import get_registry
    from .release_check import REPO_ID_RE, unsafe_release_name
    from .resolver import all_release_names

    if not REPO_ID_RE.match(args.repo):
        print(
            f"saereg new: --repo {args.repo[:200]!r} is not a Hugging Face repository id ORG/NAME",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fmt = get_registry().format(args.format)
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
    from .contribute import sync_check
    from .plugin_manager import get_registry

    registry = get_registry()
    releases = _all_releases()
    by_name = {r.name: r for r in releases}
    if args.releases:
        unknown = [n for n in args.releases if n not in by_name]
        if unknown:
            from .refs import close_matches

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
        _print_json([r.__dict__ | {"in_sync": r.in_sync} for r in reports])
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


def cmd_migrate(args: argparse.Namespace) -> int:
    import yaml

    from .catalog import CURRENT_SCHEMA, load_yaml, migrate
    from .safeyaml import decode

    status = EXIT_OK
    for name in args.paths:
        path = Path(name)
        try:
            text = decode(path.read_bytes(), str(path))
        except OSError as exc:
            print(f"saereg migrate: {path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = EXIT_FAILURE
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


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugin_manager import DISABLE_ENV, get_registry

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
        _print_json(rows)
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


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_saelens, write_outputs
    from .plugin_manager import get_registry

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


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the whole usage block otherwise)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="saereg",
        description="Registry and format-conversion hub for pretrained sparse autoencoders.",
        epilog="References: RELEASE/SAE_ID, a Neuronpedia id (gpt2-small/8-res-jb), or "
        "hf:ORG/REPO/PATH. Exit codes: 0 ok, 1 failure, 2 bad usage or unknown reference.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"saereg {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of a failure (also {DEBUG_ENV}=1); may be given "
        "anywhere on the command line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("resolve", help="print everything the catalogue knows about one SAE")
    p.add_argument("ref", help="RELEASE/SAE_ID, a Neuronpedia id, or hf:ORG/REPO/PATH")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser(
        "fetch",
        help="download and convert one SAE; print the canonical file's path",
        description="Download the publisher's files (through the Hugging Face cache or "
        "plain URLs), convert them once into a canonical safetensors file in $SAEREG_CACHE, "
        "and print its path. A second fetch makes no network call.",
    )
    p.add_argument("ref", help="RELEASE/SAE_ID, a Neuronpedia id, or hf:ORG/REPO/PATH")
    p.add_argument("--revision", help="a branch, tag or commit instead of the release's pin")
    p.add_argument("--force", action="store_true", help="download and convert again")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also check the cached tensor bytes against the digest in the file (reads it "
        "all); a mismatch rebuilds it from the publisher files",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the path and canonical config")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("export", help="write an SAE in another library's layout")
    p.add_argument("ref", help="a reference, or a canonical .safetensors file")
    p.add_argument(
        "--format",
        choices=["saelens"],
        default="saelens",
        help="target layout: saelens (cfg.json + sae_weights.safetensors)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--revision", help="a branch, tag or commit instead of the release's pin")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="config and tensor shapes of a canonical file")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("list", help="list SAEs of the whole catalogue, filtered")
    p.add_argument("--model", help="model name glob, e.g. gemma-2-2b or 'gemma-2-*'")
    p.add_argument("--release", help="release name glob, e.g. 'gemma-scope-2b-*'")
    p.add_argument("--hook", help="hook name glob, e.g. '*hook_resid_post'")
    p.add_argument("--layer", type=int, help="hook layer")
    p.add_argument("--width", type=_parse_width, help="d_sae, e.g. 16384 or 16k")
    p.add_argument("--format", help="format plugin name, e.g. gemma_scope")
    p.add_argument("--json", action="store_true", help="print records as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="summarise one release")
    p.add_argument("release")
    p.add_argument("--all", action="store_true", help="list every SAE id")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "models",
        help="list the models the catalogue knows: names, hub ids, families, shapes",
    )
    p.add_argument("--json", action="store_true", help="print every field, aliases included")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "validate",
        help="check release files: schema, then a reviewer's lints",
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

    p = sub.add_parser(
        "docs",
        help="regenerate the markdown catalogue from the release files",
        description="Write pretrained_saes.md, index.md and models/*.md from the release "
        "files alone (offline, deterministic). --check only compares.",
    )
    p.add_argument("--out", default="docs", help="docs directory (default: docs)")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 and name the stale pages if the committed docs differ",
    )
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser(
        "new",
        help="scaffold a release file from a repository's file listing",
        description="List the repository's files at its current commit (pinned as the "
        "revision), let the format discover its SAEs and derive every field it can, and "
        "write releases/NAME.yaml with TODO marks for what the contributor must fill. "
        "Never overwrites a release.",
    )
    p.add_argument("--repo", required=True, help="Hugging Face repository, ORG/NAME")
    p.add_argument("--format", required=True, help="format plugin, e.g. gemma_scope")
    p.add_argument("--release", help="release name (default: from the repository name)")
    p.add_argument("--revision", help="branch, tag or commit to scaffold from (default: main)")
    p.add_argument("--out", help="directory to write to (default: the catalogue's releases/)")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser(
        "sync-check",
        help="compare releases with their repositories",
        description="For each release, list its repository at the pinned revision and "
        "report SAE paths that vanished and SAE folders no release registers. Exit 0 in "
        "sync, 1 with differences, 2 offline or bad usage.",
    )
    p.add_argument("releases", nargs="*", help="release names (default: all hub releases)")
    p.add_argument("--limit", type=int, default=10, help="items shown per list (default 10)")
    p.add_argument("--json", action="store_true", help="print reports as JSON")
    p.set_defaults(func=cmd_sync_check)

    p = sub.add_parser("migrate", help="rewrite release files in the current schema version")
    p.add_argument("paths", nargs="+", help="release files to rewrite in place")
    p.set_defaults(func=cmd_migrate)

    from .cache_cli import add_parser as add_cache_parser

    add_cache_parser(sub)

    p = sub.add_parser("plugins", help="list installed plugins and their formats")
    p.add_argument("--json", action="store_true", help="print plugins as JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("import", help="import an upstream catalogue into release files")
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
    return parser


# --------------------------------------------------------------------------- errors

DEBUG_ENV = "SAEREG_DEBUG"
#: The longest message printed; the rest is cut (a one-line message stays readable).
MAX_MESSAGE = 2000


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The message and exit code for a failure that reached the top of a command."""
    from .errors import SaeregError

    if isinstance(exc, SaeregError):
        return str(exc), exc.exit_code
    if isinstance(exc, NotImplementedError):
        return str(exc) or "not supported yet", EXIT_FAILURE
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = " (check SAEREG_CACHE, SAEREG_RELEASES and the paths given)" if where else ""
        return (f"{where}: {reason}{hint}" if where else reason), EXIT_FAILURE
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8",
            EXIT_FAILURE,
        )
    if isinstance(exc, MemoryError):
        return "out of memory", EXIT_FAILURE
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process", EXIT_FAILURE
    return (
        f"internal error: {type(exc).__name__}: {exc}. Run with --debug (or {DEBUG_ENV}=1) "
        "for the traceback, and please report it",
        EXIT_FAILURE,
    )


@contextmanager
def _warnings_as_lines(prefix: str) -> Iterator[None]:
    """Warnings (e.g. a release file left out of the catalogue) as one line each."""

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"{prefix}: warning: {one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():  # the filters stay as they are; only the printing changes
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends in one line on stderr and an exit code
    (0 ok, 1 failure, 2 bad usage or unknown reference); --debug shows the traceback."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    args_list = [a for a in args_list if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(args_list)
    prefix = f"saereg {args.command}"
    try:
        with _warnings_as_lines(prefix):
            return int(args.func(args))
    except BrokenPipeError:  # `saereg list | head`
        return EXIT_OK
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message, code = describe_failure(exc)
        print(f"{prefix}: {one_line(message)}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
