"""SpeechLLM on tiny random models: loss on targets only, decoding, checkpoints, and an overfit run."""

import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.model import static_steps
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.llm import LoraOptions
from llm_srt.model.speech_llm import IGNORE, SpeechLLM, SpeechLLMConfig, tokenize_batch

CLIPS = [tiny.tone(0.8, 300), tiny.tone(1.5, 700, seed=1), tiny.tone(0.5, 1200, seed=2)]
PROMPTS = ["<|eng|>", "<|deu|><|eng|>", "hello<|eng|><|fra|>"]
TARGETS = ["a cat", "the big dog", "ok"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return tiny.speech_llm(tmp_path_factory.mktemp("sllm"), init_std=0.3).eval()


def _batch(**extra):
    return dict(audio=CLIPS, prompts=PROMPTS, targets=TARGETS, **extra)


def _prompt_embeds(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's speech and prompts as the LLM's left-padded input embeddings and mask (what generation reads)."""
    speech = model.speech_embeddings(_batch())
    prompt_ids, _ = tokenize_batch(model.tokenizer, PROMPTS)
    embeds, mask, _ = model.assemble(speech, prompt_ids, left_pad=True)
    return embeds, mask


def test_loss_backpropagates_into_the_adapter_only(model):
    out = model(_batch())
    assert torch.isfinite(out["loss"]) and out["n_tokens"] == sum(len(t) + 1 for t in TARGETS)  # chars + EOS
    model.zero_grad()
    out["loss"].backward()
    assert all(p.grad is not None for p in model.adapter.parameters())
    assert all(p.grad is None for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    counts = model.parameter_counts()
    assert counts["adapter"] == counts["trainable"] == sum(p.numel() for p in model.adapter.parameters())


def test_labels_cover_target_and_eos_only_and_loss_matches_full_logits(model):
    speech = model.speech_embeddings(_batch())
    prompt_ids, target_ids = tokenize_batch(model.tokenizer, PROMPTS, TARGETS)
    embeds, mask, labels = model.assemble(speech, prompt_ids, target_ids)
    eos = model.tokenizer.eos_token_id
    for i, target in enumerate(TARGETS):
        row = labels[i][labels[i] != IGNORE].tolist()
        assert row == model.tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]
        n = int(mask[i].sum())
        assert labels[i, n - len(row):n].tolist() == row  # the labelled span ends the real sequence
        assert not mask[i, n:].any()  # right padding for training
    # reference: full logits of the plain HF forward, cross-entropy where labels exist
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE)
    assert torch.allclose(model(_batch())["loss"], ref, atol=1e-5)
    # the prompt carries no loss: a different prompt leaves the number of labelled tokens unchanged
    other = model(_batch() | {"prompts": ["<|jpn|>x"] * 3})
    assert other["n_tokens"] == model(_batch())["n_tokens"]


def test_bos_is_placed_first_and_absent_without_one(tmp_path):
    with_bos = tiny.speech_llm(tmp_path / "a", kind="llama", bos=True)
    without = tiny.speech_llm(tmp_path / "b", bos=False)
    embed = with_bos.llm.get_input_embeddings()
    x, _, _ = with_bos.assemble(None, [[5, 6]])
    assert torch.equal(x[0, 0], embed.weight[with_bos.tokenizer.bos_token_id])
    y, _, _ = without.assemble(None, [[5, 6]])
    assert y.shape[1] == 2


def test_text_only_batch(model):
    batch = dict(prompts=["a cat<|eng|><|deu|>"], targets=["eine Katze"])
    out = model(batch)
    assert torch.isfinite(out["loss"]) and out["n_tokens"] == len("eine Katze") + 1
    assert isinstance(model.generate(batch, DecodingOptions(max_new_tokens=4))[0], str)


def test_a_row_with_nothing_to_read_is_a_clear_error_and_an_empty_batch_gives_no_rows(model, tmp_path):
    """A tokenizer without BOS, a text-only row with an empty prompt: no input position at all, an LLMSRTError
    naming the row (alone it was a reshape error inside attention, batched a fully masked row's garbage), greedy or
    beam search; with speech an empty prompt is fine. No prompts: no rows (the encoder not even asked)."""
    without = tiny.speech_llm(tmp_path, bos=False).eval()
    for beam in (1, 3):
        for prompts in ([""], ["hi", ""]):
            with pytest.raises(LLMSRTError, match=f"batch row {len(prompts) - 1} has nothing for the LLM to read"):
                without.generate_ids(dict(prompts=prompts), DecodingOptions(max_new_tokens=3, beam_size=beam))
    with pytest.raises(LLMSRTError, match="batch row 1 has nothing"):
        without.assemble(None, [[5, 6], []])
    assert len(without.generate_ids(dict(audio=CLIPS[:1], prompts=[""]), DecodingOptions(max_new_tokens=3))[0]) > 0
    assert model.generate_ids(dict(prompts=[]), DecodingOptions(max_new_tokens=3)) == []
    assert without.generate(dict(audio=[], prompts=[]), DecodingOptions(max_new_tokens=3, beam_size=3)) == []


def test_a_batch_with_more_prompts_than_clips_is_a_clear_error(model):
    """Two clips, three prompts (and targets): an LLMSRTError counting them, in generation and in training (it was
    a tensor size RuntimeError inside `assemble`)."""
    with pytest.raises(LLMSRTError, match=r"^the batch has 2 clips but 3 prompts; give every row one of each$"):
        model.generate_ids(dict(audio=CLIPS[:2], prompts=PROMPTS), DecodingOptions(max_new_tokens=3))
    with pytest.raises(LLMSRTError, match=r"^the batch has 2 clips but 3 prompts and 3 targets; give every row"):
        model(_batch() | {"audio": CLIPS[:2]})
    with pytest.raises(LLMSRTError, match=r"^the batch has 3 prompts but 2 targets; give every row one of each$"):
        model.assemble(None, [[5], [6], [7]], [[8], [9]])


def test_cached_features_without_frames_are_a_clear_error(model):
    """Encoder features (B, 0, D) (an empty cached entry): an LLMSRTError before the adapter, not the Q-Former's
    reshape error."""
    features = torch.randn(2, 0, model.encoder_dim)
    with pytest.raises(LLMSRTError, match=r"shape \(2, 0, 32\) hold no frames"):
        model.generate_ids(dict(features=features, feature_mask=torch.zeros(2, 0, dtype=torch.bool),
                                prompts=PROMPTS[:2]), DecodingOptions(max_new_tokens=3))


def test_softcapping_is_honoured(model):
    base = model(_batch())["loss"]
    model.llm.config.final_logit_softcapping = 0.01
    try:
        capped = model(_batch())["loss"]
    finally:
        model.llm.config.final_logit_softcapping = None
    uniform = math.log(len(model.tokenizer))  # logits squeezed into (-0.01, 0.01): a uniform prediction
    assert abs(capped.item() - uniform) < 0.02 and abs(base.item() - uniform) > 0.5


def _manual_greedy(model, batch, n):
    """Reference: one example at a time, no KV cache, full recompute, argmax."""
    speech = model.speech_embeddings(batch)
    prompt_ids, _ = tokenize_batch(model.tokenizer, batch["prompts"])
    embed = model.llm.get_input_embeddings()
    result = []
    for i in range(len(prompt_ids)):
        one = (speech[0][i:i + 1], speech[1][i:i + 1])
        x, _, _ = model.assemble(one, prompt_ids[i:i + 1])
        ids = []
        for _ in range(n):
            token = int(model.llm(inputs_embeds=x).logits[0, -1].argmax())
            if token == model.tokenizer.eos_token_id:
                break
            ids.append(token)
            x = torch.cat([x, embed.weight[token][None, None]], 1)
        result.append(ids)
    return result


def test_greedy_matches_manual_loop_and_beam_1(model):
    batch = _batch()
    with torch.no_grad():
        ref = _manual_greedy(model, batch, 8)
    greedy = model.generate_ids(batch, DecodingOptions(max_new_tokens=8))
    assert greedy == ref
    assert any(len(r) > 2 for r in ref)
    assert model.generate(batch, DecodingOptions(max_new_tokens=8, beam_size=1)) == \
        [model.tokenizer.decode(r, skip_special_tokens=True) for r in ref]


def test_greedy_drops_finished_rows_and_equals_hf_generate(model):
    """Rows that end at different steps leave the batch (fewer rows per step), and every row's tokens equal HF
    greedy search's over the whole batch."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    embeds, mask = _prompt_embeds(model)
    free = decoding.greedy_ids(model.llm, embeds, mask, 8, [model.tokenizer.eos_token_id])
    eos = [model.tokenizer.eos_token_id, free[0][2]]  # a token row 0 writes third now ends a generation
    steps = []
    hook = causal_lm(model.llm).register_forward_hook(lambda m, a, out: steps.append(out.logits.shape[0]))
    with torch.no_grad():
        try:
            ours = decoding.greedy_ids(model.llm, embeds, mask, 8, eos)
        finally:
            hook.remove()
        config = decoding.generation_config(causal_lm(model.llm).generation_config, DecodingOptions(max_new_tokens=8),
                                            eos, model.tokenizer.pad_token_id)
        hf = model.llm.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config)
    expected = [[t for t in row[:next((k for k, t in enumerate(row) if t in eos), len(row))]] for row in hf.tolist()]
    assert ours == expected and len(ours[0]) == 2 and len({len(r) for r in ours}) > 1
    assert steps[0] == 3 and min(steps) < 3 and steps == sorted(steps, reverse=True)  # finished rows left


def test_a_length_penalty_is_given_to_beam_search_only(model, capfd):
    """Greedy decoding through transformers (a repetition penalty, FSDP's synced ranks) has no length penalty: set,
    it printed transformers' "generation flags are not valid" warning into every such run's output."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    base = causal_lm(model.llm).generation_config
    greedy = decoding.generation_config(base, DecodingOptions(max_new_tokens=8, length_penalty=2.0), [2], 0)
    greedy.validate()
    assert "length_penalty" not in capfd.readouterr().err and greedy.length_penalty == 1.0
    beam = decoding.generation_config(base, DecodingOptions(max_new_tokens=8, length_penalty=2.0, beam_size=2), [2], 0)
    assert beam.length_penalty == 2.0 and beam.num_beams == 2


def test_greedy_on_end_writes_the_required_ids_once_then_goes_on_as_if_they_were_prompted(model):
    """A row that picks an end token before `on_end` is satisfied gets the ids written for it (the argmax ignored)
    and goes on; what follows equals greedy decoding of the prompt extended by those ids. Asked once per row: the
    next end token ends it. Rows for which on_end says None end as before."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]
    free = decoding.greedy_ids(model.llm, embeds, mask, 12, eos)
    stop = eos + [free[0][1]]  # row 0's second token now ends it
    forced, asked = [7, 9], []

    def on_end(row, ids):
        asked.append((row, list(ids)))
        return forced if row == 0 else None

    with torch.no_grad():
        plain = decoding.greedy_ids(model.llm, embeds, mask, 12, stop)
        ours = decoding.greedy_ids(model.llm, embeds, mask, 12, stop, on_end)
        emb = causal_lm(model.llm).get_input_embeddings()
        head = torch.cat([torch.tensor(plain[0]), torch.tensor(forced)])
        longer = torch.cat([embeds[:1], emb(head)[None]], dim=1)
        longer_mask = torch.cat([mask[:1].long(), torch.ones(1, len(head), dtype=torch.long)], dim=1)
        rest = decoding.greedy_ids(model.llm, longer, longer_mask, 12 - len(head), stop)[0]
    assert plain[0] == free[0][:1] and (0, plain[0]) in asked
    assert ours[0] == plain[0] + forced + rest
    assert ours[1:] == plain[1:]  # on_end said None: they ended where they did
    assert len([a for a in asked if a[0] == 0]) == 1


def test_the_end_rule_in_hf_greedy_search_writes_what_greedy_ids_writes(model):
    """`EndRule`, `on_end` as a logits processor of HF `generate`: in greedy search it writes the same ids at the
    same step as `greedy_ids` does, and both report the same rows as written."""
    from transformers import LogitsProcessorList

    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]
    with torch.no_grad():
        free = decoding.greedy_ids(model.llm, embeds, mask, 12, eos)
        stop = eos + [free[0][1], free[2][0]]  # rows 0 and 2 now end early

        def on_end(row, ids):  # pure: row 0 must write 7 9 before it ends, the others may end
            return [7, 9] if row == 0 and [7, 9] not in [ids[i:i + 2] for i in range(len(ids))] else None

        ours_written, hf_written = set(), set()
        ours = decoding.greedy_ids(model.llm, embeds, mask, 12, stop, on_end, written=ours_written)
        rule = decoding.EndRule(on_end, stop, 1)
        config = decoding.generation_config(causal_lm(model.llm).generation_config, DecodingOptions(max_new_tokens=12),
                                            stop, model.tokenizer.pad_token_id)
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config,
                                 logits_processor=LogitsProcessorList([rule]))
    hf = [row[:next((k for k, t in enumerate(row) if t in stop), len(row))] for row in out.tolist()]
    hf_written = rule.written_rows(hf)
    assert ours == hf and ours[0][1:3] == [7, 9] and len(ours[0]) > 3 and len(ours[2]) == 0
    assert ours_written == hf_written == {0}


