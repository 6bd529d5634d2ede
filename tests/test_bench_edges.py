"""The bench after a second review (2026-12-06): a paper-shape row out of memory is a row, not the bench's end;
`--dtype int8` refused up front; a --manifest given that is missing or empty refused, not replaced by espeak-ng clips;
ratios judged, stored and printed as one number; --json-out rewritten after every embedded decode row.
tests/test_bench.py and tests/test_bench_checks.py have the rest."""

import json
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bench_stubs
import tiny
from llm_srt import bench, cli, device, paths
from llm_srt.bench import common, embedded, paper, utterances
from llm_srt.bench import whisper as wb
from llm_srt.errors import LLMSRTError


# ---- 1. a paper-shape row out of memory -----------------------------------------------------------------------
@pytest.mark.long(8)
def test_a_paper_row_out_of_memory_is_recorded_and_the_bench_finishes(monkeypatch, tmp_path):
    """On one 80 GB H100 the 32B command's pooled batch-64 row must run out of memory (85,936 MiB on the H200): the
    bench died with a traceback, no table, --json-out unfinished. The row is kept, `out_of_memory` true, printed
    so, and no ratio, best batch or goal picks it."""
    from llm_srt.model.systems import SpeechLLMSystem

    real = SpeechLLMSystem.run_batch

    def run_batch(self, items, options):
        if self.name == "pooled-750" and len(items) >= 2 and options.max_new_tokens > 2:  # after its warm-up
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(self, items, options)

    monkeypatch.setattr(SpeechLLMSystem, "run_batch", run_batch)
    options = paper.PaperOptions(shape="tiny", **{**paper.TINY, "compiled_batch_sizes": (), "train_batch": 0})
    released, release = [], paper.release
    monkeypatch.setattr(paper, "release", lambda device: released.append(device) or release(device))
    snapshots = []
    result = paper.run_paper(options, device.resolve("cpu", "float32"), tmp_path, partial=snapshots.append)
    json.dumps(result)
    assert result["finished"] is True
    rows = {(r["system"], r["beam"], r["batch_size"]): r for r in result["decode"]}
    assert rows["pooled-750", 1, 2] == {"system": "pooled-750", "beam": 1, "batch_size": 2, "compiled": False,
                                        "out_of_memory": True}
    assert rows["llm-srt", 1, 2]["out_of_memory"] is False and rows["llm-srt", 1, 2]["seconds"] > 0
    assert any(s["decode"][-1].get("out_of_memory") for s in snapshots)  # --json-out has it as it happens
    assert result["qformer_vs_pooled_at_equal_batch"] == {}  # its peer's row did not run
    assert result["largest_batch"]["pooled-750"]["largest_fit"] == 1  # the search went on after it
    assert result["best_greedy"]["seconds_per_1000"] > 0 and result["qformer_vs_pooled_at_largest_batch"] > 0
    assert len(released) >= 2  # the failed batch's memory given back before the next row
    table = paper.format_paper(result)
    pooled = [line.split()[-5:] for line in table.splitlines() if line.startswith("Qwen2-Audio-style")]
    assert pooled[0] == ["greedy", "2", "out", "of", "memory"] and len(pooled) == 2  # the row, then the probe
    monkeypatch.setattr(SpeechLLMSystem, "run_batch", lambda *a: (_ for _ in ()).throw(ValueError("a real bug")))
    with pytest.raises(ValueError, match="a real bug"):  # anything else still stops the bench
        paper.run_paper(options, device.resolve("cpu", "float32"), tmp_path)


# ---- 2. --dtype int8 refused up front -------------------------------------------------------------------------
@pytest.fixture
def stubbed(monkeypatch):
    """bench.main with its runs stubbed: what reached them (nothing should, for a refused command line)."""
    ran = []
    monkeypatch.setattr(bench, "run_bench", lambda options, placement, log, **partial: ran.append(options) or {})
    monkeypatch.setattr(bench, "run_paper", lambda options, placement, workdir, log, **partial: ran.append(options)
                        or {})
    for name in ("format_table", "format_paper"):
        monkeypatch.setattr(bench, name, lambda result: "")
    monkeypatch.setattr(wb, "run_whisper_bench", lambda options, placement, log: {"skipped": "test"})
    return ran


