"""First and cached loads, for both storage paths, beside baselines measured in the same run.

    python benchmarks/bench_loading.py [--runs 3] [--st-d-in 4096 --st-d-sae 65536]
                                       [--npz-d-in 2304 --npz-d-sae 16384] [--skip-st]
                                       [--formats]

`--formats` then runs, with the same `--runs`, the first-load benchmarks of every other
format family at real widths (bench_formats_dl_sparsify.py: dictionary_learning and
sparsify; bench_formats_other.py: Goodfire, DeepSeek-R1, Qwen Scope, mwhanna, mntss CLT,
temporal), each in its own process so their big temporary files never coexist.

Two real-size SAEs are written into a pre-populated Hugging Face cache (blobs named by
their sha256, snapshot symlinks, refs/main), as `hf_hub_download` leaves them:

* a SAELens-native folder (cfg.json + sae_weights.safetensors, float32 4096 x 65536,
  2.1 GB): read **in place** (memory-mapped from the HF cache, nothing copied);
* a Gemma Scope params.npz (float32 2304 x 16384, 302 MB), **converted once** into a
  canonical file (SAEREG_IN_PLACE=0 forces it; the default run maps the npz members whose
  data happens to be aligned and writes the others).

Every measurement runs offline in a fresh subprocess with torch, numpy, safetensors and
saereg already imported (benchmarks/_bench.py: the in-process cost), page cache warm, and
ends after reading every tensor once (what a first forward pass needs; safetensors and
in-place loads map files lazily, so stopping earlier would time nothing). Peak RSS is
measured above the process's baseline after those imports.
Baselines: `safetensors.torch.load_file` of the publisher's file, `np.load` of the npz, and
`cp` + fsync of the same bytes for the conversion's write speed. Big files are deleted at
the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import COMMIT, print_rows, probe

ST_REF = "bench-saelens/blocks.8.hook_resid_pre"
ST_REPO = "bench/saelens-saes"
NPZ_REF = "gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82"
NPZ_REPO = "google/gemma-scope-2b-pt-res"

RELEASES = f"""\
schema: 1
name: bench-saelens
format: saelens
publisher: bench
model: {{model}}
repo_id: {ST_REPO}
revision: null
saes:
  - id: blocks.8.hook_resid_pre
    path: blocks.8.hook_resid_pre
    hook_name: blocks.8.hook_resid_pre
    hook_layer: 8
