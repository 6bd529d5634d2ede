"""A GGUF file given as the LLM (--model-llm of a model folder, --llm of a baseline) was said to have "no
config.json"; evaluate tells a GGUF file as translate, serve and train do now, with the conversion that makes its
folder, and any other file as a file, before any system loads."""

import json
import re

import pytest

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import models


def test_a_gguf_file_given_as_the_llm_is_named_with_its_conversion(tmp_path):
    folder = tiny.speech_llm_folder(tmp_path / "m")
    gguf = tmp_path / "gemma.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    convert = re.escape(f"a GGUF file, not a Hugging Face model folder; run `llm-srt convert gguf {gguf} OUT`, then ")
    with pytest.raises(LLMSRTError, match=rf"^--model-llm {re.escape(str(gguf))}: {convert}give --model-llm OUT "
                                          r"\(--model srt loads its LLM from it\)$"):
        models.check_models({"srt": str(folder)}, None, None, model_llm=str(gguf))
    with pytest.raises(LLMSRTError, match=rf"^--llm {re.escape(str(gguf))}: {convert}give --llm OUT "
                                          r"\(--model cascade loads its LLM from it\)$"):
        models.check_models({"cascade": "cascade"}, tiny.whisper_dir(tmp_path / "w"), str(gguf))
    with pytest.raises(LLMSRTError, match=r"^--model-llm .*notes.txt: a file, not a Hugging Face model folder; "):
        models.check_models({"srt": str(folder)}, None, None, model_llm=str(text))
    config = json.loads((folder / "config.json").read_text())  # a config.json naming one
    (folder / "config.json").write_text(json.dumps(config | {"llm": str(gguf)}))
    with pytest.raises(LLMSRTError, match=rf"^--model srt: .*config.json names the llm .*gemma.gguf: {convert}"):
        models.check_models({"srt": str(folder)}, None, None)
