"""English-only Whispers (`tiny.en` ... `medium.en`: no language tokens) in the whisper system and the cascade.

openai-whisper and transformers decode them from <|startoftranscript|> <|notimestamps|> alone (no language, no
task token). They were refused even for English ASR ("this Whisper cannot transcribe eng"); now English ASR runs
from that prompt, a row into English from English is its transcript, and anything else fails alone with a line
that says why (English-only) and what to do (a multilingual Whisper). Language ID refuses (--src eng)."""

import json
import shutil

import pytest
import torch

import tiny
from llm_srt import device
from llm_srt.errors import LLMSRTError
from llm_srt.model import whisper_system
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import CANNOT_RUN, Item, Output
from llm_srt.model.systems import CascadeSystem, TextMTSystem
from llm_srt.model.whisper_system import WhisperSystem, detect_language
from llm_srt.prompts import Task

CPU = device.resolve("cpu")
OPTS = DecodingOptions(max_new_tokens=8)
CLIPS = [tiny.tone(0.7, 300), tiny.tone(1.6, 650, seed=1), tiny.tone(1.1, 900, seed=2)]
WHY = r"an English-only Whisper \(no language tokens in its generation_config\.json\) transcribes English \(eng\) only"


def english_only(multilingual, path, layout):
    """`multilingual` (tiny.whisper_lid_dir: every special token in its vocabulary, as a `.en` vocabulary has them
    too) with an English-only generation config: "hub" as `openai/whisper-*.en` ship it (no lang_to_id or
    task_to_id, forced_decoder_ids [[1, <|notimestamps|>]]); "converted" as `convert` wrote it from a CTranslate2
    `.en` model before (an empty lang_to_id, the task tokens, no forced ids)."""
    shutil.copytree(multilingual, path)
    config = json.loads((path / "generation_config.json").read_text())
    config["is_multilingual"] = False
    if layout == "hub":
        del config["lang_to_id"], config["task_to_id"]
        config["forced_decoder_ids"] = [[1, config["no_timestamps_token_id"]]]
    else:
        config["lang_to_id"] = {}
    (path / "generation_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("english-only")
    lid = tiny.whisper_lid_dir(root)
    return {"multilingual": lid, "llm": tiny.llm_dir(root, init_std=0.3),
            **{layout: english_only(lid, root / layout, layout) for layout in ("hub", "converted")}}


@pytest.fixture(autouse=True)
def fresh_models():
    whisper_system.release_models(CPU.device)
    yield
    whisper_system.release_models(CPU.device)


def special(folder, token):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(token)


@pytest.mark.parametrize("layout", ["hub", "converted"])
def test_english_asr_is_decoded_from_start_and_no_timestamps(folders, layout):
    """The prompt is start, no-timestamps from the model's own tables (a multilingual Whisper's: start, <|en|>,
    <|transcribe|>, no-timestamps); every decoding path (greedy loop, HF greedy with n-gram blocking, beam search)
    starts from it."""
    system = WhisperSystem(folders[layout], CPU)
    start, none = special(folders[layout], "<|startoftranscript|>"), special(folders[layout], "<|notimestamps|>")
    assert system.english_only and system.prompt("eng", "transcribe") == [start, none]
    multilingual = WhisperSystem(folders["multilingual"], CPU)
    assert not multilingual.english_only and multilingual.prompt("eng", "transcribe") == [
        start, special(folders["multilingual"], "<|en|>"), special(folders["multilingual"], "<|transcribe|>"), none]
    greedy = system.decode_ids(CLIPS, ["eng"] * 3, "transcribe", OPTS)
    # n-gram blocking longer than any output changes nothing but runs HF generate: the same prompt, the same tokens
    assert system.decode_ids(CLIPS, ["eng"] * 3, "transcribe", DecodingOptions(max_new_tokens=8,
                                                                                no_repeat_ngram_size=30)) == greedy
    beams = system.decode_ids(CLIPS, ["eng"] * 3, "transcribe", DecodingOptions(max_new_tokens=8, beam_size=2))
    assert len(beams) == 3 and all(len(row) <= 8 for row in beams)


def test_its_tokens_are_transformers_own_for_a_hub_en_model(folders):
    """HF `generate` given no language or task (how transformers decodes a `*.en` model) makes the same tokens,
    greedy and in beam search."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = folders["hub"]
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    mel = WhisperFeatureExtractor.from_pretrained(folder)(CLIPS, sampling_rate=16000, return_tensors="pt")
    system, eos = WhisperSystem(folder, CPU), model.config.eos_token_id
    for beams in (1, 2):
        with torch.inference_mode():
            ref = model.generate(mel.input_features, num_beams=beams, max_new_tokens=8,
                                 **({"early_stopping": True} if beams > 1 else {})).tolist()
        ours = system.decode_ids(CLIPS, ["eng"] * 3, "transcribe", DecodingOptions(max_new_tokens=8, beam_size=beams))
        assert [r[:r.index(eos)] if eos in r else r for r in ours] == [r[:r.index(eos)] if eos in r else r
                                                                        for r in ref], beams


@pytest.mark.parametrize("layout", ["hub", "converted"])
def test_only_english_asr_runs_and_the_rest_fails_alone(folders, layout):
    system = WhisperSystem(folders[layout], CPU)
    items = [Item(CLIPS[0], "eng", None, Task.ASR), Item(CLIPS[1], "eng", "eng", Task.SRT),
             Item(CLIPS[2], "deu", None, Task.ASR), Item(CLIPS[1], "deu", "eng", Task.S2TT),
             Item(CLIPS[2], "eng", "deu", Task.SRT), Item(None, "fra", "eng", Task.MT, "le chat")]
    out = system.run_batch(items, OPTS)
    assert out == [system.run_batch([it], OPTS)[0] for it in items]
    cut = set()  # the clips whose transcript filled its cap
    [heard, heard2] = system.decode([CLIPS[0], CLIPS[1]], ["eng", "eng"], "transcribe", OPTS, capped=cut)
    assert out[0] == Output(heard, "", capped=0 in cut)  # eng -> eng: the transcript
    assert out[1] == Output(heard2, heard2, capped=1 in cut)
    for o in out[2:4]:
        assert o.error.startswith(CANNOT_RUN) and "cannot transcribe deu" in o.error
        assert "use a multilingual Whisper" in o.error and "\n" not in o.error
    assert out[4].transcript and "only into English" in out[4].error and "needs audio" in out[5].error
    for lang, task in (("deu", "transcribe"), ("eng", "translate")):
        with pytest.raises(LLMSRTError, match=f"{WHY}, so it cannot {task} {lang}; use a multilingual Whisper"):
            system.decode([CLIPS[0]], [lang], task, OPTS)


@pytest.mark.parametrize("layout", ["hub", "converted"])
def test_language_id_refuses_and_asks_for_src_eng(folders, layout):
    """An English-only Whisper cannot tell languages apart: language ID says so, it does not answer eng."""
    with pytest.raises(LLMSRTError, match=r"no language tokens \(an English-only Whisper.*cannot detect the "
                                          r"language; give the source language \(--src; --src eng for English"):
        WhisperSystem(folders[layout], CPU).detect_language(CLIPS[0])
    with pytest.raises(LLMSRTError, match="--src eng"):
        detect_language(folders[layout], CLIPS[0], CPU)


def test_an_english_only_whisper_is_the_cascades_asr_for_english(folders):
    """English speech is transcribed and translated; a given transcript needs no ASR, whatever its language;
    other speech fails alone, before decoding."""
    cascade = CascadeSystem(WhisperSystem(folders["hub"], CPU), TextMTSystem(folders["llm"], CPU))
    items = [Item(CLIPS[0], "eng", "deu", Task.SRT), Item(CLIPS[1], "deu", "eng", Task.SRT),
             Item(None, "fra", "eng", Task.MT, "le chat"), Item(CLIPS[2], "eng", None, Task.ASR)]
    out = cascade.run_batch(items, OPTS)
    heard_cut, mt_cut = set(), set()  # whose transcript, whose translation filled its cap
    [heard] = cascade.asr.decode([CLIPS[0]], ["eng"], "transcribe", OPTS, capped=heard_cut)
    [to_deu, from_fra] = cascade.mt.translate([heard, "le chat"], ["eng", "fra"], ["deu", "eng"], OPTS,
                                              capped=mt_cut)
    assert out[0] == Output(heard, to_deu, capped=bool(heard_cut) or 0 in mt_cut)
    assert out[2] == Output("le chat", from_fra, capped=1 in mt_cut)
    assert out[1].error.startswith(CANNOT_RUN) and "cannot transcribe deu" in out[1].error
    assert out[3].error is None and out[3].translation == ""


def test_a_converted_en_model_has_no_language_tables_and_runs(tmp_path):
    """`convert` of a CTranslate2 model with no lang_ids writes a generation config without lang_to_id or
    task_to_id (as the Hub's `*.en`), so transformers' `generate` too starts from start, no-timestamps; before, its
    empty lang_to_id had `generate` "detect" token 0 as the language. The system's prompt takes the model's own
    ids."""
    pytest.importorskip("ctranslate2")
    from test_convert import _tiny_whisper, _write_ct2
    from transformers import WhisperForConditionalGeneration

    from llm_srt.model.convert import convert_whisper_ct2

    src = _write_ct2(_tiny_whisper(), tmp_path / "ct2", "float32")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "lang_ids": []}))
    dst = convert_whisper_ct2(src, tmp_path / "hf")
    written = json.loads((dst / "generation_config.json").read_text())
    assert written["is_multilingual"] is False and "lang_to_id" not in written and "task_to_id" not in written
    vocab = (dst / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    system = WhisperSystem(dst, CPU)
    assert system.prompt("eng", "transcribe") == [vocab.index("<|startoftranscript|>"), vocab.index("<|notimestamps|>")]
    model = WhisperForConditionalGeneration.from_pretrained(dst).eval()
    seen = []
    hook = model.model.decoder.register_forward_pre_hook(lambda m, args, kw: seen.append(kw["input_ids"].tolist()),
                                                         with_kwargs=True)
    with torch.inference_mode():
        model.generate(system.whisper.mel([CLIPS[0]]), max_new_tokens=2)
    hook.remove()
    assert seen[0] == [system.prompt("eng", "transcribe")]
    [out] = system.run_batch([Item(CLIPS[0], "eng", "eng", Task.SRT)], OPTS)
    assert out.error is None and out.translation == out.transcript


def test_a_multilingual_fine_tune_with_an_outdated_generation_config_is_not_called_english_only(tmp_path):
    """A multilingual Whisper fine-tuned with transformers before 4.27 (thousands on the Hub) has a generation config
    without lang_to_id, as a `*.en` one: every item but English ASR failed "an English-only Whisper ... use a
    multilingual Whisper", the English ones were decoded from the `.en` prompt (no language, no task) the model was
    never trained on, and language ID said "an English-only Whisper such as tiny.en". Its vocabulary says what it is
    (openai-whisper's rule: 51865 tokens or more); each item fails alone, saying to copy the base model's config."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from llm_srt.model.protocol import LID_MISSING

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=51865,
                           max_source_positions=1500, max_target_positions=32, pad_token_id=50257,
                           bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257,
                                               forced_decoder_ids=[[1, None], [2, 50359]], max_length=32)
    folder = tmp_path / "whisper-small-hi"
    model.save_pretrained(folder)
    assert "lang_to_id" not in json.loads((folder / "generation_config.json").read_text())
    system = WhisperSystem(folder, CPU)
    assert not system.english_only
    out = system.run_batch([Item(CLIPS[0], "eng", None, Task.ASR), Item(CLIPS[1], "deu", "eng", Task.S2TT)], OPTS)
    for o, said in zip(out, ("cannot transcribe eng", "cannot transcribe deu")):
        assert o.error == (f"{CANNOT_RUN}{folder}: a multilingual Whisper whose generation_config.json has no "
                           f"lang_to_id (as transformers before 4.27 saved fine-tunes), so it {said}; copy "
                           "generation_config.json of the Whisper it was fine-tuned from (openai/whisper-*) into its "
                           "folder")
    with pytest.raises(LLMSRTError, match=f"no lang_to_id .*, so it {LID_MISSING}; copy generation_config.json .*, or "
                                          r"give the source language \(--src\)$"):
        detect_language(folder, CLIPS[0], CPU)
