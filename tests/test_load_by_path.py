"""SAEs no release file describes: local folders and files, and uncatalogued hf: repos.

Every layout case of tests/layouts (each publisher's exact file layout) is written to a
folder and loaded by path, and (the first case of each format) put in a repository no
release lists and loaded by ``hf:`` reference, online from the fake hub and offline from
the HF cache. Each must give the same module as the catalogue gives for the same files:
the same canonical tensors, config and outputs. What the files cannot say is passed as
keyword overrides, exactly what the case's release entry states.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import torch

import saereg

from . import layouts
from .layouts._case import LayoutCase
from .layouts._serve import serve

#: Entry fields a layout case may state that load_sae takes as overrides.
_OVERRIDES = {
    "hook_name",
    "hook_name_out",
    "hook_layer",
    "hf_hook_name",
    "k",
    "norm_scaling_factor",
    "normalize_activations",
    "context_size",
}


def _all_cases() -> list[LayoutCase]:
    cases = []
    for info in pkgutil.iter_modules(layouts.__path__):
        if not info.name.startswith("_"):
            cases += getattr(importlib.import_module(f"tests.layouts.{info.name}"), "CASES", [])
    return cases


CASES = _all_cases()
FIRST_OF_EACH = list({c.format: c for c in reversed(CASES)}.values())
#: Formats whose files/convert take a different branch per case when read without a
#: release (generation, layout or transcoder-ness decided from the files): every case.
#: Of the others, the first case (the rest differ in math the catalogue test covers).
_BRANCHING = {"gemma_scope", "llama_scope", "sparsify", "oai", "mwhanna_transcoder"}
BY_PATH = [c for c in CASES if c.format in _BRANCHING or c in FIRST_OF_EACH]


def _write(case: LayoutCase, root: Path) -> Path:
    for path, body in case.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return root


def _overrides(case: LayoutCase, catalogued: Any) -> dict[str, Any]:
    """What the case's release entry states, plus the hooks the catalogue derived from
    the publisher's path and repository names (which a renamed folder no longer has)."""
    out = {k: v for k, v in case.sae.items() if k in _OVERRIDES}
    for key in ("hook_name", "hook_name_out", "hf_hook_name"):
        value = getattr(catalogued.cfg, key, None)  # (a multi-layer dictionary has none)
        if value is not None:
            out.setdefault(key, value)
    if case.release.get("model"):
        out["model"] = case.release["model"]
    return out


#: Descriptive fields: a minimal test release may leave out what the publisher's names
#: imply (and what detection then fills in); where the catalogue states one, they agree.
_METADATA = ("hook_name", "hook_name_out", "hook_layer", "hf_hook_name", "context_size", "dataset")