def test_the_end_rule_step_by_step():
    """`EndRule` on hand-made scores (2 rows x 2 beams, end token 0): a hypothesis whose best token ends it gets the
    first asked id as its only token (score 0), then the next; one that goes on by itself keeps its scores but may
    not end; a hypothesis on_end lets end (and its extensions, asked no more) is untouched; written_rows names the
    rows whose final outputs hold the written ids."""
    from llm_srt.model.decoding import EndRule

    asked = []

    def on_end(row, ids):
        asked.append((row, list(ids)))
        return [5, 6] if row == 0 and 5 not in ids else None

    rule = EndRule(on_end, [0], beams=2)
    scores = torch.tensor([[3.0, 1, 1, 1, 1, 1, 1], [1.0, 1, 3, 1, 1, 1, 1], [3.0, 1, 1, 1, 1, 1, 1],
                           [1.0, 1, 1, 3, 1, 1, 1]]).log_softmax(-1)
    out = rule(torch.tensor([[2], [3], [2], [4]]), scores.clone())
    assert out[0].argmax() == 5 and out[0, 5] == 0 and out[0].isinf().sum() == 6  # 5 written for it
    assert out[1, 0] == float("-inf") and torch.equal(out[1, 1:], scores[1, 1:])  # goes on, may not end
    assert torch.equal(out[2:], scores[2:])  # row 1: on_end lets it end
    out = rule(torch.tensor([[2, 5], [3, 2], [2, 1], [4, 4]]), scores.clone())
    assert out[0].argmax() == 6 and out[0].isinf().sum() == 6  # the rest of what was asked, not asked again
    assert torch.equal(out[2:], scores[2:]) and (1, [2, 1]) not in asked  # an extension of a free hypothesis
    assert rule.written_rows([[2, 5, 6, 1], [2]]) == {0} and rule.written_rows([[3, 2, 2], [2]]) == set()


def test_beam_search_writes_what_on_end_asks_and_no_hypothesis_ends_without_it(model, monkeypatch):
    """Beam search (the shared prompt cache) with `on_end`: row 0, whose beams would end early, has the ids written
    in its final output and is reported written; the rows on_end lets end decode as without it."""
    from llm_srt.model import speech_llm

    opts, need = DecodingOptions(max_new_tokens=10, beam_size=3), [7, 9]
    first = model.generate_ids(_batch(), opts)[0][0]
    monkeypatch.setattr(speech_llm, "eos_ids", lambda *a: [model.tokenizer.eos_token_id, first])  # row 0 ends at once

    def on_end(row, ids):
        return need if row == 0 and need not in [ids[i:i + 2] for i in range(len(ids))] else None

    plain = model.generate_ids(_batch(), opts)
    written = set()
    ruled = model.generate_ids(_batch(), opts, on_end=on_end, written=written)
    assert need not in [plain[0][i:i + 2] for i in range(len(plain[0]))]
    assert need in [ruled[0][i:i + 2] for i in range(len(ruled[0]))] and written == {0}
    assert ruled[1:] == plain[1:]


