"""First loads of the pickle, transcoder and temporal formats at their real widths.

    python benchmarks/bench_formats_other.py [--runs N] [--case NAME ...]

For each case, synthetic weights of the published shape are written into a
pre-populated Hugging Face cache under the real catalogued reference (so the release's
d_in/d_sae are checked too), and each run is a fresh subprocess doing a first
`load_sae` offline (convert + cache + load). Printed: the weights' size, the median wall
time and peak RSS above the process's baseline, and that peak as a ratio of the
weights (target <= 1.5x). Baseline in the same run: reading the same publisher file
naively (torch.load of the pickle, or safetensors.torch.load_file) and touching it.

Cases (the real shapes; dtypes as noted, all <= ~1.8 GB on disk):
  goodfire   Goodfire Llama-3.1-8B SAE, 65,536 x 4,096, bfloat16 pickle (.pth)
  deepseek   qresearch DeepSeek-R1 SAE, 65,536 x 4,096, bfloat16 pickle
  qwen       Qwen Scope Qwen3-1.7B W32K, 32,768 x 2,048, float32 pickle
  mwhanna    mwhanna Qwen3-0.6B transcoder, 163,840 x 1,024, float32 safetensors
  mntss      mntss CLT gemma-2-2b layer 25 (one target layer), 98,304 x 2,304, float32
  temporal   temporal SAE on gemma-2-2b (d_in 2,304; width 9,216 = 4x, an assumed
             width: the release does not publish it), float32, one attention layer
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import as_lfs_blob, print_rows, probe, snapshot

WEIGHT_SUFFIXES = {".pt", ".pth", ".safetensors"}


def _rand(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype).normal_(std=0.02)


def _pickle(path: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save(state, path)


def _linear_bf16(path: Path, enc: str, dec: str) -> Path:
    """An nn.Linear-layout bfloat16 state dict, 65,536 latents on a 4,096 stream."""
    bf = torch.bfloat16
    _pickle(
        path,
        {
            f"{enc}.weight": _rand(65536, 4096, dtype=bf),
            f"{enc}.bias": _rand(65536, dtype=bf),
            f"{dec}.weight": _rand(4096, 65536, dtype=bf),
            f"{dec}.bias": _rand(4096, dtype=bf),
        },
    )
    return path


def goodfire(folder: Path) -> Path:
    return _linear_bf16(
        folder / "Llama-3.1-8B-Instruct-SAE-l19.pth", "encoder_linear", "decoder_linear"
    )


def deepseek(folder: Path) -> Path:
    return _linear_bf16(folder / "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt", "encoder", "decoder")


def qwen(folder: Path) -> Path:
    path = folder / "layer0.sae.pt"
    _pickle(
        path,
        {
            "W_enc": _rand(32768, 2048),
            "W_dec": _rand(2048, 32768),
            "b_enc": _rand(32768),
            "b_dec": _rand(2048),
        },
    )
    return path


def mwhanna(folder: Path) -> Path:
    path = folder / "layer_0.safetensors"
    save_file(
        {
            "W_enc": _rand(163840, 1024),
            "W_dec": _rand(163840, 1024),
            "b_enc": _rand(163840),
            "b_dec": _rand(1024),
        },
        str(path),
    )
    return path


def mntss(folder: Path) -> Path:
    (folder / "config.yaml").write_text(
        "model_name: google/gemma-2-2b\nfeature_input_hook: hook_resid_mid\n"
        "feature_output_hook: hook_mlp_out\n"
    )
    save_file(
        {"W_enc_25": _rand(98304, 2304), "b_enc_25": _rand(98304), "b_dec_25": _rand(2304)},
        str(folder / "W_enc_25.safetensors"),
    )
    save_file({"W_dec_25": _rand(98304, 1, 2304)}, str(folder / "W_dec_25.safetensors"))
    return folder / "W_dec_25.safetensors"


def temporal(folder: Path) -> Path:
    d_in, exp, n_heads, bottleneck = 2304, 4, 8, 64
    width = d_in * exp
    d_attn = width // bottleneck
    sub = folder / "gemma-2-2B/layer_12/temporal"
    sub.mkdir(parents=True)
    conf = {
        "llm": {"dimin": d_in},
        "sae": {
            "exp_factor": exp,
            "n_heads": n_heads,
            "n_attn_layers": 1,
            "bottleneck_factor": bottleneck,
            "sae_diff_type": "topk",
            "kval_topk": 192,
            "tied_weights": True,
            "scaling_factor": 0.00666666667,
        },
        "data": {"dtype": "float32"},
    }
    (sub / "conf.yaml").write_text(yaml.safe_dump(conf))
    t = {"D": _rand(width, d_in), "b": _rand(1, d_in)}
    for proj, out in (("k_ctx", d_attn), ("q_target", d_attn), ("v_ctx", width)):
        t[f"attn_layers.0.{proj}.weight"] = _rand(out, width)
        t[f"attn_layers.0.{proj}.bias"] = _rand(out)
    t["attn_layers.0.c_proj.weight"] = _rand(width, width)
    t["attn_layers.0.c_proj.bias"] = _rand(width)
    save_file(t, str(sub / "latest_ckpt.safetensors"))
    return sub / "latest_ckpt.safetensors"


#: name → (catalogued reference, repository, writer of the publisher's files)
CASES: dict[str, tuple[str, str, Callable[[Path], Path]]] = {
    "goodfire": (
        "goodfire-llama-3.1-8b-instruct/layer_19",
        "Goodfire/Llama-3.1-8B-Instruct-SAE-l19",
        goodfire,
    ),
    "deepseek": (
        "deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post",
        "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19",
        deepseek,
    ),
    "qwen": (
        "qwen-scope-3-1.7b-base-w32k-l100/layer0",
        "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_100",
        qwen,
    ),
    "mwhanna": (
        "mwhanna-qwen3-0.6b-transcoders-lowl0/layer_0",
        "mwhanna/qwen3-0.6b-transcoders-lowl0",
        mwhanna,
    ),
    "mntss": (
        "mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_25",
        "mntss/clt-gemma-2-2b-2.5M",
        mntss,
    ),
    "temporal": (
        "temporal-sae-gemma-2-2b/blocks.12.hook_resid_post",
        "canrager/temporalSAEs",
        temporal,
    ),
}


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def run_case(name: str, runs: int) -> list[tuple[str, str, str]]:
    ref, repo, write = CASES[name]
    root = Path(tempfile.mkdtemp(prefix=f"saereg-bench-{name}-"))
    try:
        folder = snapshot(root / "hf", repo)
        sample = write(folder)
        for path in sorted(folder.rglob("*")):  # as the HF cache stores LFS files
            if path.is_file() and not path.is_symlink() and path.suffix in WEIGHT_SUFFIXES:
                as_lfs_blob(path)
        weights = weights_bytes(folder)
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(root / "hf"),
            "HF_HUB_OFFLINE": "1",
            "SAEREG_CACHE": str(root / "saereg"),
        }
        first: list[dict[str, Any]] = []
        for _ in range(runs):
            shutil.rmtree(root / "saereg", ignore_errors=True)
            first.append(probe("load_sae", ref, env))
        naive_mode = "load_file+touch" if sample.suffix == ".safetensors" else "torch_load+touch"
        naive = [probe(naive_mode, str(sample), env) for _ in range(runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mb = weights / 1e6
    peak = statistics.median(r["peak_above_base"] for r in first) / 1e6
    naive_peak = statistics.median(r["peak_above_base"] for r in naive) / 1e6
    return [
        (f"{name}: weights ({ref})", f"{mb:8.1f} MB", ""),
        (
            f"{name}: first load_sae, peak RSS above baseline",
            f"{peak:8.1f} MB",
            f"{peak / mb:.2f}x weights (target <= 1.5x)",
        ),
        (
            f"{name}: first load_sae, wall",
            f"{statistics.median(r['seconds'] for r in first):8.2f} s",
            "",
        ),
        (
            f"{name}: baseline {naive_mode.removesuffix('+touch')} of "
            f"{sample.name} + touch, peak RSS",
            f"{naive_peak:8.1f} MB",
            f"{naive_peak / mb:.2f}x weights",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    for name in args.case or list(CASES):
        rows += run_case(name, args.runs)
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
