"""dictionary_learning's dictionary classes → canonical tensors, with the publisher's math.

The reference is the publisher's package, ``dictionary-learning`` 0.1.0 (``dictionary.py``,
``trainers/*.py``), loading as its ``utils.load_dictionary`` does: the class comes from
``config.json``'s ``trainer.dict_class``, the module is built in float32 and
``load_state_dict`` (strict) copies ``ae.pt`` into it. Per class (x' = x - b_dec where
the class subtracts it; nn.Linear weights are stored [out, in]):

* ``AutoEncoder`` (standard and p-anneal trainers): f = ReLU(W_e x' + b_e), x̂ = W_d f + bias.
  ``from_pretrained`` (normalize_decoder=True by default) rescales decoder columns to unit
  norm and folds the norms into the encoder rows and bias unless they are already unit;
  we fold the same way, so latents equal the publisher's loader's.
* ``AutoEncoderNew``: f = ReLU(W_e x + b_e), x̂ = W_d f + b_d (no b_dec subtracted).
* ``GatedAutoEncoder``: e = W_e x'; f = 1[e + gate_bias > 0] · ReLU(exp(r_mag)·e + mag_bias).
* ``JumpReluAutoEncoder``: f = ReLU(pre · 1[pre > θ]) with pre = x W_enc + b_enc; it does
  *not* subtract b_dec (``apply_b_dec_to_input`` is a plain attribute, False, not saved).
* ``AutoEncoderTopK``: top-k of ReLU(W_e x' + b_e) (inference ignores its threshold).
* ``BatchTopKSAE``, ``MatryoshkaBatchTopKSAE``: inference (``use_threshold=True``) is
  z = ReLU(W_e x' + b_e); f = z · 1[z > t] with one learned scalar t (batch top-k is
  training only).

Canonical jumprelu computes h · 1[h > θ] without a ReLU. The two agree for θ ≥ 0 and,
for θ < 0, the publisher's ReLU makes it h · 1[h > 0]; so the canonical threshold is
max(θ, 0), exact in both cases. (SAELens' dictionary_learning_1 loader copies θ as is,
which differs for negative thresholds, e.g. BatchTopK saved before its threshold was
tracked, t = -1: there the publisher's code wins.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.formats import CanonicalFileError, LazyArray

from ._pickles import lazy_state_dict
from ._tensors import as_float32, mapped, relu_jump_threshold, transposed

CONFIG = "config.json"
WEIGHTS = "ae.pt"
#: dictionary_learning's crosscoder classes: multi-layer dictionaries, which the
#: dictionary_learning_crosscoder format reads (plugins/crosscoders.py), never this one.
CROSSCODER_CLASSES = ("CrossCoder", "BatchTopKCrossCoder")
CROSSCODER_FORMAT = "dictionary_learning_crosscoder"
#: The trainer's submodule names in the sweeps: the output of layer L (its residual stream).
_SUBMODULE = re.compile(r"^resid_post_layer_(\d+)$")


@dataclass(frozen=True)
class DictClass:
    """How one dictionary class names its tensors, and its canonical architecture."""

    architecture: str
    apply_b_dec_to_input: bool
    W_enc: str  # "encoder.weight" (nn.Linear, [F, d]) or "W_enc" ([d, F])
    W_dec: str  # "decoder.weight" (nn.Linear, [d, F]) or "W_dec" ([F, d])
    b_dec: str
    b_enc: str | None = None
    per_latent: Mapping[str, str] = field(default_factory=dict)  # canonical ← publisher, [F]
    scalars: tuple[str, ...] = ()  # buffers: k, threshold, group_sizes

    def state_keys(self) -> list[str]:
        named = [self.W_enc, self.W_dec, self.b_dec, *self.per_latent.values(), *self.scalars]
        return named + ([self.b_enc] if self.b_enc else [])


_TOPK_BUFFERS = ("k", "threshold")
CLASSES: dict[str, DictClass] = {
    "AutoEncoder": DictClass(
        "relu", True, "encoder.weight", "decoder.weight", "bias", b_enc="encoder.bias"
    ),
    "AutoEncoderNew": DictClass(  # April-update layout: a decoder bias, no input centring
        "relu", False, "encoder.weight", "decoder.weight", "decoder.bias", "encoder.bias"
    ),
    "GatedAutoEncoder": DictClass(
        "gated",
        True,
        "encoder.weight",
        "decoder.weight",
        "decoder_bias",
        per_latent={"r_mag": "r_mag", "b_gate": "gate_bias", "b_mag": "mag_bias"},
    ),
    "JumpReluAutoEncoder": DictClass(
        "jumprelu", False, "W_enc", "W_dec", "b_dec", "b_enc", {"threshold": "threshold"}
    ),
    "AutoEncoderTopK": DictClass(
        "topk", True, "encoder.weight", "decoder.weight", "b_dec", "encoder.bias",
        scalars=_TOPK_BUFFERS,
    ),
    "BatchTopKSAE": DictClass(
        "jumprelu", True, "encoder.weight", "decoder.weight", "b_dec", "encoder.bias",
        scalars=_TOPK_BUFFERS,
    ),
    "MatryoshkaBatchTopKSAE": DictClass(
        "jumprelu", True, "W_enc", "W_dec", "b_dec", "b_enc",
        scalars=(*_TOPK_BUFFERS, "group_sizes"),
    ),
}  # fmt: skip


def _trainer(raw: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    trainer = raw.get("trainer")
    if not isinstance(trainer, Mapping):
        raise CanonicalFileError(
            f"{where}: no 'trainer' object (dictionary_learning writes "
            '{"trainer": {"dict_class": ..., ...}, "buffer": {...}})'
        )
    return trainer


def crosscoder_hint(name: str, folder: str) -> str:
    """What a dictionary_learning crosscoder saved as ae.pt is, and how to load it."""
    where = f"{folder}/" if folder else ""
    return (
        f"trainer.dict_class {name!r} is a dictionary_learning crosscoder (a multi-layer "
        "dictionary: one set of latents over several layers or models), not a single SAE, "
        "so format 'dictionary_learning' cannot read it. saereg reads crosscoders with "
        f"format {CROSSCODER_FORMAT!r}, from config.json beside model_final.pt (the "
        "trainer's torch.save of the state dict) or model.safetensors (the hub mixin's "
        f"save_pretrained): rename {where}{WEIGHTS} to {where}model_final.pt, then load the "
        "folder with saereg.load_dictionary(PATH) (or saereg.load_sae(PATH), which returns "
        "the CrossCoder)"
    )


def dict_class(raw: Mapping[str, Any], where: str) -> tuple[str, DictClass]:
    """The class named by config.json, or a clear error (never a guess)."""
    name = _trainer(raw, where).get("dict_class")
    if name in CROSSCODER_CLASSES:
        folder = where.rpartition("/")[0]
        raise CanonicalFileError(f"{where}: {crosscoder_hint(str(name), folder)}")
    if name not in CLASSES:
        raise CanonicalFileError(
            f"{where}: trainer.dict_class {name!r} is not a dictionary_learning class saereg "
            f"can convert (supported: {', '.join(sorted(CLASSES))})"
        )
    return str(name), CLASSES[str(name)]


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if hasattr(value, "numel"):
        return int(value.item()) if value.numel() == 1 else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _base_config(
    cls: DictClass, d_in: int, d_sae: int, k: int | None, widths: list[int] | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architecture": cls.architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_in,
        "apply_b_dec_to_input": cls.apply_b_dec_to_input,
        "normalization": {"kind": "none"},  # a training norm_factor is folded at save
        "reshape": "none",
        # The publisher's classes are float32 modules; load_state_dict casts into them.
        "dtype": "float32",
    }
    if cls.architecture == "topk":
        config["k"] = k
    if widths is not None:
        config["nested_widths"] = widths
    return config


def _nested(group_sizes: Any, d_sae: int, where: str) -> list[int]:
    """Matryoshka prefix widths: the cumulative group sizes."""
    if hasattr(group_sizes, "tolist"):
        group_sizes = group_sizes.tolist()
    sizes = [int(s) for s in group_sizes] if isinstance(group_sizes, list) else []
    if not sizes or any(s <= 0 for s in sizes) or sum(sizes) != d_sae:
        raise CanonicalFileError(
            f"{where}: group_sizes {sizes} must be positive and sum to dict_size {d_sae}"
        )
    widths, total = [], 0
    for size in sizes:
        total += size
        widths.append(total)
    return widths


def stated_hook(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The hook config.json names: ``submodule_name`` ``resid_post_layer_L`` (the sweeps'
    name for layer L's output, as SAELens' dictionary_learning loader reads it:
    blocks.L.hook_resid_post), when ``trainer.layer`` does not say another layer; else
    nothing (other submodules are not guessed)."""
    trainer = raw.get("trainer")
    if not isinstance(trainer, Mapping):
        return {}
    match = _SUBMODULE.match(str(trainer.get("submodule_name") or ""))
    if match is None:
        return {}
    layer = int(match.group(1))
    if _int(trainer.get("layer")) not in (None, layer):
        return {}
    return {"hook_name": f"blocks.{layer}.hook_resid_post", "hook_layer": layer}


