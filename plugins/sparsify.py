"""EleutherAI sparsify (``eai-sparsify``): one folder per hookpoint, ``{hookpoint}/cfg.json``
+ ``{hookpoint}/sae.safetensors`` (written by ``SparseCoder.save_to_disk``).

Math (``sparsify/sparse_coder.py``, ``fused_encoder.py``; eai-sparsify 1.3.3):

    x' = x - b_dec            (an SAE; a transcoder encodes its input as is)
    z  = ReLU(x' @ encoder.weightᵀ + encoder.bias);  keep the top k of z
    y  = Σ top_acts · W_dec[top_indices] + b_dec   (+ x @ W_skipᵀ with skip_connection)

Top-k of ReLU(h) keeps the same values as the canonical ReLU after top-k of h. ``W_dec``
is stored [num_latents, d_in], already the canonical orientation (SAELens' sparsify
loader transposes it, which only works for square SAEs). The skip path (no bias) is
part of ``forward``; ``decode`` is what the latents produce. ``normalize_decoder`` and
``multi_topk`` only shape training.

The folder name is the hookpoint: a module of the Hugging Face model whose **output**
the SAE reads (a transcoder reads the module's input and predicts its output).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saereg.formats import (
    FLOAT_DTYPES,
    CanonicalFileError,
    Format,
    Release,
    RemoteFile,
    SAEEntry,
    hookimpl,
)

from ._common import FolderFormat, parse_width
from ._tensors import as_float32, read_json, safetensors_arrays, transposed

CFG = "cfg.json"
WEIGHTS = "sae.safetensors"

# Hookpoint (module path under the model's base model) → TransformerLens hook.
_HOOKPOINT = re.compile(
    r"^(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)[._](\d+)"
    r"(?:\.(mlp|self_attn|attention|attn))?$"
)
_SITE_HOOK = {
    None: "hook_resid_post",  # a decoder layer's output: the residual stream after it
    "mlp": "hook_mlp_out",
    "self_attn": "hook_attn_out",
    "attention": "hook_attn_out",
    "attn": "hook_attn_out",
}
#: The MLP's input is the second normalization's output (Llama, Pythia, GPT-2 alike).
_MLP_INPUT = "ln2.hook_normalized"
_REPO_WIDTH = re.compile(r"-(\d+k)$", re.IGNORECASE)  # "...-32k": model sizes end in m/b


def hookpoint_hooks(hookpoint: str, transcoder: bool = False) -> dict[str, Any]:
    """TransformerLens names for a sparsify hookpoint (ValueError if not recognised)."""
    hookpoint = hookpoint.rstrip("/").rsplit("/", 1)[-1]
    if hookpoint in ("embed_tokens", "embed_in", "wte"):
        return {"hook_name": "hook_embed", "hook_layer": 0, "hf_hook_name": hookpoint}
    match = _HOOKPOINT.match(hookpoint)
    if not match:
        raise ValueError(
            f"sparsify hookpoint {hookpoint!r} is not a decoder layer (layers.N), its mlp "
            "or attention (layers.N.mlp, layers.N.self_attn) or embed_tokens"
        )
    layer, site = int(match.group(1)), match.group(2)
    out: dict[str, Any] = {
        "hook_name": f"blocks.{layer}.{_SITE_HOOK[site]}",
        "hook_layer": layer,
        "hf_hook_name": hookpoint,
    }
    if transcoder:
        if site != "mlp":
            raise ValueError(f"sparsify transcoder hookpoint {hookpoint!r} is not an MLP")
        out["hook_name"] = f"blocks.{layer}.{_MLP_INPUT}"
        out["hook_name_out"] = f"blocks.{layer}.hook_mlp_out"
    return out


def _is_transcoder_release(release: Release, entry: SAEEntry) -> bool:
    if entry.architecture is not None:
        return "transcoder" in entry.architecture
    return "transcoder" in f"{release.name} {release.repo_id or ''}".lower()


class SparsifyFormat(FolderFormat):
    """One folder per hookpoint: ``discover`` finds them in a repository listing."""

    name = "sparsify"
    summary = "EleutherAI sparsify ({hookpoint}/cfg.json + sae.safetensors; TopK, transcoders)"
    config_file, weights_file = CFG, WEIGHTS

    def config_says(self, raw: dict[str, Any]) -> bool | None:
        """sparsify's SparseCoderConfig: k with expansion_factor or num_latents, and d_in;
        never SAELens' d_sae."""
        if "d_sae" in raw or "d_in" not in raw:
            return False
        return ("k" in raw and ("expansion_factor" in raw or "num_latents" in raw)) or None

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        out = hookpoint_hooks(entry.path, _is_transcoder_release(release, entry))
        out.update(architecture="topk", normalize_activations="none")
        match = _REPO_WIDTH.search(release.repo_id or "")
        if match:
            out["d_sae"] = parse_width(match.group(1))
        return out

    def files(self, release: Release, entry: SAEEntry) -> list[RemoteFile]:
        """The hookpoint's two files, and the training run's config.json beside the
        hookpoint folders (model, dataset, ctx_len) where the repository has one."""
        return [*super().files(release, entry), RemoteFile(_run_config(entry), optional=True)]

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        folder = entry.path.rstrip("/")
        header = tensor_shapes.get(f"{folder}/{WEIGHTS}")
        if header is None:
            return None
        raw = read_json(local_files[f"{folder}/{CFG}"], f"{folder}/{CFG}")
        shapes = {n: s for n, (_, s) in header.items()}
        dtypes = {FLOAT_DTYPES.get(d, d) for d, _ in header.values()}
        return {**_config(release, entry, raw, shapes, dtypes), **_run(entry, local_files)}

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = entry.path.rstrip("/")
        raw = read_json(local_files[f"{folder}/{CFG}"], f"{folder}/{CFG}")
        arrays = safetensors_arrays(local_files[f"{folder}/{WEIGHTS}"])
        shapes = {n: a.shape for n, a in arrays.items()}
        config = _config(release, entry, raw, shapes, {a.dtype for a in arrays.values()})
        config.update(_run(entry, local_files))
        tensors = {
            "W_enc": transposed(arrays["encoder.weight"]),
            "b_enc": arrays["encoder.bias"],
            "W_dec": arrays["W_dec"],  # [num_latents, d_in]: canonical as stored
            "b_dec": arrays["b_dec"],
        }
        if "W_skip" in arrays:
            tensors["W_skip"] = arrays["W_skip"]  # [d_out, d_in]: y += x @ W_skipᵀ
        if len({a.dtype for a in arrays.values()}) > 1:  # mixed (never published): fp32
            tensors = {n: as_float32(t) for n, t in tensors.items()}
        return config, tensors


