"""dictionary_learning's crosscoders (the science-of-finetuning fork), in its two saved
layouts, written here byte for byte as the publisher's code saves them:

* the trainer's (training.py ``save_model`` + ``config.json``): ``{dir}/config.json``
  ``{"trainer": {"dict_class": ..., ...}, "buffer": {...}}`` beside ``model_final.pt``,
  ``torch.save(model.state_dict())``;
* the hub mixin's (``save_pretrained``/``push_to_hub``): ``config.json`` holding the
  constructor's arguments beside ``model.safetensors`` (and, as science-of-finetuning's
  ``push_dictionary_model`` uploads them, the trainer's config as ``trainer_config.json``).

State dicts as the classes register them: ``encoder.weight [L, d, F]``, ``encoder.bias
[F]``, ``decoder.weight [L, F, d]``, ``decoder.bias [L, d]``, the NormalizableMixin
buffers (``target_rms``, ``activation_mean``/``activation_std`` [L, d] — NaN when there
is no normaliser — ``activation_global_scale [L]``), ``code_normalization_id`` and,
for BatchTopKCrossCoder, ``k`` and ``threshold``.

The reference is independent math written from the publisher's code
(dictionary_learning/dictionary.py at 173f7facbe80f16c837e7b5e4dca78a50c000115; the
package is not installable beside the test extra: nnsight), in the publisher's own
batch layout [batch, L, d]: ``CrossCoder.encode`` = relu(Σ_l x_l W_l + b) after
``normalize_activations`` ((x - mean) · global_scale), ``BatchTopKCrossCoder.encode``
(use_threshold=True) keeps f where f · get_code_normalization() > threshold, ``decode``
= einsum(f, W_dec) + bias, then ``denormalize_activations`` (/ (scale + 1e-8) + mean).
"""

from __future__ import annotations

import torch

from ._case import LayoutCase, Reference
from ._util import json_bytes, pt_bytes, rand, st_save

D_IN, D_SAE = 8, 24
HOOK = "blocks.3.hook_resid_post"
#: CodeNormalization (enum.auto()): CROSSCODER 1, SAE 2, MIXED 3, NONE 4, DECOUPLED 5.
CROSSCODER, SAE, MIXED, NONE = 1, 2, 3, 4


def _state(n: int, *, normalizer: bool, code: int, threshold: float | None) -> dict:
    state = {
        "encoder.weight": rand(n, D_IN, D_SAE),
        "encoder.bias": rand(D_SAE, scale=0.1),
        "decoder.weight": rand(n, D_SAE, D_IN),
        "decoder.bias": rand(n, D_IN, scale=0.1),
        "target_rms": torch.tensor(1.0),
        "code_normalization_id": torch.tensor(code),
    }
    if normalizer:
        std = rand(n, D_IN).abs() + 0.5
        state["activation_mean"] = rand(n, D_IN)
        state["activation_std"] = std
        state["activation_global_scale"] = 1.0 / torch.sqrt((std**2).sum(dim=-1) + 1e-8)
    else:  # NormalizableMixin without mean/std: NaN buffers, a global scale of ones
        state["activation_mean"] = torch.full((n, D_IN), torch.nan)
        state["activation_std"] = torch.full((n, D_IN), torch.nan)
        state["activation_global_scale"] = torch.ones(n)
    if threshold is not None:
        state["k"] = torch.tensor(4, dtype=torch.int)
        state["threshold"] = torch.tensor(threshold, dtype=torch.float32)
    return state


def _code_norm(w_dec: torch.Tensor, code: int, alphas: tuple[float, float]) -> torch.Tensor:
    """CrossCoder.get_code_normalization on decoder.weight [L, F, d] → [F]."""
    if code == SAE:
        return w_dec.norm(dim=(0, 2))
    if code == CROSSCODER:
        return w_dec.norm(dim=2).sum(dim=0)
    if code == MIXED:
        return w_dec.norm(dim=(0, 2)) * alphas[0] + w_dec.norm(dim=2).sum(dim=0) * alphas[1]
    return torch.ones(w_dec.shape[1], dtype=w_dec.dtype)


def _reference(state: dict, code: int, alphas: tuple[float, float] = (1.0, 0.1)):
    s = {k: v.double() for k, v in state.items()}
    n = s["encoder.weight"].shape[0]
    has_norm = not (s["activation_mean"].isnan().any() or s["activation_std"].isnan().any())
    # the code normalization in the checkpoint's float32, as the publisher's module has it
    code_norm = _code_norm(state["decoder.weight"], code, alphas).double()

    def ref(x: torch.Tensor) -> Reference:
        lead = x.shape[1:-1]
        xb = x.double().movedim(0, -2).reshape(-1, n, D_IN)  # their [batch, L, d]
        if has_norm:
            xb = (xb - s["activation_mean"]) * s["activation_global_scale"][None, :, None]
        pre = torch.einsum("bld,ldf->blf", xb, s["encoder.weight"]).sum(1) + s["encoder.bias"]
        f = torch.relu(pre)
        if "threshold" in s:
            f = f * (f * code_norm > s["threshold"])
        y = torch.einsum("bf,lfd->bld", f, s["decoder.weight"]) + s["decoder.bias"]
        if has_norm:
            y = y / (s["activation_global_scale"][None, :, None] + 1e-8) + s["activation_mean"]
        y = y.reshape(*lead, n, D_IN).movedim(-2, 0)
        f = f.reshape(*lead, D_SAE)
        return Reference(encode=f, decode=y, forward=y)

    return ref


