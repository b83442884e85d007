"""Loading an SAE by path: first load (detect, hash, convert) and cached loads, beside
baselines measured in the same run.

    python benchmarks/bench_load_by_path.py [--runs 5] [--d-in 2304 --d-sae 16384]

A SAELens folder (cfg.json + sae_weights.safetensors, float32) is written to a temporary
directory. Measured, alternating with their baselines so that machine noise hits both:

* first load: `saereg.fetch_canonical(folder)` with an empty saereg cache (listing,
  detection, sha256 of every file, conversion, canonical write); baseline: copying the
  weights file and fsyncing it (the bytes the conversion must write anyway);
* cached load: `saereg.fetch_canonical(folder)` again (listing, detection, a stat per file
  for the remembered digests, the canonical file's header check); baseline: the same
  for the SAE's canonical file path itself (`SAE.load`'s header read), i.e. what any
  cached load costs.

Medians and the ratio to the baseline of the same run are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _folder(root: Path, d_in: int, d_sae: int) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = root / "my_sae"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "W_enc": torch.randn(d_in, d_sae, generator=g),
            "W_dec": torch.randn(d_sae, d_in, generator=g),
            "b_enc": torch.zeros(d_sae),
            "b_dec": torch.zeros(d_in),
        },
        str(folder / "sae_weights.safetensors"),
    )
    cfg = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.8.hook_resid_pre", "context_size": 1024},
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with dst.open("rb") as fh:
        os.fsync(fh.fileno())
    dst.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--d-in", type=int, default=2304)
    parser.add_argument("--d-sae", type=int, default=16384)
    args = parser.parse_args()
    import saereg
    from saereg.store.integrity import verify_canonical

    root = Path(tempfile.mkdtemp(prefix="bench-path-"))
    try:
        folder = _folder(root, args.d_in, args.d_sae)
        weights = folder / "sae_weights.safetensors"
        first, copy, hit, floor = [], [], [], []
        path = None
        for run in range(args.runs):
            os.environ["SAEREG_CACHE"] = str(root / f"cache{run}")
            t = time.perf_counter()
            path = saereg.fetch_canonical(folder)
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            _copy_fsync(weights, root / "copy.bin")
            copy.append(time.perf_counter() - t)
            for _ in range(5):
                t = time.perf_counter()
                saereg.fetch_canonical(folder)
                hit.append(time.perf_counter() - t)
                t = time.perf_counter()
                verify_canonical(path)
                floor.append(time.perf_counter() - t)
            shutil.rmtree(root / f"cache{run}")
        size = weights.stat().st_size / 1e6
        m = statistics.median
        print(
            f"SAELens folder, float32 {args.d_in} x {args.d_sae} ({size:.0f} MB), {args.runs} runs"
        )
        print(
            f"first load by path   {m(first) * 1e3:8.1f} ms   copy+fsync of the weights "
            f"{m(copy) * 1e3:8.1f} ms   ratio {m(first) / m(copy):.2f}"
        )
        print(
            f"cached load by path  {m(hit) * 1e3:8.2f} ms   header check of the canonical "
            f"file {m(floor) * 1e3:8.2f} ms   overhead {(m(hit) - m(floor)) * 1e3:.2f} ms"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