@pytest.mark.parametrize("penalty", [1.0, 1.5])
@pytest.mark.parametrize("beam", [1, 3])
def test_batched_equals_one_by_one(model, beam, penalty):
    """... with a repetition penalty too: HF's own skipped each row's first new tokens, as many as its left padding
    (its input ids are the new tokens alone), so a row's output depended on its batch-mates."""
    opts = DecodingOptions(max_new_tokens=12, beam_size=beam, length_penalty=1.0, repetition_penalty=penalty)
    batched = model.generate_ids(_batch(), opts)
    single = [model.generate_ids(dict(audio=[c], prompts=[p]), opts)[0] for c, p in zip(CLIPS, PROMPTS)]
    assert batched == single
    if penalty != 1.0:  # it penalizes (the test is not vacuous)
        plain = model.generate_ids(_batch(), replace(opts, repetition_penalty=1.0))
        assert batched != plain


def test_a_model_folders_generation_settings_change_neither_how_a_search_runs_nor_what_it_returns(tmp_path):
    """`generate` fills what our decoding leaves unset from the LLM folder's generation_config.json: a static cache
    clashed with the beams' shared prompt cache, return_dict_in_generate crashed, stop_strings asked for a
    tokenizer, max_time cut the beams short. Each is now the default; the folder's end ids still count."""
    from llm_srt.model.speech_llm import SpeechLLM

    torch.manual_seed(0)
    plain = tiny.speech_llm(tmp_path, init_std=0.3).eval()
    settings = Path(plain.config.llm) / "generation_config.json"
    said = json.loads(settings.read_text())
    settings.write_text(json.dumps({**said, "cache_implementation": "static", "return_dict_in_generate": True,
                                    "output_scores": True, "stop_strings": ["a"], "max_time": 1e-9}))
    odd = SpeechLLM(plain.config).eval()
    odd.adapter.load_state_dict(plain.adapter.state_dict())
    for beam in (1, 3):
        opts = DecodingOptions(max_new_tokens=8, beam_size=beam)
        want = plain.generate_ids(_batch(), opts)
        assert odd.generate_ids(_batch(), opts) == want and any(len(r) == 8 for r in want), beam


def test_beam_search_shares_the_prompt_cache_and_finds_the_same_hypotheses(model):
    """The prompt runs once per row (not once per beam): the beams' first generate step sees one position only,
    and the hypotheses equal HF's own beam search over fully expanded prompts, token for token."""
    from llm_srt.model.llm import causal_lm

    seen = []
    hook = causal_lm(model.llm).register_forward_hook(
        lambda m, a, kw, out: seen.append(tuple(kw["inputs_embeds"].shape[:2])) if kw.get("inputs_embeds") is not None
        else None, with_kwargs=True)
    shared = DecodingOptions(max_new_tokens=8, beam_size=3)
    try:
        with torch.no_grad():
            ids = model.generate_ids(_batch(), shared)
            full_seen = len(seen)
            ref = model.generate_ids(_batch(), DecodingOptions(max_new_tokens=8, beam_size=3,
                                                              share_prompt_cache=False))
    finally:
        hook.remove()
    assert ids == ref and any(len(r) > 2 for r in ids)
    assert seen[:full_seen] == [(9, 1)]  # 3 rows x 3 beams, one new position on the shared cache
    assert seen[full_seen][0] == 9 and seen[full_seen][1] > 1  # unshared: the whole prompt per beam


