"""Folders written by SAELens 6's `save_model` for the architectures beyond plain SAEs:
its four transcoders, TopK with decoder-norm rescaling, and JumpReLU thresholds below
zero; and the architectures the canonical module cannot express, refused by name.

The reference math is written from sae_lens/saes/{transcoder,topk_sae,jumprelu_sae}.py
(6.54): Transcoder.encode = ReLU(x @ W_enc + b_enc) (no b_dec subtraction: SAELens
refuses apply_b_dec_to_input for transcoders), decode = f @ W_dec + b_dec with W_dec
[d_sae, d_out]; the skip variants' forward adds x @ W_skipᵀ; JumpReLU is
ReLU(h) · 1[h > θ]; TopK with rescale_acts_by_decoder_norm selects the top k of
h · ‖W_dec,i‖ and decodes f / ‖W_dec,i‖ @ W_dec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import saereg

from .publishers import rand, st_save

X = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(5))


def _write(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (folder / "sae_weights.safetensors").write_bytes(st_save(tensors))
    return folder


def _cfg(arch: str, d_in: int, d_sae: int, **extra: object) -> dict:
    """A cfg.json as SAELens 6.54's save_model writes it (see the module docstring)."""
    return {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not arch.endswith("transcoder"),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.2.ln2.hook_normalized"},
        "architecture": arch,
        **extra,
    }


def _transcoder(arch: str, d_in: int = 8, d_sae: int = 24, d_out: int = 6) -> dict:
    t = {
        "W_enc": rand(d_in, d_sae),
        "b_enc": rand(d_sae, scale=0.2),
        "W_dec": rand(d_sae, d_out),
        "b_dec": rand(d_out, scale=0.1),
    }
    if "skip" in arch:
        t["W_skip"] = rand(d_out, d_in)
    if "jumprelu" in arch:  # some below zero: SAELens' ReLU wins there
        t["threshold"] = torch.linspace(-0.3, 0.3, d_sae)
    return t


def _transcoder_reference(arch: str, t: dict, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    t = {n: v.double() for n, v in t.items()}
    x = x.double()
    h = x @ t["W_enc"] + t["b_enc"]
    f = torch.relu(h)
    if "threshold" in t:
        f = f * (h > t["threshold"]).double()
    y = f @ t["W_dec"] + t["b_dec"]
    full = y + x @ t["W_skip"].T if "W_skip" in t else y
    return f, y, full


@pytest.mark.parametrize(
    "arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"]
)
def test_saelens_transcoders_load_with_saelens_math(tmp_path: Path, arch: str) -> None:
    t = _transcoder(arch)
    folder = _write(tmp_path / arch, _cfg(arch, 8, 24, d_out=6), t)
    sae = saereg.load_sae(folder)
    assert sae.cfg.transcoder and sae.cfg.d_out == 6 and not sae.cfg.apply_b_dec_to_input
    assert sae.cfg.architecture == ("jumprelu" if "jumprelu" in arch else "relu")
    assert sae.cfg.hook_name == "blocks.2.ln2.hook_normalized"
    assert (sae.W_skip is not None) == ("skip" in arch)
    f_ref, y_ref, full_ref = _transcoder_reference(arch, t, X)
    f = sae.encode(X)
    torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(f).double(), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(X).double(), full_ref, atol=1e-5, rtol=1e-5)
    if "jumprelu" in arch:  # the negative thresholds were lifted to 0, exactly
        assert float(sae.threshold.min()) == 0.0
        assert (f_ref > 0).any(dim=-1).all()


def test_transcoder_without_its_skip_matrix_or_with_a_normalization_is_refused(
    tmp_path: Path,
) -> None:
    t = _transcoder("transcoder")
    folder = _write(tmp_path / "a", _cfg("skip_transcoder", 8, 24, d_out=6), t)
    with pytest.raises(Exception, match="needs W_skip"):
        saereg.load_sae(folder)
    cfg = _cfg("transcoder", 8, 24, d_out=6, normalize_activations="layer_norm")
    folder = _write(tmp_path / "b", cfg, t)
    with pytest.raises(Exception, match="does not undo it on the output"):
        saereg.load_sae(folder)
    folder = _write(tmp_path / "c", _cfg("transcoder", 8, 24, d_out=5), t)
    with pytest.raises(Exception, match="d_out=5"):
        saereg.load_sae(folder)


def test_topk_with_decoder_norm_rescaling_is_folded(tmp_path: Path) -> None:
    d_in, d_sae, k = 8, 32, 4
    t = {
        "W_enc": rand(d_in, d_sae),
        "b_enc": rand(d_sae, scale=0.2),
        "W_dec": rand(d_sae, d_in) * torch.linspace(0.2, 3.0, d_sae)[:, None],
        "b_dec": rand(d_in, scale=0.1),
    }
    cfg = _cfg("topk", d_in, d_sae, k=k, rescale_acts_by_decoder_norm=True)
    sae = saereg.load_sae(_write(tmp_path / "topk", cfg, t))
    d = {n: v.double() for n, v in t.items()}
    x = X.double()
    norms = d["W_dec"].norm(dim=-1)
    h = ((x - d["b_dec"]) @ d["W_enc"] + d["b_enc"]) * norms
    vals, idx = h.topk(k, dim=-1)
    f_ref = torch.zeros_like(h).scatter(-1, idx, vals.relu())
    y_ref = (f_ref / norms) @ d["W_dec"] + d["b_dec"]
    f = sae.encode(X)
    torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(X).double(), y_ref, atol=1e-5, rtol=1e-5)
    # Without the rescaling the choice of latents differs: the fold is what matched.
    plain = (x - d["b_dec"]) @ d["W_enc"] + d["b_enc"]
    assert not torch.equal(plain.topk(k, dim=-1).indices.sort(-1).values, idx.sort(-1).values)
    assert any("rescale_acts_by_decoder_norm" in s for s in sae.cfg.folded)