"""


def _hf_file(hf: Path, repo: str, path: str, write) -> tuple[Path, int]:
    """Write a file the way the HF cache stores an LFS file; returns (blob, size)."""
    folder = hf / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    tmp = folder / "blobs" / "incoming"
    digest = hashlib.sha256()
    with tmp.open("wb") as fh:

        def out(data: bytes | memoryview) -> None:
            digest.update(data)
            fh.write(data)

        write(out)
    blob = folder / "blobs" / digest.hexdigest()
    tmp.rename(blob)
    link = folder / "snapshots" / COMMIT / path
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return blob, blob.stat().st_size


def _chunks(shape: tuple[int, ...], seed: int, rows_per_chunk: int = 4096):
    rng = np.random.default_rng(seed)
    tile = (rng.standard_normal((rows_per_chunk, shape[1]), dtype=np.float32) * 0.02).tobytes()
    for start in range(0, shape[0], rows_per_chunk):
        n = min(rows_per_chunk, shape[0] - start)
        yield memoryview(tile)[: n * shape[1] * 4]


def make_saelens(hf: Path, d_in: int, d_sae: int) -> tuple[Path, int]:
    shapes = {"W_dec": (d_sae, d_in), "W_enc": (d_in, d_sae), "b_dec": (d_in,), "b_enc": (d_sae,)}
    header: dict = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)

    def write(out) -> None:
        out(struct.pack("<Q", len(raw)) + raw)
        for i, (_name, shape) in enumerate(shapes.items()):
            if len(shape) == 2:
                for chunk in _chunks(shape, i):
                    out(chunk)
            else:
                out(np.zeros(shape, np.float32).tobytes())

    cfg = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "hook_name": "blocks.8.hook_resid_pre",
        "context_size": 128,
    }
    folder = "blocks.8.hook_resid_pre"
    _hf_file(hf, ST_REPO, f"{folder}/cfg.json", lambda out: out(json.dumps(cfg).encode()))
    return _hf_file(hf, ST_REPO, f"{folder}/sae_weights.safetensors", write)


def make_npz(hf: Path, d_in: int, d_sae: int) -> tuple[Path, int]:
    rng = np.random.default_rng(0)
    arrays = {
        "W_enc": rng.standard_normal((d_in, d_sae), dtype=np.float32) * 0.02,
        "W_dec": rng.standard_normal((d_sae, d_in), dtype=np.float32) * 0.02,
        "b_enc": np.zeros(d_sae, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
        "threshold": np.full(d_sae, 0.05, np.float32),
    }

    def write(out) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        out(buf.getbuffer())

    return _hf_file(hf, NPZ_REPO, "layer_12/width_16k/average_l0_82/params.npz", write)


def whole_process(ref: str, env: dict[str, str]) -> float:
    code = (
        "import saereg, sys; sae = saereg.load_sae(sys.argv[1], quiet=True); "
        "sum(float(p.sum()) for p in sae.parameters())"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, ref], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def cp_fsync(src: Path, dst: Path) -> float:
    """A plain `cp` of the same bytes, made durable like the canonical file."""
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return elapsed


def entry_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "canonical").rglob("*.safetensors"))


def add(table: list[tuple[str, str, str]], name: str, value: str, note: str = "") -> None:
    table.append((name, value, note))


def med(values: list[float]) -> float:
    return statistics.median(values)


def run_case(
    label: str,
    ref: str,
    baseline_mode: str,
    blob: Path,
    weights: int,
    env: dict[str, str],
    root: Path,
    runs: int,
    table: list[tuple[str, str, str]],
) -> None:
    cache = Path(env["SAEREG_CACHE"])
    mb = weights / 1e6
    baseline = {"load_file": "safetensors load_file", "naive": "np.load"}[baseline_mode]
    first, extra, bare = [], [], []
    for _ in range(runs):  # interleaved, so both see the same page cache
        shutil.rmtree(cache / "canonical", ignore_errors=True)
        first.append(probe("load_sae+touch", ref, env))
        extra.append(entry_bytes(cache))
        bare.append(probe(f"{baseline_mode}+touch", str(blob), env))
    cached = [probe("load_sae+touch", ref, env) for _ in range(runs)]
    shutil.rmtree(cache / "canonical", ignore_errors=True)
    process_first = whole_process(ref, env)  # as a user runs it: imports included
    process_cached = whole_process(ref, env)
    base_s = med([r["seconds"] for r in bare])
    first_s = med([r["seconds"] for r in first])
    cached_s = med([r["seconds"] for r in cached])
    peak = max(r["peak_above_base"] for r in first + cached) / 1e6
    add(table, f"{label}: weights", f"{mb:8.1f} MB")
    add(table, f"{label}: {baseline} + read every tensor", f"{base_s:8.3f} s", "baseline")
    add(
        table,
        f"{label}: first load_sae + read",
        f"{first_s:8.3f} s",
        f"{first_s / base_s:.2f}x baseline (target <= 1.5x)",
    )
    add(
        table,
        f"{label}: cached load_sae + read",
        f"{cached_s:8.3f} s",
        f"{cached_s / base_s:.2f}x baseline (target <= 1.5x)",
    )
    add(
        table,
        f"{label}: extra disk (canonical entry)",
        f"{med(extra) / 1e6:8.3f} MB",
        f"{100 * med(extra) / weights:.3f} % of the weights",
    )
    add(
        table,
        f"{label}: peak RSS above baseline (any load)",
        f"{peak:8.1f} MB",
        f"{peak / mb:.2f}x weights (target <= 1.2x)",
    )
    add(
        table,
        f"{label}: whole process, first / cached load_sae + read",
        f"{process_first:5.2f} / {process_cached:.2f} s",
        "python start-up and imports included (one run each)",
    )
    base_peak = max(r["peak_above_base"] for r in bare) / 1e6
    add(
        table,
        f"{label}: {baseline} peak RSS",
        f"{base_peak:8.1f} MB",
        f"{base_peak / mb:.2f}x",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--st-d-in", type=int, default=4096)
    parser.add_argument("--st-d-sae", type=int, default=65536)
    parser.add_argument("--npz-d-in", type=int, default=2304)
    parser.add_argument("--npz-d-sae", type=int, default=16384)
    parser.add_argument("--skip-st", action="store_true", help="skip the safetensors case")
    parser.add_argument(
        "--formats", action="store_true", help="also run every format family at real widths"
    )
    args = parser.parse_args()
    status = _loading(args)
    if args.formats:
        here = Path(__file__).resolve().parent
        for script in ("bench_formats_dl_sparsify.py", "bench_formats_other.py"):
            print(f"\n== {script}", flush=True)
            cmd = [sys.executable, str(here / script), "--runs", str(args.runs)]
            status = status or subprocess.run(cmd, check=False).returncode
    return status


def _loading(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="saereg-bench-load-"))
    table: list[tuple[str, str, str]] = []
    try:
        hf = root / "hf"
        (root / "releases").mkdir()
        # a catalogued model of that width (an unknown one costs resolve a plugin scan)
        model = "llama-3.1-8b" if args.st_d_in == 4096 else "bench-model"
        (root / "releases" / "bench-saelens.yaml").write_text(RELEASES.format(model=model))
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(hf),
            "HF_HUB_OFFLINE": "1",
            "SAEREG_CACHE": str(root / "saereg"),
            "SAEREG_RELEASES": str(root / "releases"),
        }
        if not args.skip_st:
            blob, size = make_saelens(hf, args.st_d_in, args.st_d_sae)
            weights = 4 * (2 * args.st_d_in * args.st_d_sae + args.st_d_in + args.st_d_sae)
            run_case(
                "safetensors, in place",
                ST_REF,
                "load_file",
                blob,
                weights,
                env,
                root,
                args.runs,
                table,
            )
            shutil.rmtree(hf / f"models--{ST_REPO.replace('/', '--')}")
            shutil.rmtree(root / "saereg" / "canonical", ignore_errors=True)

        npz, size = make_npz(hf, args.npz_d_in, args.npz_d_sae)
        weights = 4 * (2 * args.npz_d_in * args.npz_d_sae + 2 * args.npz_d_sae + args.npz_d_in)
        copy_env = {**env, "SAEREG_IN_PLACE": "0"}
        run_case("npz, converted", NPZ_REF, "naive", npz, weights, copy_env, root, args.runs, table)
        # conversion write speed against cp + fsync of the same bytes
        convert, cp = [], []
        for _ in range(args.runs):
            shutil.rmtree(root / "saereg" / "canonical", ignore_errors=True)
            convert.append(probe("fetch", NPZ_REF, copy_env))
            cp.append(cp_fsync(npz, root / "cp-copy"))
        shutil.rmtree(root / "saereg" / "canonical", ignore_errors=True)
        cp_mbps = size / 1e6 / med(cp)
        write_mbps = weights / 1e6 / med([r["write"] for r in convert])
        mbps = size / 1e6 / med([r["seconds"] for r in convert])
        add(table, "npz: cp + fsync of the same bytes", f"{cp_mbps:8.0f} MB/s", "baseline")
        add(
            table,
            "npz: canonical file write (stream + fsync)",
            f"{write_mbps:8.0f} MB/s",
            f"{write_mbps / cp_mbps:.2f}x cp",
        )
        add(
            table,
            "npz: whole fetch_canonical (resolve, config, convert, write)",
            f"{mbps:8.0f} MB/s",
            f"{mbps / cp_mbps:.2f}x cp",
        )
        run_case(
            "npz, default storage", NPZ_REF, "naive", npz, weights, env, root, args.runs, table
        )
        print_rows(table)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
