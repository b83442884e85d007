"""Registry speed, each figure beside a baseline measured in the same run.

    python benchmarks/bench_registry.py [--runs N] [--upstream PATH]

1. `saereg resolve gpt2-small-res-jb/blocks.8.hook_resid_pre` as a whole process,
   against `python -c pass` (target: median at most 3x), and `import saereg` alike.
2. `saereg list --model gemma-2-2b --json` over the whole catalogue with a warm index
   (target: median at most 0.5 s), and the cold rebuild of the index for reference.
3. `saereg docs` regenerating the whole catalogue (target: under 2 s), cold and warm.
4. The upstream library's approach to one lookup: parse the whole SAELens-shaped YAML
   (about 1.5 MB) with yaml.CSafeLoader. Without --upstream, an equivalent file is
   rebuilt from releases/ so the benchmark needs nothing outside this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
REF = "gpt2-small-res-jb/blocks.8.hook_resid_pre"


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def paired(
    baseline: Callable[[], object], fn: Callable[[], object], runs: int
) -> tuple[float, float, float]:
    """Medians of `baseline` and `fn` run alternately, and the median of the per-pair
    ratios: a noisy neighbour then slows both sides of a pair alike."""
    for _ in range(2):
        baseline(), fn()
    pairs = []
    for _ in range(runs):
        start = time.perf_counter()
        baseline()
        middle = time.perf_counter()
        fn()
        pairs.append((middle - start, time.perf_counter() - middle))
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(f for _, f in pairs),
        statistics.median(f / b for b, f in pairs),
    )


def run(cmd: list[str], env: dict[str, str]) -> Callable[[], object]:
    def go() -> object:
        return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)

    return go


def _index_releases(env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, saereg.catalogue.index as i; "
            "print(json.dumps(list(i.load_index().releases.values())))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def upstream_shaped_yaml(path: Path) -> None:
    """SAELens' pretrained_saes.yaml shape, rebuilt from the release files."""
    from saereg.catalogue.release_dirs import builtin_release_dir
    from saereg.catalogue.release_files import read_release_file

    out = {}
    for f in sorted(builtin_release_dir().glob("*.yaml")):
        rel = read_release_file(f)
        saes = []
        for e in rel.saes:
            item = {"id": e.id, "path": e.path}
            for key in ("l0", "neuronpedia", "variance_explained", "norm_scaling_factor"):
                if getattr(e, key) is not None:
                    item[key] = getattr(e, key)
            saes.append(item)
        out[rel.name] = {
            "conversion_func": None if rel.format == "saelens" else rel.format,
            "links": dict(rel.links),
            "model": rel.model,
            "repo_id": rel.repo_id,
            "saes": saes,
        }
    path.write_text(yaml.safe_dump(out, sort_keys=True), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--upstream", type=Path, help="SAELens pretrained_saes.yaml to parse")
    args = parser.parse_args()

    saereg = shutil.which("saereg")
    if saereg is None:
        print("saereg is not installed (pip install -e .)", file=sys.stderr)
        return 2
    cache = tempfile.mkdtemp(prefix="saereg-bench-")
    env = {**os.environ, "SAEREG_CACHE": cache}
    rows: list[tuple[str, float, str]] = []

    base, resolve, ratio = paired(
        run([sys.executable, "-c", "pass"], env), run([saereg, "resolve", REF], env), args.runs
    )
    rows.append(("python -c pass (baseline)", base, ""))
    rows.append(
        (
            f"saereg resolve {REF}",
            resolve,
            f"{ratio:.2f}x baseline, median of paired runs (target <= 3x)",
        )
    )
    _, imported, ratio = paired(
        run([sys.executable, "-c", "pass"], env),
        run([sys.executable, "-c", "import saereg"], env),
        args.runs,
    )
    rows.append(
        ("python -c 'import saereg'", imported, f"{ratio:.2f}x baseline, median of paired runs")
    )

    cold = []
    for _ in range(3):
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        run([saereg, "list", "--model", "gemma-2-2b", "--json"], env)()
        cold.append(time.perf_counter() - start)
    warm = median_seconds(run([saereg, "list", "--model", "gemma-2-2b", "--json"], env), args.runs)
    rows.append(
        ("saereg list --model gemma-2-2b --json (cold: builds index)", statistics.median(cold), "")
    )
    rows.append(
        (
            "saereg list --model gemma-2-2b --json (warm index)",
            warm,
            f"{warm:.3f} s (target <= 0.5 s); {statistics.median(cold) / warm:.1f}x faster "
            "than cold",
        )
    )

    with tempfile.TemporaryDirectory() as tmp:
        docs_cmd = [saereg, "docs", "--out", str(Path(tmp) / "docs")]
        cold_docs = []
        for _ in range(3):
            shutil.rmtree(cache, ignore_errors=True)  # no compiled release files either
            start = time.perf_counter()
            run(docs_cmd, env)()
            cold_docs.append(time.perf_counter() - start)
        warm_docs = median_seconds(run(docs_cmd, env), max(5, args.runs // 3))
        n_saes = sum(r["n_saes"] for r in _index_releases(env))
        rows.append(
            (
                f"saereg docs: whole catalogue, {n_saes} SAEs (cold cache)",
                statistics.median(cold_docs),
                "target < 2 s",
            )
        )
        rows.append(("saereg docs: whole catalogue (warm cache)", warm_docs, "target < 2 s"))

    with tempfile.TemporaryDirectory() as tmp:
        source = args.upstream
        if source is None:
            source = Path(tmp) / "pretrained_saes.yaml"
            upstream_shaped_yaml(source)
        size_mb = source.stat().st_size / 1e6
        text = source.read_text(encoding="utf-8")

        def upstream_lookup() -> object:
            data = yaml.load(text, Loader=yaml.CSafeLoader)
            return next(
                s for s in data["gpt2-small-res-jb"]["saes"] if s["id"] == "blocks.8.hook_resid_pre"
            )

        up = median_seconds(upstream_lookup, max(5, args.runs // 3), warmup=1)

        def saereg_lookup() -> object:
            from saereg.catalogue.resolver import resolve

            return resolve(REF)

        ours = median_seconds(saereg_lookup, args.runs)
        rows.append((f"upstream: CSafeLoader parse of {size_mb:.2f} MB YAML, one lookup", up, ""))
        rows.append(
            (
                "saereg.resolve() in-process, same lookup",
                ours,
                f"{up / ours:.0f}x faster than upstream",
            )
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>10}  ratio")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds * 1000:8.1f}ms  {note}")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