def canonical_config(raw: Mapping[str, Any], folder: str) -> dict[str, Any] | None:
    """The canonical config from config.json alone (None if it lacks the widths)."""
    where = f"{folder}/{CONFIG}"
    name, cls = dict_class(raw, where)
    trainer = _trainer(raw, where)
    d_in, d_sae = _int(trainer.get("activation_dim")), _int(trainer.get("dict_size"))
    k = _int(trainer.get("k"))
    if d_in is None or d_sae is None or (cls.architecture == "topk" and k is None):
        return None
    widths = None
    if name == "MatryoshkaBatchTopKSAE":
        if not isinstance(trainer.get("group_sizes"), list):
            return None
        widths = _nested(trainer["group_sizes"], d_sae, where)
    config = _base_config(cls, d_in, d_sae, k, widths)
    ctx = _int((raw.get("buffer") or {}).get("ctx_len"))
    if ctx is not None:
        config["context_size"] = ctx
    return {**config, **stated_hook(raw)}


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape)


def _check_keys(state: Mapping[str, Any], name: str, cls: DictClass, where: str) -> None:
    # k and the TopK threshold are optional (k may come from config.json); BatchTopK and
    # Matryoshka infer with their threshold; Matryoshka's widths come from group_sizes.
    required = [key for key in cls.state_keys() if key not in ("k", "threshold")]
    if cls.architecture == "jumprelu" and "threshold" not in required:
        required.append("threshold")
    missing = [key for key in required if key not in state]
    unexpected = sorted(set(state) - set(cls.state_keys()))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"lacks {', '.join(missing)}")
        if unexpected:
            problems.append(f"has unexpected {', '.join(unexpected)}")
        raise CanonicalFileError(
            f"{where}: {' and '.join(problems)}; a {name} state dict holds exactly "
            f"{', '.join(sorted(cls.state_keys()))}"
        )


