"""A Whisper folder's weight files in the layouts transformers itself loads (weight_files.tensor_files)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_srt.errors import LLMSRTError
from llm_srt.model.encoder import WhisperEncoder
from llm_srt.model.weight_files import tensor_files
from llm_srt.model.whisper_torch import TorchWhisper

import tiny  # tests/model is on sys.path (pytest rootdir insertion)

CONV1 = "model.encoder.conv1.weight"


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    return tiny.whisper_dir(tmp_path_factory.mktemp("whisper"))


def _bin_shards(wdir: Path, dest: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """The tiny Whisper as save_pretrained(safe_serialization=False) shards it: pytorch_model-0000N-of-00002.bin and
    pytorch_model.bin.index.json; its tensors; tensor name -> shard."""
    dest.mkdir()
    for file in wdir.iterdir():
        if file.suffix != ".safetensors":
            (dest / file.name).write_bytes(file.read_bytes())
    state = load_file(wdir / "model.safetensors")
    keys = sorted(state)
    where = {}
    for i, half in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:]), 1):
        name = f"pytorch_model-0000{i}-of-00002.bin"
        torch.save({k: state[k] for k in half}, dest / name)
        where |= dict.fromkeys(half, name)
    (dest / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": where}))
    return dest, state, where


def test_a_folder_of_pytorch_model_bin_shards_loads_as_transformers_loads_it(wdir, tmp_path):
    """A fine-tune saved with safe_serialization=False past the shard size was "not a Hugging Face Whisper folder"
    to both readers, though transformers loads it."""
    folder, state, where = _bin_shards(wdir, tmp_path / "bin-shards")
    assert {k: f.name for k, f in tensor_files(folder).items()} == where
    assert torch.equal(WhisperEncoder.from_pretrained(folder).encoder.conv1.weight, state[CONV1])
    whisper = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    table = "model.decoder.embed_tokens.weight"
    assert torch.equal(whisper.model.decoder.embed_tokens.weight, state[table])


def test_a_stale_bin_index_names_the_shard_and_the_tensor_it_lacks(wdir, tmp_path):
    folder, state, where = _bin_shards(wdir, tmp_path / "stale")
    moved = CONV1 if where[CONV1].startswith("pytorch_model-00002") else next(
        k for k, f in where.items() if f.startswith("pytorch_model-00002") and k.startswith("model.encoder."))
    where[moved] = "pytorch_model-00001-of-00002.bin"  # not where it is
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": where}))
    with pytest.raises(LLMSRTError, match=rf"pytorch_model-00001-of-00002.bin: pytorch_model.bin.index.json names a "
                                          rf"tensor this shard lacks \({moved}\); the index is stale"):
        WhisperEncoder.from_pretrained(folder)


@pytest.mark.parametrize("int8", [False, True])
def test_bin_shards_of_another_shape_than_config_json_name_their_index(wdir, tmp_path, int8):
    """The torch Whisper's shape error for pytorch_model-0000N-of-00002.bin shards named "*.safetensors", a file
    pattern the folder does not hold; it names the index that mapped the shards."""
    folder, _, _ = _bin_shards(wdir, tmp_path / "bin-shards")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "d_model": 48}))
    with pytest.raises(LLMSRTError) as e:
        TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=int8)
    assert str(e.value).startswith(f"{folder}/pytorch_model.bin.index.json: not a Whisper of config.json's shape (")
    assert "48" in str(e.value) and "\n" not in str(e.value)
