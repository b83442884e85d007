"""Temporal SAEs (canrager/temporalSAEs, "Priors in Time"): ``{path}/conf.yaml`` +
``{path}/latest_ckpt.safetensors``, paths ``{model}/layer_{L}/temporal``.

The checkpoint holds the dictionary ``D [width, dimin]`` (the decoder), the bias
``b [1, dimin]``, the encoder ``E [dimin, width]`` when weights are untied (else the
encoder is ``Dᵀ``), and ``attn_layers.{i}.{k_ctx,q_target,v_ctx,c_proj}.{weight,bias}``:
causal attention over earlier tokens' codes that predicts each token's codes. conf.yaml
gives ``llm.dimin``, ``sae.exp_factor`` (width = dimin·exp_factor), ``n_heads``,
``n_attn_layers``, ``bottleneck_factor`` (key/query width = width / bottleneck_factor),
``sae_diff_type`` (relu, or topk with ``kval_topk``), ``tied_weights`` and
``scaling_factor`` (inputs are multiplied by it; outputs divided).

The math is the new canonical architecture ``temporal`` (see saereg.sae). Canonically:
W_dec = D, b_dec = b, W_enc = λ·E (or λ·Dᵀ) with the publisher's λ = 1/(4·dimin) folded
in, b_enc = 0, normalization = the constant scale, apply_b_dec_to_input (the publisher
subtracts b before everything and adds it back after decoding). The attention weights
keep the publisher's names and [out, in] orientation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import (
    CanonicalFileError,
    Format,
    LazyArray,
    Match,
    ReadSmall,
    Release,
    RemoteFile,
    SAEEntry,
    folders_holding,
    hookimpl,
    temporal_attention_shapes,
)

from ._tensors import Files, Headers, header_arrays, mapped, safetensors_arrays, uniform_dtype

_PATH = re.compile(r"/layer_(\d+)/temporal$")
CONF = "conf.yaml"
WEIGHTS = "latest_ckpt.safetensors"


class TemporalFormat(Format):
    name = "temporal"
    summary = "Temporal SAEs (conf.yaml + latest_ckpt.safetensors; attention-predicted codes)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _PATH.search(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} does not end in /layer_{{L}}/temporal")
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
            "architecture": "temporal",
            "normalize_activations": "constant_scalar_rescale",
        }

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Folders holding conf.yaml + latest_ckpt.safetensors (the publisher's names)."""
        folders = folders_holding(listing, CONF, WEIGHTS)
        return Match(tuple(folders), 0.9, f"{CONF} + {WEIGHTS}") if folders else None

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        folder = entry.path.rstrip("/")
        return [RemoteFile(f"{folder}/{CONF}"), RemoteFile(f"{folder}/{WEIGHTS}", weights=True)]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = entry.path.rstrip("/")
        arrays = safetensors_arrays(local_files[f"{folder}/{WEIGHTS}"])
        return self._canonical(entry, local_files, arrays)

    def config_only(
        self, release: Release, entry: SAEEntry, local_files: Files, tensor_shapes: Headers
    ) -> dict[str, Any] | None:
        weights = f"{entry.path.rstrip('/')}/{WEIGHTS}"
        return self._canonical(entry, local_files, header_arrays(tensor_shapes[weights]))[0]

    def _canonical(
        self, entry: SAEEntry, local_files: Mapping[str, Path], arrays: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = entry.path.rstrip("/")
        conf = _read_conf(local_files[f"{folder}/{CONF}"], f"{folder}/{CONF}")
        where = f"{folder}/{WEIGHTS}"
        config = _config(conf, f"{folder}/{CONF}", entry.norm_scaling_factor)
        d_in, d_sae = config["d_in"], config["d_sae"]
        expected: dict[str, tuple[int, ...]] = {"D": (d_sae, d_in)}
        if not conf["tied_weights"]:
            expected["E"] = (d_in, d_sae)
        attention = temporal_attention_shapes(d_sae, config["temporal"])
        expected.update(attention)
        problems = [
            f"{name} has shape {list(arrays[name].shape)}, expected {list(shape)}"
            for name, shape in expected.items()
            if name in arrays and tuple(arrays[name].shape) != shape
        ]
        missing = [n for n in (*expected, "b") if n not in arrays]
        if missing:
            problems.insert(0, f"lacks {', '.join(missing)}")
        unknown = sorted(set(arrays) - {*expected, "b"})
        if unknown:  # the publisher's load_state_dict is strict
            problems.append(f"holds unexpected tensor(s) {', '.join(unknown)}")
        b = arrays.get("b")
        if b is not None and tuple(b.shape) not in ((1, d_in), (d_in,)):
            problems.append(f"b has shape {list(b.shape)}, expected [1, {d_in}]")
        if problems:
            raise CanonicalFileError(
                f"{where} does not match {folder}/{CONF} (d_in={d_in}, width={d_sae}, "
                f"{config['temporal']['n_attn_layers']} attention layer(s)): " + "; ".join(problems)
            )
        assert b is not None
        lam = 1.0 / (4 * d_in)
        encoder = arrays["D"] if conf["tied_weights"] else arrays["E"]
        tensors: dict[str, Any] = {
            "W_dec": arrays["D"],
            "b_dec": mapped(b, lambda t: t.reshape(d_in), shape=(d_in,)),
            "W_enc": _encoder(encoder, lam, transpose=bool(conf["tied_weights"])),
            "b_enc": LazyArray((d_sae,), arrays["D"].dtype, lambda: _zeros(d_sae, encoder)),
            **{name: arrays[name] for name in attention},
        }
        tensors = uniform_dtype(config, tensors)
        config["folded"] = [
            f"encoder input scale 1/(4*{d_in}) into W_enc"
            + (" (tied: W_enc = W_dec^T scaled)" if conf["tied_weights"] else "")
        ]
        return config, tensors


def _read_conf(path: Path, where: str) -> dict[str, Any]:
    import yaml  # deferred: yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CanonicalFileError(f"{where} is not valid YAML: {exc}") from None
    llm, sae = (raw or {}).get("llm"), (raw or {}).get("sae")
    if not isinstance(llm, dict) or not isinstance(sae, dict):
        raise CanonicalFileError(f"{where} must have 'llm' and 'sae' sections")
    needed = ("exp_factor", "n_heads", "n_attn_layers", "bottleneck_factor", "sae_diff_type")
    missing = [f"sae.{k}" for k in needed if sae.get(k) is None]
    missing += [] if llm.get("dimin") is not None else ["llm.dimin"]
    if missing:
        raise CanonicalFileError(f"{where} lacks {', '.join(missing)}")
    return {"dimin": int(llm["dimin"]), "tied_weights": bool(sae.get("tied_weights", True)), **sae}


def _config(conf: Mapping[str, Any], where: str, listed: float | None) -> dict[str, Any]:
    """Canonical fields from conf.yaml. The input scale is conf's sae.scaling_factor (what
    the publisher trained with; SAELens reads the same); the release's
    norm_scaling_factor only stands in when conf.yaml lacks it."""
    d_in = conf["dimin"]
    d_sae = int(d_in * conf["exp_factor"])
    kind = conf["sae_diff_type"]
    if kind not in ("relu", "topk"):
        raise CanonicalFileError(
            f"{where}: sae_diff_type {kind!r} is not supported (published temporal SAEs use "
            "relu or topk)"
        )
    n_heads, bottleneck = int(conf["n_heads"]), int(conf["bottleneck_factor"])
    if d_sae % (bottleneck * n_heads):
        raise CanonicalFileError(
            f"{where}: width {d_sae} is not divisible by bottleneck_factor x n_heads "
            f"({bottleneck} x {n_heads})"
        )
    factor = conf.get("scaling_factor", listed)
    if factor is None or float(factor) <= 0:
        raise CanonicalFileError(f"{where}: sae.scaling_factor must be a positive number")
    config: dict[str, Any] = {
        "architecture": "temporal",
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_in,
        "apply_b_dec_to_input": True,
        "normalization": {"kind": "scale", "factor": float(factor)},
        "reshape": "none",
        "temporal": {
            "n_heads": n_heads,
            "n_attn_layers": int(conf["n_attn_layers"]),
            "d_attn": d_sae // bottleneck,
        },
    }
    if kind == "topk":
        if not isinstance(conf.get("kval_topk"), int):
            raise CanonicalFileError(f"{where}: sae_diff_type topk without an integer kval_topk")
        config["k"] = conf["kval_topk"]
    return config


def _encoder(value: LazyArray, lam: float, *, transpose: bool) -> LazyArray:
    """λ·E, or λ·Dᵀ for tied weights, written into one fresh tensor."""
    shape = tuple(reversed(value.shape)) if transpose else tuple(value.shape)

    def load() -> Any:
        import torch  # deferred: torch

        src = value.load()
        src = src.T if transpose else src
        return torch.mul(src, lam, out=torch.empty(shape, dtype=src.dtype))

    return LazyArray(shape, value.dtype, load)


def _zeros(n: int, like: LazyArray) -> Any:
    import torch  # deferred: torch

    return torch.zeros(n, dtype=getattr(torch, like.dtype))


@hookimpl
def saereg_formats() -> list[Format]:
    return [TemporalFormat()]
