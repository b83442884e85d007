"""Loading speed and memory on a synthetic Gemma-Scope-sized SAE, beside baselines.

    python benchmarks/bench_loading.py [--runs N] [--d-in 2304] [--d-sae 16384]

A float32 params.npz (d_in 2304 x d_sae 16384, about 300 MB) is written into a
pre-populated Hugging Face cache layout for gemma-scope-2b-pt-res/layer_12/width_16k/
average_l0_82, and every measurement runs offline in a fresh subprocess:

1. first `load_sae` (convert + cache): peak RSS above the process's baseline, against
   the weights' size (target <= 1.5x), and its wall time;
2. cached `load_sae`: median wall against a bare `safetensors.torch.load_file` of the same
   canonical file in the same run (target <= 1.5x). safetensors maps files lazily, so a
   bare load_file reads no bytes at all; both are therefore also timed up to having read
   every tensor once (what the first forward pass needs), which is the like-for-like
   comparison;
3. the naive path for comparison: np.load of the npz, then torch tensors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import print_rows, probe, snapshot

REF = "gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82"


def make_cache(root: Path, d_in: int, d_sae: int) -> tuple[Path, int]:
    folder = snapshot(root / "hf", "google/gemma-scope-2b-pt-res") / REF.split("/", 1)[1]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "W_enc": rng.standard_normal((d_in, d_sae), dtype=np.float32) * 0.02,
        "W_dec": rng.standard_normal((d_sae, d_in), dtype=np.float32) * 0.02,
        "b_enc": np.zeros(d_sae, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
        "threshold": np.full(d_sae, 0.05, np.float32),
    }
    weights = sum(a.nbytes for a in arrays.values())
    np.savez(folder / "params.npz", **arrays)
    return folder / "params.npz", weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--d-in", type=int, default=2304)
    parser.add_argument("--d-sae", type=int, default=16384)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="saereg-bench-load-"))
    try:
        npz, weights = make_cache(root, args.d_in, args.d_sae)
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(root / "hf"),
            "HF_HUB_OFFLINE": "1",
            "SAEREG_CACHE": str(root / "saereg"),
        }
        first = []
        for _ in range(3):
            shutil.rmtree(root / "saereg", ignore_errors=True)
            first.append(probe("load_sae", REF, env))
        canonical = next((root / "saereg").rglob("*.safetensors"))
        cached, bare, cached_t, bare_t = [], [], [], []
        for _ in range(args.runs):  # interleaved, so both see the same page cache
            cached.append(probe("load_sae", REF, env)["seconds"])
            bare.append(probe("load_file", str(canonical), env)["seconds"])
            cached_t.append(probe("load_sae+touch", REF, env)["seconds"])
            bare_t.append(probe("load_file+touch", str(canonical), env)["seconds"])
        naive = [probe("naive", str(npz), env) for _ in range(3)]

        mb = weights / 1e6
        first_peak = statistics.median(r["peak_above_base"] for r in first) / 1e6
        naive_peak = statistics.median(r["peak_above_base"] for r in naive) / 1e6
        rows = [
            ("weights (float32)", f"{mb:8.1f} MB", ""),
            (
                "first load_sae: convert + cache, peak RSS above baseline",
                f"{first_peak:8.1f} MB",
                f"{first_peak / mb:.2f}x weights (target <= 1.5x)",
            ),
            (
                "first load_sae: wall",
                f"{statistics.median(r['seconds'] for r in first):8.3f} s",
                "",
            ),
            (
                "naive np.load(npz) -> torch: peak RSS above baseline",
                f"{naive_peak:8.1f} MB",
                f"{naive_peak / mb:.2f}x weights",
            ),
            (
                "naive np.load(npz) -> torch: wall",
                f"{statistics.median(r['seconds'] for r in naive):8.3f} s",
                "",
            ),
            (
                "bare safetensors.torch.load_file (lazy mmap: reads no data)",
                f"{statistics.median(bare):8.3f} s",
                "baseline",
            ),
            (
                "cached load_sae (lazy mmap; resolve + config + module)",
                f"{statistics.median(cached):8.3f} s",
                f"{statistics.median(cached) / statistics.median(bare):.2f}x lazy load_file",
            ),
            (
                "bare load_file, then read every tensor once",
                f"{statistics.median(bare_t):8.3f} s",
                "baseline",
            ),
            (
                "cached load_sae, then read every tensor once",
                f"{statistics.median(cached_t):8.3f} s",
                f"{statistics.median(cached_t) / statistics.median(bare_t):.2f}x (target <= 1.5x)",
            ),
        ]
        print_rows(rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
