"""saprmarks/dictionary_learning: ``{path}/ae.pt`` (torch.save of the dictionary's
state_dict, keys named as each class names its parameters) + ``{path}/config.json``
(``{"trainer": trainer.config, "buffer": buffer.config}``).

The references below are the publisher's math (dictionary-learning 0.1.0,
``dictionary.py`` and ``trainers/*.py``), written out here independently of saereg:
nn.Linear weights are [out, in] and compute ``x @ W.T + b``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import torch

from ._case import LayoutCase, Reference

D_IN, D_SAE = 12, 40  # non-square, so a transposed weight cannot pass
LAYER = 3
PATH = f"sweep/resid_post_layer_{LAYER}/trainer_0"


def _randn(gen: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def ae_pt(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def config_json(dict_class: str, trainer_class: str, **trainer: Any) -> bytes:
    """config.json as dictionary_learning's training loop writes it."""
    doc = {
        "trainer": {
            "trainer_class": trainer_class,
            "dict_class": dict_class,
            "activation_dim": D_IN,
            "dict_size": D_SAE,
            "lr": 3e-4,
            "steps": 1000,
            "seed": 0,
            "device": "cuda:0",
            "layer": LAYER,
            "lm_name": "google/gemma-2-2b",
            "wandb_name": f"{trainer_class}-test",
            "submodule_name": f"resid_post_layer_{LAYER}",
            **trainer,
        },
        "buffer": {"d_submodule": D_IN, "io": "out", "n_ctxs": 244, "ctx_len": 128},
    }
    return json.dumps(doc, indent=4).encode()


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    y = x @ weight.to(x.dtype).T
    return y + bias.to(x.dtype) if bias is not None else y


def _dense_topk(z: torch.Tensor, k: int) -> torch.Tensor:
    top = z.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(z).scatter(-1, top.indices, top.values)


def _ref(
    encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], Reference]:
    def reference(x: torch.Tensor) -> Reference:
        f = encode(x)
        y = decode(f)
        return Reference(encode=f, decode=y, forward=y)

    return reference


def _checker(architecture: str, apply_b_dec: bool, **extra: Any) -> Callable[[Any], None]:
    def check(sae: Any) -> None:
        assert sae.cfg.architecture == architecture
        assert sae.cfg.apply_b_dec_to_input is apply_b_dec
        assert tuple(sae.W_enc.shape) == (D_IN, D_SAE)
        assert tuple(sae.W_dec.shape) == (D_SAE, D_IN)
        for key, value in extra.items():
            assert getattr(sae.cfg, key) == value, (key, getattr(sae.cfg, key), value)

    return check


def _case(
    name: str,
    dict_class: str,
    trainer_class: str,
    state: dict[str, Any],
    reference: Callable[[torch.Tensor], Reference],
    check: Callable[[Any], None],
    atol: float = 1e-5,
    **trainer: Any,
) -> LayoutCase:
    return LayoutCase(
        format="dictionary_learning",
        name=name,
        files={
            f"{PATH}/ae.pt": ae_pt(state),
            f"{PATH}/config.json": config_json(dict_class, trainer_class, **trainer),
        },
        sae={
            "id": f"blocks.{LAYER}.hook_resid_post__trainer_0",
            "path": PATH,
            "hook_name": f"blocks.{LAYER}.hook_resid_post",
            "hook_layer": LAYER,
        },
        input_shape=(5, D_IN),
        reference=reference,
        release={"model": "test-model"},
        repo_id="test-org/dictionary-learning",
        atol=atol,
        check=check,
    )


# --------------------------------------------------------------------------- classes


