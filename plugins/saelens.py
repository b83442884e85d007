"""SAELens-native releases: ``{path}/cfg.json`` + ``{path}/sae_weights.safetensors``.

Serves jbloom's releases and every release saved by SAELens itself, including the
re-saved OpenAI v5 GPT-2 SAEs (folders ``v5_32k_layer_8`` or ``v5_32k_layer_8.pt``).
Most metadata of these releases lives in each cfg.json; offline we derive only what the
naming conventions guarantee.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saereg.formats import FLOAT_DTYPES, CanonicalFileError, Format, Release, SAEEntry, hookimpl

from ._common import TL_HOOK, FolderFormat, tl_hook_fields
from ._tensors import mapped, read_json, relu_jump_threshold, safetensors_arrays, uniform_dtype

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
_ARCH = {
    "standard": "relu",
    "relu": "relu",
    "jumprelu": "jumprelu",
    "topk": "topk",
    "gated": "gated",
}
#: SAELens' transcoders (sae_lens.saes.transcoder): encode reads the input hook, decode
#: writes the output hook ([d_sae, d_out] decoder), never with b_dec subtracted from the
#: input; the skip variants add x @ W_skipᵀ (W_skip [d_out, d_in]) in forward.
#: Name → (canonical architecture, has W_skip).
_TRANSCODERS = {
    "transcoder": ("relu", False),
    "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", False),
    "jumprelu_skip_transcoder": ("jumprelu", True),
}
#: SAELens architectures the canonical module cannot express, and why.
_NOT_CANONICAL = {
    "abstopk": "AbsTopK keeps the k latents of largest magnitude with their sign (no ReLU); "
    "the canonical TopK keeps the k largest values",
    "matching_pursuit": "matching pursuit encodes iteratively (each chosen atom is subtracted "
    "before the next is chosen), which no encoder matrix expresses",
    "temporal": "SAELens' temporal SAE port stores its attention under its own names; the "
    "publisher's layout (conf.yaml + latest_ckpt.safetensors) loads with format='temporal'",
    "batchtopk": "a BatchTopK *training* checkpoint: SAELens saves the inference SAE as "
    "'jumprelu' (TrainingSAE.save_inference_model), which loads here",
    "matryoshka_batchtopk": "a Matryoshka BatchTopK *training* checkpoint: SAELens saves the "
    "inference SAE as 'jumprelu' (TrainingSAE.save_inference_model), which loads here",
}
_NORMALIZATION = {
    "none": {"kind": "none"},
    "layer_norm": {"kind": "layer_norm", "eps": 1e-5},
    "constant_norm_rescale": {"kind": "constant_norm_rescale"},
}

# jbloom's re-saves of OpenAI's GPT-2 small v5 SAEs (see the `oai` format for the originals).
_OAI_RESAVE = re.compile(r"^v5_(32k|128k)_layer_(\d+)(?:\.pt)?$")


def matryoshka_widths(raw: Mapping[str, Any]) -> list[int]:
    """The nested widths a SAELens config records (metadata.training_architecture_details)."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    details = meta.get("training_architecture_details")
    widths = details.get("matryoshka_widths") if isinstance(details, dict) else None
    return list(widths) if isinstance(widths, list) else []