def _checker(n: int, arch: str, code: int, state: dict, alphas=(1.0, 0.1)):
    def check(cc) -> None:
        assert cc.cfg.kind == "crosscoder" and cc.n_sites == n
        assert cc.cfg.architecture == arch
        want = _code_norm(state["decoder.weight"], code, alphas).double()
        torch.testing.assert_close(cc.code_norm, want, atol=0, rtol=0)
        assert (cc.activation_mean is None) == state["activation_mean"].isnan().any()

    return check


TRAINER_STATE = _state(2, normalizer=True, code=CROSSCODER, threshold=0.6)
TRAINER_CFG = {
    "trainer": {
        "trainer_class": "BatchTopKCrossCoderTrainer",
        "dict_class": "BatchTopKCrossCoder",
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "k": 4,
        "code_normalization": "CROSSCODER",
        "code_normalization_alpha_sae": 1.0,
        "code_normalization_alpha_cc": 0.1,
        "layer": 3,
        "lm_name": "test-model-test-model-it",
        "dict_class_kwargs": {},
        "target_rms": 1.0,
    },
    "buffer": {"ctx_len": 1024},
}
HUB_STATE = _state(3, normalizer=False, code=SAE, threshold=None)
HUB_CFG = {"activation_dim": D_IN, "dict_size": D_SAE, "num_layers": 3, "code_normalization": "SAE"}
MIXED_ALPHAS = (0.5, 0.25)
MIXED_STATE = _state(2, normalizer=True, code=MIXED, threshold=0.3)
MIXED_CFG = {
    "activation_dim": D_IN,
    "dict_size": D_SAE,
    "num_layers": 2,
    "k": 4,
    "code_normalization": "MIXED",
    "code_normalization_alpha_sae": MIXED_ALPHAS[0],
    "code_normalization_alpha_cc": MIXED_ALPHAS[1],
}

MIXED_TRAINER_CFG = {
    "trainer": {
        "dict_class": "BatchTopKCrossCoder",
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "k": 4,
        "code_normalization": "MIXED",
    }
}


def _sae(path: str, n: int, **more) -> dict:
    return {
        "id": path,
        "path": path,
        "kind": "crosscoder",
        "n_layers": n,
        "d_sae": D_SAE,
        "context_size": None,
        "normalize_activations": "none",
        **more,
    }


CASES = [
    LayoutCase(
        format="dictionary_learning_crosscoder",
        name="batchtopk-trainer",
        files={
            "l3-k4/config.json": json_bytes(TRAINER_CFG),
            "l3-k4/model_final.pt": pt_bytes(TRAINER_STATE),
        },
        sae=_sae("l3-k4", 2, hook_name=HOOK, hook_layer=3),
        input_shape=(2, 5, D_IN),
        reference=_reference(TRAINER_STATE, CROSSCODER),
        check=_checker(2, "jumprelu", CROSSCODER, TRAINER_STATE),
    ),
    LayoutCase(
        format="dictionary_learning_crosscoder",
        name="crosscoder-hub",
        files={
            "sites3/config.json": json_bytes(HUB_CFG),
            "sites3/model.safetensors": st_save(HUB_STATE),
        },
        sae=_sae("sites3", 3),
        input_shape=(3, 2, 5, D_IN),
        reference=_reference(HUB_STATE, SAE),
        check=_checker(3, "relu", SAE, HUB_STATE),
    ),
    LayoutCase(
        format="dictionary_learning_crosscoder",
        name="batchtopk-mixed-hub",
        files={
            "mixed/config.json": json_bytes(MIXED_CFG),
            "mixed/model.safetensors": st_save(MIXED_STATE),
            # science-of-finetuning's push_dictionary_model uploads the trainer's config
            "mixed/trainer_config.json": json_bytes(MIXED_TRAINER_CFG),
        },
        sae=_sae("mixed", 2, hook_name=HOOK, hook_layer=3),
        input_shape=(2, 7, D_IN),
        reference=_reference(MIXED_STATE, MIXED, MIXED_ALPHAS),
        check=_checker(2, "jumprelu", MIXED, MIXED_STATE, MIXED_ALPHAS),
    ),
]
