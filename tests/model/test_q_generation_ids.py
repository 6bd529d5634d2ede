"""model/weight_files.py `whisper_generation`: the token ids of a Whisper folder's generation_config.json are checked
when the torch Whisper loads, so a hand-edited or copied file is one line naming it and the key, not a torch
traceback at the first decode nor a decode of the wrong tokens."""

import json
import re
import shutil

import pytest
import torch

import tiny
from llm_srt.device import Placement
from llm_srt.errors import LLMSRTError
from llm_srt.model import whisper_system
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.whisper_system import WhisperSystem, detect_language
from llm_srt.model.whisper_torch import TorchWhisper

CPU = Placement(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.whisper_lid_dir(tmp_path_factory.mktemp("whisper-ids"))


@pytest.fixture(autouse=True)
def _no_cached_whisper():
    whisper_system.release_models(torch.device("cpu"))
    yield
    whisper_system.release_models(torch.device("cpu"))


def _settings(folder, name="generation_config.json"):
    return json.loads((folder / name).read_text())


def _edited(folder, to, name="generation_config.json", **changes):
    shutil.copytree(folder, to)
    (to / name).write_text(json.dumps({**_settings(folder, name), **changes}))
    return to


def _as_text(g, key):
    """generation_config.json's `key` with its (first) id written as text, as a hand-edited file has it."""
    if key in ("lang_to_id", "task_to_id"):
        first = next(iter(g[key]))
        return {**g[key], first: str(g[key][first])}, rf"{key}'s {re.escape(first)} is \"\d+\""
    if key == "suppress_tokens":
        return [*g[key][:1], str(g[key][1])], rf"{key} holds \"\d+\", not a token id \(an integer\)"
    return str(g[key]), rf"{key} is \"\d+\""


@pytest.mark.parametrize("key", ["decoder_start_token_id", "eos_token_id", "pad_token_id", "no_timestamps_token_id",
                                 "lang_to_id", "task_to_id", "suppress_tokens"])
def test_an_id_written_as_text_is_one_line_naming_the_file_and_key(folder, tmp_path, key):
    """"50258" for 50258: the folder loaded, then the first decode stopped on a torch traceback (ValueError: too
    many dimensions 'str'; TypeError: new(): invalid data type 'str'; a suppressed one, '<=' not supported)."""
    value, said = _as_text(_settings(folder), key)
    bad = _edited(folder, tmp_path / "bad", **{key: value})
    with pytest.raises(LLMSRTError, match=rf"bad/generation_config.json: {said}.*; copy generation_config.json of "
                                          r"the Whisper it was fine-tuned from \(openai/whisper-\*\) into its folder$"):
        WhisperSystem(bad, CPU).decode([tiny.tone(0.5, 300)], ["eng"], "transcribe", DecodingOptions(max_new_tokens=3))


@pytest.mark.parametrize("change, said", [
    (lambda g, n: {"decoder_start_token_id": n}, r"decoder_start_token_id is {n}, not a token id of this Whisper "
                                                 r"\(an integer from 0 to {last}\)"),
    (lambda g, n: {"lang_to_id": {**g["lang_to_id"], "<|en|>": -1}}, r"lang_to_id's <\|en\|> is -1, not a token id"),
    (lambda g, n: {"eos_token_id": [True]}, r"eos_token_id is true, not a token id"),
    (lambda g, n: {"task_to_id": ["transcribe"]}, r'task_to_id is \["transcribe"\], not an object of tokens and '
                                                  r"their ids"),
    (lambda g, n: {"begin_suppress_tokens": 7}, r"begin_suppress_tokens is 7, not a list of token ids"),
])
def test_an_id_outside_the_vocabulary_or_of_another_type_is_one_line(folder, tmp_path, change, said):
    """An id past the vocabulary (or negative) was an IndexError from the token table at the first decode, or from
    the logits in language ID; true (an int to Python) was taken for id 1."""
    n = json.loads((folder / "config.json").read_text())["vocab_size"]
    bad = _edited(folder, tmp_path / "bad", **change(_settings(folder), n))
    with pytest.raises(LLMSRTError, match=rf"bad/generation_config.json: {said.format(n=n, last=n - 1)}"):
        detect_language(bad, tiny.tone(0.5, 300), CPU)


def test_without_a_generation_config_config_jsons_ids_are_checked_and_named(folder, tmp_path):
    bad = _edited(folder, tmp_path / "bad", "config.json", decoder_start_token_id="1")
    (bad / "generation_config.json").unlink()
    with pytest.raises(LLMSRTError, match=r"bad/config.json: decoder_start_token_id is \"1\", not a token id .*; copy "
                                          r"config.json of the Whisper it was fine-tuned from"):
        TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32)