def _check_shapes(
    state: Mapping[str, Any], name: str, cls: DictClass, d_in: int, d_sae: int, where: str
) -> None:
    expected: dict[str, tuple[int, ...]] = {
        cls.W_enc: (d_sae, d_in) if cls.W_enc == "encoder.weight" else (d_in, d_sae),
        cls.W_dec: (d_in, d_sae) if cls.W_dec == "decoder.weight" else (d_sae, d_in),
        cls.b_dec: (d_in,),
        **{key: (d_sae,) for key in cls.per_latent.values()},
    }
    if cls.b_enc:
        expected[cls.b_enc] = (d_sae,)
    wrong = [
        f"{key} has shape {list(_shape(state[key]))}, expected {list(shape)}"
        for key, shape in expected.items()
        if _shape(state[key]) != shape
    ]
    for key in ("k", "threshold"):
        if key in cls.scalars and key in state and _shape(state[key]) not in ((), (1,)):
            wrong.append(f"{key} has shape {list(_shape(state[key]))}, expected a scalar")
    if wrong:
        raise CanonicalFileError(
            f"{where}: {'; '.join(wrong)} ({name} with activation_dim={d_in}, dict_size={d_sae})"
        )


def _widths(state: Mapping[str, Any], trainer: Mapping[str, Any], where: str) -> tuple[int, int]:
    """(d_in, d_sae) from the encoder, checked against config.json's widths."""
    if "encoder.weight" in state:
        d_sae, d_in = _shape(state["encoder.weight"])
    elif "W_enc" in state and len(_shape(state["W_enc"])) == 2:
        d_in, d_sae = _shape(state["W_enc"])
    else:
        raise CanonicalFileError(f"{where}: no 2-d encoder.weight or W_enc tensor")
    for key, value in (("activation_dim", d_in), ("dict_size", d_sae)):
        listed = _int(trainer.get(key))
        if listed is not None and listed != value:
            raise CanonicalFileError(
                f"{where}: config.json says {key}={listed} but the weights hold {value}"
            )
    return d_in, d_sae


