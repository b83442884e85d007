"""mwhanna's per-layer transcoders in circuit-tracer's layout: layer_{L}.safetensors with
W_enc [d_sae, d_in] (F.linear), W_dec [d_sae, d_out], biases, and optionally a JumpReLU
threshold (activation_function.threshold) and a skip connection W_skip [d_out, d_in]."""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._util import activation, rand, st_save

D_IN, D_SAE = 8, 24


def _case(name: str, *, jumprelu: bool, skip: bool) -> LayoutCase:
    t = {
        "W_enc": rand(D_SAE, D_IN),
        "W_dec": rand(D_SAE, D_IN),
        "b_enc": rand(D_SAE, scale=0.1),
        "b_dec": rand(D_IN, scale=0.1),
    }
    if jumprelu:
        t["activation_function.threshold"] = rand(D_SAE, scale=0.1).abs()
    if skip:
        t["W_skip"] = rand(D_IN, D_IN)

    def reference(x: torch.Tensor) -> Reference:
        """circuit-tracer SingleLayerTranscoder: encode = act(F.linear(x, W_enc, b_enc));
        decode = f @ W_dec + b_dec; forward adds x @ W_skipᵀ."""
        d = {k: v.double() for k, v in t.items()}
        pre = x.double() @ d["W_enc"].T + d["b_enc"]
        f = activation(pre, d.get("activation_function.threshold"))
        y = f @ d["W_dec"] + d["b_dec"]
        out = y + x.double() @ d["W_skip"].T if skip else y
        return Reference(encode=f, decode=y, forward=out)

    def check(sae) -> None:
        assert sae.cfg.transcoder and sae.cfg.hook_name_out == "blocks.3.hook_mlp_out"
        assert sae.cfg.architecture == ("jumprelu" if jumprelu else "relu")

    return LayoutCase(
        format="mwhanna_transcoder",
        name=name,
        files={"layer_3.safetensors": st_save(t), "config.yaml": b"model_name: Qwen/Qwen3-0.6B\n"},
        sae={
            "id": "layer_3",
            "path": "layer_3.safetensors",
            "hook_name": "blocks.3.mlp.hook_in",
            "hook_name_out": "blocks.3.hook_mlp_out",
            "hook_layer": 3,
        },
        input_shape=(5, D_IN),
        reference=reference,
        repo_id="mwhanna/qwen3-0.6b-transcoders-lowl0",
        check=check,
    )


CASES = [
    _case("relu", jumprelu=False, skip=False),
    _case("jumprelu-skip", jumprelu=True, skip=True),
]
