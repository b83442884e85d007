"""The compiled index is reused while release files are unchanged and rebuilt when one changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from saereg.base.errors import CatalogueWarning
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
    monkeypatch.setattr(index_mod, "build_index", lambda *a: builds.append(1) or real_build(*a))

    first = load_index([releases])
    assert list(first.releases) == ["one"] and len(builds) == 1
    assert (tmp_path / "cache" / "index" / "catalog-v4.json").is_file()
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


def _builtin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A built-in release directory of two fixture releases, with its shipped index."""
    from saereg.catalogue import release_dirs

    monkeypatch.setenv("SAEREG_CACHE", str(tmp_path / "cache"))
    builtin = tmp_path / "builtin"
    write(builtin / "one.yaml", RELEASE.format(name="one"))
    write(builtin / "two.yaml", RELEASE.format(name="two"))
    monkeypatch.setattr(release_dirs, "builtin_release_dir", lambda: builtin)
    monkeypatch.setattr(index_mod, "builtin_release_dir", lambda: builtin)
    shipped = index_mod.shipped_index_path()
    write(shipped, "")
    shipped.write_bytes(index_mod.render_shipped_index())
    return builtin


def test_shipped_index_is_used_without_parsing_a_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = _builtin_dir(tmp_path, monkeypatch)
    shipped = index_mod.shipped_index_path().read_bytes()
    assert str(tmp_path) not in shipped.decode()  # no machine's paths: deterministic
    monkeypatch.setattr(index_mod, "build_index", lambda *a: pytest.fail("parsed releases"))
    index = load_index()
    assert list(index.releases) == ["one", "two"]
    assert index.releases["one"]["file"] == str(builtin / "one.yaml")
    assert [r["neuronpedia"] for r in index.records_of(["two"])] == ["m/0-two"]
    assert index.rows[0][:2] == ["one", "a"]
    # The whole output of `list --json` comes from the stored text, as json.dumps writes it.
    lines = b"\n".join(index.json_lines(["one", "two"])).decode().splitlines()
    assert [json.loads(line) for line in lines] == index.records()
    assert lines[0] == json.dumps(index.records()[0], separators=(",", ":"))

    # An extra release directory is compiled in the cache: only its files are parsed, the
    # built-in rows come from the shipped index, and claims across both are reported.
    monkeypatch.undo()
    builtin = _builtin_dir(tmp_path, monkeypatch)
    parsed: list[list[Path]] = []
    real_read = index_mod.read_releases
    monkeypatch.setattr(
        index_mod, "read_releases", lambda dirs, p: parsed.append(list(dirs)) or real_read(dirs, p)
    )
    extra = tmp_path / "extra"
    write(
        extra / "three.yaml",
        RELEASE.format(name="three").replace("m/0-three", "m/0-one").replace("path: a", "path: c"),
    )
    with pytest.warns(CatalogueWarning, match="'m/0-one' of three/a is already used by one/a"):
        index = load_index([builtin, extra])
    assert list(index.releases) == ["one", "two", "three"] and parsed == [[extra]]
    assert index.records_of(["three"])[0]["release"] == "three"


def test_shipped_index_not_trusted_once_a_release_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin = _builtin_dir(tmp_path, monkeypatch)
    assert load_index().records_of(["one"])[0]["d_sae"] == 8
    # Same size, other content, same mtime: only the digests can tell.
    path = builtin / "one.yaml"
    st = path.stat()
    path.write_text(RELEASE.format(name="one").replace("d_sae: 8", "d_sae: 9"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.rmtree(tmp_path / "cache")  # forget that the old files were checked
    assert index_mod.load_shipped_index() is None
    assert load_index().records_of(["one"])[0]["d_sae"] == 9  # built from the files


def test_docs_check_names_a_stale_shipped_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from saereg.cli import main

    builtin = _builtin_dir(tmp_path, monkeypatch)
    monkeypatch.setenv("SAEREG_RELEASES", "")
    out = tmp_path / "docs"
    assert main(["docs", "--out", str(out)]) == 0
    assert main(["docs", "--out", str(out), "--check"]) == 0
    write(builtin / "three.yaml", RELEASE.format(name="three"))
    index_file = index_mod.shipped_index_path()
    before = index_file.read_bytes()
    capsys.readouterr()
    assert main(["docs", "--out", str(out), "--check"]) == 1
    assert str(index_file) in capsys.readouterr().err
    assert index_file.read_bytes() == before  # --check writes nothing
    assert main(["docs", "--out", str(out)]) == 0
    assert index_mod.load_shipped_index() is not None
    assert oct(index_file.stat().st_mode & 0o777) == "0o644"


def test_release_dirs_load_no_plugin_while_none_is_third_party(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built-in plugins ship no release directories: `list` need not import them."""
    from saereg.base import hookspecs, plugin_host

    assert plugin_host.GROUP == hookspecs.GROUP
    plugin_host.reset()
    builtin = [(ep, dist, v) for ep, dist, v in plugin_host._entry_points(plugin_host.GROUP)]
    assert builtin and all(dist.lower() == "saereg" for _, dist, _ in builtin)
    assert plugin_host.plugin_release_dirs() == []
    assert plugin_host.loaded_plugins.cache_info().currsize == 0  # nothing was imported
    plugin_host.reset()


def test_records_survive_any_text_in_their_fields(tmp_path: Path) -> None:
    """Records are stored a line each and cut apart after one encoder call: ids, paths
    and names holding quotes, braces, the cut sequence or newlines come back unchanged."""
    from saereg.catalogue.records import Release, SAEEntry

    nasty = ['a},{"id":"b', 'c"\n},{"id":', "\\\\", "é\u2028", "}", ""]
    saes = tuple(SAEEntry(id=text or "x", path=text, neuronpedia=text) for text in nasty)
    rel = Release("r", "saelens", "p", "m", None, saes, repo_id="o/r")
    index = index_mod.index_of([rel], [])
    stored = write(tmp_path / "index.json", "")
    stored.write_bytes(index.encode({"stamp": 1}))
    path_index, header = index_mod.CatalogIndex.open(stored)
    assert header["stamp"] == 1
    records = path_index.records_of(["r"])
    assert [r["path"] for r in records] == nasty
    lines = b"\n".join(path_index.json_lines(["r"])).decode().splitlines()
    assert [json.loads(line) for line in lines] == records
