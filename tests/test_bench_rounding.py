"""The bench's ratios are rounded once, to 2 decimals, from unrounded values (2026-12-07): the cached training step's
ratio was rounded to 4 decimals in time_training and again to 2 in summarize, translate()'s to 4 in time_overhead,
batch 1's decode step against its bound to 3 in bound_columns."""

from types import SimpleNamespace

import pytest
import torch

import bench_stubs
import tiny
from llm_srt import bench
from llm_srt.bench import embedded, training


def test_the_cached_step_ratio_is_rounded_once():
    """A cached step of 1.05503 s against an audio step of 1.5 s, 0.5 s of it the encoder: 1.05503, which is 1.06 and
    misses the 1.05 goal; rounded first to 1.055 it read 1.05, met."""
    ratio = training.cached_vs_audio_less_encoder(1.05503, 1.5, 0.5)
    assert round(ratio, 2) == 1.06
    train = {**bench_stubs.TRAIN, "cached_vs_audio_less_encoder": ratio}
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, bench_stubs.ENCODER, bench_stubs.OVERHEAD,
                                    train, None)
    assert result["cached_step_vs_audio_step_less_encoder"] == 1.06
    assert result["goals"]["cached_step_vs_audio_step_less_encoder"]["met"] is False
    line = next(x for x in bench.format_table(result).splitlines() if x.startswith("cached_step_vs"))
    assert line.split()[1:2] == ["1.06"] and "MISSED" in line


class _Clock:
    """`time` for bench/embedded.py: perf_counter reads `ticks` in turn (time_overhead reads it around its call)."""

    def __init__(self, *ticks: float):
        self.ticks = iter(ticks)

    def perf_counter(self) -> float:
        return next(self.ticks)


def test_the_translate_ratio_is_rounded_once(tmp_path, monkeypatch):
    """translate() took 12.5503 ms against 10 ms of needed forward passes: 1.25503, which is 1.26 and misses the 1.25
    goal; rounded first to 4 decimals in time_overhead (1.255) it read 1.25, met."""
    parts = {"encoder_s": 0.001, "adapter_s": 0.001, "prefill_s": 0.003, "decode_s": 0.005}
    monkeypatch.setattr(embedded, "lower_bound", lambda model, mel, mask, generation: dict(parts))
    monkeypatch.setattr(embedded, "time", _Clock(100.0, 100.0125503))  # the timed translate()
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path).eval()
    utts = [embedded.Utterance("x", tiny.tone(0.6 + 0.2 * i, 300 + 40 * i, seed=i), "eng", "deu", "", "")
            for i in range(2)]
    overhead = {**embedded.time_overhead(model, utts, batch=2, new_tokens=3), "peak_mib": 1}
    assert overhead["translate_vs_lower_bound"] == pytest.approx(1.25503, abs=1e-9)
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, bench_stubs.ENCODER, overhead,
                                    bench_stubs.TRAIN, None)
    assert result["overhead_vs_lower_bound"] == 1.26
    assert result["goals"]["overhead_vs_lower_bound"]["met"] is False
    line = next(x for x in bench.format_table(result).splitlines() if x.startswith("overhead_vs_lower_bound"))
    assert line.split()[1:2] == ["1.26"] and "MISSED" in line


def test_the_batch1_step_ratio_is_rounded_once():
    """A batch-1 decode step of 1.30503 s against its 1 s bandwidth bound: 1.30503, which is 1.31 and misses the 1.3
    goal; rounded first to 3 decimals in bound_columns (1.305) it read 1.3, met, and its row printed 1.30."""
    cost = {"weight_bytes_per_step": 1e9, "flops_per_row": 1, "int8": False}  # 1 GB a step: 1 s at 1 GB/s
    machine = {"bandwidth_gb_s": 1.0, "copy_gb_s": 1.0, "read_gb_s": 1.0, "copy_bytes": 1 << 30,
               "matmul_gflop_s": 300.0, "matmul_dtype": "float32"}

    def row(system: str, batch: int, seconds: float, step_s: float) -> dict:
        measured = {"system": system, "beam": 1, "batch_size": batch, "seconds": seconds,
                    "utterances_per_s": 16 / seconds, "speech_tokens": 80, "new_tokens": 32, "peak_mib": 1.0,
                    "memory": "rss", "weights": "float32", "decode_seconds": seconds / 2,
                    "generations": [[batch, 1, step_s, None]], "pass_seconds": [seconds], "compiled": False}
        return measured | embedded.bound_columns(cost, machine, measured)

    rows = [row("llm-srt", 1, 34.0, 1.30503), row("llm-srt", 16, 5.0, 1.5), row("pooled-750", 16, 20.0, 2.0)]
    assert rows[0]["bound"] == "bandwidth" and rows[0]["step_vs_bound"] == pytest.approx(1.30503, abs=1e-9)
    options = bench.BenchOptions(batch_sizes=(1, 16), headline_batch=16, pooled_batch_sizes=(16,),
                                 beam_batch_sizes=(), int8_batch_sizes=(), int8_beam_batch_sizes=(),
                                 int8_compiled_batch_sizes=())
    setup = {"model": "x", "device": "cpu float32", "bench_seconds": 1.0}
    result = embedded.summarize(options, setup, [SimpleNamespace(seconds=3.0)] * 16, rows, bench_stubs.ENCODER,
                                bench_stubs.OVERHEAD, bench_stubs.TRAIN, None, machine)
    assert result["batch1_step_vs_bandwidth_bound"] == 1.31
    assert result["goals"]["batch1_step_vs_bandwidth_bound"]["met"] is False
    lines = bench.format_table(result).splitlines()
    line = next(x for x in lines if x.startswith("batch1_step_vs_bandwidth_bound"))
    assert line.split()[1:2] == ["1.31"] and "MISSED" in line
    one = next(x for x in lines if x.startswith("LLM-SRT (Q-Former, 80 tok)") and x.split()[5] == "1")
    assert one.split()[-1] == "1.31"  # the row's x bound, as its goal reads it
