"""One layer of mntss's cross-layer transcoder, loaded as a transcoder: config.yaml,
W_enc_{L}.safetensors (W_enc_{L} [d_sae, d_in], b_enc_{L}, b_dec_{L}[, threshold_{L}])
and W_dec_{L}.safetensors (W_dec_{L} [d_sae, n_targets, d_out]).

The reference encodes as circuit-tracer's CrossLayerTranscoder.encode_layer does; the
decoder of the single-layer view is the sum over target layers (what is lost is
documented in saereg.plugins.transcoders)."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._util import activation, rand, st_save

L, D_IN, D_SAE, N_TARGETS = 2, 8, 24, 3
CONFIG = b"""model_name: google/gemma-2-2b
feature_input_hook: hook_resid_mid
feature_output_hook: hook_mlp_out
scan: test
"""


def _case(name: str, *, jumprelu: bool) -> LayoutCase:
    enc = {
        f"W_enc_{L}": rand(D_SAE, D_IN),
        f"b_enc_{L}": rand(D_SAE, scale=0.1),
        f"b_dec_{L}": rand(D_IN, scale=0.1),
    }
    if jumprelu:
        enc[f"threshold_{L}"] = rand(D_SAE, scale=0.1).abs()
    dec = {f"W_dec_{L}": rand(D_SAE, N_TARGETS, D_IN)}

    def reference(x: torch.Tensor) -> Reference:
        e = {k: v.double() for k, v in enc.items()}
        pre = x.double() @ e[f"W_enc_{L}"].T + e[f"b_enc_{L}"]
        f = activation(pre, e.get(f"threshold_{L}"))
        y = f @ dec[f"W_dec_{L}"].double().sum(dim=1) + e[f"b_dec_{L}"]
        return Reference(encode=f, decode=y, forward=y)

    def check(sae) -> None:
        assert (sae.cfg.hook_name, sae.cfg.hook_name_out) == (
            f"blocks.{L}.hook_resid_mid",
            f"blocks.{L}.hook_mlp_out",
        )
        assert sae.cfg.transcoder and sae.W_skip is None

    return LayoutCase(
        format="mntss_clt",
        name=name,
        files={
            "config.yaml": CONFIG,
            f"W_enc_{L}.safetensors": st_save(enc),
            f"W_dec_{L}.safetensors": st_save(dec),
        },
        sae={"id": f"layer_{L}", "path": str(L), "hook_layer": L},
        input_shape=(5, D_IN),
        reference=reference,
        repo_id="mntss/clt-gemma-2-2b-2.5M",
        check=check,
    )


CASES = [_case("relu", jumprelu=False), _case("jumprelu", jumprelu=True)]
