"""The LLM's int8 load reads the tied embedding table from the file transformers itself loaded."""

from __future__ import annotations

import json
import re

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from llm_srt.model.llm import _file_tensor, load_llm

import tiny


def _tied_llm_with_stale_shards(root):
    """A tied-head LLM folder (vocab 200, so the table check samples every 3rd row) holding model.safetensors and,
    beside it, a stale model.safetensors.index.json whose shard's table differs in row 1 alone."""
    torch.manual_seed(0)
    tok = tiny.tokenizer()
    config = Qwen2Config(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    path = root / "tied-200"
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    weights.pop("lm_head.weight", None)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    stale = {k: v.clone() for k, v in weights.items()}
    stale["model.embed_tokens.weight"][1] += 1.0  # row 1: not among the rows `_checkpoint_table` compares
    save_file(stale, path / "model-00001-of-00001.safetensors", metadata={"format": "pt"})
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": dict.fromkeys(stale, "model-00001-of-00001.safetensors")}))
    return path, weights["model.embed_tokens.weight"]


def test_file_tensor_reads_model_safetensors_before_a_stale_index(tmp_path):
    """transformers loads model.safetensors where a folder has it beside an index of shards: `_file_tensor` (the
    int8 load's tied head and embedding table) reads the same file, not the index's shard."""
    path, table = _tied_llm_with_stale_shards(tmp_path)
    view, file = _file_tensor(path, "model.embed_tokens.weight")
    assert file == path / "model.safetensors"
    assert torch.equal(view, table)


def test_int8_tied_table_and_head_are_the_loaded_files(tmp_path):
    """An int8 load of such a folder keeps the weights transformers loaded (model.safetensors): its embedding table
    and its int8 head were the stale shard's, row 1 off by 1.0 against the float32 load."""
    path, table = _tied_llm_with_stale_shards(tmp_path)
    ref, _ = load_llm(path, "float32")
    assert torch.equal(ref.get_input_embeddings().weight, table)
    q, _ = load_llm(path, "int8")
    embedding = q.get_input_embeddings().weight
    assert torch.equal(embedding, table)
    head = q.get_output_embeddings()
    assert (head.dequantized_weight() - table).abs().max() <= table.abs().amax(1).max() / 127


def test_a_config_value_of_another_type_is_one_line_naming_the_file(tmp_path):
    """A config.json whose value has another type than transformers' typed config takes ("vocab_size": "x", a
    hand edit) is an LLMSRTError naming the file and the field, not huggingface_hub's validation traceback."""
    import pytest

    from llm_srt.errors import LLMSRTError

    path = tiny.llm_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "vocab_size": "x"}))
    for weights in (True, False):  # from the checkpoint, and from config.json alone (paper-shaped benchmarks)
        with pytest.raises(LLMSRTError) as e:
            load_llm(path, weights=weights)
        message = str(e.value)
        assert message.startswith(f"{path / 'config.json'}: ") and "'vocab_size' expected int" in message
        assert "\n" not in message


def test_a_damaged_tokenizer_config_is_one_line_naming_the_file(tmp_path):
    """tokenizer_config.json holding a JSON list (an AttributeError traceback) or damaged JSON (an error naming only
    the folder) is one line naming the file."""
    import pytest

    from llm_srt.errors import LLMSRTError

    path = tiny.llm_dir(tmp_path)
    for text, said in (("[1]", "a JSON list, not an object"), ("{", "not JSON")):
        (path / "tokenizer_config.json").write_text(text)
        with pytest.raises(LLMSRTError, match="^" + re.escape(f"{path / 'tokenizer_config.json'}: {said}")):
            load_llm(path)


def test_a_damaged_generation_config_is_refused_not_dropped(tmp_path):
    """A damaged generation_config.json: transformers' from_pretrained dropped it with an info log, its end ids with
    it (decoding ran past them), while the config-only build (an FSDP rank's skeleton) stopped on it. Both are one
    line naming the file."""
    import pytest

    from llm_srt.errors import LLMSRTError

    path = tiny.llm_dir(tmp_path)
    file = path / "generation_config.json"
    for text, said in (('{"eos_token_id": [2, 5], ', "cannot read it as JSON"), ("[2]", "a JSON list, not an object")):
        file.write_text(text)
        for weights in (True, False):
            with pytest.raises(LLMSRTError, match="^" + re.escape(f"{file}: {said}")):
                load_llm(path, weights=weights)
    file.write_text('{"eos_token_id": [2, 5]}')  # a whole one is read as before
    model, _ = load_llm(path)
    assert model.generation_config.eos_token_id == [2, 5]
