"""Multi-layer dictionaries: circuit-tracer's cross-layer transcoders and transcoder sets.

The fixtures are written by circuit-tracer's own `to_safetensors` (tests/data/circuit_tracer);
every result is compared in float64 with two references: the outputs circuit-tracer's own
modules computed for the same inputs (committed in reference.safetensors, since
circuit-tracer pins transformers 4.57 and nnsight and cannot be installed beside the
test dependencies), and the math written from circuit-tracer's code in
tests/layouts/_circuit_tracer.py.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch
import yaml

import saereg
from saereg.base.errors import CacheWarning
from saereg.sae.clt import CrossLayerTranscoder
from saereg.sae.latents import SparseLatents
from saereg.sae.transcoder_set import TranscoderSet
from saereg.store.layer_config import read_layer_config

from .layouts import circuit_tracer_clt, circuit_tracer_set
from .layouts._circuit_tracer import (
    CLT_CONFIG,
    CLT_REPO,
    DATA,
    N_LAYERS,
    SET_REPO,
    circuit_tracer_outputs,
    clt_files,
    clt_math,
    set_config,
    set_files,
    set_math,
)
from .layouts._serve import serve

CLT_CASE = circuit_tracer_clt.CASES[0]
SET_CASE = circuit_tracer_set.CASES[0]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b.double(), atol=1e-10, rtol=1e-10)


def test_clt_matches_circuit_tracer(hubenv: Any) -> None:
    clt = saereg.load_sae(serve(hubenv, CLT_CASE), dtype="float64")
    assert isinstance(clt, CrossLayerTranscoder)
    want = circuit_tracer_outputs()
    x = want["clt.x"]
    f = clt.encode(x)
    _close(f, want["clt.encode"])
    _close(clt.decode(f), want["clt.decode"])
    _close(clt(x), want["clt.forward"])
    mine = clt_math(x)
    _close(clt.decode(f), mine["decode"])
    # Sparse latents decode to the same reconstruction, without the dense tensor.
    sparse = clt.encode(x, sparse=True)
    assert isinstance(sparse, SparseLatents) and sparse.values.shape[0] == N_LAYERS
    _close(sparse.to_dense(), f)
    _close(clt.decode(sparse), want["clt.decode"])


def test_transcoder_set_matches_circuit_tracer(hubenv: Any) -> None:
    ts = saereg.load_sae(serve(hubenv, SET_CASE), dtype="float64")
    assert isinstance(ts, TranscoderSet)
    want = circuit_tracer_outputs()
    x = want["set.x"]
    f = ts.encode(x)
    _close(f, want["set.encode"])
    _close(ts.decode(f), want["set.decode"])
    _close(ts(x), want["set.forward"])  # layer 2's skip path, as circuit-tracer adds it
    _close(ts.decode(ts.encode(x, sparse=True)), want["set.decode"])
    _close(ts(x), set_math(x)["forward"])
    # Each layer is a canonical transcoder (tensors shared, not copied).
    layer2 = ts[2]
    assert isinstance(layer2, saereg.SAE) and layer2.cfg.transcoder
    assert layer2.W_enc.data_ptr() == ts.block(2).W_enc.data_ptr()
    _close(layer2(x[2]), want["set.forward"][2])
    assert layer2.cfg.hook_name == "blocks.2.mlp.hook_in"


def test_layers_subset_reads_only_those_layers(hubenv: Any) -> None:
    ref = serve(hubenv, CLT_CASE)
    clt = saereg.load_sae(ref, layers=[1], dtype="float64")
    fetched = {path.rsplit("/", 1)[-1] for _, path in hubenv.hub.hub_requests()}
    assert {"W_enc_1.safetensors", "W_dec_1.safetensors"} <= fetched
    assert not fetched & {"W_enc_0.safetensors", "W_dec_0.safetensors", "W_enc_2.safetensors"}
    assert clt.layers == (1,)
    x = circuit_tracer_outputs()["clt.x"]
    f = clt.encode(x[1:2])
    _close(f[0], clt_math(x)["encode"][1])
    # Layer 1's reconstruction from the loaded source layer only (layer 0's part absent).
    full = saereg.load_sae(ref, dtype="float64")
    w_dec1 = full.decoder(1)[:, 0]
    _close(clt.decode(f)[0], f[0] @ w_dec1 + full.block(1).b_dec)
    with pytest.raises(saereg.SaeregError, match=r"layers 0\.\.2; layers=\[5\] names \[5\]"):
        saereg.load_sae(ref, layers=[5])
    with pytest.raises(ValueError, match="layer 0 is not loaded"):
        clt.encode_layer(x[0], 0)


def test_cached_layers_are_in_place_and_load_offline(hubenv: Any, monkeypatch: Any) -> None:
    ref = serve(hubenv, CLT_CASE)
    saereg.load_sae(ref)
    cached = sorted((hubenv.cache / "canonical").rglob("*.safetensors"))
    assert len(cached) == N_LAYERS
    # W_enc (transposed) and W_dec are views of the publisher files, mapped in place.
    for path in cached:
        refs = read_layer_config(path).storage["tensors"]
        assert refs["W_enc"]["ops"] == [["transpose"]] and refs["W_dec"]["ops"] == []
    before = hubenv.count()
    clt = saereg.load_sae(ref)
    assert hubenv.count() == before  # nothing asked of the hub: the revision is cached
    x = circuit_tracer_outputs()["clt.x"]
    _close(clt.to(torch.float64).decode(clt.to(torch.float64).encode(x)), clt_math(x)["decode"])


def test_clt_layer_view_is_the_mntss_per_layer_release(hubenv: Any) -> None:
    """The existing `mntss_clt` releases (one layer, decoders summed over targets) are
    `clt.layer(i)`: same tensors, same encode and decode."""
    clt = saereg.load_sae(serve(hubenv, CLT_CASE), dtype="float64")
    doc = {
        "schema": 1,
        "name": "tiny-clt-as-per-layer",
        "format": "mntss_clt",
        "publisher": "Test",
        "model": "test-model",
        "repo_id": CLT_REPO,
        "revision": None,
        "defaults": {"d_sae": 12, "context_size": None, "normalize_activations": "none"},
        "saes": [
            {"id": "layer_1", "path": "1", "hook_name": "blocks.1.hook_resid_mid", "hook_layer": 1}
        ],
    }
    hubenv.add_release(doc["name"], yaml.safe_dump(doc))
    per_layer = saereg.load_sae("tiny-clt-as-per-layer/layer_1", dtype="float64")
    view = clt.layer(1)
    for name in ("W_enc", "b_enc", "threshold", "b_dec"):
        _close(getattr(view, name), getattr(per_layer, name))
    # mntss_clt sums the float32 decoders in float32; the float64 view sums in float64.
    torch.testing.assert_close(view.W_dec, per_layer.W_dec, atol=1e-6, rtol=1e-6)
    x = circuit_tracer_outputs()["clt.x"][1]
    _close(view.encode(x), per_layer.encode(x))
    torch.testing.assert_close(
        view.decode(view.encode(x)), per_layer.decode(per_layer.encode(x)), atol=1e-5, rtol=1e-6
    )
    assert view.cfg.hook_name_out == per_layer.cfg.hook_name_out == "blocks.1.hook_mlp_out"
    # One target's decoder: layer 1's contribution to layer 2's reconstruction.
    to2 = clt.layer(1, target=2)
    _close(to2.W_dec, clt.decoder(1)[:, 1])


def _bad(hubenv: Any, files: dict[str, bytes], n_layers: int = N_LAYERS, **sae: Any) -> str:
    case = CLT_CASE.__class__(**{**CLT_CASE.__dict__})
    case.files = files
    case.name = f"bad-{len(hubenv.hub.hub_requests())}-{n_layers}"
    case.repo_id = f"test-org/{case.name}"
    case.sae = {**CLT_CASE.sae, "n_layers": n_layers, **sae}
    return serve(hubenv, case)


def test_bad_files_are_one_error_naming_the_file(hubenv: Any) -> None:
    files = clt_files()
    ref = _bad(hubenv, files, n_layers=4)  # the release says 4 layers; the files hold 3
    with pytest.raises(saereg.SaeregError, match=r"W_dec_0\.safetensors.*3 target layers"):
        saereg.load_sae(ref, layers=[0])
    missing = {k: v for k, v in files.items() if k != "W_enc_2.safetensors"}
    ref = _bad(hubenv, missing)
    with pytest.raises(saereg.SaeregError, match=r"W_enc_2\.safetensors"):
        saereg.load_sae(ref)
    from safetensors.torch import load, save

    wrong = load(files["W_enc_1.safetensors"])
    wrong["b_dec_1"] = torch.zeros(5)
    ref = _bad(hubenv, {**files, "W_enc_1.safetensors": save(wrong)})
    with pytest.raises(saereg.SaeregError, match=r"layer 1: .*b_dec has shape \[5\]"):
        saereg.load_sae(ref)
    ref = _bad(hubenv, files, hook_name="blocks.0.hook_resid_post")
    with pytest.raises(saereg.SaeregError, match=r"config\.yaml: its feature_input_hook puts"):
        saereg.load_sae(ref, layers=[0])


@pytest.mark.parametrize(
    "entry",
    [
        "hf://other-org/elsewhere/layer_0.safetensors",
        f"hf://{SET_REPO}/../escape/layer_0.safetensors",
        "/etc/passwd",
        f"hf://{SET_REPO}@v2/layers/layer_0.safetensors",
    ],
)
def test_set_config_naming_files_outside_the_repository_is_refused(hubenv: Any, entry: str) -> None:
    listed = [entry] + [f"hf://{SET_REPO}/layers/layer_{i}.safetensors" for i in (1, 2)]
    case = SET_CASE.__class__(**{**SET_CASE.__dict__})
    case.name = "escape"
    case.files = {**set_files(), "config.yaml": set_config(entries=listed)}
    ref = serve(hubenv, case)
    with pytest.raises(saereg.SaeregError, match=r"config\.yaml: transcoders\[0\]"):
        saereg.load_sae(ref, layers=[0])


def test_single_saes_refuse_layers_and_the_config_yaml_is_checked(hubenv: Any) -> None:
    ref = serve(hubenv, circuit_tracer_clt.CASES[0])
    clt = saereg.load_sae(ref, layers=2)
    assert clt.layers == (2,)
    case = CLT_CASE.__class__(**{**CLT_CASE.__dict__})
    case.name = "wrong-kind"
    case.files = {**clt_files(), "config.yaml": CLT_CONFIG.replace(b"cross_layer", b"xx")}
    with pytest.raises(saereg.SaeregError, match=r"config\.yaml: model_kind is 'xx_transcoder'"):
        saereg.load_sae(serve(hubenv, case))


def test_cache_lists_verifies_and_removes_layer_entries(hubenv: Any) -> None:
    from saereg.store import cache

    ref = serve(hubenv, CLT_CASE)
    saereg.load_sae(ref, layers=[0, 2])
    found = cache.entries()
    assert sorted(e.sae_id for e in found) == ["clt/layer_0", "clt/layer_2"]
    assert all(e.storage == "in_place" and e.problem is None for e in found)
    assert all(cache.verify(e) == [] for e in found)
    assert cache.unused(found) == []  # the catalogue still lists the dictionary
    assert len(cache.matching(ref)) == 2
    cache.remove(cache.matching(ref))
    assert cache.entries() == []


def test_gemma_scope_2_clt_matches_circuit_tracer(hubenv: Any) -> None:
    """Gemma Scope 2's per-layer CLT files in their exact layout (w_dec to every layer,
    affine_skip_connection), against circuit-tracer's load_gemma_scope_2_clt outputs."""
    folder = DATA / "gemma_scope_2_clt"
    case = CLT_CASE.__class__(**{**CLT_CASE.__dict__})
    case.format, case.name, case.repo_id = "gemma_scope_2_clt", "gs2", "test-org/gs2"
    case.files = {f"clt/width_test/{p.name}": p.read_bytes() for p in folder.iterdir()}
    case.sae = {**CLT_CASE.sae, "path": "clt/width_test", "hook_name": "blocks.0.hook_mlp_in"}
    clt = saereg.load_sae(serve(hubenv, case), dtype="float64")
    want = circuit_tracer_outputs()
    x = want["gs2.x"]
    f = clt.encode(x)
    _close(f, want["gs2.encode"])
    _close(clt.decode(f), want["gs2.decode"])
    _close(clt(x), want["gs2.forward"])
    assert clt.cfg.hook_names_out[2] == "blocks.2.hook_mlp_out"
    # W_dec is the slice [:, L:] of w_dec, read in place.
    for path in sorted((hubenv.cache / "canonical").rglob("*.safetensors")):
        cfg = read_layer_config(path)
        ops = cfg.storage["tensors"]["W_dec"]["ops"]
        assert ops == [["slice", 1, cfg.layer, N_LAYERS]]


