"""Multi-layer dictionaries: one layer of a real-width 26-layer CLT, and a replacement model.

    python benchmarks/bench_clt.py [--runs 3] [--d-sae 16384 --d-model 2304 --n-layers 26]
                                   [--layer 13]

1. **One layer reads only its bytes.** A cross-layer transcoder the size of
   mntss/clt-gemma-2-2b-426k (26 layers, 16,384 latents per layer on a 2,304 stream,
   float32) is laid out in circuit-tracer's format in a pre-populated Hugging Face cache:
   config.yaml, and W_enc_{i} / W_dec_{i} for every layer (W_dec_i is [16384, 26 - i,
   2304]: 53 GB in all). The layer loaded is written in full; the other 25 layers' files
   are sparse files with valid headers (their full size on paper, nothing on disk), so a
   loader that read them would show it. `load_sae(ref, layers=[L])` runs in a fresh
   subprocess, offline, first (conversion: a small layer file that maps W_enc and W_dec in
   place) and cached, then reads every tensor once. Its peak RSS above the process's
   baseline is compared with the layer's weight bytes (the target: at most 1.2x), beside
   `safetensors.torch.load_file` of the same two publisher files measured the same way.
2. **Replacement-model forward.** A tiny random-weight Gemma 2 (transformers, from a
   config: 4 layers, d_model 256) runs forward on [4, 64] tokens plain and with a
   4-layer CLT (d_sae 2,048) attached in replace and error modes, alternating, median of
   `--runs` x 5 passes each; ratios against the plain forward of the same run.

Big files are deleted at the end.
"""

from __future__ import annotations

import argparse
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

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import as_lfs_blob, print_rows, snapshot

REPO = "bench/clt-gemma-2-2b"

PROBE = r"""
import json, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
mode, arg, layer = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch, safetensors.torch, saereg.loading, saereg.sae.clt
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
t0 = time.perf_counter()
if mode == "load_sae":
    clt = saereg.loading.load_sae(arg, layers=[layer], quiet=True)
    tensors = dict(clt.named_parameters())
else:
    tensors = {}
    for name in arg.split(","):
        tensors.update(safetensors.torch.load_file(name))
total = sum(float(t.sum()) for t in tensors.values())
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "peak_above_base": status("VmHWM") - base}))
"""


def _probe(mode: str, arg: str, layer: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, arg, str(layer)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"probe {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sparse_safetensors(path: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    """A float32 safetensors file of the given shapes whose data is a hole (no disk used)."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors.items():
        n = 4
        for s in shape:
            n *= s
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)


def build(root: Path, n_layers: int, d_sae: int, d_model: int, layer: int) -> tuple[str, int]:
    """The CLT in an HF cache + a release for it; (reference, the layer's weight bytes)."""
    folder = snapshot(root / "hf", REPO)
    (folder / "config.yaml").write_text(
        "model_kind: cross_layer_transcoder\nfeature_input_hook: hook_resid_mid\n"
        "feature_output_hook: hook_mlp_out\n"
    )
    weight_bytes = 0
    for i in range(n_layers):
        enc = {f"W_enc_{i}": (d_sae, d_model), f"b_enc_{i}": (d_sae,), f"b_dec_{i}": (d_model,)}
        dec = {f"W_dec_{i}": (d_sae, n_layers - i, d_model)}
        if i != layer:
            _sparse_safetensors(folder / f"W_enc_{i}.safetensors", enc)
            _sparse_safetensors(folder / f"W_dec_{i}.safetensors", dec)
            continue
        g = torch.Generator().manual_seed(i)
        for name, group in (("W_enc", enc), ("W_dec", dec)):
            state = {k: torch.randn(s, generator=g) * 0.02 for k, s in group.items()}
            weight_bytes += sum(t.numel() * 4 for t in state.values())
            path = folder / f"{name}_{i}.safetensors"
            save_file(state, str(path))
            as_lfs_blob(path)
            del state
    releases = root / "releases"
    releases.mkdir()
    (releases / "bench-clt.yaml").write_text(
        f"""schema: 1
name: bench-clt
format: circuit_tracer_clt
publisher: bench
model: {"gemma-2-2b" if d_model == 2304 else "bench-model"}
repo_id: {REPO}
revision: null
defaults: {{kind: clt, n_layers: {n_layers}, d_sae: {d_sae}, context_size: null,
  normalize_activations: none}}
saes:
- {{id: clt, path: ., hook_name: blocks.0.hook_resid_mid, hook_layer: 0}}
"""
    )
    return "bench-clt/clt", weight_bytes


