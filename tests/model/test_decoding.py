"""The decoding helpers that need no model: `last_argmax` against torch's argmax, `RowCaps`."""

import pytest
import torch

from llm_srt.model.decoding import ARGMAX_BLOCK, ARGMAX_MIN_VOCAB, DecodingOptions, RowCaps, last_argmax

VOCABS = (ARGMAX_MIN_VOCAB, 262_144, 151_936, ARGMAX_MIN_VOCAB + 7)  # whole blocks, Gemma's, Qwen's, a short tail


def expected(logits):
    return logits[:, -1].argmax(-1)


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_argmax_is_torchs_argmax_on_random_logits(vocab, dtype):
    logits = torch.randn(16, 2, vocab, generator=torch.Generator().manual_seed(vocab)).to(dtype)
    assert torch.equal(last_argmax(logits), expected(logits))


@pytest.mark.parametrize("vocab", VOCABS)
def test_last_argmax_takes_the_first_of_equal_maxima_and_nans_as_torch_does(vocab):
    whole = vocab // ARGMAX_BLOCK * ARGMAX_BLOCK
    logits = torch.randn(8, 1, vocab, generator=torch.Generator().manual_seed(1))
    row = logits[:, 0]
    row[0, [5, ARGMAX_BLOCK + 3, 3 * ARGMAX_BLOCK]] = 9.0  # equal maxima in three blocks: the first
    row[1, [ARGMAX_BLOCK + 9, ARGMAX_BLOCK + 2]] = 9.0  # two in one block
    row[2, [whole - 1, vocab - 1]] = 9.0  # the last whole block's and the last logit tie
    row[3, vocab - 1] = 9.0  # the very last logit alone
    row[4, [7, vocab - 2]] = float("nan")  # NaNs: the first
    row[5, vocab - 1] = float("nan")  # a NaN at the end
    row[6] = float("-inf")  # nothing but -inf: index 0
    row[7, ARGMAX_BLOCK:] = float("-inf")
    assert torch.equal(last_argmax(logits), expected(logits))


def test_last_argmax_falls_back_on_small_vocabularies_and_strided_logits():
    small = torch.randn(4, 1, ARGMAX_MIN_VOCAB - 1)
    assert torch.equal(last_argmax(small), expected(small))
    strided = torch.randn(4, 1, 2 * ARGMAX_MIN_VOCAB)[..., ::2]  # last dimension not contiguous
    assert torch.equal(last_argmax(strided), expected(strided))


@pytest.mark.parametrize("vocab", [7, 300, ARGMAX_MIN_VOCAB + 5])
def test_may_pick_never_rules_out_a_token_topk_would_keep(vocab):
    """`may_pick` (EndRule asks on_end only where it says 1): 0 only where none of the tokens is among a row's k
    highest scores, ties counted; on rows whose end token sits far below, it says 0 (the saving)."""
    from llm_srt.model.decoding import may_pick

    g = torch.Generator().manual_seed(vocab)
    scores = torch.randn(64, vocab, generator=g).round(decimals=1)  # many ties
    tokens, k = [1, vocab - 1], 4
    scores[:16, tokens] = -50.0  # far below: ruled out
    scores[16:24, 1] = scores[16:24].amax(-1) + 1  # the best: kept
    scores[24, 2] = float("nan")
    scores[25, 1] = float("nan")
    scores[26, :] = float("-inf")
    kth = scores.nan_to_num(nan=float("inf")).topk(k, -1).values[:, -1:]
    exact = (scores[:, tokens].nan_to_num(nan=float("inf")) >= kth).any(-1)
    got = may_pick(scores, tokens, k).bool()
    assert not (exact & ~got).any()  # never a 0 where topk could keep one of them
    assert not got[:16].any() and got[16:24].all() and got[25] and got[26]


def test_the_end_rule_asks_on_end_only_where_an_end_token_can_be_picked():
    """A hypothesis whose end token sits below its best `keep` candidates (HF beam search keeps (1 + ends) x beams a
    row) cannot end at this step: on_end (tokenizer work) is not asked for it, its scores are untouched; once the end
    token is among them it is asked, as before."""
    from llm_srt.model.decoding import EndRule

    asked = []

    def on_end(row, ids):
        asked.append((row, list(ids)))
        return [5]

    rule = EndRule(on_end, [0], beams=2)  # keeps 4 candidates a row
    scores = torch.arange(8.0).repeat(4, 1)  # token 0 the lowest of 8 in each hypothesis
    scores[2, 0] = 6.5  # third best: can be picked
    scores[3, 0] = 9.0  # the best: ends unless written for
    out = rule(torch.tensor([[2], [3], [2], [4]]), scores.clone())
    assert asked == [(1, [2]), (1, [4])]
    assert torch.equal(out[:2], scores[:2]) and out[2, 0] == float("-inf") and out[3].argmax() == 5


