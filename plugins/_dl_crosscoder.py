"""dictionary_learning's crosscoders (the science-of-finetuning fork of
saprmarks/dictionary_learning) → canonical crosscoder tensors, with the publisher's math;
plugins/crosscoders.py holds the format that reads them (its docstring says the layout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saereg.formats import CanonicalFileError, ReadSmall, SAEEntry, read_small_json

from ._common import in_folder
from ._dl_classes import CLASSES as SAE_CLASSES
from ._dl_classes import CROSSCODER_CLASSES, WEIGHTS
from ._tensors import read_json, torch_load, uniform_dtype

#: training.py's intermediate saves, save_model(trainer, f"checkpoint_{step}.pt", save_dir):
#: the same state dict as model_final.pt, beside the run's config.json.
_CHECKPOINT = re.compile(r"^(?:(.+)/)?checkpoint_(\d+)\.pt$")


def run_files(path: str) -> tuple[str, str | None]:
    """(the run's folder, the checkpoint named or None) of an entry path: the run's
    folder, or one of its checkpoint_{step}.pt files."""
    path = path.strip("/")
    match = _CHECKPOINT.match(path)
    if match is not None:
        return match.group(1) or "", path
    return ("" if path == "." else path), None


def dl_file(entry: SAEEntry, name: str) -> str:
    """`name` in the entry's run folder."""
    return in_folder(run_files(entry.path)[0], name)


def checkpoints(listing: Sequence[str], read_small: ReadSmall) -> tuple[list[str], list[str]]:
    """Every checkpoint_{step}.pt beside a config.json that names a crosscoder class (read
    to be sure, never a guess from the name), in step order; and the configs read."""
    files, by_folder = set(listing), dict[str, list[str]]()
    for path in listing:
        folder, checkpoint = run_files(path)
        if checkpoint is not None and in_folder(folder, DL_CONFIG) in files:
            by_folder.setdefault(folder, []).append(checkpoint)
    found, read = [], []
    for folder, paths in sorted(by_folder.items()):
        read.append(in_folder(folder, DL_CONFIG))
        cfg = read_small_json(read_small, read[-1])
        if cfg is not None and trainer_config(cfg):
            found += sorted(paths, key=lambda p: int(p.rpartition("_")[2][: -len(".pt")]))
    return found, read


# dictionary_learning's crosscoders (the science-of-finetuning fork of
# saprmarks/dictionary_learning), read from dictionary_learning/dictionary.py at commit
# 173f7facbe80f16c837e7b5e4dca78a50c000115 (CrossCoder, BatchTopKCrossCoder,
# NormalizableMixin, CodeNormalization) and training.py / trainers/crosscoder.py there
# (how they are saved). PyPI dictionary-learning 0.1.0 has no crosscoder.

DL_TRAINER_WEIGHTS = "model_final.pt"  # training.save_model(..., "model_final.pt")
DL_HUB_WEIGHTS = "model.safetensors"  # PyTorchModelHubMixin.save_pretrained
DL_CONFIG = "config.json"
DL_TRAINER_CONFIG = "trainer_config.json"  # beside hub files, as science-of-finetuning pushes
DL_CLASSES = CROSSCODER_CLASSES
#: CodeNormalization's values (enum.auto(), from 1), as saved in code_normalization_id.
CODE_NORMALIZATIONS = {1: "CROSSCODER", 2: "SAE", 3: "MIXED", 4: "NONE", 5: "DECOUPLED"}
_DL_KEYS = {
    "encoder.weight",
    "encoder.bias",
    "decoder.weight",
    "decoder.bias",
    "code_normalization_id",
    "target_rms",
    "activation_mean",
    "activation_std",
    "activation_global_scale",
    "k",
    "threshold",
}


def hub_config(cfg: Mapping[str, Any]) -> bool:
    """The hub mixin's config.json: the crosscoder's constructor arguments."""
    return {"activation_dim", "dict_size", "num_layers"} <= set(cfg) and "trainer" not in cfg


def trainer_config(cfg: Mapping[str, Any]) -> bool:
    """training.py's config.json: {"trainer": {"dict_class": ..., ...}, "buffer": ...}."""
    trainer = cfg.get("trainer")
    return isinstance(trainer, Mapping) and trainer.get("dict_class") in DL_CLASSES


def single_sae_hint(dict_class: object, where: str) -> str:
    """What a dictionary_learning single SAE given to the crosscoder format is, and how
    to load it ('' when `dict_class` is no single-SAE class)."""
    if dict_class not in SAE_CLASSES:
        return ""
    return (
        f"{where}: trainer.dict_class {dict_class!r} is a dictionary_learning single SAE, "
        "not a crosscoder, so format 'dictionary_learning_crosscoder' cannot read it. "
        f"Format 'dictionary_learning' reads it from config.json beside {WEIGHTS} (rename "
        f"{DL_TRAINER_WEIGHTS} to {WEIGHTS}), and then saereg.load_sae(PATH) detects it "
        "(or pass format='dictionary_learning'; CLI: --source-format dictionary_learning)"
    )


def read_config(entry: SAEEntry, files: Mapping[str, Path]) -> tuple[str, dict[str, Any]]:
    name = dl_file(entry, DL_CONFIG)
    cfg = read_json(files[name], name)
    if not (hub_config(cfg) or trainer_config(cfg)):
        trainer = cfg.get("trainer")
        hint = single_sae_hint(
            trainer.get("dict_class") if isinstance(trainer, Mapping) else None, name
        )
        if hint:
            raise CanonicalFileError(hint)
        raise CanonicalFileError(
            f"{name} is neither dictionary_learning's trainer config (trainer.dict_class one "
            f"of {', '.join(DL_CLASSES)}) nor its hub config (activation_dim, dict_size, "
            "num_layers)"
        )
    return name, cfg


def _code_normalization(
    state: Mapping[str, Any], cfg: Mapping[str, Any], hub: bool, where: str
) -> str:
    """Which CodeNormalization the publisher's loader applies: the hub mixin builds the
    module from config.json's ``code_normalization`` (its constructor default CROSSCODER
    when absent); the trainer's ``.pt`` from the state dict's ``code_normalization_id``
    (CROSSCODER when absent, as from_pretrained assumes with a warning). Where the
    other source disagrees, which one the weights were trained with is unclear: an
    error."""
    saved = state.get("code_normalization_id")
    from_state = None
    if saved is not None:
        value = int(saved.item())
        if value not in CODE_NORMALIZATIONS:
            raise CanonicalFileError(
                f"{where}: code_normalization_id {value} is not one of {CODE_NORMALIZATIONS}"
            )
        from_state = CODE_NORMALIZATIONS[value]
    source = cfg if hub else cfg.get("trainer", {})
    named = source.get("code_normalization")
    from_config = str(named).upper() if named is not None else None
    if from_config is not None and from_config not in CODE_NORMALIZATIONS.values():
        raise CanonicalFileError(
            f"{where}: code_normalization {named!r} is not one of "
            f"{', '.join(CODE_NORMALIZATIONS.values())}"
        )
    applied, other = (from_config, from_state) if hub else (from_state, from_config)
    applied = applied or "CROSSCODER"
    if other is not None and other != applied:
        raise CanonicalFileError(
            f"{where}: config.json says code_normalization={from_config or 'none'} but the "
            f"weights save code_normalization_id={from_state or 'none'}; the publisher's "
            f"loader applies {applied}, so which one the weights were trained with is "
            "ambiguous"
        )
    return applied


#: CrossCoder's constructor defaults for the MIXED weights.
_ALPHAS = {"code_normalization_alpha_sae": 1.0, "code_normalization_alpha_cc": 0.1}


def _mixed_alphas(cfg: Mapping[str, Any], hub: bool) -> tuple[float, float]:
    """The hub mixin builds the module from config.json (constructor defaults where it
    is silent); the trainer's from_pretrained builds it with the defaults whatever the
    trainer used, so a trainer config naming other weights is ambiguous."""
    if hub:
        return (
            float(cfg.get("code_normalization_alpha_sae", 1.0)),
            float(cfg.get("code_normalization_alpha_cc", 0.1)),
        )
    trainer = cfg.get("trainer", {})
    for key, default in _ALPHAS.items():
        if key in trainer and trainer[key] is not None and float(trainer[key]) != default:
            raise CanonicalFileError(
                f"config.json: trainer.{key}={trainer[key]} but dictionary_learning's "
                f"from_pretrained rebuilds a MIXED crosscoder with {key}={default}; which "
                "one applies is ambiguous"
            )
    return 1.0, 0.1


def _code_norm(w_dec: Any, kind: str, cfg: Mapping[str, Any], hub: bool) -> Any:
    """CrossCoder.get_code_normalization, with the publisher's ops on its decoder
    [n_sites, d_sae, d_out] in its stored dtype → [d_sae]."""
    import torch  # deferred: torch

    if kind == "SAE":
        return w_dec.norm(dim=(0, 2))
    if kind == "CROSSCODER":
        return w_dec.norm(dim=2).sum(dim=0)
    if kind == "MIXED":
        alpha_sae, alpha_cc = _mixed_alphas(cfg, hub)
        return w_dec.norm(dim=(0, 2)) * alpha_sae + w_dec.norm(dim=2).sum(dim=0) * alpha_cc
    return torch.ones(w_dec.shape[1], dtype=w_dec.dtype)  # NONE: a scale of 1.0


def _refuse_variants(cfg: Mapping[str, Any], hub: bool, where: str) -> None:
    """Constructor options the saved tensors cannot show: encoder_layers (a subset of
    the sites read), num_decoder_layers (other sites written), a latent_processor."""
    source = cfg if hub else dict(cfg.get("trainer", {}).get("dict_class_kwargs") or {})
    for key in ("encoder_layers", "num_decoder_layers", "latent_processor"):
        value = source.get(key)
        if value not in (None, "None") and not (
            key == "num_decoder_layers" and hub and value == cfg.get("num_layers")
        ):
            raise CanonicalFileError(
                f"{where}: {key}={value!r} is not supported (saereg reads crosscoders whose "
                "encoder reads and decoder writes every site)"
            )


def _dl_state(path: Path, name: str) -> dict[str, Any]:
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file  # deferred: safetensors

        try:
            state: dict[str, Any] = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CanonicalFileError(f"{name} is not a readable safetensors file: {exc}") from None
    else:
        state = torch_load(path)
    if "encoder.weight" not in state:  # saved from a torch.compile'd module
        state = {k.split("_orig_mod.", 1)[-1]: v for k, v in state.items()}
    unknown = sorted(set(state) - _DL_KEYS)
    if unknown:
        raise CanonicalFileError(
            f"{name} holds {', '.join(unknown)}, which no dictionary_learning CrossCoder or "
            f"BatchTopKCrossCoder saves (expected {', '.join(sorted(_DL_KEYS))})"
        )
    return state


def dl_crosscoder(
    cfg_name: str,
    cfg: Mapping[str, Any],
    weights_name: str,
    path: Path,
    hook: str | None,
    dict_class: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json + the weights → (canonical crosscoder config, tensors); `dict_class`:
    the class a hub checkpoint's trainer_config.json names, if it has one."""
    import torch  # deferred: torch

    hub = hub_config(cfg)
    where = weights_name
    state = _dl_state(path, weights_name)
    missing = [
        k
        for k in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
        if k not in state
    ]
    if missing:
        raise CanonicalFileError(f"{where} lacks {', '.join(missing)}")
    w_enc, w_dec = state["encoder.weight"], state["decoder.weight"]
    if w_enc.dim() != 3:
        raise CanonicalFileError(
            f"{where}: encoder.weight has shape {list(w_enc.shape)}; expected "
            "[num_layers, activation_dim, dict_size]"
        )
    n, d_in, d_sae = (int(s) for s in w_enc.shape)
    if w_dec.dim() == 3 and int(w_dec.shape[0]) != n and tuple(w_dec.shape[1:]) == (d_sae, d_in):
        raise CanonicalFileError(
            f"{where}: decoder.weight writes {int(w_dec.shape[0])} sites but encoder.weight "
            f"reads {n}: num_decoder_layers is not supported"
        )
    expected = {
        "encoder.bias": (d_sae,),
        "decoder.weight": (n, d_sae, d_in),
        "decoder.bias": (n, d_in),
    }
    for key in ("activation_mean", "activation_std"):
        expected[key] = (n, d_in)
    expected["activation_global_scale"] = (n,)
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            raise CanonicalFileError(
                f"{where}: {key} has shape {list(state[key].shape)}, expected {list(shape)} "
                f"(from encoder.weight {list(w_enc.shape)})"
            )
    widths = cfg if hub else cfg.get("trainer", {})
    for key, value in (("activation_dim", d_in), ("dict_size", d_sae), ("num_layers", n)):
        if key in widths and widths[key] != value:
            raise CanonicalFileError(
                f"{cfg_name} says {key}={widths[key]} but {where} holds {value}"
            )
    _refuse_variants(cfg, hub, cfg_name)
    code = _code_normalization(state, cfg, hub, where)
    if code == "DECOUPLED":
        raise CanonicalFileError(
            f"{where}: code_normalization DECOUPLED (per-site latents and thresholds) is not "
            "supported; saereg reads CROSSCODER, SAE, MIXED and NONE crosscoders"
        )
    if not hub:
        batch_topk = cfg["trainer"]["dict_class"] == "BatchTopKCrossCoder"
    elif dict_class is not None:  # the trainer_config.json pushed beside the hub files
        batch_topk = dict_class == "BatchTopKCrossCoder"
    else:  # the hub mixin records no class: a saved threshold and k tell
        batch_topk = "threshold" in state and "k" in state
    dtype = w_enc.dtype
    tensors: dict[str, Any] = {
        "W_enc": w_enc,
        "b_enc": state["encoder.bias"],
        "W_dec": w_dec.permute(1, 0, 2).contiguous(),  # [n, F, d] → canonical [F, n, d]
        "b_dec": state["decoder.bias"],
        "code_norm": _code_norm(w_dec, code, cfg, hub).to(dtype),
    }
    config: dict[str, Any] = {
        "kind": "crosscoder",
        "layer": 0,
        "n_layers": n,
        "architecture": "relu",
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_in,
        "hook_names": [hook] * n,
        "hook_names_out": [hook] * n,
    }
    if batch_topk:
        for key in ("threshold", "k"):
            if key not in state:
                raise CanonicalFileError(
                    f"{where}: a BatchTopKCrossCoder saves {key}; it is missing"
                )
        if state["threshold"].numel() != 1:
            raise CanonicalFileError(
                f"{where}: threshold has shape {list(state['threshold'].shape)}; only one "
                "scalar threshold is supported (per-site thresholds are DECOUPLED)"
            )
        config["architecture"] = "jumprelu"
        k = int(state["k"].item())
        if 1 <= k <= d_sae:
            config["k"] = k  # training's batch top-k; inference uses the threshold
        tensors["threshold"] = torch.full((d_sae,), float(state["threshold"].item()), dtype=dtype)
    mean, std = state.get("activation_mean"), state.get("activation_std")
    if mean is not None and std is not None and not (mean.isnan().any() or std.isnan().any()):
        scale = state.get("activation_global_scale")
        if scale is None:  # NormalizableMixin.__init__ (keep_relative_variance=True)
            target = state.get("target_rms", torch.tensor(1.0))
            scale = target / torch.sqrt((std**2).sum(dim=-1) + 1e-8)
        tensors["activation_mean"] = mean
        tensors["activation_scale"] = scale
    return config, uniform_dtype(config, {k: v.to(dtype) for k, v in tensors.items()})


def pushed_class(entry: SAEEntry, files: Mapping[str, Path]) -> str | None:
    """The dict_class of a hub checkpoint's trainer_config.json, if it has one."""
    name = dl_file(entry, DL_TRAINER_CONFIG)
    path = files.get(name)
    if path is None or not path.exists():
        return None
    raw = read_json(path, name)
    trainer = raw.get("trainer")
    named = trainer.get("dict_class") if isinstance(trainer, Mapping) else None
    if named not in DL_CLASSES:
        raise CanonicalFileError(
            f"{name}: trainer.dict_class {named!r} is not one of {', '.join(DL_CLASSES)}"
        )
    return str(named)
