"""Llama Scope transcoders (LXTC) and the fnlp → OpenMOSS-Team repository move.

The transcoder math is compared with reference math written from lm_saes' own loading
code (`tests/publishers.llama_scope_lm_saes_reference`: `SparseAutoEncoder.from_config`
of OpenMOSS/Language-Model-SAEs@fdd5a4dd, step by step); the publisher's package needs
CUDA-era dependencies and is not installable in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import saereg
from saereg.base.errors import SaeregError
from saereg.catalogue.release_files import read_release_file
from saereg.catalogue.resolver import resolve_entry

from .conftest import run_saereg, write
from .publishers import llama_scope_folder, llama_scope_lm_saes_reference, release_yaml

# Test-only names: the built-in llama_scope_lxtc_8x owns the real ones.
NEW, OLD = "new-org/Llama3_1-8B-Base-LXTC-8x", "old-org/Llama3_1-8B-Base-LXTC-8x"
FOLDER = "Llama3_1-8B-Base-L3TC-8x"


def transcoder_release(hubenv, files: dict[str, bytes], name: str = "tc") -> None:
    hubenv.hub.add_commit(NEW, files)
    doc = yaml.safe_load(
        release_yaml(
            name,
            "llama_scope",
            [
                {
                    "id": "l3tc_8x",
                    "path": FOLDER,
                    "hook_name": "blocks.3.ln2.hook_normalized",
                    "hook_name_out": "blocks.3.hook_mlp_out",
                    "hook_layer": 3,
                }
            ],
            repo_id=NEW,
            defaults={"architecture": "jumprelu_transcoder"},
        )
    )
    doc["repo_aliases"] = [OLD]
    hubenv.add_release(name, yaml.safe_dump(doc, sort_keys=False))


def tc_folder(**kw):
    return llama_scope_folder(
        FOLDER,
        d_model=16,
        factor=2,
        jrt=0.05,
        avg_norm=6.0,
        avg_norm_out=0.6,
        site_hook="blocks.3.ln2.hook_normalized",
        out_hook="blocks.3.hook_mlp_out",
        **kw,
    )


def test_transcoder_matches_lm_saes_and_old_repo_name_resolves(hubenv) -> None:
    files, raw = tc_folder()
    transcoder_release(hubenv, files)
    sae = saereg.load_sae("tc/l3tc_8x")
    cfg = sae.cfg
    assert cfg.transcoder and (cfg.d_in, cfg.d_out, cfg.d_sae) == (16, 16, 32)
    assert (cfg.hook_name, cfg.hook_name_out) == (
        "blocks.3.ln2.hook_normalized",
        "blocks.3.hook_mlp_out",
    )
    assert cfg.normalization == {"kind": "none"} and len(cfg.folded) == 3
    # lm_saes' scalar threshold applies after its unit-decoder-norm transform
    assert torch.all(sae.threshold == 0.05)
    torch.testing.assert_close(
        sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5, rtol=0
    )  # every decoder row has unit norm, as lm_saes makes it
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    f_ref, y_ref = llama_scope_lm_saes_reference(raw, x)
    f = sae.encode(x)
    assert 0 < int((f_ref != 0).sum()) < f_ref.numel()  # the gate matters in this batch
    torch.testing.assert_close(f.double(), f_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x).double(), y_ref, atol=1e-4, rtol=1e-4)

    # the repository's former name resolves to the same catalogued SAE and files
    release, entry = resolve_entry(f"hf:{OLD}/{FOLDER}")
    assert (release.name, entry.id, release.repo_id) == ("tc", "l3tc_8x", NEW)
    by_old = saereg.load_sae(f"hf:{OLD}/{FOLDER}")
    torch.testing.assert_close(by_old(x), sae(x))
    assert not [p for m, p in hubenv.hub.requests if "old-org" in p]  # downloads use the new name


def test_transcoder_refusals_name_the_field(hubenv) -> None:
    files, _ = tc_folder()
    hp = json.loads(files[f"{FOLDER}/hyperparams.json"])
    hp["dataset_average_activation_norm"] = {"in": 6.0}
    files[f"{FOLDER}/hyperparams.json"] = json.dumps(hp).encode()
    transcoder_release(hubenv, files, name="tc_bad")
    with pytest.raises(SaeregError, match="'in' and 'out'"):
        saereg.load_sae("tc_bad/l3tc_8x")


def test_topk_transcoder_without_threshold_is_refused(hubenv) -> None:
    files, _ = tc_folder()
    hp = json.loads(files[f"{FOLDER}/hyperparams.json"])
    hp["act_fn"] = "topk"
    files[f"{FOLDER}/hyperparams.json"] = json.dumps(hp).encode()
    transcoder_release(hubenv, files, name="tc_topk")
    with pytest.raises(SaeregError, match="act_fn 'topk'"):
        saereg.load_sae("tc_topk/l3tc_8x")


def test_a_current_repository_name_is_never_taken_over_by_an_alias(hubenv) -> None:
    files, _ = tc_folder()
    transcoder_release(hubenv, files)
    # another release claims the new name as a former name of some third repository
    hubenv.add_release(
        "squatter",
        release_yaml("squatter", "llama_scope", [{"id": "x", "path": FOLDER}], repo_id="a/b")
        + f"repo_aliases:\n- {NEW}\n",
    )
    release, _ = resolve_entry(f"hf:{NEW}/{FOLDER}")
    assert release.name == "tc"


def test_validate_rejects_an_alias_equal_to_repo_id(tmp_path: Path) -> None:
    text = release_yaml("moved", "llama_scope", [{"id": "x", "path": FOLDER}], repo_id=NEW)
    path = write(tmp_path / "moved.yaml", text + f"repo_aliases:\n- {NEW}\n")
    result = run_saereg("validate", str(path), "--no-hints", "--standalone")
    assert result.returncode == 1
    assert "[repo-alias]" in result.stdout and "is repo_id itself" in result.stdout


def test_import_moves_fnlp_repositories_and_keeps_the_old_name(tmp_path: Path) -> None:
    upstream = write(
        tmp_path / "upstream.yaml",
        "llama_scope_lxr_8x:\n"
        "  conversion_func: llama_scope\n"
        "  model: meta-llama/Llama-3.1-8B\n"
        "  repo_id: fnlp/Llama3_1-8B-Base-LXR-8x\n"
        "  saes:\n"
        "  - id: l15r_8x\n"
        "    path: Llama3_1-8B-Base-L15R-8x\n",
    )
    result = run_saereg("import", "saelens", str(upstream), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    release = read_release_file(tmp_path / "out" / "llama_scope_lxr_8x.yaml")
    assert release.repo_id == "OpenMOSS-Team/Llama3_1-8B-Base-LXR-8x"
    assert release.repo_aliases == ("fnlp/Llama3_1-8B-Base-LXR-8x",)
    assert (release.publisher, release.license) == ("OpenMOSS", "apache-2.0")


def test_catalogued_llama_scope_releases_moved_with_aliases() -> None:
    for ref in ("llama_scope_lxtc_8x/l19tc_8x", "llama_scope_lxr_8x/l19r_8x"):
        release, _ = resolve_entry(ref)
        assert release.repo_id.startswith("OpenMOSS-Team/Llama3_1-8B-Base-LX")
        assert release.repo_aliases == (release.repo_id.replace("OpenMOSS-Team/", "fnlp/"),)
    tc, entry = resolve_entry("hf:fnlp/Llama3_1-8B-Base-LXTC-32x/Llama3_1-8B-Base-L19TC-32x")
    assert (tc.name, entry.id) == ("llama_scope_lxtc_32x", "l19tc_32x")
    assert (entry.hook_name, entry.hook_name_out) == (
        "blocks.19.ln2.hook_normalized",
        "blocks.19.hook_mlp_out",
    )
    assert len(tc.saes) == 32 and tc.defaults["d_sae"] == 131072
