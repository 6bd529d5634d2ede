"""The whisper system's HF `generate` path takes the DecodingOptions' length penalty, repetition penalty and early
stopping, as the speech LLM's does (`decoding.generation_config`). Before, they were never passed: the folder's
generation config (transformers' defaults) decided, while evaluate's report recorded the options' values."""

import pytest
import torch

import tiny
from llm_srt import device, languages
from llm_srt.model import whisper_system
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.whisper_system import WhisperSystem

CPU = device.resolve("cpu")
CLIPS = [tiny.tone(0.5 + 0.3 * k, 200 + 150 * k, seed=k) for k in (0, 3, 5)]
LANGS = ["eng", "spa", "deu"]
FORWARDED = ("length_penalty", "repetition_penalty", "early_stopping")


@pytest.fixture(scope="module")
def ending(tmp_path_factory):
    """The tiny Whisper made to end rows at different steps (EOS's output row ~ a frequent token's), so that beam
    hypotheses finish at different lengths: what length penalty and early stopping rank and stop on."""
    from transformers import WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("options")
    source = tiny.whisper_lid_dir(root)
    model = WhisperForConditionalGeneration.from_pretrained(source)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.proj_out.weight[eos] = model.proj_out.weight[26] * 1.01
    model.generation_config.begin_suppress_tokens = [eos, 41]
    path = root / "ending"
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (path / name).write_bytes((source / name).read_bytes())
    whisper_system.release_models(CPU.device)
    yield path
    whisper_system.release_models(CPU.device)


