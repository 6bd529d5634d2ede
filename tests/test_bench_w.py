"""Bench leftovers (2026-12-07, W): translate()'s ratio on a tiny model's sub-millisecond bound."""

from types import SimpleNamespace

import pytest
import torch

import tiny
from llm_srt.bench import embedded


class _Clock:
    """`time` for bench/embedded.py: perf_counter reads `ticks` in turn (time_overhead reads it around its call)."""

    def __init__(self, *ticks: float):
        self.ticks = iter(ticks)

    def perf_counter(self) -> float:
        return next(self.ticks)


def _summarize(overhead: dict) -> dict:
    """embedded.summarize on made-up sections around the `overhead` given."""
    options = embedded.BenchOptions(batch_sizes=(1, 16), headline_batch=16, pooled_batch_sizes=(16,),
                                    beam_batch_sizes=(), int8_batch_sizes=(), int8_beam_batch_sizes=(),
                                    int8_compiled_batch_sizes=())

    def row(system, batch, seconds):
        return {"system": system, "beam": 1, "batch_size": batch, "seconds": seconds, "decode_seconds": seconds / 2,
                "step_vs_bound": 1.2}

    rows = [row("llm-srt", 1, 34.0), row("llm-srt", 16, 5.0), row("pooled-750", 16, 20.0)]
    encoder = {"variable_s": 0.4, "padded_s": 1.6}
    train = {"s_per_step_audio": 5.0, "s_per_step_cached": 4.0, "encoder_s_per_audio_step": 1.0}
    setup = {"device": "cpu float32"}
    return embedded.summarize(options, setup, [SimpleNamespace(seconds=3.0)] * 16, rows, encoder, overhead, train,
                              None, {})


def test_a_lower_bound_under_half_a_millisecond_still_gives_the_ratio(tmp_path, monkeypatch):
    """A tiny model's needed forward passes took 0.4 ms: `lower_bound_s` is 0.0 at 3 decimals, and summarize divided
    translate_s by it (ZeroDivisionError after every row had run, the table lost). The ratio is of the unrounded
    times: 12.3 ms / 0.4 ms."""
    parts = {"encoder_s": 0.0001, "adapter_s": 0.0001, "prefill_s": 0.0001, "decode_s": 0.0001}
    monkeypatch.setattr(embedded, "lower_bound", lambda model, mel, mask, generation: dict(parts))
    monkeypatch.setattr(embedded, "time", _Clock(100.0, 100.0123))  # the timed translate(): 12.3 ms
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path).eval()
    utts = [embedded.Utterance("x", tiny.tone(0.6 + 0.2 * i, 300 + 40 * i, seed=i), "eng", "deu", "", "")
            for i in range(2)]
    out = embedded.time_overhead(model, utts, batch=2, new_tokens=3)
    result = _summarize(out)
    assert out["lower_bound_s"] == 0.0 and out["translate_s"] == 0.012
    assert out["translate_vs_lower_bound"] == pytest.approx(0.0123 / 0.0004, rel=1e-3)
    assert result["overhead_vs_lower_bound"] == 30.75 and result["goals"]["overhead_vs_lower_bound"]["met"] is False
