"""SAELens-native and Matryoshka releases through the real huggingface_hub download path."""

from __future__ import annotations

import json

import pytest
import torch

import saereg
from saereg.loading import fetch_canonical, load_config
from saereg.store.canonical import read_config

from .publishers import release_yaml, saelens_folder, saelens_reference

REPO = "test-org/saelens-saes"
X = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))


def publish(
    hubenv,
    folder: str,
    sae: dict,
    files: dict,
    name: str = "tiny-saelens",
    fmt: str = "saelens",
    defaults: dict | None = None,
) -> str:
    hubenv.hub.add_commit(REPO, files)
    hubenv.add_release(
        name,
        release_yaml(
            name, fmt, [{"id": folder, "path": folder, **sae}], repo_id=REPO, defaults=defaults
        ),
    )
    return f"{name}/{folder}"


def assert_matches(sae, t, arch, normalize="none", k=None, x=X):
    f_ref, y_ref = saelens_reference(t, x, arch, normalize, k)
    f = sae.encode(x)
    torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(f).double(), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).double(), y_ref, atol=1e-5, rtol=1e-5)


HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3}


@pytest.mark.parametrize(
    ("arch", "normalize", "k", "v6"),
    [
        ("standard", "none", None, False),
        ("standard", "none", None, True),
        ("jumprelu", "none", None, True),
        ("gated", "none", None, False),
        ("topk", "layer_norm", 3, False),  # the re-saved OpenAI v5 SAEs
        ("topk", "none", 3, True),
    ],
)
def test_architectures_match_saelens_math(hubenv, arch, normalize, k, v6) -> None:
    files, t = saelens_folder(
        "sae", arch="standard" if k and not v6 else arch, normalize=normalize, k=k, v6=v6
    )
    ref = publish(hubenv, "sae", HOOK, files, defaults={"normalize_activations": normalize})
    sae = saereg.load_sae(ref)
    assert sae.cfg.architecture == {"standard": "relu"}.get(arch, arch)
    assert sae.cfg.k == k
    assert sae.cfg.normalization["kind"] == normalize
    assert_matches(sae, t, arch, normalize, k)
    assert (sae.encode(X) > 0).sum(-1).max() <= (k or 16)


def test_source_provenance_and_second_load_is_offline(hubenv) -> None:
    files, t = saelens_folder("blocks.3.hook_resid_pre")
    commit = hubenv.hub.add_commit(REPO, files)
    ref = publish(hubenv, "blocks.3.hook_resid_pre", HOOK, {})
    path = fetch_canonical(ref, quiet=True)
    cfg = read_config(path)
    import hashlib

    assert cfg.source["revision"] == commit
    assert cfg.source["files"] == {
        p: hashlib.sha256(files[p]).hexdigest()
        for p in (
            "blocks.3.hook_resid_pre/cfg.json",
            "blocks.3.hook_resid_pre/sae_weights.safetensors",
        )
    }
    assert cfg.source["plugin"].startswith("saereg==") and cfg.hook_name == HOOK["hook_name"]
    assert (cfg.model, cfg.context_size, cfg.hook_layer) == ("test-model", 128, 3)
    before = hubenv.count()
    sae = saereg.load_sae(ref, dtype="float64")
    assert hubenv.count() == before  # canonical cache hit: no network at all
    assert sae.dtype == torch.float64
    assert_matches(sae, t, "standard")


def test_release_normalization_override_and_norm_factor_fold(hubenv) -> None:
    files, t = saelens_folder("mistral", normalize="none")
    ref = publish(
        hubenv,
        "mistral",
        HOOK,
        files,
        name="cnr",
        defaults={"normalize_activations": "constant_norm_rescale"},
    )
    sae = saereg.load_sae(ref)
    assert sae.cfg.normalization == {"kind": "constant_norm_rescale"}
    assert_matches(sae, t, "standard", "constant_norm_rescale")

    files, t = saelens_folder("mlp", normalize="expected_average_only_in")
    s = 2.5
    ref = publish(
        hubenv,
        "mlp",
        {**HOOK, "norm_scaling_factor": s},
        files,
        name="nsf",
        defaults={"normalize_activations": "expected_average_only_in"},
    )
    sae = saereg.load_sae(ref)
    # an input scale, not folded: the publisher's weights are read as they are
    assert sae.cfg.normalization == {"kind": "scale", "factor": 2.5} and sae.cfg.folded == ()
    f_ref, y_ref = saelens_reference(t, X * s, "standard")  # trained on s·x
    torch.testing.assert_close(sae.encode(X).double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(X).double(), y_ref / s, atol=1e-5, rtol=1e-5)


