"""Bench ratios and table after a review (2026-12-07, Y3): ratios of unrounded rates and times, and the CUDA table's
reserved peak."""

from dataclasses import replace
from types import SimpleNamespace

import soundfile

import bench_stubs
import tiny
from llm_srt import bench, device
from llm_srt.bench import paper, training
from llm_srt.bench.embedded import Utterance


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


def test_cached_step_ratio_divides_unrounded_medians_on_tiny_steps(tmp_path, monkeypatch):
    """A tiny model's audio step of 0.31 ms, 0.26 ms of it the encoder's, stored as 0.0003 and 0.0003: summarize
    divided the cached step by their difference and stopped on a ZeroDivisionError at the bench's end; the ratio
    now comes from the unrounded medians (0.05 / 0.05 ms), and is None, shown "-", where nothing is left."""
    model = tiny.speech_llm(tmp_path)
    audio = tiny.tone(0.6, 300, seed=0)
    soundfile.write(tmp_path / "u.wav", audio, tiny.SAMPLE_RATE)
    utts = [Utterance(str(tmp_path / "u.wav"), audio, "eng", "deu", "a cat", "eine katze")]
    clock = [0.0]
    forward, encode = type(model).forward, type(model.encoder).encode

    def timed_forward(self, batch, *args, **kwargs):
        clock[0] += 0.00005  # each step's own work, either way
        return forward(self, batch, *args, **kwargs)

    def timed_encode(self, *args, **kwargs):
        clock[0] += 0.00026  # the encoder's part of an audio step (and of filling the cache)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", timed_forward)
    monkeypatch.setattr(type(model.encoder), "encode", timed_encode)
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    train = training.time_training(model, utts, batch_size=1, steps=2, workdir=tmp_path)
    assert (train["s_per_step_audio"], train["encoder_s_per_audio_step"]) == (0.0003, 0.0003)
    encoder, overhead = bench_stubs.ENCODER, bench_stubs.OVERHEAD
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, encoder, overhead, train, None)
    assert result["cached_step_vs_audio_step_less_encoder"] == 1.0
    assert result["goals"]["cached_step_vs_audio_step_less_encoder"]["met"] is True
    assert training.cached_vs_audio_less_encoder(0.0001, 0.0003, 0.0003) is None
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, encoder, overhead,
                                    {**train, "cached_vs_audio_less_encoder": None}, None)
    assert result["cached_step_vs_audio_step_less_encoder"] is None
    assert result["goals"]["cached_step_vs_audio_step_less_encoder"]["met"] is None
    line = next(x for x in bench.format_table(result).splitlines() if x.startswith("cached_step_vs"))
    assert line.split()[1] == "-" and "not measured" in line


def _with_memory(result: dict, **reading) -> dict:
    """`result` with every decode row's and the cascade's memory reading replaced by `reading`."""
    return {**result, "decode": [{**r, **reading} for r in result["decode"]],
            "cascade": {"batch_size": 16, "seconds": 8.0, "utterances_per_s": 2.0, "asr_tokens_mean": 9,
                        "mt_tokens_mean": 11, **reading}}


def _memory_cells(table: str) -> list[str]:
    """The memory column of the table's decode rows and cascade row, and its header."""
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("system"))
    rows = [line for line in lines[header + 1:] if line.startswith(("LLM-SRT", "Qwen2", "Cascade"))]
    return [lines[header][:115].split("speech tok")[1].split("ms/step")[0].strip()] + [
        line[38:].split()[5] for line in rows]


def test_the_cuda_table_shows_the_reserved_peak_beside_the_allocated_one():
    """On CUDA the table showed the allocator's peak alone (300 MiB), though the JSON holds the reserved peak (what a
    card must hold: 1,200 MiB here); each CUDA row now shows both, and the CPU table stays as it was."""
    encoder, overhead, train = bench_stubs.ENCODER, bench_stubs.OVERHEAD, bench_stubs.TRAIN
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, encoder, overhead, train, None)
    gpu = _with_memory(result, memory="gpu", peak_mib=300.0, reserved_mib=1200.0, rss_start_mib=None,
                       peak_rise_mib=None)
    table = bench.format_table(gpu)
    assert _memory_cells(table) == ["peak/rsvd MiB"] + ["300/1200"] * 4
    assert "the CUDA allocator's peak (what tensors held) / its reserved peak" in table
    old = _with_memory(result, memory="gpu", peak_mib=300.0, rss_start_mib=None, peak_rise_mib=None)
    assert _memory_cells(bench.format_table(old)) == ["GPU peak MiB"] + ["300"] * 4  # results from before f4869f4
    cpu = bench.format_table(_with_memory(result, memory="rss", peak_mib=4967.0, reserved_mib=None,
                                          rss_start_mib=4900.0, peak_rise_mib=67.0))
    assert _memory_cells(cpu) == ["RSS rise MiB"] + ["+67"] * 4 and "reserved peak" not in cpu
    assert cpu.splitlines()[cpu.splitlines().index("") + 1].index("RSS rise MiB") == 38 + 1 + 8 + 1 + 5 + 1 + 9 + 1 \
        + 7 + 1 + 10 + 1  # the CPU table's columns where they were


def test_the_paper_table_shows_the_reserved_peak_on_cuda(monkeypatch):
    """`bench --paper-shape` on CUDA printed each row's and probe's allocator peak alone (18,000 MiB), though the
    JSON holds the reserved peak a card must hold (21,000 MiB); both now, the CPU table as before."""
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    gpu = device.Placement(torch.device("cuda", 0), torch.bfloat16)
    options = paper.PaperOptions(shape="qwen2.5-7b")
    probe = {**_paper_row("llm-srt", 128, 128, 5.0), "memory": "gpu", "peak_mib": 18000.0, "reserved_mib": 21000.0}
    found = {"llm-srt": {"probes": [probe], "largest_fit": 128, "out_of_memory_at": 256, "capped_at_max_batch": False,
                         "memory_gib": None, "outside_allocator_mib": None},
             "pooled-750": {"probes": [], "largest_fit": None, "out_of_memory_at": 1, "capped_at_max_batch": False,
                            "memory_gib": None, "outside_allocator_mib": None}}
    lines = paper.format_paper(paper.summarize(options, gpu, [], found, [], 1.0)).splitlines()
    assert lines[2].split()[-2:] == ["peak/rsvd", "MiB"]
    assert next(x for x in lines if x.startswith("LLM-SRT")).split()[-1] == "18000/21000"
    assert any("its reserved peak" in x for x in lines)
    cpu = paper.format_paper(paper.summarize(replace(options, shape="tiny"), device.resolve("cpu", "float32"),
                                             [_paper_row("llm-srt", 2, 4, 2.0)], {}, [], 1.0)).splitlines()
    assert cpu[2].split()[-3:] == ["RSS", "peak", "MiB"] and cpu[3].split()[-1] == "100"
