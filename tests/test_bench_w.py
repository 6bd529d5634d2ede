"""Bench leftovers (2026-12-07, W): translate()'s ratio on a tiny model's sub-millisecond bound."""

from types import SimpleNamespace

import pytest
import torch

import bench_stubs
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
    train = {"s_per_step_audio": 5.0, "s_per_step_cached": 4.0, "encoder_s_per_audio_step": 1.0,
             "cached_vs_audio_less_encoder": 1.0}
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


# ---- on CUDA every embedded section gives the allocator's reserved peak, as the paper-shape rows do -------------
# A PeakMemory stand-in reading as CUDA's: an allocator peak of 6000 MiB, 7168 MiB reserved, no RSS.
_CudaPeak = bench_stubs.fake_peak(mib=6000.0, reserved_mib=7168.0, start_mib=None, rise_mib=None, kind="gpu")
_utterances = bench_stubs.utterances


def test_a_decode_row_gives_the_reserved_peak_its_pass_measured(monkeypatch):
    """`decode_pass` measures CUDA's reserved peak (DecodeRun.reserved_mib) and the paper-shape rows report it;
    the embedded bench's decode rows left it out of the JSON."""
    from llm_srt.bench import common

    monkeypatch.setattr(embedded, "bound_columns", lambda cost, machine, row: {})
    run = common.DecodeRun(seconds=2.0, utterances=4, new_tokens=3, speech_tokens=8, peak_mib=6000.0, memory="gpu",
                           steps=((4, 2, 0.5),), reserved_mib=7168.0)
    system = SimpleNamespace(model=SimpleNamespace(llm_dtype=torch.bfloat16))
    row = embedded.decode_row(system, ("llm-srt", 1, 4, False), [run], {"int8": False}, {})
    assert (row["peak_mib"], row["reserved_mib"], row["memory"]) == (6000.0, 7168.0, "gpu")


def test_translate_training_and_encoder_give_the_reserved_peak(tmp_path, monkeypatch):
    """JSON overhead (translate()), train and encoder gave the allocator's peak alone on CUDA, dropping the reserved
    peak their PeakMemory had read (what a memory cap limits: paper.py's training rows give it)."""
    from llm_srt.bench import encoder, training

    for module in (embedded, training, encoder):
        monkeypatch.setattr(module, "PeakMemory", _CudaPeak)
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path).eval()
    utts = _utterances(tmp_path, 2)
    out = embedded.time_overhead(model, utts, batch=2, new_tokens=3)
    assert (out["peak_mib"], out["reserved_mib"]) == (6000.0, 7168.0)
    out = training.time_training(model, utts, batch_size=2, steps=1, workdir=tmp_path)
    assert (out["peak_mib"], out["reserved_mib"]) == (6000.0, 7168.0)

    class Encoder:  # what time_encoder calls: encode(clips) -> (features, mask)
        def encode(self, clips):
            return torch.zeros(len(clips), 5, 4), torch.ones(len(clips), 5, dtype=torch.bool)

    out = encoder.time_encoder(Encoder(), Encoder(), [u.audio for u in utts], 1, torch.device("cpu"))
    assert [out[f"{way}_reserved_mib"] for way in ("variable", "padded")] == [7168.0, 7168.0]


def test_the_cascade_gives_the_reserved_peak(tmp_path, monkeypatch):
    out = bench_stubs.time_cascade(tmp_path, monkeypatch, _CudaPeak)
    assert (out["peak_mib"], out["reserved_mib"]) == (6000.0, 7168.0)


# ---- the Whisper row's two sides run the same weights ------------------------------------------------------------
@pytest.mark.parametrize("given,missing", [({"whisper": "/models/whisper-small"}, "ct2"),
                                           ({"ct2": "/models/whisper-small-ct2"}, "whisper")])
def test_the_whisper_row_refuses_one_model_folder_without_the_other(given, missing):
    """`whisper=` without `ct2=` ran `translate --model whisper --whisper FOLDER` against faster-whisper on the
    embedded Whisper base (rebuilt when ct2 is None): a ratio of two models. Refused in one line, as is the reverse."""
    from llm_srt.bench import whisper as wb
    from llm_srt.errors import LLMSRTError

    with pytest.raises(LLMSRTError, match=rf"given {next(iter(given))}='/models/.*' without {missing}=.*give both"):
        wb.WhisperBenchOptions(**given)
    options = wb.WhisperBenchOptions(whisper="/models/whisper-small", ct2="/models/whisper-small-ct2")
    assert wb.WhisperBenchOptions().whisper is None and options.ct2 == "/models/whisper-small-ct2"
