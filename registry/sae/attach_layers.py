"""`attach(model, clt)`: a multi-layer dictionary as a replacement model.

For every loaded layer s, the dictionary reads s's input site (``feature_input_hook``,
e.g. ``blocks.s.hook_resid_mid``) and encodes it; at every loaded layer t's output site
(``feature_output_hook``, e.g. ``blocks.t.hook_mlp_out``) it writes t's reconstruction:
b_dec_t + Σ over loaded sources s ≤ t of f_s @ W_dec_s[:, t - s] (a transcoder set: f_t @
W_dec_t + b_dec_t), plus t's skip path where it has one. As the forward pass runs, the
latents of layer s are computed from the (already replaced) activations upstream of it:
the MLPs of the loaded layers are replaced by the dictionary, as circuit-tracer's
replacement model does.

Modes, as for a single SAE (saereg.sae.attach): ``replace`` writes the reconstructions;
``error`` writes ``y + (recon - recon.detach())``, whose value is bit-for-bit the model's
own output while gradients reach every layer's latents (the error term of each layer is
kept); ``record`` leaves the model unchanged and keeps every layer's latents. Sites are
found by TransformerLens hook point or through the Hugging Face hook table, duck-typed
(neither library, nor torch, is imported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class LayersAttachment:
    """What an attached multi-layer dictionary saw in the last forward pass, by layer."""

    mode: str
    sites: tuple[str, ...]
    #: dictionary layer → its latents [batch, pos, d_sae]
    latents_by_layer: dict[int, Any] = field(default_factory=dict)
    #: dictionary layer → the model's output minus the reconstruction (mode "error")
    errors_by_layer: dict[int, Any] = field(default_factory=dict)
    calls: int = 0
    _inputs: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def latents(self) -> torch.Tensor | None:
        """Every layer's latents stacked in layer order, [n_layers, batch, pos, d_sae]
        (circuit-tracer's convention), or None before a forward pass."""
        return _stacked(self.latents_by_layer)

    @property
    def error(self) -> torch.Tensor | None:
        return _stacked(self.errors_by_layer)


def _stacked(by_layer: Mapping[int, Any]) -> Any:
    if not by_layer:
        return None
    first = next(iter(by_layer.values()))
    stack = first.new_empty((len(by_layer), *first.shape))
    for i, layer in enumerate(sorted(by_layer)):
        stack[i] = by_layer[layer]
    return stack


def _layer_cfg(d: Any, layer: int) -> SimpleNamespace:
    c = d.cfg
    return SimpleNamespace(
        hook_name=c.hook_names[layer],
        hook_name_out=c.hook_names_out[layer],
        hf_hook=c.hf_hooks[layer] if c.hf_hooks else None,
        hf_hook_out=c.hf_hooks_out[layer] if c.hf_hooks_out else None,
        model=c.model,
    )


@contextmanager
def attach_layers(
    model: Any,
    dictionary: Any,
    *,
    mode: str,
    find: Callable[..., Any],
    error: type[Exception],
) -> Iterator[LayersAttachment]:
    """Hook every loaded layer of `dictionary` into `model` (see the module docstring);
    `find(model, cfg, out=...)` locates a site (saereg.sae.attach's, for the model's
    kind), `error` is the exception for a model that runs sites out of order."""
    layers = tuple(dictionary.layers)
    ins = {s: find(model, _layer_cfg(dictionary, s), out=False) for s in layers}
    outs: dict[int, Any] = {}
    if mode != "record":
        outs = {t: find(model, _layer_cfg(dictionary, t), out=True) for t in layers}
    labels = [ins[s].label for s in layers] + [outs[t].label for t in outs]
    state = LayersAttachment(mode, tuple(labels))
    skip = bool(getattr(dictionary, "has_skip", False))

    def reader(s: int) -> Any:
        def read(x: Any) -> None:
            state.latents_by_layer[s] = dictionary.encode_layer(x, s)
            if skip:
                state._inputs[s] = x
            if s == layers[0]:
                state.calls += 1
            return None

        return read

    def writer(t: int) -> Any:
        def write(y: Any) -> Any:
            sources = [s for s in layers if s <= t and t in dictionary.targets(s)]
            missing = [s for s in sources if s not in state.latents_by_layer]
            if missing:
                raise error(
                    f"layer {t}'s output site {outs[t].label} ran before the input site of "
                    f"layer {missing[0]} ({ins[missing[0]].label}) in this forward pass"
                )
            latents = {s: state.latents_by_layer[s] for s in sources}
            recon = dictionary.reconstruct(t, latents, state._inputs.get(t)).to(y.dtype)
            if recon.shape != y.shape:
                recon = recon.reshape(y.shape)
            if mode == "replace":
                return recon
            state.errors_by_layer[t] = (y - recon).detach()
            return y + (recon - recon.detach())

        return write

    handles = []
    try:
        for s in layers:
            handles.append(ins[s].hook(reader(s)))
        for t, site in outs.items():
            handles.append(site.hook(writer(t)))
        yield state
    finally:
        for handle in handles:
            handle.remove()
        state._inputs.clear()


__all__ = ["LayersAttachment", "attach_layers"]
