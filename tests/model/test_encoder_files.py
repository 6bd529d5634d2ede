"""Which weight files of a Whisper folder the encoder reads: transformers' own choice, never every *.safetensors."""

import json
from pathlib import Path

import pytest
import safetensors
import torch
from safetensors.torch import load_file, save_file

from llm_srt.errors import LLMSRTError
from llm_srt.model.encoder import WhisperEncoder

import tiny  # tests/model is on sys.path (pytest rootdir insertion)

CONV1 = "model.encoder.conv1.weight"


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    return tiny.whisper_dir(tmp_path_factory.mktemp("whisper"))


@pytest.fixture
def opened(monkeypatch):
    """The names of the safetensors files opened, in order (header reads included)."""
    names: list[str] = []
    real = safetensors.safe_open

    def spy(file, *args, **kwargs):
        names.append(Path(file).name)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    return names


def _copy(wdir: Path, dest: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny Whisper folder without its weights, and those weights."""
    dest.mkdir()
    for file in wdir.iterdir():
        if file.suffix != ".safetensors":
            (dest / file.name).write_bytes(file.read_bytes())
    return dest, load_file(wdir / "model.safetensors")


def _shards(folder: Path, state: dict[str, torch.Tensor], pattern: str) -> dict[str, str]:
    """`state` split in two files named by `pattern` (its {} the shard number); tensor name -> file name."""
    keys = sorted(state)
    halves = keys[:len(keys) // 2], keys[len(keys) // 2:]
    where = {}
    for i, half in enumerate(halves, 1):
        save_file({k: state[k] for k in half}, folder / pattern.format(i), metadata={"format": "pt"})
        where |= dict.fromkeys(half, pattern.format(i))
    return where


def test_a_large_v3_folder_is_read_from_model_safetensors_alone(wdir, tmp_path, opened):
    """openai/whisper-large-v3 ships model.safetensors (float16) beside model.fp32-0000N-of-00002.safetensors:
    reading all three read the encoder three times and kept whichever file sorted last."""
    folder, state = _copy(wdir, tmp_path / "large-v3")
    save_file({k: v.half() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    _shards(folder, state, "model.fp32-0000{}-of-00002.safetensors")
    enc = WhisperEncoder.from_pretrained(folder)
    assert set(opened) == {"model.safetensors"}
    assert torch.equal(enc.encoder.conv1.weight, state[CONV1].half().float())  # the float16 copy, as transformers


def test_a_sharded_folder_reads_the_shards_its_index_lists(wdir, tmp_path, opened):
    folder, state = _copy(wdir, tmp_path / "sharded")
    where = _shards(folder, state, "model-0000{}-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": where}))
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, folder / "model.old.safetensors")  # a leftover
    enc = WhisperEncoder.from_pretrained(folder)
    assert set(opened) <= set(where.values())
    assert torch.equal(enc.encoder.conv1.weight, state[CONV1])


def test_unindexed_shards_are_globbed_and_a_tensor_in_two_files_is_refused(wdir, tmp_path):
    folder, state = _copy(wdir, tmp_path / "by-hand")
    _shards(folder, state, "part{}.safetensors")
    assert torch.equal(WhisperEncoder.from_pretrained(folder).encoder.conv1.weight, state[CONV1])
    save_file({CONV1: state[CONV1].half()}, folder / "part3.safetensors")
    with pytest.raises(LLMSRTError, match=rf"part\d.safetensors and part3.safetensors both hold {CONV1}; keep one "
                                          "copy of the weights"):
        WhisperEncoder.from_pretrained(folder)


def test_weights_of_another_shape_than_config_json_gives_are_one_line_naming_the_folder(wdir, tmp_path):
    """A config.json of another Whisper size beside the weights (large-v3's 128 mel bins with large-v2's 80) was
    torch's many-line load_state_dict RuntimeError, naming no folder."""
    folder, state = _copy(wdir, tmp_path / "mixed")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_mel_bins": 128}))
    with pytest.raises(LLMSRTError) as e:
        WhisperEncoder.from_pretrained(folder)
    assert str(e.value) == (f"{folder}: 1 Whisper encoder weight(s) in another shape than its config.json gives "
                            "(conv1.weight: (32, 80, 3) in the file, (32, 128, 3) expected); are config.json and "
                            "the weights from the same model? copy or download the folder again")
