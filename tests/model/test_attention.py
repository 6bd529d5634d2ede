"""The LLM's attention (`model/attention.py`): a CPU decode step of a grouped-query layer without a mask runs in
HF's packed layout, with sdpa's values to float32 rounding; every other call is HF's sdpa exactly."""

import copy

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.model import attention
from llm_srt.model.llm import load_llm


@pytest.fixture(scope="module")
def gemmas():
    """A tiny random Gemma 3 with 4 query heads over 2 key/value heads (groups of 2, as the layout must keep the
    heads' order across groups), on HF's sdpa and on `decode_attention`."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=32,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=128)
    hf = Gemma3ForCausalLM(config).eval()
    ours = copy.deepcopy(hf)
    attention.use_decode_attention(ours)
    assert hf.config._attn_implementation == "sdpa" and ours.config._attn_implementation == attention.NAME
    return hf, ours


def greedy(model, padded: bool, steps: int = 8):
    """Logits of the prompt and of each decode step of a batch of 3 (row 2 left-padded when `padded`)."""
    torch.manual_seed(1)
    ids = torch.randint(4, 96, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.long)
    if padded:
        mask[2, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        logits, cache, position = [out.logits], out.past_key_values, positions[:, -1:] + 1
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones(3, 1)], 1)
            out = model(input_ids=out.logits[:, -1].argmax(-1)[:, None], attention_mask=mask, position_ids=position,
                        past_key_values=cache, use_cache=True)
            logits.append(out.logits)
            position = position + 1
    return logits


def test_an_unmasked_decode_step_takes_the_packed_layout_with_sdpas_values(gemmas, monkeypatch):
    hf, ours = gemmas
    packed = []
    monkeypatch.setattr(attention, "pack_gqa", lambda x, groups: packed.append(x.shape) or x.reshape(
        x.shape[0], x.shape[1] // groups, groups, x.shape[-1]))
    expected, got = greedy(hf, padded=False), greedy(ours, padded=False)
    assert packed == [(3, 4, 1, 16)] * 3 * 8  # every layer of every decode step, never the prompt
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)  # the prompt: HF's own sdpa
    for a, b in zip(got[1:], expected[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_masked_steps_and_training_are_hfs_own_sdpa(gemmas, monkeypatch):
    hf, ours = gemmas
    monkeypatch.setattr(attention, "pack_gqa", lambda *a: pytest.fail("packed a masked step"))
    for a, b in zip(greedy(ours, padded=True), greedy(hf, padded=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ids = torch.randint(4, 96, (2, 7))
    with torch.enable_grad():
        grads = []
        for model in (hf, ours):
            model.model.embed_tokens.weight.requires_grad_(True)
            model(input_ids=ids, labels=ids).loss.backward()
            grads.append(model.model.embed_tokens.weight.grad)
            model.model.embed_tokens.weight.requires_grad_(False)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_load_llm_selects_it(tmp_path):
    model, _ = load_llm(tiny.llm_dir(tmp_path))
    assert model.config._attn_implementation == attention.NAME
