"""decode survives what analysis code does to latents, for every input normalization.

For each edit `g` (clone, detach, dtype casts, masks, scalars and broadcast vectors,
in-place writes, torch.where, row slices and boolean row masks, torch.cat of chunks,
autograd through them) and each normalization (none, scale, constant_norm_rescale,
layer_norm), with and without the hook_z reshape: `sae.decode(g(f))` equals the
reference math (tests/tiny_sae.py, written from SAELens's and OpenAI's code) applied to
`g(f)` with the statistics of the rows `g` keeps, and equals
`sae.decode(g(f), norm=sae.input_norm(x_rows))`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import pytest
import torch

from saereg.sae.norm import Latents
from tests.tiny_sae import NORMS, close, inputs, make, ref_decode, ref_encode

Edit = Callable[[torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]]


def _inplace_zero(f, x, sae):
    g = f.clone()
    g[..., 3] = 0.0
    return g, x


def _inplace_on_f(f, x, sae):
    f[..., 5] = 4.0  # steering by clamping one latent, on the tensor encode returned
    f.mul_(0.5)
    return f, x


def _cat_encodes(f, x, sae):
    return torch.cat([sae.encode(x[:1]), sae.encode(x[1:])]), x


def _row_mask(f, x, sae):
    keep = torch.tensor([True, False, True])
    return f[keep], x[keep]


def _steer(f, x, sae):
    direction = torch.zeros(f.shape[-1])
    direction[7] = 3.0
    return f + direction, x


EDITS: dict[str, Edit] = {
    "clone": lambda f, x, sae: (f.clone(), x),
    "detach": lambda f, x, sae: (f.detach(), x),
    "to_float64": lambda f, x, sae: (f.to(torch.float64), x),
    "to_float16_and_back": lambda f, x, sae: (f.half().float(), x),
    "mask": lambda f, x, sae: (f * (torch.arange(f.shape[-1]) % 3 != 0), x),
    "scalar": lambda f, x, sae: (2.5 * f - 0.1, x),
    "steer": _steer,
    "ablate_where": lambda f, x, sae: (torch.where(f > 0.5, f, 0.0), x),
    "inplace_zero": _inplace_zero,
    "inplace_on_f": _inplace_on_f,
    "slice_rows": lambda f, x, sae: (f[1:], x[1:]),
    "index_rows": lambda f, x, sae: (f[[2, 0]], x[[2, 0]]),
    "slice_tokens": lambda f, x, sae: (f[:, 1:4], x[:, 1:4]),
    "one_row": lambda f, x, sae: (f[1], x[1]),
    "row_mask": _row_mask,
    "cat_of_encodes": _cat_encodes,
    "cat_of_chunks": lambda f, x, sae: (torch.cat(f.chunk(3, dim=1), dim=1), x),
    "split_piece": lambda f, x, sae: (f.split(2, dim=0)[1], x[2:]),
    "flatten_rows": lambda f, x, sae: (f.flatten(0, 1), x.flatten(0, 1)),
    "stack": lambda f, x, sae: (torch.stack([f[0], f[2]]), x[[0, 2]]),
    "chain": lambda f, x, sae: ((f.clone()[1:] * 2).detach()[..., :].float(), x[1:]),
}


@pytest.mark.parametrize("reshape", ["none", "hook_z"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_decode_of_edited_latents(norm: str, reshape: str) -> None:
    """Every edit in EDITS (one test per normalization, the edit named on failure)."""
    sae = make("relu", norm, reshape)
    x = inputs(reshape)
    for edit, g_of in EDITS.items():
        f = sae.encode(x)
        torch.testing.assert_close(f.double(), ref_encode(sae, x), atol=1e-5, rtol=1e-5)
        g, x_rows = g_of(f, x, sae)
        expected = ref_decode(sae, g.detach(), x_rows)
        close(sae.decode(g), expected, f"{edit}/{norm}/{reshape}")
        close(sae.decode(g, norm=sae.input_norm(x_rows)), expected, f"{edit}/{norm} explicit")
        if reshape == "hook_z":
            assert sae.decode(g).shape[-2:] == (2, 4), edit


@pytest.mark.parametrize("norm", list(NORMS))
def test_autograd_through_edits(norm: str) -> None:
    """Gradients through the latents (to a steering vector, and to the input through
    the statistics) equal those of the reference math."""
    sae = make("topk", norm)
    x = inputs().requires_grad_()
    steer = torch.zeros(sae.cfg.d_sae, requires_grad=True)
    mask = (torch.arange(sae.cfg.d_sae) % 2 == 0).float()
    f = sae.encode(x)
    y = sae.decode(torch.where(mask.bool(), f, 0.0)[1:] * 1.5 + steer)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()

    xr = x.detach().double().requires_grad_()
    sr = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, requires_grad=True)
    fr = ref_encode(sae, xr)
    yr = ref_decode(sae, (fr * mask)[1:] * 1.5 + sr, xr[1:])
    (yr * torch.linspace(-1, 1, yr.numel()).reshape(yr.shape)).sum().backward()
    close(y.detach(), yr.detach(), "values")
    assert x.grad is not None and steer.grad is not None
    close(steer.grad, sr.grad, "grad of the steering vector")
    close(x.grad, xr.grad, "grad of the input")


def test_latents_of_different_inputs_do_not_mix_silently() -> None:
    sae = make("relu", "layer_norm")
    a, b = sae.encode(inputs(seed=1)), sae.encode(inputs(seed=2))
    mixed = a - b
    assert type(mixed) is torch.Tensor
    with pytest.raises(ValueError, match=r"norm=sae\.input_norm"):
        sae.decode(mixed)
    x = inputs(seed=1)
    close(sae.decode(mixed, norm=sae.input_norm(x)), ref_decode(sae, mixed, x))


def test_what_loses_the_rows_is_a_plain_tensor() -> None:
    sae = make("relu", "layer_norm")
    x = inputs()
    f = sae.encode(x)
    assert isinstance(f, Latents) and f.norm_state is not None
    for result in (f[..., 2], f.sum(-1), f.mean(), f > 0, f[f > 0], f.mT, f.argmax(-1)):
        assert type(result) is torch.Tensor
    assert isinstance(f.numpy(), type(x.numpy()))
    buf = io.BytesIO()
    torch.save({"f": f}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["f"]
    assert type(loaded) is torch.Tensor and torch.equal(loaded, f)
    assert "Latents(" in repr(f)


def test_encode_and_decode_from_several_threads() -> None:
    sae = make("topk", "layer_norm")
    xs = [inputs(seed=s) for s in range(8)]
    expected = [ref_decode(sae, ref_encode(sae, x) * 0.5, x) for x in xs]
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(20):
            f = sae.encode(xs[i])
            other = sae.encode(xs[(i + 1) % len(xs)])  # a later encode must not matter
            try:
                close(sae.decode(f * 0.5), expected[i], f"thread {i}")
                close(sae(xs[i]), ref_decode(sae, ref_encode(sae, xs[i]), xs[i]))
            except AssertionError as exc:
                failures.append(str(exc))
            del other

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:1]
