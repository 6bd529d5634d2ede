"""model/llm.py's warnings as a model loads (tensors in the LLM checkpoint it has no place for; LoRA layers the
folder's LoRA file holds no weights for): one line under the command's name, as the toolkit's other warnings
(`cli.one_line_warnings`), at every load. They were logged by llm_srt.model.llm and, with no handler set, printed
bare by `llm-srt translate`."""

import json
import shutil

import pytest
import tiny
import torch
from safetensors.torch import load_file, save_file

from llm_srt import cli
from llm_srt.audio import write_wav
from llm_srt.model.llm import LoraOptions


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    """A tiny model folder trained with LoRA on q_proj and v_proj."""
    root = tmp_path_factory.mktemp("llm-warnings")
    torch.manual_seed(0)
    model = tiny.speech_llm(root / "parts", lora=LoraOptions(r=4, alpha=8, dropout=0.0),
                            trainable=("adapter", "lora"), init_std=0.3)
    return model.save_pretrained(root / "model")


def _warnings(folder, tmp_path, capsys, *extra) -> list[str]:
    write_wav(tmp_path / "a.wav", tiny.tone(1.0, 300))
    cli.main(["translate", str(tmp_path / "a.wav"), "--model", str(folder), "--src", "eng", "--tgt", "deu", *extra])
    return [line for line in capsys.readouterr().err.splitlines() if "warning:" in line or line.startswith("/")]


def test_a_tensor_the_llm_does_not_use_is_warned_of_under_the_commands_name(lora_folder, tmp_path, capsys):
    llm = shutil.copytree(json.loads((lora_folder / "config.json").read_text())["llm"], tmp_path / "llm")
    state = load_file(llm / "model.safetensors")
    save_file({**state, "model.extra.weight": torch.zeros(2)}, llm / "model.safetensors", metadata={"format": "pt"})
    said = f"llm-srt translate: warning: {llm}: 1 weight in the checkpoint that the LLM does not use, ignored " \
           "(model.extra.weight)"
    for _ in range(2):  # every load says so (a curriculum's or evaluate's next model too)
        assert said in _warnings(lora_folder, tmp_path, capsys, "--llm", str(llm))


def test_lora_layers_without_weights_in_the_folder_are_warned_of_under_the_commands_name(lora_folder, tmp_path,
                                                                                          capsys):
    folder = shutil.copytree(lora_folder, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["lora"]["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj"]  # more than its LoRA file holds
    (folder / "config.json").write_text(json.dumps(config))
    said = [f"llm-srt translate: warning: {folder / 'lora.safetensors'}: holds no LoRA weights for 4 of this "
            "model's 8 LoRA layers (k_proj, o_proj, e.g. base_model.model.model.layers.0.self_attn.k_proj): they "
            "start afresh, the others load from it"]
    for _ in range(2):
        assert _warnings(folder, tmp_path, capsys) == said
