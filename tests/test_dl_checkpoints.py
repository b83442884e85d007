"""dictionary_learning's intermediate checkpoints: ``trainer_N/checkpoints/ae_{step}.pt``.

``trainSAE(save_steps=...)`` (dictionary-learning 0.1.0, training.py) saves, at each step
listed, ``{k: v.cpu() for k, v in trainer.ae.state_dict().items()}`` with ``torch.save`` to
``{save_dir}/trainer_{i}/checkpoints/ae_{step}.pt``: the same state dict as the final
``ae.pt``, read with the trainer's ``config.json`` one folder up. Each checkpoint here holds
other weights than ae.pt (another layout case of the same class), so every test can tell
which file loaded; each is compared with that case's reference math in
tests/layouts/dictionary_learning.py (the publisher's math written out independently).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import saereg
from saereg.base.errors import SaeregError, UnknownReferenceError
from saereg.detection import detect_report

from .conftest import run_saereg
from .layouts import dictionary_learning as dl
from .layouts._case import LayoutCase
from .layouts._serve import compare, serve

FINAL = dl.autoencoder()  # AutoEncoder, decoder columns not unit (the fold is applied)
EARLY = dl.autoencoder(unit_decoder=True)  # AutoEncoder too, other weights
CKPT = f"{dl.PATH}/checkpoints/ae_200.pt"
LATER = f"{dl.PATH}/checkpoints/ae_1000.pt"


def _files(final: LayoutCase = FINAL, early: LayoutCase = EARLY) -> dict[str, bytes]:
    """A trainer's folder as trainSAE leaves it: config.json, ae.pt, two checkpoints (the
    later one holds the final weights: training moved them on from the earlier one)."""
    return {
        **final.files,
        CKPT: early.files[f"{dl.PATH}/ae.pt"],
        LATER: final.files[f"{dl.PATH}/ae.pt"],
    }


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    return root


@pytest.fixture
def trainer(tmp_path: Path) -> Path:
    return _write(tmp_path / "run", _files()) / dl.PATH


def test_a_checkpoint_file_loads_with_the_trainers_config(trainer: Path) -> None:
    sae = saereg.load_sae(trainer / "checkpoints" / "ae_200.pt", dtype=None)
    compare(sae, EARLY, seed=7)
    # config.json one level up says the class and the hook (submodule resid_post_layer_3)
    assert sae.cfg.hook_name == f"blocks.{dl.LAYER}.hook_resid_post"
    assert sae.cfg.context_size == 128 and sae.cfg.source["release"] == "local"
    compare(saereg.load_sae(trainer, dtype=None), FINAL, seed=7)  # the folder: the final ae.pt


def test_sae_picks_a_checkpoint_of_the_trainer_folder(trainer: Path) -> None:
    picked = saereg.load_sae(trainer, sae="checkpoints/ae_200.pt", dtype=None)
    compare(picked, EARLY, seed=7)
    with pytest.raises(UnknownReferenceError, match=r"ae_200\.pt") as info:
        saereg.load_sae(trainer, sae="checkpoints/ae_10.pt")
    assert "checkpoints/ae_1000.pt" in str(info.value)  # what the folder holds


def test_each_checkpoint_has_its_own_cache_entry(trainer: Path) -> None:
    ckpt = trainer / "checkpoints"
    paths = [saereg.fetch_canonical(p) for p in (trainer, ckpt / "ae_200.pt", ckpt / "ae_1000.pt")]
    assert len(set(paths)) == 3
    assert saereg.fetch_canonical(trainer, sae="checkpoints/ae_200.pt") == paths[1]


def test_detect_lists_the_checkpoints_after_the_final_ae(trainer: Path) -> None:
    report = detect_report(trainer)
    assert [f.path for f in report.saes] == ["", "checkpoints/ae_200.pt", "checkpoints/ae_1000.pt"]
    assert [f.ref for f in report.saes] == [
        str(trainer),
        str(trainer / "checkpoints" / "ae_200.pt"),
        str(trainer / "checkpoints" / "ae_1000.pt"),
    ]
    assert {f.claims[0][:2] for f in report.saes} == {("dictionary_learning", 1.0)}
    assert "2 checkpoints/ae_STEP.pt" in report.saes[1].claims[0][2]
    # A checkpoint named directly: the listing is the trainer's folder, the target the file.
    one = detect_report(trainer / "checkpoints" / "ae_200.pt")
    assert one.root == str(trainer) and [f.path for f in one.saes] == ["checkpoints/ae_200.pt"]
    assert one.read == ("config.json",)
    # The folder above lists every trainer's final SAE and checkpoints.
    above = detect_report(trainer.parent)
    assert [f.path for f in above.saes] == [
        "trainer_0",
        "trainer_0/checkpoints/ae_200.pt",
        "trainer_0/checkpoints/ae_1000.pt",
    ]


def test_saereg_detect_lists_them_in_step_order(trainer: Path) -> None:
    shown = run_saereg("detect", str(trainer), "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)["saes"]
    assert [s["path"] for s in found] == ["", "checkpoints/ae_200.pt", "checkpoints/ae_1000.pt"]


def test_a_run_still_training_lists_its_checkpoints(tmp_path: Path) -> None:
    """No ae.pt yet: the checkpoints are the trainer's SAEs; the folder holds several."""
    files = _files()
    del files[f"{dl.PATH}/ae.pt"]
    trainer = _write(tmp_path, files) / dl.PATH
    report = detect_report(trainer)
    assert [f.path for f in report.saes] == ["checkpoints/ae_200.pt", "checkpoints/ae_1000.pt"]
    assert "no final ae.pt yet" in report.saes[0].claims[0][2]
    with pytest.raises(UnknownReferenceError, match=r"holds 2 SAEs.*pass sae=PATH"):
        saereg.load_sae(trainer)
    compare(saereg.load_sae(trainer, sae="checkpoints/ae_200.pt", dtype=None), EARLY, seed=7)
    compare(saereg.load_sae(trainer / "checkpoints" / "ae_1000.pt", dtype=None), FINAL, seed=7)


