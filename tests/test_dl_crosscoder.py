"""dictionary_learning's CrossCoder and BatchTopKCrossCoder (the science-of-finetuning fork).

The fixtures are tests/layouts/dictionary_learning_crosscoder.py: tiny crosscoders in
the publisher's two saved layouts (the trainer's config.json + model_final.pt, the hub
mixin's config.json + model.safetensors). Every result is compared in float64 with
independent reference math written from the publisher's code (dictionary.py at
173f7facbe80f16c837e7b5e4dca78a50c000115), since the package cannot be installed beside
the test extra (it pins nnsight).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import saereg
from saereg.detection import detect_report
from saereg.sae.latents import SparseLatents

from .layouts import dictionary_learning_crosscoder as layout
from .layouts._serve import serve
from .layouts._util import pt_bytes, st_save

CASES = layout.CASES


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b.double(), atol=1e-10, rtol=1e-10)


def _write(case: Any, root: Path) -> Path:
    for name, data in case.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / case.sae["path"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_the_publishers_math(hubenv: Any, case: Any) -> None:
    ref = serve(hubenv, case)
    native = saereg.load_sae(ref)
    assert isinstance(native, saereg.CrossCoder)
    assert native.cfg.source["format"] == "dictionary_learning_crosscoder"
    assert native.dtype == torch.float32  # the publisher's float32 tensors, as saved
    cc = saereg.load_sae(ref, dtype="float64")
    case.check(cc)
    x = torch.randn(*case.input_shape, generator=torch.Generator().manual_seed(7)).double()
    want = case.reference(x)
    f = cc.encode(x)
    _close(f, want.encode)
    _close(cc.decode(f), want.decode)
    _close(cc(x), want.forward)
    sparse = cc.encode(x, sparse=True)
    assert isinstance(sparse, SparseLatents)
    _close(cc.decode(sparse), want.decode)
    # get_activations: the latents scaled by the code normalization
    _close(cc.code_normalized(f), want.encode * cc.code_norm)


def test_a_batchtopk_threshold_drops_latents_relu_would_keep(hubenv: Any) -> None:
    case = CASES[0]
    cc = saereg.load_sae(serve(hubenv, case), dtype="float64")
    x = torch.randn(2, 64, layout.D_IN, generator=torch.Generator().manual_seed(1)).double()
    relu = torch.relu(cc.pre_activations(x))
    f = cc.encode(x)
    assert 0 < int((f != 0).sum()) < int((relu != 0).sum())
    assert cc.cfg.architecture == "jumprelu" and cc.cfg.k == 4


def test_detected_by_path_and_told_from_the_other_formats(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    for case in CASES:
        _write(case, root)
    # dictionary_learning's single SAE (ae.pt) and ckkissane's crosscoder beside them
    (root / "sae" / "trainer_0").mkdir(parents=True)
    single = {"trainer": {"dict_class": "AutoEncoderNew", "activation_dim": 8, "dict_size": 16}}
    (root / "sae" / "trainer_0" / "config.json").write_text(json.dumps(single))
    (root / "sae" / "trainer_0" / "ae.pt").write_bytes(b"-")
    (root / "ck").mkdir()
    (root / "ck" / "cfg.json").write_text(json.dumps({"dict_size": 4, "hook_point": "h"}))
    (root / "ck" / "cc_weights.pt").write_bytes(b"-")
    report = detect_report(root)
    found = {f.path: (f.claims[0][0], f.kind, f.n_layers) for f in report.saes}
    assert found == {
        "ck": ("ckkissane_crosscoder", "crosscoder", 2),
        "l3-k4": ("dictionary_learning_crosscoder", "crosscoder", None),  # from the weights
        "mixed": ("dictionary_learning_crosscoder", "crosscoder", 2),
        "sae/trainer_0": ("dictionary_learning", None, None),
        "sites3": ("dictionary_learning_crosscoder", "crosscoder", 3),
    }
    assert all(len(f.claims) == 1 for f in report.saes)
    cc = saereg.load_sae(root / "l3-k4", dtype="float64")
    assert isinstance(cc, saereg.CrossCoder) and cc.n_sites == 2
    x = torch.randn(2, 3, layout.D_IN, dtype=torch.float64)
    _close(cc(x), CASES[0].reference(x).forward)


def _variant(tmp_path: Path, state: dict, cfg: dict, hub: bool = True) -> Path:
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    if hub:
        (folder / "model.safetensors").write_bytes(st_save(state))
    else:
        (folder / "model_final.pt").write_bytes(pt_bytes(state))
    return folder


def test_torch_compiled_and_older_checkpoints(tmp_path: Path) -> None:
    """A state dict saved from a torch.compile'd module (keys under _orig_mod.) and one
    without code_normalization_id (before it was saved: CROSSCODER, as the publisher's
    from_pretrained assumes)."""
    state = {
        f"_orig_mod.{k}": v for k, v in layout.TRAINER_STATE.items() if k != "code_normalization_id"
    }
    cfg = json.loads(json.dumps(layout.TRAINER_CFG))
    del cfg["trainer"]["code_normalization"]
    cc = saereg.load_sae(_variant(tmp_path, state, cfg, hub=False), dtype="float64")
    x = torch.randn(2, 4, layout.D_IN, dtype=torch.float64)
    _close(cc(x), CASES[0].reference(x).forward)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code_normalization_id": torch.tensor(5)}, "DECOUPLED"),
        ({"threshold": torch.zeros(2)}, "only one scalar threshold"),
        ({"encoder.mask": torch.zeros(3)}, "encoder.mask"),
        ({"decoder.bias": torch.zeros(3, layout.D_IN)}, "decoder.bias has shape"),
        ({"cfg:encoder_layers": [0, 1]}, "encoder_layers"),
        ({"cfg:dict_size": 7}, "dict_size=7"),
        ({"cfg:code_normalization": "SAE"}, "ambiguous"),
        ({"cfg:code_normalization": "L2"}, "code_normalization 'L2'"),
    ],
    ids=[
        "decoupled",
        "per-site-threshold",
        "unknown-tensor",
        "bad-shape",
        "encoder-layers",
        "config-width",
        "config-disagrees",
        "unknown-normalization",
    ],
)
def test_unsupported_variants_are_refused_naming_the_field(
    tmp_path: Path, change: dict, message: str
) -> None:
    state = dict(layout.MIXED_STATE)
    cfg = dict(layout.MIXED_CFG)
    for key, value in change.items():
        if key.startswith("cfg:"):
            cfg[key[4:]] = value
        else:
            state[key] = value
    with pytest.raises(saereg.SaeregError, match=message):
        saereg.load_sae(_variant(tmp_path, state, cfg))


def test_the_pushed_trainer_config_names_the_class(tmp_path: Path) -> None:
    """trainer_config.json beside hub files names the class the publisher's
    load_dictionary_model builds: a CrossCoder ignores a saved threshold (ReLU)."""
    folder = _variant(tmp_path, layout.MIXED_STATE, layout.MIXED_CFG)
    trainer = json.loads(json.dumps(layout.MIXED_TRAINER_CFG))
    trainer["trainer"]["dict_class"] = "CrossCoder"
    (folder / "trainer_config.json").write_text(json.dumps(trainer))
    cc = saereg.load_sae(folder, dtype="float64")
    assert cc.cfg.architecture == "relu" and cc.threshold is None
    x = torch.randn(2, 6, layout.D_IN, dtype=torch.float64)
    relu = {k: v for k, v in layout.MIXED_STATE.items() if k not in ("k", "threshold")}
    _close(cc(x), layout._reference(relu, layout.MIXED, layout.MIXED_ALPHAS)(x).forward)
    trainer["trainer"]["dict_class"] = "AutoEncoder"
    (folder / "trainer_config.json").write_text(json.dumps(trainer))
    with pytest.raises(saereg.SaeregError, match=r"trainer\.dict_class 'AutoEncoder'"):
        saereg.load_sae(folder, force=True)


def test_trainer_mixed_weights_other_than_the_loaders_are_ambiguous(tmp_path: Path) -> None:
    state = {k: v for k, v in layout.MIXED_STATE.items()}
    cfg = json.loads(json.dumps(layout.TRAINER_CFG))
    cfg["trainer"]["code_normalization"] = "MIXED"
    cfg["trainer"]["code_normalization_alpha_cc"] = 0.25
    with pytest.raises(saereg.SaeregError, match=r"code_normalization_alpha_cc=0\.25"):
        saereg.load_sae(_variant(tmp_path, state, cfg, hub=False))
