"""Caching, offline use, revisions, checksums, atomic writes, and every bad file's message."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save as st_save

import saereg
from saereg.loading import fetch_canonical, load_config
from saereg.store.canonical import canonical_cache_path

from .conftest import run_saereg
from .publishers import gemma_scope2, release_yaml, saelens_folder

REPO = "test-org/robust"
HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3}


def publish(hubenv, files, *, folder="sae", name="rob", sae_extra=None, revision=None):
    commit = hubenv.hub.add_commit(REPO, files)
    hubenv.add_release(
        name,
        release_yaml(
            name,
            "saelens",
            [{"id": folder, "path": folder, **HOOK, **(sae_extra or {})}],
            repo_id=REPO,
            revision=revision,
        ),
    )
    return f"{name}/{folder}", commit


def test_prepopulated_hf_cache_loads_offline_with_no_request(hubenv, monkeypatch) -> None:
    files, t = saelens_folder("sae", arch="jumprelu", v6=True)
    ref, _ = publish(hubenv, files)
    fetch_canonical(ref, quiet=True)  # populates the HF cache
    import shutil

    shutil.rmtree(hubenv.cache)  # drop saereg's canonical cache: conversion must rerun
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = hubenv.count()
    sae = saereg.load_sae(ref)
    torch.testing.assert_close(sae.W_enc, t["W_enc"])
    cfg = load_config(ref)
    assert cfg.d_sae == 16
    assert hubenv.count() == before


def test_cached_files_are_used_without_network_even_online(hubenv) -> None:
    """Files already in the HF cache (ref recorded) make no network call, also for the
    config-only path that needs a safetensors header."""
    weights, _ = gemma_scope2(d_in=8, d_sae=16)
    folder = "resid_post/layer_1_width_16k_l0_small"
    hubenv.hub.add_commit("google/gemma-scope-2-1b-pt", {f"{folder}/params.safetensors": weights})
    hubenv.add_release(
        "g2",
        release_yaml(
            "g2",
            "gemma_scope",
            [{"id": folder, "path": folder}],
            repo_id="google/gemma-scope-2-1b-pt",
        ),
    )
    fetch_canonical(f"g2/{folder}", quiet=True)
    before = hubenv.count()
    assert load_config(f"g2/{folder}").d_in == 8
    saereg.load_sae(f"g2/{folder}")
    assert hubenv.count() == before


def test_offline_and_not_cached_says_what_to_do(hubenv, monkeypatch) -> None:
    files, _ = saelens_folder("sae")
    ref, _ = publish(hubenv, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(ref)
    assert str(err.value).startswith(
        f"{REPO}/sae/cfg.json (revision main) is not in the Hugging Face cache at "
        f"{hubenv.hf_cache} and downloads are off (HF_HUB_OFFLINE / SAEREG_OFFLINE)"
    )
    assert hubenv.count() == 0


def test_pinned_revision_is_used_and_recorded(hubenv) -> None:
    files, t_old = saelens_folder("sae")
    old = hubenv.hub.add_commit(REPO, files)
    files_new, _ = saelens_folder("sae")
    ref, new = publish(hubenv, files_new, revision=None)
    assert new != old
    assert saereg.load_sae(ref).cfg.source["revision"] == new
    pinned = saereg.load_sae(ref, revision=old)
    assert pinned.cfg.source["revision"] == old
    torch.testing.assert_close(pinned.W_enc, t_old["W_enc"])
    hubenv.add_release(
        "rob",
        release_yaml(
            "rob", "saelens", [{"id": "sae", "path": "sae", **HOOK}], repo_id=REPO, revision=old
        ),
    )
    assert saereg.load_sae(ref).cfg.source["revision"] == old
    assert canonical_cache_path("rob", "sae", old).is_file()


def test_pinned_checksums(hubenv) -> None:
    files, _ = saelens_folder("sae")
    good = hashlib.sha256(files["sae/cfg.json"]).hexdigest()
    ref, _ = publish(hubenv, files, sae_extra={"sha256": {"sae/cfg.json": good}})
    assert saereg.load_sae(ref).cfg.source["files"]["sae/cfg.json"] == good
    bad = "0" * 64
    ref, _ = publish(hubenv, files, name="rob2", sae_extra={"sha256": {"sae/cfg.json": bad}})
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(ref)
    assert str(err.value) == (
        f"rob2/sae: sae/cfg.json has sha256 {good}, but the release pins {bad}. The upstream "
        "file changed (or the download is corrupt); refusing to load it. Delete it from the "
        "cache to retry, or report the release."
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f, t: f.update(
                {
                    "sae/sae_weights.safetensors": st_save(
                        {k: v for k, v in t.items() if k != "b_dec"}
                    )
                }
            ),
            "missing tensor 'b_dec' (expected shape [8])",
        ),
        (
            lambda f, t: f.update(
                {"sae/sae_weights.safetensors": st_save({**t, "W_dec": torch.zeros(16, 7)})}
            ),
            "W_dec has shape [16, 7], expected [16, 8]",
        ),
        (
            lambda f, t: f.update(
                {"sae/sae_weights.safetensors": st_save({**t, "mystery": torch.zeros(3)})}
            ),
            "unexpected tensor 'mystery'",
        ),
        (
            lambda f, t: f.update(
                {"sae/sae_weights.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"}
            ),
            "corrupted safetensors header",
        ),
        (
            lambda f, t: f.update({"sae/cfg.json": json.dumps({"d_in": 8, "d_sae": 99}).encode()}),
            "sae/cfg.json says d_sae=99 but W_enc has shape [8, 16]",
        ),
        (
            lambda f, t: f.update({"sae/cfg.json": b"{oops"}),
            "cfg.json (cfg.json) is not valid JSON",
        ),
    ],
)
def test_bad_publisher_files_are_rejected(hubenv, mutate, message) -> None:
    files, t = saelens_folder("sae")
    mutate(files, t)
    ref, _ = publish(hubenv, files)
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(ref)
    assert message in str(err.value)
    assert not list(hubenv.cache.rglob("*.safetensors"))


def test_catalogue_disagreeing_with_the_files(hubenv) -> None:
    files, _ = saelens_folder("sae")
    ref, _ = publish(hubenv, files, sae_extra={"d_sae": 32})
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(ref)
    assert "rob/sae: the release lists d_sae=32 but the files hold d_sae=16" in str(err.value)


def test_missing_upstream_file(hubenv) -> None:
    files, _ = saelens_folder("other")
    ref, _ = publish(hubenv, files)
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(ref)
    assert str(err.value) == (
        f"{REPO} has no file 'sae/cfg.json' at revision main; the release may be out of date "
        "(`saereg sync-check` compares it with the repository)"
    )


def test_interrupted_conversion_leaves_nothing_that_loads(hubenv, monkeypatch) -> None:
    files, _ = saelens_folder("sae")
    ref, commit = publish(hubenv, files)
    import saereg.store.canonical as canonical

    monkeypatch.setenv("SAEREG_IN_PLACE", "0")  # a full conversion, streamed tensor by tensor
    real = canonical._copy_origin
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(canonical, "_copy_origin", dying)
    with pytest.raises(KeyboardInterrupt):
        fetch_canonical(ref, quiet=True)
    assert not list(hubenv.cache.rglob("*.safetensors"))
    assert not list(hubenv.cache.rglob("*.tmp"))
    monkeypatch.setattr(canonical, "_copy_origin", real)
    path = fetch_canonical(ref, quiet=True)
    assert path == canonical_cache_path("rob", "sae", commit)


def test_resumable_url_download(hubenv) -> None:
    from .publishers import oai_pt

    data, _ = oai_pt()
    path = "resid_post_mlp_v5_32k/autoencoders/2.pt"
    key = f"/static/sparse-autoencoder/gpt2-small/{path}"
    hubenv.hub.static[key] = data
    hubenv.hub.fail_after[key] = len(data) // 2
    hubenv.add_release(
        "oai",
        release_yaml(
            "oai",
            "oai",
            [{"id": "l2", "path": path, "hook_name": "blocks.2.hook_resid_post", "hook_layer": 2}],
            base_url="https://openaipublic.blob.core.windows.net/sparse-autoencoder/gpt2-small/",
            defaults={"normalize_activations": "layer_norm"},
        ),
    )
    with pytest.raises(saereg.SaeregError, match="Partial data is kept and the next attempt"):
        saereg.load_sae("oai/l2", quiet=True)
    assert any(p.name.endswith(".part") for p in hubenv.cache.rglob("*"))
    sae = saereg.load_sae("oai/l2", quiet=True)
    ranged = [p for m, p in hubenv.hub.requests if p == key]
    assert len(ranged) == 2 and sae.cfg.k == 4
    assert sae.cfg.source["files"][path] == hashlib.sha256(data).hexdigest()


def test_device_and_dtype(hubenv) -> None:
    files, _ = saelens_folder("sae")
    ref, _ = publish(hubenv, files)
    meta = saereg.load_sae(ref, device="meta")
    assert meta.W_enc.device.type == "meta" and tuple(meta.W_enc.shape) == (8, 16)
    half = saereg.load_sae(ref, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.cfg.dtype == "bfloat16"
    assert half(torch.randn(2, 8)).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in half.parameters())


def test_save_and_load_round_trip(hubenv, tmp_path) -> None:
    files, _ = saelens_folder("sae", arch="gated")
    ref, _ = publish(hubenv, files)
    sae = saereg.load_sae(ref)
    out = sae.save(tmp_path / "copy.safetensors")
    again = saereg.SAE.load(out)
    x = torch.randn(4, 8)
    torch.testing.assert_close(again(x), sae(x))
    assert again.cfg == sae.cfg


def test_cli_fetch_inspect_and_errors(hubenv) -> None:
    files, _ = saelens_folder("sae", arch="jumprelu", v6=True)
    ref, commit = publish(hubenv, files)
    env = {"HF_ENDPOINT": hubenv.hub.url}
    fetched = run_saereg("fetch", ref, "--quiet", env=env)
    assert fetched.returncode == 0, fetched.stderr
    path = fetched.stdout.strip()
    assert path == str(canonical_cache_path("rob", "sae", commit))
    shown = run_saereg("inspect", path)
    assert shown.returncode == 0
    assert "  architecture  jumprelu" in shown.stdout
    assert "    W_enc      F32   [8, 16]" in shown.stdout
    data = json.loads(run_saereg("inspect", path, "--json").stdout)
    assert data["config"]["source"]["revision"] == commit
    missing = run_saereg("fetch", "rob/nope", env=env)
    assert missing.returncode == 2 and "Its 1 SAEs: sae (`saereg info rob --all`" in missing.stderr
    offline = run_saereg("fetch", ref, "--force", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0  # cached files
    broken = run_saereg("inspect", str(hubenv.root / "releases" / "rob.yaml"))
    assert broken.returncode == 1 and "too short" not in broken.stderr


def test_progress_bars_follow_quiet(hubenv, capfd, monkeypatch) -> None:
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")  # an in-place entry has nothing to convert
    files, _ = saelens_folder("sae")
    ref, _ = publish(hubenv, files)
    fetch_canonical(ref, quiet=True)
    assert capfd.readouterr().err == ""
    fetch_canonical(ref, quiet=False, force=True)
    err = capfd.readouterr().err
    assert "converting" in err and "100%" in err


def test_hf_cache_location_follows_the_environment(monkeypatch, tmp_path) -> None:
    from saereg.store.fetch import hf_cache_dir

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dir() == tmp_path / "hub"


def test_config_of_npz_formats_falls_back_to_one_conversion(hubenv) -> None:
    from .publishers import gemma_scope_npz

    npz, _ = gemma_scope_npz(d_in=8, d_sae=16)
    path = "layer_1/width_16k/average_l0_9"
    hubenv.hub.add_commit("google/gemma-scope-2b-pt-mlp", {f"{path}/params.npz": npz})
    hubenv.add_release(
        "mlp",
        release_yaml(
            "mlp",
            "gemma_scope",
            [{"id": path, "path": path}],
            repo_id="google/gemma-scope-2b-pt-mlp",
        ),
    )
    cfg = load_config(f"mlp/{path}")
    assert (cfg.hook_name, cfg.d_sae) == ("blocks.1.hook_mlp_out", 16)
    before = hubenv.count()
    saereg.load_sae(f"mlp/{path}")  # converted once by load_config: nothing to download
    assert hubenv.count() == before


def test_edited_release_files_are_reread(hubenv) -> None:
    files, _ = saelens_folder("sae")
    ref, _ = publish(hubenv, files)
    assert saereg.resolve(ref).context_size == 128
    path = hubenv.releases / "rob.yaml"
    path.write_text(path.read_text().replace("context_size: 128", "context_size: 256"))
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert saereg.resolve(ref).context_size == 256
