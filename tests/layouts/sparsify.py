"""EleutherAI sparsify: ``{hookpoint}/cfg.json`` (SparseCoderConfig.to_dict() + d_in) and
``{hookpoint}/sae.safetensors`` (``safetensors.torch.save_model`` of a SparseCoder:
``encoder.weight [M, d_in]``, ``encoder.bias [M]``, ``W_dec [M, d_in]``, ``b_dec [d_in]``,
``W_skip [d_in, d_in]`` with a skip connection).

The references are sparsify's own math (eai-sparsify 1.3.3, ``SparseCoder.encode`` /
``decode`` / ``forward`` and ``fused_encoder``), written out here: ReLU, then top-k;
the decoder sums the chosen rows of W_dec (``embedding_bag``); ``forward`` adds
``x @ W_skip.T`` to the decoded output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import save

from ._case import LayoutCase, Reference

D_IN, M, K = 12, 40, 5  # non-square: a transposed W_dec cannot pass


def _randn(gen: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def cfg_json(**overrides: Any) -> bytes:
    """cfg.json as SparseCoder.save_to_disk writes it (current SparseCoderConfig fields)."""
    doc = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": M,
        "k": K,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        **overrides,
        "d_in": D_IN,
    }
    return json.dumps(doc).encode()


def state(seed: int, *, skip: bool = False, dtype: torch.dtype = torch.float32) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "encoder.weight": _randn(gen, M, D_IN),
        "encoder.bias": _randn(gen, M, scale=0.1),
        "W_dec": _randn(gen, M, D_IN),
        "b_dec": _randn(gen, D_IN),
    }
    if skip:
        tensors["W_skip"] = _randn(gen, D_IN, D_IN, scale=0.2)
    return {name: t.to(dtype).contiguous() for name, t in tensors.items()}


def reference(s: dict, transcode: bool) -> Callable[[torch.Tensor], Reference]:
    """sparsify's encode → (top_acts, top_indices) → decode, as dense latents."""
    p = {n: t.float() for n, t in s.items()}
    dtype = s["W_dec"].dtype

    def run(x: torch.Tensor) -> Reference:
        x = x.to(dtype).float()  # sparsify computes in its weights' dtype
        xin = x if transcode else x - p["b_dec"]
        pre = torch.relu(xin @ p["encoder.weight"].T + p["encoder.bias"])
        top_acts, top_indices = pre.topk(K, dim=-1, sorted=False)
        dense = torch.zeros_like(pre).scatter(-1, top_indices, top_acts)
        decoded = p["W_dec"][top_indices].mul(top_acts[..., None]).sum(-2) + p["b_dec"]
        out = decoded + x @ p["W_skip"].T if "W_skip" in p else decoded
        return Reference(encode=dense, decode=decoded, forward=out)

    return run


def _checker(transcoder: bool, dtype: str) -> Callable[[Any], None]:
    def check(sae: Any) -> None:
        assert sae.cfg.architecture == "topk" and sae.cfg.k == K
        assert sae.cfg.apply_b_dec_to_input is (not transcoder)
        assert bool(sae.cfg.transcoder) is transcoder
        assert sae.cfg.dtype == dtype
        assert tuple(sae.W_enc.shape) == (D_IN, M)
        assert tuple(sae.W_dec.shape) == (M, D_IN)

    return check


def _case(
    name: str, hookpoint: str, s: dict, transcode: bool, repo: str, hooks: dict, **cfg: Any
) -> LayoutCase:
    dtype = str(s["W_dec"].dtype).removeprefix("torch.")
    return LayoutCase(
        format="sparsify",
        name=name,
        files={
            # the training run's config (sparsify's RunConfig), beside the hookpoints
            "config.json": json.dumps(
                {"model": "test-model", "dataset": "test/data", "ctx_len": 256, "k": K}
            ).encode(),
            f"{hookpoint}/cfg.json": cfg_json(transcode=transcode, **cfg),
            f"{hookpoint}/sae.safetensors": save(s),
        },
        sae={"id": hookpoint, "path": hookpoint, **hooks},
        input_shape=(6, D_IN),
        reference=reference(s, transcode),
        release={"model": "test-model"},
        repo_id=repo,
        atol=2e-2 if dtype == "bfloat16" else 1e-5,
        check=_checker(transcode, dtype),
    )


CASES: list[LayoutCase] = [
    _case(
        "sae",
        "layers.3",
        state(21),
        False,
        "test-org/sae-test-32x",
        {"hook_name": "blocks.3.hook_resid_post", "hf_hook_name": "layers.3"},
    ),
    _case(
        "sae-bfloat16-mlp",
        "layers.2.mlp",
        state(22, dtype=torch.bfloat16),
        False,
        "test-org/sae-test-mlp",
        {"hook_name": "blocks.2.hook_mlp_out", "hf_hook_name": "layers.2.mlp"},
    ),
    _case(
        "skip-transcoder",
        "layers.1.mlp",
        state(23, skip=True),
        True,
        "test-org/skip-transcoder-test",
        {
            "hook_name": "blocks.1.ln2.hook_normalized",
            "hook_name_out": "blocks.1.hook_mlp_out",
            "hf_hook_name": "layers.1.mlp",
        },
        skip_connection=True,
    ),
    _case(
        "transcoder",
        "layers.4.mlp",
        state(24),
        True,
        "test-org/transcoder-test",
        {"hook_name": "blocks.4.ln2.hook_normalized", "hf_hook_name": "layers.4.mlp"},
    ),
]
