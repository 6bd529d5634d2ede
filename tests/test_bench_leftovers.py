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


def test_the_paper_training_rows_leave_the_trained_weights_as_they_found_them(monkeypatch):
    """The training rows ran AdamW on random batches and left the adapter so: the compiled rows after them decoded
    with other weights than the rows before (the embedded bench's training comparison restores them). A stand-in
    model (a step of the real one is tests/test_bench.py's)."""
    from llm_srt.train import parallel

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.linspace(1.0, 2.0, 4))

        def trainable_parameters(self):
            return [self.w]

        def forward(self, batch):
            return {"loss": (self.w ** 2).sum()}

    monkeypatch.setattr(paper, "training_batch", lambda model, options: {})
    monkeypatch.setattr(parallel, "apply_activation_checkpointing", lambda model: 2)
    model, before = Model(), torch.linspace(1.0, 2.0, 4)
    options = paper.PaperOptions(shape="tiny", **paper.TINY)
    rows = list(paper.training_rows(model, options, device.resolve("cpu", "float32"), log=lambda msg: None))
    assert len(rows) == 3 and not any(r["out_of_memory"] for r in rows)  # the steps ran (and moved w)
    assert torch.equal(model.w.detach(), before) and not model.training
