"""`saereg detect`: which format a local folder/file or a hub repository holds, what was
read to decide, and a release-file snippet a contributor can paste.

Also the options every command that loads an SAE by path takes (`add_source_options`):
what the files cannot say (the hook, the model, a TopK k) and which format or SAE to
take when several fit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saereg.base.errors import SaeregError
from saereg.cli.output import EXIT_OK, Subparsers, print_json
from saereg.detection import Found, Report, detect_report, resolve_source
from saereg.loading import fetch_dictionary, load_config
from saereg.publish.scaffold import (
    TODO,
    dictionary_fields,
    entry_fields,
    release_document,
    release_model,
    release_name,
    render_release,
)
from saereg.store.fetch import hf_cache_dir, remote_safetensors_header
from saereg.store.layer_config import read_layer_config
from saereg.store.local import local_root
from saereg.store.sae_config import SAEConfig
from saereg.store.tensors import read_header


def add_source_options(p: argparse.ArgumentParser, format_flag: str = "--source-format") -> None:
    """Overrides for an SAE no release describes (a local path, an uncatalogued hf: repo)."""
    g = p.add_argument_group(
        "for a local folder or file, or a hub repository no release describes",
        "state what the files cannot say; none of these apply to catalogue references",
    )
    g.add_argument(
        format_flag,
        dest="source_format",
        metavar="FORMAT",
        help="the format to read it with, when detection finds several (or none)",
    )
    g.add_argument(
        "--sae",
        metavar="PATH",
        help="which SAE of a folder holding several (a path `saereg detect` lists)",
    )
    g.add_argument("--model", help="the model the SAE was trained on")
    g.add_argument(
        "--hook-name", help="TransformerLens hook it reads, e.g. blocks.8.hook_resid_pre"
    )
    g.add_argument("--hook-name-out", help="hook a transcoder writes")
    g.add_argument("--hook-layer", type=int, help="the layer of the hook")
    g.add_argument("--k", type=int, help="latents a TopK SAE keeps, where its files do not say")
    g.add_argument("--context-size", type=int, help="context length it was trained on")
    g.add_argument(
        "--norm-scaling-factor",
        type=float,
        help="dataset-wise input scale (expected_average_only_in SAEs)",
    )


def source_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `load_sae` keywords the options above give (unset ones left out)."""
    pairs = {
        "format": getattr(args, "source_format", None),
        "sae": args.sae,
        "model": args.model,
        "hook_name": args.hook_name,
        "hook_name_out": args.hook_name_out,
        "hook_layer": args.hook_layer,
        "k": args.k,
        "context_size": args.context_size,
        "norm_scaling_factor": args.norm_scaling_factor,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _skip_connection(found: Found, overrides: dict[str, Any]) -> bool | None:
    """Whether a transcoder's weights hold a skip connection (a tensor whose name says
    ``skip``: W_skip, Gemma Scope 2's affine_skip_connection), from the safetensors
    headers alone (local files, the HF cache, else two range requests); None when they
    cannot tell (pickled weights, no header to be had offline)."""
    from huggingface_hub import try_to_load_from_cache  # deferred: huggingface_hub

    release, entry, fmt, revision = resolve_source(found.ref, overrides)
    root = local_root(release)
    names: list[str] = []
    try:
        for file in fmt.files(release, entry):
            if not file.weights:
                continue
            if not file.path.endswith(".safetensors"):
                return None
            if root is not None:
                names.extend(read_header(root / file.path)[0])
                continue
            if release.repo_id is None:
                return None
            cached = try_to_load_from_cache(
                release.repo_id, file.path, cache_dir=hf_cache_dir(), revision=revision
            )
            if isinstance(cached, str):
                names.extend(read_header(Path(cached))[0])
            else:
                names.extend(remote_safetensors_header(release.repo_id, file.path, revision)[0])
    except (SaeregError, OSError):
        return None
    return any("skip" in name.lower() for name in names) if names else None


def _dictionary_fields(found: Found, overrides: dict[str, Any]) -> dict[str, Any]:
    """A local multi-layer dictionary's entry fields: the format's own (kind,
    normalization) and what its first layer's canonical config states (hooks,
    architecture, widths, k), converting that one layer (a crosscoder: its one file)."""
    release, entry, fmt, _ = resolve_source(found.ref, overrides)
    try:
        derived = fmt.describe(release, entry)
    except ValueError:
        derived = {}
    layers = None if found.kind == "crosscoder" else 0  # a crosscoder is stored whole
    paths = fetch_dictionary(found.ref, layers, quiet=True, **overrides)
    return {**derived, **dictionary_fields(read_layer_config(paths[0]))}


def snippet(
    report: Report, found: Found, fields: dict[str, Any], fmt: str, model: str | None = None
) -> str:
    """A release file around one SAE (YAML): the entry `fields` its files state, the
    model its config names (`model` overrides it; canonical, or as written with a
    comment where the models table lacks it), TODO where a person must look. Written by
    the code `saereg new` uses."""
    path = found.path or (report.root or "TODO").rstrip("/").rsplit("/", 1)[-1]
    entry: dict[str, Any] = {"id": path, "path": path}
    if found.kind is not None:  # a multi-layer dictionary: the folder (or repository) itself
        entry = {"id": found.kind, "path": found.path or ".", "kind": found.kind}
        if found.n_layers:
            entry["n_layers"] = found.n_layers
    entry.update(fields)
    repo = report.repo_id
    name = (repo or report.root or "TODO").rstrip("/").rsplit("/", 1)[-1]
    doc, comment = release_document(
        name=release_name(name) or TODO,
        fmt=fmt,
        publisher=repo.split("/", 1)[0] if repo else TODO,
        stated_model=model or found.model,
        repo_id=repo or f"{TODO} (upload the folder to the hub first)",
        revision=report.commit,
        entries=[entry],
    )
    return render_release(doc, comment)


def _model_json(found: Found) -> dict[str, Any] | None:
    if found.model is None:
        return None
    model, comment = release_model(found.model)
    return {"name": model, "stated": found.model, "from": found.model_from, "known": not comment}


def _read_one(
    report: Report, found: Found, overrides: dict[str, Any]
) -> tuple[SAEConfig | None, dict[str, Any], str | None]:
    """(config, entry fields, problem) of the one SAE detect describes. A problem is
    reported, not raised: the snippet still helps."""
    extra = {k: v for k, v in overrides.items() if k != "sae"}
    if found.sae is not None:
        extra["sae"] = found.sae
    if len(found.claims) > 1 and found.claims[0][1] == found.claims[1][1]:
        extra.setdefault("format", found.claims[0][0])
    try:
        if found.kind is not None:
            if report.repo_id is not None:  # converting a layer would download its weights
                return None, {}, None
            return None, _dictionary_fields(found, extra), None
        cfg = load_config(found.ref, quiet=True, **extra)
        return (
            cfg,
            entry_fields(cfg, _skip_connection(found, extra) if cfg.transcoder else None),
            None,
        )
    except Exception as exc:  # the snippet still helps; say what stopped the config
        return None, {}, " ".join(str(exc).split())


def cmd_detect(args: argparse.Namespace) -> int:
    overrides = source_overrides(args)
    report = detect_report(args.ref, overrides.get("format"), overrides.get("sae"))
    single = len(report.saes) == 1 or overrides.get("sae") is not None
    chosen = [f for f in report.saes if overrides.get("sae") in (None, f.path)]
    described: dict[str, tuple[SAEConfig | None, dict[str, Any], str | None]] = {}
    if single and chosen:
        described[chosen[0].path] = _read_one(report, chosen[0], overrides)
    if args.json:
        print_json(
            {
                "source": report.source,
                "repo_id": report.repo_id,
                "revision": report.commit,
                "root": report.root,
                "files": report.n_files,
                "read": list(report.read),
                "saes": [_found_json(f, described.get(f.path)) for f in report.saes],
            }
        )
        return EXIT_OK
    where = report.repo_id + f" at {report.commit}" if report.repo_id else report.root
    print(f"{report.source}: {report.n_files} files in {where}")
    print(f"  read: {', '.join(report.read) if report.read else 'file names only'}")
    for found in report.saes:
        best, *others = found.claims
        print(f"  SAE {found.path or '.'}: {best[0]} (confidence {best[1]:.2f}; {best[2]})")
        for name, conf, _ in others:
            print(f"      also fits {name} (confidence {conf:.2f})")
        print(
            f"      load it: saereg.load_sae({found.ref!r}"
            + (f", sae={found.sae!r})" if found.sae else ")")
        )
    if not described:
        print("  (several SAEs: name one, or pass --sae PATH, for its config and a snippet)")
        return EXIT_OK
    path, (cfg, fields, problem) = next(iter(described.items()))
    found = next(f for f in report.saes if f.path == path)
    if found.kind is not None and problem is None:
        print(
            f"  a {found.kind} of {found.n_layers or fields.get('n_layers') or 'several'} "
            f"{'sites' if found.kind == 'crosscoder' else 'layers'}: load_sae returns the "
            "whole dictionary"
            + ("" if found.kind == "crosscoder" else " (layers=[...] loads a subset)")
        )
        if report.repo_id is not None:
            print(
                "  (its hooks and widths are read from its layers' weights, which detect does "
                "not download: fill them in, or run detect on a local copy of the repository)"
            )
    if problem is not None:
        print(f"  its config could not be read: {problem}")
    elif cfg is not None:
        print(
            f"  config: {cfg.architecture}{' transcoder' if cfg.transcoder else ''}, "
            f"d_in {cfg.d_in}, d_sae {cfg.d_sae}"
            + (f", k {cfg.k}" if cfg.k else "")
            + f", hook {cfg.hook_name or 'unknown (pass --hook-name)'}"
        )
    if found.model is not None:
        print(f"  model: {found.model} (from {found.model_from})")
    fmt = overrides.get("format") or found.claims[0][0]
    print(
        "\nrelease-file snippet (releases/NAME.yaml; fill in the TODOs, then `saereg validate`):\n"
    )
    print(snippet(report, found, fields, fmt, overrides.get("model")), end="")
    return EXIT_OK


def _found_json(
    f: Found, described: tuple[SAEConfig | None, dict[str, Any], str | None] | None
) -> dict[str, Any]:
    cfg, fields, problem = described or (None, {}, None)
    return {
        "path": f.path,
        "ref": f.ref,
        "sae": f.sae,
        "kind": f.kind,
        "n_layers": f.n_layers,
        "model": _model_json(f),
        "formats": [{"format": n, "confidence": c, "reason": r} for n, c, r in f.claims],
        "config": cfg.to_dict() if cfg is not None else None,
        "entry": fields or None,
        "problem": problem,
    }


def _add_detect(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "detect",
        help=summary,
        description="List the SAEs a local folder or file, or a hub repository "
        "(hf:ORG/REPO[@REVISION][/PATH]), holds: the format each is in, how sure detection "
        "is and why, the small files it read, and for a single SAE its config and a "
        "release-file snippet to paste: the model its config names (canonical, through the "
        "models table) and every field the files state (hooks, architecture, widths, k, "
        "context size, normalization).",
    )
    p.add_argument("ref", help="a folder or file (./x, /x, ~/x) or hf:ORG/REPO[@REVISION][/PATH]")
    add_source_options(p, "--format")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_detect)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {"detect": _add_detect}
