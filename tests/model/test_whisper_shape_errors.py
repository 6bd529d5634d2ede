"""model/whisper_torch.py, weight_files.py `check_shapes`: weights that are not config.json's Whisper are refused as
the folder loads in one line naming the tensor, both shapes and what to do. The first line was all the CLI and a
batch's row errors show, and torch's "Error(s) in loading state_dict for _Model:" (or "shape mismatch:") held none of
it; a float load's untied head was torch's "size mismatch for weight"."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.whisper_torch import TorchWhisper

TODO = ("config.json is another Whisper's than these weights: copy the config.json saved with them, or the whole "
        "folder again")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.whisper_lid_dir(tmp_path_factory.mktemp("whisper-shapes"))


def _edited(folder, to, edit, untied=False):
    shutil.copytree(folder, to)
    state = load_file(to / "model.safetensors")
    edit(state)
    save_file(state, str(to / "model.safetensors"), metadata={"format": "pt"})
    if untied:
        config = json.loads((to / "config.json").read_text())
        (to / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    return to


def _set(key, shape):
    return lambda state: state.__setitem__(key, torch.zeros(shape))


CASES = {
    "a linear layer": (_set("model.decoder.layers.0.fc1.weight", (63, 32)),
                       "decoder.layers.0.fc1.weight is (63, 32) where config.json's Whisper has (64, 32)"),
    "a bias": (_set("model.decoder.layers.0.fc1.bias", (63,)),  # int8 loaded it: a RuntimeError per clip
               "decoder.layers.0.fc1.bias is (63,) where config.json's Whisper has (64,)"),
    "a convolution": (_set("model.encoder.conv1.weight", (32, 80, 2)),
                      "encoder.conv1.weight is (32, 80, 2) where config.json's Whisper has (32, 80, 3)"),
    "a missing table": (lambda state: state.pop("model.decoder.embed_tokens.weight"),
                        "decoder.embed_tokens.weight is in no weights file"),
    "another model's tensor": (_set("model.decoder.layers.0.extra.weight", (2,)),
                               "decoder.layers.0.extra.weight is no tensor of config.json's Whisper"),
}


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_weights_of_another_shape_are_one_line_naming_the_tensor_and_what_to_do(folder, tmp_path, case, int8):
    edit, said = CASES[case]
    bad = _edited(folder, tmp_path / "bad", edit)
    with pytest.raises(LLMSRTError) as e:
        TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32, int8=int8)
    first = str(e.value).splitlines()[0]
    assert first == f"{bad}/model.safetensors: not a Whisper of config.json's shape ({said}); {TODO}"


@pytest.mark.parametrize("int8", [False, True])
def test_an_untied_head_of_another_shape_is_named(folder, tmp_path, int8):
    def head(state):
        state["proj_out.weight"] = torch.zeros(state["model.decoder.embed_tokens.weight"].shape[0], 31)

    bad = _edited(folder, tmp_path / "untied", head, untied=True)
    with pytest.raises(LLMSRTError) as e:
        TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32, int8=int8)
    first = str(e.value).splitlines()[0]
    assert re.fullmatch(rf"{re.escape(str(bad))}/model.safetensors: not a Whisper of config.json's shape \(.*proj_out"
                        rf"\.weight is \(\d+, 31\)(,| in .*,| where config.json's Whisper has) .*\(\d+, 32\)\); "
                        rf"{re.escape(TODO)}", first), first


def test_another_config_size_counts_the_other_tensors(folder, tmp_path):
    bad = _edited(folder, tmp_path / "wide", lambda state: None)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "d_model": 48}))
    with pytest.raises(LLMSRTError, match=r"\(\S+ is \(\d+, \d+(, \d+)?\) where config.json's Whisper has \(.*48.*\), "
                                          r"and \d+ more\); config.json is another"):
        TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32)
