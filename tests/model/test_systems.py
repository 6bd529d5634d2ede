"""The systems behind one protocol (model/systems.py) on tiny random models: mixed-language, mixed-task batches
give what each item gives alone; Whisper, text MT and the cascade; split-retry of a failing batch; layering."""

import json
import shutil
import subprocess
import sys
import weakref
from dataclasses import replace

import pytest
import torch

import tiny
from llm_srt import device, languages
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator, item_budget, max_new_tokens, run_items
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Item, Output, cap
from llm_srt.model.systems import CascadeSystem, SpeechLLMSystem, TextMTSystem, load_system
from llm_srt.model.whisper_system import WhisperSystem, detect_language
from llm_srt.prompts import Task, build

CPU = device.resolve("cpu")
OPTS = DecodingOptions(max_new_tokens=8)
CLIPS = [tiny.tone(0.7, 300), tiny.tone(1.6, 650, seed=1), tiny.tone(1.1, 900, seed=2), tiny.tone(2.0, 1300, seed=3)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("systems")
    return {"whisper": tiny.whisper_lid_dir(root), "llm": tiny.llm_dir(root, init_std=0.3)}


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("systems-sllm")
    torch.manual_seed(0)
    return tiny.speech_llm(root, init_std=0.3, lora=None).save_pretrained(root / "model")


def test_translation_start_is_after_the_tags_between_transcript_and_translation(speech_model):
    """--no-repeat-ngram counts an SRT output's translation from its first id after the tags that follow the
    transcript; an output that begins with the prompt's tags again ("<|eng|><|deu|>1932<|eng|><|deu|>1932", a form
    parse_srt reads) had its first tags taken for those, the transcript counted with the translation, and, at the
    step that picks the translation's first token, those tags' n-grams blocked it (its transcript is counted from
    after them)."""
    from llm_srt.model.speech_llm import SpeechLLM
    from llm_srt.model.decoding import _pick
    from llm_srt.model.systems import TranslationStart

    tok = SpeechLLM.from_pretrained(speech_model).tokenizer
    year, tags = tok.convert_tokens_to_ids(list("1932")), tok.convert_tokens_to_ids(["<|eng|>", "<|deu|>"])
    for ids, start in ((year + tags + year, 6), (tags + year + tags + year, 8), (tags + year, 2), (year + tags, 0),
                       (tags + year + tags, 2), (tags, 0)):
        assert TranslationStart(tok, [True])(0, ids) == start, (ids, start)
        assert TranslationStart(tok, [False])(0, ids) == 0
    for ids, n, want in ((tags + year + tags, 3, year[0]),  # the translation's first token, as the transcript's
                         (tags + year + tags[:1], 2, tags[1])):  # the tags after the transcript, as the first ones
        logits = torch.zeros(1, 1, len(tok))
        logits[0, 0, want], logits[0, 0, year[1]] = 10.0, 5.0
        assert _pick(logits, [ids], [0], n, TranslationStart(tok, [True])).tolist() == [want], ids


def alone(system, items, options=OPTS):
    return [system.run_batch([it], options)[0] for it in items]


MIXED = [Item(CLIPS[0], "eng", "deu", Task.SRT), Item(CLIPS[1], "deu", "eng", Task.SRT),
         Item(CLIPS[2], "fra", None, Task.ASR), Item(CLIPS[3], "eng", "fra", Task.S2TT),
         Item(CLIPS[1], "eng", "deu", Task.SMT, "a cat"), Item(None, "fra", "eng", Task.MT, "le chat")]


def test_speech_llm_mixed_batch_equals_each_item_alone(speech_model):
    system = load_system(speech_model, CPU)
    assert isinstance(system, SpeechLLMSystem) and system.placement == CPU
    mixed = system.run_batch(MIXED, OPTS)
    assert mixed == alone(system, MIXED)
    assert all(o.error is None for o in mixed)
    assert mixed[2].translation == "" and mixed[4].transcript == "a cat" and mixed[5].transcript == "le chat"
    # the MT item ran the model's LLM from the MT prompt: the same text as generating from that prompt directly
    direct = system.model.generate({"prompts": ["le chat<|fra|><|eng|>"]}, OPTS)[0]
    assert mixed[5].translation == " ".join(direct.split())


@pytest.mark.parametrize("beam", [1, 2])
def test_asr_then_smt_is_the_models_transcript_then_its_smt_from_it(speech_model, beam):
    """Task.ASR_SMT (the paper's "w/o SRT"): each clip's output is what the model's ASR item gives, then what its
    SMT item gives from that transcript, run alone; the batch's other items are untouched by the two passes."""
    system = load_system(speech_model, CPU)
    opts = replace(OPTS, beam_size=beam)
    items = [Item(CLIPS[0], "eng", "deu", Task.ASR_SMT), Item(CLIPS[3], "fra", "eng", Task.ASR_SMT),
             *MIXED[:1], *MIXED[4:]]
    out = system.run_batch(items, opts)
    for it, o in zip(items[:2], out):
        [heard] = system.run_batch([replace(it, task=Task.ASR, tgt=None)], opts)
        [smt] = system.run_batch([replace(it, task=Task.SMT, transcript=heard.transcript)], opts)
        assert o == Output(heard.transcript, smt.translation, capped=heard.capped or smt.capped)
        [s2tt] = system.run_batch([replace(it, task=Task.S2TT)], opts)
        assert heard.transcript and o.translation != s2tt.translation  # a test of the test: texts to compare
    assert out[2:] == alone(system, items[2:], opts)


def test_a_speech_llm_answers_an_item_into_its_own_language_with_the_transcript(speech_model):
    """eng -> eng: the speech LLM decoded a translation prompt it was never trained on, ran to its cap and wrote no
    translation; now, as the whisper system and the cascade do, the transcript (speech: its ASR output; SMT and MT:
    the given one) beside the batch's other items, which are as alone."""
    system = load_system(speech_model, CPU)
    items = [Item(CLIPS[0], "eng", "eng", Task.SRT), Item(CLIPS[1], "deu", "deu", Task.S2TT),
             Item(None, "fra", "fra", Task.MT, " le chat "), Item(CLIPS[2], "eng", "eng", Task.SMT, "a cat"),
             MIXED[0], MIXED[5]]
    out = system.run_batch(items, OPTS)
    heard = alone(system, [Item(CLIPS[0], "eng", None, Task.ASR), Item(CLIPS[1], "deu", None, Task.ASR)])
    assert out[:2] == [replace(h, translation=h.transcript) for h in heard] and heard[0].transcript
    assert out[2:4] == [Output("le chat", "le chat"), Output("a cat", "a cat")]
    assert out[4:] == alone(system, items[4:])


def test_asr_then_smt_cannot_be_trained_and_has_no_prompt():
    from llm_srt.data.loader import _normalize_mix
    from llm_srt.errors import ConfigError, LLMSRTError
    from llm_srt.train.recipe import load_config

    with pytest.raises(LLMSRTError, match="runs as asr, then smt"):
        build(Task.ASR_SMT, "eng", "deu")
    with pytest.raises(ConfigError, match="asr\\+smt cannot be trained"):
        load_config(None, ["data.tasks={asr+smt: 1.0}"])
    for mix in ("asr+smt", {"asr+smt": 1.0, "asr": 1.0}):
        with pytest.raises(LLMSRTError, match="cannot be trained"):
            _normalize_mix(mix)
    assert "asr+smt" not in Task.trainable_names() and "smt" in Task.trainable_names()


@pytest.mark.parametrize("beam", [1, 2])
def test_outputs_say_which_srt_rows_got_their_tags_written(speech_model, monkeypatch, beam):
    """Output.forced_tags marks the rows whose tag pair greedy decoding or beam search wrote for them (here row 1,
    whose first token is made to end it before any tag), never an ASR or S2TT row; the pair is in its output."""
    from llm_srt.model import speech_llm

    system = load_system(speech_model, CPU)
    opts = replace(OPTS, beam_size=beam)
    first = system.model.generate_ids({"audio": [MIXED[1].audio], "prompts": [build(MIXED[1].task, MIXED[1].src,
                                      MIXED[1].tgt)[0]]}, opts)[0][0]
    real = speech_llm.eos_ids
    monkeypatch.setattr(speech_llm, "eos_ids", lambda *a: [*real(*a), first])
    out = system.run_batch(MIXED[:4], opts)
    assert out[1].forced_tags and out[1].translation and not out[2].forced_tags and not out[3].forced_tags
    unforced = system.run_batch(MIXED[:4], replace(opts, force_srt_tags=False))
    assert not any(o.forced_tags for o in unforced)
    assert beam > 1 or not unforced[1].translation  # greedy: it ended at once (beams may go on by other tokens)


@pytest.mark.parametrize("beam", [1, 2])
def test_outputs_say_which_rows_were_cut_at_their_token_cap(speech_model, beam):
    """Output.capped marks the rows that reached their own cap without an end token (greedy and beam search cut
    there), speech and text-only alike; a row that wrote its end token before its cap is not capped. Every row's
    4th token is made the end: rows capped at 2 or 3 tokens are cut, rows capped at 8 end after 3."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.llm import causal_lm

    system = load_system(speech_model, CPU)
    lm, end, step = causal_lm(system.model.llm), eos_ids(system.model.llm, system.model.tokenizer)[0], [0]

    def steer(module, args, kwargs, out):  # the prompt's pass is step 0 (the first token): the 4th token, the end
        step[0] = 0 if kwargs.get("inputs_embeds") is not None else step[0] + 1
        if step[0] == 3:
            out.logits[:, -1, end] = out.logits.max() + 100

    items = [replace(MIXED[0], max_new_tokens=3), MIXED[1], replace(MIXED[2], max_new_tokens=2), MIXED[3], MIXED[5]]
    hook = lm.register_forward_hook(steer, with_kwargs=True)
    try:
        out = system.run_batch(items, replace(OPTS, beam_size=beam, force_srt_tags=False))
    finally:
        hook.remove()
    assert [o.capped for o in out] == [True, False, True, False, False]
    assert all(o.error is None for o in out) and out[1].transcript


def test_asr_then_smt_is_capped_where_either_pass_was():
    """Task.ASR_SMT runs two passes, each to its own cap: a row is cut where its transcript or its translation was."""
    system = SpeechLLMSystem.__new__(SpeechLLMSystem)  # its two passes stubbed: no model
    system.run_batch = lambda items, options: [
        Output("heard", "" if it.task is Task.ASR else "übersetzt",
               capped=it.audio is CLIPS[0] if it.task is Task.ASR else it.audio is CLIPS[1]) for it in items]
    items = [Item(clip, "eng", "deu", Task.ASR_SMT) for clip in CLIPS[:3]]
    assert [o.capped for o in system._asr_then_smt(items, OPTS)] == [True, True, False]


@pytest.mark.parametrize("beams", [1, 2])
def test_whisper_outputs_say_which_rows_were_cut_at_their_token_cap(ending_whisper, beams):
    """The whisper system marks a clip `capped` where its transcript or its translation into English filled its cap
    without an end token. Greedy decoding is the same to any cap, so a row of n tokens before its end is cut at caps
    up to n and ends within n + 1; beam search (HF generate, stopped at each row's cap) keeps its end token too
    (a row that ends shorter than its cap is not cut)."""
    system = load_system("whisper", CPU, whisper=str(ending_whisper))
    opts = DecodingOptions(max_new_tokens=10, beam_size=beams)
    eos = system.whisper.generation.eos
    langs = ["eng", "deu", "eng", "fra"]
    lengths = {task: [len(until_eos(r, eos)) for r in system.decode_ids(CLIPS, langs, task, opts)]
               for task in ("transcribe", "translate")}
    assert max(lengths["transcribe"]) < 10 and max(lengths["translate"]) < 10  # every row ends within 10
    seen = set()
    for cut_at in (0, 1, 2, 3):  # rows cut at their own length (the end token one past the cap), the others not
        caps = [n if k % 4 == cut_at % 4 or k == cut_at - 1 else n + 1 for k, n in enumerate(lengths["transcribe"])]
        items = [Item(clip, lang, None, Task.ASR, max_new_tokens=c) for clip, lang, c in zip(CLIPS, langs, caps)]
        out = system.run_batch(items, opts)
        if beams == 1:
            expected = [c <= n for c, n in zip(caps, lengths["transcribe"])]
        else:  # beam search's hypotheses depend on their cap: its rows decoded to the same caps, their end kept
            rows = system.decode_ids(CLIPS, langs, "transcribe", opts, caps)
            expected = [len(until_eos(r, eos)) >= c for r, c in zip(rows, caps)]
        assert [o.capped for o in out] == expected, (beams, cut_at)
        seen.update(expected)
    assert seen == {True, False}  # rows cut and rows ended
    # deu -> eng: its translation is decoded too: cut where either is (its transcript is in the output); greedy
    n, m = lengths["transcribe"][1], lengths["translate"][1]
    for c, want in ((min(n, m), True), (max(n, m) + 1, False)) if beams == 1 else ():
        [o] = system.run_batch([Item(CLIPS[1], "deu", "eng", Task.S2TT, max_new_tokens=c)], opts)
        assert o.capped is want and o.error is None, (c, n, m)


@pytest.mark.parametrize("beam", [1, 2])
def test_text_mt_and_the_cascade_say_which_rows_were_cut_at_their_token_cap(folders, beam):
    """Text MT marks a row `capped` where it filled its cap (or twice its text's length + 16) before an end token
    (or, greedy, its first line's end: embedded in test_text_mt_stops_at_a_line_break_with_the_same_first_line);
    the cascade where its transcript or its translation was cut. Every generation's 4th token is made the end."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.llm import causal_lm

    cascade = load_system("cascade", CPU, whisper=str(folders["whisper"]), llm=str(folders["llm"]))
    mt = cascade.mt
    end, start = eos_ids(mt.model, mt.tokenizer)[0], [0]

    def steer(module, args, kwargs, out):  # the prompt's pass (its first token), then one pass per token
        start[0] = 0 if kwargs["input_ids"].shape[1] > 1 else start[0] + 1
        if start[0] == 3:
            out.logits[:, -1, end] = out.logits.max() + 100
    hook = causal_lm(mt.model).register_forward_hook(steer, with_kwargs=True)
    opts = replace(OPTS, beam_size=beam)
    try:
        out = mt.run_batch([Item(None, "fra", "eng", Task.MT, "le chat", max_new_tokens=c) for c in (2, 3, 4, 8)],
                           opts)
        assert [o.capped for o in out] == [True, True, False, False] and all(o.translation for o in out)
        heard_cut = set()
        heard = cascade.asr.decode(CLIPS[:2], ["eng", "deu"], "transcribe", OPTS, capped=heard_cut)
        assert heard_cut == {0, 1} and all(heard)  # the tiny Whisper writes to its cap, 8
        out = cascade.run_batch([Item(CLIPS[0], "eng", "deu", Task.S2TT), Item(None, "fra", "eng", Task.MT,
                                                                               "le chat")], opts)
        assert [o.capped for o in out] == [True, False]  # the first's transcript was cut; the second ended
    finally:
        hook.remove()


def test_greedy_text_mt_stops_each_row_at_its_own_cap(folders):
    """Greedy text MT stopped a row at its first line break only: a row that wrote none kept its batch to the
    largest cap. Here row 0 (cap 2) writes letters only and row 1 (cap 8) ends at its 3rd token: 3 steps, not 8."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.llm import causal_lm

    mt = load_system("mt", CPU, llm=str(folders["llm"]))
    letter = mt.tokenizer("a", add_special_tokens=False)["input_ids"][0]
    end, steps = eos_ids(mt.model, mt.tokenizer)[0], []

    def steer(module, args, kwargs, out):
        steps.append(kwargs["input_ids"].shape[1])
        out.logits[:, -1, letter] = out.logits.max() + 100
        if len(steps) == 3:
            out.logits[1, -1, end] = out.logits.max() + 100
    hook = causal_lm(mt.model).register_forward_hook(steer, with_kwargs=True)
    try:
        out = mt.run_batch([Item(None, "fra", "eng", Task.MT, "le chat noir", max_new_tokens=2),
                            Item(None, "fra", "eng", Task.MT, "le chien", max_new_tokens=8)],
                           replace(OPTS, max_new_tokens=8))
    finally:
        hook.remove()
    assert len(steps) == 3 and [o.capped for o in out] == [True, False] and out[1].translation


def test_srt_rows_that_would_end_before_their_tags_get_the_pair_written(speech_model, monkeypatch):
    """force_srt_tags: the system asks greedy decoding (n-gram blocking or not) to write an SRT row's tag pair when
    the row ends without a language tag; rows that wrote a tag, other tasks and --no-force-srt-tags are left alone."""
    from llm_srt.model import decoding

    system = load_system(speech_model, CPU)
    tok = system.model.tokenizer
    seen = []
    real = decoding.greedy_ids
    monkeypatch.setattr(decoding, "greedy_ids", lambda *a, **k: seen.append(a[-1]) or real(*a, **k))
    system.run_batch(MIXED[:4], replace(OPTS, no_repeat_ngram_size=3))  # n-gram blocking: still greedy_ids
    assert seen[-1] is not None
    system.run_batch(MIXED[:4], OPTS)
    on_end = seen[-1]
    pair = tok("<|eng|><|deu|>", add_special_tokens=False)["input_ids"]
    assert on_end(0, tok("a cat", add_special_tokens=False)["input_ids"]) == pair
    for written in ("a cat<|eng|><|deu|>", "a cat<|eng|>eine"):  # its pair, or text after its tag: left alone
        assert on_end(0, tok(written, add_special_tokens=False)["input_ids"]) is None
    # any text after its tag, even what cleans to nothing or a tag cut short, and so their extensions (beam search's
    # EndRule keeps a prefix let end as free; a tag added after such text went unread by the parser, the row
    # decoding on to its cap for nothing): left alone, where the cap leaves room
    # (the tiny tokenizer cannot write "</|": the decoded texts are given)
    roomy = system._srt_tags([MIXED[0]], replace(OPTS, max_new_tokens=256))
    texts = ["a<|eng|>", "a<|eng|></|de", "a<|eng|></|deu|>", "a<|eng|><|de", "a<|eng|> </|deu|>"]
    with monkeypatch.context() as patched:
        patched.setattr(tok, "decode", lambda ids, **kwargs: texts[ids[0]])
        assert roomy(0, [0]) == tok("<|deu|>", add_special_tokens=False)["input_ids"]
        for k in range(1, len(texts)):
            assert roomy(0, [k]) is None, texts[k]
    assert on_end(1, []) == tok("<|deu|><|eng|>", add_special_tokens=False)["input_ids"]
    assert on_end(2, []) is None and on_end(3, []) is None  # ASR, S2TT
    system.run_batch(MIXED[:4], replace(OPTS, force_srt_tags=False))
    assert seen[-1] is None
    system.run_batch(MIXED[2:4], OPTS)
    assert seen[-1] is None  # no SRT row in the batch


@pytest.mark.parametrize("beam", [1, 2])
@pytest.mark.parametrize("lone", ["<|eng|>", "<|deu|>"])
def test_an_srt_row_that_ends_after_one_tag_gets_the_tags_it_lacks(speech_model, beam, lone):
    """An eng->deu row that writes one tag and then picks its end token gets "<|deu|>" after its source's tag, the
    pair after another's, and decodes on to its translation (greedy and beam search); it counts as forced. The row
    was left untranslated: a tag of any language let it end."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.llm import causal_lm

    system = load_system(speech_model, CPU)
    tok = system.model.tokenizer
    ids = tok(lone, add_special_tokens=False)["input_ids"]
    on_end = system._srt_tags([MIXED[0]], OPTS)
    todo = tok("<|deu|>" if lone == "<|eng|>" else "<|eng|><|deu|>", add_special_tokens=False)["input_ids"]
    assert on_end(0, tok("Hi" + lone, add_special_tokens=False)["input_ids"]) == todo
    room = on_end(0, tok("Hello" + lone, add_special_tokens=False)["input_ids"])  # 6 ids, the cap 8: room for one
    assert room == (todo if len(todo) == 1 else None)
    lm, end, step = causal_lm(system.model.llm), eos_ids(system.model.llm, tok)[0], [0]

    def steer(module, args, kwargs, out):  # the prompt's next token: the tag; the tag's: the end (once)
        step[0] = 0 if kwargs.get("inputs_embeds") is not None else step[0] + 1
        if step[0] == 0:
            out.logits[:, -1, ids[0]] = out.logits.max() + 100
        elif step[0] == 1:
            rows = kwargs["input_ids"][:, -1] == ids[0]
            out.logits[rows, -1, end] = out.logits.max() + 100

    hook = lm.register_forward_hook(steer, with_kwargs=True)
    try:
        out = system.run_batch([MIXED[0]], replace(OPTS, beam_size=beam))[0]
        unforced = system.run_batch([MIXED[0]], replace(OPTS, beam_size=beam, force_srt_tags=False))[0]
    finally:
        hook.remove()
    assert out.forced_tags and out.translation
    assert not unforced.forced_tags and not unforced.translation  # the model alone ends after the tag


def test_a_speech_llm_system_has_its_encoder_when_loaded(speech_model, tmp_path):
    """As the baselines do, a speech LLM loads its whole model at once: a server whose encoder is unreadable fails at
    start-up, not with a 500 at each request after /health said ok."""
    model = load_system(speech_model, CPU).model
    assert model._whisper is not None
    broken = tmp_path / "whisper"
    shutil.copytree(model.config.encoder, broken)
    (broken / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(LLMSRTError, match="model.safetensors: cannot read the Whisper weights"):
        load_system(speech_model, CPU, encoder=str(broken))


def test_translate_takes_per_input_languages_and_tasks(speech_model):
    t = SpeechTranslator.from_pretrained(speech_model, device="cpu")
    srcs, tgts, tasks = ["eng", "deu", "fra", "eng"], ["deu", "eng", None, "fra"], ["srt", "srt", "asr", "s2tt"]
    mixed = t.translate(CLIPS, srcs, tgts, task=tasks, options=OPTS, batch_size=4)
    single = [t.translate([c], s, g, task=k, options=OPTS)[0] for c, s, g, k in zip(CLIPS, srcs, tgts, tasks)]
    assert [r.to_dict() for r in mixed] == [r.to_dict() | {"audio": f"<array {i}>"} for i, r in enumerate(single)]
    assert [(r.src, r.tgt, r.task) for r in mixed] == list(zip(srcs, tgts, tasks))
    with pytest.raises(LLMSRTError, match="--tgt: 2 values for 4 inputs"):
        t.translate(CLIPS, "eng", ["deu", "fra"], options=OPTS)
    with pytest.raises(LLMSRTError, match="unknown language code 'xx'"):  # one value for all: an option error
        t.translate(CLIPS, "eng", "xx", options=OPTS)
    # a bad per-input value fails its input only
    bad = t.translate(CLIPS[:3], ["eng", "xx", "eng"], ["deu", "deu", None], task=["srt", "srt", "s2tt"],
                      options=OPTS)
    assert [r.error is None for r in bad] == [True, False, False] and bad[0].to_dict() == single[0].to_dict()
    assert "'xx'" in bad[1].error and "needs a target language" in bad[2].error


def test_whisper_system(folders):
    system = load_system("whisper", CPU, whisper=str(folders["whisper"]))
    assert isinstance(system, WhisperSystem)
    items = [Item(CLIPS[0], "eng", None, Task.ASR), Item(CLIPS[1], "deu", "eng", Task.S2TT),
             Item(CLIPS[2], "fra", "fra", Task.SRT), Item(CLIPS[3], "deu", "jpn", Task.SRT),
             Item(None, "fra", "eng", Task.MT, "le chat")]
    mixed = system.run_batch(items, OPTS)
    assert mixed == alone(system, items)
    assert [o.error is None for o in mixed] == [True, True, True, False, False]
    assert "only into English" in mixed[3].error and "needs audio" in mixed[4].error
    assert mixed[0].translation == "" and mixed[2].translation == mixed[2].transcript  # tgt == src: the transcript
    [heard] = system.decode([CLIPS[1]], ["deu"], "transcribe", OPTS)
    [to_eng] = system.decode([CLIPS[1]], ["deu"], "translate", OPTS)
    assert mixed[1] == Output(heard, to_eng, capped=True)  # the tiny Whisper writes to its cap, 8
    # SRT into a target it cannot translate into: its transcript all the same (evaluate scores it by WER; before,
    # an English clip's rows into 12 other targets all failed and its WER read 100), the translation an error
    [heard] = system.decode([CLIPS[3]], ["deu"], "transcribe", OPTS)
    assert mixed[3].transcript == heard and mixed[3].translation == ""
    [s2tt] = system.run_batch([Item(CLIPS[3], "deu", "jpn", Task.S2TT)], OPTS)  # writes no transcript: no decoding
    assert s2tt.transcript == "" and "only into English" in s2tt.error
    assert system.detect_language(CLIPS[0]) in languages.LANGUAGES



def test_a_speech_llm_detects_the_language_with_its_own_encoder_and_whisper_s_decoder_alone(folders):
    """Language ID beside a speech LLM loads Whisper's decoder only: the model's encoder (already on the device)
    encodes the clip's 30 s window. Before, a whole second Whisper was loaded at the first request without a source
    language (Whisper large-v3's encoder twice: 1.3 GB more in bf16, mid-serving). The language is the one the
    whole Whisper finds."""
    from llm_srt.model import whisper_system
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    model = SpeechLLM(SpeechLLMConfig(encoder=str(folders["whisper"]), llm=str(folders["llm"]), adapter="linear"))
    system = SpeechLLMSystem(model, "m", CPU)
    whisper_system.release_models(CPU.device)
    calls = []
    hook = model.encoder.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-1]))
    ours = [system.detect_language(clip) for clip in CLIPS]
    hook.remove()
    [kept] = [whisper_system._torch_whisper(str(folders["whisper"]), CPU.device, CPU.dtype, True)]
    assert calls == [3000] * len(CLIPS) and kept.model.encoder is None
    assert whisper_system._torch_whisper.cache_info().currsize == 1  # no whole Whisper beside it
    assert ours == [detect_language(folders["whisper"], clip, CPU) for clip in CLIPS]
    whisper_system.release_models(CPU.device)


def test_the_whisper_system_and_language_id_share_one_whisper_and_src_into_src_is_the_transcript(folders):
    """WhisperSystem loaded its Whisper under another cache key than language ID did (3 arguments against 4): a
    second copy (3 GB at large-v3 in bf16). A row into its own language (deu -> deu) went through Whisper's
    translate task and came back in English."""
    from llm_srt.model import whisper_system

    whisper_system.release_models(CPU.device)
    system = WhisperSystem(folders["whisper"], CPU)
    detect_language(folders["whisper"], CLIPS[1], CPU)
    assert whisper_system._torch_whisper.cache_info().currsize == 1
    [same] = system.run_batch([Item(CLIPS[1], "deu", "deu", Task.SRT)], OPTS)
    [heard] = system.decode([CLIPS[1]], ["deu"], "transcribe", OPTS)
    assert same == Output(heard, heard, capped=True)  # the tiny Whisper writes to its cap
    whisper_system.release_models(CPU.device)


@pytest.mark.parametrize("beam", [1, 2])
def test_the_whisper_system_writes_every_token_its_decoders_context_leaves_after_the_prompt(folders, beam):
    """A cap past Whisper's context (64 positions here, 448 at large-v3) gives the n_text_ctx - 4 tokens that fit
    after the 4-token prompt, as HF's generate given that cap: 8 positions were kept back, 4 tokens fewer."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    system = WhisperSystem(folders["whisper"], CPU)
    room = system.whisper.dims.n_text_ctx - len(system.prompt("eng", "transcribe"))
    options = replace(OPTS, max_new_tokens=1000, beam_size=beam)
    [ours] = system.decode_ids([CLIPS[0]], ["eng"], "transcribe", options)
    hf = WhisperForConditionalGeneration.from_pretrained(folders["whisper"]).eval()
    mel = WhisperFeatureExtractor.from_pretrained(folders["whisper"])([CLIPS[0]], sampling_rate=16000,
                                                                       return_tensors="pt")["input_features"]
    with torch.no_grad():
        ref = hf.generate(mel, language="en", task="transcribe", max_new_tokens=room, num_beams=beam,
                          early_stopping=True)[0].tolist()  # its new tokens
    assert len(ours) == room and ours == ref[:room], (len(ours), room)


def test_language_id_refuses_a_language_the_registry_lacks(folders, monkeypatch):
    """Language ID took the likeliest registry language whatever Whisper heard: Polish speech became eng and was
    decoded with English tags, looking normal."""
    from llm_srt.model import whisper_system

    w = whisper_system._torch_whisper(str(folders["whisper"]), CPU.device, CPU.dtype, False)
    polish = max(w.generation.lang_to_id.values()) + 1  # a language token the registry has no entry for
    monkeypatch.setattr(w, "generation", replace(w.generation, lang_to_id={**w.generation.lang_to_id,
                                                                           "<|pl|>": polish}))
    real = w.next_logits

    def hears(states, tokens, language):
        logits = real(states, tokens)
        logits[:, language] = logits.max() + 1
        return logits

    monkeypatch.setattr(w, "next_logits", lambda states, tokens: hears(states, tokens, polish))
    with pytest.raises(LLMSRTError, match=r"language ID: Whisper hears pl here, not one of the languages the toolkit "
                                          r"knows \(.*eng.*\); give the source language \(--src\)"):
        detect_language(folders["whisper"], CLIPS[1], CPU)
    german = w.generation.lang_to_id["<|de|>"]
    monkeypatch.setattr(w, "next_logits", lambda states, tokens: hears(states, tokens, german))
    assert detect_language(folders["whisper"], CLIPS[1], CPU) == "deu"
    whisper_system.release_models(CPU.device)


def test_release_models_lets_go_of_the_kept_whispers(folders):
    from llm_srt.model import whisper_system

    whisper_system.release_models(CPU.device)  # another test's kept Whisper (the order -n gives the tests)
    detect_language(folders["whisper"], CLIPS[1], CPU)
    assert whisper_system._torch_whisper.cache_info().currsize == 1
    whisper_system.release_models(CPU.device)
    assert whisper_system._torch_whisper.cache_info().currsize == 0
    assert whisper_system._whisper.cache_info().currsize == 0


def test_whisper_log_mel_runs_on_the_models_device(folders, monkeypatch):
    system = load_system("whisper", CPU, whisper=str(folders["whisper"]))
    spy = tiny.CallSpy(system.whisper.features)
    monkeypatch.setattr(system.whisper, "features", spy)
    system.decode([CLIPS[0]], ["eng"], "transcribe", OPTS)
    assert [kw.get("device") for kw in spy.calls] == [system.whisper.device]


@pytest.fixture(scope="module")
def ending_whisper(folders, tmp_path_factory):
    """The tiny Whisper made to end rows at different steps (EOS's output row ~ a frequent token's) and to suppress
    EOS and token 41 at the first step and token 45 at every step: the cases the greedy loop's masks and stopping
    must get right."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folders["whisper"])
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.proj_out.weight[eos] = model.proj_out.weight[26] * 1.01
    model.generation_config.begin_suppress_tokens = [eos, 41]
    model.generation_config.suppress_tokens = [*model.generation_config.suppress_tokens, 45]
    path = tmp_path_factory.mktemp("ending") / "whisper"
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (path / name).write_bytes((folders["whisper"] / name).read_bytes())
    return path


def hf_generate(folder, audios, langs, task, beams, max_new):
    """Whisper decoded as before this loop existed: HF `generate` with its own suppression processors, one
    language per call -> each clip's tokens up to its first end token. Beam search stops at `beams` finished
    hypotheses (DecodingOptions.early_stopping, as openai-whisper's beam search), not HF's default heuristic."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    mel = WhisperFeatureExtractor.from_pretrained(folder)(audios, sampling_rate=16000, return_tensors="pt")
    rows = [None] * len(audios)
    for lang in sorted(set(langs)):
        idx = [i for i, x in enumerate(langs) if x == lang]
        with torch.inference_mode():
            ids = model.generate(mel.input_features[idx], language=languages.get(lang).whisper, task=task,
                                 num_beams=beams, max_new_tokens=max_new, **({"early_stopping": True} if beams > 1
                                                                             else {}))
        for i, row in zip(idx, ids.tolist()):
            rows[i] = until_eos(row, model.config.eos_token_id)
    return rows


def until_eos(row, eos):
    return row[:row.index(eos)] if eos in row else row


@pytest.mark.parametrize("beams", [1, 2])
def test_whisper_decodes_the_same_tokens_as_hf_generate(ending_whisper, beams, monkeypatch):
    """Greedy runs the system's own loop (one batch for all languages), beam search HF `generate` with the
    precomputed suppression: both give HF generate's tokens, token for token, ended rows included, and neither
    runs HF's suppression processors (a `torch.isin` per step each: ~0.1-0.5 s on a busy 2-core CPU)."""
    system = load_system("whisper", CPU, whisper=str(ending_whisper))
    langs, opts = ["eng", "deu", "eng", "fra"], DecodingOptions(max_new_tokens=10, beam_size=beams)
    eos = system.whisper.generation.eos
    from transformers.generation import logits_process as lp

    hf_calls = []
    for task in ("transcribe", "translate"):
        with monkeypatch.context() as m:
            for cls in (lp.SuppressTokensLogitsProcessor, lp.SuppressTokensAtBeginLogitsProcessor):
                m.setattr(cls, "__call__", lambda self, ids, scores: hf_calls.append(1) or scores)
            ours = [until_eos(r, eos) for r in system.decode_ids(CLIPS, langs, task, opts)]
        assert not hf_calls
        assert ours == hf_generate(ending_whisper, CLIPS, langs, task, beams, 10), task
    if beams == 1:  # the case is exercised: rows end at different steps, none at the first (begin-suppressed),
        lengths = [len(r) for r in ours]  # no row holds a suppressed token
        assert len(set(lengths)) > 1 and 0 not in lengths, lengths
        assert not any(45 in r for r in ours) and not any(r[0] == 41 for r in ours)


def test_whisper_groups_of_clips_decode_what_one_batch_does(ending_whisper, monkeypatch):
    """On the CPU greedy decodes clips in groups that fit CPU_CROSS_KV_BYTES: groups of 1 and 2 (rows ending at
    different steps, the shorter groups padded) give the one-batch tokens."""
    from llm_srt.model import whisper_system

    system = load_system("whisper", CPU, whisper=str(ending_whisper))
    langs, opts = ["eng", "deu", "eng", "fra"], DecodingOptions(max_new_tokens=10)
    whole = system.decode_ids(CLIPS, langs, "transcribe", opts)
    dims = system.whisper.dims
    per_clip = 2 * dims.decoder_layers * dims.n_audio_ctx * dims.d_model * 4
    for group in (1, 2):
        monkeypatch.setattr(whisper_system, "CPU_CROSS_KV_BYTES", group * per_clip)
        assert system.decode_ids(CLIPS, langs, "transcribe", opts) == whole, group
    assert len({len(until_eos(r, system.whisper.generation.eos)) for r in whole}) > 1


@pytest.mark.parametrize("beam", [1, 3])
def test_each_row_is_cut_to_its_own_cap_whatever_its_batch(speech_model, folders, beam):
    """A batch decodes to its largest cap and every row ends at its own, so it equals the row decoded alone to its
    cap (as `run_items` runs a batch of one). Greedy cuts each row; beam search stops each row's hypotheses at its
    cap (`decoding.RowCaps`): cut from a batch-mate's larger cap, the last row of each batch here was another."""
    speech = load_system(speech_model, CPU)
    mt = load_system("mt", CPU, llm=str(folders["llm"]))
    whisper = load_system("whisper", CPU, whisper=str(folders["whisper"]))
    opts = replace(OPTS, beam_size=beam)
    for system, items in ((speech, [replace(MIXED[0], max_new_tokens=2), MIXED[1], replace(MIXED[5], max_new_tokens=3),
                                    MIXED[5], Item(CLIPS[1], "eng", None, Task.ASR, max_new_tokens=3)]),
                          (mt, [Item(None, "eng", "deu", Task.MT, "a cat", max_new_tokens=2),
                                Item(None, "eng", "deu", Task.MT, "a black cat"),
                                Item(None, "eng", "deu", Task.MT, "le chien noir", max_new_tokens=2)]),
                          (whisper, [Item(CLIPS[0], "eng", None, Task.ASR, max_new_tokens=2),
                                     Item(CLIPS[1], "eng", None, Task.ASR),
                                     Item(CLIPS[2], "eng", None, Task.ASR, max_new_tokens=3)])):
        out = system.run_batch(items, opts)
        assert out == [system.run_batch([it], replace(opts, max_new_tokens=cap(it, opts)))[0] for it in items], \
            system.name
        assert out[0] != alone(system, [replace(items[0], max_new_tokens=None)], opts)[0], system.name


def test_greedy_rows_leave_the_batch_at_their_own_caps(speech_model, monkeypatch):
    """Greedy decoding ends each row at its own cap, as at EOS: the LLM computes as many rows for a batch as for its
    items each alone to its cap (a row cut from its batch's largest cap decoded on to it), the same outputs, and the
    KV cache is sized for the batch's largest cap, not the options'."""
    from llm_srt.model import decoding
    from llm_srt.model.llm import causal_lm

    system = load_system(speech_model, CPU)
    items = [replace(MIXED[0], max_new_tokens=2), replace(MIXED[1], max_new_tokens=3),
             replace(MIXED[5], max_new_tokens=1), MIXED[5]]
    rows, sized = [], []

    class Sized(decoding.GrowingSteps):
        def __init__(self, lm, embeds, mask, max_new_tokens):
            sized.append(max_new_tokens)
            super().__init__(lm, embeds, mask, max_new_tokens)

    monkeypatch.setattr(decoding, "GrowingSteps", Sized)
    hook = causal_lm(system.model.llm).register_forward_hook(lambda m, a, out: rows.append(out.logits.shape[0]))
    try:
        batched = system.run_batch(items, OPTS)
        batch_rows, batch_sized = sum(rows), list(sized)
        rows.clear()
        each = [system.run_batch([it], replace(OPTS, max_new_tokens=cap(it, OPTS)))[0] for it in items]
    finally:
        hook.remove()
    assert batched == each and batch_rows == sum(rows)
    assert batch_sized == [3, OPTS.max_new_tokens]  # the speech rows' largest cap; the text rows'


def test_token_texts_are_what_batch_decode_gives_each_id():
    """TextMTSystem.token_texts (the table its line-break stop reads) decodes the vocabulary in one call of the
    `tokenizers` backend where the tokenizer decodes as its backend does, special tokens empty; a tokenizer with a
    decode of its own, or one that cleans up spaces, goes through transformers' batch_decode."""
    def texts_of(tok):
        system = TextMTSystem.__new__(TextMTSystem)
        system.tokenizer = tok
        return system.token_texts

    tok = tiny.tokenizer()
    want = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=True)
    assert texts_of(tok) == want and "" in want and "a" in want  # special tokens empty, the others their text

    class OwnDecode(type(tok)):
        def _decode(self, *args, **kwargs):
            return super()._decode(*args, **kwargs).upper()
    own = tiny.tokenizer()
    own.__class__ = OwnDecode
    assert texts_of(own) == [t.upper() for t in want] != want
    cleaned = tiny.tokenizer()
    cleaned.clean_up_tokenization_spaces = True
    cleaned.clean_up_tokenization = lambda text: f"[{text}]"  # what transformers' clean-up would make of each
    assert texts_of(cleaned) == [f"[{t}]" for t in want]


def test_text_mt_system_and_the_cascade(folders):
    mt = load_system("mt", CPU, llm=str(folders["llm"]))
    assert isinstance(mt, TextMTSystem)
    items = [Item(None, "eng", "deu", Task.MT, "a cat"), Item(None, "fra", "eng", Task.MT, "le chien noir"),
             Item(CLIPS[0], "eng", "deu", Task.SRT)]
    out = mt.run_batch(items, OPTS)
    assert out[:2] == alone(mt, items[:2]) and out[2].error and "cascade" in out[2].error
    assert [o.transcript for o in out[:2]] == ["a cat", "le chien noir"]
    assert out[0].translation == mt.translate(["a cat"], ["eng"], ["deu"], OPTS)[0]

    cascade = load_system("cascade", CPU, whisper=str(folders["whisper"]), llm=str(folders["llm"]))
    assert isinstance(cascade, CascadeSystem)
    items = [Item(CLIPS[0], "eng", "deu", Task.SRT), Item(CLIPS[1], "deu", None, Task.ASR),
             Item(CLIPS[2], "fra", "fra", Task.S2TT), Item(None, "fra", "eng", Task.MT, "le chat")]
    out = cascade.run_batch(items, OPTS)
    assert out == alone(cascade, items)
    heard = cascade.asr.decode([CLIPS[0], CLIPS[1], CLIPS[2]], ["eng", "deu", "fra"], "transcribe", OPTS)
    assert [o.transcript for o in out] == heard + ["le chat"]
    assert out[1].translation == "" and out[2].translation == heard[2]
    assert out[3].translation == mt.translate(["le chat"], ["fra"], ["eng"], OPTS)[0]
    if heard[0]:
        assert out[0].translation == mt.translate([heard[0]], ["eng"], ["deu"], OPTS)[0]


def test_text_mt_blocks_repeated_ngrams_in_its_translation_only(folders, monkeypatch):
    """--no-repeat-ngram in text MT (the cascade's second pass): n-grams of the translation may not repeat, those
    of the prompt (its source sentence: names, numbers) may be written again, unlike HF's own
    no_repeat_ngram_size over the whole input."""
    from transformers import NoRepeatNGramLogitsProcessor

    from llm_srt.model.decoding import NewTokensOnly

    block = NewTokensOnly(NoRepeatNGramLogitsProcessor(2), prompt_length=3)
    banned = block(torch.tensor([[5, 6, 7, 5, 6, 5]]), torch.zeros(1, 10))
    assert banned[0].isinf().nonzero().flatten().tolist() == [6]  # 5 6 was written: not again after 5
    assert not block(torch.tensor([[5, 6, 7, 6]]), torch.zeros(1, 10)).isinf().any()  # 6 7 is the prompt's

    mt = TextMTSystem(folders["llm"], CPU)
    seen = []
    real = mt.model.generate

    def generate(**kwargs):
        out = real(**kwargs)
        seen.append((kwargs, out[:, kwargs["input_ids"].shape[1]:].tolist()))
        return out
    monkeypatch.setattr(mt.model, "generate", generate)
    mt.translate(["a cat a cat a cat", "le chien"], ["eng", "fra"], ["deu", "eng"],
                 replace(OPTS, max_new_tokens=40, no_repeat_ngram_size=2))
    [(kwargs, new)] = seen
    [_, rule] = kwargs["logits_processor"]  # (the first: decoding.FirstScoresCheck)
    assert isinstance(rule, NewTokensOnly) and rule.start == kwargs["input_ids"].shape[1]
    assert isinstance(rule.processor, NoRepeatNGramLogitsProcessor) and rule.processor.ngram_size == 2
    assert kwargs["generation_config"].no_repeat_ngram_size == 0
    for row in new:
        grams = [g for g in zip(row, row[1:]) if mt.tokenizer.pad_token_id not in g]
        assert len(grams) == len(set(grams))


def hf_translate(mt, text, src, tgt, cap, **search):
    """One text alone through HF `generate` from the MT prompt, stopped by the tokenizer's and the model's end ids
    -> the first line of its answer, as TextMTSystem answers."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.systems import MT_TEMPLATE

    prompt = MT_TEMPLATE.format(src=languages.get(src).name, tgt=languages.get(tgt).name, text=text)
    batch = mt.tokenizer([prompt], return_tensors="pt")
    with torch.inference_mode():
        ids = mt.model.generate(**batch, do_sample=False, max_new_tokens=cap,
                                eos_token_id=eos_ids(mt.model, mt.tokenizer),
                                pad_token_id=mt.tokenizer.pad_token_id, **search)
    answer = mt.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return answer.strip().split("\n")[0].strip()


def test_text_mt_beam_search_takes_the_options_length_penalty_and_early_stopping(folders):
    """The cascade's text MT searches as the speech LLM does (`decoding.generation_config`): the options' length
    penalty and early stopping, and the end ids of the tokenizer and the model. Each text of a left-padded batch
    gets what HF `generate` gives it alone with those settings (it ran transformers' defaults: early stopping off,
    the length penalty of the folder)."""
    mt = TextMTSystem(folders["llm"], CPU)
    with torch.no_grad():  # EOS scored near a frequent token's: hypotheses end at different steps
        mt.model.lm_head.weight[mt.tokenizer.eos_token_id] = mt.model.lm_head.weight[
            mt.tokenizer.convert_tokens_to_ids("N")] * 1.01
    texts, srcs, tgts = ["a cat", "le chien noir", "der Hund", "a big red house"], ["eng", "fra", "deu", "eng"], \
        ["deu", "eng", "fra", "fra"]
    caps = [min(12, 2 * len(mt.tokenizer(x)["input_ids"]) + 16) for x in texts]
    seen = set()
    for penalty, early in [(1.0, True), (1.0, False), (-2.0, True), (3.0, False)]:
        opts = DecodingOptions(max_new_tokens=12, beam_size=3, length_penalty=penalty, early_stopping=early)
        ours = mt.translate(texts, srcs, tgts, opts)
        assert ours == [hf_translate(mt, x, s, t, c, num_beams=3, length_penalty=penalty, early_stopping=early)
                        for x, s, t, c in zip(texts, srcs, tgts, caps)], (penalty, early)
        seen.add(tuple(ours))
    assert len(seen) > 1  # the settings change some answer: the case is exercised


def test_text_mt_applies_the_options_repetition_penalty_to_its_translation_only(folders):
    """A repetition penalty counts the translation's tokens, not the prompt's (its source sentence's names and
    numbers), as the speech LLM's from embeddings; the folder's own sampling settings and repetition penalty do not
    apply (the options decide, as `evaluate`'s report records them)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from llm_srt.model.decoding import FirstScoresCheck, NewTokensOnly

    rule = NewTokensOnly(RepetitionPenaltyLogitsProcessor(2.0), prompt_length=3)
    scores = rule(torch.tensor([[1, 2, 3, 4]]), torch.ones(1, 6))
    assert scores[0].tolist() == [1, 1, 1, 1, 0.5, 1]  # 4 was written; 1-3 are the prompt's

    mt = TextMTSystem(folders["llm"], CPU)
    texts, srcs, tgts = ["a cat a cat", "le chien"], ["eng", "fra"], ["deu", "eng"]
    opts = replace(OPTS, max_new_tokens=16)
    plain = mt.translate(texts, srcs, tgts, opts)
    config = mt.model.generation_config
    saved = (config.repetition_penalty, config.temperature, config.do_sample)
    try:
        config.repetition_penalty, config.temperature, config.do_sample = 3.0, 0.7, True
        assert mt.translate(texts, srcs, tgts, opts) == plain
    finally:
        config.repetition_penalty, config.temperature, config.do_sample = saved
    seen = []
    real = mt.model.generate
    mt.model.generate = lambda **kwargs: seen.append(kwargs) or real(**kwargs)
    penalized = mt.translate(texts, srcs, tgts, replace(opts, repetition_penalty=3.0))
    assert penalized != plain
    [check, rule] = seen[0]["logits_processor"]  # over the translation: from the end of the left-padded prompts
    assert isinstance(check, FirstScoresCheck)
    assert isinstance(rule, NewTokensOnly) and rule.start == seen[0]["input_ids"].shape[1]
    assert seen[0]["generation_config"].repetition_penalty == 1.0  # not HF's own over the prompt as well


@pytest.mark.parametrize("beam", [1, 2])
def test_text_mt_of_an_llm_whose_scores_are_nan_is_an_error_not_empty_answers(folders, beam):
    """The cascade's text MT as the speech LLM's decoding: NaN next-token scores (an LLM overflowing float16) are an
    error naming them, where every answer came back empty (token 0 to the cap)."""
    from llm_srt.model.llm import causal_lm

    mt = TextMTSystem(folders["llm"], CPU)
    head = causal_lm(mt.model).get_output_embeddings()
    hook = head.register_forward_hook(lambda module, args, out: torch.full_like(out, float("nan")))
    try:
        with pytest.raises(LLMSRTError, match=r"next-token scores are not numbers \(NaN\) for 2 of 2 rows"):
            mt.translate(["a cat", "le chien"], ["eng", "fra"], ["deu", "eng"], replace(OPTS, beam_size=beam))
    finally:
        hook.remove()
    assert len(mt.translate(["a cat"], ["eng"], ["deu"], replace(OPTS, beam_size=beam))) == 1


def test_text_mt_of_a_speech_llm_runs_its_llm_with_the_lora(tmp_path):
    """`TextMTSystem.of_speech_llm`: the plain LLM's MT prompt through the speech LLM's own LLM, its LoRA applied
    (an untrained LoRA changes nothing; a trained one changes the translations; dropout off) and no copy made."""
    from llm_srt.model.llm import LoraOptions

    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path, init_std=0.3, lora=LoraOptions(r=4, alpha=8, dropout=0.5,
                                                                    target_modules=("q_proj", "v_proj")))
    llm_folder = model.config.llm
    texts, srcs, tgts = ["a cat sat", "the dog ran home", "it rains"], ["eng"] * 3, ["deu", "fra", "deu"]
    plain = TextMTSystem(llm_folder, CPU).translate(texts, srcs, tgts, OPTS)
    model.train()
    mt = TextMTSystem.of_speech_llm(model, "run")
    assert mt.model is model.llm and not model.training and mt.placement == CPU and mt.name == "run"
    assert mt.translate(texts, srcs, tgts, OPTS) == plain  # peft's B starts at zero
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=2.0)
    once = mt.translate(texts, srcs, tgts, OPTS)
    assert once != plain and mt.translate(texts, srcs, tgts, OPTS) == once  # the LoRA counts, without dropout
    with model.llm.disable_adapter():
        assert mt.translate(texts, srcs, tgts, OPTS) == plain
    with pytest.raises(TypeError, match="SpeechLLM"):
        TextMTSystem.of_speech_llm(object())


