"""Plugin discovery through entry points, provenance, the kill switch, and clashes."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from saereg.formats import get_registry

from .conftest import run_saereg, write

TOY_RELEASE = """\
schema: 1
name: toy-release
format: toy
publisher: Toy Lab
model: toy-model
repo_id: toylab/toy-saes
revision: null
defaults: {d_sae: 32, context_size: 16, normalize_activations: none}
saes:
- id: layer_3
  path: layer_3
  hook_name: blocks.3.hook_resid_post
  hook_layer: 3
"""

# A plugin's release directory may ship a models table for models saereg does not know.
TOY_MODELS = """\
schema: 1
models:
  - name: toy-model
    hub_id: toylab/toy-model
    family: llama
    d_model: 24
    n_layers: 4
    n_heads: 2
    d_head: 12
    d_mlp: 48
    source: https://huggingface.co/toylab/toy-model/blob/main/config.json
"""


def make_distribution(
    root: Path,
    module_body: str,
    *,
    name: str = "toy-saereg",
    entry: str = "toy",
    module: str = "toyplugin",
) -> dict[str, str]:
    """A third-party distribution as pip would install it: a module and its dist-info."""
    write(root / f"{module}.py", textwrap.dedent(module_body))
    dist_info = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    write(dist_info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    write(dist_info / "entry_points.txt", f"[saereg]\n{entry} = {module}\n")
    return {"PYTHONPATH": str(root)}


TOY_PLUGIN = """
    from pathlib import Path
    import saereg

    class Toy(saereg.Format):
        name = "toy"
        summary = "a test format"

    @saereg.hookimpl
    def saereg_formats():
        return [Toy()]

    @saereg.hookimpl
    def saereg_release_dirs():
        return [Path(__file__).parent / "toy_releases"]
