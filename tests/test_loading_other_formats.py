"""Bad files for hook_z_kk, goodfire, deepseek_r1, qwen_scope, the transcoders and
temporal SAEs: each refused with a message naming the file and what was expected.
(Their good files and math are in test_every_format_loads.py.)"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import saereg
from saereg.plugins._tensors import safetensors_arrays, torch_load_mapped, transposed_mapped
from saereg.plugins.transcoders import summed_over_targets

from .layouts import (
    deepseek_r1,
    goodfire,
    hook_z_kk,
    mntss_clt,
    mwhanna_transcoder,
    qwen_scope,
    temporal,
)
from .layouts._case import LayoutCase
from .layouts._util import json_bytes, pt_bytes, st_save
from .test_every_format_loads import serve


def load_with(hubenv: Any, case: LayoutCase, files: dict[str, bytes], **sae: Any) -> Any:
    changed = dataclasses.replace(case, files={**case.files, **files}, sae={**case.sae, **sae})
    return saereg.load_sae(serve(hubenv, changed))


def refused(match: str):
    return pytest.raises(saereg.SaeregError, match=match)


def test_goodfire_wrong_keys(hubenv) -> None:
    case = goodfire.CASES[1]
    state = {"encoder.weight": torch.zeros(24, 8), "decoder.weight": torch.zeros(8, 24)}
    with refused(
        r"Llama-3.3-70B-Instruct-SAE-l50.pt lacks encoder_linear.weight, decoder_linear.weight, "
        r".*expected the keys encoder_linear.weight, decoder_linear.weight, encoder_linear.bias, "
        r"decoder_linear.bias \(it has: decoder.weight, encoder.weight\)"
    ):
        load_with(hubenv, case, {case.sae["path"]: pt_bytes(state)})


def test_qwen_scope_decoder_in_the_wrong_orientation(hubenv) -> None:
    case = qwen_scope.CASES[0]
    state = {**qwen_scope.t, "W_dec": qwen_scope.t["W_dec"].T.contiguous()}
    with refused(
        r"layer3.sae.pt: W_dec \(decoder\) has shape \[24, 8\], expected \[8, 24\] "
        r"\(d_in=8, d_sae=24, from W_enc\)"
    ):
        load_with(hubenv, case, {"layer3.sae.pt": pt_bytes(state)})


def test_deepseek_pickle_carrying_code_is_refused(hubenv) -> None:
    class Evil:
        def __reduce__(self):
            return (math.floor, (1.5,))

    buf = io.BytesIO()
    torch.save({**deepseek_r1.state, "evil": Evil()}, buf)
    case = deepseek_r1.CASES[0]
    with refused(
        r"DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt contains objects other than tensors "
        r"and plain values .* refusing to unpickle it"
    ):
        load_with(hubenv, case, {deepseek_r1.PATH: buf.getvalue()})


def test_non_tensor_under_a_weight_key(hubenv) -> None:
    case = deepseek_r1.CASES[0]
    state = {**deepseek_r1.state, "encoder.bias": [0.0] * 24}
    with refused(r"SAE-l19.pt: encoder.bias \(encoder bias\) is a list, not a tensor"):
        load_with(hubenv, case, {deepseek_r1.PATH: pt_bytes(state)})


def test_hook_z_config_disagreeing_with_the_weights(hubenv) -> None:
    case = hook_z_kk.CASES[0]
    cfg = {**hook_z_kk.cfg, "dict_size": 49152}
    with refused(r"v4_cfg.json says dict_size=49152 but .*v4.pt holds d_in=12, d_sae=24"):
        load_with(hubenv, case, {hook_z_kk.CFG: json_bytes(cfg)})


def test_release_width_disagreeing_with_the_files_is_refused(hubenv) -> None:
    with refused(r"the release lists d_sae=65536 but the files hold d_sae=24"):
        load_with(hubenv, goodfire.CASES[0], {}, d_sae=65536)


def mwhanna_file(**change: Any) -> dict[str, bytes]:
    """A layer_3.safetensors (d_in 8, d_sae 24) with tensors changed (None: left out)."""
    t = {
        "W_enc": torch.zeros(24, 8),
        "W_dec": torch.zeros(24, 8),
        "b_enc": torch.zeros(24),
        "b_dec": torch.zeros(8),
        **change,
    }
    return {"layer_3.safetensors": st_save({n: v for n, v in t.items() if v is not None})}


def test_mwhanna_missing_decoder(hubenv) -> None:
    with refused(r"layer_3.safetensors lacks tensor\(s\) W_dec \(it has: W_enc, b_dec, b_enc\)"):
        load_with(hubenv, mwhanna_transcoder.CASES[0], mwhanna_file(W_dec=None))


def test_mwhanna_skip_of_the_wrong_shape(hubenv) -> None:
    with refused(r"layer_3.safetensors: W_skip has shape \[8, 6\] .* expected \[8, 8\]"):
        load_with(hubenv, mwhanna_transcoder.CASES[0], mwhanna_file(W_skip=torch.zeros(8, 6)))


def test_mwhanna_unknown_tensor_is_refused(hubenv) -> None:
    with refused(
        r"layer_3.safetensors holds tensor\(s\) log_thresholds that a circuit-tracer "
        r"transcoder does not have"
    ):
        load_with(hubenv, mwhanna_transcoder.CASES[0], mwhanna_file(log_thresholds=torch.zeros(24)))


def test_mntss_decoder_without_target_layers(hubenv) -> None:
    case = mntss_clt.CASES[0]
    with refused(
        r"W_dec_2.safetensors: W_dec_2 has shape \[24, 8\]; expected "
        r"\[d_sae, n_target_layers, d_out\]"
    ):
        load_with(hubenv, case, {"W_dec_2.safetensors": st_save({"W_dec_2": torch.zeros(24, 8)})})


def _temporal_conf(case: LayoutCase, **sae: Any) -> tuple[str, bytes]:
    path = next(p for p in case.files if p.endswith("conf.yaml"))
    conf = yaml.safe_load(case.files[path])
    conf["sae"].update(sae)
    return path, yaml.safe_dump(conf).encode()


def test_temporal_checkpoint_disagreeing_with_its_conf(hubenv) -> None:
    case = temporal.CASES[1]  # untied: E [d_in, width]
    path, conf = _temporal_conf(case, exp_factor=2)
    with refused(
        r"latest_ckpt.safetensors does not match .*conf.yaml \(d_in=8, width=16, 2 attention "
        r"layer\(s\)\): D has shape \[32, 8\], expected \[16, 8\]"
    ):
        load_with(hubenv, case, {path: conf})


def test_temporal_unsupported_sparsity(hubenv) -> None:
    path, conf = _temporal_conf(temporal.CASES[0], sae_diff_type="batchtopk")
    with refused(r"conf.yaml: sae_diff_type 'batchtopk' is not supported"):
        load_with(hubenv, temporal.CASES[0], {path: conf})


def test_temporal_decode_alone_is_the_novel_part(hubenv) -> None:
    sae = saereg.load_sae(serve(hubenv, temporal.CASES[0]), dtype="float64")
    x = torch.randn(2, 4, temporal.D_IN, dtype=torch.float64)
    novel, predicted = sae.encode_with_predictions(x)
    assert predicted.abs().sum() > 0
    assert not torch.allclose(sae.decode(novel), sae(x))
    with pytest.raises(ValueError, match="cannot be truncated"):
        sae.truncated(4)
    from saereg.store.canonical import export_saelens

    with refused("no SAELens layout runs temporal SAEs"):
        export_saelens(sae.cfg, {}, Path("/nonexistent"))


def test_streamed_transpose_and_target_sum_in_several_blocks(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 3, generator=g)
    torch.save({"w": w}, tmp_path / "w.pt")
    state, mapped = torch_load_mapped(tmp_path / "w.pt")
    assert mapped
    assert torch.equal(transposed_mapped(state["w"], mapped, rows=4).load(), w.T)
    assert torch.equal(state["w"], w)  # released pages read back from the file
    dec = torch.randn(10, 3, 5, generator=g)
    (tmp_path / "d.safetensors").write_bytes(st_save({"d": dec}))
    lazy = safetensors_arrays(tmp_path / "d.safetensors")["d"]
    summed = summed_over_targets(tmp_path / "d.safetensors", "d", lazy, rows=3).load()
    torch.testing.assert_close(summed, dec.sum(dim=1))


@pytest.mark.parametrize(
    ("case", "weights"),
    [
        (mwhanna_transcoder.CASES[1], ["layer_3.safetensors"]),
        (mntss_clt.CASES[1], ["W_enc_2.safetensors", "W_dec_2.safetensors"]),
        (temporal.CASES[0], ["latest_ckpt.safetensors"]),
    ],
    ids=["mwhanna", "mntss", "temporal"],
)
def test_config_without_downloading_weights(hubenv, case: LayoutCase, weights: list[str]) -> None:
    from saereg.loading import load_config

    ref = serve(hubenv, case)
    cfg = load_config(ref)
    assert not [p for w in weights for p in hubenv.hf_cache.rglob(w)]  # headers only
    assert cfg == saereg.load_sae(ref).cfg.replace(source=cfg.source)
