"""Tiny circuit-tracer dictionaries written by circuit-tracer's own `to_safetensors`
(tests/data/circuit_tracer, made by make_fixtures.py there), with two references each:
the outputs circuit-tracer's own modules computed in float64 (reference.safetensors),
and the math written here from circuit-tracer's code, read from the raw files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent.parent / "data" / "circuit_tracer"
N_LAYERS, D_MODEL, D_SAE = 3, 8, 12
CLT_REPO, SET_REPO = "test-org/tiny-clt", "test-org/tiny-set"

CLT_CONFIG = b"""model_kind: cross_layer_transcoder
model_name: test-model
feature_input_hook: hook_resid_mid
feature_output_hook: hook_mlp_out
scan: test
"""


def set_config(repo_id: str = SET_REPO, entries: list[str] | None = None) -> bytes:
    listed = entries or [f"hf://{repo_id}/layers/layer_{i}.safetensors" for i in range(N_LAYERS)]
    lines = [
        "model_kind: transcoder_set",
        "feature_input_hook: mlp.hook_in",
        "feature_output_hook: hook_mlp_out",
        "transcoders:",
    ]
    return ("\n".join(lines + [f"  - {e}" for e in listed]) + "\n").encode()


def clt_files() -> dict[str, bytes]:
    files = {"config.yaml": CLT_CONFIG}
    for path in sorted((DATA / "clt").iterdir()):
        files[path.name] = path.read_bytes()
    return files


def set_files() -> dict[str, bytes]:
    files = {"config.yaml": set_config()}
    for path in sorted((DATA / "set").iterdir()):
        files[f"layers/{path.name}"] = path.read_bytes()
    return files


def circuit_tracer_outputs() -> dict[str, torch.Tensor]:
    """What circuit-tracer 0.5.0 computed (float64) for the fixtures' inputs."""
    return load_file(DATA / "reference.safetensors")


def clt_math(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """circuit-tracer's CrossLayerTranscoder in float64, from the raw files:
    f_s = JumpReLU(x_s W_enc_sᵀ + b_enc_s); y_t = Σ_{s≤t} f_s W_dec_s[:, t-s] + b_dec_t."""
    enc = [load_file(DATA / "clt" / f"W_enc_{s}.safetensors") for s in range(N_LAYERS)]
    dec = [
        load_file(DATA / "clt" / f"W_dec_{s}.safetensors")[f"W_dec_{s}"].double()
        for s in range(N_LAYERS)
    ]
    f = []
    for s in range(N_LAYERS):
        e = {k: v.double() for k, v in enc[s].items()}
        h = x[s] @ e[f"W_enc_{s}"].T + e[f"b_enc_{s}"]
        f.append(h * (h > e[f"threshold_{s}"]).double())
    y = []
    for t in range(N_LAYERS):
        out = enc[t][f"b_dec_{t}"].double().expand_as(x[t]).clone()
        for s in range(t + 1):
            out = out + f[s] @ dec[s][:, t - s]
        y.append(out)
    fs, ys = torch.stack(f), torch.stack(y)
    return {"encode": fs, "decode": ys, "forward": ys}


def set_math(x: torch.Tensor) -> dict[str, Any]:
    """circuit-tracer's TranscoderSet in float64: per layer F.linear encode, JumpReLU
    when a threshold is published, decode f W_dec + b_dec, skip x W_skipᵀ."""
    f, y, fw = [], [], []
    for s in range(N_LAYERS):
        p = {k: v.double() for k, v in load_file(DATA / "set" / f"layer_{s}.safetensors").items()}
        h = x[s] @ p["W_enc"].T + p["b_enc"]
        thr = p.get("activation_function.threshold")
        fs = torch.relu(h) if thr is None else h * (h > thr).double()
        ys = fs @ p["W_dec"] + p["b_dec"]
        f.append(fs)
        y.append(ys)
        fw.append(ys + (x[s] @ p["W_skip"].T if "W_skip" in p else 0))
    return {"encode": torch.stack(f), "decode": torch.stack(y), "forward": torch.stack(fw)}
