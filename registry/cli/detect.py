"""`saereg detect`: which format a local folder/file or a hub repository holds, what was
read to decide, and a release-file snippet a contributor can paste.

Also the options every command that loads an SAE by path takes (`add_source_options`):
what the files cannot say (the hook, the model, a TopK k) and which format or SAE to
take when several fit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from saereg.catalogue.release_files import dump_release
from saereg.cli.output import EXIT_OK, Subparsers, print_json
from saereg.detection import Found, Report, detect_report
from saereg.loading import load_config
from saereg.store.sae_config import SAEConfig


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


def _normalize_field(cfg: SAEConfig) -> tuple[str, float | None]:
    kind = cfg.normalization["kind"]
    if kind == "scale":
        return "expected_average_only_in", float(cfg.normalization["factor"])
    return kind, None


def snippet(report: Report, found: Found, cfg: SAEConfig | None, fmt: str) -> dict[str, Any]:
    """A release file around one SAE: what the files said, TODO where a person must look."""
    path = found.path or (report.root or "TODO").rstrip("/").rsplit("/", 1)[-1]
    entry: dict[str, Any] = {"id": path, "path": path}
    if found.kind is not None:  # a multi-layer dictionary: the folder (or repository) itself
        entry = {"id": found.kind, "path": found.path or ".", "kind": found.kind}
        if found.n_layers:
            entry["n_layers"] = found.n_layers
    if cfg is not None:
        norm, factor = _normalize_field(cfg)
        entry.update(
            hook_name=cfg.hook_name,
            hook_layer=cfg.hook_layer,
            d_sae=cfg.d_sae,
            context_size=cfg.context_size,
            normalize_activations=norm,
        )
        if factor is not None:
            entry["norm_scaling_factor"] = factor
        if cfg.hook_name_out:
            entry["hook_name_out"] = cfg.hook_name_out
        if cfg.k is not None:
            entry["k"] = cfg.k
    repo = report.repo_id
    name = (repo or report.root or "TODO").rstrip("/").rsplit("/", 1)[-1].lower()
    return {
        "schema": 1,
        "name": name,
        "format": fmt,
        "publisher": repo.split("/", 1)[0] if repo else "TODO",
        "model": (cfg.model if cfg is not None else None) or "TODO",
        "repo_id": repo or "TODO (upload the folder to the hub first)",
        "revision": report.commit,
        "license": None,
        "saes": [entry],
    }


def cmd_detect(args: argparse.Namespace) -> int:
    overrides = source_overrides(args)
    report = detect_report(args.ref, overrides.get("format"))
    single = len(report.saes) == 1 or overrides.get("sae") is not None
    configs: dict[str, SAEConfig | None] = {}
    problems: dict[str, str] = {}
    chosen = [f for f in report.saes if overrides.get("sae") in (None, f.path)]
    if single and chosen and chosen[0].kind is not None:
        configs[chosen[0].path] = None  # a dictionary: its layers convert when loaded
    elif single and chosen:
        found = chosen[0]
        extra = {k: v for k, v in overrides.items() if k != "sae"}
        if found.sae is not None:
            extra["sae"] = found.sae
        if len(found.claims) > 1 and found.claims[0][1] == found.claims[1][1]:
            extra.setdefault("format", found.claims[0][0])
        try:
            configs[found.path] = load_config(found.ref, quiet=True, **extra)
        except Exception as exc:  # the snippet still helps; say what stopped the config
            configs[found.path] = None
            problems[found.path] = " ".join(str(exc).split())
    if args.json:
        print_json(
            {
                "source": report.source,
                "repo_id": report.repo_id,
                "revision": report.commit,
                "root": report.root,
                "files": report.n_files,
                "read": list(report.read),
                "saes": [
                    {
                        "path": f.path,
                        "ref": f.ref,
                        "sae": f.sae,
                        "kind": f.kind,
                        "n_layers": f.n_layers,
                        "formats": [
                            {"format": n, "confidence": c, "reason": r} for n, c, r in f.claims
                        ],
                        "config": configs[f.path].to_dict()
                        if configs.get(f.path) is not None
                        else None,
                        "problem": problems.get(f.path),
                    }
                    for f in report.saes
                ],
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
    if not configs:
        print("  (several SAEs: name one, or pass --sae PATH, for its config and a snippet)")
        return EXIT_OK
    path, cfg = next(iter(configs.items()))
    found = next(f for f in report.saes if f.path == path)
    if found.kind is not None:
        print(
            f"  a {found.kind} of {found.n_layers or 'several'} "
            f"{'sites' if found.kind == 'crosscoder' else 'layers'}: load_sae returns the "
            "whole dictionary"
            + ("" if found.kind == "crosscoder" else " (layers=[...] loads a subset)")
        )
    elif cfg is None:
        print(f"  its config could not be read: {problems[path]}")
    else:
        print(
            f"  config: {cfg.architecture}{' transcoder' if cfg.transcoder else ''}, "
            f"d_in {cfg.d_in}, d_sae {cfg.d_sae}"
            + (f", k {cfg.k}" if cfg.k else "")
            + f", hook {cfg.hook_name or 'unknown (pass --hook-name)'}"
        )
    fmt = overrides.get("format") or found.claims[0][0]
    print(
        "\nrelease-file snippet (releases/NAME.yaml; fill in the TODOs, then `saereg validate`):\n"
    )
    print(dump_release(snippet(report, found, cfg, fmt)), end="")
    return EXIT_OK


def _add_detect(sub: Subparsers, summary: str) -> None:
    p = sub.add_parser(
        "detect",
        help=summary,
        description="List the SAEs a local folder or file, or a hub repository "
        "(hf:ORG/REPO[@REVISION][/PATH]), holds: the format each is in, how sure detection "
        "is and why, the small files it read, and for a single SAE its config and a "
        "release-file snippet to paste.",
    )
    p.add_argument("ref", help="a folder or file (./x, /x, ~/x) or hf:ORG/REPO[@REVISION][/PATH]")
    add_source_options(p, "--format")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_detect)


PARSERS: dict[str, Callable[[Subparsers, str], None]] = {"detect": _add_detect}
