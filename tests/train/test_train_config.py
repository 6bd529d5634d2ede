"""train/config.py: cross-key checks of a training stage's config, said when it loads (before any model)."""

import pytest

from llm_srt.errors import ConfigError
from llm_srt.train.config import load_config

LORA = "model.lora={r: 4, alpha: 8}"


def test_a_ctc_loss_with_a_frozen_adapter_is_refused_as_it_would_train_nothing():
    """The CTC loss scores the adapter's output with its head (both trained as `adapter`) against the LLM's frozen
    input embeddings: under trainable [lora] no trainable tensor is on its path, and the stage trained on a loss
    whose CTC part only added to every logged value."""
    with pytest.raises(ConfigError, match=r"ctc.weight 0.5: .* trainable is \['lora'\]; add adapter to trainable"):
        load_config(None, ["trainable=[lora]", LORA, "ctc={weight: 0.5}"])
    assert load_config(None, ["trainable=[adapter, lora]", LORA, "ctc={weight: 0.5}"]).ctc.weight == 0.5
    assert load_config(None, ["trainable=[lora]", LORA]).trainable == ["lora"]  # no CTC: LoRA alone is fine
