"""Paper-shaped presets: the public configs' numbers, parameter counts on the meta device, and folders that load."""

import json

import numpy as np
import pytest
from transformers import AutoConfig, WhisperFeatureExtractor

from llm_srt import languages
from llm_srt.errors import LLMSRTError
from llm_srt.model import presets
from llm_srt.model.llm import load_tokenizer

# (hidden, layers, heads, kv heads, intermediate, vocab, tied, rope_theta) from the public config.json files
QWEN = {"qwen2.5-3b": (2048, 36, 16, 2, 11008, 151936, True, 1e6),
        "qwen2.5-7b": (3584, 28, 28, 4, 18944, 152064, False, 1e6),
        "qwen2.5-32b": (5120, 64, 40, 8, 27648, 152064, False, 1e6)}


@pytest.mark.parametrize("name", sorted(QWEN))
def test_llm_shapes_are_the_public_configs(name, tmp_path):
    cfg = AutoConfig.from_pretrained(presets.write_folders(name, tmp_path).llm)
    got = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
           cfg.intermediate_size, cfg.vocab_size, cfg.tie_word_embeddings, cfg.rope_parameters["rope_theta"])
    assert cfg.model_type == "qwen2" and got == QWEN[name]


def test_whisper_large_v3_encoder_shape(tmp_path):
    folder = presets.write_folders("qwen2.5-3b", tmp_path).encoder
    cfg = AutoConfig.from_pretrained(folder)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim, cfg.num_mel_bins,
            cfg.max_source_positions) == (1280, 32, 20, 5120, 128, 1500)
    assert WhisperFeatureExtractor.from_pretrained(folder).feature_size == 128
    assert not list(folder.glob("*.safetensors"))  # configs only: nothing to download or store


@pytest.mark.parametrize("name, llm, tolerance", [("qwen2.5-3b", 3.09e9, 0.01), ("qwen2.5-7b", 7.61e9, 0.01),
                                                   ("qwen2.5-32b", 32.76e9, 0.005)])
def test_parameter_counts_match_the_model_cards(name, llm, tolerance):
    counts = presets.parameter_counts(name)
    assert counts["llm"] == pytest.approx(llm, rel=tolerance)
    assert counts["encoder"] == pytest.approx(635e6, rel=0.01)  # Whisper-large-v3's encoder


def test_tokenizer_is_byte_level_bpe_with_language_tags(tmp_path):
    tok = load_tokenizer(presets.write_folders("tiny", tmp_path).llm)
    tags = [f"<|{code}|>" for code in languages.LANGUAGES]
    text = "Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen? 明天会下雨吗"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte level: any text round-trips
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in tags)  # a tag is one token
    assert tok.eos_token == presets.EOS_TOKEN and tok.pad_token_id == tok.eos_token_id and tok.bos_token is None
    assert len(tok) < 1024  # fits the tiny LLM's rows; the paper shapes keep their full vocabulary
    assert tok.decode([ids[0], 150000], skip_special_tokens=True) == tok.decode([ids[0]])  # ids past it: dropped


def test_the_folders_are_written_the_same_each_time(tmp_path):
    a = presets.write_folders("qwen2.5-7b", tmp_path / "a")
    b = presets.write_folders("qwen2.5-7b", tmp_path / "b")
    for name in ("tokenizer.json", "config.json"):
        assert (a.llm / name).read_text() == (b.llm / name).read_text()
    assert json.loads((a.llm / "config.json").read_text())["eos_token_id"] == 0


def test_tiny_preset_with_weights_builds_a_speech_llm(tmp_path):
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    folders = presets.write_folders("tiny", tmp_path, weights=True)
    model = SpeechLLM(SpeechLLMConfig(encoder=str(folders.encoder), llm=str(folders.llm),
                                      adapter_kwargs={"num_queries": 4, "hidden_size": 32, "num_layers": 1,
                                                      "num_heads": 4, "intermediate_size": 64}))
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    loss = model({"audio": [audio], "prompts": ["<|eng|><|deu|>"], "targets": ["Hi.<|eng|><|deu|>Hallo."]})["loss"]
    assert np.isfinite(loss.item())


def test_unknown_preset_names_the_choices():
    with pytest.raises(LLMSRTError, match="qwen2.5-7b"):
        presets.get("qwen2.5-70b")
