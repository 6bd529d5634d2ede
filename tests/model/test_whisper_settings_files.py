"""model/whisper_torch.py: the settings files of a Whisper folder (config.json, generation_config.json) that a user
copied from another Whisper or edited by hand are read as transformers reads them, or refused in one line naming
the file and the key."""

import json
import shutil

import pytest
import torch

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.encoder import WhisperEncoder
from llm_srt.model.whisper_torch import SuppressTokens, TorchWhisper


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.whisper_lid_dir(tmp_path_factory.mktemp("whisper-settings"))


def _edited(folder, to, name, **changes):
    shutil.copytree(folder, to)
    settings = json.loads((to / name).read_text())
    (to / name).write_text(json.dumps({**settings, **changes}))
    return to


def test_suppressed_ids_outside_the_vocabulary_are_ignored_as_transformers_does(folder, tmp_path):
    """A generation_config.json copied from another Whisper size names ids past this vocabulary: decoding stopped on
    an IndexError (and a negative id masked a token of the vocabulary's end)."""
    mask = SuppressTokens(10, (3, 10, 12, -1), (-2, 4, 11), torch.device("cpu"))
    assert mask.first.nonzero().flatten().tolist() == [3, 4] and mask.always.nonzero().flatten().tolist() == [3]
    generation = json.loads((folder / "generation_config.json").read_text())
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    copied = _edited(folder, tmp_path / "copied", "generation_config.json",
                     suppress_tokens=[*generation["suppress_tokens"], vocab, vocab + 400, -30],
                     begin_suppress_tokens=[vocab + 1, -5])
    ids = []
    for path in (folder, copied):
        w = TorchWhisper.from_pretrained(path, torch.device("cpu"), torch.float32)
        with torch.inference_mode():
            ids.append(w.greedy(w.encode(w.mel([tiny.tone(0.7, 300)])), torch.tensor([[w.generation.start]]), 5))
    assert torch.equal(ids[0], ids[1])


def test_an_empty_eos_token_id_list_is_one_line_naming_the_key(folder, tmp_path):
    """generation_config.json's eos_token_id [] (a hand-edited file's) was an IndexError traceback; a list's first
    id is still the end id."""
    empty = _edited(folder, tmp_path / "empty", "generation_config.json", eos_token_id=[])
    with pytest.raises(LLMSRTError, match=r"empty: config.json and generation_config.json name no eos_token_id$"):
        TorchWhisper.from_pretrained(empty, torch.device("cpu"), torch.float32)
    eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    listed = _edited(folder, tmp_path / "listed", "generation_config.json", eos_token_id=[eos, eos + 1])
    assert TorchWhisper.from_pretrained(listed, torch.device("cpu"), torch.float32).generation.eos == eos


@pytest.mark.parametrize("key, value, said", [("encoder_layers", None, "null"), ("d_model", "32", '"32"'),
                                              ("decoder_attention_heads", 4.0, "4.0"), ("vocab_size", 0, "0"),
                                              ("num_mel_bins", True, "true")])
def test_a_dimension_that_is_no_positive_integer_is_one_line_naming_the_key(folder, tmp_path, key, value, said):
    """A null (or text) dimension in config.json was a TypeError traceback from deep in the torch Whisper's layers'
    construction, and from WhisperConfig under the speech LLM's encoder (StrictDataclassFieldValidationError)."""
    bad = _edited(folder, tmp_path / "bad", "config.json", **{key: value})
    said = rf"bad/config.json: {key} is {said}, not a positive integer; copy the base Whisper's config.json$"
    with pytest.raises(LLMSRTError, match=said):
        TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32)
    with pytest.raises(LLMSRTError, match=said):
        WhisperEncoder.from_pretrained(bad)