@pytest.mark.parametrize("given", [["--dtype", "int8"], ["--dtype", "int8", "--paper-shape", "tiny"]])
def test_dtype_int8_is_refused_in_one_line_before_anything_runs(stubbed, capsys, given):
    """`bench --dtype int8` failed after ~76 s of rows on both paths (int8 layers cannot train; TINY's compiled
    batch 2 does not compile in int8), while a float32 run times the int8 rows itself: refused at once, saying
    what to run."""
    assert cli.main(["bench", *given, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-srt bench: error: --dtype int8: ") and err.count("\n") == 1 and not stubbed
    assert "run `llm-srt bench --device cpu --dtype float32`" in err
    assert cli.main(["bench", "--dtype", "float32", "--device", "cpu", "--no-whisper"]) == 0 and len(stubbed) == 1


def test_the_whisper_rows_skip_line_names_a_precision_bench_runs(monkeypatch):
    """The Whisper row skipped for a precision CTranslate2 lacks said to run bench with --dtype int8, which it
    refuses."""
    monkeypatch.setitem(sys.modules, "ctranslate2",
                        SimpleNamespace(get_supported_compute_types=lambda kind: {"float32", "int8"}))
    reason = wb.precision_missing(device.resolve("cpu", "bfloat16"))
    assert reason.endswith("run bench with --dtype float32 for it") and "int8 for it" not in reason


# ---- 3. a --manifest given is read, or refused; never replaced by espeak-ng clips -----------------------------
def _manifest(tmp_path, translated: bool):
    """A manifest of two clips, with translations or ASR-only."""
    import soundfile

    lines = []
    for i in range(2):
        soundfile.write(tmp_path / f"c{i}.wav", tiny.tone(1.0, 300 + 100 * i, seed=i), tiny.SAMPLE_RATE)
        lines.append(json.dumps({"id": f"c{i}", "audio": f"c{i}.wav", "duration": 1.0, "src_lang": "eng",
                                 "transcript": "a cat", "tgt_lang": "deu" if translated else "",
                                 "translation": "eine Katze" if translated else "", "split": "test",
                                 "corpus": "mini", "sentence_id": str(i)}))
    path = tmp_path / ("st.jsonl" if translated else "asr.jsonl")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_manifest_given_that_is_missing_or_has_no_translations_is_refused(tmp_path, monkeypatch):
    """`--manifest /data/my-corpus/test.jsonl_TYPO` was replaced by espeak-ng clips without a word, and the table
    timed other audio than asked for. Only the default manifest gives way to them; a given one that is missing or
    holds no translation rows is an error naming it, and the utterances say where they came from."""
    espeak = []
    monkeypatch.setattr(utterances, "espeak_utterances", lambda n, workdir: espeak.append(n) or ["espeak"])
    typo = str(tmp_path / "test.jsonl_TYPO")
    with pytest.raises(LLMSRTError, match=f"^bench: --manifest {typo}: no such file; give a manifest that exists"):
        utterances.load_utterances(bench.BenchOptions(manifest=typo, n=16), tmp_path)
    asr = _manifest(tmp_path, translated=False)
    with pytest.raises(LLMSRTError, match=f"^bench: --manifest {asr} has no translation rows"):
        utterances.load_utterances(bench.BenchOptions(manifest=asr, n=16), tmp_path)
    assert espeak == []
    st = _manifest(tmp_path, translated=True)
    utts = utterances.load_utterances(bench.BenchOptions(manifest=st, n=16), tmp_path)
    assert [u.translation for u in utts] == ["eine Katze"] * 2 and {u.origin for u in utts} == {st}
    monkeypatch.chdir(tmp_path)  # the default manifest (relative) is missing here: espeak-ng clips, as before
    assert utterances.load_utterances(bench.BenchOptions(n=16), tmp_path) == ["espeak"] and espeak == [16]
    assert utterances.load_utterances(bench.BenchOptions(manifest=None, n=16), tmp_path) == ["espeak"]


def test_a_missing_manifest_is_refused_before_the_yardstick_and_any_model(tmp_path, monkeypatch):
    """The check is cheap: run_bench makes it before the yardstick's probes (a minute on a real machine)."""
    started = []
    monkeypatch.setattr(embedded, "measure_machine", lambda *a, **k: started.append("yardstick"))
    monkeypatch.setattr(embedded, "_load_model", lambda *a, **k: started.append("model"))
    with pytest.raises(LLMSRTError, match="no such file"):
        bench.run_bench(bench.BenchOptions(manifest=str(tmp_path / "none.jsonl")), device.resolve("cpu", "float32"))
    with pytest.raises(LLMSRTError, match="has no translation rows"):  # read after the yardstick, until a review
        bench.run_bench(bench.BenchOptions(manifest=_manifest(tmp_path, translated=False)),
                        device.resolve("cpu", "float32"))
    assert started == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_clips_say_they_are(tmp_path):
    """What `setup.utterances_from` and the table's first line say where no manifest was read."""
    assert [u.origin for u in utterances.espeak_utterances(2, tmp_path)] == ["espeak-ng clips"] * 2


# ---- 4. a ratio judged, stored and printed as one number --------------------------------------------------------
def _embedded_result(cached_ratio: float, overhead_ratio: float) -> dict:
    """embedded.summarize on made-up sections whose cached-step and translate() ratios are the ones given."""
    encoder = {**bench_stubs.ENCODER, "variable_peak_mib": 1, "padded_peak_mib": 1}
    train = {**bench_stubs.TRAIN, "s_per_step_cached": 4.0 * cached_ratio,
             "cached_vs_audio_less_encoder": cached_ratio}
    overhead = {**bench_stubs.OVERHEAD, "translate_s": 10.0 * overhead_ratio,
                "translate_vs_lower_bound": overhead_ratio, "peak_mib": 1}
    return bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, encoder, overhead, train, None)


@pytest.mark.parametrize("cached,overhead,shown", [
    (1.0551, 1.2549, ("1.06", False, "1.25", True)),  # were stored 1.055 / 1.255, "1.05 goal <= 1.05 MISSED"
    (1.0504, 1.2551, ("1.05", True, "1.26", False)),
])
def test_embedded_goals_are_judged_on_the_number_stored_and_printed(cached, overhead, shown):
    result = _embedded_result(cached, overhead)
    table = bench.format_table(result)
    for key, text, met in (("cached_step_vs_audio_step_less_encoder", *shown[:2]),
                           ("overhead_vs_lower_bound", *shown[2:])):
        assert result[key] == float(text) and result["goals"][key]["met"] is met
        line = next(line for line in table.splitlines() if line.startswith(key))
        assert line.split()[1] == text and line.split()[5] == ("met" if met else "MISSED")
    assert table.startswith("Speed: 16 utterances from espeak-ng clips (48.0 s of audio)")


@pytest.mark.parametrize("ours,shown,met", [(11.051, "1.11", False), (11.049, "1.10", True)])
def test_the_whisper_rows_ratio_is_judged_on_the_number_stored_and_printed(ours, shown, met):
    """11.051 s against 10 s printed "wall 1.10x (missed, goal <= 1.1)": stored 1.105, judged on 1.11."""
    runs = {"llm_srt": [{"seconds": ours, "peak_mib": 600.0}], "faster_whisper": [{"seconds": 10.0, "peak_mib": 600.0}]}
    r = wb.summarize(wb.WhisperBenchOptions(rounds=1, clips=1, threads=2), device.resolve("cpu"), 5.0, runs,
                     {"llm_srt": ["a"], "faster_whisper": ["a"]})
    assert r["wall_ratio"] == float(shown) and r["met"]["wall_ratio"] is met
    assert f"wall {shown}x ({'met' if met else 'missed'}, goal <= 1.1)" in wb.format_whisper(r)


# ---- 5. --json-out after every embedded decode row ------------------------------------------------------------
def test_json_out_is_rewritten_after_every_decode_row(tmp_path, monkeypatch):
    """The embedded bench handed its rows on after each system's set of them: a kill during the float rows lost
    ~100 s of finished rows. Each snapshot now holds one decode row more than the one before at most, the int8
    rows' passes taking turns included. The tiny models are real; the timed passes and other sections faked."""
    bench_stubs.stub_run_bench(monkeypatch, 4, lambda options, setup, utts, rows, *a: {"setup": setup, "decode": rows})
    options = bench.BenchOptions(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(tiny.llm_dir(tmp_path)),
                                 adapter_kwargs={"num_queries": 4, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                 "intermediate_size": 32}, manifest=None, n=4, new_tokens=3,
                                 batch_sizes=(1, 2), beam_size=2, beam_batch_sizes=(2,), pooled_batch_sizes=(2,),
                                 headline_batch=2, cascade=False, int8_batch_sizes=(1, 2), int8_passes=2,
                                 int8_beam_batch_sizes=(2,), int8_compiled_batch_sizes=())
    counts = []
    result = bench.run_bench(options, device.resolve("cpu", "float32"),
                             partial=lambda so_far: counts.append(len(so_far.get("decode", []))))
    assert len(result["decode"]) == 7 and counts[-1] == 7
    assert all(0 <= b - a <= 1 for a, b in zip(counts, counts[1:])) and set(counts) >= set(range(8))
    assert [(r["system"], r["batch_size"]) for r in result["decode"][3:5]] == [("llm-srt-int8", 1),
                                                                               ("llm-srt-int8", 2)]
    assert result["setup"]["utterances_from"] == "my.jsonl"


def test_decode_rows_hands_on_each_row_as_its_last_pass_ends(monkeypatch):
    """With passes taking turns (ABBA), a row is finished at its last pass: the rows so far, in the plan's order."""
    monkeypatch.setattr(embedded, "decode_pass", lambda system, audios, batch, options: common.DecodeRun(
        seconds=1.0, utterances=len(audios), new_tokens=options.max_new_tokens, speech_tokens=8, peak_mib=1.0,
        memory="rss", steps=((batch, 2, 0.5),)))
    monkeypatch.setattr(embedded, "decode_cost", lambda llm: {"int8": True})
    monkeypatch.setattr(embedded, "step_bound", lambda *a: {"bound_s": 0.1, "bound": "bandwidth"})
    system = SimpleNamespace(model=SimpleNamespace(llm=None, llm_dtype=torch.float32))
    utts = [SimpleNamespace(audio=np.zeros(16000, np.float32)) for _ in range(4)]
    seen = []
    rows = embedded.decode_rows(system, utts, [("llm-srt-int8", 1, 1), ("llm-srt-int8", 1, 4)],
                                bench.BenchOptions(new_tokens=5), lambda msg: None, {}, passes=2,
                                on_row=lambda done: seen.append([r["batch_size"] for r in done]))
    assert seen == [[4], [1, 4]] and [r["batch_size"] for r in rows] == [1, 4]  # the second turn runs 4, then 1


# ---- 6. --json-out that cannot be written; a Whisper row's unexpected error ------------------------------------
@pytest.fixture
def not_run(monkeypatch):
    """bench.main whose runs must not start (a refused command line): a call fails the test."""
    def ran(*a, **k):
        raise AssertionError("a run started")

    for name in ("run_bench", "run_paper"):
        monkeypatch.setattr(bench, name, ran)
    monkeypatch.setattr(wb, "run_whisper_bench", ran)


@pytest.mark.parametrize("paper_shape", [[], ["--paper-shape", "tiny"]])
@pytest.mark.parametrize("where,says", [("afile/x.json", "cannot write it ("), (".", "a folder")])
def test_a_json_out_that_cannot_be_written_is_refused_before_anything_runs(not_run, tmp_path, monkeypatch, capsys,
                                                                           paper_shape, where, says):
    """`--json-out afile/x.json` below a file built the models and ran the first row, then died with a
    FileExistsError traceback: one line now, exit 2, before any run (a folder too, which the rename would fail)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine\n")
    assert cli.main(["bench", *paper_shape, "--device", "cpu", "--json-out", where]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"llm-srt bench: error: --json-out {where}: {says}") and err.count("\n") == 1 and not out
    assert "afile is a file, not a folder); give a file in a folder you can write" in err or where == "."
    assert (tmp_path / "afile").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.long(25)
def test_a_json_out_write_that_fails_mid_run_keeps_the_whole_table(tmp_path, monkeypatch, capsys):
    """A disk full at the 4th --json-out write was an OSError traceback: no table, the file 3 rows old; the last
    write came before the table, so failing there lost it. Now the failure is said once, every row still runs,
    the whole table is printed, then one line says the file could not be written (exit 2). The disk fills from the
    3rd write on (the first is the check before the run, the second its first row)."""
    import errno

    writes, real = [], bench.atomic_file

    def atomic_file(path, **kwargs):
        writes.append(path)
        if len(writes) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, **kwargs)

    printed = []
    monkeypatch.setattr(bench, "atomic_file", atomic_file)  # the check before the run
    monkeypatch.setattr(paths, "atomic_file", atomic_file)  # each row's write (paths.write_json)
    monkeypatch.setattr(bench, "format_paper", lambda result: printed.append(result) or paper.format_paper(result))
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--paper-shape", "tiny", "--device", "cpu", "--no-train", "--json-out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    result, = printed
    assert result["finished"] is True and result["decode"] and result["largest_batch"]  # the run went to its end
    assert stdout == paper.format_paper(result) + "\n"  # every row, as it would have been printed
    assert len(writes) > 4 and err.count("WARNING: --json-out") == 1
    last = err.splitlines()[-1]
    assert last.startswith(f"llm-srt bench: error: --json-out {out}: cannot write it (No space left on device")
    assert last.endswith("(the table above is the whole result)")
    assert json.loads(out.read_text())["finished"] is False  # the first row's, as the disk filled after it


def test_any_error_of_the_whisper_row_keeps_the_table_and_json_of_the_rows_before_it(tmp_path, monkeypatch, capsys):
    """Only an LLMSRTError of the Whisper row was caught: a CTranslate2 that fails to import (in this process),
    espeak-ng's CalledProcessError, a child's unreadable output lost the whole embedded table. Any Exception is now
    the row's FAILED line, exit 1, the JSON finished."""
    import argparse

    monkeypatch.setattr(bench, "run_bench", lambda options, placement, log, **partial: {"rows": 1, "finished": True})
    monkeypatch.setattr(bench, "format_table", lambda result: "EMBEDDED TABLE")

    def fails(options, placement, log):
        raise ImportError("libctranslate2.so.4: cannot open shared object file")

    monkeypatch.setattr(wb, "run_whisper_bench", fails)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["--device", "cpu", "--json-out", str(tmp_path / "r.json")])) == 1
    out = capsys.readouterr().out
    assert out.startswith("EMBEDDED TABLE\n") and ("whisper vs faster-whisper: FAILED (ImportError: libctranslate2.so.4"
                                                   in out)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["finished"] is True and written["rows"] == 1
    assert written["whisper"]["failed"].startswith("ImportError: libctranslate2")


