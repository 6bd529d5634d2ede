"""Leftovers of the bench's review (2026-12-07): the encoder rows timed at the shape they warm up at, each with the
memory its own pass added; the paper bench's training rows leaving the adapter as they found it; a largest-batch
search where nothing fits said in words."""

import numpy as np
import pytest
import torch

import bench_stubs
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

    monkeypatch.setattr(paper, "training_batch", lambda model, options: {})
    monkeypatch.setattr(parallel, "apply_activation_checkpointing", lambda model: 2)
    model, before = bench_stubs.Trainable(torch.linspace(1.0, 2.0, 4)), torch.linspace(1.0, 2.0, 4)
    options = paper.PaperOptions(shape="tiny", **paper.TINY)
    rows = list(paper.training_rows(model, options, device.resolve("cpu", "float32"), log=lambda msg: None))
    assert len(rows) == 3 and not any(r["out_of_memory"] for r in rows)  # the steps ran (and moved w)
    assert torch.equal(model.w.detach(), before) and not model.training
    rows = paper.training_rows(model, options, device.resolve("cpu", "float32"), log=lambda msg: None)
    next(rows)  # a caller that stops reading after the first row (its steps moved w)
    assert not torch.equal(model.w.detach(), before)
    rows.close()
    assert torch.equal(model.w.detach(), before) and not model.training


class _Recorded:
    """A PeakMemory stand-in that says whether a call runs inside the timed region, and a CPU-like RSS reading."""
    inside = False
    start = {"variable": 900.0, "padded": 1000.0}

    def __init__(self, device):
        pass

    def __enter__(self):
        _Recorded.inside = True
        return self

    def __exit__(self, *exc):
        _Recorded.inside = False
        self.start_mib = _Recorded.start[_FakeEncoder.last]
        self.rise_mib, self.mib, self.kind, self.reserved_mib = 50.0, self.start_mib + 50.0, "rss", None


class _FakeEncoder:
    last = None

    def __init__(self, name, calls, frames):
        self.name, self.calls, self.frames = name, calls, frames

    def encode(self, audios):
        _FakeEncoder.last = self.name
        self.calls.append((self.name, len(audios), _Recorded.inside))
        return torch.zeros(len(audios), self.frames, 4), torch.ones(len(audios), self.frames, dtype=torch.bool)


@pytest.mark.parametrize("repeats", [1, 3])
def test_the_encoder_rows_warm_up_at_the_batch_they_time_and_report_what_each_pass_added(monkeypatch, repeats):
    """time_encoder warmed up on one clip and timed the whole batch: the first call at the batch's shape
    (allocations, oneDNN primitives) was inside the timer, all of the row under --quick (one timed pass). And on the
    CPU each way's peak was the process's, so the padded one (run second) could never read below the variable one;
    each way now also says what its own pass added, as the decode rows do."""
    from llm_srt.bench import encoder

    calls = []
    monkeypatch.setattr(encoder, "PeakMemory", _Recorded)
    clips = [np.zeros(16000 * 2, dtype=np.float32) for _ in range(4)]
    out = encoder.time_encoder(_FakeEncoder("variable", calls, 100), _FakeEncoder("padded", calls, 1500), clips,
                               repeats, torch.device("cpu"))
    for way in ("variable", "padded"):
        made = [n for name, n, timed in calls if name == way and not timed]
        timed = [n for name, n, timed in calls if name == way and timed]
        assert len(timed) == repeats and set(timed) <= set(made)  # every timed shape was made before the timer
    assert out["variable_frames"] == 100 and out["padded_frames"] == 1500
    assert (out["variable_rss_start_mib"], out["variable_peak_rise_mib"]) == (900.0, 50.0)
    assert (out["padded_rss_start_mib"], out["padded_peak_rise_mib"]) == (1000.0, 50.0)


def test_a_decode_row_warms_up_its_last_smaller_batch_too(monkeypatch):
    """--n 20 at batch 8 (the pooled row of --quick, the only batch it times): the timed pass runs batches of 8, 8
    and 4, and the warm-up ran the first batch alone, so the kernel timings of the 4-row steps (`model.cpu_linear`,
    once per row count in a process: 3 s for Gemma's head) were made inside the timer. Every batch shape the timed
    pass runs is warmed up first."""
    from types import SimpleNamespace

    from llm_srt.bench import embedded

    shapes = {"warm-up": set(), "timed": set()}

    def fake_pass(system, audios, batch, options):
        phase = "warm-up" if options.max_new_tokens == 2 else "timed"
        shapes[phase] |= {len(audios[s:s + batch]) for s in range(0, len(audios), batch)}
        chunks = -(-len(audios) // batch)
        return common.DecodeRun(seconds=1.0, utterances=len(audios), new_tokens=options.max_new_tokens,
                                speech_tokens=8, peak_mib=1.0, memory="rss", steps=((batch, 2, 0.5),) * chunks)

    monkeypatch.setattr(embedded, "decode_pass", fake_pass)
    monkeypatch.setattr(embedded, "decode_cost", lambda llm: {"int8": False})
    monkeypatch.setattr(embedded, "step_bound", lambda *a: {"bound_s": 0.1, "bound": "bandwidth"})
    system = SimpleNamespace(model=SimpleNamespace(llm=None, llm_dtype=torch.float32))
    utts = [SimpleNamespace(audio=np.zeros(1600, np.float32)) for _ in range(20)]
    options = embedded.BenchOptions(n=20, new_tokens=5)
    rows = embedded.decode_rows(system, utts, [("llm-srt", 1, 8)], options, lambda msg: None, {})
    assert [r["batch_size"] for r in rows] == [8]
    assert shapes["timed"] == {8, 4} and shapes["timed"] <= shapes["warm-up"]
