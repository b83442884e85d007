"""`saereg.attach` on nnsight models (0.8): the SAE hooked into the torch module the
wrapper runs, so it acts inside ``with model.trace(...)`` exactly as in a plain forward
pass; and the SAE's `hf_hook` names the site for nnsight's own ``.get(path)``.

A two-layer GPT-2 with random weights and a word-level tokenizer built here: nothing is
downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import nnsight  # in the test extra
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import saereg
from saereg.sae.attach import AttachError

IDS = torch.tensor([[3, 14, 15, 9, 26, 5]])


@pytest.fixture(scope="module")
def gpt2() -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", pad_token="w0")
    return model, tok


@pytest.fixture(scope="module")
def sae() -> saereg.SAE:
    g = torch.Generator().manual_seed(1)
    return saereg.SAE.from_weights(
        W_enc=torch.randn(16, 48, generator=g) * 0.3,
        W_dec=torch.randn(48, 16, generator=g) * 0.3,
        b_enc=torch.randn(48, generator=g) * 0.1,
        architecture="relu",
        hook_name="blocks.1.hook_resid_pre",
        model="gpt2-small",
    )


def _logits(out: object) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]  # type: ignore[attr-defined,index]


@pytest.mark.parametrize("wrapper", ["TransformersModel", "NNsight"])
def test_attach_acts_inside_an_nnsight_trace(gpt2, sae, wrapper: str) -> None:
    model, tok = gpt2
    lm = (
        nnsight.TransformersModel(model, tokenizer=tok)
        if wrapper == "TransformersModel"
        else nnsight.NNsight(model)
    )
    with torch.no_grad():
        clean = model(IDS, output_hidden_states=True)
        with saereg.attach(model, sae, mode="replace"):
            replaced = model(IDS).logits
        with saereg.attach(lm, sae, mode="replace"), lm.trace(IDS):
            out = lm.output.save()
        torch.testing.assert_close(_logits(out), replaced, rtol=0, atol=0)
        assert not torch.allclose(replaced, clean.logits)  # the SAE changed something
        with saereg.attach(lm, sae, mode="record") as seen, lm.trace(IDS):
            unchanged = lm.output.save()
    torch.testing.assert_close(_logits(unchanged), clean.logits, rtol=0, atol=0)
    # resid_pre of block 1 is the hidden state after block 0
    torch.testing.assert_close(seen.latents, sae.encode(clean.hidden_states[1]))
    assert not model._forward_hooks and not model.transformer.h[1]._forward_pre_hooks


def test_hf_hook_names_the_site_for_nnsight_get(gpt2, sae) -> None:
    """Without attach: `cfg.hf_hook` is a module path and a side, which is what nnsight's
    ``.get("<path>.input")`` reads inside a trace."""
    model, tok = gpt2
    lm = nnsight.TransformersModel(model, tokenizer=tok)
    hook = sae.cfg.hf_hook
    assert (hook["module"], hook["side"]) == ("transformer.h.1", "input")
    with torch.no_grad():
        with lm.trace(IDS):
            acts = lm.get(f"{hook['module']}.{hook['side']}").save()
        clean = model(IDS, output_hidden_states=True)
    torch.testing.assert_close(acts, clean.hidden_states[1])


def test_a_lazily_loaded_nnsight_model_is_dispatched_before_hooking(
    gpt2, sae, tmp_path: Path
) -> None:
    """nnsight builds a model from a folder on the meta device and loads the weights at
    its first trace, swapping modules: attach loads them first, so its hooks are on the
    modules that run."""
    model, tok = gpt2
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
        lm = nnsight.LanguageModel(str(tmp_path), tokenizer=tok)
    assert lm.dispatched is False
    with torch.no_grad():
        with saereg.attach(lm, sae, mode="record") as seen, lm.trace(IDS):
            lm.output.save()
        assert lm.dispatched is True
        expected = sae.encode(model(IDS, output_hidden_states=True).hidden_states[1])
    torch.testing.assert_close(seen.latents, expected)


def test_something_that_wraps_no_module_is_refused(sae) -> None:
    with pytest.raises(AttachError, match="cannot hook into a dict"), saereg.attach({}, sae):
        pass