"""


@pytest.fixture
def toy_env(tmp_path: Path) -> dict[str, str]:
    env = make_distribution(tmp_path, TOY_PLUGIN)
    write(tmp_path / "toy_releases" / "toy-release.yaml", TOY_RELEASE)
    write(tmp_path / "toy_releases" / "models" / "models.yaml", TOY_MODELS)
    return env


def test_builtins_register_through_entry_points() -> None:
    registry = get_registry()
    assert {"saelens", "matryoshka", "gemma_scope", "llama_scope", "oai"} <= set(registry.formats)
    info = {i.name: i for i in registry.infos}["gemma_scope"]
    assert info.distribution == "saereg" and info.builtin and info.enabled
    assert info.module == "saereg.plugins.gemma_scope"
    assert info.formats == ("gemma_scope",)


def test_third_party_plugin_listed_with_provenance(toy_env: dict[str, str]) -> None:
    result = run_saereg("plugins", "--json", env=toy_env)
    assert result.returncode == 0, result.stderr
    toy = next(p for p in json.loads(result.stdout) if p["name"] == "toy")
    assert toy == {
        "name": "toy",
        "distribution": "toy-saereg",
        "version": "1.2.3",
        "builtin": False,
        "enabled": True,
        "module": "toyplugin",
        "formats": ["toy"],
        "format_details": [{"name": "toy", "summary": "a test format", "loads": False}],
        "error": None,
    }
    text = run_saereg("plugins", env=toy_env).stdout
    assert (
        "toy                    toy-saereg 1.2.3      third-party enabled  "
        "formats: toy (describe only)" in text
    )
    builtin = [d for p in json.loads(result.stdout) if p["builtin"] for d in p["format_details"]]
    assert {d["name"] for d in builtin if d["loads"]} >= {"goodfire", "temporal", "mntss_clt"}


def test_plugin_release_dirs_resolve_and_validate(toy_env: dict[str, str], tmp_path: Path) -> None:
    result = run_saereg("resolve", "toy-release/layer_3", "--json", env=toy_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["format"], data["publisher"], data["hook_layer"]) == ("toy", "Toy Lab", 3)
    assert (data["d_in"], data["hf_hook"]["module"]) == (24, "model.layers.3")  # its own table
    listed = run_saereg("list", "--format", "toy", "--json", env=toy_env)
    assert [r["id"] for r in json.loads(listed.stdout)] == ["layer_3"]
    checked = run_saereg("validate", str(tmp_path / "toy_releases"), env=toy_env)
    assert checked.returncode == 0, checked.stdout


def test_kill_switch_disables_third_party_plugins(toy_env: dict[str, str]) -> None:
    env = {**toy_env, "SAEREG_DISABLE_PLUGINS": "1"}
    listed = json.loads(run_saereg("plugins", "--json", env=env).stdout)
    states = {p["name"]: p["enabled"] for p in listed}
    assert states["toy"] is False and states["saelens"] is True
    result = run_saereg("resolve", "toy-release/layer_3", env=env)
    assert result.returncode == 2
    assert "Unknown reference 'toy-release/layer_3'" in result.stderr


def test_kill_switch_by_name(tmp_path: Path) -> None:
    env = {"SAEREG_DISABLE_PLUGINS": "gemma_scope, toy"}
    listed = json.loads(run_saereg("plugins", "--json", env=env).stdout)
    assert {p["name"]: p["enabled"] for p in listed}["gemma_scope"] is False
    result = run_saereg("validate", "releases/gemma-scope-2b-pt-res.yaml", env=env)
    assert result.returncode == 1
    assert "error [unknown-format] $.format: unknown format 'gemma_scope'" in result.stdout


def test_two_plugins_claiming_one_format(tmp_path: Path) -> None:
    env = make_distribution(
        tmp_path,
        """
        import saereg

        class Clash(saereg.Format):
            name = "saelens"

        @saereg.hookimpl
        def saereg_formats():
            return [Clash()]
    """,
        name="clash-saereg",
        entry="zz_clash",
        module="clashplugin",
    )
    result = run_saereg("plugins", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "saereg plugins: format 'saelens' is provided by two plugins: 'saelens' and 'zz_clash' "
        "(clash-saereg); uninstall one, or disable it with SAEREG_DISABLE_PLUGINS=zz_clash"
    )
    ok = run_saereg("plugins", env={**env, "SAEREG_DISABLE_PLUGINS": "zz_clash"})
    assert ok.returncode == 0


def test_broken_plugins_are_reported_not_fatal(tmp_path: Path) -> None:
    env = make_distribution(
        tmp_path,
        "raise ImportError('needs libfoo')\n",
        name="broken-saereg",
        entry="broken",
        module="brokenplugin",
    )
    listed = json.loads(run_saereg("plugins", "--json", env=env).stdout)
    broken = next(p for p in listed if p["name"] == "broken")
    assert broken["enabled"] is False
    assert broken["error"] == "ImportError: needs libfoo"
    assert run_saereg("resolve", "gpt2-small/8-res-jb", env=env).returncode == 0


def test_plugin_with_unknown_hook_is_disabled(tmp_path: Path) -> None:
    env = make_distribution(
        tmp_path,
        """
        import saereg

        @saereg.hookimpl
        def saereg_formatz():
            return []
    """,
        name="typo-saereg",
        entry="typo",
        module="typoplugin",
    )
    listed = json.loads(run_saereg("plugins", "--json", env=env).stdout)
    typo = next(p for p in listed if p["name"] == "typo")
    assert typo["enabled"] is False
    assert "unknown hook" in typo["error"] and "saereg_formatz" in typo["error"]
    assert all(p["enabled"] for p in listed if p["name"] != "typo")


def test_format_base_class_refuses_weights_it_cannot_convert() -> None:
    from saereg.formats import Format

    class DescribeOnly(Format):
        name = "describe_only"

    fmt = DescribeOnly()
    assert not fmt.loads
    with pytest.raises(NotImplementedError, match="format 'describe_only' cannot download weights"):
        fmt.files(None, None)  # type: ignore[arg-type]


def test_unknown_format_lookup_names_installed_ones() -> None:
    from saereg.base.errors import PluginError

    with pytest.raises(
        PluginError, match=r"unknown format 'nope'; installed formats: circuit_tracer_clt, .*"
    ):
        get_registry().format("nope")


def test_installing_a_plugin_after_a_command_ran_is_noticed(tmp_path: Path) -> None:
    """Which entry points the saereg group has is kept for the state of the import path
    (list would otherwise scan every installed distribution on each call); a distribution
    installed into a folder already on the path changes that folder, so the next command
    sees it, and one removed is gone again."""
    site = tmp_path / "site"
    site.mkdir()
    env = {"PYTHONPATH": str(site)}
    before = run_saereg("list", "--format", "toy", "--json", env=env)
    assert before.returncode == 2 and "toy" in before.stderr  # an unknown format
    env = make_distribution(site, TOY_PLUGIN)
    write(site / "toy_releases" / "toy-release.yaml", TOY_RELEASE)
    write(site / "toy_releases" / "models" / "models.yaml", TOY_MODELS)
    listed = run_saereg("list", "--format", "toy", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == ["layer_3"]
    shutil.rmtree(site / "toy_saereg-1.2.3.dist-info")
    after = run_saereg("list", "--format", "toy", "--json", env=env)
    assert after.returncode == 2


def test_the_entry_point_scan_is_kept_per_state_of_the_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saereg.base import plugin_host

    monkeypatch.setenv("SAEREG_CACHE", str(tmp_path / "cache"))
    first = plugin_host.group_members()
    assert ("gemma_scope", "saereg") in first

    def no_scan(group: str) -> list:
        raise AssertionError("scanned again")

    monkeypatch.setattr(plugin_host, "_entry_points", no_scan)
    assert plugin_host.group_members() == first
    monkeypatch.syspath_prepend(str(tmp_path))  # another import path: scanned anew
    with pytest.raises(AssertionError, match="scanned again"):
        plugin_host.group_members()
