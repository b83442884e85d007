"""The compiled index is reused while release files are unchanged and rebuilt when one changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from saereg.catalogue import index as index_mod
from saereg.catalogue.index import load_index

from .conftest import write

RELEASE = """\
schema: 1
name: {name}
format: saelens
publisher: T
model: m
repo_id: o/r
revision: null
defaults: {{d_sae: 8, context_size: 4, normalize_activations: none}}
saes:
- {{id: a, path: a, hook_name: blocks.0.hook_resid_pre, hook_layer: 0, neuronpedia: m/0-{name}}}
"""


def test_index_rebuilt_only_when_a_release_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAEREG_CACHE", str(tmp_path / "cache"))
    releases = tmp_path / "releases"
    write(releases / "one.yaml", RELEASE.format(name="one"))
    builds = []
    real_build = index_mod.build_index
    monkeypatch.setattr(index_mod, "build_index", lambda dirs: builds.append(1) or real_build(dirs))

    first = load_index([releases])
    assert list(first.releases) == ["one"] and len(builds) == 1
    assert (tmp_path / "cache" / "index" / "catalog-v3.json").is_file()
    assert load_index([releases]).rows == first.rows and len(builds) == 1  # reused

    write(releases / "two.yaml", RELEASE.format(name="two"))
    assert sorted(load_index([releases]).releases) == ["one", "two"] and len(builds) == 2

    path = releases / "one.yaml"
    path.write_text(RELEASE.format(name="one").replace("d_sae: 8", "d_sae: 16"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    rows = load_index([releases]).records()
    assert len(builds) == 3 and rows[0]["d_sae"] == 16
    assert load_index([releases]).by_neuronpedia() == {
        "m/0-one": ("one", "a"),
        "m/0-two": ("two", "a"),
    }


def test_unwritable_cache_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = write(tmp_path / "not-a-dir", "")
    monkeypatch.setenv("SAEREG_CACHE", str(blocker))
    releases = tmp_path / "releases"
    write(releases / "one.yaml", RELEASE.format(name="one"))
    assert list(load_index([releases]).releases) == ["one"]
