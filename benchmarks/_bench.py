"""Helpers shared by the loading benchmarks: a fresh-subprocess probe that measures one
load (wall time and peak RSS above the process's baseline), and a pre-populated Hugging
Face cache snapshot for a repository, so every measurement runs offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"

PROBE = r"""
import json, resource, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
mode, arg = sys.argv[1], sys.argv[2]
import numpy as np, torch, safetensors.torch
import saereg.loading, saereg.sae.module, saereg.plugins.gemma_scope
base = status("VmRSS")
# ru_maxrss survives exec (a child can inherit its parent's peak), so reset the
# high-water mark and read VmHWM where Linux allows it.
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    hwm = True
except OSError:
    hwm = False
t0 = time.perf_counter()
touch = mode.endswith("+touch")
mode = mode.removesuffix("+touch")
written = []
if mode == "fetch":  # conversion only; the canonical file's write (+ fsync) timed apart
    import saereg.store.canonical as canonical
    real = canonical.write_safetensors
    def timed(*args, **kwargs):
        t = time.perf_counter()
        real(*args, **kwargs)
        written.append(time.perf_counter() - t)
    canonical.write_safetensors = timed
    saereg.loading.fetch_canonical(arg, quiet=True)
    tensors = {}
elif mode == "load_sae":
    sae = saereg.loading.load_sae(arg, quiet=True)
    tensors = dict(sae.named_parameters())
elif mode == "load_file":
    tensors = safetensors.torch.load_file(arg)
elif mode == "naive":
    with np.load(arg) as npz:
        tensors = {k: torch.from_numpy(npz[k]) for k in npz.files}
elif mode == "torch_load":
    tensors = torch.load(arg, map_location="cpu", weights_only=True)
if touch:  # read every byte: what a first forward pass needs
    total = sum(float(t.sum()) for t in tensors.values())
elapsed = time.perf_counter() - t0
peak = status("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": elapsed, "peak_above_base": peak - base, "write": sum(written)}))
"""


def probe(mode: str, arg: str, env: dict[str, str]) -> dict[str, float]:
    """Run one measurement in a fresh interpreter (modes: load_sae, load_file, naive,
    torch_load, fetch (conversion only, its write timed as 'write'); '+touch' reads every
    tensor once)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, arg], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"probe {mode} {arg} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def snapshot(hf_cache: Path, repo_id: str, commit: str = COMMIT) -> Path:
    """The snapshot folder of `repo_id` at `commit` in an HF cache, with refs/main
    pointing at it (created if needed)."""
    repo = hf_cache / ("models--" + repo_id.replace("/", "--"))
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return folder


def as_lfs_blob(file: Path) -> Path:
    """Move a file written into a snapshot folder to blobs/<sha256> and leave a relative
    symlink in its place: how the HF cache stores LFS files (saereg takes their sha256
    from the blob name instead of reading them again)."""
    import hashlib
    import os

    digest = hashlib.sha256()
    with file.open("rb") as fh:
        while chunk := fh.read(64 << 20):
            digest.update(chunk)
    repo = next(p for p in file.parents if p.name.startswith("models--"))
    blob = repo / "blobs" / digest.hexdigest()
    blob.parent.mkdir(exist_ok=True)
    file.rename(blob)
    file.symlink_to(os.path.relpath(blob, file.parent))
    return blob


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>11}  ratio")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>11}  {note}")
