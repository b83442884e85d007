"""The models table: canonical names, derived widths, hook translation against what
publishers state, and the commands that show them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from saereg.catalogue.hooks import hf_hook, site_of, tl_hook_name
from saereg.catalogue.migrations import migrate
from saereg.catalogue.models import canonical_model, get_model, model_table
from saereg.catalogue.records import INHERITABLE
from saereg.catalogue.release_dirs import builtin_release_dir, release_files
from saereg.catalogue.resolver import list_saes, resolve
from saereg.catalogue.safeyaml import load_yaml
from saereg.cli import main

from .conftest import run_saereg, write


def _raw_entries() -> list[tuple[str, str, dict]]:
    """(release, model as written, SAE fields with defaults) straight from the YAML."""
    out = []
    for path in release_files(builtin_release_dir()):
        doc = migrate(load_yaml(path.read_text(encoding="utf-8"), str(path)), str(path))
        defaults = {k: v for k, v in (doc.get("defaults") or {}).items() if k in INHERITABLE}
        out += [(doc["name"], doc["model"], {**defaults, **sae}) for sae in doc["saes"]]
    return out


@pytest.fixture(scope="module")
def raw_entries() -> list[tuple[str, str, dict]]:
    return _raw_entries()


def test_every_release_model_is_in_the_table_and_every_name_means_one_model(
    raw_entries: list[tuple[str, str, dict]],
) -> None:
    assert all(get_model(m) is not None for _, m, _ in raw_entries)
    seen: dict[str, str] = {}
    for model in model_table():
        assert model.source == f"https://huggingface.co/{model.hub_id}/blob/main/config.json"
        for name in model.names:
            assert seen.setdefault(name.lower(), model.name) == model.name, name


def test_widths_listed_by_publishers_agree_with_the_model_shapes(
    raw_entries: list[tuple[str, str, dict]],
) -> None:
    """Thousands of independently published d_in values check the table's numbers."""
    checked = 0
    for release, model_name, sae in raw_entries:
        model = get_model(model_name)
        for width, hook in (("d_in", "hook_name"), ("d_out", "hook_name_out")):
            derived = model.width(sae.get(hook))
            if sae.get(width) is not None and derived is not None:
                assert sae[width] == derived, (release, sae["id"], width)
                checked += 1
    assert checked > 5000


def test_unknown_widths_before_and_after(raw_entries: list[tuple[str, str, dict]]) -> None:
    before = sum(1 for _, _, sae in raw_entries if sae.get("d_in") is None)
    after = [
        (rel, sae["id"])
        for rel, model, sae in raw_entries
        if sae.get("d_in") is None and get_model(model).width(sae["hook_name"]) is None
    ]
    assert before > 7000  # what the release files leave open
    assert after == []  # every one of them is now derived


def test_resolve_shows_canonical_model_derived_width_and_hf_hook() -> None:
    info = resolve("gpt2-small-res-jb/blocks.8.hook_resid_pre")
    assert (info.model, info.model_hub_id, info.d_in) == (
        "gpt2-small",
        "openai-community/gpt2",
        768,
    )
    assert info.hf_hook == {"module": "transformer.h.8", "side": "input"}
    gs2 = resolve("gemma-scope-2-1b-pt-transcoders/transcoder/layer_13_width_16k_l0_small_affine")
    assert gs2.model == "gemma-3-1b-pt" and gs2.d_in == gs2.d_out == 1152
    assert gs2.hf_hook == {"module": "model.layers.13.pre_feedforward_layernorm", "side": "output"}
    assert gs2.hf_hook_out == {
        "module": "model.layers.13.post_feedforward_layernorm",
        "side": "output",
    }
    z = resolve("gpt2-small-hook-z-kk/blocks.5.hook_z")
    assert z.d_in == 768 and z.hf_hook == {"module": "transformer.h.5.attn.c_proj", "side": "input"}


def test_gemma_scope_2_published_module_paths_agree_with_the_translation(
    raw_entries: list[tuple[str, str, dict]],
) -> None:
    checked = 0
    for release, model_name, sae in raw_entries:
        published = sae.get("hf_hook_name")
        if not published:
            continue
        hook = get_model(model_name).hf_hook(sae["hook_name"])
        assert hook is not None, (release, sae["id"])
        # Gemma Scope 2 writes MODULE.SIDE; Qwen Scope and sparsify write the module (its
        # output), sparsify relative to the base model ("layers.5.mlp")
        module, _, side = published.rpartition(".")
        if side not in ("input", "output"):
            module, side = published, "output"
        assert side == hook.side, (release, sae["id"], published, hook)
        assert hook.module == module or hook.module.endswith("." + module), (
            release,
            sae["id"],
            published,
            hook,
        )
        assert tl_hook_name(get_model(model_name).family, hook.module, hook.side) is not None
        checked += 1
    assert checked > 3000


def test_translation_covers_every_site_the_catalogue_uses(
    raw_entries: list[tuple[str, str, dict]],
) -> None:
    missing = set()
    for _, model_name, sae in raw_entries:
        family = get_model(model_name).family
        for hook in (sae.get("hook_name"), sae.get("hook_name_out")):
            if hook and hf_hook(family, hook) is None:
                missing.add((family, re.sub(r"\d+", "N", hook)))
    assert missing == set()
    assert site_of("blocks.3.ln2.hook_normalized") == ("mlp_in", 3)
    assert hf_hook("gpt-neox", "blocks.1.hook_resid_mid") is None  # parallel attention + MLP
    assert hf_hook("qwen3-moe", "blocks.1.mlp.hook_post") is None  # no single MLP


