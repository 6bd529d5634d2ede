"""An override whose value is empty (`srt:max_steps=$STEPS` with STEPS unset) is refused in one line naming the key
and that its value is empty, for every key: it said "max_steps must be int, got None", and `model.lora=` dropped
the LoRA without a word."""

import re

import pytest

from llm_srt.errors import ConfigError
from llm_srt.train.config import load_config

EMPTY = r"is empty \(an unset shell variable\?\); give it a value"


@pytest.mark.parametrize("key", ["max_steps", "optim.lr", "data.batch_size", "model.lora.r", "data.tasks",
                                 "data.tasks.srt", "model.adapter_kwargs.num_queries", "trainable", "data.train"])
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_override_value_is_refused_naming_its_key(key, empty):
    item = f"{key}={empty}"
    with pytest.raises(ConfigError, match=rf"^override {re.escape(repr(item))}: {re.escape(key)} {EMPTY}$"):
        load_config("configs/embedded/srt.yaml", [item])


def test_an_empty_value_of_a_field_that_takes_null_says_how_to_write_null():
    """model.lora= (its variable unset) trained without LoRA, exit 0; null is written null."""
    with pytest.raises(ConfigError, match=rf"^override 'model.lora=': model.lora {EMPTY}, or write model.lora=null "
                                          r"for none$"):
        load_config("configs/embedded/srt.yaml", ["model.lora="])
    assert load_config("configs/embedded/srt.yaml", ["model.lora=null"]).model.lora is None


def test_an_empty_value_of_an_unknown_key_is_named_unknown_as_before():
    with pytest.raises(ConfigError, match=r"unknown key 'max_stepz'; did you mean 'max_steps'\?"):
        load_config(None, ["max_stepz="])
