"""Sparse latents: the values and indices of the active latents, never the dense tensor.

A TopK SAE with k = 32 of 32,768 latents fills 0.1 % of a dense `[tokens, d_sae]` tensor;
keeping only `values [..., n]` and `indices [..., n]` makes encoding cheaper (no scatter
into zeros) and decoding a gather-sum over n rows of `W_dec` instead of a matmul over all
d_sae (EleutherAI's sparsify decodes the same way). `n` is the same for every row: exactly
k for TopK; for the other activations the largest count of active latents over the rows,
with padding slots whose value is 0 (any index; they contribute nothing).

This is the shared contract between the single-hook module (`saereg.sae.module`) and the
multi-layer dictionaries: both return it from their sparse encode and accept it in decode.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class SparseLatents:
    """`values[..., j]` is the activation of latent `indices[..., j]`; all other latents are 0.

    `d_sae` is the dense width the indices address. `norm` carries whatever decode needs
    to map a reconstruction back to the input's space (the statistics of the input for
    input-dependent normalizations); it is owned by the module that made the latents.
    """

    values: torch.Tensor
    indices: torch.Tensor
    d_sae: int
    norm: Any = None

    def __post_init__(self) -> None:
        if self.values.shape != self.indices.shape:
            raise ValueError(
                f"sparse latents need values and indices of one shape; got values "
                f"{tuple(self.values.shape)} and indices {tuple(self.indices.shape)}"
            )
        if self.indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"sparse latent indices must be int64 or int32, not {self.indices.dtype}"
            )
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be positive, got {self.d_sae}")

    @property
    def shape(self) -> torch.Size:
        """The shape of the dense tensor these latents stand for: `[..., d_sae]`."""
        return torch.Size((*self.values.shape[:-1], self.d_sae))

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def to_dense(self) -> torch.Tensor:
        """The dense `[..., d_sae]` tensor (padding slots add 0)."""
        dense = self.values.new_zeros(self.shape)
        return dense.scatter_add_(-1, self.indices.to(torch.int64), self.values)

    def to(self, *args: Any, **kwargs: Any) -> SparseLatents:
        """Move or cast the values (indices keep their integer dtype, follow the device)."""
        values = self.values.to(*args, **kwargs)
        return replace(self, values=values, indices=self.indices.to(values.device))

    def __len__(self) -> int:
        return len(self.values)


__all__ = ["SparseLatents"]