def autoencoder(unit_decoder: bool = False) -> LayoutCase:
    """AutoEncoder: bias / encoder.{weight,bias} / decoder.weight. The publisher's
    from_pretrained normalizes decoder columns (folding the norms into the encoder)."""
    gen = torch.Generator().manual_seed(11 + unit_decoder)
    dec = _randn(gen, D_IN, D_SAE)
    if unit_decoder:  # the p-anneal and standard trainers keep decoder columns unit-norm
        dec = dec / dec.norm(dim=0, keepdim=True)
    state = {
        "bias": _randn(gen, D_IN),
        "encoder.weight": _randn(gen, D_SAE, D_IN),
        "encoder.bias": _randn(gen, D_SAE, scale=0.1),
        "decoder.weight": dec,
    }
    enc, b_enc, dec_n = state["encoder.weight"], state["encoder.bias"], dec
    norms = dec.norm(dim=0)
    if not torch.allclose(norms, torch.ones_like(norms)):  # from_pretrained(normalize_decoder)
        dec_n, enc, b_enc = dec / norms, enc * norms[:, None], b_enc * norms

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(_linear(x - state["bias"], enc, b_enc))

    def decode(f: torch.Tensor) -> torch.Tensor:
        return _linear(f, dec_n) + state["bias"]

    if unit_decoder:
        return _case(
            "AutoEncoder-p-anneal",
            "AutoEncoder",
            "PAnnealTrainer",
            state,
            _ref(encode, decode),
            _checker("relu", True, folded=()),
            p_start=1,
            p_end=0.2,
            sparsity_function="Lp^p",
        )
    return _case(
        "AutoEncoder",
        "AutoEncoder",
        "StandardTrainerAprilUpdate",
        state,
        _ref(encode, decode),
        _checker("relu", True),
    )


def autoencoder_new() -> LayoutCase:
    """AutoEncoderNew: encoder and decoder both nn.Linear with bias; no input centring."""
    gen = torch.Generator().manual_seed(17)
    s = {
        "encoder.weight": _randn(gen, D_SAE, D_IN),
        "encoder.bias": _randn(gen, D_SAE, scale=0.1),
        "decoder.weight": _randn(gen, D_IN, D_SAE),
        "decoder.bias": _randn(gen, D_IN),
    }

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(_linear(x, s["encoder.weight"], s["encoder.bias"]))

    def decode(f: torch.Tensor) -> torch.Tensor:
        return _linear(f, s["decoder.weight"], s["decoder.bias"])

    return _case(
        "AutoEncoderNew",
        "AutoEncoderNew",
        "StandardTrainerNew",
        s,
        _ref(encode, decode),
        _checker("relu", False),
    )


def gated() -> LayoutCase:
    gen = torch.Generator().manual_seed(12)
    s = {
        "decoder_bias": _randn(gen, D_IN),
        "encoder.weight": _randn(gen, D_SAE, D_IN),
        "r_mag": _randn(gen, D_SAE, scale=0.2),
        "gate_bias": _randn(gen, D_SAE, scale=0.2),
        "mag_bias": _randn(gen, D_SAE, scale=0.2),
        "decoder.weight": _randn(gen, D_IN, D_SAE),
    }

    def encode(x: torch.Tensor) -> torch.Tensor:
        e = _linear(x - s["decoder_bias"], s["encoder.weight"])
        gate = (e + s["gate_bias"] > 0).float()
        return gate * torch.relu(s["r_mag"].exp() * e + s["mag_bias"])

    def decode(f: torch.Tensor) -> torch.Tensor:
        return _linear(f, s["decoder.weight"]) + s["decoder_bias"]

    return _case(
        "GatedAutoEncoder",
        "GatedAutoEncoder",
        "GatedSAETrainer",
        s,
        _ref(encode, decode),
        _checker("gated", True),
    )


def jumprelu() -> LayoutCase:
    """Per-latent thresholds, some negative: the publisher's ReLU then zeroes h in (θ, 0]."""
    gen = torch.Generator().manual_seed(13)
    threshold = _randn(gen, D_SAE, scale=0.3)
    threshold[::3] = -0.4
    s = {
        "W_enc": _randn(gen, D_IN, D_SAE),
        "b_enc": _randn(gen, D_SAE, scale=0.1),
        "W_dec": _randn(gen, D_SAE, D_IN),
        "b_dec": _randn(gen, D_IN),
        "threshold": threshold,
    }

    def encode(x: torch.Tensor) -> torch.Tensor:
        pre = x @ s["W_enc"].to(x.dtype) + s["b_enc"]  # apply_b_dec_to_input is False
        return torch.relu(pre * (pre > s["threshold"]))

    return _case(
        "JumpReluAutoEncoder",
        "JumpReluAutoEncoder",
        "JumpReluTrainer",
        s,
        _ref(encode, _param_decode(s)),
        _checker("jumprelu", False),
        bandwidth=0.001,
        target_l0=20,
    )


