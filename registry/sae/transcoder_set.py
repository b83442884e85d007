"""Transcoder sets as circuit-tracer defines them (``TranscoderSet``): one transcoder per
layer, each reading its layer's input site and writing its layer's output site, with the
same stacked API as the cross-layer transcoder (saereg.sae.multilayer)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from saereg.sae.module import SAE
from saereg.sae.multilayer import MultiLayerDictionary


class TranscoderSet(MultiLayerDictionary):
    """Per-layer transcoders, stacked: ``encode(x [n, ..., d_in])``, ``decode(f) →
    [n, ..., d_out]``, ``forward`` with each layer's skip path; ``set[i]`` or
    ``set.layer(i)`` is layer i's canonical transcoder (tensors shared, not copied)."""

    kind = "transcoder_set"

    def decoder(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s decoder as the one target of the stacked math, [d_sae, 1, d_out]."""
        return self.block(layer).W_dec.unsqueeze(1)

    def layer(self, layer: int) -> SAE:
        return self._view(layer, self.block(layer).W_dec, None)

    def __getitem__(self, layer: int) -> SAE:
        return self.layer(layer)

    def __iter__(self) -> Iterator[SAE]:
        return (self.layer(i) for i in self.layers)

    def __len__(self) -> int:
        return len(self.layers)


__all__ = ["TranscoderSet"]
