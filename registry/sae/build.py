"""`SAE.from_weights`: a canonical SAE from a user's own tensors, checked and completed.

Wrapping an SAE one trained needs only its tensors and what they mean (architecture,
k, the hook it reads); everything else of the canonical config is filled in here: the
widths from the shapes, zero biases where none are given, the Hugging Face hook point
from the models table when the model is known, and a `source` that says "user".
Every shape is checked against the others, with an error that names the tensor, the
shape it has, the shape it needs, and the likely fix (a transposed matrix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from saereg.base.errors import ArgumentError
from saereg.catalogue.models import get_model
from saereg.catalogue.refs import close_matches
from saereg.sae.arguments import check_device, check_dtype
from saereg.store.sae_config import ConfigError, SAEConfig

ARCHITECTURES = ("relu", "jumprelu", "topk", "gated")
NORMALIZATIONS = ("none", "scale", "constant_norm_rescale", "layer_norm")


def config_and_tensors(
    tensors: Mapping[str, Any], options: Mapping[str, Any]
) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """The canonical config and tensors for `SAE.from_weights(**tensors, **options)`."""
    arch = options["architecture"]
    if arch not in ARCHITECTURES:
        raise ArgumentError(_unknown("architecture", arch, ARCHITECTURES))
    dtype, device = check_dtype(options.get("dtype")), options.get("device")
    given = {n: _tensor(n, t) for n, t in tensors.items() if t is not None}
    W_enc, W_dec = given["W_enc"], given["W_dec"]
    if dtype is None:
        dtype = W_enc.dtype if W_enc.is_floating_point() else torch.float32
    dev = check_device(device) if device is not None else W_enc.device
    _matrix("W_enc", W_enc, "[d_in, d_sae]")
    _matrix("W_dec", W_dec, "[d_sae, d_out]")
    d_in, d_sae = W_enc.shape
    if W_dec.shape[0] != d_sae:
        hint = "; it looks transposed: pass W_dec.T" if W_dec.shape[1] == d_sae else ""
        raise ArgumentError(
            f"W_dec has shape {tuple(W_dec.shape)} but must be [d_sae, d_out] with d_sae="
            f"{d_sae} (the second dimension of W_enc [d_in, d_sae] {tuple(W_enc.shape)}){hint}"
        )
    d_out = int(W_dec.shape[1])
    transcoder = options.get("transcoder")
    if transcoder is None:
        transcoder = d_out != d_in or "W_skip" in given or options.get("hook_name_out") is not None
    k = options.get("k")
    if arch == "topk" and not k:
        raise ArgumentError("architecture='topk' needs k (the number of active latents)")
    if arch != "topk" and k is not None:
        raise ArgumentError(f"k is for architecture='topk', not {arch!r}")
    need = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}
    if arch == "gated":
        need.update(b_gate=(d_sae,), b_mag=(d_sae,), r_mag=(d_sae,))
    else:
        need["b_enc"] = (d_sae,)
    if arch == "jumprelu":
        need["threshold"] = (d_sae,)
    if transcoder and "W_skip" in given:
        need["W_skip"] = (d_out, d_in)
    extra = set(given) - set(need)
    if extra:
        raise ArgumentError(
            f"{', '.join(sorted(extra))} {'is' if len(extra) == 1 else 'are'} not used by a "
            f"{arch} {'transcoder' if transcoder else 'SAE'}; it takes {', '.join(need)}"
        )
    required = {"gated": ("b_gate", "b_mag", "r_mag"), "jumprelu": ("threshold",)}
    for name in required.get(arch, ()):
        if name not in given:
            raise ArgumentError(f"architecture={arch!r} needs {name} [d_sae={d_sae}]")
    out: dict[str, torch.Tensor] = {}
    for name, shape in need.items():
        t = given.get(name)
        if t is None:  # biases default to zero
            t = torch.zeros(shape)
        elif name == "threshold" and t.dim() == 0:
            t = t.expand(shape)
        if tuple(t.shape) != shape:
            raise ArgumentError(
                f"{name} has shape {tuple(t.shape)} but must be {list(shape)} (d_in={d_in}, "
                f"d_sae={d_sae}, d_out={d_out}, from W_enc and W_dec)"
            )
        out[name] = t.detach().to(device=dev, dtype=dtype).contiguous()
    cfg = _config(options, arch, d_in, d_sae, d_out, bool(transcoder), dtype)
    return cfg, out


def _config(
    options: Mapping[str, Any],
    arch: str,
    d_in: int,
    d_sae: int,
    d_out: int,
    transcoder: bool,
    dtype: torch.dtype,
) -> SAEConfig:
    model_name = options.get("model")
    info = get_model(model_name) if model_name else None
    if model_name and info is not None:
        model_name = info.name
    hook_name, hook_out = options.get("hook_name"), options.get("hook_name_out")
    hf, hf_out = _hf(options.get("hf_hook"), "hf_hook"), _hf(options.get("hf_hook_out"), "hf")
    if info is not None:
        found = info.hf_hook(hook_name) if hf is None else None
        hf = found.to_dict() if found else hf
        found = info.hf_hook(hook_out) if hf_out is None and hook_out else None
        hf_out = found.to_dict() if found else hf_out
    data = {
        "architecture": arch,
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_out,
        "k": options.get("k"),
        "topk_relu": bool(options.get("topk_relu", True)),
        "apply_b_dec_to_input": bool(options.get("apply_b_dec_to_input", False)),
        "normalization": _normalization(options.get("normalization")),
        # A hook_z SAE reads TransformerLens' [..., n_heads, d_head] flattened, as the
        # saelens format sets it for hook_z; say reshape="none" to turn that off.
        "reshape": options.get("reshape")
        or ("hook_z" if (hook_name or "").endswith("hook_z") else "none"),
        "dtype": str(dtype).removeprefix("torch."),
        "transcoder": transcoder,
        "hook_name": hook_name,
        "hook_name_out": hook_out,
        "hook_layer": options.get("hook_layer"),
        "model": model_name,
        "model_hub_id": info.hub_id if info is not None else None,
        "hf_hook": hf,
        "hf_hook_out": hf_out,
        "source": {
            "release": "user",
            "sae_id": options.get("name") or hook_name or "sae",
            "format": "user",
            "files": {},
        },
    }
    try:
        return SAEConfig.from_dict(data, "SAE.from_weights")
    except ConfigError as exc:
        raise ArgumentError(str(exc)) from None


def _tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentError(
                f"{name} must be a tensor (torch or numpy), not {type(value).__name__}"
            ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ArgumentError(f"{name} has dtype {t.dtype}; SAE weights are floating point")
    if t.device.type == "meta":
        raise ArgumentError(f"{name} is on the meta device: it holds no values")
    return t


def _matrix(name: str, t: torch.Tensor, shape: str) -> None:
    if t.dim() != 2:
        raise ArgumentError(f"{name} must be a matrix {shape}, got shape {tuple(t.shape)}")


def _normalization(value: Any) -> dict[str, Any]:
    """'none' | 'layer_norm' | 'constant_norm_rescale' | a number (a constant scale
    factor the input is multiplied by) | the canonical dict."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"kind": "scale", "factor": float(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if value == "layer_norm":
        return {"kind": "layer_norm", "eps": 1e-5}
    if value in ("none", "constant_norm_rescale"):
        return {"kind": value}
    if value == "scale":
        raise ArgumentError("normalization='scale' needs its factor: pass normalization=<factor>")
    raise ArgumentError(_unknown("normalization", value, NORMALIZATIONS))


def _hf(value: Any, what: str) -> dict[str, str] | None:
    """An explicit Hugging Face hook: {"module", "side"}, or "path.input" / "path.output"."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        hook = {"module": str(value.get("module", "")), "side": str(value.get("side", ""))}
    else:
        module, _, side = str(value).rpartition(".")
        hook = {"module": module, "side": side}
    if not hook["module"] or hook["side"] not in ("input", "output"):
        raise ArgumentError(
            f"{what} {value!r} must name a module and a side: 'model.layers.8.output', "
            "'model.layers.8.input' or {'module': 'model.layers.8', 'side': 'output'}"
        )
    return hook


def _unknown(what: str, value: Any, options: tuple[str, ...]) -> str:
    near = close_matches(str(value), list(options), n=1)
    tip = f" Did you mean {near[0]!r}?" if near else ""
    return f"unknown {what} {value!r}; use one of {', '.join(options)}.{tip}"
