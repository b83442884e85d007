"""The stacked math and the loading shared by saereg's multi-layer dictionaries.

A multi-layer dictionary holds, for each loaded source layer s, an encoder reading the
layer's input site and decoders writing to the output sites of its target layers:
itself and every later layer for a cross-layer transcoder (saereg.sae.clt), itself only
for a transcoder set (saereg.sae.transcoder_set). Following circuit-tracer, inputs and
outputs are stacked over layers:

* ``encode(x [n, ..., d_in]) → [n, ..., d_sae]``: f_s = act(x_s @ W_enc_s + b_enc_s), act
  ReLU, JumpReLU (h · 1[h > threshold], strict >) or TopK (the k largest kept as they are,
  circuit-tracer's TopK);
* ``decode(f) → [n, ..., d_out]``: y_t = Σ_{s ≤ t} f_s @ W_dec_s[:, t - s] + b_dec_t, the
  reconstruction of every target layer (what the latents produce; no skip path);
* ``forward(x) = decode(encode(x)) + skip(x)``, skip_t = x_t @ W_skip_tᵀ where a layer has one.

where n is the number of loaded layers (``layers``, in order): loading a subset
(``layers=[…]``) stacks only those, and a target's reconstruction then sums only the
loaded source layers. `decode` also takes the sparse latents `encode(x, sparse=True)`
returns (`SparseLatents`, values and indices ``[n, ..., k]``). The module keeps no
per-call state (safe to share between threads).

Every layer is read from its own canonical layer file (saereg.store.layer_config),
memory-mapped: nothing is read from disk until used, and a layer not loaded is never
touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saereg.sae.arguments import check_device, check_dtype
from saereg.sae.latents import SparseLatents
from saereg.sae.module import SAE
from saereg.store.in_place import read_tensors
from saereg.store.layer_config import LayerConfig, check_layer_shapes, read_layer_config
from saereg.store.sae_config import SAEConfig
from saereg.store.tensors import CanonicalFileError


@dataclass(frozen=True)
class DictionaryConfig:
    """What a loaded multi-layer dictionary is (one layer file's config, all layers')."""

    kind: str
    n_layers: int
    layers: tuple[int, ...]
    architecture: str
    d_in: int
    d_sae: int
    d_out: int
    dtype: str
    hook_names: tuple[str | None, ...]
    hook_names_out: tuple[str | None, ...]
    source: dict[str, Any]
    k: int | None = None
    model: str | None = None
    #: Where each layer's sites live in a Hugging Face model, by layer (None: ask the
    #: models table when attaching).
    hf_hooks: tuple[Any, ...] | None = None
    hf_hooks_out: tuple[Any, ...] | None = None

    @classmethod
    def from_layers(cls, cfgs: Sequence[LayerConfig], **extra: Any) -> DictionaryConfig:
        first = cfgs[0]
        source = {k: v for k, v in first.source.items() if k != "files"}
        source["files"] = {p: h for c in cfgs for p, h in c.source.get("files", {}).items()}
        return cls(
            kind=first.kind,
            n_layers=first.n_layers,
            layers=tuple(c.layer for c in cfgs),
            architecture=first.architecture,
            d_in=first.d_in,
            d_sae=first.d_sae,
            d_out=first.d_out,
            dtype=first.dtype,
            hook_names=first.hook_names,
            hook_names_out=first.hook_names_out,
            source=source,
            k=first.k,
            model=first.model,
            **extra,
        )

    def replace(self, **changes: Any) -> DictionaryConfig:
        return replace(self, **changes)


class _Layer(nn.Module):
    """One source layer's parameters (names as in its canonical layer file)."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name in ("threshold", "W_skip"):
            self.register_parameter(name, None)
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t, requires_grad=False))


