"""ckkissane's crosscoder over two models: ``{hook}/cfg.json`` + ``{hook}/cc_weights.pt``
(a torch state dict: W_enc [2, d_in, dict_size], W_dec [dict_size, 2, d_in], b_enc,
b_dec [2, d_in]), written here in that exact layout. The reference is the publisher's
CrossCoder math (crosscoder-model-diff-replication): f = ReLU(Σ_n x_n W_enc[n] + b_enc),
y_n = f W_dec[:, n] + b_dec[n]."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._util import json_bytes, pt_bytes, rand

D_IN, D_SAE, HOOK = 8, 24, "blocks.3.hook_resid_pre"
STATE = {
    "W_enc": rand(2, D_IN, D_SAE),
    "W_dec": rand(D_SAE, 2, D_IN),
    "b_enc": rand(D_SAE, scale=0.1),
    "b_dec": rand(2, D_IN, scale=0.1),
}
CFG = {"d_in": D_IN, "dict_size": D_SAE, "hook_point": HOOK, "enc_dtype": "fp32", "seed": 49}


def _reference(x: torch.Tensor) -> Reference:
    s = {k: v.double() for k, v in STATE.items()}
    f = torch.relu(torch.einsum("n...d,ndh->...h", x.double(), s["W_enc"]) + s["b_enc"])
    b_dec = s["b_dec"].reshape(2, *([1] * (x.dim() - 2)), D_IN)
    y = torch.einsum("...h,hnd->n...d", f, s["W_dec"]) + b_dec
    return Reference(encode=f, decode=y, forward=y)


def _check(cc) -> None:
    assert cc.cfg.kind == "crosscoder" and cc.n_sites == 2
    assert cc.cfg.hook_names == (HOOK, HOOK)


CASES = [
    LayoutCase(
        format="ckkissane_crosscoder",
        name="two-models",
        files={f"{HOOK}/cfg.json": json_bytes(CFG), f"{HOOK}/cc_weights.pt": pt_bytes(STATE)},
        sae={
            "id": HOOK,
            "path": HOOK,
            "kind": "crosscoder",
            "n_layers": 2,
            "hook_name": HOOK,
            "hook_layer": 3,
            "d_sae": D_SAE,
            "context_size": None,
            "normalize_activations": "none",
        },
        input_shape=(2, 5, D_IN),
        reference=_reference,
        check=_check,
    )
]