def test_suppressed_ids_outside_the_vocabulary_still_load(folder, tmp_path):
    """A suppressed id of another Whisper size is no token here and is ignored (as transformers does), not refused."""
    n = json.loads((folder / "config.json").read_text())["vocab_size"]
    copied = _edited(folder, tmp_path / "copied", suppress_tokens=[*_settings(folder)["suppress_tokens"], n + 5, -1])
    assert TorchWhisper.from_pretrained(copied, torch.device("cpu"), torch.float32).generation.suppress[-2:] == (n + 5,
                                                                                                                -1)


def _vocabulary_txt(folder):
    """The folder's tokens one a line, as `convert whisper-ct2` writes vocabulary.txt beside tokenizer.json."""
    from tokenizers import Tokenizer

    tok, n = Tokenizer.from_file(str(folder / "tokenizer.json")), _settings(folder, "config.json")["vocab_size"]
    (folder / "vocabulary.txt").write_text("\n".join(tok.id_to_token(i) for i in range(n)) + "\n")


@pytest.mark.parametrize("vocabulary", ["tokenizer.json", "vocabulary.txt"])
def test_task_ids_of_another_whispers_vocabulary_are_refused_naming_the_file(folder, tmp_path, vocabulary):
    """large-v3's generation_config.json on a large-v2 fine-tune: large-v3 added <|yue|> before the task tokens, so
    its <|translate|> id is large-v2's <|transcribe|> and its <|transcribe|> large-v2's <|startoflm|>. It loaded, and
    every clip was decoded from a prompt of the wrong tokens, silently."""
    g = _settings(folder)
    shifted = {task: i + 1 for task, i in g["task_to_id"].items()}  # translate, transcribe -> the next token
    copied = _edited(folder, tmp_path / "copied", task_to_id=shifted)
    if vocabulary == "vocabulary.txt":
        _vocabulary_txt(copied)
    assert list(shifted) == ["transcribe", "translate"]  # as transformers writes the file: the first is named
    said = (rf"copied/generation_config.json: task_to_id's transcribe is {shifted['transcribe']}, which is "
            rf"\"<\|startoflm\|>\" in this Whisper's {vocabulary}, not \"<\|transcribe\|>\" \(and 1 more\): the ids of "
            r"another Whisper's vocabulary \(large-v3 added <\|yue\|>, one id before the task tokens\); copy "
            r"generation_config.json of the Whisper it was fine-tuned from \(openai/whisper-\*\) into its folder$")
    with pytest.raises(LLMSRTError, match=said):
        WhisperSystem(copied, CPU).decode([tiny.tone(0.5, 300)], ["eng"], "transcribe",
                                          DecodingOptions(max_new_tokens=3))


@pytest.mark.parametrize("key, change, token", [
    ("decoder_start_token_id", lambda g: g["decoder_start_token_id"] + 1, "<|startoftranscript|>"),
    ("no_timestamps_token_id", lambda g: g["no_timestamps_token_id"] - 1, "<|notimestamps|>"),
    ("lang_to_id's <|en|>", lambda g: {**g["lang_to_id"], "<|en|>": g["lang_to_id"]["<|de|>"]}, "<|en|>"),
])
def test_start_language_and_no_timestamps_ids_are_checked_too(folder, tmp_path, key, change, token):
    g = _settings(folder)
    name = key.split("'")[0]
    copied = _edited(folder, tmp_path / "copied", **{name: change(g)})
    with pytest.raises(LLMSRTError, match=rf"copied/generation_config.json: {re.escape(key)} is \d+, which is .* in "
                                          rf"this Whisper's tokenizer.json, not \"{re.escape(token)}\": "):
        detect_language(copied, tiny.tone(0.5, 300), CPU)


