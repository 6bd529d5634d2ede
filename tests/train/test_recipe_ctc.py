"""The CTC loss in the recipe where the adapter gives fewer speech vectors than a transcript's CTC path needs."""

import json
from pathlib import Path

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.train import recipe
from llm_srt.train.config import load_config

from .conftest import overrides


def _queries(n: int) -> str:
    return f"{{num_queries: {n}, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64}}"


def _ctc_only(setup, out, queries: int):
    return load_config(None, overrides(setup, out, max_steps=3, stage="asr", trainable="[adapter]", **{
        "data.tasks": "{asr: 1.0}", "ctc": "{only: true}", "model.adapter_kwargs": _queries(queries)}))


def test_a_ctc_only_step_whose_rows_all_lack_speech_vectors_stops_the_run(tiny_setup, tmp_path):
    """4 queries, and every transcript needs more: CTC gave each row a loss of 0, and the run logged loss 0.0 and
    grad_norm 0.0 every step, exited 0 and saved an untrained final/."""
    with pytest.raises(LLMSRTError, match=r"^\[asr\] ctc.only: none of the 4 rows of step 1 has as many speech "
                                          r"vectors as its transcript needs, .* a larger model.adapter_kwargs."
                                          r"num_queries for a Q-Former, or a projector"):
        recipe.train(_ctc_only(tiny_setup, tmp_path / "run", 4), log=lambda *_: None)
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_rows_short_of_speech_vectors_are_said_once_and_left_out_of_the_ctc_loss(tiny_setup, tmp_path):
    """With 10 queries some transcripts fit, some do not: the run trains on those that fit and says once how many do
    not (model/test_ctc.py: the loss averages over the rows that fit)."""
    messages = []
    recipe.train(_ctc_only(tiny_setup, tmp_path / "run", 10), log=messages.append)
    said = [m for m in messages if "fewer speech vectors than transcript tokens" in m]
    assert len(said) == 1 and said[0].startswith("[asr] ctc: ") and "said once" in said[0], messages
    logged = [json.loads(line) for line in (Path(tmp_path / "run") / "train_log.jsonl").read_text().splitlines()]
    assert len(logged) == 3 and all(r["ctc_loss"] > 1 and r["grad_norm"] > 0 for r in logged), logged