@pytest.mark.parametrize("n", [1, 2])
def test_greedy_with_ngram_blocking_runs_its_own_loop_and_equals_hf_generate(model, n):
    """`--no-repeat-ngram` greedy runs `greedy_ids` (finished rows leave the batch, SRT tags can be written), with
    every row's tokens those of HF greedy search with no_repeat_ngram_size over the whole batch; the blocking
    changes what is written (the test is not vacuous)."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]
    calls = []
    real = decoding.greedy_ids
    with torch.no_grad():
        free = real(model.llm, embeds, mask, 40, eos)
        blocked = decoding.generate_ids(model.llm, embeds, mask, DecodingOptions(max_new_tokens=40,
                                        no_repeat_ngram_size=n), eos, model.tokenizer.pad_token_id)
        config = decoding.generation_config(causal_lm(model.llm).generation_config,
                                            DecodingOptions(max_new_tokens=40, no_repeat_ngram_size=n), eos,
                                            model.tokenizer.pad_token_id)
        hf = model.llm.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config)
    expected = [[t for t in row[:next((k for k, t in enumerate(row) if t in eos), len(row))]] for row in hf.tolist()]
    assert blocked == expected
    assert blocked != free
    for row in blocked:
        grams = [tuple(row[i:i + n]) for i in range(len(row) - n + 1)]
        assert len(grams) == len(set(grams))


def test_ngram_blocking_keeps_the_forced_srt_tags(model, monkeypatch):
    """Greedy with n-gram blocking goes through `greedy_ids`, so `on_end` (SRT's forced language tags) still
    applies: a row that would end early gets its ids written and goes on, and no n-gram of its output repeats."""
    from llm_srt.model import decoding

    seen = []
    real = decoding.greedy_ids
    monkeypatch.setattr(decoding, "greedy_ids", lambda *a, **k: seen.append(k) or real(*a, **k))
    embeds, mask = _prompt_embeds(model)
    with torch.no_grad():
        free = real(model.llm, embeds, mask, 10, [model.tokenizer.eos_token_id], no_repeat_ngram=2)
        stop = [model.tokenizer.eos_token_id, free[0][1]]  # row 0's second token now ends it
        forced = [7, 9]
        ids = decoding.generate_ids(model.llm, embeds, mask, DecodingOptions(max_new_tokens=10,
                                    no_repeat_ngram_size=2), stop, model.tokenizer.pad_token_id,
                                    on_end=lambda row, ids: forced if row == 0 else None)
    assert seen and seen[0]["no_repeat_ngram"] == 2  # not HF generate
    assert ids[0][:3] == [free[0][0], *forced] and len(ids[0]) > 3
    grams = list(zip(ids[0], ids[0][1:]))
    assert len(grams) == len(set(grams))


def test_repeated_ngram_ends():
    from llm_srt.model.decoding import repeated_ngram_ends

    assert repeated_ngram_ends([5, 6, 5], 2) == [6]  # 5 6 was written: 6 may not follow 5 again
    assert repeated_ngram_ends([5, 6, 5, 7, 5], 2) == [6, 7]
    assert repeated_ngram_ends([5, 6, 5, 6], 3) == [5]  # 5 6 5 was written: 5 may not follow 5 6 again
    assert repeated_ngram_ends([1, 2, 3], 1) == [1, 2, 3] and repeated_ngram_ends([], 1) == []
    assert repeated_ngram_ends([1, 2], 3) == [] and repeated_ngram_ends([4], 3) == []


def test_no_repeat_ngram_blocks_repeats(model):
    ids = model.generate_ids(_batch(), DecodingOptions(max_new_tokens=16, no_repeat_ngram_size=2))
    for row in ids:
        grams = list(zip(row, row[1:]))
        assert len(grams) == len(set(grams))


def test_save_load_round_trip_with_lora(tmp_path):
    torch.manual_seed(1)
    lora = LoraOptions(r=4, alpha=8, dropout=0.0)
    model = tiny.speech_llm(tmp_path / "m", lora=lora, trainable=("adapter", "lora"), init_std=0.3)
    assert model.parameter_counts()["lora"] > 0
    with torch.no_grad():  # make LoRA non-zero so that its loading is checked
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    ref_loss = model(_batch())["loss"]
    ref_out = model.generate(_batch(), DecodingOptions(max_new_tokens=6))
    folder = model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(folder)  # overwriting an existing checkpoint is fine
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "config.json", "lora.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["adapter"] == "qformer" and meta["lora"]["r"] == 4 and meta["llm_dim"] == 48
    loaded = SpeechLLM.from_pretrained(folder).eval()
    assert torch.equal(loaded(_batch())["loss"], ref_loss)
    assert loaded.generate(_batch(), DecodingOptions(max_new_tokens=6)) == ref_out
    assert set(loaded.config.trainable) == {"adapter", "lora"}


def _lora_model(tmp_path) -> SpeechLLM:
    """A tiny speech LLM with a LoRA that changes its outputs (lora_B not zero), in eval mode."""
    torch.manual_seed(1)
    model = tiny.speech_llm(tmp_path / "m", lora=LoraOptions(r=4, alpha=8, dropout=0.0),
                            trainable=("adapter", "lora"), init_std=0.3)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def test_a_lora_of_another_shape_is_a_one_line_error_and_added_targets_start_afresh(tmp_path):
    """A curriculum's next stage started from a folder trained with model.lora {r: 4} but given {r: 8} got peft's
    many-line RuntimeError (after days of earlier stages); more target_modules than the folder's loaded its q and v
    and started k and o afresh without a word. Weights the model has no LoRA layer for are refused (as before)."""
    from llm_srt.model.llm import load_lora_state

    folder = _lora_model(tmp_path).save_pretrained(tmp_path / "ckpt")
    file = folder / "lora.safetensors"
    with pytest.raises(LLMSRTError) as err:
        SpeechLLM.from_pretrained(folder, lora=LoraOptions(r=8, alpha=8, dropout=0.0))
    said = str(err.value)
    assert said.startswith(f"{file}: LoRA weight base_model.model.") and "\n" not in said
    assert "has shape (4, 48) (rank 4), this model's (8, 48) (rank 8); set model.lora as the folder's" in said
    assert said.endswith("(r: 4) to go on training it, or start LoRA afresh from a copy of the folder without "
                         "lora.safetensors")
    every = LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    with pytest.warns(UserWarning) as caught:
        model = SpeechLLM.from_pretrained(folder, lora=every)
    assert [str(w.message) for w in caught if "LoRA" in str(w.message)] == [
        f"{file}: holds no LoRA weights for 4 of this model's 8 LoRA layers (k_proj, o_proj, e.g. "
        "base_model.model.model.layers.0.self_attn.k_proj): they start afresh, the others load from it"]
    saved, loaded = SpeechLLM.from_pretrained(folder).llm.state_dict(), model.llm.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if "lora_" in k)
    with pytest.raises(LLMSRTError, match=r"lora.safetensors: LoRA weights do not match the LLM \(e\.g\. .*v_proj"):
        SpeechLLM.from_pretrained(folder, lora=LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=("q_proj",)))
    state = {k.replace(".default", ""): v for k, v in saved.items() if "lora_" in k}
    key = next(k for k in state if "lora_B" in k)
    with pytest.raises(LLMSRTError, match=r"^lora.st: .* has shape \(49, 4\) \(rank 4\), this model's \(48, 4\) "
                                          r"\(rank 4\): the LLM's layer is another size; give the LLM the LoRA"):
        load_lora_state(model.llm, {**state, key: torch.zeros(49, 4)}, "lora.st")


def test_lora_merged_for_inference(tmp_path, monkeypatch, caplog):
    """`from_pretrained(merge_lora=True)` (what translate, evaluate and serve load): the folder's LoRA folded into the
    LLM's weights, no LoRA layer left to run, the same loss and greedy output in float32; such a model refuses to
    be saved. int8 keeps its LoRA apart (float, beside the int8 layers), as without merge_lora."""
    from llm_srt import device
    from llm_srt.model.systems import load_system

    model = _lora_model(tmp_path)
    options = DecodingOptions(max_new_tokens=6)
    ref_loss, ref_out = model(_batch())["loss"], model.generate(_batch(), options)
    folder = model.save_pretrained(tmp_path / "ckpt")
    llm_files = {f: f.read_bytes() for f in Path(model.config.llm).iterdir() if f.is_file()}
    with caplog.at_level("INFO", logger="llm_srt.model.speech_llm"):
        merged = SpeechLLM.from_pretrained(folder, merge_lora=True).eval()
    assert f"LoRA r={model.config.lora.r} merged into the LLM" in caplog.text  # (it said "lora 0.00M", read as none)
    assert {f: f.read_bytes() for f in llm_files} == llm_files  # merged in memory, never into the LLM's files
    assert merged.lora_merged and not [n for n, _ in merged.llm.named_modules() if "lora_" in n]
    assert torch.allclose(merged(_batch())["loss"], ref_loss, rtol=1e-5)
    assert merged.generate(_batch(), options) == ref_out
    with pytest.raises(LLMSRTError, match="merged"):
        merged.save_pretrained(tmp_path / "again")
    with pytest.raises(LLMSRTError, match=r"holds a LoRA, and this model's LoRA is merged"):  # (it was skipped,
        merged.load_trainable(folder)  # the merged one kept, without a word)
    from llm_srt.model import speech_llm

    reads, read = [], speech_llm._load_weights
    monkeypatch.setattr(speech_llm, "_load_weights", lambda path: (reads.append(path.name), read(path))[1])
    int8 = SpeechLLM.from_pretrained(folder, dtype="int8", merge_lora=True).eval()
    assert not int8.lora_merged and [n for n, _ in int8.llm.named_modules() if "lora_" in n]
    assert reads.count("lora.safetensors") == 1  # merging declined: the LoRA read once, then kept apart
    apart = SpeechLLM.from_pretrained(folder, dtype="int8").eval()
    assert int8.generate(_batch(), options) == apart.generate(_batch(), options)
    system = load_system(str(folder), device.resolve("cpu", "float32"))
    assert system.model.lora_merged


def test_checkpoint_errors(tmp_path):
    model = tiny.speech_llm(tmp_path / "m")
    folder = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(LLMSRTError, match="nothing: no such folder"):
        SpeechLLM.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMSRTError, match="no config.json"):
        SpeechLLM.from_pretrained(tmp_path / "empty")
    other_llm = tiny.llm_dir(tmp_path / "wide", hidden=64)
    with pytest.raises(LLMSRTError, match="llm_dim=48"):
        SpeechLLM.from_pretrained(folder, llm=str(other_llm))
    (folder / "adapter.safetensors").unlink()
    with pytest.raises(LLMSRTError, match="adapter.safetensors is missing"):
        SpeechLLM.from_pretrained(folder)
    with pytest.raises(ConfigError, match="no LoRA"):
        tiny.speech_llm(tmp_path / "x", trainable=("adapter", "lora"))
    meta = json.loads((folder / "config.json").read_text())  # a LoRA option this version does not know: one line
    (folder / "config.json").write_text(json.dumps({**meta, "lora": {"r": 4, "use_dora": False}}))
    with pytest.raises(LLMSRTError, match=r"config.json: unknown lora option 'use_dora' \(this llm-srt knows r, "):
        SpeechLLM.from_pretrained(folder)  # (a TypeError traceback)
    for bad in ({"num_heads": 7}, {"dropout": 2.0}):  # out-of-range adapter options (torch's errors, tracebacks)
        (folder / "config.json").write_text(json.dumps({**meta, "adapter_kwargs": {**meta["adapter_kwargs"], **bad}}))
        with pytest.raises(LLMSRTError, match=rf"config.json: adapter '{meta['adapter']}': bad options .*"):
            SpeechLLM.from_pretrained(folder)


def test_loading_with_other_frozen_weights_of_the_same_shape_says_so(tmp_path):
    """A folder records its frozen models' `weights_identity`: loaded with another LLM of the same shape (llm_dim
    cannot tell), a warning names it; a byte-for-byte copy elsewhere loads quietly; a random-weight model records
    nothing."""
    import shutil

    model = tiny.speech_llm(tmp_path / "m")
    folder = model.save_pretrained(tmp_path / "ckpt")
    assert set(json.loads((folder / "config.json").read_text())["frozen_weights"]) == {"encoder", "llm"}
    copy = shutil.copytree(model.config.llm, tmp_path / "elsewhere" / "llm")
    with warnings.catch_warnings(record=True) as caught:
        SpeechLLM.from_pretrained(folder, llm=str(copy))
        assert not [w for w in caught if "trained with other" in str(w.message)]
        other = tiny.llm_dir(tmp_path / "other", seed=1)
        SpeechLLM.from_pretrained(folder, llm=str(other))
    assert [str(w.message) for w in caught if "trained with other" in str(w.message)] == [
        f"{folder}: trained with other llm weight files than {other} holds (another model "
        "of the same shape, or the same one in another format); give the llm it was trained with (--llm of translate "
        "and serve, --model-llm of evaluate; model.llm in a training config), or its outputs are not the trained "
        "model's"]
    random = SpeechLLM(model.config, weights=False).save_pretrained(tmp_path / "random")
    assert json.loads((random / "config.json").read_text())["frozen_weights"] == {"encoder": None, "llm": None}

def test_overfit_four_utterances(tmp_path):
    """Adapter-only training makes a frozen tiny LLM say four exact transcripts from four clips."""
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path, init_std=0.2, adapter_kwargs=dict(num_queries=8, hidden_size=32, num_layers=1,
                                                                        num_heads=4, intermediate_size=64))
    texts = ["red fox", "blue sky", "green tea", "gold ring"]
    clips = [tiny.tone(1.0 + 0.2 * i, f, seed=i) for i, f in enumerate([200, 400, 800, 1600])]
    h, mask = model.encoder.encode(clips)
    batch = dict(features=h, feature_mask=mask, prompts=["<|eng|>"] * 4, targets=texts)
    optim = torch.optim.AdamW(model.trainable_parameters(), lr=5e-3)
    start, outputs = time.time(), []
    for step in range(1, 401):
        model.train()
        loss = model(batch)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % 25 == 0:
            outputs = model.eval().generate(batch, DecodingOptions(max_new_tokens=12))
            if outputs == texts:
                break
    assert outputs == texts, f"after {step} steps (loss {loss.item():.3f}): {outputs}"
    print(f"overfit: exact after {step} steps, {time.time() - start:.1f} s")  # ~150 steps, ~5 s on 2 idle cores


@pytest.mark.integration
@pytest.mark.long(20)
def test_embedded_speech_llm_forward_backward_and_generate(embedded, speak):
    """Whisper base encoder + paper Q-Former + Gemma-3-270M: a training step at batch 2 and a greedy decode (a step
    at batch 4, timed twice, took 40-80 s of make test; the tiny models' tests cover the batch shapes)."""
    from llm_srt import prompts
    from llm_srt.model.speech_llm import SpeechLLMConfig

    model = SpeechLLM(SpeechLLMConfig(encoder=str(embedded.whisper), llm=str(embedded.llm)))
    assert (model.encoder_dim, model.llm_dim) == (512, 640)
    assert model.adapter.query.shape == (1, 80, 768)
    clip = speak("Will it rain tomorrow?")
    prompt, target = prompts.build("asr", "eng", transcript="Will it rain tomorrow?")
    h, mask = model.encoder.encode([clip] * 2)
    batch = dict(features=h, feature_mask=mask, prompts=[prompt] * 2, targets=[target] * 2)
    model.train()
    start = time.perf_counter()
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["n_tokens"] > 2 * 4
    assert model.adapter.query.grad is not None and torch.isfinite(model.adapter.query.grad).all()
    print(f"embedded forward+backward, batch 2: {time.perf_counter() - start:.2f} s")
    model.eval()
    texts = model.generate(dict(audio=[clip], prompts=[prompt]), DecodingOptions(max_new_tokens=4))
    assert len(texts) == 1 and isinstance(texts[0], str)


def _greedy_on_end_in(folder, device: str, dtype: str):
    """The forced-ids bookkeeping on `device` in `dtype`: greedy, the written ids follow the row's own tokens; beam
    search, they are in the row's output and the row is reported written."""
    from llm_srt.model import decoding
    from llm_srt.model.speech_llm import SpeechLLM

    gpu = SpeechLLM.from_pretrained(folder, device=device, dtype=dtype).eval()
    embeds, mask = _prompt_embeds(gpu)
    eos = [gpu.tokenizer.eos_token_id]
    with torch.no_grad():
        free = decoding.greedy_ids(gpu.llm, embeds, mask, 12, eos)
        stop = eos + [free[0][1]]
        plain = decoding.greedy_ids(gpu.llm, embeds, mask, 12, stop)
        ours = decoding.greedy_ids(gpu.llm, embeds, mask, 12, stop, lambda row, ids: [7, 9] if row == 0 else None)
        beam = DecodingOptions(max_new_tokens=12, beam_size=3)  # beam search: `EndRule` on this device's scores
        pad = gpu.tokenizer.pad_token_id
        first = decoding.generate_ids(gpu.llm, embeds, mask, beam, eos, pad)[0][0]
        written = set()
        beams = decoding.generate_ids(gpu.llm, embeds, mask, beam, eos + [first], pad, written=written,
                                      on_end=lambda row, ids: [7, 9] if row == 0 and [7, 9] not in
                                      [ids[i:i + 2] for i in range(len(ids))] else None)
    assert ours[0][:len(plain[0]) + 2] == plain[0] + [7, 9] and ours[1:] == plain[1:]
    assert [7, 9] in [beams[0][i:i + 2] for i in range(len(beams[0]))] and written == {0}


def test_greedy_on_end_in_bfloat16_on_the_cpu(tmp_path):
    _greedy_on_end_in(tiny.speech_llm_folder(tmp_path), "cpu", "bfloat16")


def test_greedy_on_end_in_float16_on_the_cpu(tmp_path):
    """float16, what auto takes for inference on GPUs that emulate bfloat16 (V100, T4): the same decoding path."""
    _greedy_on_end_in(tiny.speech_llm_folder(tmp_path), "cpu", "float16")


@pytest.mark.cuda
def test_greedy_on_end_on_cuda_in_bfloat16(tmp_path):
    _greedy_on_end_in(tiny.speech_llm_folder(tmp_path), "cuda", "bfloat16")


def _lora_merged_in(tmp_path, device: str):
    """On `device`: float32 merges LoRA (no LoRA layer left, the loss of the LoRA kept apart, greedy decoding runs);
    bfloat16 keeps it apart (merged, W + B A would be rounded to bfloat16), computing what a plain load does."""
    folder = _lora_model(tmp_path).save_pretrained(tmp_path / "ckpt")
    merged = SpeechLLM.from_pretrained(folder, device=device, dtype="float32", merge_lora=True).eval()
    apart = SpeechLLM.from_pretrained(folder, device=device, dtype="float32").eval()
    assert merged.lora_merged and not [n for n, _ in merged.llm.named_modules() if "lora_" in n]
    with torch.no_grad():
        assert torch.allclose(merged(_batch())["loss"], apart(_batch())["loss"], rtol=1e-4)
    assert len(merged.generate(_batch(), DecodingOptions(max_new_tokens=6))) == len(PROMPTS)
    bf16 = SpeechLLM.from_pretrained(folder, device=device, dtype="bfloat16", merge_lora=True).eval()
    plain = SpeechLLM.from_pretrained(folder, device=device, dtype="bfloat16").eval()
    assert not bf16.lora_merged and [n for n, _ in bf16.llm.named_modules() if "lora_" in n]
    with torch.no_grad():
        assert torch.equal(bf16(_batch())["loss"], plain(_batch())["loss"])


def test_lora_merged_in_float32_kept_apart_in_bfloat16_on_the_cpu(tmp_path):
    _lora_merged_in(tmp_path, "cpu")


@pytest.mark.cuda
def test_lora_merged_in_float32_kept_apart_in_bfloat16_on_cuda(tmp_path):
    _lora_merged_in(tmp_path, "cuda")


@pytest.mark.parametrize("tied", [False, True])
def test_a_lora_on_the_head_saves_its_lora_weights_alone_and_loads_in_any_dtype(tmp_path, tied):
    """peft's "auto" saved a LoRA-targeted head's frozen weight beside the LoRA: loading wrote it over the LLM's own
    (a bf16-trained one rounded the float32 head, and with a tied head the embeddings), and int8 (no such weight)
    refused the folder. Now only LoRA weights are saved, and an older folder's head weight is not loaded. A loaded
    model is in eval mode, as transformers' are: the adapter's dropout does not draw in its decoding."""
    from safetensors import safe_open

    from llm_srt.model.llm import causal_lm

    llm = tiny.llm_dir(tmp_path, tied=tied, init_std=0.3)
    config = SpeechLLMConfig(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(llm), adapter="linear",
                             dtype="bfloat16", lora=LoraOptions(r=4, target_modules=("q_proj", "lm_head")),
                             trainable=("adapter", "lora"))
    folder = SpeechLLM(config).save_pretrained(tmp_path / "model")
    with safe_open(folder / "lora.safetensors", "pt") as f:
        saved = dict.fromkeys(f.keys())
        assert saved and all("lora_" in k for k in saved), saved
    plain = causal_lm(SpeechLLM(replace(config, dtype="float32", lora=None, trainable=("adapter",))).llm)

    def check(folder):
        loaded = SpeechLLM.from_pretrained(folder, dtype="float32")
        assert not loaded.training and not loaded.adapter.training
        lm = causal_lm(loaded.llm)
        assert torch.equal(lm.get_output_embeddings().base_layer.weight, plain.get_output_embeddings().weight)
        assert torch.equal(lm.get_input_embeddings().weight, plain.get_input_embeddings().weight)
        assert SpeechLLM.from_pretrained(folder, dtype="int8").generate(_batch(), DecodingOptions(max_new_tokens=3))

    check(folder)
    from safetensors.torch import load_file, save_file

    older = load_file(folder / "lora.safetensors")  # as written before: the bf16 head beside the LoRA
    older["base_model.model.lm_head.base_layer.weight"] = plain.get_output_embeddings().weight.bfloat16()
    save_file(older, folder / "lora.safetensors")
    check(folder)


def test_lora_on_a_tied_head_is_never_merged(tmp_path):
    """A LoRA on the head of an LLM whose head is its input embedding table stays apart (merged, the embeddings
    would change too); one on the attention of the same LLM merges."""
    from peft import get_peft_model_state_dict

    from llm_srt.model.llm import load_llm, load_lora_state

    folder = tiny.llm_dir(tmp_path / "tied", tied=True)
    for targets, merges in ((("lm_head", "q_proj"), False), (("q_proj", "v_proj"), True)):
        lora = LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=targets)
        torch.manual_seed(0)
        trained, _ = load_llm(folder, lora=lora)
        with torch.no_grad():
            for name, p in trained.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        state = get_peft_model_state_dict(trained)
        llm, _ = load_llm(folder, lora=lora, merged_lora=(state, "lora.safetensors"))
        assert (not [n for n, _ in llm.named_parameters() if "lora_" in n]) == merges
        assert torch.equal(llm.get_input_embeddings().weight, load_llm(folder)[0].get_input_embeddings().weight)
        if not merges:  # kept apart: its weights are the caller's to load, as SpeechLLM.load_trainable does
            load_lora_state(llm, state, "lora.safetensors")
        ids = torch.tensor([[5, 9, 13, 7]])
        with torch.no_grad():
            assert torch.allclose(llm(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)


def _compiled_against_eager(model, embeds, mask):
    """Greedy tokens eager and compiled (`DecodingOptions.compile`) with rows ending at different steps, `on_end`
    writing ids for one row, and n-gram blocking; the compiled steps really ran."""
    from llm_srt.model import decoding

    eos = [model.tokenizer.eos_token_id]
    free = decoding.greedy_ids(model.llm, embeds, mask, 12, eos)
    stop = eos + [free[0][1]]  # row 0 ends at its second token
    runs = []
    for kwargs in ({}, {"on_end": lambda row, ids: [7, 9] if row == 0 else None}, {"no_repeat_ngram": 2}):
        with torch.no_grad():
            eager = decoding.greedy_ids(model.llm, embeds, mask, 12, stop, **kwargs)
            before = static_steps.StaticSteps.steps_taken
            compiled = decoding.greedy_ids(model.llm, embeds, mask, 12, stop, compiled=True, **kwargs)
        assert static_steps.StaticSteps.steps_taken > before  # not the eager fallback
        runs.append((eager, compiled))
    return runs


@pytest.mark.long(16)
def test_compiled_greedy_writes_what_eager_greedy_writes(model):
    """The decode steps compiled on a static cache (a batch of 3 filled to 4 with copies of row 0; finished rows stay
    in it) give eager greedy's tokens; a second call of the same shape compiles nothing new and reuses its cache."""
    from torch._dynamo.utils import counters

    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    embeds, mask = _prompt_embeds(model)
    assert embeds.shape[0] == 3
    runs = _compiled_against_eager(model, embeds, mask)
    for eager, compiled in runs:
        assert compiled == eager
    assert len({len(r) for r in runs[0][0]}) > 1 and runs[1][0][0][1:3] == [7, 9]  # rows ended apart; ids written
    graphs, before = counters["stats"]["unique_graphs"], static_steps.StaticSteps.steps_taken
    with torch.no_grad():
        decoding.greedy_ids(model.llm, embeds, mask, 12, [model.tokenizer.eos_token_id], compiled=True)
    assert counters["stats"]["unique_graphs"] == graphs
    (cache,) = static_steps.StaticSteps._caches[causal_lm(model.llm)].values()
    # the mask column each step opens is where HF's StaticLayer wrote: its own fill counter
    assert int(cache.layers[0].cumulative_length) == embeds.shape[1] + static_steps.StaticSteps.steps_taken - before
    batch = _batch()  # and through the model's own generation, as translate / evaluate / serve call it
    assert model.generate_ids(batch, DecodingOptions(max_new_tokens=8, compile=True)) == \
        model.generate_ids(batch, DecodingOptions(max_new_tokens=8))


def test_a_static_cache_made_in_inference_mode_is_not_reused_outside_it(model, monkeypatch):
    """The store keeps a static cache per mode: one made in inference mode holds inference tensors, which the
    `reset` of a later generation of the same shape under no_grad (`generate_ids`' own) could not write ("Inplace
    update to inference tensor outside InferenceMode"). The step runs eager here (the store is what is tested)."""
    from llm_srt.model import decoding

    monkeypatch.setattr(static_steps.StaticSteps, "_compiled", classmethod(lambda cls, mode: static_steps._decode_step))
    batch = dict(audio=CLIPS, prompts=PROMPTS)
    eager = model.generate_ids(batch, DecodingOptions(max_new_tokens=5))
    compiled = DecodingOptions(max_new_tokens=5, compile=True)
    before = static_steps.StaticSteps.steps_taken
    with torch.inference_mode():
        assert model.generate_ids(batch, compiled) == eager
    assert model.generate_ids(batch, compiled) == eager
    with torch.inference_mode():
        assert model.generate_ids(batch, compiled) == eager
    assert static_steps.StaticSteps.steps_taken > before  # the static steps ran


def test_on_a_gpu_the_last_compiled_step_is_timed_once_done(model, monkeypatch):
    """A GPU's step returns once queued (a CUDA graph's replay): `last_step_at` (what the benchmarks' decode time
    ends at) is taken after one synchronize per generation, at `close`, not after every step. Here on the CPU, the
    steps eager, told they were queued, with torch.cuda.synchronize recorded."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    monkeypatch.setattr(static_steps.StaticSteps, "_compiled", classmethod(lambda cls, mode: static_steps._decode_step))
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append((device, time.perf_counter())))
    embeds, mask = _prompt_embeds(model)
    with torch.no_grad():
        steps = static_steps.StaticSteps(causal_lm(model.llm), embeds, mask, 6)
        steps.queued = True
        before = static_steps.StaticSteps.steps_taken
        decoding._greedy_loop(steps, 3, 6, [model.tokenizer.eos_token_id], None, 0, None)
        assert static_steps.StaticSteps.steps_taken > before and not synced  # no synchronize per step
        steps.close()
    [(device, at)] = synced
    assert device == embeds.device and static_steps.StaticSteps.last_step_at >= at


def test_compiled_greedy_falls_back_where_a_static_cache_would_change_the_model():
    """Static steps only where a static cache computes what the model's own cache does: full attention, or sliding
    windows no shorter than the cache; other attention kinds decode eagerly."""
    from transformers import Qwen2Config

    from llm_srt.model.kv_cache import static_fits, static_length

    full = Qwen2Config(num_hidden_layers=2)
    sliding = Qwen2Config(num_hidden_layers=2, use_sliding_window=True, sliding_window=256, max_window_layers=0)
    assert static_fits(full, 4096) and set(sliding.layer_types) == {"sliding_attention"}
    assert static_fits(sliding, static_length(200)) and not static_fits(sliding, static_length(300))
    other = Qwen2Config(num_hidden_layers=2)
    other.layer_types = ["full_attention", "linear_attention"]
    assert not static_fits(other, 256)
    assert static_length(1) == static_length(256) == 256 and static_length(257) == 512


@pytest.mark.long(15)
def test_compiled_int8_greedy_compiles_at_one_row_with_one_product_per_fused_group(tmp_path, monkeypatch):
    """--dtype int8 with --compile: a one-row batch's decode steps run compiled (fbgemm's product the opaque op
    llm_srt::int8_product), each fused q/k/v and gate/up group computes one product a step (not one per part), the
    embedding lookup runs outside the compiled step (its hooks with it: a mapped table's pages are let go after
    each), and the tokens are int8 eager greedy's; batches of more rows decode eagerly (slower compiled here)."""
    import warnings

    from torch._dynamo.utils import counters

    from llm_srt.model import decoding, int8_linear
    from llm_srt.model.int8_linear import Int8Part
    from llm_srt.model.llm import causal_lm
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(0)
    llm = tiny.llm_dir(tmp_path, "qwen2", 48, init_std=0.3)
    model = SpeechLLM(SpeechLLMConfig(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(llm), adapter="linear",
                                      dtype="int8")).eval()
    lm = causal_lm(model.llm)
    assert any(isinstance(m, Int8Part) for m in lm.modules())
    assert any(isinstance(m, int8_linear.Int8Linear) and m.bias is not None for m in lm.modules())  # Qwen2's q/k/v
    batch, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]
    assert static_steps.StaticSteps.fits(lm, 1, 40) and not static_steps.StaticSteps.fits(lm, 2, 40)
    lookups = []
    lm.get_input_embeddings().register_forward_hook(lambda *_: lookups.append(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a step that does not compile warns
        for row in range(batch.shape[0]):
            embeds, one = batch[row:row + 1], mask[row:row + 1]
            eager = decoding.greedy_ids(model.llm, embeds, one, 10, eos)
            before, lookups[:] = static_steps.StaticSteps.steps_taken, []
            compiled = decoding.greedy_ids(model.llm, embeds, one, 10, eos, compiled=True)
            steps = static_steps.StaticSteps.steps_taken - before
            assert compiled == eager and steps > 0 and len(lookups) == steps
        graphs = counters["stats"]["unique_graphs"]
        assert decoding.greedy_ids(model.llm, embeds, one, 10, eos, compiled=True) == eager
        assert counters["stats"]["unique_graphs"] == graphs  # every step ran the one graph: nothing recompiled
        before = static_steps.StaticSteps.steps_taken
        assert decoding.greedy_ids(model.llm, batch, mask, 10, eos, compiled=True) == \
            decoding.greedy_ids(model.llm, batch, mask, 10, eos)
        assert static_steps.StaticSteps.steps_taken == before  # three rows: eager
        calls = []
        real = int8_linear._QDQ_LINEAR
        monkeypatch.setattr(int8_linear, "_QDQ_LINEAR", lambda *a: calls.append(1) or real(*a))
        run = static_steps.StaticSteps(lm, embeds, one, 10)
        calls.clear()
        run.step(torch.zeros(1, dtype=torch.long))
        run.close()
    assert len(calls) == 4 * lm.config.num_hidden_layers + 1  # q/k/v, o, gate/up, down a layer; the head


def test_compiled_int8_layers_compute_the_eager_layers_numbers():
    """The compiled form of an int8 layer (its row scaling compiled, the product, its scaling back and the bias in
    the opaque op) gives the eager layer's outputs bit for bit, with a bias and without."""
    from llm_srt.model.int8_linear import Int8Linear

    torch.manual_seed(0)
    for bias in (True, False):
        layer = Int8Linear.from_linear(torch.nn.Linear(64, 96, bias=bias))
        x = torch.randn(3, 64) * 3
        with torch.no_grad():
            assert torch.equal(torch.compile(layer, fullgraph=True)(x), layer(x))


@pytest.mark.integration
@pytest.mark.slow  # a 6-layer Gemma-3 compile (67 s cold); the tiny model's compiled greedy is in make test
@pytest.mark.long(41)
def test_compiled_greedy_on_the_embedded_gemma_with_its_sliding_window_layers(embedded):
    """Gemma-3's sliding-window layers on a static cache shorter than their window: the embedded LLM's greedy
    tokens compiled equal its eager ones. Its first 6 of 18 layers (5 sliding-window, 1 global: the pattern once),
    so the compile takes a third of the time."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm, load_llm

    llm, tok = load_llm(embedded.llm)
    body, config = causal_lm(llm).model, llm.config
    config.num_hidden_layers, config.layer_types = 6, config.layer_types[:6]
    body.layers = body.layers[:6]
    assert set(config.layer_types) == {"sliding_attention", "full_attention"}
    enc = tok(["Translate into German: The cat sits on the mat.", "The capital of France is", "One, two, three,"],
              return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        embeds = llm.get_input_embeddings()(enc.input_ids)
        eos = decoding.eos_ids(llm, tok)
        eager = decoding.greedy_ids(llm, embeds, enc.attention_mask, 16, eos)
        before = static_steps.StaticSteps.steps_taken
        compiled = decoding.greedy_ids(llm, embeds, enc.attention_mask, 16, eos, compiled=True)
    assert compiled == eager and sum(map(len, eager)) > 16
    assert static_steps.StaticSteps.steps_taken > before  # compiled, not the eager fallback


@pytest.mark.cuda
def test_compiled_greedy_on_cuda_replays_cuda_graphs_and_writes_eager_tokens(tmp_path):
    """On a GPU the compiled steps replay as CUDA graphs (mode reduce-overhead); float32 tokens equal eager's."""
    from torch._dynamo.utils import counters

    model = tiny.speech_llm(tmp_path, init_std=0.3).to("cuda").eval()
    embeds, mask = _prompt_embeds(model)
    skips = counters["inductor"]["cudagraph_skips"]
    for eager, compiled in _compiled_against_eager(model, embeds, mask):
        assert compiled == eager
    assert counters["inductor"]["cudagraph_skips"] == skips  # every compiled step ran as a CUDA graph


def test_a_step_that_does_not_compile_decodes_eagerly_with_a_warning(tmp_path, monkeypatch):
    """Where torch cannot compile a model's step (a graph break, a backend failure), `--compile` warns once and that
    model decodes eagerly from then on: the same tokens, never a failed batch."""
    from torch._dynamo.exc import Unsupported

    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    model = tiny.speech_llm(tmp_path, init_std=0.3).eval()
    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]

    def broken(mode):
        def step(*args):
            raise Unsupported("a graph break")
        return step

    monkeypatch.setattr(static_steps.StaticSteps, "_compiled", staticmethod(broken))
    with torch.no_grad():
        eager = decoding.greedy_ids(model.llm, embeds, mask, 8, eos)
        with pytest.warns(RuntimeWarning, match="does not compile .*a graph break"):
            assert decoding.greedy_ids(model.llm, embeds, mask, 8, eos, compiled=True) == eager
        assert not static_steps.StaticSteps.fits(causal_lm(model.llm), 3, 20)
        assert decoding.greedy_ids(model.llm, embeds, mask, 8, eos, compiled=True) == eager  # no second warning


def test_running_out_of_gpu_memory_while_compiling_is_the_batchs_error_not_a_refusal(tmp_path, monkeypatch):
    """Torch wraps what its compiler backend raises in BackendCompilerFailed: an out-of-memory error while inductor
    tunes kernels or a CUDA graph records is raised as itself (the batch is retried in halves, the static caches
    dropped) and the model compiles again later; another backend failure is refused with its own words."""
    from torch._dynamo.exc import BackendCompilerFailed

    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    model = tiny.speech_llm(tmp_path, init_std=0.3).eval()
    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]

    def failing(error):
        def compiled(mode):
            def step(*args):
                raise BackendCompilerFailed(lambda *a: None, error, None)
            return step
        return staticmethod(compiled)

    monkeypatch.setattr(static_steps.StaticSteps, "_compiled", failing(torch.OutOfMemoryError("CUDA out of memory. "
                                                                                          "Tried to allocate 2 GiB")))
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2 GiB"):
        decoding.greedy_ids(model.llm, embeds, mask, 8, eos, compiled=True)
    assert static_steps.StaticSteps.fits(causal_lm(model.llm), 3, 20)
    monkeypatch.setattr(static_steps.StaticSteps, "_compiled", failing(RuntimeError("no C compiler found")))
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"\(RuntimeError: no C compiler found\)"):
        decoding.greedy_ids(model.llm, embeds, mask, 8, eos, compiled=True)
    assert not static_steps.StaticSteps.fits(causal_lm(model.llm), 3, 20)