def test_missing_norm_factor_warns_and_runs_unscaled(hubenv) -> None:
    files, t = saelens_folder("jh", normalize="expected_average_only_in")
    ref = publish(
        hubenv,
        "jh",
        HOOK,
        files,
        name="jh",
        defaults={"normalize_activations": "expected_average_only_in"},
    )
    with pytest.warns(UserWarning, match="no norm_scaling_factor is published"):
        sae = saereg.load_sae(ref)
    assert_matches(sae, t, "standard")


def test_legacy_scaling_factor(hubenv) -> None:
    files, t = saelens_folder("ones", scaling_factor=torch.ones(16))
    sae = saereg.load_sae(publish(hubenv, "ones", HOOK, files, name="ones"))
    assert_matches(sae, t, "standard")
    sf = torch.linspace(0.5, 1.5, 16)
    files, t = saelens_folder("sf", scaling_factor=sf)
    sae = saereg.load_sae(publish(hubenv, "sf", HOOK, files, name="sf"))
    f_ref, _ = saelens_reference(t, X, "standard")
    y_ref = (f_ref * sf.double()) @ t["W_dec"].double() + t["b_dec"].double()
    torch.testing.assert_close(sae(X).double(), y_ref, atol=1e-5, rtol=1e-5)


def test_hook_z_input_is_flattened_and_restored(hubenv) -> None:
    files, t = saelens_folder("z", hook="blocks.2.attn.hook_z")
    ref = publish(
        hubenv, "z", {"hook_name": "blocks.2.attn.hook_z", "hook_layer": 2}, files, name="hookz"
    )
    sae = saereg.load_sae(ref)
    assert sae.cfg.reshape == "hook_z"
    x4 = X.reshape(3, 5, 2, 4)
    f = sae.encode(x4)
    assert f.shape == (3, 5, 16)
    out = sae(x4)
    assert out.shape == (3, 5, 2, 4)
    _, y_ref = saelens_reference(t, X, "standard")
    torch.testing.assert_close(out.reshape(3, 5, 8).double(), y_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="hook_z input has 3 heads of size 4 = 12 features"):
        sae.encode(torch.randn(2, 3, 4))


def test_matryoshka_nested_widths(hubenv) -> None:
    files, t = saelens_folder(
        "standard/blocks.0.hook_resid_post",
        arch="jumprelu",
        v6=True,
        d_sae=16,
        hook="blocks.0.hook_resid_post",
    )
    hubenv.hub.add_commit(REPO, files)
    hubenv.add_release(
        "mat",
        release_yaml(
            "mat",
            "matryoshka",
            [
                {
                    "id": "blocks.0.hook_resid_post",
                    "path": "standard/blocks.0.hook_resid_post",
                    "hook_name": "blocks.0.hook_resid_post",
                    "hook_layer": 0,
                }
            ],
            repo_id=REPO,
            defaults={"d_sae": 16, "nested_widths": [4, 8, 16]},
        ),
    )
    sae = saereg.load_sae("mat/blocks.0.hook_resid_post")
    assert sae.cfg.nested_widths == (4, 8, 16)
    small = {
        "W_enc": t["W_enc"][:, :4],
        "b_enc": t["b_enc"][:4],
        "threshold": t["threshold"][:4],
        "W_dec": t["W_dec"][:4],
        "b_dec": t["b_dec"],
    }
    f_ref, y_ref = saelens_reference(small, X, "jumprelu")
    f = sae.encode(X, width=4)
    assert f.shape[-1] == 4
    torch.testing.assert_close(f.double(), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.decode(f).double(), y_ref, atol=1e-5, rtol=1e-5)
    trunc = sae.truncated(8)
    assert (trunc.cfg.d_sae, trunc.cfg.nested_widths, tuple(trunc.W_dec.shape)) == (
        8,
        (4, 8),
        (8, 8),
    )
    torch.testing.assert_close(trunc.encode(X), sae.encode(X, width=8))
    with pytest.raises(
        ValueError,
        match=r"width 5 is not one of this Matryoshka SAE's nested "
        r"widths \[4, 8, 16\]",
    ):
        sae.encode(X, width=5)