def test_cli_fetches_and_inspects_layers(hubenv: Any) -> None:
    from .conftest import run_saereg

    ref = serve(hubenv, CLT_CASE)
    result = run_saereg("fetch", ref, "--layers", "1,2", "--quiet")
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 2 and all("layer_" in p for p in paths)
    shown = run_saereg("inspect", paths[0])
    assert shown.returncode == 0, shown.stderr
    assert "1 of a 3-layer clt, jumprelu" in shown.stdout
    assert "W_dec         F32 [12, 2, 8] (in place)" in shown.stdout
    bad = run_saereg("fetch", ref, "--layers", "x")
    assert bad.returncode == 2 and "expected layer numbers" in bad.stderr
    with pytest.raises(saereg.SaeregError, match="stored one canonical file per layer"):
        saereg.load_config(ref)


def test_crosscoder_over_two_models(hubenv: Any) -> None:
    from .layouts import ckkissane_crosscoder as layout

    case = layout.CASES[0]
    ref = serve(hubenv, case)
    cc = saereg.load_sae(ref, dtype="float64")
    assert isinstance(cc, saereg.CrossCoder)
    x = torch.randn(2, 3, 5, layout.D_IN, dtype=torch.float64)
    want = case.reference(x)
    f = cc.encode(x)
    _close(f, want.encode)
    _close(cc.decode(f), want.decode)
    _close(cc.decode(cc.encode(x, sparse=True)), want.decode)
    _close(cc(x), want.forward)
    with pytest.raises(saereg.SaeregError, match="loads whole"):
        saereg.load_sae(ref, layers=[0])
    with (
        pytest.raises(saereg.AttachError, match="cannot be hooked into one model"),
        saereg.attach(torch.nn.Linear(2, 2), cc),
    ):
        pass


