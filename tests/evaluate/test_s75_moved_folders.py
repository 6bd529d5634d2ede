"""A model folder whose config.json names an encoder and an LLM that both moved: evaluate named the encoder alone,
and once --encoder was given, the LLM; one error names every missing folder and its option now, as translate and
serve say it (`model.folders.check_model_folders`)."""

import json
import re

import pytest

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import models


def test_every_missing_folder_of_a_moved_model_is_named_in_one_error(tmp_path):
    folder = tiny.speech_llm_folder(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    gone = tmp_path / "gone"
    (folder / "config.json").write_text(json.dumps(config | {"encoder": str(gone / "w"), "llm": str(gone / "l")}))
    with pytest.raises(LLMSRTError) as e:
        models.check_models({"srt": str(folder)}, None, None)
    said = str(e.value)
    assert said.startswith(f"--model srt: {folder / 'config.json'} names the encoder {gone / 'w'} ")
    assert f"and the llm {gone / 'l'} (not a Hugging Face model folder: no such folder)" in said
    assert re.search(r"--encoder and --llm of translate and serve, --encoder and --model-llm of evaluate", said)
    with pytest.raises(LLMSRTError) as e:  # the encoder given: the LLM alone is left, the given one named as given
        models.check_models({"srt": str(folder)}, None, None, encoder=str(gone / "typo"))
    assert "the encoder given, " in str(e.value) and f"names the llm {gone / 'l'}" in str(e.value)
    models.check_models({"srt": str(folder)}, None, None, encoder=config["encoder"], model_llm=config["llm"])
