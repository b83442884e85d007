"""Transcoders published for circuit-tracer, one safetensors file (or two) per layer.

* ``mwhanna_transcoder``: mwhanna's Qwen3 per-layer transcoders, ``layer_{L}.safetensors``
  (circuit-tracer's layout: ``W_enc [d_sae, d_in]`` as F.linear, ``W_dec [d_sae, d_out]``,
  ``b_enc``, ``b_dec``; optionally ``activation_function.threshold`` (JumpReLU) and
  ``W_skip [d_out, d_in]``). MLP input → MLP output. Math (circuit-tracer's
  SingleLayerTranscoder): f = act(x @ W_encᵀ + b_enc), out = f @ W_dec + b_dec
  (+ x @ W_skipᵀ in forward). act is ReLU, or JumpReLU (strict >) when the file has a
  threshold: SAELens always loads these as ReLU transcoders; circuit-tracer, the
  publisher's code, decides by the threshold's presence, and so do we.

* ``mntss_clt``: one layer L of mntss's cross-layer transcoder (CLT), loaded as a
  single transcoder. Files at the repository root: ``config.yaml``
  (``feature_input_hook``, ``feature_output_hook``), ``W_enc_{L}.safetensors``
  (``W_enc_{L} [d_sae, d_in]``, ``b_enc_{L}``, ``b_dec_{L}``, optionally
  ``threshold_{L}``) and ``W_dec_{L}.safetensors`` (``W_dec_{L} [d_sae, n_layers - L,
  d_out]``: one decoder per target layer L, L+1, …).

  **What is lost.** A CLT latent read at layer L writes to the MLP output of every
  layer from L on, and layer L's MLP output is reconstructed from the latents of all
  layers up to L. One canonical transcoder can hold neither: its W_dec is the sum of
  the per-target decoders, Σ_t W_dec_{L}[:, t], as SAELens does. So encode (the
  feature activations, ReLU or JumpReLU as circuit-tracer computes them) is exact;
  decode(f) = f @ Σ_t W_dec_{L}[:, t] + b_dec_{L} is the latents' total direct write to
  the residual stream across layers L…n-1, **not** a reconstruction of layer L's
  hook_mlp_out, and forward is no replacement for the MLP. The per-target decoders and
  the other layers' contributions to layer L are not kept.
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
    hookimpl,
)

from ._tensors import (
    Files,
    Headers,
    header_arrays,
    require,
    safetensors_arrays,
    transposed,
    uniform_dtype,
)

_MWHANNA_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
_CLT_ENC = re.compile(r"^W_enc_(\d+)\.safetensors$")
_MWHANNA_TENSORS = frozenset(
    ("W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold", "W_skip")
)


def transcoder_config(
    where: str,
    tensors: Mapping[str, Any],
    *,
    d_out: int | None = None,
) -> dict[str, Any]:
    """The canonical config of a circuit-tracer transcoder from its (canonical) tensors,
    checking every shape against W_enc's; casts mixed dtypes to float32 in place."""
    d_in, d_sae = tensors["W_enc"].shape
    d_out = d_out or int(tensors["b_dec"].shape[0])
    expected = {"W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,)}
    if "threshold" in tensors:
        expected["threshold"] = (d_sae,)
    if "W_skip" in tensors:
        expected["W_skip"] = (d_out, d_in)
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise CanonicalFileError(
                f"{where}: {name} has shape {list(tensors[name].shape)} in canonical "
                f"orientation, expected {list(shape)} (d_in={d_in}, d_sae={d_sae} from W_enc)"
            )
    return {
        "architecture": "jumprelu" if "threshold" in tensors else "relu",
        "transcoder": True,
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "d_out": int(d_out),
        "apply_b_dec_to_input": False,
        "normalization": {"kind": "none"},
        "reshape": "none",
    }


class MwhannaTranscoderFormat(Format):
    name = "mwhanna_transcoder"
    summary = "mwhanna per-layer transcoders for circuit-tracer (layer_{L}.safetensors)"

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        match = _MWHANNA_FILE.match(entry.path)
        if not match:
            raise ValueError(f"path {entry.path!r} is not a layer_{{L}}.safetensors file")
        layer = int(match.group(1))
        return {
            "hook_name": f"blocks.{layer}.mlp.hook_in",
            "hook_name_out": f"blocks.{layer}.hook_mlp_out",
            "hook_layer": layer,
            "architecture": "transcoder",
            "normalize_activations": "none",
        }

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """``layer_{L}.safetensors`` files; likelier beside circuit-tracer's config.yaml."""
        files = set(listing)
        paths = sorted(p for p in files if _MWHANNA_FILE.match(p.rpartition("/")[2]))
        if not paths:
            return None
        beside = all(f"{p.rpartition('/')[0]}/config.yaml".lstrip("/") in files for p in paths)
        return Match(
            tuple(paths),
            0.8 if beside else 0.5,
            "layer_{L}.safetensors" + (" beside config.yaml" if beside else ""),
        )

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        return [RemoteFile(entry.path, weights=True)]

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._canonical(entry, safetensors_arrays(local_files[entry.path]))

    def config_only(
        self, release: Release, entry: SAEEntry, local_files: Files, tensor_shapes: Headers
    ) -> dict[str, Any] | None:
        return self._canonical(entry, header_arrays(tensor_shapes[entry.path]))[0]

    def _canonical(
        self, entry: SAEEntry, arrays: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        require(arrays, ("W_enc", "W_dec", "b_enc", "b_dec"), entry.path)
        # circuit-tracer loads these files with a strict load_state_dict: anything else
        # (e.g. log_thresholds) means math it would refuse too.
        unknown = sorted(set(arrays) - _MWHANNA_TENSORS)
        if unknown:
            raise CanonicalFileError(
                f"{entry.path} holds tensor(s) {', '.join(unknown)} that a circuit-tracer "
                f"transcoder does not have (expected: {', '.join(sorted(_MWHANNA_TENSORS))})"
            )
        _check_2d(arrays["W_enc"], "W_enc", entry.path)
        tensors: dict[str, Any] = {
            "W_enc": transposed(arrays["W_enc"]),  # stored [d_sae, d_in] (F.linear)
            "W_dec": arrays["W_dec"],
            "b_enc": arrays["b_enc"],
            "b_dec": arrays["b_dec"],
        }
        if "activation_function.threshold" in arrays:
            tensors["threshold"] = arrays["activation_function.threshold"]
        if "W_skip" in arrays:
            tensors["W_skip"] = arrays["W_skip"]  # [d_out, d_in]: out = x @ W_skipᵀ
        config = transcoder_config(entry.path, tensors)
        return config, uniform_dtype(config, tensors)


def _check_2d(value: Any, name: str, where: str) -> None:
    if len(value.shape) != 2:
        raise CanonicalFileError(
            f"{where}: {name} has shape {list(value.shape)}; expected [d_sae, d_in]"
        )


class MntssCLTFormat(Format):
    name = "mntss_clt"
    summary = (
        "mntss cross-layer transcoder, one layer as a transcoder: encode exact; decode "
        "sums the decoders over target layers (not layer L's MLP output)"
    )

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        if not entry.path.isdigit():
            raise ValueError(f"path {entry.path!r} should be the layer number")
        layer = int(entry.path)
        return {"hook_layer": layer, "architecture": "transcoder", "normalize_activations": "none"}

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        layer = self._layer(entry)
        return [
            RemoteFile("config.yaml"),
            RemoteFile(f"W_enc_{layer}.safetensors", weights=True),
            RemoteFile(f"W_dec_{layer}.safetensors", weights=True),
        ]

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """config.yaml with ``W_enc_{L}`` and ``W_dec_{L}.safetensors`` at the top of the
        listing: one SAE (a layer, its path the layer number) per pair."""
        files = set(listing)
        if "config.yaml" not in files:
            return None
        layers = sorted(
            int(m.group(1))
            for p in files
            if (m := _CLT_ENC.match(p)) and f"W_dec_{m.group(1)}.safetensors" in files
        )
        if not layers:
            return None
        return Match(
            tuple(str(n) for n in layers),
            1.0,
            "config.yaml + W_enc_{L}.safetensors + W_dec_{L}.safetensors (one SAE per layer L)",
        )

    @staticmethod
    def _layer(entry: SAEEntry) -> int:
        if not entry.path.isdigit():
            raise CanonicalFileError(f"mntss_clt path {entry.path!r} should be the layer number")
        return int(entry.path)

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        layer = self._layer(entry)
        enc_file, dec_file = f"W_enc_{layer}.safetensors", f"W_dec_{layer}.safetensors"
        enc = safetensors_arrays(local_files[enc_file])
        dec = safetensors_arrays(local_files[dec_file])
        return self._canonical(entry, local_files, enc, dec)

    def config_only(
        self, release: Release, entry: SAEEntry, local_files: Files, tensor_shapes: Headers
    ) -> dict[str, Any] | None:
        layer = self._layer(entry)
        enc = header_arrays(tensor_shapes[f"W_enc_{layer}.safetensors"])
        dec = header_arrays(tensor_shapes[f"W_dec_{layer}.safetensors"])
        return self._canonical(entry, local_files, enc, dec)[0]

    def _canonical(
        self,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        enc: Mapping[str, Any],
        dec: Mapping[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        import yaml  # deferred: yaml

        layer = self._layer(entry)
        try:
            raw = yaml.safe_load(local_files["config.yaml"].read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CanonicalFileError(f"config.yaml is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise CanonicalFileError("config.yaml must be a mapping")
        enc_file, dec_file = f"W_enc_{layer}.safetensors", f"W_dec_{layer}.safetensors"
        require(enc, (f"W_enc_{layer}", f"b_enc_{layer}", f"b_dec_{layer}"), enc_file)
        require(dec, (f"W_dec_{layer}",), dec_file)
        _check_2d(enc[f"W_enc_{layer}"], f"W_enc_{layer}", enc_file)
        w_dec = dec[f"W_dec_{layer}"]
        if len(w_dec.shape) != 3:
            raise CanonicalFileError(
                f"{dec_file}: W_dec_{layer} has shape {list(w_dec.shape)}; expected "
                "[d_sae, n_target_layers, d_out] (one decoder per target layer)"
            )
        dec_path = local_files.get(dec_file, Path(dec_file))  # absent for config_only
        tensors: dict[str, Any] = {
            "W_enc": transposed(enc[f"W_enc_{layer}"]),
            "W_dec": summed_over_targets(dec_path, f"W_dec_{layer}", w_dec),
            "b_enc": enc[f"b_enc_{layer}"],
            "b_dec": enc[f"b_dec_{layer}"],
        }
        if f"threshold_{layer}" in enc:
            tensors["threshold"] = enc[f"threshold_{layer}"]
        config = transcoder_config(f"{enc_file} + {dec_file}", tensors)
        out_hook = raw.get("feature_output_hook") or "hook_mlp_out"
        in_hook = raw.get("feature_input_hook")
        config.update(
            hook_name=entry.hook_name or (f"blocks.{layer}.{in_hook}" if in_hook else None),
            hook_name_out=entry.hook_name_out or f"blocks.{layer}.{out_hook}",
            folded=[f"W_dec = sum over the {w_dec.shape[1]} target layers of W_dec_{layer}"],
        )
        return config, uniform_dtype(config, tensors)


def summed_over_targets(path: Path, name: str, value: LazyArray, rows: int = 512) -> LazyArray:
    """W_dec [d_sae, n_targets, d_out] summed over its targets, read a block of latents
    at a time: the full per-target decoder (n_targets times the result) is never in
    memory. Sums are taken in float32 (as SAELens, which casts first) and stored in the
    file's dtype."""
    d_sae, _, d_out = value.shape

    def load() -> Any:
        import torch  # deferred: torch
        from safetensors import safe_open  # deferred: safetensors

        with safe_open(str(path), framework="pt") as fh:
            part = fh.get_slice(name)
            out = torch.empty((d_sae, d_out), dtype=getattr(torch, value.dtype))
            for i in range(0, d_sae, rows):
                out[i : i + rows] = part[i : i + rows].float().sum(dim=1)
        return out

    return LazyArray((d_sae, d_out), value.dtype, load)


@hookimpl
def saereg_formats() -> list[Format]:
    return [MwhannaTranscoderFormat(), MntssCLTFormat()]
