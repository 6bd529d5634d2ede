"""bench/whisper.py: `translate --model whisper` against faster-whisper, each side a whole process of its own."""

import sys

import pytest
import torch

from llm_srt import device
from llm_srt.bench import whisper as wb
from llm_srt.errors import LLMSRTError

CPU = device.resolve("cpu")


def test_skipped_with_a_clear_line_without_faster_whisper(monkeypatch, tmp_path):
    monkeypatch.setattr(wb.importlib.util, "find_spec", lambda name: None)
    result = wb.run_whisper_bench(wb.WhisperBenchOptions(), CPU, tmp_path)
    assert result == {"skipped": wb.faster_whisper_missing()}
    assert wb.format_whisper(result) == ("whisper vs faster-whisper: skipped (faster-whisper is not installed "
                                         "(pip install faster-whisper), so the Whisper row is skipped)")


def test_each_process_reports_its_own_peak_memory(tmp_path):
    """The high-water mark is the child's own: not its parent's (this test process holds torch and more, which
    `getrusage` would count), nor the largest child's so far."""
    big = wb.run_process("big", ["-c", "b = bytearray(300 << 20); print(len(b))"], {}, tmp_path)
    small = wb.run_process("small", ["-c", "import sys; print(sys.argv[1:])", "x"], {}, tmp_path)
    assert big["peak_mib"] > 300 > small["peak_mib"] and big["stdout"].strip() == str(300 << 20)
    assert big["seconds"] > 0 and small["stdout"].strip() == "['x']"
    with pytest.raises(LLMSRTError, match="Whisper row's failing process exited with 3: .*boom"):
        wb.run_process("failing", ["-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], {}, tmp_path)


def test_both_sides_get_the_same_clips_precision_and_threads(tmp_path):
    clips = [tmp_path / "a.wav", tmp_path / "b.wav"]
    options = wb.WhisperBenchOptions(threads=3, whisper="/models/whisper-base", ct2="/models/whisper-base-ct2")
    argv = wb.commands(options, device.resolve("cpu", "int8"), clips, tmp_path / "ct2")
    ours, theirs = argv["llm_srt"], argv["faster_whisper"]
    assert ours[:3] == ["-m", "llm_srt.cli", "translate"] and ours[3:5] == [str(c) for c in clips]
    assert ours[ours.index("--dtype") + 1] == "int8" and ours[ours.index("--whisper") + 1] == "/models/whisper-base"
    assert ours[ours.index("--task") + 1] == "asr" and ours[ours.index("--device") + 1] == "cpu"
    assert theirs[0] == "-c" and theirs[2:] == [str(tmp_path / "ct2"), "cpu", "0", "int8", "3", *map(str, clips)]
    gpu1 = device.Placement(torch.device("cuda", 1), torch.float16)  # both on --device cuda:1's GPU (theirs ran on 0)
    argv = wb.commands(options, gpu1, clips, tmp_path / "ct2")
    assert argv["llm_srt"][argv["llm_srt"].index("--device") + 1] == "cuda:1"
    assert argv["faster_whisper"][3:5] == ["cuda", "1"]


def test_ratios_are_medians_of_pairs_against_the_goals():
    runs = {"llm_srt": [{"seconds": 10.0, "peak_mib": 600.0}, {"seconds": 30.0, "peak_mib": 620.0},
                        {"seconds": 11.0, "peak_mib": 610.0}],
            "faster_whisper": [{"seconds": 10.0, "peak_mib": 500.0}, {"seconds": 20.0, "peak_mib": 500.0},
                               {"seconds": 11.0, "peak_mib": 500.0}]}
    texts = {"llm_srt": ["Hello, world.", "the Cat"], "faster_whisper": ["hello world", "a cat"]}
    r = wb.summarize(wb.WhisperBenchOptions(rounds=3, clips=2, threads=2), CPU, 10.0, runs, texts)
    assert r["wall_ratio"] == 1.0 and r["met"]["wall_ratio"]  # pairs 1.0, 1.5, 1.0: the busy pair does not count
    assert r["memory_ratio"] == 1.22 and not r["met"]["memory_ratio"]
    assert r["same_transcripts"] == "1/2" and r["llm_srt"]["median_seconds"] == 11.0
    line = wb.format_whisper(r)
    assert "wall 1.00x (met, goal <= 1.1)" in line and "memory 1.22x (missed, goal <= 1.2)" in line
    gpu = wb.summarize(wb.WhisperBenchOptions(rounds=3, clips=2, threads=2), device.Placement(
        torch.device("cuda", 0), torch.bfloat16), 10.0, runs, texts)  # CPU goals; on a GPU the peaks are host memory
    assert gpu["met"] == {"wall_ratio": None, "memory_ratio": None} and "missed" not in wb.format_whisper(gpu)


def test_a_precision_ctranslate2_lacks_here_skips_the_row_with_its_reason(tmp_path):
    """CTranslate2's CPU build has no bfloat16 or float16: `bench --dtype bfloat16` ran the whole bench, then its
    faster-whisper process failed and the error lost the table. The row is skipped, saying why."""
    pytest.importorskip("faster_whisper")
    import ctranslate2

    have = ctranslate2.get_supported_compute_types("cpu")
    for dtype in ("bfloat16", "float16"):
        placement = device.resolve("cpu", dtype)
        if wb.CT2_COMPUTE_TYPES[placement.dtype_name] in have:
            continue
        reason = wb.precision_missing(placement)
        assert reason.startswith(f"CTranslate2 on cpu has no {placement.dtype_name} (it has ") and "float32" in reason
        assert wb.run_whisper_bench(wb.WhisperBenchOptions(), placement, tmp_path) == {"skipped": reason}
    assert wb.precision_missing(device.resolve("cpu", "float32")) is None
    assert wb.precision_missing(device.resolve("cpu", "int8")) is None