def test_load_config_reads_only_small_files_and_a_header(hubenv) -> None:
    files, _ = saelens_folder("cfgonly", arch="jumprelu", v6=True)
    ref = publish(hubenv, "cfgonly", HOOK, files, name="cfgonly")
    cfg = load_config(ref)
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.dtype) == ("jumprelu", 8, 16, "float32")
    gets = [p for m, p in hubenv.hub.requests if m == "GET" and "sae_weights" in p]
    assert gets and all("sae_weights" in p for p in gets)
    # only ranged reads of the weights: the full file was never downloaded
    snapshot_files = list(hubenv.hf_cache.rglob("sae_weights.safetensors"))
    assert snapshot_files == []


def test_export_saelens_layout(hubenv, tmp_path) -> None:
    files, t = saelens_folder("exp", arch="jumprelu", v6=True)
    ref = publish(hubenv, "exp", HOOK, files, name="exp")
    from saereg.cli import main

    assert (
        main(["export", ref, "--format", "saelens", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    )
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["hook_name"] == HOOK["hook_name"]
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "out" / "sae_weights.safetensors")
    assert set(exported) == {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}
    torch.testing.assert_close(exported["W_enc"], t["W_enc"])


def test_constant_scale_normalization_matches_scaled_input() -> None:
    from saereg.sae.module import SAE
    from saereg.store.sae_config import SAEConfig

    g = torch.Generator().manual_seed(4)
    t = {
        "W_enc": torch.randn(8, 16, generator=g),
        "b_enc": torch.randn(16, generator=g),
        "W_dec": torch.randn(16, 8, generator=g),
        "b_dec": torch.randn(8, generator=g),
    }
    base = dict(
        architecture="relu",
        d_in=8,
        d_sae=16,
        d_out=8,
        apply_b_dec_to_input=True,
        reshape="none",
        dtype="float32",
        source={"release": None, "sae_id": None, "format": "test", "files": {}},
    )
    scaled = SAE.from_tensors(
        SAEConfig.from_dict({**base, "normalization": {"kind": "scale", "factor": 3.0}}), t
    )
    plain = SAE.from_tensors(SAEConfig.from_dict({**base, "normalization": {"kind": "none"}}), t)
    torch.testing.assert_close(scaled.encode(X), plain.encode(X * 3.0))
    torch.testing.assert_close(scaled(X), plain(X * 3.0) / 3.0)


def test_exported_saelens_folder_loads_back_identically(hubenv, tmp_path) -> None:
    """`saereg export --format saelens` writes a folder the saelens format (like SAELens
    itself) reads; loading it back gives the same SAE."""
    files, _ = saelens_folder("orig", arch="topk", k=3, v6=True)
    ref = publish(hubenv, "orig", HOOK, files, name="orig")
    sae = saereg.load_sae(ref)
    from saereg.cli import main

    out = tmp_path / "exported"
    assert main(["export", ref, "--out", str(out), "--quiet"]) == 0
    exported = {f"copy/{p.name}": p.read_bytes() for p in out.iterdir()}
    ref2 = publish(hubenv, "copy", HOOK, exported, name="copy")
    again = saereg.load_sae(ref2)
    assert again.cfg.architecture == "topk" and again.cfg.k == 3
    torch.testing.assert_close(again(X), sae(X))
    torch.testing.assert_close(again.encode(X), sae.encode(X))