def _run_config(entry: SAEEntry) -> str:
    parent = entry.path.rstrip("/").rpartition("/")[0]
    return f"{parent}/config.json" if parent else "config.json"


def _run(entry: SAEEntry, local_files: Mapping[str, Path]) -> dict[str, Any]:
    """Context length and dataset from the run's config.json, where the catalogue has none."""
    path = local_files.get(_run_config(entry))
    if path is None:
        return {}
    run = read_json(path, _run_config(entry))
    out: dict[str, Any] = {}
    if entry.context_size is None and isinstance(run.get("ctx_len"), int):
        out["context_size"] = run["ctx_len"]
    if entry.dataset is None and isinstance(run.get("dataset"), str):
        out["dataset"] = run["dataset"]
    return out


def _config(
    release: Release,
    entry: SAEEntry,
    raw: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: set[str],
) -> dict[str, Any]:
    folder = entry.path.rstrip("/")
    where = f"{folder}/{CFG}"
    weights = f"{folder}/{WEIGHTS}"
    activation = raw.get("activation", "topk")
    if activation != "topk":
        raise CanonicalFileError(
            f"{where}: activation {activation!r} is not supported (saereg converts sparsify's "
            "'topk'; 'groupmax' has no canonical form yet)"
        )
    if raw.get("signed"):
        raise CanonicalFileError(f'{where}: signed TopK ("signed": true) is not supported')
    d_in = raw.get("d_in")
    if not isinstance(d_in, int) or d_in < 1:
        raise CanonicalFileError(f"{where}: no positive integer d_in (sparsify writes it)")
    d_sae = raw.get("num_latents") or d_in * int(raw.get("expansion_factor", 32))
    k = raw.get("k", 32)
    if not isinstance(k, int) or not 1 <= k <= d_sae:
        raise CanonicalFileError(f"{where}: k={k!r} must be an integer in 1..{d_sae}")
    transcode = bool(raw.get("transcode", False))
    skip = bool(raw.get("skip_connection", False))
    if skip and not transcode:
        raise CanonicalFileError(
            f"{where}: a skip connection on an autoencoder (skip_connection without transcode) "
            "is not supported"
        )
    expected = {
        "encoder.weight": (d_sae, d_in),
        "encoder.bias": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
    }
    if skip:
        expected["W_skip"] = (d_in, d_in)
    problems = [
        f"missing {name} (expected shape {list(shape)})"
        if name not in shapes
        else f"{name} has shape {list(shapes[name])}, expected {list(shape)}"
        for name, shape in expected.items()
        if tuple(shapes.get(name, ())) != shape
    ]
    problems += [f"unexpected tensor {name!r}" for name in sorted(set(shapes) - set(expected))]
    if problems:
        raise CanonicalFileError(
            f"{weights}: {'; '.join(problems)} (cfg.json: d_in={d_in}, num_latents={d_sae}, "
            f"transcode={transcode}, skip_connection={skip})"
        )
    config: dict[str, Any] = {
        "architecture": "topk",
        "k": k,
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_in,
        "apply_b_dec_to_input": not transcode,
        "normalization": {"kind": "none"},
        "reshape": "none",
        # sparsify builds the module in the dtype of the file's tensors (bf16 as published).
        "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
    }
    if transcode:
        config["transcoder"] = True
        if entry.hook_name_out is None:
            try:
                hooks = hookpoint_hooks(folder, transcoder=True)
            except ValueError:
                hooks = {}
            if entry.hook_name is None and "hook_name" in hooks:
                config["hook_name"] = hooks["hook_name"]
            config["hook_name_out"] = hooks.get("hook_name_out")
    return config


@hookimpl
def saereg_formats() -> list[Format]:
    return [SparsifyFormat()]
