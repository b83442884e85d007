"""dictionary_learning: every dictionary class against the publisher's math; bad files."""

from __future__ import annotations

import io
import json
import os
import pickle

import pytest
import torch

import saereg
from saereg.base.errors import SaeregError
from saereg.loading import load_config

from .layouts import dictionary_learning as dl
from .layouts._serve import close, compare, serve

CASES = {case.name: case for case in dl.CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_each_class_matches_the_publisher(hubenv, name: str) -> None:
    case = CASES[name]
    compare(saereg.load_sae(serve(hubenv, case), dtype=None), case, seed=7)


def test_negative_thresholds_are_exact(hubenv) -> None:
    """The publisher's ReLU after its threshold: latents with θ < 0 never go negative."""
    case = CASES["BatchTopKSAE-negative-threshold"]
    sae = saereg.load_sae(serve(hubenv, case), dtype=None)
    x = torch.randn(64, dl.D_IN, generator=torch.Generator().manual_seed(1))
    f = sae.encode(x)
    assert (f >= 0).all() and (sae.pre_activations(x) < 0).any()
    close(f, case.reference(x).encode, case.atol)


def test_matryoshka_nested_widths(hubenv) -> None:
    case = CASES["MatryoshkaBatchTopKSAE"]
    sae = saereg.load_sae(serve(hubenv, case), dtype=None)
    assert sae.cfg.nested_widths == (8, 20, 40)
    x = torch.randn(5, dl.D_IN, generator=torch.Generator().manual_seed(2))
    full = case.reference(x).encode
    for width in (8, 20):
        f = sae.encode(x, width=width)
        assert f.shape == (5, width)
        close(f, full[:, :width], case.atol)
        close(sae.decode(f), full[:, :width] @ sae.W_dec[:width] + sae.b_dec, case.atol)
    with pytest.raises(ValueError, match="nested widths"):
        sae.encode(x, width=10)


def test_config_without_downloading_ae_pt(hubenv) -> None:
    case = CASES["MatryoshkaBatchTopKSAE"]
    ref = serve(hubenv, case)
    cfg = load_config(ref)
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.nested_widths) == (
        "jumprelu",
        dl.D_IN,
        dl.D_SAE,
        (8, 20, 40),
    )
    assert cfg.context_size == 128
    assert not any(p.endswith("ae.pt") for _, p in hubenv.hub.requests)


def test_wrapped_training_checkpoint(hubenv) -> None:
    """Mid-training backups save {"step", "ae", "optimizer", ...} as ae.pt."""
    case = CASES["AutoEncoderTopK"]
    state = torch.load(io.BytesIO(case.files[f"{dl.PATH}/ae.pt"]), weights_only=True)
    files = dict(case.files)
    files[f"{dl.PATH}/ae.pt"] = dl.ae_pt({"step": 100, "ae": state, "norm_factor": 1.0})
    wrapped = type(case)(**{**case.__dict__, "files": files, "name": "wrapped"})
    sae = saereg.load_sae(serve(hubenv, wrapped), dtype=None)
    x = torch.randn(5, dl.D_IN, generator=torch.Generator().manual_seed(3))
    close(sae(x), case.reference(x).forward, case.atol)


# --------------------------------------------------------------------------- bad files


def _bad(hubenv, name: str, *, state=None, config=None, raw: bytes | None = None) -> str:
    case = CASES["AutoEncoderTopK"]
    files = dict(case.files)
    if state is not None:
        files[f"{dl.PATH}/ae.pt"] = dl.ae_pt(state)
    if raw is not None:
        files[f"{dl.PATH}/ae.pt"] = raw
    if config is not None:
        files[f"{dl.PATH}/config.json"] = json.dumps(config).encode()
    bad = type(case)(**{**case.__dict__, "files": files, "name": name})
    with pytest.raises(SaeregError) as info:
        saereg.load_sae(serve(hubenv, bad), dtype=None)
    return str(info.value)


def _topk_state() -> dict:
    raw = CASES["AutoEncoderTopK"].files[f"{dl.PATH}/ae.pt"]
    return torch.load(io.BytesIO(raw), weights_only=True)


def test_unknown_class_is_a_clear_error(hubenv) -> None:
    cfg = json.loads(CASES["AutoEncoderTopK"].files[f"{dl.PATH}/config.json"])
    cfg["trainer"]["dict_class"] = "LinearProbe"  # (a crosscoder class: test_detect_snippet)
    msg = _bad(hubenv, "unknown-class", config=cfg)
    assert f"{dl.PATH}/config.json" in msg and "'LinearProbe'" in msg
    assert "AutoEncoderTopK" in msg and "MatryoshkaBatchTopKSAE" in msg  # what is supported


def test_wrong_keys(hubenv) -> None:
    state = _topk_state()
    state["W_enc"] = state.pop("encoder.weight")  # a MatryoshkaBatchTopK name in a TopK file
    msg = _bad(hubenv, "wrong-keys", state=state)
    assert f"{dl.PATH}/ae.pt" in msg
    assert "lacks encoder.weight" in msg and "unexpected W_enc" in msg
    assert "AutoEncoderTopK state dict holds exactly" in msg


def test_wrong_shapes(hubenv) -> None:
    state = _topk_state()
    state["decoder.weight"] = state["decoder.weight"].T.contiguous()  # [F, d] instead of [d, F]
    msg = _bad(hubenv, "wrong-shapes", state=state)
    assert f"{dl.PATH}/ae.pt" in msg
    assert (
        f"decoder.weight has shape [{dl.D_SAE}, {dl.D_IN}], expected [{dl.D_IN}, {dl.D_SAE}]" in msg
    )


def test_config_disagrees_with_weights(hubenv) -> None:
    cfg = json.loads(CASES["AutoEncoderTopK"].files[f"{dl.PATH}/config.json"])
    cfg["trainer"]["k"] = 7  # ae.pt saves k=6
    msg = _bad(hubenv, "k-mismatch", config=cfg)
    assert "k=7" in msg and "k=6" in msg and f"{dl.PATH}/ae.pt" in msg


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickle_carrying_code_is_refused(hubenv) -> None:
    state = {**_topk_state(), "extra": _Payload()}
    msg = _bad(hubenv, "evil-zip", state=state)
    assert f"{dl.PATH}/ae.pt" in msg and "refusing to unpickle" in msg
    with pytest.warns(UserWarning):  # torch notes the pickle protocol before refusing
        msg = _bad(hubenv, "evil-plain", raw=pickle.dumps({"x": _Payload()}))
    assert f"{dl.PATH}/ae.pt" in msg and "refusing to unpickle" in msg


def test_discover_lists_trainer_folders() -> None:
    from saereg.formats import get_registry

    listing = [f"{dl.PATH}/ae.pt", f"{dl.PATH}/config.json", "sweep/resid_post_layer_3/x.json"]
    found = get_registry().format("dictionary_learning").discover("org/repo", listing)
    assert found == [{"id": dl.PATH, "path": dl.PATH}]