class SAELensFormat(FolderFormat):
    name = "saelens"
    summary = "SAELens-native folders (cfg.json + sae_weights.safetensors)"
    config_file, weights_file = CFG, WEIGHTS

    def config_says(self, raw: dict[str, Any]) -> bool | None:
        """SAELens configs name d_sae and either an architecture, a (6.x) metadata block or
        the pre-6.0 runner's hook_point; sparsify's cfg.json (other files) never do."""
        if "d_sae" not in raw:
            return False
        if matryoshka_widths(raw):
            return None  # the matryoshka format is surer (its detector says True)
        return "architecture" in raw or "metadata" in raw or "hook_point" in raw or None

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        derived: dict[str, Any] = {}
        if TL_HOOK.match(entry.id):
            derived.update(tl_hook_fields(entry.id))
        leaf = entry.path.rstrip("/").rsplit("/", 1)[-1]
        match = _OAI_RESAVE.match(leaf)
        if match:
            derived.update(
                d_sae=32768 if match.group(1) == "32k" else 131072,
                d_in=768,
                k=32,
                architecture="topk",
                normalize_activations="layer_norm",
                context_size=64,
            )
            if derived.get("hook_layer") not in (None, int(match.group(2))):
                raise ValueError(
                    f"path {entry.path!r} names layer {match.group(2)} but id {entry.id!r} "
                    f"names layer {derived['hook_layer']}"
                )
        return derived

    # ------------------------------------------------------------------ weights

    def _paths(self, entry: SAEEntry) -> tuple[str, str]:
        folder = entry.path.rstrip("/")
        return f"{folder}/{CFG}", f"{folder}/{WEIGHTS}"

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        cfg_path, weights = self._paths(entry)
        shapes = {n: s for n, (_, s) in tensor_shapes[weights].items()}
        dtypes = {d for d, _ in tensor_shapes[weights].values()}
        config = self._config(release, entry, read_json(local_files[cfg_path], CFG), shapes)
        config["dtype"] = FLOAT_DTYPES.get(dtypes.pop() if len(dtypes) == 1 else "F32")
        return config

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg_path, weights = self._paths(entry)
        raw = read_json(local_files[cfg_path], CFG)
        tensors = safetensors_arrays(local_files[weights])
        config = self._config(release, entry, raw, {n: t.shape for n, t in tensors.items()})
        if "log_threshold" in tensors and "threshold" not in tensors:  # legacy JumpReLU saves
            import torch  # deferred: torch

            tensors["threshold"] = mapped(tensors.pop("log_threshold"), torch.exp)
        if "threshold" in tensors:  # SAELens: ReLU(h) · 1[h > θ]
            tensors["threshold"] = relu_jump_threshold(tensors["threshold"])
        sf = tensors.pop("scaling_factor", None)
        if sf is not None:
            tensors = self._fold_scaling_factor(tensors, sf, config)
        if raw.get("rescale_acts_by_decoder_norm"):
            tensors = _fold_decoder_norm(tensors)
        return config, uniform_dtype(config, tensors)

    def _fold_scaling_factor(
        self, tensors: dict[str, Any], sf: Any, config: dict[str, Any]
    ) -> dict[str, Any]:
        """Old SAELens multiplied latents by a fine-tuning `scaling_factor` before W_dec;
        all ones means none. Otherwise it is folded into the rows of W_dec."""
        import torch  # deferred: torch

        values = sf.load() if hasattr(sf, "load") else sf
        if bool(torch.all(values == 1)):
            return tensors
        out = dict(tensors)
        out["W_dec"] = mapped(tensors["W_dec"], lambda w: w * values[:, None])
        config.setdefault("folded", []).append("finetuning scaling_factor into W_dec")
        return out

    def _config(
        self,
        release: Release,
        entry: SAEEntry,
        raw: Mapping[str, Any],
        shapes: Mapping[str, tuple[int, ...]],
    ) -> dict[str, Any]:
        """cfg.json (pre-6.0 flat runner config or 6.x) → canonical config fields. A
        published dataset-norm factor becomes a constant input scale (normalization
        ``scale``), so the weights stay the publisher's."""
        where = f"{entry.path}/{CFG}"
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        arch_name = raw.get("architecture", "standard")
        act = raw.get("activation_fn", raw.get("activation_fn_str"))
        kwargs = raw.get("activation_fn_kwargs") or {}
        k = raw.get("k")
        if act == "topk" and kwargs.get("k") is not None:
            arch_name, k = "topk", kwargs["k"]
        arch = _ARCH.get(arch_name)
        transcoder = arch_name in _TRANSCODERS
        if transcoder:
            arch, skip = _TRANSCODERS[arch_name]
            if skip and "W_skip" not in shapes:
                raise CanonicalFileError(
                    f"{where}: architecture {arch_name!r} needs W_skip, which {WEIGHTS} lacks"
                )
        if arch is None:
            why = _NOT_CANONICAL.get(str(arch_name))
            known = sorted({*_ARCH, *_TRANSCODERS})
            raise CanonicalFileError(
                f"{where}: SAELens architecture {arch_name!r} cannot be loaded: "
                + (why if why else f"it is not one saereg knows (it reads {', '.join(known)})")
            )
        if "W_enc" not in shapes:
            raise CanonicalFileError(f"{WEIGHTS} has no W_enc (has: {', '.join(sorted(shapes))})")
        d_in, d_sae = shapes["W_enc"]
        d_out = shapes["W_dec"][1] if transcoder and len(shapes.get("W_dec", ())) == 2 else d_in
        for key, value in (("d_in", d_in), ("d_sae", d_sae), ("d_out", d_out)):
            if raw.get(key) not in (None, value):
                raise CanonicalFileError(
                    f"{where} says {key}={raw[key]} but W_enc has shape {list(shapes['W_enc'])}"
                    + (f" and W_dec {list(shapes['W_dec'])}" if key == "d_out" else "")
                )
        rescale = bool(raw.get("rescale_acts_by_decoder_norm"))
        if rescale and arch != "topk":
            raise CanonicalFileError(
                f"{where}: rescale_acts_by_decoder_norm is set for architecture {arch_name!r}; "
                "SAELens uses it only for TopK SAEs"
            )
        norm_name = entry.normalize_activations or raw.get("normalize_activations")
        if isinstance(norm_name, bool) or norm_name is None:
            norm_name = "expected_average_only_in" if norm_name else "none"
        folded: list[str] = []
        if rescale:
            folded.append("decoder row norms (rescale_acts_by_decoder_norm) into W_enc, b_enc")
        if transcoder and norm_name in ("constant_norm_rescale", "layer_norm"):
            raise CanonicalFileError(
                f"{where}: a transcoder with normalize_activations {norm_name!r}: SAELens "
                "normalizes its input but does not undo it on the output (a different hook), "
                "which the canonical transcoder does not express; save it with "
                "normalize_activations 'none' after folding the normalization"
            )
        if (
            transcoder
            and norm_name == "expected_average_only_in"
            and (entry.norm_scaling_factor is not None)
        ):
            raise CanonicalFileError(
                f"{where}: a transcoder with a published norm_scaling_factor: its input would "
                "be scaled and its output (another hook) unscaled by the same factor, which "
                "is not how it was trained; fold the factor into W_enc first"
            )
        if norm_name == "expected_average_only_in":
            normalization: dict[str, Any] = {"kind": "none"}
            if entry.norm_scaling_factor is not None:
                normalization = {"kind": "scale", "factor": float(entry.norm_scaling_factor)}
            else:
                warnings.warn(
                    f"{release.name}/{entry.id} was trained on inputs scaled by a dataset norm "
                    "(expected_average_only_in) but no norm_scaling_factor is published; it "
                    "runs on unscaled inputs, as in SAELens",
                    stacklevel=2,
                )
        elif norm_name in _NORMALIZATION:
            normalization = dict(_NORMALIZATION[norm_name])
        else:
            raise CanonicalFileError(f"{where}: unsupported normalize_activations {norm_name!r}")
        hook = (
            entry.hook_name
            or raw.get("hook_name")
            or raw.get("hook_point")
            or meta.get("hook_name")
        )
        reshape = raw.get("reshape_activations") or (
            "hook_z" if hook and "hook_z" in hook else "none"
        )
        config: dict[str, Any] = {
            "architecture": arch,
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": d_out,
            # SAELens refuses apply_b_dec_to_input for transcoders (b_dec is [d_out])
            "apply_b_dec_to_input": False
            if transcoder
            else bool(raw.get("apply_b_dec_to_input", True)),
            "normalization": normalization,
            "reshape": reshape,
            "hook_name": hook,
            "folded": folded,
        }
        if transcoder:
            config["transcoder"] = True
            out_hook = entry.hook_name_out or raw.get("hook_name_out") or meta.get("hook_name_out")
            if out_hook:
                config["hook_name_out"] = out_hook
        if arch == "topk":
            config["k"] = int(k) if k is not None else entry.k
        context = raw.get("context_size", meta.get("context_size"))
        if entry.context_size is None and context is not None:
            config["context_size"] = int(context)
        details = meta.get("training_architecture_details") or {}
        if details.get("matryoshka_widths"):
            widths = [int(w) for w in details["matryoshka_widths"]]
            if widths[-1] != d_sae:
                widths.append(d_sae)
            config["nested_widths"] = widths
        return config


def _fold_decoder_norm(tensors: dict[str, Any]) -> dict[str, Any]:
    """A TopK SAE saved with rescale_acts_by_decoder_norm: SAELens selects the top k of
    (x' W_enc + b_enc) · ‖W_dec,i‖ and decodes f / ‖W_dec,i‖ @ W_dec. Folding the norms
    (W_enc columns and b_enc times ‖W_dec,i‖, W_dec rows divided by it; SAELens'
    `fold_W_dec_norm` for TopK) gives the same latents and outputs from plain TopK.
    Each tensor is still read when the core writes it."""

    @functools.cache
    def norms() -> Any:
        w_dec = tensors["W_dec"]
        return (w_dec.load() if hasattr(w_dec, "load") else w_dec).norm(dim=-1)

    out = dict(tensors)
    out["W_dec"] = mapped(tensors["W_dec"], lambda w: w / norms()[:, None])
    out["W_enc"] = mapped(tensors["W_enc"], lambda w: w * norms()[None, :])
    out["b_enc"] = mapped(tensors["b_enc"], lambda b: b * norms())
    return out


@hookimpl
def saereg_formats() -> list[Format]:
    return [SAELensFormat()]
