"""Gemma Scope 1 and 2, Llama Scope and OpenAI's originals, against their own math."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import saereg
from saereg.loading import load_config

from .publishers import (
    gemma_scope2,
    gemma_scope_npz,
    jumprelu_reference,
    llama_scope_folder,
    llama_scope_reference,
    oai_pt,
    oai_reference,
    release_yaml,
)

RNG = np.random.default_rng(3)


def gs1(
    hubenv,
    repo: str,
    path: str,
    d_in: int,
    *,
    lower: bool = False,
    name: str = "gs1",
    extra: dict | None = None,
    negative: bool = False,
):
    npz, arrays = gemma_scope_npz(d_in=d_in, d_sae=16, lower=lower, negative=negative)
    hubenv.hub.add_commit(repo, {f"{path}/params.npz": npz})
    sae = {"id": path, "path": path, **(extra or {})}
    hubenv.add_release(name, release_yaml(name, "gemma_scope", [sae], repo_id=repo))
    return f"{name}/{path}", arrays


def close(a: torch.Tensor, b: np.ndarray) -> None:
    np.testing.assert_allclose(a.double().numpy(), b, atol=1e-5, rtol=1e-5)


def test_gemma_scope_1_jumprelu_matches_the_tutorial(hubenv) -> None:
    ref, p = gs1(
        hubenv, "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_5", 8, lower=True
    )
    sae = saereg.load_sae(ref)
    assert (sae.cfg.architecture, sae.cfg.apply_b_dec_to_input, sae.cfg.hook_name) == (
        "jumprelu",
        False,
        "blocks.3.hook_resid_post",
    )
    x = RNG.normal(size=(4, 8)).astype(np.float32)
    acts, recon = jumprelu_reference(p, x)
    xt = torch.from_numpy(x)
    close(sae.encode(xt), acts)
    close(sae(xt), recon)
    # strict '>': a pre-activation exactly at its threshold stays off
    h = sae.pre_activations(xt)
    sae.threshold.data = h[0].clone()
    assert (sae.encode(xt)[0] == 0).all()


def test_gemma_scope_jumprelu_below_zero_thresholds_keep_the_relu(hubenv) -> None:
    """The tutorial's ReLU(pre) · 1[pre > θ]: with θ < 0, a pre-activation between θ and 0
    is off (canonical jumprelu has no ReLU: the threshold becomes max(θ, 0))."""
    ref, p = gs1(
        hubenv, "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_9", 8,
        negative=True,
    )  # fmt: skip
    assert (p["threshold"] < 0).any()
    sae = saereg.load_sae(ref)
    x = RNG.normal(size=(64, 8)).astype(np.float32)
    pre = x.astype(np.float64) @ p["W_enc"] + p["b_enc"]
    assert ((pre < 0) & (pre > p["threshold"])).any()  # the case the ReLU decides
    acts, recon = jumprelu_reference(p, x)
    close(sae.encode(torch.from_numpy(x)), acts)
    close(sae(torch.from_numpy(x)), recon)


def test_gemma_scope_1_embedding_rescale(hubenv) -> None:
    ref, p = gs1(
        hubenv, "google/gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6", 9, name="emb"
    )
    sae = saereg.load_sae(ref)
    assert sae.cfg.hook_name == "hook_embed"
    adjusted = {**p, "W_enc": p["W_enc"] / 3.0, "W_dec": p["W_dec"] * 3.0}  # sqrt(9) = 3
    x = RNG.normal(size=(2, 9)).astype(np.float32)
    acts, recon = jumprelu_reference(adjusted, x)
    close(sae.encode(torch.from_numpy(x)), acts)
    close(sae(torch.from_numpy(x)), recon)
    assert sae.cfg.folded == ("embedding scale: W_enc/sqrt(9), W_dec*sqrt(9)",)


def test_gemma_scope_1_attention_reads_hook_z(hubenv) -> None:
    ref, p = gs1(
        hubenv, "google/gemma-scope-2b-pt-att", "layer_4/width_16k/average_l0_9", 8, name="att"
    )
    sae = saereg.load_sae(ref)
    assert (sae.cfg.hook_name, sae.cfg.reshape) == ("blocks.4.attn.hook_z", "hook_z")
    z = RNG.normal(size=(2, 3, 2, 4)).astype(np.float32)  # [batch, pos, heads, d_head]
    acts, recon = jumprelu_reference(p, z.reshape(2, 3, 8))
    out = sae(torch.from_numpy(z))
    assert out.shape == (2, 3, 2, 4)
    close(out.reshape(2, 3, 8), recon)
    close(sae.encode(torch.from_numpy(z)), acts)


def test_gemma_scope_1_transcoder(hubenv) -> None:
    ref, p = gs1(
        hubenv,
        "google/gemma-scope-2b-pt-transcoders",
        "layer_7/width_16k/average_l0_70",
        8,
        name="tc",
    )
    sae = saereg.load_sae(ref)
    assert sae.cfg.transcoder and sae.cfg.hook_name_out == "blocks.7.hook_mlp_out"
    x = RNG.normal(size=(3, 8)).astype(np.float32)
    close(sae(torch.from_numpy(x)), jumprelu_reference(p, x)[1])


def gs2(
    hubenv,
    folder: str,
    *,
    affine: bool = False,
    config: dict | None = None,
    name: str = "gs2",
    d_out: int | None = None,
):
    weights, t = gemma_scope2(d_in=8, d_sae=16, d_out=d_out, affine=affine)
    files = {f"{folder}/params.safetensors": weights}
    if config is not None:
        files[f"{folder}/config.json"] = json.dumps(config).encode()
    hubenv.hub.add_commit("google/gemma-scope-2-1b-pt", files)
    hubenv.add_release(
        name,
        release_yaml(
            name,
            "gemma_scope",
            [{"id": folder, "path": folder}],
            repo_id="google/gemma-scope-2-1b-pt",
        ),
    )
    return f"{name}/{folder}", {
        k.replace("w_", "W_"): v.numpy().astype(np.float64) for k, v in t.items()
    }


def test_gemma_scope_2_without_config_json(hubenv) -> None:
    ref, p = gs2(hubenv, "resid_post_all/layer_3_width_16k_l0_big")
    sae = saereg.load_sae(ref)
    assert (sae.cfg.hook_name, sae.cfg.hf_hook_name) == (
        "blocks.3.hook_resid_post",
        "model.layers.3.output",
    )
    x = RNG.normal(size=(5, 8)).astype(np.float32)
    close(sae(torch.from_numpy(x)), jumprelu_reference(p, x)[1])


def test_gemma_scope_2_affine_skip_transcoder(hubenv) -> None:
    config = {
        "hf_hook_point_in": "model.layers.9.pre_feedforward_layernorm.output",
        "hf_hook_point_out": "model.layers.9.post_feedforward_layernorm.output",
        "width": 16,
        "model_name": "google/gemma-3-1b-pt",
        "architecture": "jump_relu",
        "l0": 12,
        "affine_connection": True,
        "type": "transcoder",
    }
    ref, p = gs2(
        hubenv, "transcoder/layer_9_width_16k_l0_small_affine", affine=True, config=config, d_out=6
    )
    sae = saereg.load_sae(ref)
    assert sae.cfg.transcoder and (sae.cfg.d_in, sae.cfg.d_out) == (8, 6)
    assert tuple(sae.W_skip.shape) == (6, 8)
    x = RNG.normal(size=(4, 8)).astype(np.float32)
    acts, recon = jumprelu_reference(p, x)
    skip = x.astype(np.float64) @ p["affine_skip_connection"]
    xt = torch.from_numpy(x)
    close(sae.encode(xt), acts)
    # decode is what the latents produce; the affine skip path belongs to forward only
    close(sae.decode(sae.encode(xt)), recon)
    close(sae.decode(sae.encode(xt) * 1.0), recon)  # needs no input statistics
    close(sae.skip(xt), skip)
    close(sae(xt), recon + skip)


def test_gemma_scope_2_config_without_weights(hubenv) -> None:
    ref, _ = gs2(
        hubenv,
        "attn_out/layer_2_width_16k_l0_small",
        config={
            "architecture": "jump_relu",
            "hf_hook_point_in": "model.layers.2.self_attn.o_proj.input",
        },
    )
    cfg = load_config(ref)
    assert (cfg.d_in, cfg.d_sae, cfg.hook_name, cfg.reshape) == (
        8,
        16,
        "blocks.2.attn.hook_z",
        "hook_z",
    )
    assert cfg.hf_hook_name == "model.layers.2.self_attn.o_proj.input"
    assert not list(hubenv.hf_cache.rglob("params.safetensors"))  # header read by range only
    ranged = [p for m, p in hubenv.hub.requests if m == "GET" and "params.safetensors" in p]
    assert len(ranged) == 2


def llama(hubenv, *, nsf: float | None, name: str = "ls", **kw):
    folder = "Llama3_1-8B-Base-L5R-8x"
    files, ref = llama_scope_folder(folder, **kw)
    hubenv.hub.add_commit("fnlp/Llama3_1-8B-Base-LXR-8x", files)
    sae = {"id": "l5r_8x", "path": folder, "hook_name": "blocks.5.hook_resid_post", "hook_layer": 5}
    if nsf is not None:
        sae["norm_scaling_factor"] = nsf
    hubenv.add_release(
        name,
        release_yaml(
            name,
            "llama_scope",
            [sae],
            repo_id="fnlp/Llama3_1-8B-Base-LXR-8x",
            defaults={"normalize_activations": "expected_average_only_in"},
        ),
    )
    return f"{name}/l5r_8x", ref


def test_llama_scope_dataset_norm_folded(hubenv) -> None:
    ref, raw = llama(hubenv, nsf=16**0.5 / 3.0)
    sae = saereg.load_sae(ref)
    assert sae.dtype == torch.float32 and sae.cfg.architecture == "jumprelu"
    assert torch.all(sae.threshold == sae.threshold[0])  # one scalar threshold for all latents
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(5)) * 3
    f_ref, y_ref = llama_scope_reference(raw, x, raw["s"])
    torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x).double(), y_ref, atol=1e-4, rtol=1e-4)


def test_llama_scope_factor_from_hyperparams_when_release_has_none(hubenv) -> None:
    ref, raw = llama(hubenv, nsf=None, name="ls2")
    sae = saereg.load_sae(ref)
    assert sae.cfg.normalization == {"kind": "scale", "factor": raw["s"]} and not sae.cfg.folded
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(
        sae(x).double(), llama_scope_reference(raw, x, raw["s"])[1], atol=1e-4, rtol=1e-4
    )
    cfg = load_config(ref)
    assert (cfg.d_sae, cfg.hook_name) == (32, "blocks.5.hook_resid_post")


def test_llama_scope_r1_distill(hubenv) -> None:
    from safetensors.torch import save

    g = torch.Generator().manual_seed(9)
    t = {
        "encoder.weight": torch.randn(24, 8, generator=g),
        "encoder.bias": torch.randn(24, generator=g),
        "decoder.weight": torch.randn(8, 24, generator=g),
        "decoder.bias": torch.randn(8, generator=g),
        "log_jumprelu_threshold": torch.randn(24, generator=g) * 0.1,
    }
    folder = "800M-Slimpajama-0-OpenR1-Math-220k/L7R"
    hubenv.hub.add_commit(
        "fnlp/Llama-Scope-R1-Distill",
        {
            f"{folder}/config.json": json.dumps(
                {"d_model": 8, "expansion_factor": 3, "hook_point_in": "blocks.7.hook_resid_post"}
            ).encode(),
            f"{folder}/sae_weights.safetensors": save(t),
        },
    )
    s = 1.7
    hubenv.add_release(
        "r1",
        release_yaml(
            "r1",
            "llama_scope",
            [
                {
                    "id": "l7r",
                    "path": folder,
                    "norm_scaling_factor": s,
                    "hook_name": "blocks.7.hook_resid_post",
                    "hook_layer": 7,
                }
            ],
            repo_id="fnlp/Llama-Scope-R1-Distill",
            defaults={"normalize_activations": "expected_average_only_in"},
        ),
    )
    sae = saereg.load_sae("r1/l7r")
    x = torch.randn(3, 8, generator=g)
    td = {k: v.double() for k, v in t.items()}
    h = (s * x.double()) @ td["encoder.weight"].T + td["encoder.bias"]
    f = torch.relu(h) * (h > td["log_jumprelu_threshold"].exp()).double()
    y = (f @ td["decoder.weight"].T + td["decoder.bias"]) / s
    torch.testing.assert_close(sae.encode(x).double(), f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).double(), y, atol=1e-5, rtol=1e-5)


def oai(hubenv, layer: int = 8, body: bytes | None = None):
    data, state = oai_pt()
    path = f"resid_post_mlp_v5_32k/autoencoders/{layer}.pt"
    hubenv.hub.static[f"/static/sparse-autoencoder/gpt2-small/{path}"] = body or data
    hubenv.add_release(
        "oai",
        release_yaml(
            "oai",
            "oai",
            [
                {
                    "id": f"blocks.{layer}.hook_resid_post",
                    "path": path,
                    "hook_name": f"blocks.{layer}.hook_resid_post",
                    "hook_layer": layer,
                }
            ],
            base_url="https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/",
            defaults={"normalize_activations": "layer_norm", "context_size": 64},
        ),
    )
    return f"oai/blocks.{layer}.hook_resid_post", state


def test_openai_original_matches_autoencoder_math(hubenv) -> None:
    ref, state = oai(hubenv)
    sae = saereg.load_sae(ref)
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", 4)
    assert sae.cfg.normalization == {"kind": "layer_norm", "eps": 1e-5}
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(2)) * 4 + 1
    lat, recon = oai_reference(state, x)
    torch.testing.assert_close(sae.encode(x).double(), lat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).double(), recon, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(x)).double(), recon, atol=1e-5, rtol=1e-5)
    assert sae.cfg.source["revision"].startswith("sha256-")
    before = hubenv.count()
    saereg.load_sae(ref)
    assert hubenv.count() == before


def test_layer_norm_decode_needs_the_input_statistics(hubenv) -> None:
    ref, _ = oai(hubenv)
    sae = saereg.load_sae(ref)
    x = torch.randn(2, 12)
    f = sae.encode(x)
    torch.testing.assert_close(sae.decode(f * 1.0), sae(x))  # the statistics travel with f
    bare = f.detach().numpy().copy()  # latents that left torch: nothing to carry them
    with pytest.raises(ValueError, match="decode\\(\\) needs the statistics of the input"):
        sae.decode(torch.from_numpy(bare))
    torch.testing.assert_close(sae.decode(torch.from_numpy(bare), norm=sae.input_norm(x)), sae(x))


def test_pickle_carrying_code_is_refused(hubenv) -> None:
    import io
    import pickle

    class Evil:
        def __reduce__(self):
            return (math.floor, (1.5,))

    buf = io.BytesIO()
    torch.save({"pre_bias": torch.zeros(2), "evil": Evil()}, buf)
    ref, _ = oai(hubenv, layer=3, body=buf.getvalue())
    with pytest.raises(
        saereg.SaeregError,
        match=r"3\.pt contains objects other than tensors and "
        r"plain values .* refusing to unpickle it",
    ):
        saereg.load_sae(ref)
    del pickle
