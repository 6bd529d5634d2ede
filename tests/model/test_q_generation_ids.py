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