def test_dtype_follows_the_placement(folders, speech_model):
    bf16 = device.resolve("cpu", "bfloat16")
    whisper = WhisperSystem(folders["whisper"], bf16)
    assert whisper.whisper.dtype == torch.bfloat16 and whisper.whisper.device.type == "cpu"
    assert all(o.error is None for o in whisper.run_batch([Item(CLIPS[0], "eng", None, Task.ASR)], OPTS))
    assert TextMTSystem(folders["llm"], bf16).model.dtype == torch.bfloat16
    system = load_system(speech_model, bf16)
    assert system.model.llm_dtype == torch.bfloat16
    assert system.run_batch([MIXED[0]], OPTS)[0].error is None


def test_whisper_in_int8_on_the_cpu(ending_whisper):
    """--dtype int8: every linear layer (encoder, decoder, the tied head as a copy) is an Int8Linear; the greedy
    loop decodes the same tokens as HF generate on the same int8 model from the same encoder states (int8
    activations are quantized over the whole input, so the encoder's batching moves the last bits: the states are
    shared here)."""
    from transformers.modeling_outputs import BaseModelOutput

    from llm_srt.model.int8_linear import Int8Linear
    from llm_srt.model.whisper_system import _whisper
    from llm_srt.model.whisper_torch import SuppressTokens

    system = WhisperSystem(ending_whisper, device.resolve("cpu", "int8"))
    w = system.whisper
    linears = [m for m in w.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    assert linears and all(isinstance(m, Int8Linear) for m in linears)
    assert w.dtype == torch.float32 and isinstance(w.head, Int8Linear)
    hf = _whisper(system.folder, CPU.device, device.resolve("cpu", "int8").dtype)
    assert isinstance(hf.proj_out, Int8Linear)
    mel = w.mel(CLIPS)
    prompts = torch.tensor([system.prompt("eng", "transcribe")] * len(CLIPS))
    with torch.inference_mode():
        states = system.encode(mel)
        g = w.generation
        ref = hf.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), language="en",
                          task="transcribe", max_new_tokens=6,
                          logits_processor=[SuppressTokens(w.dims.n_vocab, g.suppress, g.begin_suppress, CPU.device)])
        ours = w.greedy(states, prompts, 6)
    eos = w.generation.eos
    assert [until_eos(r, eos) for r in ours.tolist()] == [until_eos(r, eos) for r in ref.tolist()]
    assert all(o.error is None for o in system.run_batch([Item(CLIPS[0], "eng", None, Task.ASR)], OPTS))