def _config(cfg: Any) -> dict[str, Any]:
    """An SAE's canonical config, or a multi-layer dictionary's, as a dict."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)


def _same(loaded: Any, catalogued: Any, case: LayoutCase) -> None:
    a, b = _config(loaded.cfg), _config(catalogued.cfg)
    hf_sites = ("hf_hook", "hf_hook_out", "hf_hooks", "hf_hooks_out")
    for key in ("source", "storage", "model", "model_hub_id", *hf_sites):
        a.pop(key, None)
        b.pop(key, None)
    for key in _METADATA:
        if key not in b:
            a.pop(key, None)
    assert a == b
    assert loaded.cfg.source["format"] == catalogued.cfg.source["format"] == case.format
    ours, theirs = loaded.state_dict(), catalogued.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=0, rtol=0, msg=name)
    x = torch.randn(*case.input_shape, generator=torch.Generator().manual_seed(3)).double()
    # float64; in-place entries read transposed views, so sums may differ in the last bit
    tight = {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(loaded.encode(x), catalogued.encode(x), **tight)
    torch.testing.assert_close(loaded(x), catalogued(x), **tight)


def _target(case: LayoutCase, root: Path) -> tuple[Path, dict[str, Any]]:
    """The folder or file to name, and the `sae=` a path that is no file needs."""
    path = root / case.sae["path"]
    return (path, {}) if path.exists() else (root, {"sae": case.sae["path"]})


@pytest.mark.parametrize("case", BY_PATH, ids=[f"{c.format}-{c.name}" for c in BY_PATH])
def test_every_format_loads_by_path_as_through_the_catalogue(
    hubenv: Any, tmp_path: Path, case: LayoutCase
) -> None:
    catalogued = saereg.load_sae(serve(hubenv, case), dtype="float64")
    target, pick = _target(case, _write(case, tmp_path / "copy"))
    loaded = saereg.load_sae(target, dtype="float64", **pick, **_overrides(case, catalogued))
    _same(loaded, catalogued, case)
    assert loaded.cfg.source["release"] == "local"
    # A second load is a cache hit: the same canonical file(s), no conversion.
    multi = case.sae.get("kind") in ("clt", "transcoder_set", "crosscoder")
    fetch = saereg.fetch_dictionary if multi else saereg.fetch_canonical
    again = fetch(target, **pick, **_overrides(case, catalogued))
    assert again == fetch(target, **pick, **_overrides(case, catalogued))


@pytest.fixture(scope="module")
def shared_cache() -> Path:
    """The session's saereg cache for the hf: tests: telling a catalogued repository from
    an uncatalogued one reads the compiled index of the built-in catalogue, built there
    once for the whole session (not once per test's fresh cache)."""
    return Path(os.environ["SAEREG_CACHE"])


@pytest.mark.parametrize("case", FIRST_OF_EACH, ids=[c.format for c in FIRST_OF_EACH])
def test_uncatalogued_repository_loads_online_and_offline(
    hubenv: Any, monkeypatch: pytest.MonkeyPatch, case: LayoutCase, shared_cache: Path
) -> None:
    catalogued = saereg.load_sae(serve(hubenv, case), dtype="float64")
    # From here on only the built-in catalogue, whose index is compiled once per module.
    monkeypatch.delenv("SAEREG_RELEASES")
    monkeypatch.setenv("SAEREG_CACHE", str(shared_cache))
    repo = "someone-else/" + case.repo_id.rsplit("/", 1)[-1]  # keeps the publisher's name
    # (a circuit-tracer config.yaml names its files as hf://REPO/PATH: this repository's)
    own = case.repo_id.encode()
    hubenv.hub.add_commit(
        repo,
        {
            p: b.replace(own, repo.encode()) if p.endswith(".yaml") else b
            for p, b in case.files.items()
        },
    )
    ref = f"hf:{repo}/{case.sae['path']}"
    overrides = _overrides(case, catalogued)
    loaded = saereg.load_sae(ref, dtype="float64", **overrides)
    _same(loaded, catalogued, case)
    assert loaded.cfg.source["repo_id"] == repo
    assert loaded.cfg.source["revision"] == hubenv.hub.refs[repo]["main"]
    # Offline: the listing comes from the HF cache, and the conversion is redone from it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = hubenv.count()
    offline = saereg.load_sae(ref, dtype="float64", force=True, **overrides)
    _same(offline, catalogued, case)
    assert hubenv.count() == before


def test_config_and_load_of_a_relative_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .layouts.saelens import CASES as SAELENS

    case = SAELENS[0]
    root = _write(case, tmp_path / "copy")
    monkeypatch.chdir(root)
    folder = f"./{case.sae['path']}"
    cfg = saereg.load_config(folder)
    assert (cfg.d_in, cfg.d_sae, cfg.hook_name) == (8, 24, "blocks.3.hook_resid_pre")
    assert cfg.hook_layer == 3 and cfg.source["release"] == "local"
    assert saereg.load_sae(Path(folder)).cfg == saereg.load_sae(folder).cfg


def test_a_changed_folder_is_converted_again(tmp_path: Path) -> None:
    from .layouts.saelens import CASES as SAELENS

    case = SAELENS[0]
    folder = _write(case, tmp_path / "copy") / case.sae["path"]
    first = saereg.fetch_canonical(folder)
    sae = saereg.load_sae(folder)
    weights = folder / "sae_weights.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    tensors["b_dec"] = tensors["b_dec"] + 1
    save_file(tensors, weights)
    second = saereg.fetch_canonical(folder)
    assert second != first
    changed = saereg.load_sae(folder)
    torch.testing.assert_close(changed.b_dec, sae.b_dec + 1)
    # `saereg cache prune --unused` drops the superseded conversion, keeps the current one.
    from saereg.store import cache

    stale = {e.path for e in cache.unused(cache.entries())}
    assert first in stale and second not in stale


def test_overrides_and_what_stays_unknown(tmp_path: Path) -> None:
    from .layouts.qwen_scope import CASES as QWEN

    case = QWEN[0]
    file = _write(case, tmp_path / "copy") / case.sae["path"]
    with pytest.raises(saereg.SaeregError, match=r"do not say k .*pass k=N"):
        saereg.load_sae(file)
    sae = saereg.load_sae(file, k=5)
    assert sae.cfg.k == 5 and sae.cfg.hook_name is None and sae.cfg.model is None
    named = saereg.load_sae(file, k=5, hook_name="blocks.3.hook_resid_post", model="qwen3-1.7b")
    assert named.cfg.hook_name == "blocks.3.hook_resid_post" and named.cfg.hook_layer == 3
    assert named.cfg.model == "qwen3-1.7b"
    with pytest.raises(saereg.SaeregError, match="Did you mean: hook_name"):
        saereg.load_sae(file, hook_nam="x")
    with pytest.raises(saereg.SaeregError, match="apply only to local folders"):
        saereg.load_sae("gpt2-small-res-jb/blocks.8.hook_resid_pre", k=3)


# --------------------------------------------------------------------------- detection


def _detect(listing: list[str], configs: dict[str, bytes] | None = None) -> list[tuple[str, Any]]:
    from saereg.formats import CanonicalFileError, get_registry

    def read_small(path: str) -> bytes:
        if configs and path in configs:
            return configs[path]
        raise CanonicalFileError(f"{path}: not in this test listing")

    return [(f.name, m) for f, m in get_registry().detect(listing, read_small)]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.format}-{c.name}" for c in CASES])
