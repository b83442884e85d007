"""Multi-layer dictionaries no release describes: local folders and uncatalogued hf:
repositories in each publisher's exact layout load as the catalogue loads them.

The generic by-path and hf: comparisons over every layout case (circuit-tracer CLT and
transcoder set, ckkissane's crosscoder) are in test_load_by_path.py; here: Gemma Scope 2
CLTs (against circuit-tracer's own outputs, tests/data/circuit_tracer), the real mwhanna
layout (circuit-tracer's config.yaml beside ``layer_{i}.safetensors``, which the
per-layer ``mwhanna_transcoder`` format also reads), ``layers=``, `saereg detect` and
`saereg fetch`, and folders whose layer files disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

import saereg
from saereg.detection import detect_report
from saereg.sae.clt import CrossLayerTranscoder
from saereg.sae.transcoder_set import TranscoderSet

from .conftest import run_saereg
from .layouts import circuit_tracer_clt
from .layouts._circuit_tracer import (
    DATA,
    N_LAYERS,
    circuit_tracer_outputs,
    clt_files,
    clt_math,
    set_math,
)
from .layouts._serve import serve

CLT_CASE = circuit_tracer_clt.CASES[0]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b.double(), atol=1e-10, rtol=1e-10)


def _write(files: dict[str, bytes], root: Path) -> Path:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    return root


def _gs2_files() -> dict[str, bytes]:
    folder = DATA / "gemma_scope_2_clt"
    return {f"clt/width_test/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}


def test_gemma_scope_2_clt_folder_loads_as_the_catalogue(hubenv: Any, tmp_path: Path) -> None:
    case = CLT_CASE.__class__(**{**CLT_CASE.__dict__})
    case.format, case.name, case.repo_id = "gemma_scope_2_clt", "gs2", "test-org/gs2"
    case.files = _gs2_files()
    case.sae = {**CLT_CASE.sae, "path": "clt/width_test", "hook_name": "blocks.0.hook_mlp_in"}
    catalogued = saereg.load_sae(serve(hubenv, case), dtype="float64")
    folder = _write(case.files, tmp_path / "copy") / "clt" / "width_test"
    loaded = saereg.load_sae(folder, dtype="float64")
    assert isinstance(loaded, CrossLayerTranscoder)
    assert loaded.cfg.source["release"] == "local"
    assert loaded.cfg.source["format"] == "gemma_scope_2_clt" and loaded.layers == (0, 1, 2)
    assert loaded.cfg.hook_names == catalogued.cfg.hook_names
    want = circuit_tracer_outputs()
    x = want["gs2.x"]
    _close(loaded.encode(x), want["gs2.encode"])
    _close(loaded.decode(loaded.encode(x)), want["gs2.decode"])
    _close(loaded(x), want["gs2.forward"])
    for name, value in catalogued.state_dict().items():  # the same canonical tensors
        torch.testing.assert_close(loaded.state_dict()[name], value, atol=0, rtol=0)
    # (the catalogue reads the hub files in place through views: sums may differ in
    # the last bit)
    torch.testing.assert_close(loaded(x), catalogued(x), atol=1e-12, rtol=1e-12)
    # One layer alone, by path: only that layer is read and cached.
    one = saereg.load_sae(folder, layers=[1], dtype="float64")
    assert one.layers == (1,)
    _close(one.encode(x[1:2]), want["gs2.encode"][1:2])
    # The repository root, named by the folder above: the CLT is found under clt/.
    found = detect_report(tmp_path / "copy")
    assert [(f.path, f.claims[0][0]) for f in found.saes] == [
        ("clt/width_test", "gemma_scope_2_clt")
    ]


def _mwhanna_folder(root: Path, listed: bool) -> Path:
    """mwhanna's repositories: circuit-tracer's config.yaml (a transcoder set) beside
    layer_{i}.safetensors at the top, the config listing them as hf:// references to the
    repository itself (or, `listed` false, leaving them to be found by name)."""
    lines = [
        "model_kind: transcoder_set",
        "feature_input_hook: mlp.hook_in",
        "feature_output_hook: hook_mlp_out",
    ]
    if listed:
        lines.append("transcoders:")
        lines += [
            f"  - hf://mwhanna/qwen3-0.6b-transcoders/layer_{i}.safetensors"
            for i in range(N_LAYERS)
        ]
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("\n".join(lines) + "\n")
    for i in range(N_LAYERS):
        shutil.copy(DATA / "set" / f"layer_{i}.safetensors", root / f"layer_{i}.safetensors")
    return root


@pytest.mark.parametrize("listed", [True, False], ids=["hf-list", "by-name"])
def test_a_folder_with_circuit_tracers_config_is_a_transcoder_set(
    tmp_path: Path, listed: bool
) -> None:
    folder = _mwhanna_folder(tmp_path / "qwen3-0.6b-transcoders", listed)
    report = detect_report(folder)
    assert [(f.path, f.claims[0][0]) for f in report.saes] == [("", "circuit_tracer_set")]
    assert "3 layers" in report.saes[0].claims[0][2]
    ts = saereg.load_sae(folder, dtype="float64")
    assert isinstance(ts, TranscoderSet) and len(ts) == N_LAYERS
    assert ts.cfg.hook_names_out[1] == "blocks.1.hook_mlp_out"
    x = torch.randn(N_LAYERS, 4, 8, generator=torch.Generator().manual_seed(0)).double()
    want = set_math(x)
    _close(ts.encode(x), want["encode"])
    _close(ts(x), want["forward"])
    # One layer's file is still one transcoder (mwhanna_transcoder), as in the catalogue.
    single = saereg.load_sae(folder / "layer_2.safetensors", dtype="float64")
    assert single.cfg.source["format"] == "mwhanna_transcoder" and single.cfg.transcoder
    _close(single(x[2]), want["forward"][2])
    picked = saereg.load_sae(folder, sae="layer_2.safetensors", dtype="float64")
    assert picked.cfg == single.cfg


def test_cli_detects_and_fetches_a_clt_folder(tmp_path: Path) -> None:
    folder = _write(clt_files(), tmp_path / "tiny-clt")
    shown = run_saereg("detect", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "SAE .: circuit_tracer_clt (confidence 1.00" in shown.stdout
    assert "3 layers in ." in shown.stdout
    assert "also fits" not in shown.stdout  # the layers (mntss_clt) are the CLT's
    fetched = run_saereg("fetch", str(folder), "--layers", "0,2", "--quiet")
    assert fetched.returncode == 0, fetched.stderr
    assert len(fetched.stdout.split()) == 2
    whole = run_saereg("fetch", str(folder), "--quiet")
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout.split()) == N_LAYERS
    # A layer of the CLT alone, as mntss_clt reads it (one transcoder), by naming it.
    layer = saereg.load_sae(folder, sae="1", dtype="float64")
    assert layer.cfg.source["format"] == "mntss_clt" and layer.cfg.hook_layer == 1


def test_an_uncatalogued_repository_root_is_the_dictionary(hubenv: Any) -> None:
    hubenv.hub.add_commit("someone/tiny-clt", clt_files())
    clt = saereg.load_sae("hf:someone/tiny-clt", dtype="float64", layers=[0, 2])
    assert isinstance(clt, CrossLayerTranscoder) and clt.layers == (0, 2)
    assert clt.cfg.source["repo_id"] == "someone/tiny-clt"
    x = circuit_tracer_outputs()["clt.x"]
    full = saereg.load_sae("hf:someone/tiny-clt", dtype="float64")
    _close(full(x), clt_math(x)["forward"])


def test_layer_files_that_disagree_are_one_error_naming_the_file(tmp_path: Path) -> None:
    # A CLT folder missing its last layer: 2 layers counted, but W_dec_0 decodes to 3.
    files = {k: v for k, v in clt_files().items() if not k.endswith("_2.safetensors")}
    folder = _write(files, tmp_path / "clt")
    with pytest.raises(saereg.SaeregError) as err:
        saereg.load_sae(folder)
    message = str(err.value)
    assert "W_dec_0.safetensors" in message and "3 target layers" in message
    assert "2-layer CLT" in message
    # A gap: layer 1's encoder is missing.
    (tmp_path / "gap").mkdir()
    gap = _write(
        {k: v for k, v in clt_files().items() if k != "W_enc_1.safetensors"}, tmp_path / "gap"
    )
    with pytest.raises(saereg.SaeregError, match=r"W_enc_1\.safetensors does not exist"):
        saereg.load_sae(gap)
    assert saereg.load_sae(gap, layers=[0]).layers == (0,)  # the others still load alone
    # Gemma Scope 2: params_layer_2 missing, w_dec of layer 0 has decoders to 3 layers.
    gs2 = {k: v for k, v in _gs2_files().items() if not k.endswith("_2.safetensors")}
    clt = _write(gs2, tmp_path / "gs2") / "clt" / "width_test"
    with pytest.raises(saereg.SaeregError, match=r"params_layer_0\.safetensors: w_dec has"):
        saereg.load_sae(clt)


def test_layer_files_honour_the_umask_and_publisher_headers_are_checked(tmp_path: Path) -> None:
    folder = _write(clt_files(), tmp_path / "clt")
    old = os.umask(0o002)
    try:
        paths = saereg.fetch_dictionary(folder, [0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o664  # a colleague may read it
    # A publisher layer file whose header points past its data: refused before any read.
    damaged = folder / "W_enc_1.safetensors"
    raw = damaged.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 4096
    text = json.dumps(header).encode()
    damaged.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    with pytest.raises(saereg.SaeregError, match=r"W_enc_1\.safetensors"):
        saereg.load_sae(folder, layers=[1])