def test_jumprelu_sae_with_negative_thresholds_matches_saelens(tmp_path: Path) -> None:
    d_in, d_sae = 8, 24
    t = {
        "W_enc": rand(d_in, d_sae),
        "b_enc": rand(d_sae, scale=0.2),
        "W_dec": rand(d_sae, d_in),
        "b_dec": rand(d_in, scale=0.1),
        "threshold": torch.linspace(-0.5, 0.2, d_sae),
    }
    sae = saereg.load_sae(_write(tmp_path / "j", _cfg("jumprelu", d_in, d_sae), t))
    d = {n: v.double() for n, v in t.items()}
    h = (X.double() - d["b_dec"]) @ d["W_enc"] + d["b_enc"]
    f_ref = torch.relu(h) * (h > d["threshold"]).double()
    torch.testing.assert_close(sae.encode(X).double(), f_ref, atol=1e-5, rtol=1e-5)
    assert (h < 0).logical_and(h > d["threshold"]).any()  # the case the ReLU decides


@pytest.mark.parametrize(
    ("arch", "why"),
    [
        ("abstopk", "with their sign"),
        ("matching_pursuit", "iteratively"),
        ("batchtopk", "save_inference_model"),
        ("no_such_arch", "it reads"),
    ],
)
def test_architectures_the_canonical_module_cannot_hold_are_refused_by_name(
    tmp_path: Path, arch: str, why: str
) -> None:
    t = {
        "W_enc": rand(8, 16),
        "b_enc": rand(16),
        "W_dec": rand(16, 8),
        "b_dec": rand(8),
    }
    folder = _write(tmp_path / arch, _cfg(arch, 8, 16, k=2), t)
    with pytest.raises(Exception, match=f"architecture '{arch}' cannot be loaded: .*{why}"):
        saereg.load_sae(folder)


@pytest.mark.parametrize("arch", ["skip_transcoder", "jumprelu_skip_transcoder"])
def test_exported_transcoder_loads_back_as_the_same_transcoder(tmp_path: Path, arch: str) -> None:
    """`saereg export --format saelens` of a transcoder writes SAELens' transcoder class
    (with hook_name_out in its metadata), which loads back to the same module."""
    from saereg.cli import main

    folder = _write(tmp_path / "orig", _cfg(arch, 8, 24, d_out=6), _transcoder(arch))
    sae = saereg.load_sae(folder, hook_name_out="blocks.2.hook_mlp_out")
    out = tmp_path / "exported"
    assert main(["export", str(folder), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "cfg.json").read_text())["architecture"] == arch
    again = saereg.load_sae(out)
    assert again.cfg.transcoder and again.cfg.d_out == 6
    torch.testing.assert_close(again(X), sae(X))
    torch.testing.assert_close(again.encode(X), sae.encode(X))


def test_export_refuses_a_jumprelu_whose_negative_thresholds_saelens_would_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canonical jumprelu is h · 1[h > θ] (circuit-tracer's math); with θ < 0 it lets
    negative latents through, which SAELens' ReLU(h) · 1[h > θ] cannot express."""
    from saereg.cli import main
    from saereg.sae.module import SAE

    sae = SAE.from_weights(
        W_enc=rand(8, 16), W_dec=rand(16, 8), b_enc=rand(16), b_dec=rand(8),
        threshold=torch.linspace(-0.2, 0.2, 16), architecture="jumprelu",
        hook_name="blocks.1.hook_resid_pre",
    )  # fmt: skip
    canonical = tmp_path / "neg.safetensors"
    sae.save(canonical)
    assert main(["export", str(canonical), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "thresholds below zero" in capsys.readouterr().err
    assert not (tmp_path / "out" / "cfg.json").exists()


@pytest.mark.parametrize(
    ("named", "model", "hf_module"),
    [
        ("gpt2-small", "gpt2-small", "transformer.h.2.mlp"),
        ("google/gemma-2-2b", "gemma-2-2b", "model.layers.2.pre_feedforward_layernorm"),
        ("my-own-model", "my-own-model", None),
    ],
)
def test_a_folder_takes_the_model_its_config_names(
    tmp_path: Path, named: str, model: str, hf_module: str | None
) -> None:
    """No release names a folder's model: the one SAELens' config names is used, spelled
    as the models table spells it, and the Hugging Face hook follows from it; model=
    still wins."""
    cfg = _cfg("standard", 8, 16)
    cfg["metadata"]["model_name"] = named
    t = {"W_enc": rand(8, 16), "b_enc": rand(16), "W_dec": rand(16, 8), "b_dec": rand(8)}
    folder = _write(tmp_path / "sae", cfg, t)
    sae = saereg.load_sae(folder)
    assert sae.cfg.model == model
    assert (sae.cfg.hf_hook or {}).get("module") == hf_module
    assert saereg.load_sae(folder, model="gpt2").cfg.model == "gpt2-small"