def test_past_the_limit_of_compiled_shapes_new_shapes_decode_eagerly(model, monkeypatch):
    """Torch compiles a bounded number of shapes of one function (with fullgraph, the next one is an error): past
    it, a new batch x length shape decodes eagerly with one warning, and the shapes compiled before stay compiled."""
    from llm_srt.model import decoding

    torch._dynamo.reset()  # count from none (other tests of this process compiled shapes of the same step)
    monkeypatch.setattr(static_steps.StaticSteps, "COMPILED_SHAPES", 1)
    monkeypatch.setattr(static_steps.StaticSteps, "_full", False)
    monkeypatch.setattr(static_steps.StaticSteps, "_shapes", set())
    embeds, mask = _prompt_embeds(model)
    eos = [model.tokenizer.eos_token_id]

    def run(rows: int) -> tuple[bool, bool]:
        with torch.no_grad():
            eager = decoding.greedy_ids(model.llm, embeds[:rows], mask[:rows], 8, eos)
            before = static_steps.StaticSteps.steps_taken
            compiled = decoding.greedy_ids(model.llm, embeds[:rows], mask[:rows], 8, eos, compiled=True)
        return compiled == eager, static_steps.StaticSteps.steps_taken > before

    assert run(3) == (True, True)  # batch 4: the one shape torch may compile
    with pytest.warns(RuntimeWarning, match="1 batch x length shapes are compiled"):
        assert run(1) == (True, False)  # batch 1: over the limit, eager
    assert run(1) == (True, False) and run(3) == (True, True)
    torch._dynamo.reset()


