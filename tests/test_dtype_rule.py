"""The dtype rule (README, `help(load_sae)`): float32 unless asked, outputs in sae.dtype.

DeepSeek-R1's SAE is published in bfloat16 (tests/layouts/deepseek_r1.py): `load_sae`
gives float32 by default, bfloat16 with `dtype=None` (as stored) or "bfloat16"; every
output comes back in the module's dtype whatever the input's.
"""

from __future__ import annotations

import pytest
import torch

import saereg
from tests.layouts import deepseek_r1
from tests.layouts._serve import serve
from tests.tiny_sae import inputs, make


def test_load_sae_default_and_stored_dtype(hubenv) -> None:
    ref = serve(hubenv, deepseek_r1.CASES[0])
    assert "float32" in saereg.load_sae.__doc__ and "dtype=None" in saereg.load_sae.__doc__
    default = saereg.load_sae(ref)
    stored = saereg.load_sae(ref, dtype=None)
    assert default.dtype == torch.float32 and default.cfg.dtype == "float32"
    assert stored.dtype == torch.bfloat16 and stored.cfg.dtype == "bfloat16"
    assert torch.equal(default.W_enc, stored.W_enc.float())
    x = torch.randn(3, 8)
    assert default(x).dtype == torch.float32 and stored(x).dtype == torch.bfloat16


@pytest.mark.parametrize("sae_dtype", [torch.float32, torch.bfloat16])
def test_outputs_are_in_the_modules_dtype(sae_dtype: torch.dtype) -> None:
    for arch in ("topk", "relu"):
        sae = make(arch, "layer_norm", dtype=sae_dtype)
        for in_dtype in (torch.float16, torch.float32, torch.float64):
            x = inputs().to(in_dtype)
            f = sae.encode(x)
            outs = {
                "encode": f,
                "decode": sae.decode(f),
                "decode(edited)": sae.decode(f.to(in_dtype) * 2),
                "forward": sae(x),
                "sparse values": sae.encode(x, sparse=True).values,
                "decode(sparse)": sae.decode(sae.encode(x, sparse=True)),
            }
            for what, out in outs.items():
                assert out.dtype == sae_dtype, (arch, in_dtype, what, out.dtype)
