"""The in-place KV cache: the same logits as HF's DynamicCache (full and sliding-window layers, rows dropped
mid-generation, the window crossed), and a decode step that writes into its buffer instead of copying it."""

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from transformers.cache_utils import DynamicCache

from llm_srt.model.kv_cache import GrowingLayer, GrowingSlidingWindowLayer, growing_cache

WINDOW = 8


@pytest.fixture(scope="module")
def gemma():
    """A tiny random Gemma 3 (the embedded LLM's architecture): sliding-window layers and a full one."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=WINDOW,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=128)
    return Gemma3ForCausalLM(config).eval()


def decode(model, cache, prompt: int, steps: int, drop_at: int | None = None):
    """Greedy logits of a left-padded batch of 3 through `cache`; row 1 leaves the batch at step `drop_at`."""
    torch.manual_seed(1)
    ids = torch.randint(4, 96, (3, prompt))
    mask = torch.ones(3, prompt, dtype=torch.long)
    mask[2, :2] = 0  # a left-padded row
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = []
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        position = positions[:, -1:] + 1
        for step in range(steps):
            token = out.logits[:, -1].argmax(-1)
            logits.append(out.logits[:, -1])
            if step == drop_at:
                keep = torch.tensor([0, 2])
                cache.batch_select_indices(keep)
                mask, position, token = mask[keep], position[keep], token[keep]
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=cache,
                        use_cache=True)
            position = position + 1
    return logits


@pytest.mark.parametrize("prompt, steps, drop_at", [(4, 3, None), (4, 10, 2), (3, 12, None), (12, 4, 1)])
def test_growing_cache_gives_dynamic_caches_logits(gemma, prompt, steps, drop_at):
    """Within the window, across it (prompt + steps > WINDOW), past it from the prompt on, with a row dropped."""
    ours = decode(gemma, growing_cache(gemma.config, steps), prompt, steps, drop_at)
    hf = decode(gemma, DynamicCache(config=gemma.config), prompt, steps, drop_at)
    for a, b in zip(ours, hf):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_decode_step_writes_into_the_buffer_it_was_given(gemma):
    cache = growing_cache(gemma.config, spare=4)
    assert [type(layer) for layer in cache.layers] == [GrowingSlidingWindowLayer, GrowingSlidingWindowLayer,
                                                       GrowingLayer]
    decode(gemma, cache, prompt=3, steps=1)
    full = cache.layers[2]
    buffer = full._kv_buffers[0]
    assert buffer.shape[-2] == 3 + 4 and full.keys.shape[-2] == 4 and full.keys.data_ptr() == buffer.data_ptr()
    new = torch.randn(3, 1, 1, 16)
    keys, _ = full.update(new, new)
    assert full._kv_buffers[0] is buffer and keys.data_ptr() == buffer.data_ptr()  # no copy: same storage
    torch.testing.assert_close(buffer[:, :, 4:5], new, rtol=0, atol=0)


def test_tensors_replaced_between_updates_are_the_ones_grown(gemma):
    """What HF's methods put in a layer between updates (a beam reorder, a crop: same batch, other contents) is what
    the next update extends, as in HF's own layer."""
    torch.manual_seed(2)
    ours, hf = growing_cache(gemma.config, spare=8).layers[2], DynamicCache(config=gemma.config).layers[2]
    states = [torch.randn(3, 1, n, 16) for n in (5, 1, 1, 1, 1)]
    for step, new in enumerate(states):
        if step == 2:
            for layer in (ours, hf):
                layer.reorder_cache(torch.tensor([2, 0, 1]))
        if step == 3:
            for layer in (ours, hf):
                layer.crop(-2)
        for a, b in zip(ours.update(new, new * 2), hf.update(new, new * 2)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ours._kv_buffers[0].shape[-2] == 5 + 8  # rebuilt at the generation's length, not with a spare on top


def greedy(model, prompt: int, new_tokens: int, drop_at: int):
    """Greedy decoding's steps (`GrowingSteps`) over a left-padded batch of 3, row 1 leaving after `drop_at` steps
    -> the tokens picked per step and the steps' cache."""
    from llm_srt.model.decoding import GrowingSteps

    torch.manual_seed(1)
    mask = torch.ones(3, prompt, dtype=torch.long)
    mask[2, :2] = 0
    with torch.no_grad():
        steps = GrowingSteps(model, model.get_input_embeddings()(torch.randint(4, 96, (3, prompt))), mask, new_tokens)
        tokens = [steps.logits[:, -1].argmax(-1)]
        for step in range(1, new_tokens):
            token = tokens[-1]
            if step == drop_at:
                steps.keep(torch.tensor([0, 2]))
                token = token[[0, 2]]
            tokens.append(steps.step(token)[:, -1].argmax(-1))
    return [t.tolist() for t in tokens], steps.cache


@pytest.mark.parametrize("prompt, new_tokens", [(3, 5), (4, 14)])  # within the window; past it (full layer alone)
def test_a_row_leaving_late_keeps_every_buffer_within_the_generations_length(gemma, prompt, new_tokens, monkeypatch):
    """A row that ends at the last step leaves the others' buffers at prompt + new tokens positions (a sliding
    layer's at most its window's) in the batch's first storage (rebuilt with a whole spare again, they held nearly
    twice the new tokens), with HF's tokens."""
    ours, cache = greedy(gemma, prompt, new_tokens, drop_at=new_tokens - 1)
    buffers = [(layer._kv_buffers, min(prompt + new_tokens, WINDOW - 1) if isinstance(layer, GrowingSlidingWindowLayer)
                else prompt + new_tokens) for layer in cache.layers if getattr(layer, "_kv_buffers", None)]
    assert len(buffers) == (3 if prompt + new_tokens <= WINDOW else 1)
    for (keys, values), length in buffers:
        assert keys.shape[:3] == values.shape[:3] == (2, 1, length)
        assert keys.untyped_storage().nbytes() == 3 * length * 16 * keys.element_size()
    monkeypatch.setattr("llm_srt.model.kv_cache.growing_cache", lambda config, spare: DynamicCache(config=config))
    assert ours == greedy(gemma, prompt, new_tokens, drop_at=new_tokens - 1)[0]


def test_the_first_buffer_has_room_for_grow_step_new_tokens_not_the_whole_budget(gemma):
    """Before, each layer's first buffer held the prompt plus the batch's largest budget for every row: memory a GPU
    allocates at once (Qwen2.5-32B, 64 rows of 300 + 1,284 positions: 25 GiB where the rows write 9 GiB). Now the
    prompt plus GROW_STEP positions (a sliding layer's never more than its window keeps)."""
    from llm_srt.model.decoding import GrowingSteps
    from llm_srt.model.kv_cache import GROW_STEP

    prompt, budget = 4, 1284
    with torch.no_grad():
        steps = GrowingSteps(gemma, torch.randn(3, prompt, 32), torch.ones(3, prompt, dtype=torch.long), budget)
    sliding, _, full = steps.cache.layers
    assert GROW_STEP == 256 and full._kv_buffers[0].shape == (3, 1, prompt + GROW_STEP, 16)
    assert full._kv_buffers[0].untyped_storage().nbytes() == 3 * (prompt + GROW_STEP) * 16 * 4
    assert sliding._kv_buffers[0].shape == (3, 1, WINDOW - 1, 16)
    few = growing_cache(gemma.config, spare=5)  # a generation of fewer new tokens: its own
    decode(gemma, few, prompt=4, steps=1)
    assert few.layers[2]._kv_buffers[0].shape[-2] == 4 + 5


@pytest.mark.parametrize("step, prompt, steps, drop_at", [(2, 3, 30, 5), (3, 4, 20, None), (256, 4, 270, 100)])
def test_a_buffer_grown_many_times_gives_dynamic_caches_logits(gemma, monkeypatch, step, prompt, steps, drop_at):
    """Full buffers grow (twice the room each time), rows dropped before a growth, sliding layers grown and then
    handed over to HF's update past their window: the logits HF's own cache gives, bit for bit."""
    from llm_srt.model import kv_cache

    monkeypatch.setattr(kv_cache, "GROW_STEP", step)
    made, capacity = [], kv_cache._Growing._capacity  # each buffer's length as it is made, by layer kind

    def recorded(layer, positions):
        made.append((type(layer), capacity(layer, positions)))
        return made[-1][1]

    monkeypatch.setattr(kv_cache._Growing, "_capacity", recorded)
    cache = growing_cache(gemma.config, spare=steps)
    ours = decode(gemma, cache, prompt, steps, drop_at)
    hf = decode(gemma, DynamicCache(config=gemma.config), prompt, steps, drop_at)
    for a, b in zip(ours, hf):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    room, expected = step, []
    while room < steps:
        expected.append(prompt + room)
        room *= 2
    assert [n for kind, n in made if kind is GrowingLayer] == expected + [prompt + steps]  # the last: the budget's
    assert {n for kind, n in made if kind is GrowingSlidingWindowLayer} <= set(range(prompt + 1, WINDOW))
    assert [layer._kv_buffers for layer in cache.layers[:2]] == [None, None]  # the sliding ones handed over
    rows = 3 if drop_at is None else 2  # a buffer grown after rows left holds the rows left alone
    assert cache.layers[2]._kv_buffers[0].untyped_storage().nbytes() == rows * (prompt + steps) * 16 * 4


def test_greedy_tokens_are_the_same_with_a_buffer_that_grows(gemma, monkeypatch):
    """`GrowingSteps` with buffers grown four times and a row leaving midway: HF's cache's tokens."""
    monkeypatch.setattr("llm_srt.model.kv_cache.GROW_STEP", 3)
    ours, cache = greedy(gemma, prompt=4, new_tokens=40, drop_at=10)
    assert cache.layers[2]._kv_buffers[0].shape[-2] == 4 + 40
    monkeypatch.setattr("llm_srt.model.kv_cache.growing_cache", lambda config, spare: DynamicCache(config=config))
    assert ours == greedy(gemma, prompt=4, new_tokens=40, drop_at=10)[0]