def _topk_state(seed: int, threshold: float, dtype: torch.dtype = torch.float32) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "k": torch.tensor(6, dtype=torch.int),
        "threshold": torch.tensor(threshold, dtype=torch.float32),
        "decoder.weight": _randn(gen, D_IN, D_SAE).to(dtype),
        "encoder.weight": _randn(gen, D_SAE, D_IN).to(dtype),
        "encoder.bias": _randn(gen, D_SAE, scale=0.1).to(dtype),
        "b_dec": _randn(gen, D_IN).to(dtype),
    }


def _linear_decode(s: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda f: _linear(f, s["decoder.weight"]) + s["b_dec"].float()


def _param_decode(s: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """Classes holding W_dec [F, d] as a plain parameter."""
    return lambda f: f @ s["W_dec"].to(f.dtype) + s["b_dec"]


def _post_relu(s: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(_linear(x - s["b_dec"].float(), s["encoder.weight"], s["encoder.bias"]))


def topk(dtype: torch.dtype = torch.float32) -> LayoutCase:
    """Inference ignores the tracked threshold (use_threshold=False): top-k of ReLU."""
    s = _topk_state(14, 0.3, dtype)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return _dense_topk(_post_relu(s, x), 6)

    suffix = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    return _case(
        f"AutoEncoderTopK{suffix}",
        "AutoEncoderTopK",
        "TopKTrainer",
        s,
        _ref(encode, _linear_decode(s)),
        _checker("topk", True, k=6, dtype="float32"),
        k=6,
    )


def batch_topk(threshold: float) -> LayoutCase:
    """Inference uses the scalar threshold on post-ReLU values (use_threshold=True)."""
    s = _topk_state(15, threshold)

    def encode(x: torch.Tensor) -> torch.Tensor:
        z = _post_relu(s, x)
        return z * (z > s["threshold"])

    name = "BatchTopKSAE" if threshold >= 0 else "BatchTopKSAE-negative-threshold"
    return _case(
        name,
        "BatchTopKSAE",
        "BatchTopKTrainer",
        s,
        _ref(encode, _linear_decode(s)),
        _checker("jumprelu", True),
        k=6,
    )


GROUP_SIZES = [8, 12, 20]


def matryoshka() -> LayoutCase:
    gen = torch.Generator().manual_seed(16)
    s = {
        "k": torch.tensor(6, dtype=torch.int),
        "threshold": torch.tensor(0.15),
        "group_sizes": torch.tensor(GROUP_SIZES),
        "W_enc": _randn(gen, D_IN, D_SAE),
        "b_enc": _randn(gen, D_SAE, scale=0.1),
        "W_dec": _randn(gen, D_SAE, D_IN),
        "b_dec": _randn(gen, D_IN),
    }

    def encode(x: torch.Tensor) -> torch.Tensor:
        z = torch.relu((x - s["b_dec"]) @ s["W_enc"].to(x.dtype) + s["b_enc"])
        return z * (z > s["threshold"])  # every group active at inference

    return _case(
        "MatryoshkaBatchTopKSAE",
        "MatryoshkaBatchTopKSAE",
        "MatryoshkaBatchTopKTrainer",
        s,
        _ref(encode, _param_decode(s)),
        _checker("jumprelu", True, nested_widths=(8, 20, 40)),
        k=6,
        group_fractions=[0.2, 0.3, 0.5],
        group_sizes=GROUP_SIZES,
    )


CASES: list[LayoutCase] = [
    autoencoder(),
    autoencoder(unit_decoder=True),
    autoencoder_new(),
    gated(),
    jumprelu(),
    topk(),
    topk(torch.bfloat16),
    batch_topk(0.2),
    batch_topk(-1.0),
    matryoshka(),
]
