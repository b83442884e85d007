"""The catalogue at 1x and N times its size, each figure beside its target.

    python benchmarks/bench_scale.py [--scales 1,10] [--runs N] [--page]

For each scale, a temporary copy of the package is built in which every built-in release
file is copied that many times under new names (``NAME``, ``NAME-x1``, ``NAME-x2``, …;
Neuronpedia ids get the same suffix, so the copies are valid releases, not duplicates)
and installed as the *built-in* catalogue: the copy is an importable ``saereg`` package
(registry/ with releases/, schemas/ and plugins/ inside, the layout a wheel installs) put
first on ``PYTHONPATH``, byte-compiled as pip compiles what it installs. The package build
step a wheel runs is repeated on the copy
(``saereg docs`` writes the shipped compiled index beside the release files), so "cold"
means what the first command after ``pip install`` costs: an empty ``SAEREG_CACHE``.

Every command runs as a whole process with the installed ``saereg`` script. Ratios come
from this run only: `resolve` is paired with ``python -c pass`` (alternating, median of the
per-pair ratios), cold `list` is compared with warm `list` measured in the same run.
``--page`` also measures the catalogue page in headless Chromium (benchmarks/bench_page.py
on each copy's page).

Targets (issue 19): resolve ≤ 3x ``python -c pass``; ``list --model gemma-2-2b`` ≤ 0.3 s;
``list --json`` warm ≤ 2 s; cold ≤ 1.5x warm; ``docs`` ≤ 5 s; every generated markdown page
≤ 2 MB; the page's first render ≤ 500 ms and every filter change ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REF = "gpt2-small-res-jb/blocks.8.hook_resid_pre"
MB = 1_000_000

_NAME = re.compile(r"^name:[ \t]*(\S+)[ \t]*$", re.M)
_NEURONPEDIA = re.compile(r"^([ \t-]*neuronpedia:[ \t]*)(\S+)[ \t]*$", re.M)


def scaled_text(text: str, k: int) -> str:
    """A release file's text renamed for copy `k` (0 leaves it as it is)."""
    if k == 0:
        return text
    text, n = _NAME.subn(lambda m: f"name: {m.group(1)}-x{k}", text, count=1)
    if n != 1:
        raise SystemExit("a release file without a top-level 'name:' line")
    return _NEURONPEDIA.sub(
        lambda m: m.group(0) if m.group(2) == "null" else f"{m.group(1)}{m.group(2)}-x{k}", text
    )


def build_copy(dest: Path, scale: int, compile_py: bool = True) -> Path:
    """An importable `saereg` package under `dest` whose built-in catalogue holds every
    release `scale` times; returns the folder to put on PYTHONPATH."""
    pkg = dest / "saereg"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "registry", pkg, ignore=ignore)
    shutil.copytree(REPO / "plugins", pkg / "plugins", ignore=ignore)
    shutil.copytree(REPO / "schemas", pkg / "schemas", ignore=ignore)
    releases = pkg / "releases"
    shutil.copytree(REPO / "releases" / "models", releases / "models", ignore=ignore)
    for src in sorted((REPO / "releases").glob("*.yaml")):
        text = src.read_text(encoding="utf-8")
        stem = src.name[: -len(".yaml")]
        for k in range(scale):
            name = stem if k == 0 else f"{stem}-x{k}"
            (releases / f"{name}.yaml").write_text(scaled_text(text, k), encoding="utf-8")
    # pip byte-compiles a package when it installs it; without .pyc files every command
    # would compile saereg's modules again (this machine sets PYTHONDONTWRITEBYTECODE).
    if compile_py:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True)
    return dest


class Scale:
    """One scaled copy: its environment and the commands run against it."""

    def __init__(self, root: Path, scale: int, compile_py: bool = True) -> None:
        self.scale = scale
        self.root = root
        self.path = build_copy(root / "pkg", scale, compile_py)
        self.cache = root / "cache"
        self.docs = root / "docs"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.path),
            "SAEREG_CACHE": str(self.cache),
            "SAEREG_RELEASES": "",
        }
        exe = shutil.which("saereg")
        if exe is None:
            raise SystemExit("saereg is not installed (pip install -e .)")
        self.saereg = exe
        self.cpu: list[float] = []
        # The build step a wheel runs: the shipped index and pages, from the release files.
        self.run_saereg("docs", "--out", str(self.docs))
        self.clear_cache()

    def clear_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def cmd(self, *args: str) -> list[str]:
        return [self.saereg, *args]

    def run_saereg(self, *args: str) -> None:
        out = subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"saereg {' '.join(args)} failed:\n{out.stderr[-3000:]}")

    def runner(self, cmd: list[str]) -> Callable[[], float]:
        """A function running `cmd` once, returning its wall time; its CPU time (user +
        system) goes to `self.cpu`: on a loaded machine the wall time mostly measures the
        neighbours, the CPU time much less so."""

        def go() -> float:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            return wall

        return go

    def cpu_median(self, last: int) -> float:
        return statistics.median(self.cpu[-last:])

    def n_saes(self) -> int:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import saereg.catalogue.index as i; print(len(i.load_index().rows))",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())


def median_of(fn: Callable[[], float], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(fn() for _ in range(runs))


def paired(
    base: Callable[[], float], fn: Callable[[], float], runs: int
) -> tuple[float, float, float]:
    """Medians of `base` and `fn` run alternately and the median per-pair ratio."""
    base(), fn()
    pairs = [(base(), fn()) for _ in range(runs)]
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(f for _, f in pairs),
        statistics.median(f / b for b, f in pairs),
    )


def largest_page(docs: Path) -> tuple[int, str]:
    pages = [(p.stat().st_size, str(p.relative_to(docs))) for p in docs.rglob("*.md")]
    return max(pages)


