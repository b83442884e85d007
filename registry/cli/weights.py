"""`saereg fetch`, `export` and `inspect`: canonical files, downloaded and converted
once, written in another library's layout, or described."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from saereg.base.errors import SaeregError
from saereg.catalogue.records import DICTIONARY_KINDS
from saereg.cli.detect import add_source_options, source_overrides
from saereg.cli.output import EXIT_OK, EXIT_USAGE, Subparsers, print_json
from saereg.loading import Reference, fetch_canonical, fetch_dictionary, resolve_reference
from saereg.store.canonical import (
    dictionary_refusal,
    export_saelens,
    layer_file_refusal,
    read_config,
)
from saereg.store.export_sparsify import export_sparsify
from saereg.store.in_place import read_tensors, referenced
from saereg.store.layer_config import is_layer_file, read_layer_config
from saereg.store.sae_config import METADATA_KEY
from saereg.store.tensors import CODE_OF, read_header


def cmd_fetch(args: argparse.Namespace) -> int:
    # Resolved once: an uncatalogued repository is listed once, whatever its kind.
    reference = resolve_reference(args.ref, revision=args.revision, **source_overrides(args))
    quiet = True if args.quiet else None
    if args.layers is not None or reference.kind in DICTIONARY_KINDS:
        return _fetch_layers(args, reference)
    path = fetch_canonical(reference, force=args.force, quiet=quiet, verify=args.verify)
    if args.json:
        cfg = read_config(path)
        print_json({"path": str(path), "config": cfg.to_dict()})
    else:
        print(path)
    return EXIT_OK


def _fetch_layers(args: argparse.Namespace, reference: Reference) -> int:
    """A multi-layer dictionary: one canonical file per layer, all or `--layers`."""
    paths = fetch_dictionary(
        reference,
        args.layers,
        force=args.force,
        quiet=True if args.quiet else None,
        verify=args.verify,
    )
    if args.json:
        print_json([{"path": str(p), "config": read_layer_config(p).to_dict()} for p in paths])
    else:
        print("\n".join(map(str, paths)))
    return EXIT_OK


def _layer_list(text: str) -> list[int]:
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        layers = []
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"expected layer numbers such as 0,5,12, got {text!r}")
    return layers


def _is_canonical(path: Path) -> bool:
    """Whether `path` is a canonical file (its header carries saereg's config), not a
    publisher's safetensors file that happens to be named as a reference."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        _, metadata = read_header(path)
    except (OSError, SaeregError):
        return False
    return METADATA_KEY in metadata


def _canonical_file(args: argparse.Namespace) -> Path:
    """A canonical file given as a path, or fetched for a reference, folder or file.
    A multi-layer dictionary, or one of its layer files, is refused before anything is
    downloaded: no single-SAE layout holds it."""
    candidate = Path(args.ref).expanduser()
    if candidate.is_file() and is_layer_file(candidate):
        raise layer_file_refusal(candidate, read_layer_config(candidate))
    if _is_canonical(candidate):
        return candidate
    reference = resolve_reference(args.ref, revision=args.revision, **source_overrides(args))
    if reference.kind in DICTIONARY_KINDS:
        raise dictionary_refusal(reference.text, reference.kind, reference.entry.n_layers)
    return fetch_canonical(reference, quiet=True if args.quiet else None)


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"saereg export: --out {out} is a file; give a directory", file=sys.stderr)
        return EXIT_USAGE
    path = _canonical_file(args)
    cfg = read_config(path)
    tensors = read_tensors(path, cfg, "cpu")
    exporter = export_sparsify if args.format == "sparsify" else export_saelens
    written = exporter(cfg, tensors, out)
    for p in written:
        print(p)
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        print(f"saereg inspect: no such file: {path}", file=sys.stderr)
        return EXIT_USAGE
    if is_layer_file(path):
        return _inspect_layer(path, args.json)
    cfg = read_config(path, full_schema=True)
    header, _ = read_header(path)
    tensors = {n: {"dtype": i["dtype"], "shape": i["shape"]} for n, i in header.items()}
    for name, ref in referenced(cfg).items():
        tensors[name] = {"dtype": CODE_OF[ref["dtype"]], "shape": ref["shape"], "in_place": ref}
    tensors = dict(sorted(tensors.items()))
    if args.json:
        print_json({"path": str(path), "config": cfg.to_dict(), "tensors": tensors})
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