def _linked(folder, to, vocabulary=True):
    """The folder's files linked (its weights are not copied), generation_config.json a copy to edit."""
    to.mkdir()
    for file in folder.iterdir():
        if file.name != "generation_config.json" and (vocabulary or file.name != "vocabulary.txt"):
            (to / file.name).symlink_to(file)
    shutil.copy(folder / "generation_config.json", to / "generation_config.json")
    return to


@pytest.mark.parametrize("vocabulary", [True, False])
def test_whisper_base_with_large_v3s_generation_config_is_refused_and_its_own_loads(embedded, tmp_path, vocabulary):
    """The real case on the embedded Whisper base (large-v2's vocabulary): large-v3's ids, <|yue|> 50358 and every
    later special token one up (translate 50359, transcribe 50360, no-timestamps 50364)."""
    from llm_srt.model.weight_files import whisper_generation

    base = _linked(embedded.whisper, tmp_path / "base", vocabulary)
    config = _settings(base, "config.json")
    assert whisper_generation(base, config)["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    g = _settings(base)
    (base / "generation_config.json").write_text(json.dumps({
        **g, "lang_to_id": {**g["lang_to_id"], "<|yue|>": 50358}, "task_to_id": {"transcribe": 50360,
                                                                                 "translate": 50359},
        "no_timestamps_token_id": 50364}))
    source = "vocabulary.txt" if vocabulary else "tokenizer.json"
    with pytest.raises(LLMSRTError, match=rf"base/generation_config.json: no_timestamps_token_id is 50364, which is "
                                          rf"\"<\|0.00\|>\" in this Whisper's {source}, not \"<\|notimestamps\|>\" "
                                          r"\(and 3 more\)"):
        TorchWhisper.from_pretrained(base, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("damage", ["cut", "not json"])
def test_a_damaged_tokenizer_json_is_one_line_naming_it(folder, tmp_path, damage):
    """A Whisper folder without vocabulary.txt (a hub download) whose tokenizer.json is cut short: every clip was
    decoded, then the text stopped on a bare `Exception: EOF while parsing` traceback from the tokenizers library."""
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    text = (damaged / "tokenizer.json").read_text()
    (damaged / "tokenizer.json").write_text(text[:len(text) // 2] if damage == "cut" else "tokens")
    with pytest.raises(LLMSRTError, match=rf"^{damaged}/tokenizer.json: not a tokenizer \(.+\), so Whisper's tokens "
                                          r"cannot become text; copy or download the model's tokenizer.json again$"):
        system = WhisperSystem(damaged, CPU)  # refused as it loads (weight_files.tokens_at), no clip decoded
        system.decode([tiny.tone(0.5, 300)], ["eng"], "transcribe", DecodingOptions(max_new_tokens=3))


def test_a_vocabulary_txt_that_is_not_utf8_is_one_line_naming_it(folder, tmp_path):
    """vocabulary.txt (`convert whisper-ct2`'s, read to decode text) in another encoding or damaged: the clips were
    decoded, then the text stopped on a UnicodeDecodeError traceback."""
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    _vocabulary_txt(damaged)
    (damaged / "vocabulary.txt").write_bytes((damaged / "vocabulary.txt").read_bytes().replace(b"a\n", b"\xe9\n"))
    with pytest.raises(LLMSRTError, match=rf"^{damaged}/vocabulary.txt: cannot read it \(UnicodeDecodeError\); delete "
                                          r"it \(tokenizer.json is used then\) or convert the model again$"):
        system = WhisperSystem(damaged, CPU)  # refused as it loads (weight_files.tokens_at), no clip decoded
        system.decode([tiny.tone(0.5, 300)], ["eng"], "transcribe", DecodingOptions(max_new_tokens=3))
