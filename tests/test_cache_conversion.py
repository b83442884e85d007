"""A cache entry written by a saereg whose conversions differ (source.conversion) is
rebuilt from the publisher files, not served: a fix to a conversion reaches SAEs that
were cached before it. Single SAEs and the layers of multi-layer dictionaries alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import saereg
from saereg import formats
from saereg.base.errors import CacheWarning
from saereg.store import integrity
from saereg.store.canonical import read_config
from saereg.store.sae_config import CONVERSION

from .publishers import rand, st_save


def _bump(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new saereg with changed conversions looks like to the cache."""
    for module in (formats, integrity):
        monkeypatch.setattr(module, "CONVERSION", CONVERSION + 1)


def test_an_entry_of_another_conversion_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "sae"
    folder.mkdir()
    cfg = {"architecture": "standard", "d_in": 8, "d_sae": 16, "normalize_activations": "none"}
    (folder / "cfg.json").write_text(json.dumps({**cfg, "metadata": {"hook_name": "x"}}))
    t = {"W_enc": rand(8, 16), "b_enc": rand(16), "W_dec": rand(16, 8), "b_dec": rand(8)}
    (folder / "sae_weights.safetensors").write_bytes(st_save(t))
    first = saereg.fetch_canonical(folder)
    assert read_config(first).source["conversion"] == CONVERSION
    assert saereg.fetch_canonical(folder) == first  # same saereg: served
    before = first.stat().st_ino
    _bump(monkeypatch)
    with pytest.warns(CacheWarning, match="converted by another saereg"):
        again = saereg.fetch_canonical(folder)
    assert again == first and again.stat().st_ino != before
    assert read_config(again).source["conversion"] == CONVERSION + 1
    torch.testing.assert_close(saereg.load_sae(folder).W_enc, t["W_enc"])


def test_a_layer_of_another_conversion_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .layouts.circuit_tracer_clt import CASES

    case = CASES[0]
    for name, body in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body)
    folder = tmp_path / case.sae["path"]
    paths = saereg.fetch_dictionary(folder)
    stamps = [p.stat().st_ino for p in paths]
    assert [p.stat().st_ino for p in saereg.fetch_dictionary(folder)] == stamps
    _bump(monkeypatch)
    rebuilt = saereg.fetch_dictionary(folder)
    assert rebuilt == paths
    assert all(p.stat().st_ino != s for p, s in zip(rebuilt, stamps, strict=True))