def test_verify_rebuilds_a_layer_whose_publisher_file_changed(hubenv: Any) -> None:
    ref = serve(hubenv, CLT_CASE)
    saereg.load_sae(ref, layers=[2])
    assert len(list((hubenv.cache / "canonical").rglob("*.safetensors"))) == 1
    blob = next(p for p in hubenv.hf_cache.rglob("blobs/*") if p.stat().st_size == path_size(2))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # the last byte of W_dec_2's data
    blob.write_bytes(bytes(data))
    with pytest.warns(saereg.base.errors.CacheWarning, match="sha256"):
        clt = saereg.load_sae(ref, layers=[2], verify=True, dtype="float64")
    from safetensors.torch import load_file

    published = load_file(DATA / "clt" / "W_dec_2.safetensors")["W_dec_2"]
    _close(clt.decoder(2), published)  # downloaded again, not read from the damaged blob


def path_size(layer: int) -> int:
    return (DATA / "clt" / f"W_dec_{layer}.safetensors").stat().st_size


def test_unpinned_dictionary_offline_serves_the_newest_cached_revision(
    hubenv: Any, monkeypatch: Any
) -> None:
    """As for a single SAE: offline, with the branch not resolvable from the HF cache (it
    was removed; the entries are self-contained), an unpinned dictionary is served at the
    newest revision saereg holds every asked-for layer of, with a warning saying which."""
    ref = serve(hubenv, CLT_CASE)
    monkeypatch.setenv("SAEREG_IN_PLACE", "0")
    online = saereg.load_sae(ref, dtype="float64")
    shutil.rmtree(hubenv.hf_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(CacheWarning, match="offline: .* serving revision"):
        offline = saereg.load_sae(ref, dtype="float64")
    x = circuit_tracer_outputs()["clt.x"]
    _close(offline(x), online(x).double())
    one = saereg.load_sae(ref, layers=[2], dtype="float64")
    assert one.layers == (2,)
    with pytest.raises(saereg.SaeregError, match=r"layers=\[7\]"):
        saereg.load_sae(ref, layers=[7])
    with pytest.raises(saereg.SaeregError, match="not in the Hugging Face cache"):
        saereg.load_sae(ref, revision="0" * 40)