def test_what_is_not_a_checkpoint_is_not_read_as_one(tmp_path: Path) -> None:
    files = _files()
    files[f"{dl.PATH}/checkpoints/notes.pt"] = files[CKPT]
    trainer = _write(tmp_path / "a", files) / dl.PATH
    # another file in checkpoints/ is not the trainer's SAE (never the final ae.pt instead)
    with pytest.raises(UnknownReferenceError, match="no installed format recognises"):
        saereg.load_sae(trainer / "checkpoints" / "notes.pt")
    # the folder above is tried, never two up: a checkpoint moved one folder deeper
    deeper = _write(tmp_path / "d", {**files, f"{dl.PATH}/checkpoints/old/ae_200.pt": b"x"})
    with pytest.raises(UnknownReferenceError, match="no installed format recognises"):
        saereg.load_sae(deeper / dl.PATH / "checkpoints" / "old" / "ae_200.pt")
    # no config.json one level up: nothing says what the checkpoint is
    bare = _write(tmp_path / "b", {"run/checkpoints/ae_200.pt": files[CKPT]})
    with pytest.raises(UnknownReferenceError, match="no installed format recognises"):
        saereg.load_sae(bare / "run" / "checkpoints" / "ae_200.pt")
    # a config.json naming another format's SAE there: not dictionary_learning's
    other = {"run/config.json": b'{"d_in": 12}', "run/checkpoints/ae_200.pt": files[CKPT]}
    with pytest.raises(SaeregError):
        saereg.load_sae(_write(tmp_path / "c", other) / "run" / "checkpoints" / "ae_200.pt")


