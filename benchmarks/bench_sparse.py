"""The canonical module's forward, encode and decode against the peers, same weights.

    python benchmarks/bench_sparse.py [--tokens 2048] [--runs 7] [--threads N]
                                      [--device cpu|cuda] [--cases pythia,oai,jb,gemma]
                                      [--memory-tokens 16384] [--skip-memory]

Synthetic weights of the real shapes (random, with encoder biases or thresholds set so
that each SAE's L0 is what the real one has, which decides the sparse path's cost):

* `pythia`: EleutherAI sparsify pythia-70m layers.1: 512 x 32,768, TopK k=32;
  peer: sparsify's `SparseCoder.forward` (its own `fused_encoder` + `embedding_bag`);
* `oai`: OpenAI v5 32k (gpt2-small resid_post): 768 x 32,768, TopK k=32, layer_norm;
  peer: SAELens `TopKSAE` with `normalize_activations="layer_norm"`;
* `jb`: gpt2-small-res-jb: 768 x 24,576, ReLU, L0 ≈ 60; peer: SAELens `StandardSAE`;
* `gemma`: Gemma Scope 2b 16k: 2,304 x 16,384, JumpReLU, L0 ≈ 82; peer: SAELens
  `JumpReLUSAE`.

Every implementation gets the same tensors, the same input and the same torch threads;
each timing is the median of `--runs` inference (no_grad) calls, the implementations
alternating, and every ratio is taken within this run. Outputs are checked equal first.
Also measured: encode beside a bare `x @ W_enc` of the same shapes (throughput ratio),
the decode of TopK latents (sparse) beside the dense `f @ W_dec` decode, and the peak
memory of a TopK forward on `--memory-tokens` tokens (fresh subprocess, resident +
swapped memory sampled every millisecond above the baseline before the weights) beside
weights + input + output.

The peers are optional: install them into the same environment to compare
(`pip install -r benchmarks/requirements.txt`); without them their columns read "-".
Nothing is installed or downloaded at run time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saereg.sae.module import SAE
from saereg.store.sae_config import SAEConfig

CASES: dict[str, dict[str, Any]] = {
    "pythia": {"d_in": 512, "d_sae": 32768, "arch": "topk", "k": 32, "norm": "none",
               "b_dec_in": True, "peer": "sparsify",
               "label": "sparsify pythia-70m layers.1 (512 x 32768, TopK 32)"},
    "oai": {"d_in": 768, "d_sae": 32768, "arch": "topk", "k": 32, "norm": "layer_norm",
            "b_dec_in": True, "peer": "sae_lens",
            "label": "OpenAI v5 32k (768 x 32768, TopK 32 + layer_norm)"},
    "jb": {"d_in": 768, "d_sae": 24576, "arch": "relu", "l0": 60, "norm": "none",
           "b_dec_in": True, "peer": "sae_lens",
           "label": "gpt2-small-res-jb (768 x 24576, ReLU)"},
    "gemma": {"d_in": 2304, "d_sae": 16384, "arch": "jumprelu", "l0": 82, "norm": "none",
              "b_dec_in": False, "peer": "sae_lens",
              "label": "Gemma Scope 2b 16k (2304 x 16384, JumpReLU)"},
}  # fmt: skip


def weights(case: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the real shapes; b_enc / threshold set from the pre-activations
    of a calibration batch so that a latent fires with probability L0 / d_sae."""
    g = torch.Generator().manual_seed(seed)
    d_in, d_sae = case["d_in"], case["d_sae"]
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    t = {"W_enc": W_dec.T.contiguous(), "W_dec": W_dec, "b_dec": torch.randn(d_in, generator=g)}
    t["b_enc"] = torch.zeros(d_sae)
    if "l0" in case:  # on inputs like the benchmark's (randn), as the SAE sees them
        probe = torch.randn(512, d_in, generator=g) - t["b_dec"] * case["b_dec_in"]
        probe = probe @ t["W_enc"]
        q = torch.quantile(probe[:, :2048].flatten(), 1 - case["l0"] / d_sae)
        if case["arch"] == "relu":
            t["b_enc"] = torch.full((d_sae,), -float(q))
        else:
            t["threshold"] = torch.full((d_sae,), float(q))
    return t


def saereg_sae(case: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SAE:
    norm = {"kind": "layer_norm", "eps": 1e-5} if case["norm"] == "layer_norm" else {"kind": "none"}
    cfg = SAEConfig.from_dict(
        {"architecture": case["arch"], "d_in": case["d_in"], "d_sae": case["d_sae"],
         "d_out": case["d_in"], "apply_b_dec_to_input": case["b_dec_in"],
         "normalization": norm, "reshape": "none", "dtype": "float32", "k": case.get("k"),
         "source": {"release": "bench", "sae_id": "bench", "format": "bench", "files": {}}},
        full_schema=False,
    )  # fmt: skip
    return SAE.from_tensors(cfg, dict(tensors))


def peer(case: dict[str, Any], t: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], Any] | None:
    """The peer's forward on the same tensors, or None when the peer is not installed."""
    try:
        if case["peer"] == "sparsify":
            from sparsify import SparseCoder, SparseCoderConfig

            sc = SparseCoder(
                case["d_in"], SparseCoderConfig(num_latents=case["d_sae"], k=case["k"])
            )
            sc.encoder.weight.data = t["W_enc"].T.contiguous()
            sc.encoder.bias.data = t["b_enc"].clone()
            sc.W_dec.data = t["W_dec"].clone()
            sc.b_dec.data = t["b_dec"].clone()
            return lambda x: sc(x).sae_out
        import sae_lens as sl

        common = {"d_in": case["d_in"], "d_sae": case["d_sae"],
                  "apply_b_dec_to_input": case["b_dec_in"],
                  "normalize_activations": case["norm"]}  # fmt: skip
        if case["arch"] == "topk":
            model = sl.TopKSAE(sl.TopKSAEConfig(k=case["k"], **common))
        elif case["arch"] == "relu":
            model = sl.StandardSAE(sl.StandardSAEConfig(**common))
        else:
            model = sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**common))
        state = {n: v.clone() for n, v in t.items()}
        model.load_state_dict(state, strict=True)
        return model
    except ImportError:
        return None