def test_canonical_model_maps_every_alias_case_insensitively() -> None:
    for spelling in ("gemma-2-2b", "google/gemma-2-2b", "GOOGLE/Gemma-2-2B"):
        assert canonical_model(spelling) == "gemma-2-2b"
    assert canonical_model("gpt2") == canonical_model("openai-community/gpt2") == "gpt2-small"
    assert canonical_model("Qwen/Qwen3-1.7B-Base") == "qwen3-1.7b-base"
    assert canonical_model("qwen3-1.7b") == "qwen3-1.7b"  # the post-trained model
    assert canonical_model("no-such-model") == "no-such-model"
    # the hub ids the EleutherAI sparsify releases use
    for hub_id in (
        "EleutherAI/pythia-70m",
        "EleutherAI/pythia-160m",
        "meta-llama/Meta-Llama-3-8B",
        "meta-llama/Llama-3.1-8B",
        "HuggingFaceTB/SmolLM2-135M",
    ):
        assert get_model(hub_id) is not None, hub_id


def test_list_filters_by_any_alias_and_glob() -> None:
    by_name = list_saes(model="gemma-2-2b")
    assert by_name and list_saes(model="Google/Gemma-2-2B") == by_name
    assert {r["model"] for r in list_saes(model="google/gemma-3-1b-*")} == {
        "gemma-3-1b-pt",
        "gemma-3-1b-it",
    }


def test_models_command_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    gemma = next(r for r in rows if r["name"] == "gemma-2-2b")
    assert (gemma["d_model"], gemma["n_heads"], gemma["d_head"]) == (2304, 8, 256)
    assert main(["info", "gemma-scope-2-4b-pt-res"]) == 0
    assert "model       gemma-3-4b-pt (google/gemma-3-4b-pt)" in capsys.readouterr().out


def test_validate_names_an_unknown_model_with_close_matches(tmp_path: Path) -> None:
    text = (builtin_release_dir() / "gpt2-small-res-jb.yaml").read_text(encoding="utf-8")
    (tmp_path / "gpt2-small-res-jb.yaml").write_text(
        re.sub(r"(?m)^model: .*$", "model: gpt2-smal", text), encoding="utf-8"
    )
    result = run_saereg("validate", "--standalone", str(tmp_path))
    assert result.returncode == 1
    assert "[unknown-model] $.model: unknown model 'gpt2-smal'; did you mean 'gpt2-small'" in (
        result.stdout
    )
    wrong = re.sub(r"(?m)^  d_sae: ", "  d_in: 512\n  d_sae: ", text, count=1)
    (tmp_path / "gpt2-small-res-jb.yaml").write_text(wrong, encoding="utf-8")
    result = run_saereg("validate", "--standalone", str(tmp_path))
    assert "[model-width]" in result.stdout and "d_in 512 disagrees with gpt2-small" in (
        result.stdout
    )


def test_validate_checks_the_models_table(tmp_path: Path) -> None:
    table = (builtin_release_dir() / "models" / "models.yaml").read_text(encoding="utf-8")
    (tmp_path / "models").mkdir()
    broken = table.replace("aliases: [gpt2]", "aliases: [gpt2, pythia-70m]", 1)
    broken = broken.replace("family: gpt-neox", "family: neox", 1)
    (tmp_path / "models" / "models.yaml").write_text(broken, encoding="utf-8")
    result = run_saereg("validate", "--standalone", str(tmp_path))
    assert result.returncode == 1
    assert "[schema] $.models[1].family" in result.stdout
    fixed = broken.replace("family: neox", "family: gpt-neox", 1)
    (tmp_path / "models" / "models.yaml").write_text(fixed, encoding="utf-8")
    result = run_saereg("validate", "--standalone", str(tmp_path))
    assert "[duplicate-model-name]" in result.stdout and "'pythia-70m' already names" in (
        result.stdout
    )


def test_resolve_imports_neither_yaml_nor_torch() -> None:
    code = (
        "import sys; from saereg.catalogue.resolver import resolve; "
        "r = resolve('gpt2-small-res-jb/blocks.8.hook_resid_pre'); "
        "print(r.d_in, 'yaml' in sys.modules, 'torch' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # warm
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["768", "False", "False"]


def test_derived_width_is_checked_against_the_files_and_configs_carry_the_model(
    hubenv: Any,
) -> None:
    """A derived d_in is held to the files like a listed one; a release directory's own
    models table gives configs the canonical name, hub id and hf_hook."""
    import saereg

    from .publishers import release_yaml, saelens_folder

    files, _ = saelens_folder("sae", d_in=8)
    hubenv.hub.add_commit("org/saes", files)
    hook = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3}
    saes = [{"id": "sae", "path": "sae", **hook}]
    hubenv.add_release(
        "wide", release_yaml("wide", "saelens", saes, repo_id="org/saes", model="gpt2")
    )
    with pytest.raises(saereg.SaeregError, match="d_in=768 but the files hold d_in=8"):
        saereg.load_sae("wide/sae")
    table = (
        "schema: 1\nmodels:\n  - {name: tiny-lm, hub_id: org/Tiny-LM, family: llama, "
        "d_model: 8, n_layers: 4, n_heads: 2, d_head: 4, d_mlp: 16, "
        "source: 'https://huggingface.co/org/Tiny-LM/blob/main/config.json'}\n"
    )
    write(hubenv.releases / "models" / "models.yaml", table)
    hubenv.add_release(
        "tiny", release_yaml("tiny", "saelens", saes, repo_id="org/saes", model="org/tiny-lm")
    )
    assert resolve("tiny/sae").d_in == 8
    cfg = saereg.load_config("tiny/sae")
    assert (cfg.model, cfg.model_hub_id) == ("tiny-lm", "org/Tiny-LM")
    assert cfg.hf_hook == {"module": "model.layers.3", "side": "input"}