def bench_layer(args: argparse.Namespace, root: Path) -> list[tuple[str, str, str]]:
    ref, weight_bytes = build(root, args.n_layers, args.d_sae, args.d_model, args.layer)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "SAEREG_RELEASES": str(root / "releases"),
        "SAEREG_CACHE": str(root / "saereg"),
    }
    folder = next((root / "hf").glob("models--*/snapshots/*"))
    files = ",".join(str(folder / f"{n}_{args.layer}.safetensors") for n in ("W_enc", "W_dec"))
    first, cached, baseline = [], [], []
    for _ in range(args.runs):
        shutil.rmtree(root / "saereg", ignore_errors=True)
        first.append(_probe("load_sae", ref, args.layer, env))
        cached.append(_probe("load_sae", ref, args.layer, env))
        baseline.append(_probe("load_file", files, args.layer, env))
    gb = weight_bytes / 1e9
    rows = [("layer weight bytes", f"{gb:.2f} GB", f"layer {args.layer} of {args.n_layers}")]
    base_s = statistics.median(r["seconds"] for r in baseline)
    for name, runs in (
        ("load_sae first", first),
        ("load_sae cached", cached),
        ("load_file baseline", baseline),
    ):
        peak = statistics.median(r["peak_above_base"] for r in runs) / weight_bytes
        secs = statistics.median(r["seconds"] for r in runs)
        rows.append((f"{name}: peak RSS / layer bytes", f"{peak:.3f}x", "target <= 1.2x"))
        rows.append(
            (f"{name}: seconds (+ read all)", f"{secs:.3f} s", f"{secs / base_s:.2f}x load_file")
        )
    return rows


def bench_forward(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    import transformers

    import saereg
    from saereg.catalogue.hooks import hf_hook
    from saereg.sae.clt import CrossLayerTranscoder
    from saereg.sae.multilayer import DictionaryConfig

    n, d, d_sae = 4, 256, 2048
    cfg = transformers.Gemma2Config(
        hidden_size=d,
        num_hidden_layers=n,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=1024,
        vocab_size=1024,
        max_position_embeddings=128,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    names_in = tuple(f"blocks.{i}.hook_resid_mid" for i in range(n))
    names_out = tuple(f"blocks.{i}.hook_mlp_out" for i in range(n))
    dc = DictionaryConfig(
        kind="clt",
        n_layers=n,
        layers=tuple(range(n)),
        architecture="relu",
        d_in=d,
        d_sae=d_sae,
        d_out=d,
        dtype="float32",
        hook_names=names_in,
        hook_names_out=names_out,
        source={"release": "bench", "sae_id": "clt", "format": "bench", "files": {}},
        hf_hooks=tuple(hf_hook("gemma2", h).to_dict() for h in names_in),
        hf_hooks_out=tuple(hf_hook("gemma2", h).to_dict() for h in names_out),
    )
    tensors = [
        {
            "W_enc": torch.randn(d, d_sae) * 0.05,
            "b_enc": torch.zeros(d_sae),
            "W_dec": torch.randn(d_sae, n - i, d) * 0.01,
            "b_dec": torch.zeros(d),
        }
        for i in range(n)
    ]
    clt = CrossLayerTranscoder(dc, tensors)
    ids = torch.randint(0, 1024, (4, 64))
    times: dict[str, list[float]] = {"plain": [], "replace": [], "error": []}

    def timed(mode: str) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            if mode == "plain":
                model(ids)
            else:
                with saereg.attach(model, clt, mode=mode):
                    model(ids)
        return time.perf_counter() - t0

    for mode in times:
        timed(mode)  # warm up
    for _ in range(args.runs * 5):
        for mode in times:
            times[mode].append(timed(mode))
    plain = statistics.median(times["plain"])
    return [
        (
            f"forward {mode} (tiny Gemma 2, 4 layers)",
            f"{statistics.median(t) * 1e3:.2f} ms",
            f"{statistics.median(t) / plain:.2f}x plain",
        )
        for mode, t in times.items()
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--n-layers", type=int, default=26)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--d-model", type=int, default=2304)
    p.add_argument("--layer", type=int, default=13)
    p.add_argument("--skip-layer", action="store_true", help="only the forward benchmark")
    args = p.parse_args()
    rows = []
    if not args.skip_layer:
        root = Path(tempfile.mkdtemp(prefix="saereg-bench-clt-"))
        try:
            rows += bench_layer(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    rows += bench_forward(args)
    print_rows(rows)


if __name__ == "__main__":
    main()
