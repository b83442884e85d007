"""The statistics decode needs, and the latents tensor that carries them through edits.

For SAEs whose input normalization depends on the input (`layer_norm`: a mean and a std
per row; `constant_norm_rescale`: a norm per row) and for `hook_z` SAEs (the head shape),
`decode` needs something from the input that produced the latents. SAELens keeps it on
the module (the last `encode` wins: wrong across threads, and wrong when latents of an
earlier input are decoded after a later `encode`). Here it travels with the latents.

`encode` returns a `Latents`: a `torch.Tensor` subclass whose `__torch_function__` runs
every torch operation on the plain data and then decides what the result carries:

* results with the latents' shape (clone, detach, `.to`, arithmetic with masks, scalars
  and broadcast vectors, `torch.where`, in-place writes, …) keep the statistics;
* row selections (`f[:2]`, `f[mask]`, `f[idx]`, reshapes and splits that keep the last
  dimension) select the same rows of the statistics; `torch.cat`/`torch.stack` of
  latents along a row dimension concatenate them;
* anything else (a reduction, `f[..., i]`, a boolean mask, a combination of latents of
  different inputs) is a plain tensor: it no longer has one row per input row.

The data is the ordinary dense tensor, so `.numpy()`, indexing, autograd and every torch
op work as before; `torch.save` writes a plain tensor (the statistics are not saved:
keep `sae.input_norm(x)` beside the latents, or re-encode, to decode them later).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._pytree import tree_flatten


@dataclass(frozen=True)
class NormState:
    """What decode needs to map a reconstruction back to the input's space.

    `mean` and `scale` are per row, shaped `[..., 1]` like the latents without their last
    dimension (a 0-d `scale` is a constant); decode computes
    `(f @ W_dec + b_dec) * scale + mean` and, for hook_z SAEs, unflattens to `head_shape`.
    """

    mean: torch.Tensor | None = None  # layer_norm
    scale: torch.Tensor | None = None  # multiply the output by this (std, or 1/c)
    head_shape: tuple[int, int] | None = None  # hook_z: (n_heads, d_head)

    def rowwise(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> NormState:
        """The same state with `fn` applied to every per-row statistic."""

        def one(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or t.dim() == 0 else fn(t)

        return replace(self, mean=one(self.mean), scale=one(self.scale))

    def rows(self) -> tuple[int, ...] | None:
        """The row shape the statistics describe (None: constants only)."""
        for t in (self.mean, self.scale):
            if t is not None and t.dim() > 0:
                return tuple(t.shape[:-1])
        return None

    def fits(self, lead: Sequence[int]) -> bool:
        """Whether the statistics broadcast exactly to latents with leading shape `lead`."""
        rows = self.rows()
        return rows is None or rows == tuple(lead)

    def same(self, other: NormState) -> bool:
        if self is other:
            return True
        if self.head_shape != other.head_shape:
            return False
        for a, b in ((self.mean, other.mean), (self.scale, other.scale)):
            if (a is None) != (b is None):
                return False
            if (
                a is not None
                and b is not None
                and (a.shape != b.shape or a.device != b.device or not torch.equal(a, b))
            ):
                return False
        return True

    def to(self, device: torch.device) -> NormState:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t if t is None or t.device == device else t.to(device)

        return replace(self, mean=move(self.mean), scale=move(self.scale))


class Latents(torch.Tensor):
    """Dense latents `[..., d_sae]` that carry the statistics of the input that produced
    them (module docstring). `norm_state` is the `NormState` decode will use."""

    _saereg_norm: NormState | None

    @property
    def norm_state(self) -> NormState | None:
        return self.__dict__.get("_saereg_norm")

    def plain(self) -> torch.Tensor:
        """The same data as an ordinary tensor (still on the autograd graph)."""
        return plain(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # torch.save / pickle: an ordinary tensor, loadable with weights_only=True.
        return plain(self).__reduce_ex__(protocol)

    def __repr__(self, **kwargs: Any) -> str:  # type: ignore[override]
        return "Latents(" + repr(plain(self))[len("tensor(") :]

    @classmethod
    def __torch_function__(
        cls,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        try:
            return _carry(func, args, kwargs, out)
        except Exception:  # never let the bookkeeping break the user's operation
            return out


def wrap(t: torch.Tensor, norm: NormState) -> Latents:
    """`t` (plain) as latents carrying `norm` (same storage, same autograd graph)."""
    with torch._C.DisableTorchFunctionSubclass():
        out = t.as_subclass(Latents)
    out._saereg_norm = norm
    return out


def plain(t: torch.Tensor) -> torch.Tensor:
    if type(t) is torch.Tensor:
        return t
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor)


def norm_of(t: Any) -> NormState | None:
    return t.__dict__.get("_saereg_norm") if isinstance(t, Latents) else None


# --------------------------------------------------------------------------- propagation

T = torch.Tensor
_CAT = {torch.cat, torch.concat, torch.concatenate}
_SPLIT = {T.split, torch.split, T.chunk, torch.chunk, T.unbind, torch.unbind,
          T.tensor_split, torch.tensor_split}  # fmt: skip
_RESHAPE = {T.reshape, torch.reshape, T.view, T.flatten, torch.flatten, T.unflatten,
            T.squeeze, torch.squeeze, T.unsqueeze, torch.unsqueeze, T.contiguous}  # fmt: skip
_SWAP = {T.transpose, torch.transpose, T.swapaxes, torch.swapaxes, T.swapdims}


def _carry(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> Any:
    if func in _SPLIT and isinstance(out, (tuple, list)):
        return _split(func, args, kwargs, out)
    if not isinstance(out, torch.Tensor) or isinstance(out, Latents):
        return out  # not a tensor, or an in-place op that returned the latents themselves
    if not out.is_floating_point() or out.dim() == 0:
        return out
    if func is T.__getitem__:
        src, state = args[0], norm_of(args[0])
        index = _row_index(args[1], src.dim()) if state is not None else None
        if index is None or state is None:
            return out
        return _checked(out, state.rowwise(lambda t: t[index]))
    if func in _CAT:
        return _cat(args, kwargs, out, stack=False)
    if func is torch.stack:
        return _cat(args, kwargs, out, stack=True)
    flat, _ = tree_flatten((args, kwargs))
    sources = [a for a in flat if isinstance(a, Latents) and norm_of(a) is not None]
    if not sources:
        return out
    if func in _RESHAPE or func in _SWAP or func in (T.permute, torch.permute, T.movedim):
        src = sources[0]
        if out.shape[-1:] != src.shape[-1:] or out.numel() != src.numel():
            return out
        state = norm_of(src)
        assert state is not None
        if func in _RESHAPE:
            lead = (*out.shape[:-1], 1)
            return _checked(out, state.rowwise(lambda t: t.reshape(lead)))
        if _moves_last(func, args, kwargs, src.dim()):
            return out
        return _checked(out, state.rowwise(lambda t: func(t, *args[1:], **kwargs)))
    return _elementwise(out, sources)


def _elementwise(out: torch.Tensor, sources: list[Latents]) -> torch.Tensor:
    """A result with the latents' shape keeps their statistics (if they agree)."""
    lead = out.shape[:-1]
    found: NormState | None = None
    for src in sources:
        if src.shape[-1:] != out.shape[-1:] or src.shape[:-1] != lead:
            continue
        state = norm_of(src)
        assert state is not None
        if found is None:
            found = state
        elif not found.same(state):
            return out  # latents of different inputs: no statistics can be right
    return out if found is None else _checked(out, found)