def median_times(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median seconds of each function, the functions alternating run by run."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[name]
    dev = torch.device(args.device)
    t = weights(case)
    sae = saereg_sae(case, t).to(dev)
    other = peer(case, t)
    if other is not None and hasattr(other, "to"):
        other = other.to(dev)
    x = torch.randn(args.tokens, case["d_in"], generator=torch.Generator().manual_seed(1)).to(dev)
    with torch.no_grad():
        y = sae(x)
        if other is not None:
            torch.testing.assert_close(other(x), y, atol=2e-3, rtol=2e-3)
        dense = sae.encode(x)
        l0 = float((dense != 0).sum(-1).float().mean())
        sparse = sae.encode(x, sparse=True)
        torch.testing.assert_close(sae.decode(sparse), sae.decode(dense), atol=1e-3, rtol=1e-4)
        plain = dense.plain()
        W_enc, W_dec, b_dec = sae.W_enc, sae.W_dec, sae.b_dec
        fns: dict[str, Callable[[], Any]] = {"forward": lambda: sae(x)}
        if other is not None:
            fns["peer forward"] = lambda: other(x)
        fns.update({
            "encode": lambda: sae.encode(x),
            "encode sparse": lambda: sae.encode(x, sparse=True),
            "bare matmul": lambda: torch.matmul(x, W_enc),
            "decode sparse": lambda: sae.decode(sparse),
            "dense decode": lambda: torch.addmm(b_dec, plain, W_dec),
        })  # fmt: skip
        del dense, y
        med = median_times(fns, args.runs)
    return {"name": name, "case": case, "l0": l0, "median": med, "peer": other is not None}


MEMORY_PROBE = r"""
import json, sys, threading, time, torch
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_sparse import CASES, saereg_sae, weights
def used():  # resident + swapped: this machine may reclaim cold pages to swap
    total = 0
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmSwap:")):
            total += int(line.split()[1]) * 1024
    return total
torch.set_num_threads(int(sys.argv[4]))
case = CASES[sys.argv[2]]
tokens = int(sys.argv[3])
with torch.no_grad():
    small = dict(case, d_sae=256, k=min(case.get("k") or 8, 8))
    saereg_sae(small, weights(small))(torch.randn(64, case["d_in"]))  # thread pools
    base = used()
    sae = saereg_sae(case, weights(case))
    x = torch.randn(tokens, case["d_in"])
    nbytes = sum(p.numel() * p.element_size() for p in sae.parameters()) + 2 * x.numel() * 4
    peak, done = [used()], []
    def watch():  # torch releases the GIL inside its ops: sample every millisecond
        while not done:
            peak[0] = max(peak[0], used())
            time.sleep(0.001)
    watcher = threading.Thread(target=watch)
    watcher.start()
    y = sae(x)
    done.append(1)
    watcher.join()
    peak = max(peak[0], used()) - base
print(json.dumps({"needed": nbytes, "peak": peak}))
"""


def memory(name: str, tokens: int, threads: int) -> dict[str, float]:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, root, name, str(tokens), str(threads)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"memory probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--memory-tokens", type=int, default=16384)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, "
          f"{args.tokens} tokens, median of {args.runs} runs\n")  # fmt: skip
    print(
        "| SAE | L0 | saereg forward | peer forward | ratio | encode / bare matmul "
        "(throughput) | sparse encode / matmul | TopK decode: sparse vs dense |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        r = run_case(name, args)
        m = r["median"]
        peer_t = m.get("peer forward")
        peer_s = f"{peer_t:.3f} s ({r['case']['peer']})" if peer_t else "-"
        ratio = f"{m['forward'] / peer_t:.2f}x" if peer_t else "-"
        dec = (f"{m['decode sparse'] * 1e3:.1f} ms vs {m['dense decode'] * 1e3:.0f} ms "
               f"({m['dense decode'] / m['decode sparse']:.0f}x)")  # fmt: skip
        print(f"| {r['case']['label']} | {r['l0']:.0f} | {m['forward']:.3f} s | {peer_s} | "
              f"{ratio} | {m['encode']:.3f} s / {m['bare matmul']:.3f} s = "
              f"{m['bare matmul'] / m['encode']:.0%} | {m['bare matmul'] / m['encode sparse']:.0%}"
              f" | {dec if r['case']['arch'] == 'topk' else '-'} |")  # fmt: skip
        sys.stdout.flush()
    if args.skip_memory or args.device != "cpu":
        return
    print(f"\nPeak memory of a TopK forward on {args.memory_tokens} tokens (fresh process):")
    for name in ("pythia", "oai"):
        mem = memory(name, args.memory_tokens, args.threads)
        print(
            f"- {CASES[name]['label']}: peak {mem['peak'] / 2**20:.0f} MiB vs weights + "
            f"input + output {mem['needed'] / 2**20:.0f} MiB = "
            f"{mem['peak'] / mem['needed']:.2f}x"
        )


if __name__ == "__main__":
    main()