def test_detect_language_without_language_tokens_is_a_clear_error(tmp_path):
    folder = tiny.whisper_dir(tmp_path)  # vocabulary without <|en|> etc.
    with pytest.raises(LLMSRTError, match="no language tokens.*--src"):
        detect_language(folder, CLIPS[0], CPU)


class Flaky:
    """Raises CUDA out-of-memory for batches larger than `fits`; else echoes each item's source language."""

    name = "flaky"
    placement = CPU

    def __init__(self, fits: int):
        self.fits, self.calls = fits, []

    def run_batch(self, items, options):
        self.calls.append(len(items))
        if len(items) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Output(it.src, it.tgt or "") for it in items]

    def detect_language(self, audio):
        return "eng"


class BrokenGPU(Flaky):
    """Every batch fails with `error`, as every call does once CUDA has hit a device-side assert."""

    def __init__(self, error: Exception):
        super().__init__(fits=0)
        self.error = error

    def run_batch(self, items, options):
        self.calls.append(len(items))
        raise self.error


@pytest.mark.parametrize("error", [torch.AcceleratorError("CUDA error: device-side assert triggered"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered")])
def test_a_cuda_error_that_breaks_the_gpu_stops_the_run_instead_of_failing_every_row_in_halves(error):
    """A device-side assert or an illegal access leaves the CUDA context broken for the process: retrying in halves
    made 2n - 1 calls per batch (124 for 64 rows), every row an error called retryable, batch after batch."""
    items = [Item(CLIPS[i % 4], code, "deu", Task.SRT) for i, code in enumerate(["eng", "fra", "deu", "jpn"] * 2)]
    broken = BrokenGPU(error)
    with pytest.raises(LLMSRTError, match=r"the GPU failed on a batch of 4 .*CUDA error.*run it again"):
        run_items(broken, items, OPTS, batch_size=4)
    assert broken.calls == [4]
    for shaped in ("CUDA error: out of memory", "CUDA error: invalid configuration argument",  # memory, or a
                   "CUDA error: too many resources requested for launch"):  # batch's shape: the halves may run
        halves = BrokenGPU(torch.AcceleratorError(shaped))
        assert all(o.error for o in run_items(halves, items[:2], OPTS, batch_size=2)) and halves.calls == [2, 1, 1]


def test_a_failing_batch_is_retried_in_halves_down_to_single_rows(monkeypatch):
    from llm_srt.model.static_steps import StaticSteps

    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    model = torch.nn.Linear(1, 1)  # a model whose kept static caches (--compile) hold GPU memory
    monkeypatch.setattr(StaticSteps, "_caches", weakref.WeakKeyDictionary({model: {(4, 256): "kv", (2, 256): "kv"}}))
    items = [Item(CLIPS[i % 4], code, "deu", Task.SRT) for i, code in enumerate(["eng", "fra", "deu", "jpn"])]
    flaky = Flaky(fits=2)
    out = run_items(flaky, items, OPTS, batch_size=4)
    assert flaky.calls == [4, 2, 2] and [o.transcript for o in out] == ["eng", "fra", "deu", "jpn"]
    assert freed == [1] and not StaticSteps._caches  # the static caches and the CUDA cache freed before the halves
    assert all(o.error is None for o in out)
    flaky = Flaky(fits=1)  # the halves do not fit either: their halves, single rows, do
    out = run_items(flaky, items, OPTS, batch_size=4)
    assert flaky.calls == [4, 2, 1, 1, 2, 1, 1] and all(o.error is None for o in out)
    flaky = Flaky(fits=0)  # not even one row fits: every row fails, counted, none dropped
    out = run_items(flaky, items, OPTS, batch_size=4)
    assert flaky.calls == [4, 2, 1, 1, 2, 1, 1] and len(out) == 4
    assert all(o.error.startswith("OutOfMemoryError: CUDA out of memory") for o in out)
    results = SpeechTranslator(Flaky(fits=0)).translate(CLIPS, "eng", "deu", options=OPTS, batch_size=4)
    assert all(r.error and r.segments and not r.kept and r.translation == "" for r in results)


def test_items_no_system_can_run_fail_alone_before_the_batch():
    items = [Item(CLIPS[0], "eng", "deu", Task.SRT), Item(CLIPS[1], "xxx", "deu", Task.SRT),
             Item(None, "eng", "deu", Task.SRT), Item(None, "eng", "deu", Task.MT, ""),
             Item(CLIPS[2], "eng", None, Task.S2TT), Item(None, "fra", "eng", Task.MT, "le chat"),
             # past Whisper's window: the encoder refuses it, Whisper's log-mel would decode its first 30 s as whole
             Item(tiny.tone(31.0, 300), "eng", "deu", Task.ASR),
             Item(tiny.tone(30.0, 300), "eng", "deu", Task.ASR)]
    flaky, done = Flaky(fits=8), []
    out = run_items(flaky, items, OPTS, batch_size=8, progress=done.append)
    assert flaky.calls == [3] and sum(done) == len(items)
    assert [o.error is None for o in out] == [True, False, False, False, False, True, False, True]
    assert "unknown language code 'xxx'" in out[1].error and "needs audio" in out[2].error
    assert "needs a transcript" in out[3].error and "needs a target language" in out[4].error
    assert out[6].error.endswith("31.0 s is longer than Whisper's 30 s window; segment long audio first "
                                 "(llm_srt.segment.segment; `llm-srt translate` does)")


def test_output_cap_follows_the_target_script():
    deu, jpn, tha = (max_new_tokens(10, Task.S2TT, 10_000, "eng", t) for t in ("deu", "jpn", "tha"))
    assert deu < jpn == tha
    assert max_new_tokens(10, Task.SRT, 10_000, "eng", "deu") < max_new_tokens(10, Task.SRT, 10_000, "zho", "deu")
    assert max_new_tokens(10, Task.ASR, 10_000, "eng", None) < max_new_tokens(10, Task.SRT, 10_000, "eng", "deu")
    assert max_new_tokens(600, Task.SRT, 256, "eng", "deu") == 256
    short, long = Item(None, "eng", "deu", Task.MT, "hi"), Item(None, "eng", "jpn", Task.MT, "hello there " * 5)
    assert item_budget(short, 256) < item_budget(long, 256) <= 256


def test_infer_and_systems_import_nothing_above_them():
    code = ("import sys, json, llm_srt.infer, llm_srt.model.systems; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('llm_srt'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    above = {"evaluate", "serve", "train", "bench", "demo", "cli", "translate"}  # translate.py imports infer.py
    upward = [m for m in loaded if set(m.split(".")[1:2]) & above]
    assert "llm_srt.infer" in loaded and not upward, upward


def test_auto_is_what_the_model_folder_was_trained_for_read_before_it_loads(speech_model, tmp_path):
    """`--task auto` (translate, evaluate, the Python API, a request without task) is the folder's training, read
    from its train_config.json in one place (systems.trained_task): s2tt for a Baseline, asr for an ASR stage, an
    SMT stage's two passes; srt for an SRT stage, a text-only stage, a folder without the file and the baselines.
    Before, translate and serve ran a Baseline folder with the SRT prompt."""
    from llm_srt.evaluate import run
    from llm_srt.model.systems import auto_task, system_trained, trained_task, trained_tasks

    cases = {"s2tt": ({"s2tt": 1.0}, Task.S2TT), "asr": ({"asr": 1.0}, Task.ASR),
             "smt": ({"smt": 0.8, "asr": 0.2}, Task.ASR_SMT), "srt": ({"asr": 0.2, "srt": 0.8}, Task.SRT),
             "tie": ({"s2tt": 0.5, "srt": 0.5}, Task.S2TT), "mt": ({"mt": 1.0}, Task.SRT), "none": (None, Task.SRT)}
    for name, (tasks, task) in cases.items():
        assert trained_task(tiny.trained_folder(speech_model, tmp_path / name, tasks)) is task, name
    assert trained_tasks(tmp_path / "smt") == (Task.SMT, Task.ASR) and trained_tasks(tmp_path / "none") == ()
    assert all(trained_task(name) is Task.SRT for name in ("whisper", "cascade", "mt"))
    assert run.model_task is trained_task  # evaluate's --task auto is the same function
    for text in ("{", '{"data": {"tasks": {"podcast": 1}}}', '{"data": {"tasks": ["srt"]}}', "[]"):
        (tmp_path / "none" / "train_config.json").write_text(text)
        with pytest.raises(LLMSRTError, match=r"^\S+train_config.json: cannot read the tasks the model was trained "
                                              r"on \(.+\); give the task \(--task, a request's task\), or fix or "
                                              r"remove the file \(a folder without it runs srt\)$"):
            trained_task(tmp_path / "none")
    from llm_srt.train import checkpoint

    # a checkpoint folder is a model folder too: its saved config's tasks (until a review it ran srt)
    checkpoint.save(tmp_path / "run", 4, lambda folder: folder.mkdir(parents=True, exist_ok=True),
                    {"config": {"data": {"tasks": {"s2tt": 1.0}}}})
    assert trained_task(tmp_path / "run" / "checkpoints" / "step-00000004") is Task.S2TT
    # a loaded folder's system knows it (read once, when first asked); a model built in memory and the others: srt
    system = load_system(tmp_path / "s2tt", CPU)
    assert auto_task(system) is Task.S2TT and system_trained(system) == (Task.S2TT,)
    assert SpeechTranslator(system).auto_task is Task.S2TT
    assert auto_task(SpeechLLMSystem(system.model)) is Task.SRT and auto_task(object()) is Task.SRT


@pytest.mark.cuda
def test_translate_on_cuda_in_bfloat16(speech_model):
    t = SpeechTranslator.from_pretrained(speech_model, device="cuda", dtype="bfloat16")
    assert t.system.placement.cuda and t.system.model.llm_dtype == torch.bfloat16
    results = t.translate(CLIPS, ["eng", "deu", "fra", "eng"], ["deu", "eng", "eng", "fra"], options=OPTS)
    assert all(r.error is None for r in results)


@pytest.mark.cuda
def test_whisper_and_cascade_on_cuda_in_bfloat16(folders):
    cuda = device.resolve("cuda", "bfloat16")
    cascade = load_system("cascade", cuda, whisper=str(folders["whisper"]), llm=str(folders["llm"]))
    assert cascade.asr.whisper.dtype == torch.bfloat16 and cascade.asr.whisper.device.type == "cuda"
    out = cascade.run_batch([Item(CLIPS[0], "eng", "deu", Task.SRT), Item(None, "fra", "eng", Task.MT, "chat")],
                            OPTS)
    assert all(o.error is None for o in out)


@pytest.mark.integration
@pytest.mark.slow  # the embedded Gemma's six generations (52 s alone, 61 s in a loaded make test); in make test:
#   test_decoding's test_first_line_end_stops_a_row_at_a_line_break_after_text_only (the stop on a vocabulary),
#   test_token_texts_are_what_batch_decode_gives_each_id and test_text_mt_system_and_the_cascade (tiny models)
def test_text_mt_stops_at_a_line_break_with_the_same_first_line(embedded):
    """Greedy text MT stops each row at its first line break after text: the answer (the first line that is not
    blank) is the one a generation to the cap gives, with a line break made the first token, and made likely
    throughout (embedded Gemma: the tiny tokenizer has no line-break token)."""
    from llm_srt.model.decoding import eos_ids
    from llm_srt.model.systems import MT_TEMPLATE

    mt = load_system("mt", CPU)
    tok = mt.tokenizer
    assert mt.token_texts == tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=True)  # the
    #   backend's batch decode (Gemma decodes as its backend does), as transformers' id by id
    newline = tok.convert_tokens_to_ids(tok.tokenize("\n"))[-1]
    assert mt.token_texts[newline] == "\n"
    args = (["a cat sat", "le chien noir", "der Hund"], ["eng", "fra", "deu"], ["deu", "eng", "eng"])

    def first_lines_without_stops():
        batch = tok([MT_TEMPLATE.format(src=languages.get(s).name, tgt=languages.get(t).name, text=x)
                     for x, s, t in zip(*args)], return_tensors="pt", padding=True, padding_side="left")
        caps = [min(OPTS.max_new_tokens, 2 * len(tok(x)["input_ids"]) + 16) for x in args[0]]
        ids = mt.model.generate(**batch, do_sample=False, max_new_tokens=max(caps), pad_token_id=tok.pad_token_id)
        new = [r[:c] for r, c in zip(ids[:, batch["input_ids"].shape[1]:].tolist(), caps)]
        answers = tok.batch_decode(new, skip_special_tokens=True)
        rows[:] = new
        # cut at its cap: a row that wrote no end token and no line break after text within it
        unended.clear()
        unended.update(i for i, (r, a) in enumerate(zip(new, answers)) if not set(r) & ends and "\n" not in a.lstrip())
        return [a.strip().split("\n")[0].strip() for a in answers]

    ends, unended, cut, rows = set(eos_ids(mt.model, tok)), set(), set(), []
    assert mt.translate(*args, OPTS, capped=cut) == first_lines_without_stops() and cut == unended
    head = mt.model.get_output_embeddings()

    passes = []

    def newline_first(module, inputs, logits):  # a generation's first pass (the prompt's): its first new token
        if not passes:
            logits[:, -1, newline] = logits[:, -1].max() + 10
        passes.append(1)
    hook = head.register_forward_hook(newline_first)
    try:
        cut.clear()
        answers = mt.translate(*args, OPTS, capped=cut)
        passes.clear()
        expected = first_lines_without_stops()
    finally:
        hook.remove()
    assert all(answers) and answers == expected and cut == unended  # a leading line break ends no answer
    with torch.no_grad():  # the line break becomes likely: rows end early, and the answer is still the same
        head.weight[newline] = head.weight[newline] * 0 + head.weight.abs().max() * 0.2
    cut.clear()
    assert mt.translate(*args, OPTS, capped=cut) == first_lines_without_stops() and cut == unended
    # each row's tokens to its end (its end token or the line break after text): a row given exactly those is
    # not cut, one given a token fewer is
    ended = [next((k for k in range(1, len(r) + 1) if set(r[:k]) & ends
                   or "\n" in tok.decode(r[:k], skip_special_tokens=True).lstrip()), None) for r in rows]
    assert None not in ended and max(ended) > 1, ended
    cut.clear()
    mt.translate(*args, OPTS, caps=[n - (k == 0) for k, n in enumerate(ended)], capped=cut)
    assert cut == {0}


def test_a_speech_llms_one_part_output_ends_at_its_next_language_tag():
    """An SRT-trained model asked for a transcript (ASR) may go on with the tags and a translation, which counted as
    inserted words (and in asr+smt went into the SMT prompt); a translation-only task's output likewise."""
    from llm_srt.model.protocol import split_output

    asr = split_output("Will it rain?<|eng|><|deu|>Regnet es?", Item(None, "eng", None, Task.ASR))
    s2tt = split_output("Regnet es?<|deu|><|eng|>Will it rain?", Item(None, "eng", "deu", Task.S2TT))
    both = split_output("Will it rain?<|eng|><|deu|>Regnet es?", Item(None, "eng", "deu", Task.S2TT))  # SRT's
    assert (asr.transcript, asr.translation, s2tt.translation, both.translation) == (  # prompt is S2TT's
        "Will it rain?", "", "Regnet es?", "Regnet es?")
