"""`attach(model, sae)`: hook an SAE (or transcoder) into a live model for a `with` block.

Works, duck-typed, with a Hugging Face `transformers` model (through the SAE's `hf_hook`:
a module path and which side of the module, see registry/catalogue/hooks.py), with a
TransformerLens `HookedTransformer` (through its hook points, by the SAE's TransformerLens
hook name) and with an nnsight model wrapping either (`unwrap_model`). None of these
libraries is imported here.

Modes:

- ``record``: the model runs unchanged; the latents of the last forward pass are kept.
- ``replace``: the activation is replaced by the SAE's reconstruction (a transcoder's
  output replaces the activation at its output site).
- ``error``: the reconstruction plus the SAE's error term, ``recon + (x - recon)``, so the
  model's output is exactly unchanged while gradients reach the latents. It is computed
  as ``x + (recon - recon.detach())``, whose value is bit-for-bit ``x``.

Hooks are removed when the block exits, also when it exits with an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saereg.base.errors import SaeregError
from saereg.catalogue.hooks import LAYOUTS, hf_hook
from saereg.catalogue.models import get_model
from saereg.catalogue.refs import close_matches
from saereg.sae.attach_layers import attach_layers

if TYPE_CHECKING:
    import torch

MODES = ("replace", "record", "error")


class AttachError(SaeregError):
    """The SAE cannot be hooked into this model (unknown site, wrong mode, no such module)."""


@dataclass
class Attachment:
    """What an attached SAE saw during the `with` block (the last forward pass)."""

    mode: str
    sites: tuple[str, ...]
    latents: Any = None  # dense latents, or SparseLatents with attach(..., sparse=True)
    error: torch.Tensor | None = None
    calls: int = 0
    _pending: list[Any] = field(default_factory=list, repr=False)


@contextmanager
def attach(
    model: Any, sae: Any, *, mode: str = "replace", sparse: bool = False
) -> Iterator[Attachment]:
    """Hook `sae` into `model` for the duration of a ``with`` block::

        with saereg.attach(model, sae, mode="record") as seen:
            model(input_ids)
        seen.latents  # [batch, seq, d_sae]

    `sae` is a `saereg.SAE` (anything with ``encode``/``decode`` and a ``cfg`` holding
    ``hook_name``, ``hook_name_out``, ``hf_hook``/``hf_hook_out`` and ``transcoder``),
    or a multi-layer dictionary (`CrossLayerTranscoder`, `TranscoderSet`), attached as
    a replacement model: every loaded layer's input site read, every loaded layer's
    output site written (saereg.sae.attach_layers; the block then yields a
    `LayersAttachment`, whose ``latents`` are stacked over layers).
    On a Hugging Face model the site is the SAE's ``hf_hook``, else the one the models
    table gives for its ``model`` and hook, else for the model's own family
    (``model.config.model_type``). With ``sparse=True`` the latents are kept (and
    decoded) as `SparseLatents`; otherwise decode takes the sparse path by itself where
    few latents are active.
    """
    if mode not in MODES:
        raise AttachError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    model = unwrap_model(model)
    tl = isinstance(getattr(model, "hook_dict", None), Mapping)
    find = _tl_site if tl else _hf_site
    if getattr(sae, "kind", None) == "crosscoder":
        raise AttachError(
            "a crosscoder reads all its sites at once (often the same site of two models), "
            "so it cannot be hooked into one model; encode the stacked activations instead"
        )
    if hasattr(sae, "encode_layer"):  # a multi-layer dictionary: a replacement model
        with attach_layers(model, sae, mode=mode, find=find, error=AttachError) as layers:
            yield layers  # type: ignore[misc]
        return
    cfg = sae.cfg
    transcoder = bool(getattr(cfg, "transcoder", False))
    in_site = find(model, cfg, out=False)
    out_site = find(model, cfg, out=True) if transcoder else None
    state = Attachment(mode, tuple(s.label for s in (in_site, out_site) if s is not None))

    def read(x: torch.Tensor) -> torch.Tensor | None:
        latents = sae.encode(x, sparse=True) if sparse else sae.encode(x)
        state.latents, state.calls = latents, state.calls + 1
        if transcoder:
            state._pending[:] = [latents]
            return None
        return _apply(sae, state, x, latents)

    def write(y: torch.Tensor) -> torch.Tensor | None:
        if not state._pending:
            raise AttachError(
                f"the transcoder's output site {out_site.label} ran before its input "
                f"site {in_site.label} in this forward pass"
            )
        latents = state._pending.pop()
        return _apply(sae, state, y, latents)

    handles = [in_site.hook(read)]
    try:
        if out_site is not None:
            handles.append(out_site.hook(write))
        yield state
    finally:
        for handle in handles:
            handle.remove()
        state._pending.clear()


def _apply(sae: Any, state: Attachment, x: torch.Tensor, latents: torch.Tensor) -> Any:
    """The activation to hand on (None = unchanged) for the mode."""
    if state.mode == "record":
        return None
    recon = sae.decode(latents).to(x.dtype)
    if recon.shape != x.shape:
        recon = recon.reshape(x.shape)
    if state.mode == "replace":
        return recon
    state.error = (x - recon).detach()
    return x + (recon - recon.detach())


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class _Site:
    """One place in a live model: a module and the side of it that holds the activation."""

    label: str
    module: Any
    side: str

    def hook(self, fn: Callable[[Any], Any]) -> Any:
        """Register `fn(activation) -> replacement | None`; returns a removable handle."""
        if self.side == "output":

            def on_output(_module: Any, _args: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    new = fn(output[0])
                    return None if new is None else (new, *output[1:])
                return fn(output)

            return self.module.register_forward_hook(on_output)

        def on_input(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(iter(kwargs), None) if "hidden_states" not in kwargs else "hidden_states"
            if key is None:
                raise AttachError(f"{self.label}: the module was called without inputs")
            new = fn(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return self.module.register_forward_pre_hook(on_input, with_kwargs=True)


def _tl_site(model: Any, cfg: Any, *, out: bool) -> _Site:
    name = cfg.hook_name_out if out else cfg.hook_name
    if not name:
        raise AttachError("the SAE names no TransformerLens hook point (hook_name is empty)")
    points = model.hook_dict
    if name not in points:
        near = close_matches(name, list(points), n=3)
        tip = f" Did you mean: {', '.join(near)}?" if near else ""
        raise AttachError(f"the model has no hook point {name!r}.{tip}")
    if name.endswith("hook_mlp_in") and not getattr(model.cfg, "use_hook_mlp_in", True):
        raise AttachError(
            f"{name} only runs when the model computes it: call "
            "model.set_use_hook_mlp_in(True) before attaching"
        )
    return _Site(name, points[name], "output")


def unwrap_model(model: Any) -> Any:
    """The torch module behind a wrapper that runs it: nnsight's `LanguageModel` /
    `NNsight` (an `Envoy`, whose attributes are proxies) keeps it as ``_module`` (0.4 and
    later; ``_model`` before). Hooks go on that module, so they fire inside
    ``with lm.trace(...)`` as in a plain forward pass. A wrapper still holding its meta-
    device skeleton (nnsight's lazy loading) is dispatched first, as its first trace would
    do: hooks on the skeleton would be left behind when the real weights are swapped in."""
    if callable(getattr(type(model), "register_forward_hook", None)):
        return model  # a torch.nn.Module already (transformers, TransformerLens)
    state = vars(model) if hasattr(model, "__dict__") else {}
    if state.get("dispatched") is False and callable(getattr(type(model), "dispatch", None)):
        model.dispatch()
        state = vars(model)
    for attr in ("_module", "_model"):
        inner = state.get(attr)
        if callable(getattr(type(inner), "register_forward_hook", None)):
            return inner
    raise AttachError(
        f"cannot hook into a {type(model).__name__}: attach takes a torch module (a "
        "transformers model, a TransformerLens HookedTransformer) or an nnsight model "
        "wrapping one"
    )


def _hf_site(model: Any, cfg: Any, *, out: bool) -> _Site:
    hook = _hf_hook_of(cfg, out=out, live=model)
    path, side = hook["module"], hook["side"]
    module_name = _find_module(model, path)
    return _Site(f"{module_name} ({side})", model.get_submodule(module_name), side)


def _hf_hook_of(cfg: Any, *, out: bool, live: Any = None) -> Mapping[str, str]:
    hook = getattr(cfg, "hf_hook_out" if out else "hf_hook", None)
    if hook:
        return hook
    # Canonical files written before hf_hook existed, and SAEs of your own: translate
    # from the models table, by the SAE's model or else the live model's family.
    model = get_model(getattr(cfg, "model", None))
    name = cfg.hook_name_out if out else cfg.hook_name
    found = model.hf_hook(name) if model is not None else None
    family = _family(live) if model is None else None
    if found is None and family is not None:
        found = hf_hook(family, name)
    if found is None:
        whose = (
            f"model {cfg.model!r}"
            if getattr(cfg, "model", None)
            else f"a {family or type(live).__name__} model"
        )
        raise AttachError(
            f"no Hugging Face module is known for hook {name!r} of {whose}; give the SAE "
            "hf_hook='<module path>.input|output' (SAE.from_weights), or a model from "
            "`saereg models`; see registry/catalogue/hooks.py"
        )
    return found.to_dict()


def _family(model: Any) -> str | None:
    """The hooks-table family of a live Hugging Face model, from its config's model_type."""
    kind = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    kind = kind.replace("_", "-").removesuffix("-text")
    return kind if kind in LAYOUTS else None


def _find_module(model: Any, path: str) -> str:
    """The name of the module `path` denotes in `model`: the path itself, or the same
    layers under another root (a base model without the ``model.`` prefix, or the
    language model of a multimodal checkpoint)."""
    names = [name for name, _ in model.named_modules()]
    known = set(names)
    if path in known:
        return path
    _, _, rest = path.partition(".")
    if rest in known:
        return rest
    tail = "." + (rest or path)
    found = [n for n in names if n.endswith(tail)]
    if len(found) > 1:
        text = [n for n in found if "language_model" in n or "text_model" in n]
        found = text if len(text) == 1 else found
    if len(found) == 1:
        return found[0]
    why = "several modules match: " + ", ".join(found[:4]) if found else "no module matches"
    raise AttachError(
        f"cannot find module {path!r} in this {type(model).__name__} ({why}); is it a "
        "model of the SAE's family?"
    )
