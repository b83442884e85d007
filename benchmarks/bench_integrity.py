"""What cache integrity costs, each figure beside a baseline measured in the same run.

    python benchmarks/bench_integrity.py [--runs N] [--d-in 2304] [--d-sae 16384]

1. Writing a canonical file with its tensor digest (hash while writing, then read back
   and check once) against the same write without the digest.
2. The identity check done on every load (header + embedded config) against reading the
   header alone: it must stay a header-only cost.
3. `verify=True` (hashing every tensor byte) against reading every tensor byte with
   safetensors, the least a full check can cost.
4. A pinned publisher file: hashing its bytes the first time (store/pins.py) against a
   later load's check in a new process (one stat and the memo file read), beside
   trusting the blob's name as unpinned files do.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from bench_registry import median_seconds  # run as a script: benchmarks/ is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--d-in", type=int, default=2304)
    parser.add_argument("--d-sae", type=int, default=16384)
    args = parser.parse_args()

    from safetensors.numpy import load_file

    from saereg.store.canonical import write_canonical, write_safetensors
    from saereg.store.integrity import Expected, verify_canonical
    from saereg.store.sae_config import METADATA_KEY, SAEConfig
    from saereg.store.tensors import read_header

    rng = np.random.default_rng(0)
    d_in, d_sae = args.d_in, args.d_sae
    tensors = {
        "W_enc": rng.standard_normal((d_in, d_sae), dtype=np.float32),
        "W_dec": rng.standard_normal((d_sae, d_in), dtype=np.float32),
        "b_enc": np.zeros(d_sae, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
    }
    size_mb = sum(t.nbytes for t in tensors.values()) / 1e6
    source = {"release": "bench", "sae_id": "x", "revision": "r", "format": "saelens", "files": {}}
    values = {
        "architecture": "relu",
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_in,
        "apply_b_dec_to_input": False,
        "normalization": {"kind": "none"},
        "reshape": "none",
        "hook_name": "blocks.0.hook_resid_pre",
        "hook_layer": 0,
        "model": "m",
        "dtype": "float32",
        "source": source,
    }
    cfg = SAEConfig.from_dict(values, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        plain, digested = Path(tmp) / "plain.safetensors", Path(tmp) / "digest.safetensors"
        write_plain = median_seconds(
            lambda: write_safetensors(plain, tensors, {METADATA_KEY: cfg.to_json()}), args.runs
        )
        write_digest = median_seconds(lambda: write_canonical(digested, cfg, tensors), args.runs)
        header = median_seconds(lambda: read_header(digested), args.runs * 20)
        expect = Expected("bench", "x", "r")
        identity = median_seconds(lambda: verify_canonical(digested, expect), args.runs * 20)
        read_all = median_seconds(lambda: load_file(str(digested)), args.runs)
        deep = median_seconds(lambda: verify_canonical(digested, expect, deep=True), args.runs)
        os.environ["SAEREG_CACHE"] = tmp  # the memo lives beside the cache entries
        from saereg.store import pins
        from saereg.store.fetch import lfs_sha256

        def first_check() -> None:
            (Path(tmp) / pins.MEMO_NAME).unlink(missing_ok=True)
            pins.forget()
            pins.verified_sha256(digested)

        def later_load() -> None:
            pins.forget()  # a new process: nothing in memory, the memo file is read
            pins.verified_sha256(digested)

        hashed = median_seconds(first_check, args.runs)
        pins.verified_sha256(digested)
        remembered = median_seconds(later_load, args.runs * 20)
        by_name = median_seconds(lambda: lfs_sha256(digested), args.runs * 20)
    print(f"{size_mb:.0f} MB of float32 tensors, median of {args.runs} runs")
    print(
        f"1. write with digest {write_digest:.3f} s vs without {write_plain:.3f} s: "
        f"{write_digest / write_plain:.2f}x"
    )
    print(
        f"2. identity check {identity * 1e3:.2f} ms vs header read {header * 1e3:.2f} ms: "
        f"{identity / header:.2f}x"
    )
    print(f"3. verify=True {deep:.3f} s vs reading every tensor {read_all:.3f} s: "
          f"{deep / read_all:.2f}x")  # fmt: skip
    print(
        f"4. pinned file: first check (hash) {hashed:.3f} s, later loads {remembered * 1e3:.3f} "
        f"ms ({hashed / remembered:,.0f}x less); unpinned, trusting the name: "
        f"{by_name * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
