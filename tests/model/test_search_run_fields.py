"""A model folder's generation_config.json settings that transformers fills into a search we leave unset, and that
no search from our prompts can take: `prefill_chunk_size` crashed beam search while greedy decoded, and
`forced_bos_token_id` forced its token as the second new token (the prompt is given as embeddings, so the first new
token is at length 1 of the ids). Both are set back at load (llm.SEARCH_RUN_FIELDS), for greedy and beam alike."""

import json
from pathlib import Path

import pytest
import torch

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.model.decoding import DecodingOptions

CLIPS = [tiny.tone(0.8, 300), tiny.tone(1.5, 700, seed=1)]
PROMPTS = ["<|eng|>", "<|deu|><|eng|>"]


@pytest.mark.parametrize("setting", [{"prefill_chunk_size": 2}, {"forced_bos_token_id": 7}])
def test_a_folder_setting_no_search_of_ours_can_take_leaves_greedy_and_beam_as_without_it(tmp_path, setting):
    from llm_srt.model.speech_llm import SpeechLLM

    torch.manual_seed(0)
    plain = tiny.speech_llm(tmp_path, init_std=0.3).eval()
    settings = Path(plain.config.llm) / "generation_config.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), **setting}))
    odd = SpeechLLM(plain.config).eval()
    odd.adapter.load_state_dict(plain.adapter.state_dict())
    batch = dict(audio=CLIPS, prompts=PROMPTS)
    for beam in (1, 3):
        opts = DecodingOptions(max_new_tokens=6, beam_size=beam, repetition_penalty=1.2)  # HF's search, greedy too
        assert odd.generate_ids(batch, opts) == plain.generate_ids(batch, opts), beam