# ---- 7. a CPU without fbgemm's int8 products ------------------------------------------------------------------
def test_a_cpu_without_fbgemm_skips_the_int8_probe_and_rows_saying_why(tmp_path, monkeypatch):
    """On an ARM CPU (torch's quantized engine qnnpack) `llm-srt bench`, a float32 run, died at its first yardstick:
    the int8 probe's Int8Linear said "use --dtype float32 here". The int8 probe and rows are skipped there, said
    why, and the float rows run. The tiny models are real; the timed passes and other sections faked."""
    monkeypatch.setattr(torch.backends.quantized, "engine", "qnnpack")
    probes = []

    bench_stubs.stub_run_bench(monkeypatch, 2, lambda options, setup, utts, rows, *a: {"setup": setup, "decode": rows},
                               machine=lambda *a, int8, **k: probes.append(int8) or {})
    options = bench.BenchOptions(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(tiny.llm_dir(tmp_path)),
                                 adapter_kwargs={"num_queries": 4, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                 "intermediate_size": 32}, manifest=None, n=2, new_tokens=3,
                                 batch_sizes=(1, 2), beam_size=2, beam_batch_sizes=(2,), pooled_batch_sizes=(2,),
                                 headline_batch=2, cascade=False, int8_batch_sizes=(1, 2), int8_beam_batch_sizes=(2,),
                                 int8_compiled_batch_sizes=())
    said = []
    result = bench.run_bench(options, device.resolve("cpu", "float32"), log=said.append)
    assert probes == [False, False]  # no int8 probe, before or after the rows
    assert {r["system"] for r in result["decode"]} == {"llm-srt", "pooled-750"}
    skipped = result["setup"]["int8_rows_skipped"]
    assert "fbgemm" in skipped and "'qnnpack'" in skipped and f"int8 rows skipped: {skipped}" in said


