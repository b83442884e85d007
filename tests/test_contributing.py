"""The contributor path: `saereg new` and `sync-check` against the local hub server."""

from __future__ import annotations

import json

import pytest

import saereg

from .conftest import run_saereg
from .publishers import gemma_scope_npz, llama_scope_folder, saelens_folder


def env_for(hubenv) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hubenv.hub.url,
        "HF_HUB_CACHE": str(hubenv.hf_cache),
        "SAEREG_CACHE": str(hubenv.cache),
        "SAEREG_RELEASES": str(hubenv.releases),
    }


def gemma_repo(hubenv) -> str:
    npz, _ = gemma_scope_npz(d_in=8, d_sae=16)
    files = {
        f"layer_{layer}/width_16k/average_l0_{l0}/params.npz": npz
        for layer, l0 in ((0, 12), (0, 40), (1, 9))
    }
    files["README.md"] = b"# Gemma Scope"
    return hubenv.hub.add_commit("google/gemma-scope-2b-pt-mlp", files)


def test_new_scaffolds_gemma_scope_that_validates_and_resolves(hubenv) -> None:
    commit = gemma_repo(hubenv)
    env = env_for(hubenv)
    made = run_saereg(
        "new",
        "--repo",
        "google/gemma-scope-2b-pt-mlp",
        "--format",
        "gemma_scope",
        "--release",
        "gs-mlp-test",
        "--out",
        str(hubenv.releases),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    path = hubenv.releases / "gs-mlp-test.yaml"
    assert made.stdout.startswith(f"{path}: 3 SAEs scaffolded from google/gemma-scope-2b-pt-mlp")
    text = path.read_text()
    assert f"revision: {commit}" in text
    assert "#  - set `model` to the model the SAEs were trained on" in text
    assert "model: TODO" in text
    checked = run_saereg("validate", str(path), env=env)
    assert checked.returncode == 0, checked.stdout
    assert "hint [todo] $.model: model is still the TODO placeholder from `saereg new`" in (
        checked.stdout
    )
    info = json.loads(
        run_saereg(
            "resolve", "gs-mlp-test/layer_1/width_16k/average_l0_9", "--json", env=env
        ).stdout
    )
    assert (info["hook_name"], info["hook_layer"], info["d_sae"], info["context_size"]) == (
        "blocks.1.hook_mlp_out",
        1,
        16384,
        1024,
    )
    assert info["revision"] == commit
    again = run_saereg(
        "new",
        "--repo",
        "google/gemma-scope-2b-pt-mlp",
        "--format",
        "gemma_scope",
        "--release",
        "gs-mlp-test",
        "--out",
        str(hubenv.releases),
        env=env,
    )
    assert again.returncode == 1
    assert "already exists; saereg new never overwrites a release" in again.stderr


def test_new_scaffolds_llama_scope_and_saelens_layouts(hubenv) -> None:
    files = {}
    for layer in (3, 4):
        folder_files, _ = llama_scope_folder(f"Llama3_1-8B-Base-L{layer}R-8x")
        files.update(folder_files)
    hubenv.hub.add_commit("fnlp/Llama3_1-8B-Base-LXR-8x", files)
    env = env_for(hubenv)
    made = run_saereg(
        "new",
        "--repo",
        "fnlp/Llama3_1-8B-Base-LXR-8x",
        "--format",
        "llama_scope",
        "--out",
        str(hubenv.releases),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    info = saereg.get_release("llama3_1-8b-base-lxr-8x")
    assert [e.id for e in info.saes] == ["l3r_8x", "l4r_8x"]
    assert info.defaults["normalize_activations"] == "expected_average_only_in"
    assert run_saereg("validate", str(hubenv.releases), "--standalone", env=env).returncode == 0

    sl = {}
    for hook in ("blocks.0.hook_resid_pre", "blocks.5.hook_resid_pre"):
        folder_files, _ = saelens_folder(hook, hook=hook)
        sl.update(folder_files)
    hubenv.hub.add_commit("someone/my-saes", sl)
    made = run_saereg(
        "new",
        "--repo",
        "someone/my-saes",
        "--format",
        "saelens",
        "--release",
        "my-saes",
        "--out",
        str(hubenv.releases),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    resolved = json.loads(
        run_saereg("resolve", "my-saes/blocks.5.hook_resid_pre", "--json", env=env).stdout
    )
    assert (resolved["hook_layer"], resolved["path"]) == (5, "blocks.5.hook_resid_pre")
    # and the scaffolded release loads end to end
    sae = saereg.load_sae("my-saes/blocks.5.hook_resid_pre")
    assert sae.cfg.hook_name == "blocks.5.hook_resid_pre"


def test_new_reports_formats_that_find_nothing(hubenv) -> None:
    hubenv.hub.add_commit("someone/empty", {"README.md": b"hi"})
    made = run_saereg(
        "new",
        "--repo",
        "someone/empty",
        "--format",
        "gemma_scope",
        "--out",
        str(hubenv.releases),
        env=env_for(hubenv),
    )
    assert made.returncode == 1
    assert "format 'gemma_scope' found no SAEs in someone/empty" in made.stderr
    missing = run_saereg(
        "new",
        "--repo",
        "nobody/nothing",
        "--format",
        "saelens",
        "--out",
        str(hubenv.releases),
        env=env_for(hubenv),
    )
    assert missing.returncode == 1
    assert "nobody/nothing: repository not found" in missing.stderr


def test_sync_check_finds_vanished_and_unregistered(hubenv) -> None:
    gemma_repo(hubenv)
    env = env_for(hubenv)
    run_saereg(
        "new",
        "--repo",
        "google/gemma-scope-2b-pt-mlp",
        "--format",
        "gemma_scope",
        "--release",
        "gs-sync",
        "--out",
        str(hubenv.releases),
        env=env,
    )
    ok = run_saereg("sync-check", "gs-sync", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gs-sync (google/gemma-scope-2b-pt-mlp @ " in ok.stdout and "in sync" in ok.stdout

    # upstream moves on: one folder removed, one added; the release follows main (unpinned)
    path = hubenv.releases / "gs-sync.yaml"
    path.write_text(
        "\n".join(
            "revision: null" if line.startswith("revision:") else line
            for line in path.read_text().splitlines()
        )
        + "\n"
    )
    repo = "google/gemma-scope-2b-pt-mlp"
    current = dict(hubenv.hub.commits[repo][hubenv.hub.refs[repo]["main"]])
    npz = current.pop("layer_0/width_16k/average_l0_40/params.npz")
    current["layer_2/width_16k/average_l0_7/params.npz"] = npz
    hubenv.hub.commits[repo] = {}
    hubenv.hub.refs[repo] = {}
    hubenv.hub.add_commit(repo, current)
    drift = run_saereg("sync-check", "gs-sync", env=env)
    assert drift.returncode == 1
    assert "1 vanished, 1 not registered" in drift.stdout
    assert (
        "  - vanished: layer_0/width_16k/average_l0_40 (layer_0/width_16k/average_l0_40/params.npz)"
    ) in drift.stdout
    assert "  + not registered: layer_2/width_16k/average_l0_7" in drift.stdout
    data = json.loads(run_saereg("sync-check", "gs-sync", "--json", env=env).stdout)
    assert data[0]["in_sync"] is False and data[0]["unregistered"] == [
        "layer_2/width_16k/average_l0_7"
    ]


def test_sync_check_offline_and_bad_names(hubenv) -> None:
    env = {**env_for(hubenv), "HF_HUB_OFFLINE": "1"}
    offline = run_saereg("sync-check", "gpt2-small-res-jb", env=env)
    assert offline.returncode == 2
    assert offline.stderr.strip() == (
        "saereg sync-check: this command reads repository listings from the hub, but "
        "downloads are off (HF_HUB_OFFLINE / SAEREG_OFFLINE); run it online"
    )
    bad = run_saereg("sync-check", "gpt2-small-res-jbb", env=env_for(hubenv))
    assert bad.returncode == 2 and "Did you mean: gpt2-small-res-jb" in bad.stderr
    new_offline = run_saereg(
        "new", "--repo", "a/b", "--format", "saelens", "--out", str(hubenv.releases), env=env
    )
    assert new_offline.returncode == 2


@pytest.mark.parametrize("fmt", ["oai", "temporal"])
def test_formats_without_hub_discovery_say_so(hubenv, fmt) -> None:
    hubenv.hub.add_commit("someone/x", {"a.pt": b"x"})
    made = run_saereg(
        "new",
        "--repo",
        "someone/x",
        "--format",
        fmt,
        "--out",
        str(hubenv.releases),
        env=env_for(hubenv),
    )
    assert made.returncode == 1 and f"format {fmt!r} found no SAEs" in made.stderr


def test_new_says_a_hook_name_is_required_not_optional(hubenv) -> None:
    """Folders named neither by hook nor with a config naming one: the scaffold's header
    asks for each SAE's hook_name as the schema requires it, not "leave null"."""
    files = {}
    for folder in ("first", "second"):
        folder_files, _ = saelens_folder(folder, hook="")
        files.update(folder_files)
    hubenv.hub.add_commit("someone/unnamed-saes", files)
    env = env_for(hubenv)
    made = run_saereg(
        "new", "--repo", "someone/unnamed-saes", "--format", "saelens",
        "--release", "unnamed", "--out", str(hubenv.releases), env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    text = (hubenv.releases / "unnamed.yaml").read_text()
    assert "set each SAE's `hook_name`" in text and "the schema requires one" in text
    assert "hook_name where the repository" not in text
