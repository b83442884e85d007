"""Multi-layer dictionaries take the same paths as single SAEs: revisions (short commit
forms), one resolution per command (an uncatalogued repository listed once), the same
keyword options through `load_sae` and `load_dictionary`, and `export` refusing what no
single-SAE layout holds.

The dictionaries are circuit-tracer's tiny fixtures (tests/layouts/_circuit_tracer.py)
served by the fake hub; every check compares the two loading paths with each other, or
with the tensors of the publisher files they were loaded from.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

import saereg
from saereg.base.errors import CacheWarning
from saereg.cli.app import main
from saereg.loading_layers import LoadOptions
from saereg.store.revisions import RevisionError

from .layouts import circuit_tracer_clt, circuit_tracer_set
from .layouts import saelens as saelens_layouts
from .layouts._circuit_tracer import CLT_REPO, DATA, clt_files
from .layouts._serve import serve

CLT_CASE = circuit_tracer_clt.CASES[0]
SET_CASE = circuit_tracer_set.CASES[0]
SAE_CASE = saelens_layouts.CASES[0]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _changed_clt(hubenv: Any) -> str:
    """A second commit of the CLT repository whose W_enc_0 differs; its commit."""
    tensors = load_bytes(clt_files()["W_enc_0.safetensors"])
    tensors = {n: t + 1 for n, t in tensors.items()}
    return hubenv.hub.add_commit(CLT_REPO, {"W_enc_0.safetensors": save_bytes(tensors)})


def _listings(hubenv: Any, repo: str) -> int:
    return sum(1 for _, path in hubenv.hub.requests if path.startswith(f"/api/models/{repo}/"))


# --------------------------------------------------------------------------- revisions


def test_a_short_commit_loads_a_dictionary_from_the_full_commits_entry(
    hubenv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = serve(hubenv, CLT_CASE)
    first = hubenv.hub.refs[CLT_REPO]["main"]
    full = saereg.fetch_dictionary(ref, [0, 1])
    assert all(p.name.endswith(f"@{first}.safetensors") for p in full)
    _changed_clt(hubenv)  # main moves on; the short form still names the first commit
    before = hubenv.count()
    for short in (first[:7], first[:12]):
        assert saereg.fetch_dictionary(ref, [0, 1], revision=short) == full
        clt = saereg.load_sae(ref, layers=[0], revision=short, dtype="float64")
        assert clt.cfg.source["revision"] == first
    assert hubenv.count() == before  # served from the cache: the commit is known
    published = load_bytes(clt_files()["W_enc_0.safetensors"])["W_enc_0"]
    torch.testing.assert_close(clt.block(0).W_enc, published.double().T)
    # Offline too, and from the command line.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert saereg.fetch_dictionary(ref, [1], revision=first[:9]) == full[1:]


def test_short_commits_fail_alike_for_single_saes_and_dictionaries(
    hubenv: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    dictionary = serve(hubenv, CLT_CASE)
    single = serve(hubenv, SAE_CASE)
    saereg.fetch_dictionary(dictionary, [0])
    saereg.fetch_canonical(single)
    errors = {}
    for ref, repo in ((dictionary, CLT_REPO), (single, SAE_CASE.repo_id)):
        commit = hubenv.hub.refs[repo]["main"]
        # Another snapshot in the HF cache that starts alike: the prefix is ambiguous.
        twin = commit[:10] + ("0" if commit[10] != "0" else "1") * 30
        snapshots = hubenv.hf_cache / f"models--{repo.replace('/', '--')}" / "snapshots"
        (snapshots / twin).mkdir()
        with pytest.raises(RevisionError) as err:
            saereg.load_sae(ref, revision=commit[:8])
        assert str(err.value) == (
            f"revision {commit[:8]!r} is ambiguous: it starts {', '.join(sorted([commit, twin]))}; "
            "give more of the commit"
        )
        code, _, text = _cli(capsys, "fetch", ref, "--revision", commit[:8], "--quiet")
        assert code == 2 and "is ambiguous" in text
        # A revision that names nothing: the hub says so, for both alike.
        with pytest.raises(saereg.SaeregError) as err:
            saereg.load_sae(ref, revision="abcdef1")
        errors[ref] = (type(err.value), str(err.value).replace(repo, "REPO"))
        code, _, text = _cli(capsys, "fetch", ref, "--revision", "mian", "--quiet")
        assert code == 2 and text.endswith("has no revision 'mian'. Did you mean: main?\n")
        # The longer prefix is not ambiguous and loads the cached entry.
        assert saereg.load_sae(ref, revision=commit[:11], layers=None) is not None
    assert errors[dictionary] == errors[single]
    assert errors[single][0].exit_code == 2
    assert "REPO has no revision 'abcdef1' (a short commit is expanded only" in errors[single][1]


# --------------------------------------------------------------------------- listings


def test_an_uncatalogued_repository_is_listed_once_per_command(
    hubenv: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = "someone/tiny-clt"
    files = {
        p: b.replace(CLT_REPO.encode(), repo.encode()) if p.endswith(".yaml") else b
        for p, b in CLT_CASE.files.items()
    }
    hubenv.hub.add_commit(repo, files)
    code, out, err = _cli(capsys, "fetch", f"hf:{repo}", "--quiet")
    assert code == 0, err
    assert len(out.split()) == 3 and _listings(hubenv, repo) == 1
    code, out, err = _cli(capsys, "fetch", f"hf:{repo}", "--layers", "1", "--quiet", "--json")
    assert code == 0 and _listings(hubenv, repo) == 2, err
    # Offline, a short commit of the repository names the files the HF cache holds.
    commit = hubenv.hub.refs[repo]["main"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, again, err = _cli(capsys, "fetch", f"hf:{repo}@{commit[:8]}", "--layers", "1")
    assert code == 0 and again.split() == [json.loads(out)[0]["path"]], err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # A single SAE of an uncatalogued repository: fetch and export list it once each.
    single = "someone/one-sae"
    hubenv.hub.add_commit(single, SAE_CASE.files)
    ref = f"hf:{single}/{SAE_CASE.sae['path']}"
    code, _, err = _cli(capsys, "fetch", ref, "--quiet")
    assert code == 0 and _listings(hubenv, single) == 1, err
    code, _, err = _cli(capsys, "export", ref, "--out", str(tmp_path / "x"))
    assert code == 0 and _listings(hubenv, single) == 2, err


# --------------------------------------------------------------------------- export


def test_export_refuses_dictionaries_and_their_layer_files(
    hubenv: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    for case in (CLT_CASE, SET_CASE):
        ref = serve(hubenv, case)
        kind = case.sae["kind"]
        before = hubenv.count()
        code, _, err = _cli(capsys, "export", ref, "--out", out)
        assert (code, err.count("\n")) == (2, 1), err
        assert hubenv.count() == before  # refused before any download
        assert f"{ref} is a 3-layer {kind}, a multi-layer dictionary" in err
        assert "export writes one single-hook SAE or transcoder" in err
        code, paths, _ = _cli(capsys, "fetch", ref, "--layers", "1", "--quiet")
        layer_file = paths.split()[0]
        for fmt in ("saelens", "sparsify"):
            code, _, err = _cli(capsys, "export", layer_file, "--format", fmt, "--out", out)
            assert (code, err.count("\n")) == (2, 1), err
            assert f"is layer 1 of {ref}, a 3-layer {kind}" in err
            assert ".layer(1).save('layer_1.safetensors')" in err
        assert not Path(out).exists()
    # The API refuses a layer config as the command does.
    from saereg.store.canonical import NotExportableError, export_saelens
    from saereg.store.export_sparsify import export_sparsify
    from saereg.store.layer_config import read_layer_config

    cfg = read_layer_config(Path(layer_file))
    for exporter in (export_saelens, export_sparsify):
        with pytest.raises(NotExportableError, match=r"is layer 1 of .*/set, a 3-layer"):
            exporter(cfg, {}, tmp_path / "api")  # type: ignore[arg-type]
    assert not (tmp_path / "api").exists()
    with pytest.raises(saereg.SaeregError, match="one layer file of a multi-layer dictionary"):
        saereg.SAE.load(layer_file)


def test_export_refuses_a_local_dictionary_and_the_advice_works(
    hubenv: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "set"
    for path, body in SET_CASE.files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(body)
    code, _, err = _cli(capsys, "export", str(folder), "--out", str(tmp_path / "o"))
    assert code == 2 and "a 3-layer transcoder_set, a multi-layer dictionary" in err
    # What the message says to do: one layer saved as a canonical transcoder exports
    # to SAELens' layout. The reference is SAELens' `Transcoder` (sae_lens 6.54,
    # saes/transcoder.py), written out: relu(x @ W_enc + b_enc) @ W_dec + b_dec, no
    # b_dec subtracted from the input.
    layer = saereg.load_sae(serve(hubenv, SET_CASE), layers=[1], dtype="float64").layer(1)
    saved = layer.save(tmp_path / "layer_1.safetensors")
    code, _, err = _cli(capsys, "export", str(saved), "--out", str(tmp_path / "sl"))
    assert code == 0, err
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert cfg["architecture"] == "transcoder" and cfg["apply_b_dec_to_input"] is False
    assert (cfg["d_in"], cfg["d_sae"], cfg["d_out"]) == (layer.cfg.d_in, layer.cfg.d_sae, 8)
    assert cfg["metadata"]["hook_name_out"] == layer.cfg.hook_name_out
    w = load_file(tmp_path / "sl" / "sae_weights.safetensors")
    x = torch.randn(4, layer.cfg.d_in, dtype=torch.float64)
    f = torch.relu(x @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(f, layer.encode(x))
    torch.testing.assert_close(f @ w["W_dec"] + w["b_dec"], layer.decode(layer.encode(x)))


# --------------------------------------------------------------------------- options


def _published_w_dec(layer: int) -> torch.Tensor:
    return load_file(DATA / "clt" / f"W_dec_{layer}.safetensors")[f"W_dec_{layer}"]


def _check_layers(load: Any, ref: str, hubenv: Any) -> None:
    assert load(ref, layers=[1]).layers == (1,)
    assert load(ref, layers=2).layers == (2,)


def _check_device(load: Any, ref: str, hubenv: Any) -> None:
    clt = load(ref, device="meta", layers=[0])
    assert {p.device.type for p in clt.parameters()} == {"meta"}
    with pytest.raises(saereg.SaeregError, match="is not a device"):
        load(ref, device="nowhere")


def _check_dtype(load: Any, ref: str, hubenv: Any) -> None:
    assert {p.dtype for p in load(ref, layers=[0]).parameters()} == {torch.float32}
    assert {p.dtype for p in load(ref, dtype="bfloat16").parameters()} == {torch.bfloat16}
    assert load(ref, dtype="float64").cfg.dtype == "float64"
    assert load(ref, dtype=None).cfg.dtype == "float32"  # as the fixture stores it
    with pytest.raises(saereg.SaeregError, match="unknown dtype"):
        load(ref, dtype="int8")


def _check_revision(load: Any, ref: str, hubenv: Any) -> None:
    old, new = list(hubenv.hub.commits[CLT_REPO])
    changed = load(ref, revision=new, layers=[0], dtype="float64")
    assert changed.cfg.source["revision"] == new
    for revision in (old, old[:10]):
        clt = load(ref, revision=revision, layers=[0], dtype="float64")
        assert clt.cfg.source["revision"] == old
    torch.testing.assert_close(changed.block(0).W_enc, clt.block(0).W_enc + 1)
    assert load(ref, revision=new[:8], layers=[0]).cfg.source["revision"] == new


def _check_force(load: Any, ref: str, hubenv: Any) -> None:
    load(ref, layers=[1])
    before = hubenv.count()
    load(ref, layers=[1])
    assert hubenv.count() == before
    load(ref, layers=[1], force=True)
    assert hubenv.count() > before


def _check_quiet(load: Any, ref: str, hubenv: Any, capfd: Any = None) -> None:
    capfd.readouterr()
    load(ref, layers=[2], force=True, quiet=True)
    assert capfd.readouterr().err == ""
    load(ref, layers=[2], force=True, quiet=False)
    assert "converting clt%2Flayer_2@" in capfd.readouterr().err  # the progress bar


def _check_verify(load: Any, ref: str, hubenv: Any) -> None:
    load(ref, layers=[2])
    size = (DATA / "clt" / "W_dec_2.safetensors").stat().st_size
    blob = next(p for p in hubenv.hf_cache.rglob("blobs/*") if p.stat().st_size == size)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # the last byte of W_dec_2's data
    blob.write_bytes(bytes(data))
    load(ref, layers=[2])  # not verified: served as it is
    with pytest.warns(CacheWarning, match="sha256"):
        clt = load(ref, layers=[2], verify=True, dtype="float64")
    torch.testing.assert_close(clt.decoder(2), _published_w_dec(2).double())


#: One check per keyword option of load_dictionary: a new option needs a check here.
CHECKS = {
    "layers": _check_layers,
    "device": _check_device,
    "dtype": _check_dtype,
    "revision": _check_revision,
    "force": _check_force,
    "quiet": _check_quiet,
    "verify": _check_verify,
}


def test_load_sae_and_load_dictionary_take_the_same_options() -> None:
    """The same parameters with the same defaults, each one a LoadOptions field (or
    `layers`, or the overrides), so no option can reach one loader and not the other."""
    ours = inspect.signature(saereg.load_dictionary).parameters
    theirs = inspect.signature(saereg.load_sae).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]
    options = {f.name: f.default for f in dataclasses.fields(LoadOptions)}
    keywords = {n: p.default for n, p in ours.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == {**options, "layers": None}
    assert set(CHECKS) == set(keywords)
    assert "overrides" in ours and ours["overrides"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("option", sorted(CHECKS))
@pytest.mark.parametrize("loader", ["load_sae", "load_dictionary"])
def test_every_dictionary_option_is_honoured_by_both_loaders(
    hubenv: Any, capfd: pytest.CaptureFixture[str], option: str, loader: str
) -> None:
    ref = serve(hubenv, CLT_CASE)
    load = getattr(saereg, loader)
    if option == "revision":
        _changed_clt(hubenv)  # a second commit: main names it
    if option == "quiet":
        _check_quiet(load, ref, hubenv, capfd)
    else:
        CHECKS[option](load, ref, hubenv)


def test_overrides_reach_a_local_dictionary_through_both_loaders(tmp_path: Path) -> None:
    folder = tmp_path / "clt"
    for path, body in CLT_CASE.files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(body)
    for load in (saereg.load_sae, saereg.load_dictionary):
        assert load(folder, model="gemma-2-2b").cfg.model == "gemma-2-2b"
        with pytest.raises(saereg.SaeregError, match="Did you mean: model"):
            load(folder, modle="gemma-2-2b")
    with pytest.raises(saereg.SaeregError, match="not a multi-layer dictionary"):
        saereg.load_dictionary(serve_single(tmp_path))


def serve_single(root: Path) -> Path:
    for path, body in SAE_CASE.files.items():
        (root / "single" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "single" / path).write_bytes(body)
    return root / "single" / SAE_CASE.sae["path"]
