"""The canonical SAE as a torch module: one class for every publisher.

encode → latents, decode → what the latents produce, in the space of the input; forward
= the full output. The math follows the publishers' reference implementations exactly:

* relu:      f = ReLU(x' @ W_enc + b_enc)
* jumprelu:  h = x' @ W_enc + b_enc;  f = h · 1[h > threshold]   (strict >)
* topk:      h = x' @ W_enc + b_enc;  keep the k largest h, then ReLU (so ≤ k active);
             with topk_relu false (Qwen Scope), the k values as they are
* gated:     f = 1[x' @ W_enc + b_gate > 0] · ReLU(x' @ (W_enc ⊙ exp(r_mag)) + b_mag)
* temporal:  see below
* decode:    y = f @ W_dec + b_dec, then the input normalization undone
* forward:   decode(encode(x)), plus skip(x) = x @ W_skipᵀ for affine transcoders

where x' is the (normalized) input minus b_dec when apply_b_dec_to_input. An affine skip
path is never part of decode: decode(f) is what the latents produce, so attributions
computed from it mean what they say (SAELens' skip transcoders decode so and add the
skip in forward; circuit-tracer computes it apart, `compute_skip`); `skip(x)` exposes
it, and forward adds it.

Input normalizations (layer_norm with the unbiased std and eps added to the std,
constant_norm_rescale, a constant scale) are undone on the way out, using statistics
carried by the latents that encode returns (a `Latents` tensor or `SparseLatents`, whose
`NormState` follows row slices, masks, clones and `torch.cat`: see saereg.sae.norm): the
module itself keeps no per-call state, so it is safe to share between threads.

Sparse path (saereg.sae.sparse): `encode(x, sparse=True)` gives `SparseLatents`, and
`decode` sums only the active rows of W_dec; `forward` runs over row chunks, TopK
always sparse, the others sparse where few latents are active.

Temporal SAEs (canrager/temporalSAEs, "Priors in Time") read a sequence
x' [..., T, d_in] (scaled by the constant factor, minus b_dec) and split each token into
what earlier tokens predict and what is novel. With r = x', z_pred = 0, and for each
attention layer:

    z   = ReLU(r @ W_enc + b_enc)                  codes of every token  [T, d_sae]
    ctx = [0, z_0, …, z_{T-2}]                      codes shifted one token right
    q = z @ W_qᵀ + b_q;  k = ctx @ W_kᵀ + b_k;  v = ctx @ W_vᵀ + b_v    (n_heads heads)
    a = c_proj(causal softmax(q kᵀ / sqrt(d_head)) v)   (token t sees ctx_0..ctx_t)
    p = ReLU(a);  d = p @ W_dec;  s = <d, r> / (‖d‖ + 1e-6)²
    z_pred += s·p;  r -= s·d

then the novel codes f = ReLU(r @ W_enc + b_enc), keeping only the k largest when k is
set. encode(x) returns f (the interpretable latents); decode(f) is what they produce;
forward(x) = decode(f + z_pred), the full reconstruction. The publisher's scale
λ = 1/(4·d_in) on the encoder input is folded into W_enc at conversion (b_enc is 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saereg.sae import sparse as sparse_math
from saereg.sae.arguments import check_device, check_dtype
from saereg.sae.build import config_and_tensors
from saereg.sae.latents import SparseLatents
from saereg.sae.norm import Latents, NormState, norm_of, plain, wrap
from saereg.sae.sparse import (
    Tile,
    affine,
    bag_decode,
    col_blocks,
    compact,
    decode_rows,
    join_rows,
    padded,
    row_chunks,
)
from saereg.sae.temporal import temporal_attention, temporal_codes
from saereg.store.canonical import check_shapes, entry_shapes, read_config, write_canonical
from saereg.store.in_place import read_tensors
from saereg.store.sae_config import METADATA_KEY, SAEConfig
from saereg.store.tensors import read_header


def _dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name

    return check_dtype(name)


class SAE(nn.Module):
    """A sparse autoencoder (or transcoder) in saereg's canonical form."""

    W_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(
        self,
        cfg: SAEConfig,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = dtype or _dtype(cfg.dtype)
        shapes = {**cfg.expected_shapes(), **cfg.optional_shapes()}
        self._optional = set(cfg.optional_shapes())
        self.register_parameter("W_skip", None)  # present only for affine transcoders
        if cfg.temporal is not None:
            self.attn_layers = nn.ModuleList(
                temporal_attention(cfg.d_sae, int(cfg.temporal["d_attn"]), device, dtype)
                for _ in range(int(cfg.temporal["n_attn_layers"]))
            )
        for name, shape in shapes.items():
            if "." in name:  # a submodule's parameter (temporal attention)
                continue
            if name in self._optional:
                self.register_parameter(name, None)
            else:
                self.register_parameter(
                    name, nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
                )

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_tensors(cls, cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> SAE:
        """Build on the meta device and adopt `tensors` as the parameters (no copy)."""
        check_shapes(cfg, {n: tuple(t.shape) for n, t in tensors.items()}, "tensors")
        with torch.device("meta"):
            sae = cls(cfg)
        optional = cfg.optional_shapes()
        for name in sae._optional & set(tensors):
            sae.register_parameter(name, nn.Parameter(torch.empty(optional[name], device="meta")))
        sae.load_state_dict(tensors, strict=True, assign=True)
        sae.requires_grad_(False)
        return sae

    @classmethod
    def from_weights(
        cls,
        *,
        W_enc: Any,
        W_dec: Any,
        b_enc: Any = None,
        b_dec: Any = None,
        architecture: str = "relu",
        k: int | None = None,
        threshold: Any = None,
        b_gate: Any = None,
        b_mag: Any = None,
        r_mag: Any = None,
        W_skip: Any = None,
        hook_name: str | None = None,
        hook_name_out: str | None = None,
        model: str | None = None,
        hf_hook: Any = None,
        hf_hook_out: Any = None,
        normalization: Any = "none",
        apply_b_dec_to_input: bool = False,
        reshape: str | None = None,
        topk_relu: bool = True,
        transcoder: bool | None = None,
        hook_layer: int | None = None,
        name: str | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> SAE:
        """Wrap your own SAE (or transcoder) as a canonical `SAE`, checking every shape.

        Tensors (torch or numpy) in saereg's orientation: `W_enc [d_in, d_sae]`,
        `W_dec [d_sae, d_out]`, `b_enc [d_sae]` and `b_dec [d_out]` (zeros if omitted);
        `threshold [d_sae]` (or a number) for `architecture="jumprelu"`; `b_gate`,
        `b_mag`, `r_mag` for "gated"; `k` for "topk"; `W_skip [d_out, d_in]` for an
        affine transcoder. The math is the module's (see `saereg.sae.module`):
        `encode(x) = act((x' - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc)`,
        `decode(f) = f @ W_dec + b_dec`, x' the input after `normalization` ("none",
        "layer_norm", "constant_norm_rescale", or a number: a constant factor).

        `hook_name` is the TransformerLens hook it reads (what `attach` hooks on a
        HookedTransformer); for a Hugging Face model, give `model` (a name from
        `saereg models`: the hook point then comes from the models table) or `hf_hook`
        ("model.layers.8.output", or {"module": ..., "side": "input"|"output"}).
        `dtype` / `device` default to those of `W_enc`; `reshape` to "hook_z" for a
        hook_z `hook_name` (TransformerLens' [..., n_heads, d_head] is flattened).
        """
        tensors = {
            "W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec,
            "threshold": threshold, "b_gate": b_gate, "b_mag": b_mag, "r_mag": r_mag,
            "W_skip": W_skip,
        }  # fmt: skip
        options = {
            "architecture": architecture, "k": k, "hook_name": hook_name,
            "hook_name_out": hook_name_out, "model": model, "hf_hook": hf_hook,
            "hf_hook_out": hf_hook_out, "normalization": normalization,
            "apply_b_dec_to_input": apply_b_dec_to_input, "reshape": reshape,
            "topk_relu": topk_relu, "transcoder": transcoder, "hook_layer": hook_layer,
            "name": name, "dtype": dtype, "device": device,
        }  # fmt: skip
        cfg, weights = config_and_tensors(tensors, options)
        return cls.from_tensors(cfg, weights)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> SAE:
        """Load a canonical file straight onto `device`, cast to `dtype` if given."""
        path = Path(path)
        cfg = read_config(path)
        device = check_device(device)
        if device.type == "meta":
            header, _ = read_header(path)
            tensors = {
                n: torch.empty(shape, dtype=_dtype(cfg.dtype), device="meta")
                for n, shape in entry_shapes(cfg, header).items()
            }
        else:
            # Memory-mapped, copy-on-write: nothing is read until used, and in-place
            # changes never reach the file (nor the publisher's, for in-place entries).
            tensors = read_tensors(path, cfg, device, _dtype(dtype))
        cfg = cfg.replace(storage=None)  # where the bytes lie is the entry's business
        want = _dtype(dtype)
        if want is not None:
            tensors = {n: t.to(want) for n, t in tensors.items()}
            cfg = cfg.replace(dtype=str(want).removeprefix("torch."))
        return cls.from_tensors(cfg, tensors)

    def save(self, path: str | Path) -> Path:
        """Write this SAE as a canonical file (atomically)."""
        tensors = {n: p.detach() for n, p in self.named_parameters() if p is not None}
        cfg = self.cfg.replace(dtype=str(self.W_enc.dtype).removeprefix("torch."), storage=None)
        return write_canonical(Path(path), cfg, tensors)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # ------------------------------------------------------------------ math

    def _flatten(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        if self.cfg.reshape == "hook_z" and x.shape[-1] != self.cfg.d_in and x.dim() >= 2:
            heads = (int(x.shape[-2]), int(x.shape[-1]))
            if heads[0] * heads[1] != self.cfg.d_in:
                raise ValueError(
                    f"hook_z input has {heads[0]} heads of size {heads[1]} = "
                    f"{heads[0] * heads[1]} features, but this SAE reads d_in={self.cfg.d_in}"
                )
            return x.flatten(-2), heads
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"input has {x.shape[-1]} features in its last dimension; this SAE reads "
                f"d_in={self.cfg.d_in} ({self.cfg.hook_name or 'its hook'})"
            )
        return x, None

    def _input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """x as a plain tensor in the SAE's dtype, flattened to `[..., d_in]`."""
        return self._flatten(plain(x).to(self.dtype))

    def input_norm(self, x: torch.Tensor) -> NormState:
        """The statistics decode needs for input `x` (see module docstring): pass them as
        `decode(f, norm=sae.input_norm(x))` for latents that were computed elsewhere."""
        flat, heads = self._input(x)
        return self._normalize(flat, heads)[1]

    def _normalize(
        self, x: torch.Tensor, heads: tuple[int, int] | None
    ) -> tuple[torch.Tensor, NormState]:
        norm = self.cfg.normalization
        kind = norm["kind"]
        if kind == "none":
            return x, NormState(head_shape=heads)
        if kind == "scale":
            factor = float(norm["factor"])
            scale = torch.tensor(1.0 / factor, dtype=x.dtype, device=x.device)
            return x * factor, NormState(scale=scale, head_shape=heads)
        if kind == "constant_norm_rescale":
            c = math.sqrt(self.cfg.d_in) / x.norm(dim=-1, keepdim=True)
            return x * c, NormState(scale=1.0 / c, head_shape=heads)
        if kind == "layer_norm":
            mean = x.mean(dim=-1, keepdim=True)
            centred = x - mean
            std = centred.std(dim=-1, keepdim=True)  # unbiased, as the publishers compute it
            return centred / (std + float(norm["eps"])), NormState(mean, std, heads)
        raise ValueError(f"unknown normalization {kind!r}")

    def _slice(self, width: int | None) -> int:
        if width is None:
            return self.cfg.d_sae
        if not 1 <= width <= self.cfg.d_sae:
            raise ValueError(f"width must be between 1 and d_sae={self.cfg.d_sae}, got {width}")
        widths = self.cfg.nested_widths
        if widths is not None and width not in widths:
            raise ValueError(
                f"width {width} is not one of this Matryoshka SAE's nested widths {list(widths)}"
            )
        return width

    def pre_activations(self, x: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """h = x' @ W_enc + b_enc (for gated: the magnitude path), before the nonlinearity."""
        w = self._slice(width)
        flat, heads = self._input(x)
        xn, _ = self._normalize(flat, heads)
        if self.cfg.architecture == "temporal":
            return self._temporal(self._centre(xn))[1]
        return self._pre(self._centre(xn), 0, w)[-1]

    def _centre(self, xn: torch.Tensor) -> torch.Tensor:
        return xn - self.b_dec if self.cfg.apply_b_dec_to_input else xn

    def _pre(
        self, xn: torch.Tensor, j: int, e: int, tile: Tile | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Pre-activations of latents j..e-1 of the (normalized, centred) input: (h,), or
        (gate, mag) for gated. With `tile`, h is written into its reused buffer."""
        W = self.W_enc[:, j:e]
        if self.cfg.architecture == "gated":
            gate = affine(xn, W, self.b_gate[j:e])
            return gate, affine(xn, W * torch.exp(self.r_mag[j:e]), self.b_mag[j:e])
        out = tile.take(len(xn), e - j) if tile is not None else None
        return (affine(xn, W, self.b_enc[j:e], out),)

    def _tile(self, xn: torch.Tensor, blocks: list[tuple[int, int]]) -> Tile | None:
        """One buffer for every block's pre-activations (allocated, and page-faulted,
        once), where no gradient is needed."""
        if torch.is_grad_enabled() and (xn.requires_grad or self.W_enc.requires_grad):
            return None
        if xn.dim() != 2 or self.cfg.architecture == "gated":
            return None
        return Tile(len(xn) * max(e - j for j, e in blocks), xn)

    def _activate(self, pre: tuple[torch.Tensor, ...], j: int, e: int) -> torch.Tensor:
        """Dense latents j..e-1 from their pre-activations (in place where no gradient is
        needed). TopK goes through `_sparse_rows`: it needs every latent of a row."""
        arch = self.cfg.architecture
        h = pre[-1]
        inplace = not (torch.is_grad_enabled() and h.requires_grad)
        if arch == "gated":
            mag = h.relu_() if inplace else torch.relu(h)
            return mag.mul_(pre[0] > 0) if inplace else mag * (pre[0] > 0).to(mag.dtype)
        if arch == "relu":
            return h.relu_() if inplace else torch.relu(h)
        if arch == "jumprelu":
            keep = h > self.threshold[j:e]
            return h.mul_(keep) if inplace else h * keep.to(h.dtype)
        raise ValueError(f"unknown architecture {arch!r}")

    def encode(self, x: torch.Tensor, width: int | None = None, *, sparse: bool = False) -> Any:
        """Latent activations of `x`: a dense `Latents` tensor `[..., d_sae]` that carries
        what decode needs from the input (so decode works on any edit of it: clone,
        masks, in-place ablation, steering, row slices, `torch.cat`).

        `sparse=True` returns `SparseLatents` instead (values and indices of the active
        latents: exactly k per row for TopK; for the others, every active latent, rows
        padded with zeros), computed block by block without the dense latents.
        With `width` (Matryoshka SAEs), only the first `width` latents are used and
        returned: the nested smaller SAE."""
        w = self._slice(width)
        flat, heads = self._input(x)
        xn, state = self._normalize(flat, heads)
        xn = self._centre(xn)
        lead, rows = xn.shape[:-1], xn.reshape(-1, xn.shape[-1])
        if self.cfg.architecture == "temporal":
            if w != self.cfg.d_sae:
                raise ValueError("a temporal SAE has no nested widths")
            f = self._temporal(xn)[0]
            if not sparse:
                return wrap(f, state)
            values, indices = padded(f.reshape(-1, w))
        elif not sparse and self.cfg.architecture != "topk":
            return wrap(self._activate(self._pre(xn, 0, w), 0, w), state)
        else:
            step, budget = self._plan(len(rows), w)
            parts = [self._sparse_rows(chunk, w, budget) for chunk in row_chunks(rows, step)]
            values, indices = join_rows(parts)
        if not sparse:  # TopK, dense: the k values scattered into zeros (in place: the
            # copy an out-of-place scatter makes doubles the cost of a dense TopK encode)
            dense = values.new_zeros((len(values), w)).scatter_(-1, indices, values)
            return wrap(dense.reshape(*lead, w), state)
        n = values.shape[-1]
        return SparseLatents(values.reshape(*lead, n), indices.reshape(*lead, n), w, state)

    def _plan(self, n_rows: int, w: int) -> tuple[int, int]:
        """(rows per chunk, bytes of pre-activations per block) for a pass over `n_rows`
        rows: sparse.plan_pass, from what the pass holds anyway."""
        item = self.W_enc.element_size()
        held = self.W_enc.numel() + self.W_dec.numel() + n_rows * (self.cfg.d_in + self.cfg.d_out)
        return sparse_math.plan_pass(n_rows, w * item, held * item)

    def _sparse_rows(
        self, xn: torch.Tensor, w: int, budget: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) `[rows, n]` of the active latents of normalized rows, from
        blocks of latents (sparse.col_blocks): only one block's pre-activations exist at a
        time. TopK keeps the k largest of each block merged with the k largest so far."""
        topk = self.cfg.architecture == "topk"
        k = min(int(self.cfg.k or 0), w)
        vals, idxs = [], []
        blocks = col_blocks(xn.shape[0], w, xn.dtype, budget)
        tile = self._tile(xn, blocks)
        for j, e in blocks:
            pre = self._pre(xn, j, e, tile)
            if topk:  # the k largest so far: merged block by block, so nothing piles up
                v, i = pre[-1].topk(min(k, e - j), dim=-1, sorted=False)
                i = i + j if j else i
                if vals:
                    v, i = torch.cat((vals[0], v), -1), torch.cat((idxs[0], i), -1)
                    v, pick = v.topk(min(k, v.shape[-1]), dim=-1, sorted=False)
                    i = i.gather(-1, pick)
                vals[:], idxs[:] = [v], [i]
                continue
            v, i = padded(self._activate(pre, j, e))
            vals.append(v)
            idxs.append(i + j if j else i)
        values = vals[0] if len(vals) == 1 else torch.cat(vals, -1)
        indices = idxs[0] if len(idxs) == 1 else torch.cat(idxs, -1)
        if not topk:
            return compact(values, indices) if len(vals) > 1 else (values, indices)
        return (torch.relu(values) if self.cfg.topk_relu else values), indices

    def decode(
        self, f: torch.Tensor | SparseLatents, norm: NormState | None = None
    ) -> torch.Tensor:
        """What the latents produce, in the space of the input that produced them:
        f @ W_dec + b_dec with the input normalization undone. Never the affine skip
        path of a transcoder (see `skip`), nor a temporal SAE's predicted codes.

        `f` is what `encode` returned, or any edit of it (the input's statistics travel
        with it), or `SparseLatents` (decoded from the active rows of W_dec only). Pass
        `norm=sae.input_norm(x)` for latents computed some other way.
        """
        if isinstance(f, SparseLatents):
            state = norm or f.norm
            w = f.d_sae
        else:
            state = norm or norm_of(f)
            w = f.shape[-1]
        kind = self.cfg.normalization["kind"]
        if state is None and kind in ("layer_norm", "constant_norm_rescale"):
            raise ValueError(
                f"decode() needs the statistics of the input (normalization {kind!r}), and "
                "these latents do not carry them (made by an operation that mixes rows or "
                "latents of different inputs, loaded from disk, or not from encode()); pass "
                "norm=sae.input_norm(x) for the input rows they belong to"
            )
        if w > self.cfg.d_sae:
            raise ValueError(f"latents have {w} features, more than d_sae={self.cfg.d_sae}")
        W_dec = self.W_dec[:w]
        if isinstance(f, SparseLatents):
            lead, n = f.values.shape[:-1], f.values.shape[-1]
            count = math.prod(lead)
            values = f.values.reshape(count, n).to(self.dtype)
            rows = bag_decode(f.indices.reshape(count, n).to(values.device), values, W_dec)
            grad = torch.is_grad_enabled() and rows.requires_grad
            y = (rows + self.b_dec if grad else rows.add_(self.b_dec)).reshape(*lead, -1)
        else:
            f = plain(f).to(self.dtype)
            y = decode_rows(f.reshape(-1, w), W_dec, self.b_dec).reshape(*f.shape[:-1], -1)
        if state is None:
            state = NormState()
            if kind == "scale":  # a constant: no statistics of the input needed
                factor = float(self.cfg.normalization["factor"])
                state = NormState(scale=torch.tensor(1.0 / factor))
        return self._denormalize(y, state)

    def _denormalize(self, y: torch.Tensor, state: NormState) -> torch.Tensor:
        """Undo the input normalization on `y`, a tensor the caller just made (so written
        in place where no gradient is involved: no second output-size allocation)."""
        stats = [t for t in (state.scale, state.mean) if t is not None]
        inplace = not torch.is_grad_enabled() or not (
            y.requires_grad or any(t.requires_grad for t in stats)
        )
        if state.scale is not None:
            scale = state.scale.to(y.device, y.dtype)
            y = y.mul_(scale) if inplace else y * scale
        if state.mean is not None:
            mean = state.mean.to(y.device, y.dtype)
            y = y.add_(mean) if inplace else y + mean
        if state.head_shape is not None and not self.cfg.transcoder:
            y = y.unflatten(-1, state.head_shape)
        return y

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The affine skip path of a transcoder, x @ W_skipᵀ on the raw input: the part
        of forward(x) that no latent explains. Zeros for transcoders without one."""
        flat, _ = self._input(x)
        if self.W_skip is None:
            if not self.cfg.transcoder:
                raise ValueError("skip() belongs to transcoders; this SAE has no skip path")
            return flat.new_zeros((*flat.shape[:-1], self.cfg.d_out))
        return flat @ self.W_skip.T

    def encode_with_predictions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal SAEs: (novel codes, codes predicted from earlier tokens)."""
        if self.cfg.architecture != "temporal":
            raise ValueError("encode_with_predictions() belongs to temporal SAEs")
        flat, heads = self._input(x)
        xn, state = self._normalize(flat, heads)
        f, _, predicted = self._temporal(self._centre(xn))
        return wrap(f, state), predicted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The full output: decode(encode(x)), plus the predicted codes (temporal) or
        the affine skip path (transcoders).

        Computed chunk by chunk over the rows, TopK through the sparse path (the k active
        rows of W_dec), the other architectures through it where few latents are active:
        no dense latents of the whole input are ever built."""
        if self.cfg.architecture == "temporal":
            f, predicted = self.encode_with_predictions(x)
            norm = norm_of(f)
            return self.decode(plain(f) + predicted, norm=norm)
        flat, heads = self._input(x)
        lead, rows = flat.shape[:-1], flat.reshape(-1, flat.shape[-1])
        w = self.cfg.d_sae
        grad = torch.is_grad_enabled() and (rows.requires_grad or self.W_dec.requires_grad)
        out = None if grad else rows.new_empty((rows.shape[0], self.cfg.d_out))
        parts = []
        start = 0
        step, budget = self._plan(len(rows), w)
        for chunk in row_chunks(rows, step):
            xn, state = self._normalize(chunk, None)
            xn = self._centre(xn)
            if self.cfg.architecture == "topk":
                values, indices = self._sparse_rows(xn, w, budget)
                y = bag_decode(indices, values, self.W_dec)
            else:
                y = None
                blocks = col_blocks(len(xn), w, xn.dtype, budget)
                tile = self._tile(xn, blocks)
                for j, e in blocks:
                    f = self._activate(self._pre(xn, j, e, tile), j, e)
                    part = decode_rows(f, self.W_dec[j:e])
                    y = part if y is None else (y + part if grad else y.add_(part))
                assert y is not None
            y = self._denormalize(y.add_(self.b_dec) if out is not None else y + self.b_dec, state)
            if out is None:
                parts.append(y)
            else:
                out[start : start + len(y)] = y
            start += len(y)
        y = (torch.cat(parts) if out is None else out).reshape(*lead, self.cfg.d_out)
        if heads is not None and not self.cfg.transcoder:
            y = y.unflatten(-1, heads)
        if self.W_skip is not None:
            y = y + self.skip(x)
        return y

    def _temporal(self, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Novel codes, their pre-activations and the predicted codes (module docstring)."""
        return temporal_codes(self, xn)

    # ------------------------------------------------------------------ matryoshka

    def truncated(self, width: int) -> SAE:
        """A smaller canonical SAE made of the first `width` latents (Matryoshka prefix)."""
        if self.cfg.temporal is not None:
            raise ValueError("a temporal SAE cannot be truncated (its attention mixes latents)")
        w = self._slice(width)
        sliced = {}
        for name, p in self.named_parameters():
            if p is None:
                continue
            if name == "W_enc":
                sliced[name] = p[:, :w].clone()
            elif name in ("W_dec",) or (
                p.dim() == 1
                and p.shape[0] == self.cfg.d_sae
                and name in ("b_enc", "threshold", "b_gate", "b_mag", "r_mag")
            ):
                sliced[name] = p[:w].clone()
            else:
                sliced[name] = p.clone()
        widths = tuple(v for v in self.cfg.nested_widths or () if v <= w) or None
        cfg = self.cfg.replace(
            d_sae=w,
            nested_widths=widths,
            k=min(self.cfg.k, w) if self.cfg.k else self.cfg.k,
            storage=None,
        )
        return SAE.from_tensors(cfg, sliced)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"{c.architecture}{' transcoder' if c.transcoder else ''}, d_in={c.d_in}, "
            f"d_sae={c.d_sae}, hook={c.hook_name}, source={c.source.get('release')}/"
            f"{c.source.get('sae_id')}"
        )


__all__ = ["METADATA_KEY", "SAE", "Latents", "NormState", "SparseLatents"]
