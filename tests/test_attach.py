"""`attach` and the hook translation, proved by meaning on tiny random-weight models.

For each family a `transformers` model is built from a config (offline, random weights).
What `attach` sees at each translated site is compared with a value computed
independently: the model's `output_hidden_states`, or the site's defining equation
(resid_mid = resid_pre + attn_out, mlp_post = act(gate(x)) · up(x), attention by hand, …)
evaluated with the model's own weights on the other sites' values.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import saereg
from saereg.catalogue.hooks import LAYOUTS, TL_NAME, hf_hook
from saereg.sae.module import SAE
from saereg.store.sae_config import SAEConfig

transformers = pytest.importorskip("transformers")

D, HEADS, D_HEAD, D_MLP, VOCAB = 32, 4, 16, 48, 64


def _config(family: str) -> Any:
    t = transformers
    common = {
        "hidden_size": D,
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "intermediate_size": D_MLP,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
    }
    gqa = {**common, "num_key_value_heads": 2, "head_dim": D_HEAD}
    if family == "gpt2":
        return t.GPT2Config(
            n_embd=D,
            n_layer=2,
            n_head=HEADS,
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    if family == "gpt-neox":
        return t.GPTNeoXConfig(**common, use_parallel_residual=True)
    if family == "qwen2":
        return t.Qwen2Config(**common, num_key_value_heads=2)
    if family == "qwen3-moe":
        return t.Qwen3MoeConfig(
            **gqa, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24
        )
    if family == "gpt-oss":
        return t.GptOssConfig(
            **{**gqa, "intermediate_size": 24}, num_local_experts=4, num_experts_per_tok=2
        )
    classes = {
        "llama": t.LlamaConfig,
        "mistral": t.MistralConfig,
        "qwen3": t.Qwen3Config,
        "gemma": t.GemmaConfig,
        "gemma2": t.Gemma2Config,
        "gemma3": t.Gemma3TextConfig,
    }
    return classes[family](**gqa)


FAMILIES = [f for f in LAYOUTS if not f.startswith("qwen3.5")]


def _model(family: str) -> Any:
    torch.manual_seed(0)
    cfg = _config(family)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random norm weights, so a norm applied twice would show
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


class Probe:
    """A stand-in SAE whose latents are the activation itself (what `attach` saw)."""

    def __init__(self, family: str, hook_name: str) -> None:
        hook = hf_hook(family, hook_name)
        assert hook is not None
        self.cfg = SimpleNamespace(
            hook_name=hook_name,
            hook_name_out=None,
            hf_hook=hook.to_dict(),
            transcoder=False,
            model=None,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().clone()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f


def _seen(model: Any, family: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every site of layer 0 (and the embeddings), as `attach` sees it (one forward pass,
    every probe attached at once)."""
    with ExitStack() as stack, torch.no_grad():
        seen = {
            site: stack.enter_context(
                saereg.attach(
                    model, Probe(family, TL_NAME[site].replace("{L}", "0")), mode="record"
                )
            )
            for site in LAYOUTS[family]
        }
        model(ids)
    assert all(s.calls == 1 and s.latents is not None for s in seen.values())
    return {site: s.latents for site, s in seen.items()}


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _layer(model: Any, family: str) -> Any:
    return (
        model.transformer.h[0]
        if family == "gpt2"
        else (model.gpt_neox.layers[0] if family == "gpt-neox" else model.model.layers[0])
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_site_is_what_its_name_says(family: str) -> None:
    model = _model(family)
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        a = _seen(model, family, ids)
        block = _layer(model, family)
        _close(a["resid_pre"], hidden[0])
        _close(a["resid_post"], hidden[1])
        # hook_z: n_heads · d_head wide, and what the output projection reads
        n_heads = model.config.num_attention_heads if family != "gpt2" else model.config.n_head
        d_head = getattr(model.config, "head_dim", None) or D // n_heads
        assert a["attn_z"].shape[-1] == n_heads * d_head
        if family == "gpt2":
            attn = block.attn.c_proj(a["attn_z"])
            mlp_in_norm = block.ln_2
            down = block.mlp.c_proj
        elif family == "gpt-neox":
            attn = block.attention.dense(a["attn_z"])
            mlp_in_norm = block.post_attention_layernorm
            down = block.mlp.dense_4h_to_h
        else:
            attn = block.self_attn.o_proj(a["attn_z"])
            gemma = family in ("gemma2", "gemma3")
            if gemma:
                attn = block.post_attention_layernorm(attn)
            mlp_in_norm = (
                block.pre_feedforward_layernorm if gemma else block.post_attention_layernorm
            )
            down = getattr(block.mlp, "down_proj", None)
        _close(a["attn_out"], attn)
        # the residual stream adds up
        if family == "gpt-neox":  # parallel attention and MLP
            _close(a["resid_post"], a["resid_pre"] + a["attn_out"] + a["mlp_out"])
            _close(a["mlp_in"], mlp_in_norm(a["resid_pre"]))
        else:
            _close(a["resid_mid"], a["resid_pre"] + a["attn_out"])
            _close(a["resid_post"], a["resid_mid"] + a["mlp_out"])
            _close(a["mlp_in"], mlp_in_norm(a["resid_mid"]))
        mlp_out = block.mlp(a["mlp_in"])
        mlp_out = mlp_out[0] if isinstance(mlp_out, tuple) else mlp_out
        if family in ("gemma2", "gemma3"):
            mlp_out = block.post_feedforward_layernorm(mlp_out)
        _close(a["mlp_out"], mlp_out)
        if "mlp_post" in a:  # the MLP's hidden activation, from its own definition
            assert a["mlp_post"].shape[-1] == (D_MLP if family != "gpt2" else 4 * D)
            if family == "gpt2":
                hidden_act = block.mlp.act(block.mlp.c_fc(a["mlp_in"]))
            elif family == "gpt-neox":
                hidden_act = block.mlp.act(block.mlp.dense_h_to_4h(a["mlp_in"]))
            else:
                m = block.mlp
                hidden_act = m.act_fn(m.gate_proj(a["mlp_in"])) * m.up_proj(a["mlp_in"])
            _close(a["mlp_post"], hidden_act)
            projected = down(a["mlp_post"])
            if family in ("gemma2", "gemma3"):
                projected = block.post_feedforward_layernorm(projected)
            _close(a["mlp_out"], projected)
        embed = model.get_input_embeddings()(ids)
        _close(a["embed"], embed)
        if family == "gpt2":
            _close(a["pos_embed"], model.transformer.wpe(torch.arange(7))[None])
            _close(a["resid_pre"], a["embed"] + a["pos_embed"])


def test_gpt2_hook_z_is_attention_computed_by_hand() -> None:
    """Independent of the module layout: z = softmax(q kᵀ/√d_head, causal) v per head."""
    model = _model("gpt2")
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        a = _seen(model, "gpt2", ids)
        block = model.transformer.h[0]
        qkv = block.attn.c_attn(block.ln_1(a["resid_pre"]))
        q, k, v = (t.unflatten(-1, (HEADS, D // HEADS)).transpose(1, 2) for t in qkv.split(D, -1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)
        scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
        z = (scores.softmax(-1) @ v).transpose(1, 2).flatten(-2)
    _close(a["attn_z"], z)


# --------------------------------------------------------------------------- real SAEs


def _sae(d_in: int, hook: str, family: str, *, identity: bool, **extra: Any) -> SAE:
    """A ReLU SAE; `identity` makes decode(encode(x)) == x (latents [relu(x), relu(-x)])."""
    torch.manual_seed(1)
    d_sae = 2 * d_in
    hf = hf_hook(family, hook)
    cfg = SAEConfig.from_dict(
        {
            "architecture": "relu",
            "d_in": d_in,
            "d_sae": d_sae,
            "d_out": extra.pop("d_out", d_in),
            "apply_b_dec_to_input": False,
            "normalization": {"kind": "none"},
            "reshape": extra.pop("reshape", "none"),
            "dtype": "float32",
            "source": {"release": "test", "sae_id": hook, "format": "test", "files": {}},
            "hook_name": hook,
            "hf_hook": hf.to_dict() if hf else None,
            **extra,
        },
        full_schema=False,
    )
    eye = torch.eye(d_in)
    if identity:
        w_enc, w_dec = torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0)
    else:
        w_enc, w_dec = torch.randn(d_in, d_sae), torch.randn(d_sae, cfg.d_out)
    tensors = {
        "W_enc": w_enc,
        "b_enc": torch.zeros(d_sae),
        "W_dec": w_dec,
        "b_dec": torch.zeros(cfg.d_out),
    }
    return SAE.from_tensors(cfg, tensors)


@pytest.mark.parametrize(
    ("family", "hook", "width"),
    [
        ("gpt2", "blocks.1.hook_resid_pre", D),
        ("llama", "blocks.0.attn.hook_z", HEADS * D_HEAD),
        ("gemma2", "blocks.1.hook_resid_post", D),
        ("gemma3", "blocks.0.hook_mlp_out", D),
    ],
)
def test_modes_replace_error_record(family: str, hook: str, width: int) -> None:
    model = _model(family)
    ids = torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        clean = model(ids).logits
        with saereg.attach(model, _sae(width, hook, family, identity=True)):
            replaced = model(ids).logits
        _close(replaced, clean)  # an identity-like SAE changes nothing
        noisy = _sae(width, hook, family, identity=False)
        with saereg.attach(model, noisy, mode="replace"):
            assert not torch.allclose(model(ids).logits, clean)
        with saereg.attach(model, noisy, mode="error") as seen:
            kept = model(ids).logits
        assert torch.equal(kept, clean)  # exactly, not approximately
        assert seen.error is not None and seen.error.abs().sum() > 0
        with saereg.attach(model, noisy, mode="record") as seen:
            assert torch.equal(model(ids).logits, clean)
        probe = Probe(family, hook)
        with saereg.attach(model, probe, mode="record") as raw:
            model(ids)
        torch.testing.assert_close(seen.latents, noisy.encode(raw.latents))
    assert torch.equal(model(ids).logits, clean)  # hooks are gone


def test_error_mode_lets_gradients_reach_the_latents() -> None:
    model = _model("llama")
    ids = torch.randint(0, VOCAB, (1, 4))
    sae = _sae(D, "blocks.0.hook_resid_post", "llama", identity=False)
    with saereg.attach(model, sae, mode="error") as seen:
        logits = model(ids).logits
    assert seen.latents is not None and seen.latents.requires_grad
    seen.latents.retain_grad()
    logits.sum().backward()
    assert seen.latents.grad is not None and seen.latents.grad.abs().sum() > 0


def test_transcoder_replaces_the_mlp_output_with_its_prediction() -> None:
    model = _model("gemma2")
    ids = torch.randint(0, VOCAB, (2, 5))
    tc = _sae(
        D,
        "blocks.0.hook_mlp_in",
        "gemma2",
        identity=False,
        transcoder=True,
        hook_name_out="blocks.0.hook_mlp_out",
        hf_hook_out=hf_hook("gemma2", "blocks.0.hook_mlp_out").to_dict(),
    )
    block = model.model.layers[0]
    seen_out: list[torch.Tensor] = []
    with torch.no_grad(), saereg.attach(model, tc, mode="replace") as seen:
        probe = block.post_feedforward_layernorm.register_forward_hook(
            lambda _m, _a, out: seen_out.append(out)
        )
        try:
            model(ids)
        finally:
            probe.remove()
    with (
        torch.no_grad(),
        saereg.attach(model, Probe("gemma2", "blocks.0.hook_mlp_in"), mode="record") as x,
    ):
        model(ids)
    with torch.no_grad():
        _close(seen_out[0], tc(x.latents))
    assert seen.latents is not None and seen.latents.shape == (2, 5, 2 * D)


def test_hooks_are_removed_when_the_block_raises() -> None:
    model = _model("gpt2")
    sae = _sae(D, "blocks.0.hook_resid_post", "gpt2", identity=False)
    with pytest.raises(RuntimeError, match="boom"), saereg.attach(model, sae):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_attach_finds_layers_under_another_root_and_explains_failures() -> None:
    model = _model("llama")
    base = model.model  # LlamaModel: its layers are "layers.N", not "model.layers.N"
    ids = torch.randint(0, VOCAB, (1, 4))
    with saereg.attach(base, Probe("llama", "blocks.0.hook_resid_post"), mode="record") as s:
        hidden = base(ids, output_hidden_states=True).hidden_states
    _close(s.latents, hidden[1])
    probe = Probe("llama", "blocks.0.hook_resid_post")
    with (
        pytest.raises(saereg.AttachError, match="mode must be one of"),
        saereg.attach(model, probe, mode="swap"),
    ):
        pass
    gpt2 = _model("gpt2")
    with (
        pytest.raises(saereg.AttachError, match=r"cannot find module 'model\.layers\.0'"),
        saereg.attach(gpt2, probe),
    ):
        pass


def test_attach_falls_back_to_the_model_table_for_old_configs() -> None:
    """Canonical files written before `hf_hook` existed carry only the model name."""
    model = _model("gpt2")
    probe = Probe("gpt2", "blocks.1.hook_resid_pre")
    probe.cfg.hf_hook = None
    probe.cfg.model = "gpt2-small"
    ids = torch.randint(0, VOCAB, (1, 3))
    with torch.no_grad(), saereg.attach(model, probe, mode="record") as seen:
        hidden = model(ids, output_hidden_states=True).hidden_states
    _close(seen.latents, hidden[1])


# --------------------------------------------------------------------------- TransformerLens


def _hook_point() -> torch.nn.Module:
    """TransformerLens' own HookPoint where it is installed; else the same interface (an
    identity module whose forward hooks see, and may replace, the activation)."""
    try:
        from transformer_lens.hook_points import HookPoint
    except ImportError:
        return torch.nn.Identity()
    return HookPoint()


class TinyHooked(torch.nn.Module):
    """A stand-in for a TransformerLens `HookedTransformer`: named hook points in
    `hook_dict`, hook_z shaped [batch, pos, n_heads, d_head] as TransformerLens has it.
    (TransformerLens 4 removed HookedTransformer(config); its TransformerBridge needs a
    hub checkpoint, so the suite does not build one offline.)"""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.W_V = torch.nn.Linear(D, HEADS * D_HEAD)
        self.W_O = torch.nn.Linear(HEADS * D_HEAD, D)
        self.unembed = torch.nn.Linear(D, VOCAB)
        names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post"]
        self.points = torch.nn.ModuleDict({n.replace(".", "_"): _hook_point() for n in names})
        self.hook_dict = {n: self.points[n.replace(".", "_")] for n in names}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.hook_dict
        resid = h["blocks.0.hook_resid_pre"](self.embed(ids))
        v = self.W_V(resid).unflatten(-1, (HEADS, D_HEAD))
        weights = torch.ones(ids.shape[1], ids.shape[1]).tril()
        z = h["blocks.0.attn.hook_z"](torch.einsum("qk,bkhd->bqhd", weights / weights.sum(1), v))
        resid = h["blocks.0.hook_resid_post"](resid + self.W_O(z.flatten(-2)))
        return self.unembed(resid)


def test_transformer_lens_hook_points_and_hook_z_heads() -> None:
    """`attach` goes through the hook points by TransformerLens name, and a hook_z SAE
    reads the [batch, pos, n_heads, d_head] activation flattened, writing it back whole."""
    model = TinyHooked().eval()
    ids = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        clean = model(ids)
        resid = model.embed(ids)
        v = model.W_V(resid).unflatten(-1, (HEADS, D_HEAD))
        causal = torch.ones(6, 6).tril()
        z = torch.einsum("qk,bkhd->bqhd", causal / causal.sum(1), v)
        expected = {
            "blocks.0.attn.hook_z": z.flatten(-2),
            "blocks.0.hook_resid_post": resid + model.W_O(z.flatten(-2)),
        }
        for hook, want in expected.items():
            reshape = "hook_z" if hook.endswith("hook_z") else "none"
            width = want.shape[-1]
            sae = _sae(width, hook, "gpt2", identity=False, reshape=reshape)
            with saereg.attach(model, sae, mode="record") as seen:
                model(ids)
            torch.testing.assert_close(seen.latents, sae.encode(want))
            with saereg.attach(model, sae, mode="error"):
                assert torch.equal(model(ids), clean)
            with saereg.attach(model, sae, mode="replace"):
                assert not torch.allclose(model(ids), clean)
            ident = _sae(width, hook, "gpt2", identity=True, reshape=reshape)
            with saereg.attach(model, ident, mode="replace"):
                _close(model(ids), clean)
        missing = _sae(D, "blocks.0.hook_resid_poste", "gpt2", identity=True)
        with (
            pytest.raises(saereg.AttachError, match=r"Did you mean: blocks\.0\.hook_resid_post"),
            saereg.attach(model, missing),
        ):
            pass


def test_multimodal_gemma3_finds_the_language_model_layers() -> None:
    """Gemma 3 4b/12b/27b checkpoints nest the text layers under model.language_model,
    beside a vision tower with layers of its own; Gemma Scope 2 names them model.layers.N."""
    t = transformers
    text = _config("gemma3")
    vision = t.SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = t.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 1,
        boi_token_index=VOCAB - 2,
        eoi_token_index=VOCAB - 3,
    )
    cfg._attn_implementation = "eager"
    model = t.Gemma3ForConditionalGeneration(cfg).eval()
    ids = torch.randint(0, VOCAB - 4, (1, 5))
    with ExitStack() as stack, torch.no_grad():
        post, z = (
            stack.enter_context(saereg.attach(model, Probe("gemma3", hook), mode="record"))
            for hook in ("blocks.0.hook_resid_post", "blocks.0.attn.hook_z")
        )
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    _close(post.latents, hidden[1])
    assert z.latents.shape[-1] == HEADS * D_HEAD
