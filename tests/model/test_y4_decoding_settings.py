"""A model folder's generation_config.json settings that no search from our prompts can take (classifier-free
guidance, token healing, an assistant's flag, remove_invalid_values, the encoder_* ones) are set off alike for greedy
and beam search: beam search crashed on some, and on remove_invalid_values decoded NaN scores into garbage where
greedy refused them."""

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.errors import LLMSRTError
from llm_srt.model import decoding
from llm_srt.model.decoding import BROKEN_SCORES, DecodingOptions

CLIPS = [tiny.tone(0.8, 300), tiny.tone(1.5, 700, seed=1)]
PROMPTS = ["<|eng|>", "<|deu|><|eng|>"]
ODD = {"guidance_scale": 1.5, "token_healing": True, "is_assistant": True, "remove_invalid_values": True,
       "encoder_no_repeat_ngram_size": 2, "encoder_repetition_penalty": 1.3}


def _plain_and_odd(tmp_path, settings: dict):
    """A tiny speech LLM, and the same weights loaded again after `settings` joined its LLM folder's
    generation_config.json."""
    from llm_srt.model.speech_llm import SpeechLLM

    torch.manual_seed(0)
    plain = tiny.speech_llm(tmp_path, init_std=0.3).eval()
    file = Path(plain.config.llm) / "generation_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **settings}))
    odd = SpeechLLM(plain.config).eval()
    odd.adapter.load_state_dict(plain.adapter.state_dict())
    return plain, odd


def test_settings_no_search_of_ours_can_take_leave_greedy_and_beam_search_as_without_them(tmp_path):
    plain, odd = _plain_and_odd(tmp_path, ODD)
    batch = dict(audio=CLIPS, prompts=PROMPTS)
    for beam in (1, 3):
        opts = DecodingOptions(max_new_tokens=6, beam_size=beam)
        want = plain.generate_ids(batch, opts)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # HF's "encoder_* requires some form of input_ids ... ignoring" each call
            assert odd.generate_ids(batch, opts) == want, beam



@pytest.mark.parametrize("setting", [{"prefill_chunk_size": 2}, {"forced_bos_token_id": 7}])
def test_a_folder_setting_generate_fills_in_leaves_greedy_and_beam_as_without_it(tmp_path, setting):
    """Settings transformers fills into a search we leave unset (llm.SEARCH_RUN_FIELDS sets them back at load):
    `prefill_chunk_size` crashed beam search while greedy decoded, and `forced_bos_token_id` forced its token as the
    second new token (the prompt is given as embeddings, so the first new token is at length 1 of the ids)."""
    plain, odd = _plain_and_odd(tmp_path, setting)
    batch = dict(audio=CLIPS, prompts=PROMPTS)
    for beam in (1, 3):
        opts = DecodingOptions(max_new_tokens=6, beam_size=beam, repetition_penalty=1.2)  # HF's search, greedy too
        assert odd.generate_ids(batch, opts) == plain.generate_ids(batch, opts), beam

@pytest.mark.parametrize("beam, penalty", [(1, 1.0), (1, 1.2), (3, 1.0)])  # greedy_ids; HF's greedy; beam search
def test_nan_scores_are_refused_by_beam_search_as_by_greedy_under_remove_invalid_values(beam, penalty):
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=80, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                      eos_token_id=2)).eval()
    with torch.no_grad():
        lm.model.norm.weight[0] = float("nan")  # a diverged model: every next-token score NaN
    lm.generation_config.remove_invalid_values = True
    embeds, mask = torch.randn(2, 5, 48), torch.ones(2, 5, dtype=torch.long)
    options = DecodingOptions(beam_size=beam, max_new_tokens=4, repetition_penalty=penalty)
    with pytest.raises(LLMSRTError, match=re.escape(BROKEN_SCORES)):
        decoding.generate_ids(lm, embeds, mask, options, [2], 0)
