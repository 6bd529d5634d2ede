"""Leftovers of the bench's review (2026-12-07): the encoder rows timed at the shape they warm up at, each with the
memory its own pass added; the paper bench's training rows leaving the adapter as they found it; a largest-batch
search where nothing fits said in words."""

import numpy as np
import pytest
import torch

from llm_srt import device
from llm_srt.bench import common, paper

GPU = device.Placement(torch.device("cuda", 0), torch.bfloat16)  # summarize and format_paper only read it


def test_a_search_where_no_batch_fits_says_so_in_the_table(monkeypatch):
    """Even batch 1 out of memory (a 32B under a small --memory-gib): the table read "largest batch ...: None"."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    options = paper.PaperOptions(shape="qwen2.5-7b", memory_gib=8.0)
    found = {name: {"probes": [], "largest_fit": None, "out_of_memory_at": 1, "capped_at_max_batch": False,
                    "memory_gib": 8.0, "outside_allocator_mib": 500} for name in paper.SYSTEMS}
    table = paper.format_paper(paper.summarize(options, GPU, [], found, [], 1.0))
    line = next(x for x in table.splitlines() if x.startswith("largest batch") and "Q-Former" in x)
    assert "None" not in line and "no batch fits, not even 1 (out of memory at 1)" in line
