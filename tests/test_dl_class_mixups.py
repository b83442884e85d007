"""dictionary_learning saves single SAEs and crosscoders alike as ``config.json`` beside a
torch.save'd state dict; which class it is, only ``trainer.dict_class`` says. A crosscoder
saved as ``ae.pt`` (the name single-SAE checkpoints use), a single SAE saved as
``model_final.pt`` (the crosscoder trainer's name), and either forced into the other's
format must each say what the files are and how to load them.

Fixtures: tests/layouts/dictionary_learning.py and dictionary_learning_crosscoder.py (the
publisher's layouts and independent reference math); a hint is checked by following it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import saereg
from saereg.base.errors import ArgumentError
from saereg.cli.app import main
from saereg.detection import detect_report

from .layouts import dictionary_learning as dl
from .layouts import dictionary_learning_crosscoder as cc
from .layouts._util import pt_bytes


def _crosscoder_as_ae_pt(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cc.TRAINER_CFG))
    (root / "ae.pt").write_bytes(pt_bytes(cc.TRAINER_STATE))
    return root


def _sae(root: Path, weights: str) -> Path:
    root.mkdir(parents=True)
    case = dl.autoencoder_new()
    (root / "config.json").write_bytes(case.files[f"{dl.PATH}/config.json"])
    (root / weights).write_bytes(case.files[f"{dl.PATH}/ae.pt"])
    return root


def test_a_crosscoder_saved_as_ae_pt_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _crosscoder_as_ae_pt(tmp_path / "cc")
    (found,) = detect_report(folder).saes
    (claim,) = found.claims
    assert claim[:2] == ("dictionary_learning", 0.3)  # not claimed as a loadable SAE
    assert "names BatchTopKCrossCoder, a dictionary_learning crosscoder" in claim[2]
    for call in (
        lambda: saereg.load_sae(folder),
        lambda: saereg.load_sae(folder, format="dictionary_learning"),
        lambda: saereg.load_config(folder),
    ):
        with pytest.raises(saereg.SaeregError) as info:
            call()
        message = str(info.value)
        assert "trainer.dict_class 'BatchTopKCrossCoder' is a dictionary_learning crosscoder" in (
            message
        )
        assert "format 'dictionary_learning_crosscoder'" in message
        assert "rename cc/ae.pt to cc/model_final.pt" in message
        assert "saereg.load_dictionary(PATH)" in message
    # Forced into the crosscoder format, which reads model_final.pt: the reason, not a
    # missing file.
    with pytest.raises(ArgumentError) as forced:
        saereg.load_sae(folder, format="dictionary_learning_crosscoder")
    assert "format 'dictionary_learning_crosscoder' finds no SAE there" in str(forced.value)
    assert "once ae.pt is renamed model_final.pt" in str(forced.value)
    capsys.readouterr()
    assert main(["detect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "dictionary_learning (confidence 0.30; config.json + ae.pt, but config.json" in out
    assert "its config could not be read:" in out and "load_dictionary" in out
    # The hint is right: renamed, it loads as the publisher's crosscoder.
    (folder / "ae.pt").rename(folder / "model_final.pt")
    loaded = saereg.load_dictionary(folder, dtype="float64")
    assert isinstance(loaded, saereg.CrossCoder)
    x = torch.randn(2, 3, cc.D_IN, generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(loaded(x), cc._reference(cc.TRAINER_STATE, cc.CROSSCODER)(x).forward)


def test_a_single_sae_given_to_the_crosscoder_format_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = _sae(tmp_path / "final", "model_final.pt")
    (found,) = detect_report(final).saes
    assert found.claims[0][:2] == ("dictionary_learning_crosscoder", 0.3)
    assert "names AutoEncoderNew, a dictionary_learning single SAE" in found.claims[0][2]
    for call in (
        lambda: saereg.load_sae(final),
        lambda: saereg.load_dictionary(final),
        lambda: saereg.load_sae(final, format="dictionary_learning_crosscoder"),
    ):
        with pytest.raises(saereg.SaeregError) as info:
            call()
        message = str(info.value)
        assert "trainer.dict_class 'AutoEncoderNew' is a dictionary_learning single SAE" in (
            message
        )
        assert "rename model_final.pt to ae.pt" in message
    with pytest.raises(ArgumentError, match="finds no SAE there"):
        saereg.load_sae(final, format="dictionary_learning")
    # A single SAE in its own layout, forced into the crosscoder format.
    sae = _sae(tmp_path / "sae", "ae.pt")
    with pytest.raises(ArgumentError) as forced:
        saereg.load_sae(sae, format="dictionary_learning_crosscoder")
    assert "format 'dictionary_learning', confidence 1.00" in str(forced.value)
    assert "saereg.load_sae(REF) with no format=" in str(forced.value)
    # A crosscoder in its own layout, forced into the single-SAE format (CLI: exit 2).
    root = tmp_path / "trainer"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(cc.TRAINER_CFG))
    (root / "model_final.pt").write_bytes(pt_bytes(cc.TRAINER_STATE))
    capsys.readouterr()
    assert main(["fetch", str(root), "--source-format", "dictionary_learning"]) == 2
    err = capsys.readouterr().err
    assert "format 'dictionary_learning_crosscoder', a crosscoder (multi-layer dictionary)" in err
    assert "saereg.load_dictionary(REF)" in err
    # The hint is right: renamed, the single SAE loads and matches the publisher's math.
    (final / "model_final.pt").rename(final / "ae.pt")
    loaded = saereg.load_sae(final, dtype="float64")
    x = torch.randn(4, dl.D_IN, generator=torch.Generator().manual_seed(5)).double()
    torch.testing.assert_close(loaded.encode(x), dl.autoencoder_new().reference(x).encode.double())
