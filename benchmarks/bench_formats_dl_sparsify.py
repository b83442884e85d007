"""First-load memory and time for dictionary_learning and sparsify SAEs at real sizes.

    python benchmarks/bench_formats_dl_sparsify.py [--runs N] [--sparsify-d-sae 65536]

Two synthetic SAEs in their publishers' exact layouts, in a pre-populated Hugging Face
cache, each loaded offline in a fresh subprocess per run (`_bench.probe`):

1. dictionary_learning BatchTopKSAE at the SAEBench Gemma-2-2B size: d 2304 x 16384
   latents, float32 ``ae.pt`` (torch.save of the state dict) + ``config.json``;
2. sparsify at Llama-3-8B width: d_in 4096, bf16 ``sae.safetensors`` + ``cfg.json``.
   The published 32x SAE has 131,072 latents (2.15 GB); the default here is 65,536
   (1.07 GB) so the source and the converted copy fit this machine's disk budget;
   pass ``--sparsify-d-sae 131072`` for the full size.

For each: the first ``load_sae`` (convert + cache) wall time and peak RSS above the
process's baseline, against the weights' size (target <= 1.5x), beside reading the
publisher's file naively (``torch.load`` / ``safetensors.torch.load_file`` + touching
every tensor) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from _bench import as_lfs_blob, probe, snapshot

from saereg.store.canonical import write_safetensors
from saereg.store.tensors import LazyArray

DL_REPO, DL_PATH = "bench/dl-batchtopk", "sweep/resid_post_layer_12/trainer_0"
SP_REPO, SP_PATH = "bench/sparsify-llama", "layers.16"


def _release(root: Path, name: str, fmt: str, repo: str, sae: dict[str, Any]) -> str:
    doc = {
        "schema": 1,
        "name": name,
        "format": fmt,
        "publisher": "bench",
        "model": "bench-model",
        "repo_id": repo,
        "revision": None,
        "defaults": {"context_size": None, "normalize_activations": "none"},
        "saes": [sae],
    }
    (root / "releases").mkdir(exist_ok=True)
    (root / "releases" / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return f"{name}/{sae['id']}"


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Filled in row blocks, so making the fixture never holds a float32 copy."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(shape, dtype=dtype)
    for i in range(0, shape[0], 4096):
        block = out[i : i + 4096]
        block.copy_(torch.randn(block.shape, generator=gen) * 0.02)
    return out


def make_dictionary_learning(root: Path, d: int, f: int) -> tuple[str, Path, int]:
    folder = snapshot(root / "hf", DL_REPO) / DL_PATH
    folder.mkdir(parents=True)
    state = {
        "k": torch.tensor(64, dtype=torch.int),
        "threshold": torch.tensor(0.05),
        "decoder.weight": _random((d, f), torch.float32, 1),
        "encoder.weight": _random((f, d), torch.float32, 2),
        "encoder.bias": torch.zeros(f),
        "b_dec": torch.zeros(d),
    }
    torch.save(state, folder / "ae.pt")
    as_lfs_blob(folder / "ae.pt")
    trainer = {"dict_class": "BatchTopKSAE", "trainer_class": "BatchTopKTrainer", "k": 64}
    trainer.update(activation_dim=d, dict_size=f, layer=12, lm_name="google/gemma-2-2b")
    (folder / "config.json").write_text(
        json.dumps({"trainer": trainer, "buffer": {"ctx_len": 1024}}), encoding="utf-8"
    )
    weights = sum(t.numel() * t.element_size() for t in state.values() if t.dim())
    sae = {"id": "layer12", "path": DL_PATH, "hook_name": "blocks.12.hook_resid_post"}
    ref = _release(root, "bench-dl", "dictionary_learning", DL_REPO, sae)
    return ref, folder / "ae.pt", weights


def make_sparsify(root: Path, d: int, m: int) -> tuple[str, Path, int]:
    folder = snapshot(root / "hf", SP_REPO) / SP_PATH
    folder.mkdir(parents=True)
    shapes = {
        "encoder.weight": ((m, d), 3),
        "encoder.bias": ((m,), 4),
        "W_dec": ((m, d), 5),
        "b_dec": ((d,), 6),
    }
    tensors = {
        name: LazyArray(shape, "bfloat16", lambda s=shape, g=seed: _random(s, torch.bfloat16, g))
        for name, (shape, seed) in shapes.items()
    }
    write_safetensors(folder / "sae.safetensors", tensors, {"format": "pt"})
    as_lfs_blob(folder / "sae.safetensors")
    cfg = {"expansion_factor": m // d, "normalize_decoder": True, "num_latents": m, "k": 192}
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": d}), encoding="utf-8")
    weights = sum(2 * int(torch.tensor(s).prod()) for s, _ in shapes.values())
    sae = {"id": SP_PATH, "path": SP_PATH, "hook_name": "blocks.16.hook_resid_post"}
    ref = _release(root, "bench-sparsify", "sparsify", SP_REPO, sae)
    return ref, folder / "sae.safetensors", weights


def measure(root: Path, env: dict[str, str], ref: str, naive: tuple[str, str], runs: int) -> dict:
    first = []
    for _ in range(runs):
        shutil.rmtree(root / "saereg", ignore_errors=True)
        first.append(probe("load_sae", ref, env))
    shutil.rmtree(root / "saereg", ignore_errors=True)
    base = [probe(naive[0], naive[1], env) for _ in range(runs)]
    return {
        "first_peak": statistics.median(r["peak_above_base"] for r in first),
        "first_s": statistics.median(r["seconds"] for r in first),
        "naive_peak": statistics.median(r["peak_above_base"] for r in base),
        "naive_s": statistics.median(r["seconds"] for r in base),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dl-d", type=int, default=2304)
    parser.add_argument("--dl-f", type=int, default=16384)
    parser.add_argument("--sparsify-d-in", type=int, default=4096)
    parser.add_argument("--sparsify-d-sae", type=int, default=65536)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="saereg-bench-formats-"))
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "SAEREG_CACHE": str(root / "saereg"),
        "SAEREG_RELEASES": str(root / "releases"),
    }
    rows = []
    try:
        cases = [
            (
                f"dictionary_learning BatchTopK {args.dl_d}x{args.dl_f} float32 ae.pt",
                make_dictionary_learning,
                (args.dl_d, args.dl_f),
                "torch_load",
                "torch.load with weights_only=True",
            ),
            (
                f"sparsify {args.sparsify_d_in}x{args.sparsify_d_sae} bf16 sae.safetensors",
                make_sparsify,
                (args.sparsify_d_in, args.sparsify_d_sae),
                "load_file+touch",
                "safetensors load_file + touch",
            ),
        ]
        for title, make, dims, naive_mode, naive_name in cases:
            ref, source, weights = make(root, *dims)
            r = measure(root, env, ref, (naive_mode, str(source)), args.runs)
            mb = weights / 1e6
            rows += [
                (title, f"{mb:9.1f} MB", "weights"),
                (
                    "  first load_sae: peak RSS above baseline",
                    f"{r['first_peak'] / 1e6:9.1f} MB",
                    f"{r['first_peak'] / weights:.2f}x weights (target <= 1.5x)",
                ),
                ("  first load_sae: wall", f"{r['first_s']:9.3f} s", ""),
                (
                    f"  naive {naive_name}: peak RSS",
                    f"{r['naive_peak'] / 1e6:9.1f} MB",
                    f"{r['naive_peak'] / weights:.2f}x weights",
                ),
                (f"  naive {naive_name}: wall", f"{r['naive_s']:9.3f} s", "baseline"),
                ("  first load_sae / naive wall", "", f"{r['first_s'] / r['naive_s']:.2f}x"),
            ]
            shutil.rmtree(root / "hf", ignore_errors=True)  # keep the disk budget per case
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark (median of ' + str(args.runs) + ')':<{width}}  {'value':>12}  ratio")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
