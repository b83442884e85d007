"""`saereg resolve`, `list`, `info` and `models`: what the catalogue knows, read
from the release files and the models table alone (no torch, no network)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from saereg.catalogue.index import load_index
from saereg.catalogue.models import SHAPE_FIELDS, get_model, model_table
from saereg.catalogue.records import KIND_LABELS, parse_width
from saereg.catalogue.release_dirs import release_dirs
from saereg.catalogue.resolver import get_release, resolve, select_releases, select_rows
from saereg.cli.output import (
    EXIT_OK,
    Subparsers,
    fmt,
    print_json,
    print_json_records,
    write_json_lines,
)


def cmd_resolve(args: argparse.Namespace) -> int:
    info = resolve(args.ref)
    data = info.to_dict()
    if args.json:
        print_json(data)
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
    rows.append(("kind", KIND_LABELS.get(info.kind, info.kind)))
    if info.n_layers is not None:
        rows.append(("n_layers", info.n_layers))
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
        print(f"{key:<{width}}  {fmt(value)}")
    return EXIT_OK


def _parse_width(text: str) -> int:
    try:
        return parse_width(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid width {text!r}: use a number of latents such as 16384, or 16k, 65k, 1m"
        ) from None


def cmd_list(args: argparse.Namespace) -> int:
    if args.json and args.hook is None and args.layer is None and args.width is None:
        # Whole releases: their records are written as the index keeps them.
        index = load_index(release_dirs())
        keep = select_releases(index, model=args.model, release=args.release, format=args.format)
        write_json_lines(index.json_lines(keep))
        return EXIT_OK
    _, rows = select_rows(
        model=args.model,
        release=args.release,
        hook=args.hook,
        layer=args.layer,
        width=args.width,
        format=args.format,
    )
    if args.json:
        print_json_records(rows)
        return EXIT_OK
    if not rows:
        print("No SAEs match these filters.", file=sys.stderr)
        return EXIT_OK

    # A column at a time, no fmt() call per cell: at 100,000+ rows that costs more than
    # reading the index.
    def ints(name: str) -> list[str]:
        return ["unknown" if r[name] is None else str(r[name]) for r in rows]

    columns = [
        [f"{r['release']}/{r['id']}" for r in rows],
        [KIND_LABELS.get(r["kind"], r["kind"]) for r in rows],
        [r["hook_name"] or "?" for r in rows],
        ints("hook_layer"),
        ints("d_sae"),
        [r["neuronpedia"] or "" for r in rows],
    ]
    header = ("reference", "kind", "hook_name", "layer", "d_sae", "neuronpedia")
    widths = [max(len(h), *map(len, c)) for h, c in zip(header, columns, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths).format
    out = [line(*header).rstrip()]
    out += [line(*cells).rstrip() for cells in zip(*columns, strict=True)]
    sys.stdout.write("\n".join(out) + "\n")
    print(f"{len(rows)} SAEs", file=sys.stderr)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
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
        "repo_aliases": list(rel.repo_aliases),
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
        print_json(summary)
        return EXIT_OK
    print(f"{rel.name}  ({rel.format} format, {len(rel.saes)} SAEs)")
    other = hub if hub and hub.lower() != rel.model.lower() else None  # not the name twice
    print(f"  model       {rel.model}" + (f" ({other})" if other else ""))
    print(f"  publisher   {rel.publisher}")
    print(f"  location    {rel.location}")
    if rel.repo_aliases:
        print(f"  formerly    {', '.join(rel.repo_aliases)}")
    print(f"  revision    {rel.revision or 'not pinned'}")
    print(f"  license     {fmt(rel.license)}")
    for key, url in rel.links.items():  # "model link", not a second "model" line
        print(f"  {key + ' link':<11} {url}")
    for key, value in rel.defaults.items():
        print(f"  default     {key} = {fmt(value)}")
    print(f"  layers      {fmt(layers) if layers else 'unknown'}")
    print(f"  widths      {fmt(widths) if widths else 'unknown'}")
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
    models = list(model_table())
    if args.json:
        print_json([m.to_dict() for m in models])
        return EXIT_OK
    header = ("name", "hub_id", "family", "d_model", "layers", "heads", "d_head", "d_mlp")
    table = [
        (m.name, m.hub_id, m.family, *(fmt(getattr(m, k)) for k in SHAPE_FIELDS)) for m in models
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    for row in (header, *table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"{len(models)} models (releases/models/models.yaml; --json adds aliases and sources)",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- parsers


def _add_resolve(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("resolve", help=summary)
    p.add_argument("ref", help="RELEASE/SAE_ID, a Neuronpedia id, or hf:ORG/REPO/PATH")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_resolve)


def _add_list(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("list", help=summary)
    p.add_argument("--model", help="model name glob, e.g. gemma-2-2b or 'gemma-2-*'")
    p.add_argument("--release", help="release name glob, e.g. 'gemma-scope-2b-*'")
    p.add_argument("--hook", help="hook name glob, e.g. '*hook_resid_post'")
    p.add_argument("--layer", type=int, help="hook layer")
    p.add_argument("--width", type=_parse_width, help="d_sae, e.g. 16384 or 16k")
    p.add_argument("--format", help="format plugin name, e.g. gemma_scope")
    p.add_argument("--json", action="store_true", help="print records as JSON")
    p.set_defaults(func=cmd_list)


def _add_info(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("info", help=summary)
    p.add_argument("release")
    p.add_argument("--all", action="store_true", help="list every SAE id")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)


def _add_models(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "models",
        help=summary,
    )
    p.add_argument("--json", action="store_true", help="print every field, aliases included")
    p.set_defaults(func=cmd_models)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {
    "resolve": _add_resolve,
    "list": _add_list,
    "info": _add_info,
    "models": _add_models,
}
