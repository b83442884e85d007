"""Cross-layer transcoders (CLTs) as circuit-tracer defines them.

Each source layer s has an encoder reading layer s's input site (``feature_input_hook``,
e.g. ``hook_resid_mid``) and one decoder for every target layer t ≥ s, writing to layer
t's output site (``feature_output_hook``, e.g. ``hook_mlp_out``): layer t's MLP output is
reconstructed from the latents of every layer up to t. The stacked math (encode, decode,
forward, sparse latents, loaded subsets) is saereg.sae.multilayer's; here are the
cross-layer decoders and the single-layer views.
"""

from __future__ import annotations

import torch

from saereg.sae.module import SAE
from saereg.sae.multilayer import MultiLayerDictionary


class CrossLayerTranscoder(MultiLayerDictionary):
    """A cross-layer transcoder: ``clt.encode(x [n_layers, ..., d_model])``,
    ``clt.decode(f) → [n_layers, ..., d_model]``, ``clt(x)`` (with the skip path, if any),
    and ``clt.layer(i)`` as a canonical single-hook transcoder."""

    kind = "clt"

    def targets(self, layer: int) -> tuple[int, ...]:
        return tuple(range(layer, self.cfg.n_layers))

    def decoder(self, layer: int) -> torch.Tensor:
        return self.block(layer).W_dec

    def layer(self, layer: int, target: int | None = None) -> SAE:
        """Source layer `layer` as a canonical transcoder (`saereg.SAE`; its tensors are
        shared with this module, not copied).

        Its encoder is exact. One transcoder has one decoder, so by default it is the
        sum of the layer's decoders over all its target layers, Σ_t W_dec[:, t] (what
        SAELens loads, and what the ``mntss_clt`` releases are): decode(f) is then the
        latents' total direct write over layers ``layer…n_layers-1``, not a reconstruction
        of one layer's output. With `target`, the decoder to that one target layer:
        decode(f) is this layer's contribution to target's reconstruction (without the
        other source layers' contributions, with this layer's b_dec).
        """
        w_dec = self.decoder(layer)  # [d_sae, n_targets, d_out]
        if target is None:
            summed = (
                w_dec.sum(dim=1)
                if w_dec.dtype == torch.float64
                else (w_dec.float().sum(dim=1).to(w_dec.dtype))
            )
            note = f"W_dec = sum over the {w_dec.shape[1]} target layers of W_dec_{layer}"
            return self._view(layer, summed, note)
        if not layer <= target < self.cfg.n_layers:
            raise ValueError(
                f"layer {layer} writes to layers {layer}..{self.cfg.n_layers - 1}, not {target}"
            )
        note = f"W_dec = W_dec_{layer}[:, {target - layer}] (the decoder to layer {target})"
        return self._view(layer, w_dec[:, target - layer], note)


__all__ = ["CrossLayerTranscoder"]