def _layout_rows(model, batch, after: bool, targets: bool = False) -> list[torch.Tensor]:
    """Each row's input built by hand, as the reference does (torch.cat): [BOS][speech][prompt], or with `after`
    [speech][BOS][prompt] (its tokenizer.encode(prompt) behind the speech); `targets`: + target + EOS."""
    speech, speech_mask = model.speech_embeddings(batch)
    prompt_ids, target_ids = tokenize_batch(model.tokenizer, batch["prompts"], batch["targets"] if targets else None)
    embed = model.llm.get_input_embeddings()
    rows = []
    for i, prompt in enumerate(prompt_ids):
        bos = embed(torch.tensor([model.tokenizer.bos_token_id]))
        text = embed(torch.tensor(prompt + (target_ids[i] if targets else []), dtype=torch.long))
        heard = speech[i][speech_mask[i].bool()]
        rows.append(torch.cat([heard, bos, text] if after else [bos, heard, text]))
    return rows


@pytest.mark.parametrize("after", [False, True])
def test_bos_after_speech_is_the_input_of_training_loss_and_generation(model, after):
    """`bos_after_speech` (an imported reference model) puts a BOS-adding tokenizer's BOS behind the speech:
    [speech][BOS prompt], in generation (left-padded), training and the teacher-forced loss (right-padded) alike;
    the default stays [BOS][speech][prompt]."""
    own = model.config
    model.config = replace(own, bos_after_speech=after)
    try:
        batch = _batch()
        with torch.no_grad():
            embeds, mask = _prompt_embeds(model)
            for i, row in enumerate(_layout_rows(model, batch, after)):
                assert torch.equal(embeds[i][mask[i]], row) and mask[i, -len(row):].all()  # left-padded
            prompt_ids, target_ids = tokenize_batch(model.tokenizer, PROMPTS, TARGETS)
            embeds, mask, labels = model.assemble(model.speech_embeddings(batch), prompt_ids, target_ids)
            losses = []
            for i, row in enumerate(_layout_rows(model, batch, after, targets=True)):
                assert torch.equal(embeds[i][mask[i]], row) and mask[i, :len(row)].all()  # right-padded
                n = len(target_ids[i])
                assert labels[i][mask[i]][-n:].tolist() == target_ids[i]
                logits = model.llm(inputs_embeds=row[None]).logits[0, -n - 1:-1]
                losses.append(torch.nn.functional.cross_entropy(logits, torch.tensor(target_ids[i]), reduction="sum"))
            assert torch.allclose(model(batch)["loss"], sum(losses) / sum(map(len, target_ids)), atol=1e-5)
            expected = []  # greedy from each hand-built row alone, no cache
            for row in _layout_rows(model, batch, after):
                ids, x = [], row[None]
                for _ in range(6):
                    token = int(model.llm(inputs_embeds=x).logits[0, -1].argmax())
                    if token == model.tokenizer.eos_token_id:
                        break
                    ids.append(token)
                    x = torch.cat([x, model.llm.get_input_embeddings().weight[token][None, None]], 1)
                expected.append(ids)
        assert model.generate_ids(batch, DecodingOptions(max_new_tokens=6)) == expected
    finally:
        model.config = own


def test_bos_after_speech_and_language_tags_are_saved_and_older_folders_read_as_before(tmp_path):
    model = tiny.speech_llm(tmp_path / "m")
    model.config = replace(model.config, bos_after_speech=True, language_tags={"zho": "cmn"})
    folder = model.save_pretrained(tmp_path / "ckpt")
    loaded = SpeechLLM.from_pretrained(folder)
    assert loaded.config.bos_after_speech and loaded.config.language_tags == {"zho": "cmn"}
    meta = json.loads((folder / "config.json").read_text())
    del meta["bos_after_speech"], meta["language_tags"]  # a folder written before the two fields
    (folder / "config.json").write_text(json.dumps(meta))
    old = SpeechLLM.from_pretrained(folder)
    assert not old.config.bos_after_speech and old.config.language_tags == {}
    (folder / "config.json").write_text(json.dumps(meta | {"language_tags": ["cmn"]}))
    with pytest.raises(LLMSRTError, match="'language_tags' must be a mapping"):
        SpeechLLM.from_pretrained(folder)