def test_every_format_detects_its_layout(case: LayoutCase) -> None:
    small = {
        p: b for p, b in case.files.items() if len(b) < 4096 and p.endswith((".json", ".yaml"))
    }
    found = _detect(list(case.files), small)
    assert found, f"nothing detects {case.format}"
    best_conf = found[0][1].confidence
    path = "" if case.sae["path"] == "." else case.sae["path"]  # "": the listing's root
    best = [name for name, m in found if m.confidence == best_conf and path in m.paths]
    assert best == [case.format], found


def test_same_file_names_tell_formats_apart_by_their_configs() -> None:
    from .layouts.saelens import CASES as SAELENS
    from .layouts.sparsify import CASES as SPARSIFY

    for case, want in ((SAELENS[0], "saelens"), (SPARSIFY[0], "sparsify")):
        found = _detect(list(case.files), dict(case.files))
        assert found[0][0] == want and found[0][1].confidence == 1.0


def test_ambiguity_names_the_candidates_and_format_chooses(tmp_path: Path) -> None:
    from .layouts.deepseek_r1 import CASES as R1

    case = R1[0]
    body = next(iter(case.files.values()))
    file = tmp_path / "My-SAE-l19.pt"  # both qresearch's and Goodfire's naming
    file.write_bytes(body)
    with pytest.raises(saereg.UnknownReferenceError) as err:
        saereg.load_sae(file)
    message = str(err.value)
    assert "deepseek_r1" in message and "goodfire" in message and "format=" in message
    sae = saereg.load_sae(file, format="deepseek_r1")
    assert sae.cfg.source["format"] == "deepseek_r1"