def _k(state: Mapping[str, Any], trainer: Mapping[str, Any], where: str) -> int:
    listed, saved = _int(trainer.get("k")), _int(state.get("k"))
    if listed is not None and saved is not None and listed != saved:
        # The publisher's from_pretrained raises here too (k != state_dict['k']).
        raise CanonicalFileError(
            f"{where}: config.json says k={listed} but the weights save k={saved}"
        )
    k = listed if listed is not None else saved
    if k is None or k < 1:
        raise CanonicalFileError(f"{where}: no positive k in config.json (trainer.k) or ae.pt")
    return k


def _loaded(value: Any) -> Any:
    return value.load() if isinstance(value, LazyArray) else value


def _canonical(value: Any, stored_linear: bool) -> Any:
    return as_float32(transposed(value) if stored_linear else value)


def _unit_decoder_fold(
    tensors: dict[str, Any], state: Mapping[str, Any], cls: DictClass
) -> list[str]:
    """AutoEncoder.from_pretrained(normalize_decoder=True): unit decoder columns, norms
    folded into the encoder (output unchanged, latents scaled by the norms)."""
    import torch  # deferred: torch

    norms = torch.linalg.vector_norm(_loaded(state[cls.W_dec]).float(), dim=0)
    if torch.allclose(norms, torch.ones_like(norms)):  # the publisher skips it then, too
        return []
    tensors["W_dec"] = mapped(
        state[cls.W_dec],
        lambda t: (t.float() / norms).T.contiguous(),
        (int(norms.shape[0]), int(_shape(state[cls.W_dec])[0])),
        "float32",
    )
    tensors["W_enc"] = mapped(
        state[cls.W_enc],
        lambda t: (t.float() * norms[:, None]).T.contiguous(),
        tuple(reversed(_shape(state[cls.W_enc]))),
        "float32",
    )
    tensors["b_enc"] = _loaded(state[cls.b_enc]).float() * norms
    return ["decoder columns normalized to unit norm (dictionary_learning from_pretrained)"]


def convert_state(
    raw: Mapping[str, Any], weights: Path, folder: str, weights_name: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json + ae.pt (or a checkpoint, `weights_name`, of the same state dict) →
    (canonical config, canonical tensors)."""
    import torch  # deferred: torch

    name, cls = dict_class(raw, f"{folder}/{CONFIG}")
    trainer = _trainer(raw, f"{folder}/{CONFIG}")
    where = weights_name or f"{folder}/{WEIGHTS}"
    try:
        state = lazy_state_dict(weights, unwrap="ae")
    except CanonicalFileError as exc:
        raise CanonicalFileError(f"{where}: {exc}") from None
    _check_keys(state, name, cls, where)
    d_in, d_sae = _widths(state, trainer, where)
    _check_shapes(state, name, cls, d_in, d_sae, where)
    k = _k(state, trainer, where) if cls.architecture == "topk" or "k" in state else None
    widths = None
    if name == "MatryoshkaBatchTopKSAE":
        # At load every group is active (active_groups = len(group_sizes)), so no latent
        # is zeroed; each prefix width is a usable smaller SAE.
        widths = _nested(state["group_sizes"], d_sae, where)
    config = _base_config(cls, d_in, d_sae, k if cls.architecture == "topk" else None, widths)
    ctx = _int((raw.get("buffer") or {}).get("ctx_len"))
    if ctx is not None:
        config["context_size"] = ctx
    config.update(stated_hook(raw))

    tensors: dict[str, Any] = {
        "W_enc": _canonical(state[cls.W_enc], cls.W_enc == "encoder.weight"),
        "W_dec": _canonical(state[cls.W_dec], cls.W_dec == "decoder.weight"),
        "b_dec": as_float32(state[cls.b_dec]),
    }
    if cls.b_enc:
        tensors["b_enc"] = as_float32(state[cls.b_enc])
    for canonical, key in cls.per_latent.items():
        tensors[canonical] = as_float32(state[key])
    if "threshold" in tensors:  # JumpReluAutoEncoder: one θ per latent
        tensors["threshold"] = relu_jump_threshold(tensors["threshold"])
    elif cls.architecture == "jumprelu":  # BatchTopK, Matryoshka: one learned scalar
        t = float(_loaded(state["threshold"]).float().reshape(()).item())
        tensors["threshold"] = torch.full((d_sae,), max(t, 0.0), dtype=torch.float32)
    if name == "AutoEncoder":
        config["folded"] = _unit_decoder_fold(tensors, state, cls)
    return config, tensors
