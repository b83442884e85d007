"""The sparse path equals the dense one for every architecture.

`encode(x, sparse=True)` is the dense latents' non-zero entries (exactly k per row for
TopK), `decode` of it equals `decode` of the dense latents, and `forward` (chunked, TopK
through the active rows, the others by density) equals the reference math, with the
sparse and the dense decode both exercised and with many chunks.
"""

from __future__ import annotations

import pytest
import torch

import saereg.sae.sparse as sparse_math
from saereg.sae.latents import SparseLatents
from tests.tiny_sae import NORMS, close, inputs, make, ref_decode, ref_encode

ARCHS = ["relu", "jumprelu", "topk", "topk_no_relu", "gated"]


def _sae(arch: str, norm: str = "layer_norm", reshape: str = "none"):
    if arch == "topk_no_relu":
        return make("topk", norm, reshape, topk_relu=False)
    return make(arch, norm, reshape)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", ["none", "constant_norm_rescale", "layer_norm"])
def test_sparse_encode_is_the_dense_latents(arch: str, norm: str) -> None:
    sae = _sae(arch, norm)
    x = inputs()
    dense = sae.encode(x)
    sl = sae.encode(x, sparse=True)
    assert isinstance(sl, SparseLatents) and sl.d_sae == sae.cfg.d_sae
    assert sl.values.shape[:-1] == x.shape[:-1]
    if sae.cfg.architecture == "topk":
        assert sl.values.shape[-1] == sae.cfg.k
    width = sae.cfg.k if arch.startswith("topk") else int((dense != 0).sum(-1).max())
    assert sl.values.shape[-1] == width
    torch.testing.assert_close(sl.to_dense(), dense.plain())
    expected = ref_decode(sae, ref_encode(sae, x), x)
    close(sae.decode(sl), expected, "decode(sparse)")
    close(sae.decode(dense), expected, "decode(dense)")
    close(sae(x), expected, "forward")
    part = SparseLatents(sl.values[1:] * 2, sl.indices[1:], sl.d_sae, sae.input_norm(x[1:]))
    close(sae.decode(part), ref_decode(sae, ref_encode(sae, x)[1:] * 2, x[1:]), "edited")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_forward_in_chunks_by_either_decode(monkeypatch, arch: str, density: float) -> None:
    """Chunks of a few rows, blocks of a few latents; the dense decode (density 0) and the
    sparse one (1)."""
    monkeypatch.setattr(sparse_math, "ROW_CHUNK", 3)  # chunks of 3 rows
    monkeypatch.setattr(sparse_math, "CHUNK_BYTES", 1)
    monkeypatch.setattr(sparse_math, "MIN_BLOCK", 5)  # blocks of 5 latents (4 + one of 4)
    monkeypatch.setattr(sparse_math, "SPARSE_DENSITY", density)
    for reshape in ("none", "hook_z"):
        sae = _sae(arch, "layer_norm", reshape)
        x = inputs(reshape, 4, 5)
        expected = ref_decode(sae, ref_encode(sae, x), x)
        close(sae(x), expected, f"forward {reshape}")
        close(sae.decode(sae.encode(x)), expected, f"decode(encode) {reshape}")
        sl = sae.encode(x, sparse=True)
        close(sae.decode(sl), expected, f"sparse {reshape}")
        torch.testing.assert_close(sl.to_dense(), sae.encode(x).plain())
        want = sae.cfg.k if arch.startswith("topk") else int((sl.values != 0).sum(-1).max())
        assert sl.values.shape[-1] == want


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_gradients_through_the_sparse_path(arch: str) -> None:
    sae = _sae(arch, "layer_norm")
    sae.requires_grad_(True)
    x = inputs().requires_grad_()
    weights = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    (sae(x) * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    xg = x.grad.clone()
    x.grad = None
    sae.zero_grad()
    sl = sae.encode(x, sparse=True)
    (sae.decode(sl) * weights).sum().backward()
    close(x.grad, xg, "input grad, sparse encode + decode")
    sae.zero_grad()
    ref = sae.encode(x).plain() @ sae.W_dec + sae.b_dec  # dense math on the same latents
    st = sae.input_norm(x)
    ((ref * st.scale + st.mean) * weights).sum().backward()
    for name, grad in grads.items():
        close(grad, getattr(sae, name).grad, f"grad of {name}")


def test_empty_and_all_zero_rows() -> None:
    sae = make("relu", "none")
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # nothing fires
    x = inputs()
    sl = sae.encode(x, sparse=True)
    assert sl.values.shape == (3, 5, 0)
    close(sae.decode(sl), ref_decode(sae, ref_encode(sae, x), x))
    close(sae(x), ref_decode(sae, ref_encode(sae, x), x))
    one = x[0, 0]  # a single row without a batch dimension
    close(sae.decode(sae.encode(one, sparse=True)), ref_decode(sae, ref_encode(sae, one), one))
    empty = torch.zeros(0, 8)
    assert sae(empty).shape == (0, 8) and sae.encode(empty, sparse=True).values.shape == (0, 0)


def test_temporal_sparse_is_made_from_the_dense_codes() -> None:
    sae = make("temporal", "scale")
    x = inputs("none", 2, 6)
    dense = sae.encode(x)
    sl = sae.encode(x, sparse=True)
    torch.testing.assert_close(sl.to_dense(), dense.plain())
    torch.testing.assert_close(sae.decode(sl), sae.decode(dense))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_sparse_path(dtype: torch.dtype) -> None:
    sae = make("topk", "layer_norm", dtype=dtype)
    x = inputs()
    y = sae(x)
    assert y.dtype == dtype
    ref = ref_decode(sae, ref_encode(sae, x.to(dtype)), x.to(dtype))
    torch.testing.assert_close(y.double(), ref, atol=0.1, rtol=0.05)
    torch.testing.assert_close(sae.decode(sae.encode(x, sparse=True)), y, atol=0.05, rtol=0.05)


def test_norms_listed() -> None:
    assert set(NORMS) == {"none", "scale", "constant_norm_rescale", "layer_norm"}


def test_pass_plan_bounds_the_pre_activations() -> None:
    """Small passes in a few full tiles; large ones in tiles of 5 % of what they hold."""
    mib = 2**20
    assert sparse_math.plan_pass(2048, 32768 * 4, 140 * mib) == (2048, sparse_math.CHUNK_BYTES)
    rows, tile = sparse_math.plan_pass(16384, 32768 * 4, 200 * mib)
    assert rows == sparse_math.ROW_CHUNK and tile == 10 * mib
    blocks = sparse_math.col_blocks(rows, 32768, torch.float32, tile)
    assert max(e - j for j, e in blocks) * rows * 4 <= tile
    assert blocks[0][0] == 0 and blocks[-1][1] == 32768
