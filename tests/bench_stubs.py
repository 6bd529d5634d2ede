"""Stand-ins the bench's tests share (tests/test_bench_*.py): a PeakMemory reading as given, a stand-in model for the
paper bench's training rows, utterances on disk, the cascade timed under a stand-in PeakMemory, and run_bench on the
tiny models with every timed section faked."""

import soundfile
import torch

import tiny
from llm_srt import bench
from llm_srt.bench import common, embedded


def fake_peak(**reading):
    """A PeakMemory stand-in: a block that sets `reading` (mib, kind, reserved_mib, start_mib, rise_mib) as it ends."""

    class FakePeak:
        def __init__(self, device):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            for name, value in reading.items():
                setattr(self, name, value)

    return FakePeak


class Trainable(torch.nn.Module):
    """A stand-in model for paper.training_rows: one trainable weight `w`, its loss the sum of its squares."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def trainable_parameters(self):
        return [self.w]

    def forward(self, batch):
        return {"loss": (self.w ** 2).sum()}


def utterances(tmp_path, n: int) -> list:
    """`n` tiny tones written to tmp_path/u{i}.wav, as embedded.Utterance (eng -> deu, "a cat" / "eine katze")."""
    utts = []
    for i in range(n):
        audio = tiny.tone(0.6 + 0.2 * i, 300 + 40 * i, seed=i)
        soundfile.write(tmp_path / f"u{i}.wav", audio, tiny.SAMPLE_RATE)
        utts.append(embedded.Utterance(str(tmp_path / f"u{i}.wav"), audio, "eng", "deu", "a cat", "eine katze"))
    return utts


def time_cascade(tmp_path, monkeypatch, peak) -> dict:
    """embedded.time_cascade on the tiny Whisper and LLM (CPU, float32, 2 utterances) under the PeakMemory `peak`."""
    from llm_srt import device
    from llm_srt.model import whisper_system

    monkeypatch.setattr(embedded, "PeakMemory", peak)
    placement = device.resolve("cpu", "float32")
    folders = str(tiny.whisper_lid_dir(tmp_path)), str(tiny.llm_dir(tmp_path))
    try:
        return embedded.time_cascade(folders, placement, utterances(tmp_path, 2), 2, 3)
    finally:
        whisper_system.release_models(placement.device)  # the cascade's Whisper, cached there


def stub_run_bench(monkeypatch, n: int, summarize, machine=lambda *a, **k: {"bandwidth_gb_s": 1.0}) -> None:
    """run_bench on the tiny models with every timed section faked: `n` utterances from my.jsonl, each decode pass
    1 s, the encoder, training and translate() sections empty, `machine` in measure_machine's place (a 1 GB/s
    yardstick) and `summarize` in embedded.summarize's."""
    def fake_pass(system, audios, batch, options):
        return common.DecodeRun(seconds=1.0, utterances=len(audios), new_tokens=options.max_new_tokens,
                                speech_tokens=8, peak_mib=1.0, memory="rss", steps=((batch, 2, 0.5),))

    utts = [embedded.Utterance("x", tiny.tone(1.0, 300, seed=i), "eng", "deu", "", "", "my.jsonl") for i in range(n)]
    monkeypatch.setattr(embedded, "measure_machine", machine)
    monkeypatch.setattr(embedded, "higher_of", lambda before, after: {**after, "yardstick_moved": {}})
    monkeypatch.setattr(embedded, "load_utterances", lambda options, workdir: list(utts))
    for name in ("time_encoder", "time_training", "time_overhead"):
        monkeypatch.setattr(embedded, name, lambda *a, **k: {})
    monkeypatch.setattr(embedded, "decode_pass", fake_pass)
    monkeypatch.setattr(embedded, "step_bound", lambda *a: {"bound_s": 0.1, "bound": "bandwidth"})
    monkeypatch.setattr(embedded, "summarize", summarize)


# made-up sections for `summarized` (tests spread them, overriding what they judge)
ENCODER = {"clips": 4, "clip_seconds": 10.0, "variable_s": 0.4, "padded_s": 1.6, "variable_frames": 500,
           "padded_frames": 1500}
TRAIN = {"batch_size": 8, "steps": 3, "s_per_step_audio": 5.0, "s_per_step_cached": 4.0,
         "encoder_s_per_audio_step": 1.0, "cached_vs_audio_less_encoder": 1.0, "encoder_calls_audio": 8,
         "encoder_calls_cached": 0}
OVERHEAD = {"translate_s": 12.0, "lower_bound_s": 10.0, "translate_vs_lower_bound": 1.2, "encoder_s": 1,
            "adapter_s": 1, "prefill_s": 1, "decode_s": 7, "batch_size": 8, "generations": 2,
            "llm_forward_calls": 64}


def summarized(utts: list, encoder: dict, overhead: dict, train: dict, cascade) -> dict:
    """embedded.summarize on made-up decode rows (llm-srt at batch 1 and 16, the pooled row at 16), machine and
    setup, with the sections and utterances given."""
    options = bench.BenchOptions(batch_sizes=(1, 16), headline_batch=16, pooled_batch_sizes=(16,), beam_batch_sizes=(),
                                 int8_batch_sizes=(), int8_beam_batch_sizes=(), int8_compiled_batch_sizes=())

    def row(system, batch, seconds):
        return {"system": system, "beam": 1, "batch_size": batch, "seconds": seconds, "utterances_per_s": 16 / seconds,
                "speech_tokens": 80, "new_tokens": 32, "peak_mib": 1.0, "memory": "rss", "weights": "float32",
                "decode_seconds": seconds / 2, "generations": [], "pass_seconds": [seconds], "compiled": False,
                "decode_step_ms": 1.0, "bound_step_ms": 1.0, "step_vs_bound": 1.2}

    rows = [row("llm-srt", 1, 34.0), row("llm-srt", 16, 5.0), row("pooled-750", 16, 20.0)]
    machine = {"bandwidth_gb_s": 25.0, "copy_gb_s": 25.0, "read_gb_s": 20.0, "copy_bytes": 1 << 30,
               "matmul_gflop_s": 300.0, "matmul_dtype": "float32"}
    setup = {"model": "x", "device": "cpu float32", "bench_seconds": 1.0, "utterances_from": "espeak-ng clips"}
    return embedded.summarize(options, setup, utts, rows, encoder, overhead, train, cascade, machine)
