"""Crosscoders: one dictionary over several activation sites (layers, or the same site in
a base and a fine-tuned model).

The encoder reads every site at once and the decoder writes every site (Lindsey et al.,
"Sparse Crosscoders"; ckkissane's and dictionary_learning's CrossCoder). Stacked like the
other multi-layer dictionaries, sites first:

* ``encode(x [n_sites, ..., d_in]) → [..., d_sae]``: f = ReLU(Σ_s x_s @ W_enc[s] + b_enc);
  a ``jumprelu`` crosscoder (dictionary_learning's BatchTopKCrossCoder at inference) then
  keeps f_j where f_j · code_norm_j > threshold_j (strict; the publisher's scalar
  threshold repeated per latent);
* ``decode(f) → [n_sites, ..., d_out]``: y_s = f @ W_dec[:, s] + b_dec[s];
* ``forward(x) = decode(encode(x))``.

Where the file holds ``activation_mean [n_sites, d_in]`` and ``activation_scale
[n_sites]`` (dictionary_learning's input normalisation), `encode` first normalises each
site, x_s ← (x_s - mean_s) · scale_s, and `decode` undoes it on the output,
y_s ← y_s / (scale_s + 1e-8) + mean_s, as the publisher's ``normalize_activations`` /
``denormalize_activations`` do. ``code_norm [d_sae]`` (where present) is the
publisher's code normalization of each latent (from its decoder norms):
`code_normalized(f)` = f · code_norm is what dictionary_learning's ``get_activations``
returns.

`decode` also takes `SparseLatents` (values and indices ``[..., k]``). The whole
crosscoder is one canonical file (schemas/dictionary.v1.json, kind ``crosscoder``: its
``n_layers`` counts the sites and the file is "layer" 0 of them), since every latent reads
every site.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saereg.sae.arguments import check_device, check_dtype
from saereg.sae.latents import SparseLatents
from saereg.sae.multilayer import DictionaryConfig
from saereg.store.in_place import read_tensors
from saereg.store.layer_config import check_layer_shapes, read_layer_config
from saereg.store.tensors import CanonicalFileError

#: Tensors a crosscoder file may hold besides W_enc, b_enc, W_dec, b_dec.
_OPTIONAL = ("threshold", "code_norm", "activation_mean", "activation_scale")


class CrossCoder(nn.Module):
    """A crosscoder over ``cfg.n_layers`` sites (see the module docstring)."""

    kind = "crosscoder"
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, cfg: DictionaryConfig, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.cfg = cfg
        for name in _OPTIONAL:
            self.register_parameter(name, None)
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t, requires_grad=False))

    @classmethod
    def load(
        cls,
        paths: Sequence[str | Path],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        **extra: Any,
    ) -> CrossCoder:
        """Build from its one canonical file, memory-mapped onto `device` (cast to `dtype`)."""
        if len(paths) != 1:
            raise ValueError(f"a crosscoder is one file, got {len(paths)}")
        path = Path(paths[0])
        device = check_device(device)
        want = check_dtype(dtype) if isinstance(dtype, str) else dtype
        cfg = read_layer_config(path)
        if cfg.kind != cls.kind:
            raise CanonicalFileError(f"{path}: a {cfg.kind} file, not a crosscoder")
        tensors = read_tensors(path, cfg, device, want)  # type: ignore[arg-type]
        if want is not None:
            tensors = {n: t.to(want) for n, t in tensors.items()}
        check_layer_shapes(cfg, {n: tuple(t.shape) for n, t in tensors.items()}, str(path))
        dc = DictionaryConfig.from_layers([cfg], **extra).replace(layers=tuple(range(cfg.n_layers)))
        if want is not None:
            dc = dc.replace(dtype=str(want).removeprefix("torch."))
        return cls(dc, tensors)

    @property
    def n_sites(self) -> int:
        return self.cfg.n_layers

    @property
    def layers(self) -> tuple[int, ...]:
        return self.cfg.layers

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_s x_s @ W_enc[s] + b_enc, x [n_sites, ..., d_in]."""
        n = self.n_sites
        if x.dim() < 2 or x.shape[0] != n or x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"the input must be stacked over the {n} sites: [{n}, ..., {self.cfg.d_in}], "
                f"got {list(x.shape)}"
            )
        x = self.normalize(x.to(self.dtype))
        return torch.einsum("s...d,sdf->...f", x, self.W_enc) + self.b_enc

    def _per_site(self, t: torch.Tensor, lead: int) -> torch.Tensor:
        """A per-site tensor [n_sites, ...] shaped to broadcast over `lead` batch dims."""
        return t.reshape(t.shape[0], *([1] * lead), *t.shape[1:])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The input normalisation, (x_s - mean_s) · scale_s (none where the file has
        none), x [n_sites, ..., d_in]."""
        mean, scale = self.activation_mean, self.activation_scale
        if mean is None or scale is None:
            return x
        lead = x.dim() - 2
        return (x - self._per_site(mean, lead)) * self._per_site(scale, lead + 1)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Undoes `normalize` on outputs: y_s / (scale_s + 1e-8) + mean_s."""
        mean, scale = self.activation_mean, self.activation_scale
        if mean is None or scale is None:
            return y
        lead = y.dim() - 2
        return y / (self._per_site(scale, lead + 1) + 1e-8) + self._per_site(mean, lead)

    def code_normalized(self, f: torch.Tensor) -> torch.Tensor:
        """Latents scaled by the publisher's code normalization, f · code_norm (f itself
        where the file has none): dictionary_learning's ``get_activations``."""
        return f if self.code_norm is None else f * self.code_norm

    def encode(self, x: torch.Tensor, *, sparse: bool = False) -> torch.Tensor | SparseLatents:
        f = torch.relu(self.pre_activations(x))
        if self.threshold is not None:  # kept where relu(h) · code_norm > θ (strict)
            f = f * (self.code_normalized(f) > self.threshold)
        if not sparse:
            return f
        n = max(1, int((f != 0).sum(-1).max()))
        top = f.topk(n, dim=-1)
        return SparseLatents(top.values, top.indices, self.cfg.d_sae)

    def decode(self, f: torch.Tensor | SparseLatents) -> torch.Tensor:
        """Latents [..., d_sae] → every site's reconstruction [n_sites, ..., d_out]."""
        if isinstance(f, SparseLatents):
            rows = self.W_dec[f.indices.to(torch.int64)]  # [..., k, n_sites, d_out]
            y = (f.values.to(self.dtype)[..., None, None] * rows).sum(-3)
        else:
            if f.shape[-1] != self.cfg.d_sae:
                raise ValueError(f"latents have {f.shape[-1]} features, not d_sae={self.cfg.d_sae}")
            y = torch.einsum("...f,fsd->...sd", f.to(self.dtype), self.W_dec)
        return self.denormalize((y + self.b_dec).movedim(-2, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"crosscoder, {c.architecture}, {c.n_layers} sites, d_in={c.d_in}, d_sae={c.d_sae}, "
            f"source={c.source.get('release')}/{c.source.get('sae_id')}"
        )


__all__ = ["CrossCoder"]