def spy(system, monkeypatch) -> list[dict]:
    """The keyword arguments of each HF `generate` call the system makes."""
    hf = whisper_system._whisper(system.folder, CPU.device, CPU.dtype)
    calls, real = [], hf.generate
    monkeypatch.setattr(hf, "generate", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    return calls


@pytest.fixture(scope="module")
def reference(ending):
    """beams, max_new, settings -> HF `generate` with its own suppression processors, each clip's language,
    `settings` passed: each clip's tokens up to its first end token."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(ending).eval()
    return lambda beams, max_new, **settings: hf_tokens(model, ending, beams, max_new, **settings)


def hf_tokens(model, folder, beams, max_new, **settings):
    """HF `generate` of `model` (the folder's) on CLIPS, with its own suppression processors, each clip's language,
    `settings` passed: each clip's tokens up to its first end token."""
    from transformers import WhisperFeatureExtractor

    mel = WhisperFeatureExtractor.from_pretrained(folder)(CLIPS, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(mel.input_features, language=[languages.get(x).whisper for x in LANGS],
                             task="transcribe", num_beams=beams, max_new_tokens=max_new, **settings)
    return [until_eos(row, model.config.eos_token_id) for row in ids.tolist()]


def until_eos(row, eos):
    return row[:row.index(eos)] if eos in row else row


def ours(system, options):
    return [until_eos(r, system.whisper.generation.eos)
            for r in system.decode_ids(CLIPS, LANGS, "transcribe", options)]


def test_generate_gets_the_options_penalties_and_early_stopping(ending, monkeypatch):
    """Beam search gets all three; a repetition penalty in greedy decoding goes through `generate` too (the torch
    loop has none), early stopping off there (as `decoding.generation_config` sets it); plain greedy never calls
    `generate`."""
    system = WhisperSystem(ending, CPU)
    calls = spy(system, monkeypatch)
    asked = [DecodingOptions(max_new_tokens=6, beam_size=3, length_penalty=0.5, repetition_penalty=1.3,
                             early_stopping=False),
             DecodingOptions(max_new_tokens=6, beam_size=2),
             DecodingOptions(max_new_tokens=6, repetition_penalty=1.3)]
    for options in asked:
        system.decode_ids(CLIPS[:2], LANGS[:2], "transcribe", options)
    assert [{k: kw[k] for k in FORWARDED} for kw in calls] == [
        {"length_penalty": 0.5, "repetition_penalty": 1.3, "early_stopping": False},
        {"length_penalty": 1.0, "repetition_penalty": 1.0, "early_stopping": True},
        {"length_penalty": 1.0, "repetition_penalty": 1.3, "early_stopping": False}]
    system.decode_ids(CLIPS[:2], LANGS[:2], "transcribe", DecodingOptions(max_new_tokens=6))
    assert len(calls) == 3


def test_the_options_take_effect(ending, reference):
    """Each non-default value gives HF generate's tokens with that value, and other tokens than the default's
    (the case is exercised)."""
    system = WhisperSystem(ending, CPU)
    cases = [(1, {"repetition_penalty": 1.5}), (2, {"length_penalty": 0.0}),
             (2, {"early_stopping": False}), (2, {"repetition_penalty": 1.5})]
    default = {beams: ours(system, DecodingOptions(max_new_tokens=10, beam_size=beams)) for beams in (1, 2)}
    for beams, settings in cases:
        got = ours(system, DecodingOptions(max_new_tokens=10, beam_size=beams, **settings))
        extra = {"early_stopping": True} if beams > 1 else {}
        assert got == reference(beams, 10, **{**extra, **settings}), settings
        assert got != default[beams], settings


@pytest.mark.parametrize("beams", [2, 3])
def test_default_penalties_give_the_tokens_generate_gave_without_them(ending, reference, beams):
    """Length and repetition penalty 1.0 are transformers' defaults: with early stopping as `generate` left it
    (off), beam search gives the tokens of a `generate` call without the three, as before."""
    system = WhisperSystem(ending, CPU)
    got = ours(system, DecodingOptions(max_new_tokens=12, beam_size=beams, early_stopping=False))
    assert got == reference(beams, 12)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_generates_whisper_holds_the_torch_whispers_weights(ending, dtype):
    """`generate`'s Whisper (beam search, no-repeat n-grams, a repetition penalty) was a second whole copy of the
    folder beside the torch Whisper the system decodes greedily with (Whisper large-v3: 6.2 GB more in float32).
    Every tensor of it is the torch Whisper's (int8: its Int8Linear layers themselves, the head too), and it
    decodes what transformers' own loading of the folder decodes (int8: quantized as `quantize_int8` does)."""
    from transformers import WhisperForConditionalGeneration

    from llm_srt.model.int8_linear import Int8Linear, quantize_int8

    placement = device.resolve("cpu", dtype)
    system = WhisperSystem(ending, placement)
    asked = [(2, {"early_stopping": True}), (1, {"no_repeat_ngram_size": 2})]
    got = [ours(system, DecodingOptions(max_new_tokens=10, beam_size=beams, **settings)) for beams, settings in asked]
    hf, w = whisper_system._whisper(system.folder, placement.device, placement.dtype), system.whisper
    held = {t.data_ptr() for t in w.state_dict().values()}
    assert all(t.data_ptr() in held for t in hf.state_dict().values())
    assert hf.model.decoder.embed_tokens.weight.data_ptr() == w.model.decoder.embed_tokens.weight.data_ptr()
    int8 = [m for m in hf.modules() if isinstance(m, Int8Linear)]
    assert {id(m) for m in int8} == {id(m) for m in w.modules() if isinstance(m, Int8Linear)}
    assert bool(int8) == (dtype == "int8") and (hf.proj_out is w.head) == (dtype == "int8")
    model = WhisperForConditionalGeneration.from_pretrained(ending).eval()
    if dtype == "int8":
        quantize_int8(model)
    assert got == [hf_tokens(model, ending, beams, 10, **settings) for beams, settings in asked]
    assert got[0] != got[1]  # two searches: other tokens


def test_greedy_generate_stops_each_clip_at_its_own_cap(ending):
    """Greedy decoding with a repetition penalty runs through HF `generate`, which went on to the batch's largest
    cap while a clip already at its own cap ran on (its tokens cut off afterwards): each clip stops at its cap now
    (`decoding.RowCaps`), so the batch ends when its clips have ended or reached their caps; same tokens."""
    system = WhisperSystem(ending, CPU)
    clips = [tiny.tone(0.5 + 0.3 * k, 200 + 150 * k, seed=k) for k in range(8)]
    langs = ["eng", "spa", "deu"] * 2 + ["eng", "spa"]
    options = DecodingOptions(max_new_tokens=40, repetition_penalty=1.3)
    hf = whisper_system._whisper(system.folder, CPU.device, CPU.dtype)
    steps = []
    hook = hf.model.decoder.register_forward_hook(lambda *args: steps.append(1))
    try:
        whole = system.decode_ids(clips, langs, "transcribe", options)
        uncapped = len(steps)
        longest = max(range(8), key=lambda i: len(until_eos(whole[i], system.whisper.generation.eos)))
        caps = [40] * 8
        caps[longest] = 2  # the clip that runs longest, stopped early: the others end sooner
        steps.clear()
        capped = system.decode_ids(clips, langs, "transcribe", options, caps=caps)
    finally:
        hook.remove()
    assert len(steps) < uncapped, (len(steps), uncapped)
    eos = system.whisper.generation.eos
    assert [until_eos(r, eos) for r in capped] == [until_eos(r, eos)[:c] for r, c in zip(whole, caps)]