def _checked(out: torch.Tensor, state: NormState) -> torch.Tensor:
    state = state.to(out.device)
    return wrap(out, state) if state.fits(out.shape[:-1]) else out


def _row_index(index: Any, ndim: int) -> Any:
    """The index to apply to `[..., 1]` statistics for `latents[index]`, or None when the
    index selects within the latent dimension (the result has no rows of latents)."""
    items = index if isinstance(index, tuple) else (index,)
    used = []
    for item in items:
        if item is None:
            used.append(0)
        elif item is Ellipsis:
            used.append(-1)
        elif isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            used.append(item.dim())
        else:
            used.append(1)
    if used.count(-1) > 1:
        return None
    explicit = sum(u for u in used if u > 0)
    if -1 in used:
        used[used.index(-1)] = ndim - explicit
    if sum(used) < ndim:
        return index  # the last dimension is not indexed: the rows are selected alike
    pos, seen = -1, 0
    for i, u in enumerate(used):
        seen += u
        if seen >= ndim:
            pos = i
            break
    last = items[pos]
    if items[pos] is Ellipsis:
        return index
    if not isinstance(last, slice) or used[pos] != 1:
        return None  # an integer, list or tensor picks latents: no rows any more
    return (*items[:pos], slice(None), *items[pos + 1 :])


def _cat(args: Sequence[Any], kwargs: dict[str, Any], out: torch.Tensor, stack: bool) -> Any:
    tensors = kwargs.get("tensors", args[0] if args else ())
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    states = [norm_of(t) for t in tensors]
    if not tensors or any(s is None for s in states):
        return out
    ndim = tensors[0].dim()
    dim = dim + ndim + (1 if stack else 0) if dim < 0 else dim
    if dim >= ndim - (0 if stack else 1):
        return out  # along the latent dimension: no rows any more
    first = states[0]
    assert first is not None
    mean = [s.mean for s in states if s is not None]
    scale = [s.scale for s in states if s is not None]

    def join(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise ValueError("latents of different SAEs")
        kept = [p for p in parts if p is not None]
        if all(p.dim() == 0 for p in kept):
            return kept[0]  # a constant of the SAE
        return (torch.stack if stack else torch.cat)(kept, dim)

    heads = {s.head_shape for s in states if s is not None}
    if len(heads) != 1:
        return out
    return _checked(out, NormState(join(mean), join(scale), first.head_shape))


def _split(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> Any:
    src = args[0]
    state = norm_of(src)
    if state is None:
        return out
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    if func in (T.unbind, torch.unbind):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if dim % src.dim() == src.dim() - 1:
        return out
    pieces: dict[str, Any] = {}
    for name in ("mean", "scale"):
        t = getattr(state, name)
        if t is not None and t.dim() > 0:
            with torch._C.DisableTorchFunctionSubclass():
                pieces[name] = func(t, *args[1:], **kwargs)
    result = []
    for i, part in enumerate(out):
        part_state = replace(
            state, **{n: p[i] for n, p in pieces.items()}
        )  # constants (0-d) stay as they are
        result.append(_checked(part, part_state) if part.is_floating_point() else part)
    return type(out)(result) if isinstance(out, tuple) and type(out) is tuple else result


def _moves_last(func: Any, args: Sequence[Any], kwargs: dict[str, Any], ndim: int) -> bool:
    """Whether a transpose/permute/movedim touches the last (latent) dimension."""
    last = ndim - 1
    rest = list(args[1:]) + list(kwargs.values())
    if func in (T.permute, torch.permute):
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return int(dims[-1]) % ndim != last
    return any(int(d) % ndim == last for d in _ints(rest))


def _ints(values: Sequence[Any]) -> list[int]:
    out: list[int] = []
    for v in values:
        out.extend(_ints(v) if isinstance(v, (tuple, list)) else [int(v)])
    return out


__all__ = ["Latents", "NormState", "norm_of", "plain", "wrap"]