class MultiLayerDictionary(nn.Module):
    """Base of the cross-layer transcoder and the transcoder set (see module docstring)."""

    kind = ""

    def __init__(self, cfg: DictionaryConfig, tensors: Sequence[dict[str, torch.Tensor]]):
        super().__init__()
        if len(tensors) != len(cfg.layers):
            raise ValueError(f"{len(tensors)} layers of tensors for layers {list(cfg.layers)}")
        self.cfg = cfg
        self.blocks = nn.ModuleList(_Layer(dict(t)) for t in tensors)
        self._pos = {layer: i for i, layer in enumerate(cfg.layers)}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        paths: Sequence[str | Path],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        **extra: Any,
    ) -> MultiLayerDictionary:
        """Build from canonical layer files (one per loaded layer, in layer order), each
        memory-mapped straight onto `device`, cast to `dtype` if given."""
        device = check_device(device)
        want = check_dtype(dtype) if isinstance(dtype, str) else dtype
        cfgs: list[LayerConfig] = []
        tensors: list[dict[str, torch.Tensor]] = []
        for path in map(Path, paths):
            cfg = read_layer_config(path)
            if cfgs:
                differ = cfgs[0].same_dictionary(cfg)
                if differ:
                    raise CanonicalFileError(
                        f"{path}: layer {cfg.layer} disagrees with layer {cfgs[0].layer} on "
                        f"{', '.join(differ)}: the layers are not of one dictionary"
                    )
            if cfg.kind != cls.kind:
                raise CanonicalFileError(f"{path}: a {cfg.kind} layer, not a {cls.kind} layer")
            loaded = read_tensors(path, cfg, device, want)  # type: ignore[arg-type]
            if want is not None:
                loaded = {n: t.to(want) for n, t in loaded.items()}
            check_layer_shapes(cfg, {n: tuple(t.shape) for n, t in loaded.items()}, str(path))
            cfgs.append(cfg)
            tensors.append(loaded)
        if not cfgs:
            raise ValueError("no layers to load")
        layers = [c.layer for c in cfgs]
        if layers != sorted(set(layers)):
            raise ValueError(f"layers must be distinct and in order, got {layers}")
        dc = DictionaryConfig.from_layers(cfgs, **extra)
        if want is not None:
            dc = dc.replace(dtype=str(want).removeprefix("torch."))
        return cls(dc, tensors)

    @property
    def layers(self) -> tuple[int, ...]:
        """The dictionary layers loaded, in the order of the stacked dimension."""
        return self.cfg.layers

    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.blocks[0].b_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].b_enc.dtype

    def position(self, layer: int) -> int:
        """Where dictionary layer `layer` sits in the stacked dimension."""
        try:
            return self._pos[layer]
        except KeyError:
            raise ValueError(
                f"layer {layer} is not loaded (loaded: {list(self.layers)} of "
                f"{self.n_layers}); load it with layers=[...]"
            ) from None

    def block(self, layer: int) -> _Layer:
        return self.blocks[self.position(layer)]  # type: ignore[return-value]

    def targets(self, layer: int) -> tuple[int, ...]:
        """The layers source layer `layer` writes to."""
        return (layer,)

    def decoder(self, layer: int) -> torch.Tensor:
        """Source layer `layer`'s decoders, [d_sae, len(targets(layer)), d_out]."""
        raise NotImplementedError

    # ------------------------------------------------------------------ math

    def _stacked(self, x: torch.Tensor, what: str) -> None:
        n = len(self.layers)
        if x.dim() < 2 or x.shape[0] != n:
            raise ValueError(
                f"{what} must be stacked over the {n} loaded layers: [{n}, ..., width], got "
                f"{list(x.shape)}"
            )

    def pre_activations(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """h = x @ W_enc + b_enc of one layer, x [..., d_in]."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"input has {x.shape[-1]} features; layer {layer} reads d_in={self.cfg.d_in}"
            )
        b = self.block(layer)
        return x.to(self.dtype) @ b.W_enc + b.b_enc

    def encode_layer(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The latents of dictionary layer `layer` for its input x [..., d_in]."""
        h = self.pre_activations(x, layer)
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(h)
        if arch == "jumprelu":
            return h * (h > self.block(layer).threshold).to(h.dtype)
        if arch == "topk":
            top = h.topk(int(self.cfg.k or 0), dim=-1)
            return torch.zeros_like(h).scatter(-1, top.indices, top.values)
        raise ValueError(f"unknown architecture {arch!r}")

    def encode(self, x: torch.Tensor, *, sparse: bool = False) -> torch.Tensor | SparseLatents:
        """x [n, ..., d_in] (the stacked inputs) → latents [n, ..., d_sae]; with
        `sparse`, the active latents only (padding slots hold 0)."""
        self._stacked(x, "the input")
        f = torch.stack([self.encode_layer(x[i], s) for i, s in enumerate(self.layers)])
        if not sparse:
            return f
        n = max(1, int((f != 0).sum(-1).max()))
        idx = f.abs().topk(n, dim=-1).indices
        return SparseLatents(f.gather(-1, idx), idx, self.cfg.d_sae)

    def decode(self, f: torch.Tensor | SparseLatents) -> torch.Tensor:
        """Latents [n, ..., d_sae] (dense or sparse) → each loaded target layer's
        reconstruction [n, ..., d_out]: Σ over loaded sources s ≤ t of f_s @ W_dec_s[:, t - s],
        plus b_dec_t. No skip path (see `forward`)."""
        sparse = isinstance(f, SparseLatents)
        values = f.values if isinstance(f, SparseLatents) else f
        self._stacked(values, "the latents")
        if not sparse and values.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"latents have {values.shape[-1]} features, not d_sae={self.d_sae}")
        lead = values.shape[1:-1]
        out = [self.block(t).b_dec.expand(*lead, self.cfg.d_out).clone() for t in self.layers]
        for i, s in enumerate(self.layers):
            dec = self.decoder(s)  # [d_sae, n_targets, d_out]
            if isinstance(f, SparseLatents):
                idx = f.indices[i].to(torch.int64)
                v = f.values[i].to(self.dtype)
                # [..., k, n_targets, d_out] weighted and summed over the k active latents
                contrib = (v[..., None, None] * dec[idx]).sum(-3).movedim(-2, 0)
            else:
                contrib = torch.einsum("...f,ftd->t...d", values[i].to(self.dtype), dec)
            for j, t in enumerate(self.targets(s)):
                if t in self._pos:
                    out[self._pos[t]] = out[self._pos[t]] + contrib[j]
        return torch.stack(out)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The affine skip path of every loaded layer, x_t @ W_skip_tᵀ (zeros where a
        layer has none), [n, ..., d_out]."""
        self._stacked(x, "the input")
        parts = []
        for i, s in enumerate(self.layers):
            w = self.block(s).W_skip
            xi = x[i].to(self.dtype)
            parts.append(xi.new_zeros((*xi.shape[:-1], self.cfg.d_out)) if w is None else xi @ w.T)
        return torch.stack(parts)

    def reconstruct(
        self,
        target: int,
        latents: dict[int, torch.Tensor],
        x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One target layer's output from the latents of its source layers ({layer:
        latents [..., d_sae]}; those absent contribute nothing): b_dec_t + Σ_s f_s @
        W_dec_s[:, t - s], plus the skip path of `x` (t's input) where t has one."""
        out = self.block(target).b_dec
        for s, f in latents.items():
            targets = self.targets(s)
            if target in targets:
                w = self.decoder(s)[:, targets.index(target)]
                out = out + f.to(self.dtype) @ w
        w_skip = self.block(target).W_skip
        if x is not None and w_skip is not None:
            out = out + x.to(self.dtype) @ w_skip.T
        return out

    @property
    def has_skip(self) -> bool:
        return any(b.W_skip is not None for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) plus the skip path: every target layer's output."""
        y = self.decode(self.encode(x))
        return y + self.skip(x) if self.has_skip else y

    # ------------------------------------------------------------------ views

    def _view_config(self, layer: int, w_dec_note: str | None) -> SAEConfig:
        c = self.cfg
        source = {**c.source, "sae_id": f"{c.source.get('sae_id')}/layer_{layer}"}
        hf = c.hf_hooks[layer] if c.hf_hooks else None
        hf_out = c.hf_hooks_out[layer] if c.hf_hooks_out else None
        return SAEConfig.from_dict(
            {
                "architecture": c.architecture,
                "transcoder": True,
                "d_in": c.d_in,
                "d_sae": c.d_sae,
                "d_out": c.d_out,
                "k": c.k,
                "topk_relu": False,
                "apply_b_dec_to_input": False,
                "normalization": {"kind": "none"},
                "reshape": "none",
                "dtype": str(self.dtype).removeprefix("torch."),
                "source": source,
                "hook_name": c.hook_names[layer],
                "hook_name_out": c.hook_names_out[layer],
                "hook_layer": layer,
                "model": c.model,
                "hf_hook": hf,
                "hf_hook_out": hf_out,
                "folded": [w_dec_note] if w_dec_note else [],
            },
            f"layer {layer} of {source.get('release')}/{c.source.get('sae_id')}",
            full_schema=False,
        )

    def _view(self, layer: int, w_dec: torch.Tensor, note: str | None) -> SAE:
        b = self.block(layer)
        tensors = {"W_enc": b.W_enc, "b_enc": b.b_enc, "W_dec": w_dec, "b_dec": b.b_dec}
        if b.threshold is not None:
            tensors["threshold"] = b.threshold
        if b.W_skip is not None:
            tensors["W_skip"] = b.W_skip
        return SAE.from_tensors(self._view_config(layer, note), tensors)

    def extra_repr(self) -> str:
        c = self.cfg
        shown = list(c.layers) if len(c.layers) < c.n_layers else f"all {c.n_layers}"
        return (
            f"{c.kind}, {c.architecture}, layers={shown}, d_in={c.d_in}, d_sae={c.d_sae}, "
            f"source={c.source.get('release')}/{c.source.get('sae_id')}"
        )


__all__ = ["DictionaryConfig", "MultiLayerDictionary"]