def test_first_line_end_stops_a_row_at_a_line_break_after_text_only():
    """Greedy text MT's stop: a row ends at a token holding a line break once it has written text (in that token
    before the break, or in an earlier one); a row that opens with blank lines goes on to its first line."""
    from llm_srt.model.decoding import FirstLineEnd

    #        0   1      2     3        4      5       6    7    (0: a special token, decoded without special tokens)
    vocab = ["", "Der", "\n", " \n\n", "Hund.\n", "\nDie", " ", "\n\nHund.\n"]
    stop = FirstLineEnd(vocab, prompt_length=2)
    rows = {(9, 9, 1, 2): True,  # text, then a line break
            (9, 9, 2): False, (9, 9, 6, 3): False,  # blank lines first: not yet
            (9, 9, 2, 3, 1): False, (9, 9, 2, 1, 2): True,
            (9, 9, 4): True,  # text before the break in the token itself
            (9, 9, 5): False, (9, 9, 5, 2): True,  # the text after a break starts the first line
            (9, 9, 0, 2): False,  # a special token (no text) is not an answer
            (9, 9, 7): True,  # a whole first line inside one token
            (9, 9, 9, 2): True}  # an id past the tokenizer (a padded head) counts as text
    for row, ends in rows.items():
        assert stop(torch.tensor([row[:2] + row[2:]]), None).tolist() == [ends], row
    batch = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 2]])
    assert stop(batch, None).tolist() == [False, True]


def test_row_caps_stop_each_rows_hypotheses_at_its_own_cap():
    """`generate` asks with each row's hypotheses together, row after row, their decoder prompt before the new
    tokens: row 0 (cap 1) stops at its first new token, row 1 (cap 3) at its third."""
    rule = RowCaps([1, 3])
    prompt = torch.zeros(6, 4, dtype=torch.long)  # 2 rows x 3 hypotheses, a 4-token decoder prompt
    for new, stops in ((1, [1, 1, 1, 0, 0, 0]), (2, [1, 1, 1, 0, 0, 0]), (3, [1] * 6)):
        assert rule(torch.cat([prompt, torch.ones(6, new, dtype=torch.long)], 1)).long().tolist() == stops