# ---- 8. a training row's reserved peak ---------------------------------------------------------------------------
def test_each_training_rows_reserved_peak_is_its_own_and_printed(monkeypatch):
    """A training row reported torch's allocated peak alone (the README's "20.4 GiB, fits a 24 GiB card"), while a
    card must hold what the allocator reserves (cached blocks between the step's tensors); and with nothing
    released before it, a row's reserved peak would start at the row before's cached blocks. A fake allocator on a
    fake GPU: what was reserved stays so until `release`; each row reserves 300 MiB itself. The model is a stand-in
    (a step of the real one is tests/test_bench.py's)."""
    from llm_srt.train import parallel

    cached = {"mib": 5000.0}  # the decode rows' cached blocks, still reserved as the training rows start

    class FakePeak:
        def __init__(self, device):
            pass

        def __enter__(self):
            self.start = cached["mib"]  # PeakMemory's reset: the reserved peak starts at what is reserved now
            return self

        def __exit__(self, *exc):
            cached["mib"] = max(cached["mib"], 300.0)
            self.mib, self.kind, self.reserved_mib = 200.0, "gpu", max(self.start, 300.0)
            self.start_mib = self.rise_mib = None  # as PeakMemory's on CUDA

    monkeypatch.setattr(paper, "PeakMemory", FakePeak)
    monkeypatch.setattr(paper, "release", lambda *a: cached.update(mib=0.0))
    monkeypatch.setattr(paper, "training_batch", lambda model, options: {})
    monkeypatch.setattr(parallel, "apply_activation_checkpointing", lambda model: 2)
    options = paper.PaperOptions(shape="tiny", **paper.TINY)
    rows = list(paper.training_rows(bench_stubs.Trainable(torch.ones(4)), options, device.resolve("cpu", "float32"), log=lambda msg: None))
    assert [r["reserved_mib"] for r in rows] == [300.0, 300.0, 300.0] and rows[0]["peak_mib"] == 200.0
    result = {"shape": "tiny", "device": "cuda:0", "dtype": "bfloat16", "gpu": "fake GPU", "bench_seconds": 1.0,
              "parameters": {"llm": 1, "encoder": 1}, "options": {"clip_seconds": 10.0, "new_tokens": 4},
              "decode": [], "largest_batch": {}, "train": rows, "qformer_vs_pooled_at_equal_batch": {},
              "qformer_vs_pooled_at_largest_batch": None, "goals": {}}
    assert paper.format_paper(result).count("peak 200 MiB, 300 MiB reserved by torch's allocator") == 3
