"""A model folder's config.json with a value of another type: one line naming the file and the key."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.speech_llm import SpeechLLM, read_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.speech_llm_folder(tmp_path_factory.mktemp("b-config"))


# key, value -> what the error says it must be. Before: a TypeError traceback (trainable null, lora.r "8", llm 5),
# groups 'a', 'd', 'a', ... (trainable "adapter"), LoRA on modules q, _, p, ... (target_modules "q_proj"), "trained
# with encoder_dim=32 but ... has 32" (encoder_dim "32"), or a model that loaded ("pad_to_30s": "yes" ran as true,
# "language_tags": {"zho": 5} failed at its first prompt)
BAD = [("trainable", None, "a list of strings"), ("trainable", "adapter", "a list of strings"),
       ("llm", 5, "a string"), ("encoder", None, "a string"), ("lora", {"r": "8"}, "an integer"),
       ("lora", {"target_modules": "q_proj"}, "a list of strings"), ("encoder_dim", "32", "an integer"),
       ("pad_to_30s", "yes", "true or false"), ("language_tags", {"zho": 5}, "a mapping of strings"),
       ("lora", {"alpha": True}, "a number"), ("prompt_format", "1", "an integer")]


@pytest.mark.parametrize("key, value, wanted", BAD)
def test_a_config_value_of_another_type_is_one_line(folder, tmp_path, key, value, wanted):
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, key: value}))
    name = f"lora.{next(iter(value))}" if key == "lora" else key
    with pytest.raises(LLMSRTError, match="^" + re.escape(f"{model / 'config.json'}: {name!r} must be {wanted}, got ")):
        read_config(model)
    with pytest.raises(LLMSRTError, match=re.escape(f"{name!r} must be {wanted}")):
        SpeechLLM.from_pretrained(model)


def test_the_configs_training_writes_pass(folder, tmp_path):
    """What save_pretrained writes (with LoRA too) reads back as before."""
    from llm_srt.model.llm import LoraOptions

    assert read_config(folder)["adapter"] == "qformer"
    lora = tiny.speech_llm_folder(tmp_path, lora=LoraOptions(r=4), trainable=("adapter", "lora"))
    assert read_config(lora)["lora"]["r"] == 4 and SpeechLLM.from_pretrained(lora).config.lora.r == 4


def test_an_llm_whose_tokenizer_names_no_eos_is_refused_at_load(tmp_path):
    """Every training target ends with the tokenizer's EOS: a tokenizer naming none (tokenizer_config.json without
    eos_token) built the speech LLM, and its first training step stopped on a TypeError from a None id (generation
    ran on config.json's end ids). It is one line naming the LLM folder, when the model is built."""
    from llm_srt.model.speech_llm import SpeechLLMConfig

    llm = tiny.llm_dir(tmp_path)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (llm / name).is_file():
            settings = json.loads((llm / name).read_text())
            (llm / name).write_text(json.dumps({k: v for k, v in settings.items() if k not in ("eos_token",
                                                                                               "pad_token")}))
    config = SpeechLLMConfig(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(llm), adapter="linear")
    with pytest.raises(LLMSRTError, match="^" + re.escape(f"{llm}: its tokenizer names no EOS token")):
        model = SpeechLLM(config)
        model({"features": torch.randn(1, 10, 32), "prompts": ["ab"], "targets": ["cd"]})
