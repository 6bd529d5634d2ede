"""The bench's memory columns (2026-12-07): on the CPU every timed section says what its own pass added to the
process's RSS, not the whole process's peak alone; the training comparison's copy of the trained weights waits on
the CPU, outside the device's peak."""

import torch

import bench_stubs
import tiny
from llm_srt import device
from llm_srt.bench import embedded, training


# A PeakMemory stand-in reading as the CPU's: the process RSS at 5000 MiB as the block starts, 40 more inside.
_CpuPeak = bench_stubs.fake_peak(start_mib=5000.0, rise_mib=40.0, mib=5040.0, kind="rss", reserved_mib=None)
_utterances = bench_stubs.utterances


def test_translate_reports_what_its_pass_added_on_the_cpu(tmp_path, monkeypatch):
    """JSON `overhead` (translate()) gave `peak_mib` alone: on the CPU the whole process's RSS peak (the models and
    what earlier sections left), not what translate() took; the decode and encoder rows also give `rss_start_mib`
    and `peak_rise_mib`, and so does it now."""
    monkeypatch.setattr(embedded, "PeakMemory", _CpuPeak)
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path).eval()
    out = embedded.time_overhead(model, _utterances(tmp_path, 2), batch=2, new_tokens=3)
    assert (out["peak_mib"], out["rss_start_mib"], out["peak_rise_mib"]) == (5040.0, 5000.0, 40.0)


def test_the_training_steps_report_what_they_added_on_the_cpu(tmp_path, monkeypatch):
    """JSON `train` likewise gave the process's RSS peak alone."""
    monkeypatch.setattr(training, "PeakMemory", _CpuPeak)
    model = tiny.speech_llm(tmp_path)
    out = training.time_training(model, _utterances(tmp_path, 2), batch_size=2, steps=1, workdir=tmp_path)
    assert (out["peak_mib"], out["rss_start_mib"], out["peak_rise_mib"]) == (5040.0, 5000.0, 40.0)


def test_the_cascade_reports_what_its_pass_added_on_the_cpu(tmp_path, monkeypatch):
    """JSON `cascade` gave the process's RSS peak alone (the table then printed '-' in its RSS rise column)."""
    from llm_srt.bench.common import RISE, memory_cell

    out = bench_stubs.time_cascade(tmp_path, monkeypatch, _CpuPeak)
    assert (out["peak_mib"], out["rss_start_mib"], out["peak_rise_mib"]) == (5040.0, 5000.0, 40.0)
    assert memory_cell(out, RISE) == "+40"


def test_the_training_comparisons_copy_of_the_trained_weights_waits_on_the_cpu(tmp_path, monkeypatch):
    """time_training copied the trained weights (to restore them after its steps) with `clone()`, on their own
    device: on a GPU the copy sat in the allocator through the timed steps, the adapter's size again in JSON
    train's `peak_mib`. The copy goes to the CPU (as bench/paper.py's training rows keep theirs), and the weights
    come back as they were."""
    monkeypatch.setattr(training, "PeakMemory", _CpuPeak)
    model = tiny.speech_llm(tmp_path)
    copies = []

    class Detached:  # what `p.detach()` gives time_training: records where each copy of a weight goes
        def __init__(self, param):
            self.param = param

        def clone(self):  # beside the weight, on its device
            copies.append("the weight's own device")
            return self.param.data.clone()

        def to(self, *args, **kwargs):
            copies.append(str(torch.device(args[0] if args else kwargs["device"])))
            return self.param.data.to(*args, **kwargs)

    params = model.trainable_parameters()
    before = [p.detach().clone() for p in params]
    for p in params:
        p.detach = lambda p=p: Detached(p)  # an instance attribute shadows the method
    try:
        training.time_training(model, _utterances(tmp_path, 2), batch_size=2, steps=1, workdir=tmp_path)
    finally:
        for p in params:
            del p.detach
    assert copies == ["cpu"] * len(params)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_the_paper_training_rows_report_what_their_steps_added_on_the_cpu(monkeypatch):
    """--paper-shape on the CPU (tiny, a rehearsal): its decode rows give `rss_start_mib` and `peak_rise_mib`, its
    training rows gave `peak_mib` alone, the whole process's RSS peak (both systems' decode rows before them). A
    stand-in model, as tests/test_bench_leftovers.py's."""
    from llm_srt.bench import paper
    from llm_srt.train import parallel

    monkeypatch.setattr(paper, "PeakMemory", _CpuPeak)
    monkeypatch.setattr(paper, "training_batch", lambda model, options: {})
    monkeypatch.setattr(parallel, "apply_activation_checkpointing", lambda model: 2)
    options = paper.PaperOptions(shape="tiny", **paper.TINY)
    rows = list(paper.training_rows(bench_stubs.Trainable(torch.linspace(1.0, 2.0, 4)), options, device.resolve("cpu", "float32"), log=lambda msg: None))
    assert len(rows) == 3
    for row in rows:
        assert (row["peak_mib"], row["rss_start_mib"], row["peak_rise_mib"]) == (5040.0, 5000.0, 40.0)