def measure(s: Scale, runs: int, page: bool) -> dict[str, tuple[float, str]]:
    """{row: (value, shown text)} for one scale."""
    out: dict[str, tuple[float, str]] = {}
    py = s.runner([sys.executable, "-c", "pass"])
    s.runner(s.cmd("list", "--json"))()  # warm the cache once
    base, t, ratio = paired(py, s.runner(s.cmd("resolve", REF)), runs)
    cpu_base = statistics.median(s.cpu[-2 * runs :: 2])
    cpu_t = statistics.median(s.cpu[-2 * runs + 1 :: 2])
    out["resolve"] = (
        ratio,
        f"{t * 1000:.0f} ms = {ratio:.2f}x `python -c pass` ({base * 1000:.0f} ms); CPU "
        f"{cpu_t * 1000:.0f} ms = {cpu_t / cpu_base:.2f}x ({cpu_base * 1000:.0f} ms)",
    )
    t = median_of(s.runner(s.cmd("list", "--model", "gemma-2-2b")), runs)
    out["list_model"] = (t, f"{t:.2f} s (CPU {s.cpu_median(runs):.2f} s)")
    warm_runner = s.runner(s.cmd("list", "--json"))
    cold_runner = s.runner(s.cmd("list", "--json"))
    warm_runner()
    pairs = []
    cpu_pairs = []
    for _ in range(max(3, runs // 2)):
        s.clear_cache()
        c = cold_runner()
        w = warm_runner()
        pairs.append((c, w))
        cpu_pairs.append((s.cpu[-2], s.cpu[-1]))
    warm = statistics.median(w for _, w in pairs)
    cold = statistics.median(c for c, _ in pairs)
    cold_ratio = statistics.median(c / w for c, w in pairs)
    cpu_warm = statistics.median(w for _, w in cpu_pairs)
    cpu_cold = statistics.median(c for c, _ in cpu_pairs)
    out["list_json"] = (warm, f"{warm:.2f} s (CPU {cpu_warm:.2f} s)")
    out["list_cold"] = (
        cold_ratio,
        f"{cold:.2f} s = {cold_ratio:.2f}x warm (CPU {cpu_cold:.2f} s = "
        f"{cpu_cold / cpu_warm:.2f}x)",
    )
    docs_dir = s.root / "docs-bench"
    n_docs = max(3, runs // 2)
    t = median_of(s.runner(s.cmd("docs", "--out", str(docs_dir))), n_docs)
    out["docs"] = (t, f"{t:.2f} s (CPU {s.cpu_median(n_docs):.2f} s)")
    size, name = largest_page(docs_dir)
    out["largest_md"] = (size / MB, f"{size / MB:.2f} MB ({name})")
    html = docs_dir / "catalogue.html"
    out["page_size"] = (html.stat().st_size / MB, f"{html.stat().st_size / MB:.2f} MB")
    if page:
        cmd = [sys.executable, str(REPO / "benchmarks" / "bench_page.py"), "--page", str(html)]
        res = subprocess.run(
            [*cmd, "--runs", "3", "--summary"], env=s.env, capture_output=True, text=True
        )
        line = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
        shown = line if res.returncode in (0, 1) else res.stderr.strip()[-300:]
        out["page"] = (float(res.returncode), shown)
    return out


ROWS = [
    ("resolve", f"`saereg resolve {REF}`", "≤ 3x `python -c pass`", lambda v: v <= 3.0),
    ("list_model", "`saereg list --model gemma-2-2b`", "≤ 0.3 s", lambda v: v <= 0.3),
    ("list_json", "`saereg list --json`, warm", "≤ 2 s", lambda v: v <= 2.0),
    (
        "list_cold",
        "`saereg list --json`, first after install (cold)",
        "≤ 1.5x warm",
        lambda v: v <= 1.5,
    ),
    ("docs", "`saereg docs`", "≤ 5 s", lambda v: v <= 5.0),
    ("largest_md", "largest generated markdown page", "≤ 2 MB", lambda v: v <= 2.0),
    (
        "page_size",
        "`docs/catalogue.html` size",
        "(for reference)",
        lambda v: True,
    ),
    (
        "page",
        "catalogue page (bench_page.py)",
        "first render ≤ 500 ms, filters ≤ 100 ms",
        lambda v: v == 0,
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,10", help="comma-separated (default 1,10)")
    parser.add_argument("--runs", type=int, default=7, help="runs per median (default 7)")
    parser.add_argument("--page", action="store_true", help="also measure the page (Chromium)")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="leave the copies without .pyc files (every command compiles saereg again)",
    )
    args = parser.parse_args()
    scales = [int(x) for x in args.scales.split(",")]

    results: dict[int, dict[str, tuple[float, str]]] = {}
    counts: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="saereg-scale-") as tmp:
        for scale in scales:
            start = time.perf_counter()
            s = Scale(Path(tmp) / f"x{scale}", scale, not args.no_compile)
            counts[scale] = s.n_saes()
            s.clear_cache()
            print(f"{scale}x: {counts[scale]} SAEs, copy built in "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip
            results[scale] = measure(s, args.runs, args.page)

    head = ["operation", *(f"{k}x ({counts[k]:,} SAEs)" for k in scales), "target", "met"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    missed = 0
    for key, label, target, ok in ROWS:
        if not all(key in results[k] for k in scales):
            continue
        top = scales[-1]
        met = ok(results[top][key][0])
        missed += not met
        cells = [label, *(results[k][key][1] for k in scales), target, "yes" if met else "NO"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nmedians of {args.runs} runs (cold: {max(3, args.runs // 2)} paired cold/warm runs); "
          f"'met' is judged at {scales[-1]}x on wall time; CPU: user + system time of the "
          "command, less affected by other processes on a shared machine")  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
