"""Bench ratios and table after a review (2026-12-07, Y3): ratios of unrounded rates and times, and the CUDA table's
reserved peak."""

from dataclasses import replace

import pytest

from llm_srt import device
from llm_srt.bench import paper


def _paper_row(system: str, batch: int, utterances: int, seconds: float) -> dict:
    """A paper-shape greedy row as bench/paper.py's `row` writes it (utterances_per_s rounded to 2 decimals)."""
    return {"system": system, "beam": 1, "batch_size": batch, "compiled": False, "utterances": utterances,
            "seconds": seconds, "seconds_per_1000": round(seconds / utterances * 1000, 2),
            "utterances_per_s": round(utterances / seconds, 2), "new_tokens": 4, "speech_tokens": 8,
            "peak_mib": 100.0, "rss_start_mib": None, "peak_rise_mib": None, "reserved_mib": None, "memory": "rss",
            "out_of_memory": False}


def test_paper_ratios_divide_unrounded_rates_at_slow_rates():
    """A 7B shape on the CPU: 4 utterances in 250 s (0.016 utt/s, shown 0.02) against 1000 s (0.004, shown 0.0)
    stopped summarize on a ZeroDivisionError, every row measured lost; the ratios are now 4.0."""
    options = replace(paper.PaperOptions(shape="tiny"), **paper.TINY)
    placement = device.resolve("cpu", "float32")
    q, p = _paper_row("llm-srt", 2, 4, 250.0), _paper_row("pooled-750", 2, 4, 1000.0)
    found = {"llm-srt": {"probes": [q], "memory_gib": None}, "pooled-750": {"probes": [p], "memory_gib": None}}
    out = paper.summarize(options, placement, [q, p], found, [], 1.0)
    assert out["qformer_vs_pooled_at_equal_batch"] == {"2": 4.0}
    assert out["qformer_vs_pooled_at_largest_batch"] == 4.0
    # coarse, not only zero: 0.013 (0.01) against 0.0067 (0.01) is 2.0, not 1.0
    q, p = _paper_row("llm-srt", 2, 4, 300.0), _paper_row("pooled-750", 2, 4, 600.0)
    assert paper.summarize(options, placement, [q, p], {}, [], 1.0)["qformer_vs_pooled_at_equal_batch"] == {"2": 2.0}