# --------------------------------------------------------------------------- parsers


def _add_fetch(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "fetch",
        help=summary,
        description="Download the publisher's files (through the Hugging Face cache or "
        "plain URLs), convert them once into a canonical safetensors file in $SAEREG_CACHE, "
        "and print its path. A second fetch makes no network call.",
    )
    p.add_argument(
        "ref",
        help="RELEASE/SAE_ID, a Neuronpedia id, hf:ORG/REPO[@REVISION]/PATH, or a local "
        "folder or file (./x, /x, ~/x)",
    )
    p.add_argument(
        "--revision",
        help="a branch, tag or commit (or the short commit `saereg cache ls` prints) instead "
        "of the release's pin",
    )
    p.add_argument("--force", action="store_true", help="download and convert again")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also check the cached tensor bytes against the digest in the file (reads it "
        "all); a mismatch rebuilds it from the publisher files",
    )
    p.add_argument(
        "--layers",
        type=_layer_list,
        help="multi-layer dictionaries (CLTs, transcoder sets): only these layers, e.g. 0,5,12 "
        "(default: all); each layer is its own canonical file, one path per line",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the path and canonical config")
    add_source_options(p)
    p.set_defaults(func=cmd_fetch)


def _add_export(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "export",
        help=summary,
        description="Write an SAE (catalogued, a local folder or file in any supported "
        "layout, an uncatalogued hf: repository, or a canonical file) in SAELens' or "
        "EleutherAI sparsify's layout. A multi-layer dictionary (CLT, transcoder set, "
        "crosscoder) or one of its layer files has no such layout and is refused (exit 2).",
    )
    p.add_argument(
        "ref", help="a reference, a local folder or file (./x, /x, ~/x), or a canonical file"
    )
    p.add_argument(
        "--format",
        choices=["saelens", "sparsify"],
        default="saelens",
        help="target layout: saelens (OUT/cfg.json + sae_weights.safetensors) or sparsify "
        "(OUT/HOOKPOINT/cfg.json + sae.safetensors, for SparseCoder.load_from_disk)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--revision",
        help="a branch, tag or commit (or the short commit `saereg cache ls` prints) instead "
        "of the release's pin",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_source_options(p)
    p.set_defaults(func=cmd_export)


def _add_inspect(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser("inspect", help=summary)
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_inspect)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {
    "fetch": _add_fetch,
    "export": _add_export,
    "inspect": _add_inspect,
}


def _inspect_layer(path: Path, as_json: bool) -> int:
    """One layer file of a multi-layer dictionary."""
    cfg = read_layer_config(path)
    header, _ = read_header(path)
    tensors = {n: {"dtype": i["dtype"], "shape": i["shape"]} for n, i in header.items()}
    for name, ref in referenced(cfg).items():  # type: ignore[arg-type]
        tensors[name] = {"dtype": CODE_OF[ref["dtype"]], "shape": ref["shape"], "in_place": ref}
    tensors = dict(sorted(tensors.items()))
    if as_json:
        print_json({"path": str(path), "config": cfg.to_dict(), "tensors": tensors})
        return EXIT_OK
    src = cfg.source
    print(f"{path}")
    print(
        f"  source        {src.get('release')}/{src.get('sae_id')} ({src.get('format')} format, "
        f"revision {src.get('revision') or 'unknown'})"
    )
    print(f"  layer         {cfg.layer} of a {cfg.n_layers}-layer {cfg.kind}, {cfg.architecture}")
    print(f"  d_in/d_sae    {cfg.d_in} / {cfg.d_sae} -> d_out {cfg.d_out}; dtype {cfg.dtype}")
    print(f"  hook          {cfg.hook_names[cfg.layer]} -> {cfg.hook_names_out[cfg.layer]}")
    for name, info in tensors.items():
        where = " (in place)" if "in_place" in info else ""
        print(f"  {name:<13} {info['dtype']} {info['shape']}{where}")
    return EXIT_OK