# --------------------------------------------------------------------------- bad input


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from saereg.cli.app import main

    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def test_bad_paths_are_one_clear_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .layouts.saelens import CASES as SAELENS

    empty = tmp_path / "empty"
    empty.mkdir()
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("hello")
    (unrelated / "data.bin").write_bytes(b"\0" * 8)
    two = tmp_path / "two"
    for sub in ("a", "b"):
        for path, body in SAELENS[0].files.items():
            target = two / sub / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
    looped = tmp_path / "self"
    looped.symlink_to(looped)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "up").symlink_to(inner, target_is_directory=True)
    cases = [
        (empty, 2, "is an empty folder"),
        (unrelated, 2, "no installed format recognises"),
        (two, 2, "holds 2 SAEs: a (saelens), b (saelens)"),
        (looped, 2, "symbolic link loop"),
        (inner, 1, "symbolic link loop"),
        (tmp_path / "missing", 2, "does not exist"),
    ]
    for path, code, words in cases:
        got, err = _cli("fetch", str(path), capsys=capsys)
        assert (got, err.count("\n")) == (code, 1), (path, err)
        assert words in err, err
    got, err = _cli("fetch", str(two), "--sae", "b", "--quiet", capsys=capsys)
    assert got == 0, err


def test_hf_paths_that_escape_the_repository_name_nothing(
    hubenv: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shared_cache: Path,
) -> None:
    monkeypatch.delenv("SAEREG_RELEASES")
    monkeypatch.setenv("SAEREG_CACHE", str(shared_cache))
    hubenv.hub.add_commit("org/repo", {"a/cfg.json": b"{}"})
    for ref in ("hf:org/repo/../other/x", "hf:org/repo/a/%2e%2e/%2e%2e/x", "hf:org/repo//etc"):
        got, err = _cli("fetch", ref, capsys=capsys)
        assert got == 2 and err.count("\n") == 1, err
        assert "inside org/repo" in err or "relative" in err, err
    with pytest.raises(saereg.UnknownReferenceError, match="no SAE at 'nothing'"):
        saereg.load_sae("hf:org/repo/nothing")


def test_detect_command_prints_format_reads_and_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from saereg.cli.app import main

    from .layouts.sparsify import CASES as SPARSIFY

    root = _write(SPARSIFY[2], tmp_path / "copy")  # the skip transcoder
    assert main(["detect", str(root / "layers.1.mlp")]) == 0
    out = capsys.readouterr().out
    assert "sparsify (confidence 1.00" in out and "read: cfg.json" in out
    snippet = yaml.safe_load(out.split("`saereg validate`):\n", 1)[1])
    assert snippet["format"] == "sparsify"
    assert snippet["saes"][0]["hook_name_out"] == "blocks.1.hook_mlp_out"
    assert main(["detect", str(root), "--json"]) == 0
    data = __import__("json").loads(capsys.readouterr().out)
    assert [s["path"] for s in data["saes"]] == ["layers.1.mlp"]
    assert data["saes"][0]["config"]["transcoder"] is True


def test_new_detects_the_format(hubenv: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from saereg.cli.app import main

    from .publishers import gemma_scope_npz, saelens_folder

    files: dict[str, bytes] = {}
    for hook in ("blocks.0.hook_resid_pre", "blocks.5.hook_resid_pre"):
        files.update(saelens_folder(hook, hook=hook)[0])
    hubenv.hub.add_commit("someone/detected-saes", files)
    out = ["--out", str(hubenv.releases)]
    assert main(["new", "--repo", "someone/detected-saes", "--release", "det", *out]) == 0
    text = (hubenv.releases / "det.yaml").read_text()
    assert "format: saelens" in text and "(format detected)" in text
    assert "path: blocks.5.hook_resid_pre" in text
    # Two formats' files in one repository, equally sure: --format is asked for.
    npz, _ = gemma_scope_npz(d_in=8, d_sae=16)
    files["layer_0/width_16k/average_l0_5/params.npz"] = npz
    hubenv.hub.add_commit("someone/mixed", files)
    capsys.readouterr()
    assert main(["new", "--repo", "someone/mixed", "--release", "mixed", *out]) == 1
    assert "choose one with --format" in capsys.readouterr().err