def test_decoding_options_refuse_a_penalty_or_early_stopping_hf_would_refuse_mid_decode():
    """A repetition penalty of 0, -1 or an int (HF's processor takes floats alone), or early_stopping "yes", were a
    bare ValueError from transformers at the first beam search; an int penalty is taken as the float it means."""
    from llm_srt.errors import LLMSRTError
    from llm_srt.model.decoding import DecodingOptions

    for bad in (0, 0.0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(LLMSRTError, match=r"^decoding: repetition_penalty must be a number > 0 \(1: off\), not "):
            DecodingOptions(repetition_penalty=bad)
    assert DecodingOptions(repetition_penalty=2).repetition_penalty == 2.0
    assert isinstance(DecodingOptions(repetition_penalty=2).repetition_penalty, float)
    with pytest.raises(LLMSRTError, match=r"^decoding: early_stopping must be true, false or \"never\", not 'yes'$"):
        DecodingOptions(early_stopping="yes")
    assert DecodingOptions(beam_size=2, early_stopping="never").early_stopping == "never"


@pytest.fixture(scope="module")
def srt_folder(tmp_path_factory):
    import tiny

    return tiny.speech_llm_folder(tmp_path_factory.mktemp("decoding-sllm"))


@pytest.mark.parametrize("beam", [1, 2])
def test_nan_scores_of_an_overflowing_dtype_are_an_error_not_empty_outputs(srt_folder, beam):
    """An LLM whose activations overflow float16 (Gemma-3) gives NaN logits, whose argmax is token 0 (<pad>) at
    every step: every row came back empty at its cap with no error. The prompt's scores are checked first (greedy
    and beam search): each row of a translate/evaluate run says why and what to do."""
    import tiny

    from llm_srt.errors import LLMSRTError
    from llm_srt.infer import run_items
    from llm_srt.model.llm import causal_lm
    from llm_srt.model.protocol import Item
    from llm_srt.model.speech_llm import SpeechLLM
    from llm_srt.model.systems import SpeechLLMSystem
    from llm_srt.prompts import Task

    model = SpeechLLM.from_pretrained(srt_folder, dtype="float16").eval()
    system, options = SpeechLLMSystem(model), DecodingOptions(max_new_tokens=4, beam_size=beam)
    items = [Item(tiny.tone(1.0, 440), "eng", "deu", Task.SRT), Item(tiny.tone(0.8, 660, seed=1), "eng", "fra",
                                                                     Task.SRT)]
    head = causal_lm(model.llm).get_output_embeddings()
    hook = head.register_forward_hook(lambda module, args, out: torch.full_like(out, float("nan")))
    try:
        with pytest.raises(LLMSRTError, match=r"NaN\) for 2 of 2 rows in float16: .*--dtype float32"):
            system.run_batch(items, options)
        outs = run_items(system, items, options, batch_size=2)
    finally:
        hook.remove()
    assert all("--dtype float32" in (o.error or "") for o in outs)
    assert all(o.error is None for o in system.run_batch(items, options))  # the hook gone: no NaN, no error


def test_nan_scores_on_the_compiled_path_give_its_static_cache_back(tmp_path):
    """The NaN check raises inside the compiled greedy loop: its static cache was not given back to the model's
    store, so a served shape's cache (its CUDA graph recorded on it) was made anew at the next batch."""
    import tiny
    from transformers import AutoModelForCausalLM

    from llm_srt.errors import LLMSRTError
    from llm_srt.model.decoding import greedy_ids
    from llm_srt.model.static_steps import StaticSteps

    lm = AutoModelForCausalLM.from_pretrained(tiny.llm_dir(tmp_path)).eval()
    embeds, mask = torch.randn(2, 5, lm.config.hidden_size), torch.ones(2, 5, dtype=torch.long)
    StaticSteps(lm, embeds, mask, 8).close()  # a cache of this shape in the store, as a warmed server holds
    before = dict(StaticSteps._caches[lm])
    hook = lm.get_output_embeddings().register_forward_hook(lambda m, a, out: torch.full_like(out, float("nan")))
    try:
        with torch.no_grad(), pytest.raises(LLMSRTError, match="not numbers"):
            greedy_ids(lm, embeds, mask, 8, [lm.config.eos_token_id], compiled=True)
    finally:
        hook.remove()
    assert StaticSteps._caches.get(lm) == before


@pytest.mark.parametrize("beam", [1, 2])
def test_no_repeat_ngram_lets_an_srt_translation_repeat_its_transcripts_numbers(srt_folder, beam):
    """SRT writes transcript<|src|><|tgt|>translation; with --no-repeat-ngram 4 counted over all of it, a year in
    the transcript ("1932", a token a digit) could not be written again in the translation. N-grams are counted
    within each part: the translation repeats the transcript, while a loop inside the translation stays blocked."""
    import tiny

    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.llm import causal_lm
    from llm_srt.model.protocol import Item
    from llm_srt.model.speech_llm import SpeechLLM
    from llm_srt.model.systems import SpeechLLMSystem
    from llm_srt.prompts import Task

    model = SpeechLLM.from_pretrained(srt_folder).eval()
    system, tok = SpeechLLMSystem(model), model.tokenizer
    year, tags = tok.convert_tokens_to_ids(list("1932")), tok.convert_tokens_to_ids(["<|eng|>", "<|deu|>"])
    end, step, script = eos_ids(model.llm, tok)[0], [0], []

    def steer(module, args, kwargs, out):  # the prompt's pass is step 0; step k's logits one-hot on script[k]
        step[0] = 0 if kwargs.get("inputs_embeds") is not None else step[0] + 1
        out.logits[:, -1] = -100.0
        out.logits[:, -1, script[min(step[0], len(script) - 1)]] = 100.0

    item = Item(tiny.tone(1.0, 440), "eng", "deu", Task.SRT)
    options = DecodingOptions(max_new_tokens=24, beam_size=beam, no_repeat_ngram_size=4)
    hook = causal_lm(model.llm).register_forward_hook(steer, with_kwargs=True)
    try:
        script[:] = year + tags + year + [end]
        out = system.run_batch([item], options)[0]
        script[:] = year + tags + year + year + [end]
        loop = system.run_batch([item], options)[0]
    finally:
        hook.remove()
    assert (out.transcript, out.translation) == ("1932", "1932")
    assert loop.transcript == "1932" and loop.translation.startswith("1932") and "19321932" not in loop.translation


def _batch() -> dict:
    """Four clips with prompts of different lengths (left padding)."""
    import tiny

    clips = [tiny.tone(0.8, 300), tiny.tone(1.5, 700, seed=1), tiny.tone(0.5, 1200, seed=2),
             tiny.tone(1.1, 500, seed=3)]
    return {"audio": clips, "prompts": ["<|eng|>", "<|deu|><|eng|>", "hello<|eng|><|fra|>", "<|fra|>"]}


def test_hf_greedy_search_stops_each_row_at_its_cap(srt_folder):
    """Greedy search through HF `generate` (a repetition penalty, as here; FSDP's dev decoding; a folder's logits
    processors) stopped a row only at EOS or options.max_new_tokens: one row that never ended kept the whole batch
    stepping (185 forward passes at caps [3, 4, 3, 5] of 200). Each row stops at its own cap, with the tokens it
    has there when every row runs to the largest."""
    from llm_srt.model.llm import causal_lm
    from llm_srt.model.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(srt_folder).eval()
    options, caps = DecodingOptions(max_new_tokens=200, repetition_penalty=1.3), [3, 4, 3, 5]
    whole = model.generate_ids(_batch(), options)
    assert max(len(row) for row in whole) > 2 * max(caps)  # a row runs on: the case is exercised
    calls = []
    hook = causal_lm(model.llm).register_forward_hook(lambda *args: calls.append(1))
    try:
        capped = model.generate_ids(_batch(), options, caps=caps)
    finally:
        hook.remove()
    assert capped == [row[:c] for row, c in zip(whole, caps)]
    assert len(calls) <= max(caps) + 1


def test_a_folders_min_new_tokens_holds_in_no_search(srt_folder, tmp_path, monkeypatch):
    """`generation_config` left min_new_tokens None, which `generate` fills from the folder's generation config:
    a folder's min_new_tokens held in beam search and HF's greedy search (a repetition penalty) while the greedy
    loop ignored it. Every search now gives the rows of the same model from a folder without it."""
    import json
    import shutil

    from llm_srt.model import speech_llm
    from llm_srt.model.speech_llm import SpeechLLM

    plain = SpeechLLM.from_pretrained(srt_folder).eval()
    llm = tmp_path / "llm"
    shutil.copytree(plain.config.llm, llm)
    settings = json.loads((llm / "generation_config.json").read_text())
    (llm / "generation_config.json").write_text(json.dumps({**settings, "min_new_tokens": 4}))
    odd = SpeechLLM.from_pretrained(srt_folder, llm=str(llm)).eval()
    assert odd.llm.generation_config.min_new_tokens == 4
    first = [row[0] for row in plain.generate_ids(_batch(), DecodingOptions(max_new_tokens=8))]
    end = plain.tokenizer.eos_token_id
    monkeypatch.setattr(speech_llm, "eos_ids", lambda *args: [end, *first])  # each row's greedy first token ends it
    for options in (DecodingOptions(max_new_tokens=8, beam_size=2), DecodingOptions(max_new_tokens=8),
                    DecodingOptions(max_new_tokens=8, repetition_penalty=1.0001)):
        expected = plain.generate_ids(_batch(), options)
        assert any(len(row) < 4 for row in expected), options  # rows the minimum would lengthen
        assert odd.generate_ids(_batch(), options) == expected, options


SYNCED_CAPS = ([2, 2], [3, 6])  # rank 0's rows stop after 2 tokens, rank 1's one after 6


def _synced_rank(rank: int, world: int, store: str, folder: str, out: str) -> None:
    """One rank of `test_synced_ranks_stop_at_the_caps_and_step_together`: two of the batch's rows, its caps."""
    from datetime import timedelta

    import torch.distributed as dist

    from llm_srt.model.llm import causal_lm
    from llm_srt.model.speech_llm import SpeechLLM

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(minutes=1))
    try:
        model = SpeechLLM.from_pretrained(folder).eval()
        batch = {k: v[2 * rank:2 * rank + 2] for k, v in _batch().items()}
        calls = []
        causal_lm(model.llm).register_forward_hook(lambda *args: calls.append(1))
        ids = model.generate_ids(batch, DecodingOptions(max_new_tokens=40, repetition_penalty=1.3),
                                 synced_ranks=True, caps=SYNCED_CAPS[rank])
        torch.save({"ids": ids, "calls": len(calls)}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.long(20)
def test_synced_ranks_stop_at_the_caps_and_step_together(srt_folder, tmp_path):
    """`synced_ranks` (FSDP's dev decoding: every rank's step needs all ranks) ran greedy search to
    options.max_new_tokens whatever the rows' caps. Each row stops at its cap; a rank whose rows have all stopped
    goes on stepping with the others (HF's synced loop) until theirs have: both ranks make the same forward passes,
    as many as the largest cap needs, and each row has the tokens it has alone."""
    import torch.multiprocessing as mp

    from llm_srt.model.speech_llm import SpeechLLM

    mp.spawn(_synced_rank, args=(2, str(tmp_path / "store"), str(srt_folder), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    model = SpeechLLM.from_pretrained(srt_folder).eval()
    whole = model.generate_ids(_batch(), DecodingOptions(max_new_tokens=40, repetition_penalty=1.3))
    caps = [c for rank_caps in SYNCED_CAPS for c in rank_caps]
    assert all(len(row) > c for row, c in zip(whole, caps))  # no row ends before its cap: rank 1 steps longer
    assert got[0]["ids"] + got[1]["ids"] == [row[:c] for row, c in zip(whole, caps)]
    assert got[0]["calls"] == got[1]["calls"] <= max(caps) + 1