def test_batch_topk_early_checkpoint_with_untracked_threshold(tmp_path: Path) -> None:
    """BatchTopK saves threshold -1 until it starts tracking one: an early checkpoint."""
    final, early = dl.batch_topk(0.2), dl.batch_topk(-1.0)
    trainer = _write(tmp_path, _files(final, early)) / dl.PATH
    compare(saereg.load_sae(trainer / "checkpoints" / "ae_200.pt", dtype=None), early, seed=7)
    compare(saereg.load_sae(trainer, dtype=None), final, seed=7)


# --------------------------------------------------------------------------- the hub


@pytest.fixture(scope="module")
def shared_cache() -> Path:
    """The session's cache (its compiled index of the built-in catalogue built once)."""
    import os

    return Path(os.environ["SAEREG_CACHE"])


def test_uncatalogued_repository_checkpoint(
    hubenv: Any, monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> None:
    monkeypatch.delenv("SAEREG_RELEASES")
    monkeypatch.setenv("SAEREG_CACHE", str(shared_cache))
    repo = "someone-else/dictionary-learning-run"
    hubenv.hub.add_commit(repo, _files())
    sae = saereg.load_sae(f"hf:{repo}/{CKPT}", dtype=None)
    compare(sae, EARLY, seed=7)
    # the hook comes from the publisher's path names here (resid_post_layer_3)
    assert sae.cfg.hook_name == f"blocks.{dl.LAYER}.hook_resid_post"
    assert sae.cfg.source["repo_id"] == repo and sae.cfg.source["sae_id"] == CKPT
    final = saereg.load_sae(f"hf:{repo}/{dl.PATH}", dtype=None)
    compare(final, FINAL, seed=7)
    report = detect_report(f"hf:{repo}/{dl.PATH}")  # the folder, then its checkpoints
    commit = hubenv.hub.refs[repo]["main"]
    assert [f.ref for f in report.saes] == [
        f"hf:{repo}@{commit}/{p}" for p in (dl.PATH, CKPT, LATER)
    ]
    assert saereg.fetch_canonical(f"hf:{repo}/{CKPT}") != saereg.fetch_canonical(
        f"hf:{repo}/{dl.PATH}"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the listing from the HF cache
    before = hubenv.count()
    compare(saereg.load_sae(f"hf:{repo}/{CKPT}", dtype=None, force=True), EARLY, seed=7)
    assert hubenv.count() == before
    with pytest.raises(UnknownReferenceError, match="no SAE at"):
        saereg.load_sae(f"hf:{repo}/{dl.PATH}/checkpoints/ae_5.pt")


def test_release_entry_whose_path_is_a_checkpoint(hubenv: Any) -> None:
    """A release may list a checkpoint as an SAE of its own: loading reads the file with
    the trainer's config.json, and `saereg validate` finds nothing to object to."""
    sae = {
        **FINAL.sae,
        "id": "trainer_0-step-100",
        "path": CKPT,
        "d_sae": dl.D_SAE,
        "context_size": 128,
        "normalize_activations": "none",
    }
    case = LayoutCase(**{**FINAL.__dict__, "name": "checkpoint", "files": _files(), "sae": sae})
    ref = serve(hubenv, case)
    compare(saereg.load_sae(ref, dtype=None), EARLY, seed=7)
    release = hubenv.releases / f"{ref.split('/')[0]}.yaml"
    doc = yaml.safe_load(release.read_text())
    doc.update(model="gpt2-small", revision=hubenv.hub.refs[FINAL.repo_id]["main"])
    release.write_text(yaml.safe_dump(doc, sort_keys=False))
    # the publisher's path names say the hook for such an entry, as for its folder
    from saereg.formats import SAEEntry, get_registry

    fmt = get_registry().format("dictionary_learning")
    for path in (CKPT, dl.PATH):
        described = fmt.describe(saereg.get_release(ref.split("/")[0]), SAEEntry(id="x", path=path))
        assert described["hook_name"] == f"blocks.{dl.LAYER}.hook_resid_post", path
    checked = run_saereg("validate", "--standalone", str(release))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "OK: 1 release files, 0 errors, 0 hints"


# --------------------------------------------------------------------------- crosscoders


def _crosscoder_run(root: Path, final: bool = True) -> tuple[Path, Any]:
    """The science-of-finetuning fork's trainSAE save_dir: config.json, model_final.pt and
    checkpoint_{step}.pt (save_model: the same state dict, at that step) side by side.
    The checkpoint's weights differ from the final ones; returns its reference math."""
    from .layouts import dictionary_learning_crosscoder as cc
    from .layouts._util import pt_bytes

    case = cc.CASES[0]  # the trainer's layout: BatchTopKCrossCoder, CROSSCODER code norm
    gen = torch.Generator().manual_seed(21)
    early = dict(cc.TRAINER_STATE)
    for key in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"):
        early[key] = early[key] + 0.2 * torch.randn(early[key].shape, generator=gen)
    early["threshold"] = torch.tensor(0.4)
    files = {**case.files, "l3-k4/checkpoint_500.pt": pt_bytes(early)}
    files["l3-k4/checkpoint_1000.pt"] = files["l3-k4/model_final.pt"]
    if not final:
        del files["l3-k4/model_final.pt"]
    return _write(root, files) / "l3-k4", cc._reference(early, cc.CROSSCODER)


def _same_as(loaded: Any, reference: Any, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7)).double()
    want = reference(x)
    torch.testing.assert_close(loaded.encode(x), want.encode, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(loaded(x), want.forward, atol=1e-10, rtol=1e-10)


def test_crosscoder_checkpoints_load_and_are_listed(tmp_path: Path) -> None:
    from .layouts import dictionary_learning_crosscoder as cc

    run, early = _crosscoder_run(tmp_path)
    final = cc.CASES[0]
    shape = final.input_shape
    loaded = saereg.load_sae(run / "checkpoint_500.pt", dtype="float64", hook_name=cc.HOOK)
    assert isinstance(loaded, saereg.CrossCoder) and loaded.n_sites == 2
    _same_as(loaded, early, shape)
    _same_as(saereg.load_sae(run, dtype="float64"), final.reference, shape)  # model_final.pt
    picked = saereg.load_sae(run, sae="checkpoint_500.pt", dtype="float64")
    _same_as(picked, early, shape)
    report = detect_report(run)
    assert [f.path for f in report.saes] == ["", "checkpoint_500.pt", "checkpoint_1000.pt"]
    assert {f.claims[0][0] for f in report.saes} == {"dictionary_learning_crosscoder"}
    assert report.saes[1].kind == "crosscoder"
    dicts = [saereg.fetch_dictionary(p) for p in (run, run / "checkpoint_500.pt")]
    assert dicts[0] != dicts[1]


def test_a_crosscoder_run_still_training(tmp_path: Path) -> None:
    run, early = _crosscoder_run(tmp_path, final=False)
    report = detect_report(run)
    assert [f.path for f in report.saes] == ["checkpoint_500.pt", "checkpoint_1000.pt"]
    with pytest.raises(UnknownReferenceError, match="holds 2 SAEs"):
        saereg.load_sae(run)
    _same_as(saereg.load_sae(run / "checkpoint_500.pt", dtype="float64"), early, (2, 5, 8))


def test_crosscoder_checkpoint_in_an_uncatalogued_repository(
    hubenv: Any, monkeypatch: pytest.MonkeyPatch, shared_cache: Path, tmp_path: Path
) -> None:
    monkeypatch.delenv("SAEREG_RELEASES")
    monkeypatch.setenv("SAEREG_CACHE", str(shared_cache))
    run, early = _crosscoder_run(tmp_path)
    repo = "someone-else/crosscoder-run"
    hubenv.hub.add_commit(repo, {f"l3-k4/{p.name}": p.read_bytes() for p in run.iterdir()})
    loaded = saereg.load_sae(f"hf:{repo}/l3-k4/checkpoint_500.pt", dtype="float64")
    _same_as(loaded, early, (2, 5, 8))
    assert loaded.cfg.source["sae_id"] == "l3-k4/checkpoint_500.pt"
