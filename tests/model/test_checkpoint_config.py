"""A folder given as --model that is not a model folder (a Whisper's, an LLM's, a CTranslate2 one, a training run's)
said as what it is, with what to do, in one line (read_config: translate, evaluate and serve all load through it)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.speech_llm import SpeechLLM, read_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.speech_llm_folder(tmp_path_factory.mktemp("checkpoint-config"))


def _refused(directory, wanted: str) -> str:
    with pytest.raises(LLMSRTError) as e:
        read_config(directory)
    message = str(e.value)
    assert "\n" not in message and re.match(wanted, message), message
    return message


def test_a_transformers_whisper_folder_says_to_run_the_whisper_baseline(tmp_path):
    """Before: "config.json: missing key 'encoder'; the checkpoint config is incomplete"."""
    whisper = tiny.whisper_dir(tmp_path)
    _refused(whisper, "^" + re.escape(f"{whisper}: a transformers Whisper folder (config.json's model_type whisper), "
                                      "not a SpeechLLM checkpoint; run the Whisper baseline with "
                                      f"`--model whisper --whisper {whisper}`"))
    with pytest.raises(LLMSRTError, match="^" + re.escape(f"{whisper}: a transformers Whisper folder")):
        SpeechLLM.from_pretrained(whisper)


def test_an_llm_folder_says_to_run_the_cascade_or_train_on_it(tmp_path):
    llm = tiny.llm_dir(tmp_path)
    _refused(llm, "^" + re.escape(f"{llm}: a Hugging Face qwen2 model folder (an LLM's), not a SpeechLLM checkpoint; "
                                  f"translate with it as the cascade's LLM, `--model cascade --llm {llm}`, or train "
                                  "a speech LLM on it (model.llm in a training config)") + "$")


def test_a_ctranslate2_whisper_folder_says_to_convert_it(tmp_path):
    ct2 = tmp_path / "faster-whisper-base"  # what faster-whisper's folders hold: model.bin, config.json of ids
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0" * 64)
    (ct2 / "config.json").write_text(json.dumps({"alignment_heads": [[1, 0]], "lang_ids": [50259, 50260],
                                                 "suppress_ids": [1, 2], "suppress_ids_begin": [220, 50257]}))
    _refused(ct2, "^" + re.escape(f"{ct2}: a CTranslate2 (faster-whisper) Whisper folder, not a SpeechLLM "
                                  f"checkpoint; run `llm-srt convert whisper-ct2 {ct2} OUT`, then "
                                  "`--model whisper --whisper OUT`") + "$")
    (ct2 / "config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))  # another CT2 model
    _refused(ct2, "^" + re.escape(f"{ct2}: a CTranslate2 model folder (model.bin), not a SpeechLLM checkpoint"))


@pytest.mark.parametrize("keep", [(), ("llm", "adapter")])
def test_an_incomplete_checkpoint_keeps_its_message(folder, tmp_path, keep):
    """A model folder's config.json without 'encoder' (with the other keys, or with none of the three, and nothing
    that says another kind of model) is still an incomplete checkpoint."""
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    config = json.loads((model / "config.json").read_text())
    kept = {k: v for k, v in config.items() if k not in ("encoder", "llm", "adapter") or k in keep}
    (model / "config.json").write_text(json.dumps(kept))
    _refused(model, "^" + re.escape(f"{model / 'config.json'}: missing key 'encoder'; the checkpoint config is "
                                    "incomplete") + "$")


def test_a_training_runs_folder_asks_for_its_final_model_or_newest_checkpoint(folder, tmp_path):
    """`--model runs/cur/srt` (the run, not its final/) was "not a SpeechLLM checkpoint (no config.json); give a
    folder written by training", though the folder training wrote was right inside it."""
    run = tmp_path / "runs" / "srt"
    for step in (4, 12, 8):  # newest by step number, not by name or by the order they were written
        shutil.copytree(folder, run / "checkpoints" / f"step-{step:08d}")
    (run / "checkpoints" / "step-00000016").mkdir()  # no model folder (a killed write's): not one to name
    newest = run / "checkpoints" / "step-00000012"
    _refused(run, "^" + re.escape(f"{run}: not a SpeechLLM checkpoint (no config.json); a training run's checkpoints, "
                                  f"and no final/ (the run has not finished): did you mean its newest, {newest}?")
             + "$")
    _refused(run / "checkpoints", "^" + re.escape(f"{run / 'checkpoints'}: not a SpeechLLM checkpoint (no "
                                                  "config.json); a training run's checkpoints") + f".*{newest.name}")
    shutil.copytree(folder, run / "final")
    _refused(run, "^" + re.escape(f"{run}: not a SpeechLLM checkpoint (no config.json); a training run's folder: did "
                                  f"you mean {run / 'final'}?") + "$")
    assert read_config(run / "final")["adapter"] == "qformer"
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "^" + re.escape(f"{empty}: not a SpeechLLM checkpoint (no config.json); give a folder written by "
                                    "training or by `llm-srt convert`") + "$")


def test_every_config_field_is_type_checked_as_its_dataclass_declares(folder, tmp_path):
    """CONFIG_TYPES is read from SpeechLLMConfig's and LoraOptions' fields (it was a hand-made copy of them): each
    field, and each key save_pretrained writes beside them, given a value of another type is one line naming it."""
    from dataclasses import fields

    from llm_srt.model.checkpoint_config import CONFIG_TYPES, SAVED_TYPES, SpeechLLMConfig, _checked
    from llm_srt.model.llm import LoraOptions

    keys = ({f.name for f in fields(SpeechLLMConfig)} - {"lora"} | set(SAVED_TYPES)
            | {f"lora.{f.name}" for f in fields(LoraOptions)})
    assert set(CONFIG_TYPES) == keys
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    config = json.loads((model / "config.json").read_text())
    for key, (_, _, said) in CONFIG_TYPES.items():
        wrong = [] if said == "a string" else "x"  # no field takes both a list and a string
        name = key.removeprefix("lora.")
        edited = {**config, "lora": {name: wrong}} if key.startswith("lora.") else {**config, key: wrong}
        (model / "config.json").write_text(json.dumps(edited))
        _refused(model, "^" + re.escape(f"{model / 'config.json'}: {key!r} must be {said}, got "))
    with pytest.raises(TypeError, match="cannot check a config field of type"):
        _checked(list[int])  # a field of a type it does not know stops the import, not a config.json's check
