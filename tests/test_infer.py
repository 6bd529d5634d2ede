"""translate / evaluate on a tiny random SpeechLLM saved to a folder, and the baselines on the embedded Whisper."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny
from llm_srt import cli
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator, item_budget, max_new_tokens
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Item, Output
from llm_srt.prompts import Task
from llm_srt.out_files import PARTIAL_JSON, SETTINGS_FILE

OPTS = DecodingOptions(max_new_tokens=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    model = tiny.speech_llm(root, init_std=0.3)
    return model.save_pretrained(root / "model")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for i, (sec, f) in enumerate([(0.7, 300), (1.6, 650), (1.1, 900), (2.0, 1300)]):
        write_wav(root / f"c{i}.wav", tiny.tone(sec, f, seed=i))
        paths.append(str(root / f"c{i}.wav"))
    return paths


def test_batched_equals_one_by_one(model_dir, clips):
    t = SpeechTranslator.from_pretrained(model_dir)
    batched = t.translate(clips, "eng", "deu", options=OPTS, batch_size=4)
    single = [t.translate([c], "eng", "deu", options=OPTS, batch_size=1)[0] for c in clips]
    assert [(r.transcript, r.translation) for r in batched] == [(r.transcript, r.translation) for r in single]
    assert all(r.error is None and r.segments for r in batched)
    assert all(r.capped and all(s.capped for s in r.segments) for r in batched)  # a random model runs to its cap


def test_under_beam_search_too_a_row_does_not_depend_on_its_batch(model_dir, clips):
    """Each clip's budget is its own (its duration); beam search stops each clip's hypotheses at its budget (its
    best hypothesis at a longer clip's budget, cut to its own, was another), so a batch of clips gives what each
    gives alone, in one generation."""
    t = SpeechTranslator.from_pretrained(model_dir)
    opts = DecodingOptions(beam_size=3)
    batched = t.translate(clips, "eng", None, task=Task.ASR, options=opts, batch_size=4)
    single = [t.translate([c], "eng", None, task=Task.ASR, options=opts, batch_size=1)[0] for c in clips]
    assert [r.transcript for r in batched] == [r.transcript for r in single]
    assert all(r.error is None for r in batched)


def test_bad_file_is_reported_and_the_rest_translated(model_dir, clips, tmp_path, capsys):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00")
    files = [clips[0], str(junk), str(tmp_path / "missing.flac"), clips[1]]
    rc = cli.main(["translate", *files, "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--format", "json",
                   "--max-new-tokens", "8"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 3 and [r["audio"] for r in out] == files  # some failed (before: 0, as if every input had gone well)
    assert [r["error"] is None for r in out] == [True, False, False, True]
    assert "junk.wav" in out[1]["error"] and "missing.flac" in out[2]["error"]
    assert {"audio", "src", "tgt", "transcript", "translation", "error"} <= set(out[0])
    rc = cli.main(["translate", str(junk), "--model", str(model_dir), "--src", "eng", "--tgt", "deu"])
    assert rc == 1  # nothing could be done


def test_long_audio_is_segmented_and_subtitled(model_dir, tmp_path, capsys):
    # 70 s: 1.5 s tone bursts separated by 1 s pauses
    sr, parts = 16000, []
    for i in range(28):
        parts += [tiny.tone(1.5, 300 + 40 * (i % 7), seed=i), np.zeros(sr, dtype=np.float32)]
    path = tmp_path / "long.wav"
    write_wav(path, np.concatenate(parts))
    [r] = SpeechTranslator.from_pretrained(model_dir).translate([str(path)], "eng", "deu", options=OPTS)
    assert r.error is None and abs(r.duration - 70.0) < 0.01
    assert len(r.segments) >= 3 and all(s.end - s.start <= 30.0 for s in r.segments)
    assert all(a.end <= b.start for a, b in zip(r.segments, r.segments[1:]))
    rc = cli.main(["translate", str(path), "--model", str(model_dir), "--src", "eng", "--tgt", "deu",
                   "--format", "vtt", "--max-new-tokens", "8"])
    vtt = capsys.readouterr().out
    assert rc == 0 and vtt.startswith("WEBVTT")
    times = re.findall(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)", vtt)
    assert times and all(int(t[1]) * 60 + int(t[2]) <= 70 for t in times)


def test_max_segment_seconds_cuts_cues_at_the_pauses(model_dir, tmp_path, capsys):
    """--max-segment-seconds 5: a 24 s clip of 1.5 s bursts and 0.5 s pauses (one 24 s segment by default) becomes
    cues of at most 5 s, each starting and ending in a pause; out-of-range values and --task smt are refused."""
    sr, parts = 16000, []
    for i in range(12):
        parts += [tiny.tone(1.5, 300 + 40 * (i % 7), seed=i), np.zeros(sr // 2, dtype=np.float32)]
    path = tmp_path / "bursts.wav"
    write_wav(path, np.concatenate(parts))
    base = ["translate", str(path), "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--format", "srt",
            "--max-new-tokens", "4"]

    def cues(*extra) -> list[tuple[float, float]]:
        assert cli.main(base + list(extra)) == 0
        spans = re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)",
                           capsys.readouterr().out)
        return [(int(m) * 60 + int(s) + int(ms) / 1000, int(m2) * 60 + int(s2) + int(ms2) / 1000)
                for _, m, s, ms, _, m2, s2, ms2 in spans]

    assert len(cues()) == 1
    short = cues("--max-segment-seconds", "5")
    assert len(short) >= 5 and all(b - a <= 5.0 for a, b in short)
    bursts = [(2.0 * i, 2.0 * i + 1.5) for i in range(12)]
    for a, b in short:  # no cue cuts a burst
        assert not any(x < a < y - 0.1 or x + 0.1 < b < y for x, y in bursts), (a, b)
    for bad in (["--max-segment-seconds", "1"], ["--max-segment-seconds", "31"],
                ["--max-segment-seconds", "5", "--task", "smt", "--transcript", "a"]):
        assert cli.main(base + bad) != 0 and "error: --max-segment-seconds" in capsys.readouterr().err


def test_output_length_is_capped_by_duration():
    assert max_new_tokens(2.0, Task.ASR, 256) < max_new_tokens(2.0, Task.SRT, 256) < max_new_tokens(10, Task.SRT, 256)
    assert max_new_tokens(600, Task.SRT, 256) == 256


@pytest.mark.parametrize("command", ["translate", "evaluate", "serve"])
def test_by_default_each_segment_gets_its_whole_budget(command):
    """The commands' default --max-new-tokens is the largest budget any segment can have: a 30 s SRT segment into
    Japanese keeps its 1,284 tokens (a default of 256 cut its translation short without a word)."""
    import argparse

    from llm_srt.evaluate import run as evaluate_run
    from llm_srt.model.decoding import decoding_from_args
    from llm_srt.serve import app
    from llm_srt.translate import add_arguments

    parser = argparse.ArgumentParser()
    {"translate": add_arguments, "evaluate": evaluate_run.add_arguments, "serve": app.add_arguments}[command](parser)
    args = parser.parse_known_args(["--model", "m", "--out", "o"] if command == "evaluate" else
                                   ["a.wav", "--model", "m"] if command == "translate" else ["--model", "m"])[0]
    options = decoding_from_args(args)
    window = Item(np.zeros(30 * 16000, np.float32), "eng", "jpn", Task.SRT)
    budget = item_budget(window, options.max_new_tokens)
    assert budget == max_new_tokens(30, Task.SRT, 10**6, "eng", "jpn") == 1284
    assert options.max_new_tokens == max(max_new_tokens(30, t, 10**6, s, g) for t in Task for s in ("eng", "jpn")
                                         for g in ("eng", "jpn"))


def test_translate_asr_then_smt_writes_both_texts(model_dir, clips, capsys):
    """`translate --task asr+smt` (an SMT-stage model's own transcript, then its SMT): both texts per input, as
    the two tasks give them one after the other."""
    rc = cli.main(["translate", *clips[:2], "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--task",
                   "asr+smt", "--max-new-tokens", "10"])
    text = capsys.readouterr().out
    t = SpeechTranslator.from_pretrained(model_dir)
    heard = t.translate(clips[:2], "eng", None, task="asr", options=OPTS)
    smt = t.translate(clips[:2], "eng", "deu", task="smt", options=OPTS, transcripts=[r.transcript for r in heard])
    assert rc == 0 and all(h.transcript for h in heard)
    for h, m in zip(heard, smt):
        assert f"  transcript:  {h.transcript}\n  translation: {m.translation}\n" in text
    assert max_new_tokens(2.0, "asr+smt", 256, "eng", "zho") == max_new_tokens(2.0, Task.ASR, 256, "zho")


def test_evaluate_writes_the_report(model_dir, clips, tmp_path):
    from llm_srt.evaluate.run import evaluate

    rows = []
    for i, c in enumerate(clips):
        for src, tgt in (("eng", "deu"), ("deu", "eng")):
            rows.append(Row(id=f"{i}-{src}-{tgt}", audio=c, duration=1.0, src_lang=src, transcript="a cat",
                            tgt_lang=tgt, translation="eine Katze", split="test", corpus="t", sentence_id=str(i)))
        rows.append(Row(id=f"{i}-asr", audio=c, duration=1.0, src_lang="eng", transcript="a cat", tgt_lang="",
                        translation="", split="test", corpus="t", sentence_id=str(i)))
    write_manifest(tmp_path / "test.jsonl", rows)
    evaluate({"tiny": str(model_dir)}, tmp_path / "test.jsonl", tmp_path / "report", options=OPTS,
             log=lambda *_: None)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    text = json.dumps(results)
    assert "eng" in text and "deu" in text
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "bleu_matrix.png").is_file()
    hyps = [json.loads(line) for line in (tmp_path / "report" / "hyps.tiny.jsonl").read_text().splitlines()]
    # the transcript-only rows are not decoded: the eng->deu SRT rows of the same clips give the eng WER/CER
    assert [h["id"] for h in hyps] == [r.id for r in rows if r.tgt_lang]
    assert {(h["src"], h["tgt"]) for h in hyps} == {("eng", "deu"), ("deu", "eng")}
    assert "n_not_scored" not in text  # every clip has an SRT row


@pytest.mark.integration
def test_whisper_baseline_transcribes_and_detects_english(embedded, speak):
    from llm_srt import device
    from llm_srt.evaluate.metrics import wer
    from llm_srt.model.whisper_system import detect_language

    text = "Good morning. The train leaves at seven o'clock."
    clip = speak(text)
    [r] = SpeechTranslator.from_pretrained("whisper", device="cpu").translate([clip], "eng", "eng", task="asr")
    assert r.error is None and wer([r.transcript], [text], "eng").score < 40, r.transcript
    cpu = device.resolve("cpu")
    assert detect_language(None, clip, cpu) == "eng"
    assert detect_language(None, speak("Guten Morgen. Der Zug fährt um sieben Uhr ab.", voice="de"), cpu) == "deu"


def test_translate_in_bfloat16_on_the_cpu(model_dir, clips, capsys):
    rc = cli.main(["translate", *clips[:2], "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--device",
                   "cpu", "--dtype", "bfloat16", "--format", "json", "--max-new-tokens", "8"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["error"] for r in out] == [None, None]
    t = SpeechTranslator.from_pretrained(model_dir, device="cpu", dtype="bfloat16")
    assert t.system.model.llm_dtype == torch.bfloat16 and str(t.system.placement) == "cpu bfloat16"
    assert [{**r.to_dict(), "path": a} for r, a in zip(t.translate(clips[:2], "eng", "deu",
                                                                    options=DecodingOptions(max_new_tokens=8)),
                                                        clips)] == out  # (the CLI's entries add the input's path)


def test_a_moved_model_folder_is_repointed_with_encoder_and_llm(model_dir, clips, tmp_path):
    folder, moved, config = tiny.moved_folder(model_dir, tmp_path)
    (folder / "config.json").write_text(json.dumps(config | {"encoder": "/gone/whisper", "llm": "/gone/llm"}))
    with pytest.raises(LLMSRTError, match=r"names the encoder /gone/whisper \(.*\) and the llm /gone/llm \(.*\); a "
                                          "model folder moved to another machine: give its encoder and llm where "
                                          r"they are now \(--encoder and --llm of translate and serve, --encoder and "
                                          r"--model-llm of evaluate; model.encoder and model.llm in a training "
                                          r"config\)$"):  # (it said to run llm-srt setup, and named the LLM alone)
        SpeechTranslator.from_pretrained(folder, device="cpu")
    with pytest.raises(LLMSRTError) as given:  # a bad path given here is not blamed on the checkpoint's config.json
        SpeechTranslator.from_pretrained(folder, device="cpu", encoder=str(tmp_path / "typo"), llm=str(moved["llm"]))
    assert str(tmp_path / "typo") in str(given.value) and "config.json" not in str(given.value).split(":")[0]
    t = SpeechTranslator.from_pretrained(folder, device="cpu", encoder=str(moved["encoder"]), llm=str(moved["llm"]))
    here = SpeechTranslator.from_pretrained(model_dir, device="cpu")
    assert [r.to_dict() for r in t.translate(clips[:2], "eng", "deu", options=OPTS)] == \
        [r.to_dict() for r in here.translate(clips[:2], "eng", "deu", options=OPTS)]


@pytest.mark.cuda
def test_translate_on_cuda_in_bfloat16_end_to_end(model_dir, clips, capsys):
    rc = cli.main(["translate", *clips, "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--device", "cuda",
                   "--dtype", "bfloat16", "--format", "json", "--max-new-tokens", "8"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and all(r["error"] is None for r in out)


def test_out_dir_mirrors_the_inputs_folders_and_refuses_collisions(model_dir, clips, tmp_path, capsys):
    """a/x.wav and b/x.wav -> OUT/a/x.srt and OUT/b/x.srt (paths relative to the inputs' deepest common folder);
    x.wav beside x.flac would share OUT/x.srt: refused before the model loads, naming both."""
    import shutil

    for sub in ("a", "b", "b/deeper"):
        (tmp_path / sub).mkdir()
    inputs = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "b" / "deeper" / "y.wav"]
    for clip, path in zip(clips, inputs):
        shutil.copy(clip, path)
    out = tmp_path / "out"
    base = ["--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--max-new-tokens", "4", "--format", "srt",
            "--out-dir", str(out)]
    assert cli.main(["translate", *map(str, inputs), *base]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.srt"))
    assert written == ["a/x.srt", "b/deeper/y.srt", "b/x.srt"]
    assert (out / "a" / "x.srt").read_text(encoding="utf-8") != ""
    notes = [line for line in capsys.readouterr().err.splitlines() if "translate:" in line]
    # 4 tokens: a transcript at most, cut at the cap (said for each input), and no error
    assert all("got no translation" in line or "reached their token cap" in line for line in notes)
    assert sum("1 of 1 segments reached their token cap" in line for line in notes) == len(inputs)

    shutil.copy(clips[3], tmp_path / "a" / "x.flac")
    assert cli.main(["translate", str(inputs[0]), str(tmp_path / "a" / "x.flac"), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"llm-srt translate: error: --out-dir: {inputs[0]} and {tmp_path / 'a' / 'x.flac'} would both "
                   f"write {out / 'x.srt'}; rename one, or translate them into separate --out-dirs")


def test_a_missing_input_or_a_folder_among_them_moves_no_other_inputs_output(tmp_path):
    """The outputs' folder is that of the inputs that are files: `talks talks/a.wav` or a mistyped `tlaks/c.wav`
    beside it (each failing alone) put a.wav's output at OUT/talks/a.srt, where a run without them puts OUT/a.srt."""
    from llm_srt.out_files import output_paths

    (tmp_path / "talks").mkdir()
    (tmp_path / "talks" / "a.wav").write_bytes(b"")
    out = tmp_path / "out"
    for bad in (tmp_path / "talks", tmp_path / "tlaks" / "c.wav"):
        assert output_paths([str(bad), str(tmp_path / "talks" / "a.wav")], out, ".srt")[1] == out / "a.srt", bad
    assert output_paths([str(tmp_path / "talks" / "a.wav")], out, ".srt") == [out / "a.srt"]
    assert output_paths([str(tmp_path / "x" / "b.wav"), str(tmp_path / "y" / "b.wav")], out, ".srt") == [
        out / "x" / "b.srt", out / "y" / "b.srt"]  # none there: as before
    for typo in ("tlaks/a.wav", "a.wav"):  # placed beside a.wav's output, and not refused: it fails alone
        assert output_paths([str(tmp_path / "talks" / "a.wav"), str(tmp_path / typo)], out, ".srt") == [
            out / "a.srt", out / "a.srt"]


def test_inputs_are_run_in_groups_so_memory_does_not_grow_with_their_number(model_dir, clips, monkeypatch):
    """With a 1.5 s budget the four clips (0.7, 1.6, 1.1, 2.0 s) run as two groups of two, each decoded only when
    its group comes; the results are those of one group."""
    from llm_srt import infer

    t = SpeechTranslator.from_pretrained(model_dir)
    whole = [r.to_dict() for r in t.translate(clips, "eng", "deu", options=OPTS, batch_size=4)]
    loaded, groups = [], []
    real_load, real_run = infer.load_audio, infer.run_items
    monkeypatch.setattr(infer, "load_audio", lambda x, **kw: (loaded.append(x), real_load(x, **kw))[1])
    monkeypatch.setattr(infer, "run_items", lambda system, items, *a, **k: (groups.append((len(loaded), len(items))),
                                                                            real_run(system, items, *a, **k))[1])
    monkeypatch.setattr(infer, "PENDING_SECONDS", 1.5)
    assert [r.to_dict() for r in t.translate(clips, "eng", "deu", options=OPTS, batch_size=4)] == whole
    assert groups[:2] == [(2, 2), (4, 2)] and all(n == 0 for _, n in groups[2:])


def test_a_failure_in_language_id_fails_that_input_only(model_dir, clips, monkeypatch):
    t = SpeechTranslator.from_pretrained(model_dir)
    calls = []

    def detect(samples):  # the tiny model has no language ID: English, but for the second input
        calls.append(samples.size)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory\nwith a second line")
        return "eng"

    monkeypatch.setattr(t.system, "detect_language", detect)
    results = t.translate(clips[:3], "auto", "deu", options=OPTS)
    assert [r.error for r in results] == [None, "RuntimeError: CUDA out of memory", None]
    assert results[0].segments and results[2].segments


def test_out_dir_with_the_text_format_writes_one_txt_per_input(model_dir, clips, tmp_path, capsys):
    """Before, --out-dir with the default text format wrote nothing at all (and said nothing)."""
    out = tmp_path / "out"
    assert cli.main(["translate", *clips[:2], "--model", str(model_dir), "--src", "eng", "--tgt", "deu",
                     "--max-new-tokens", "4", "--out-dir", str(out)]) == 0
    assert capsys.readouterr().out == ""
    for clip in clips[:2]:
        text = (out / f"{Path(clip).stem}.txt").read_text(encoding="utf-8").splitlines()
        assert text[0] == clip and text[1].startswith("  transcript:  ") and text[2].startswith("  translation: ")


def test_an_interrupted_run_keeps_the_outputs_of_the_groups_already_done(model_dir, clips, tmp_path, monkeypatch,
                                                                          capsys):
    """Each group's files are written before the next group runs: Ctrl-C in the second group keeps the first's."""
    from llm_srt import infer

    real_run, calls = infer.run_items, []

    def run_items(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(infer, "run_items", run_items)
    monkeypatch.setattr(infer, "PENDING_SECONDS", 1.5)  # groups: clips 0-1, then 2-3
    out = tmp_path / "out"
    rc = cli.main(["translate", *clips, "--model", str(model_dir), "--src", "eng", "--tgt", "deu",
                   "--max-new-tokens", "4", "--format", "srt", "--out-dir", str(out)])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.name != SETTINGS_FILE) == ["c0.srt", "c1.srt"]


def test_skip_existing_goes_on_from_an_interrupted_run(model_dir, clips, tmp_path, monkeypatch, capsys):
    """A run stopped in its second group, then the same command with --skip-existing: only the inputs without
    their file are translated, and the files are those of one uninterrupted run; no half-written file is left."""
    from llm_srt import infer

    args = ["translate", *clips, "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--max-new-tokens", "4",
            "--format", "srt"]
    assert cli.main([*args, "--out-dir", str(tmp_path / "whole")]) == 0
    real_run, items = infer.run_items, []

    def run_items(system, batch, *rest, **kwargs):
        items.extend(batch)
        if len(items) > 2 and stop:
            raise KeyboardInterrupt
        return real_run(system, batch, *rest, **kwargs)

    monkeypatch.setattr(infer, "run_items", run_items)
    monkeypatch.setattr(infer, "PENDING_SECONDS", 1.5)  # groups: clips 0-1, then 2-3
    stop = True
    assert cli.main([*args, "--out-dir", str(tmp_path / "r")]) == 130
    assert sorted(p.name for p in (tmp_path / "r").glob("*.srt")) == ["c0.srt", "c1.srt"]
    stop, items[:] = False, []
    capsys.readouterr()
    assert cli.main([*args, "--out-dir", str(tmp_path / "r"), "--skip-existing"]) == 0
    assert len(items) == 2  # clips 2 and 3 only
    assert capsys.readouterr().err.startswith(f"llm-srt translate: 2 of 4 inputs skipped: their outputs are in "
                                              f"{tmp_path / 'r'} already (--skip-existing)\n")
    for clip in clips:
        name = f"{Path(clip).stem}.srt"
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text()
    items[:] = []
    assert cli.main([*args, "--out-dir", str(tmp_path / "r"), "--skip-existing"]) == 0 and items == []
    assert sorted(f.name for f in (tmp_path / "r").iterdir()) == sorted([f"{Path(c).stem}.srt" for c in clips] +
                                                                        [SETTINGS_FILE])
    args[args.index("srt")] = "json"  # --format given once (a second value is refused)
    assert cli.main([*args, "--out-dir", str(tmp_path / "j"), "--skip-existing"]) == 2
    assert "--skip-existing needs --out-dir and --format text, srt or vtt" in capsys.readouterr().err


# ---- stub systems: what translate() hands over and keeps, without a model --------------------------------------
SR = 16000


class Stub:
    """A system whose output names its item's length ("t1.60" / "tr1.60" for 1.6 s); a batch holding an item that
    `fails(item)` raises, as a row the model cannot take does (a CUDA error would stop the run: `infer._run_chunk`);
    the batch numbered `interrupt` (1 = the first) is a Ctrl-C."""

    name, placement = "stub", None

    def __init__(self, fails=lambda item: False, interrupt: int | None = None):
        self.fails, self.interrupt, self.batches = fails, interrupt, []

    def run_batch(self, items, options):
        self.batches.append([it.audio.size for it in items])
        if len(self.batches) == self.interrupt:
            raise KeyboardInterrupt
        if any(self.fails(it) for it in items):
            raise RuntimeError("index out of range in self\n(the second line of its message)")
        return [Output(f"t{it.audio.size / SR:.2f}", f"tr{it.audio.size / SR:.2f}") for it in items]

    def detect_language(self, audio):
        return "eng"


def recording(seconds: float, speech: list[tuple[float, float]], noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """`seconds` of steady noise (1e-3: -60 dBFS) with a 440 Hz tone (speech) over each (start, end) span."""
    x = (noise * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    for a, b in speech:
        i, j = int(a * SR), int(b * SR)
        x[i:j] += (0.3 * np.sin(2 * np.pi * 440 * np.arange(j - i) / SR)).astype(np.float32)
    return x


def stub_cli(monkeypatch, system: Stub):
    from llm_srt import translate

    monkeypatch.setattr(translate, "translator_from_args", lambda args: SpeechTranslator(system))


def test_speech_is_found_wherever_it_lies_in_a_short_input():
    """Before, inputs of 30 s or less went in whole: 25 s with speech at 18-21 s was one 25 s item (mostly
    silence, which a model fills with made-up text), and SegmentOptions(max_seconds=10) was ignored."""
    from llm_srt.segment import SegmentOptions

    stub = Stub()
    [late] = SpeechTranslator(stub).translate([recording(25.0, [(18.0, 21.0)])], "eng", "deu")
    [(start, end)] = [(s.start, s.end) for s in late.segments]
    assert start == pytest.approx(18.0, abs=0.1) and end == pytest.approx(21.0, abs=0.1)
    assert stub.batches == [[round((end - start) * SR)]] and late.translation == f"tr{end - start:.2f}"
    [capped] = SpeechTranslator(Stub()).translate([recording(25.0, [(0.0, 25.0)])], "eng", "deu",
                                                  segment_options=SegmentOptions(max_seconds=10.0))
    assert len(capped.segments) >= 3 and all(s.end - s.start <= 10.0 for s in capped.segments)
    stub = Stub()  # speech filling the clip but for short silences at its ends goes in whole, as in training
    whole = SpeechTranslator(stub).translate([recording(6.0, [(0.8, 5.5)]), tiny.tone(1.6, 650)], "eng", "deu")
    assert [[(s.start, s.end) for s in r.segments] for r in whole] == [[(0.0, 6.0)], [(0.0, 1.6)]]
    assert sorted(stub.batches[0]) == [int(1.6 * SR), 6 * SR]


def _cut_flac(path: Path) -> float:
    """A 6 s FLAC of speech missing the end of its last frame (a copy cut off); the seconds that decode."""
    import soundfile as sf

    sf.write(path, recording(6.0, [(0.5, 5.5)]), SR, format="FLAC", subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.99)])
    return 6 * SR // 4096 * 4096 / SR  # the FLAC frames (of 4096 samples) before the cut one


def test_translate_keeps_what_decodes_of_a_file_cut_short(tmp_path):
    """Nothing goes with a translated file but its audio: the part before the damage is translated."""
    kept = _cut_flac(tmp_path / "cut.flac")
    stub = Stub()
    [result] = SpeechTranslator(stub).translate([str(tmp_path / "cut.flac")], "eng", "deu")
    assert result.error is None and result.duration == kept and result.segments and stub.batches
    assert result.segments[-1].end <= kept
    assert result.warning.startswith(f"{tmp_path / 'cut.flac'}: only the first {kept:.1f} s of 6.0 s decode (")


def test_a_whole_clip_or_transcript_with_a_file_cut_short_fails_counted_not_translated_in_part(tmp_path, clips):
    """evaluate scores a whole clip (and SMT translates a transcript) against text for all of it: a clip cut to 40%
    was scored against its whole reference. Now it fails as an input does whose audio does not decode."""
    kept = _cut_flac(tmp_path / "cut.flac")
    cut = str(tmp_path / "cut.flac")
    for kwargs in ({"whole_clips": True}, {"task": Task.SMT, "transcripts": ["Hello there.", "Hi."]}):
        stub = Stub()
        bad, good = SpeechTranslator(stub).translate([cut, clips[0]], "eng", "deu", **kwargs)
        assert bad.error == (f"{cut}: only the first {kept:.1f} s of 6.0 s decode (Error : flac decoder lost sync): "
                             "the file is damaged or cut short; re-export it, or copy it again"), kwargs
        assert bad.segments == [] and good.error is None and stub.batches == [[int(0.7 * SR)]], kwargs


def test_an_input_whose_audio_decoded_only_in_part_says_so_in_json_and_the_exit_code(tmp_path, monkeypatch, capsys):
    """A WAV cut in half was translated as far as it goes with the warning on stderr only: its JSON entry had no
    word of the audio lost ("error": null), the exit code was 0, and --out-dir's file was taken for the whole one."""
    from llm_srt.translate import SOME_FAILED

    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    write_wav(tmp_path / "cut.wav", recording(8.0, [(0.5, 2.5), (5.0, 7.5)]))
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])  # the header still claims 8 s
    stub_cli(monkeypatch, Stub())
    files = [str(tmp_path / "cut.wav"), str(tmp_path / "a.wav")]
    base = ["--model", "stub", "--src", "eng", "--tgt", "deu"]
    assert cli.main(["translate", *files, *base, "--format", "json"]) == SOME_FAILED == 3
    captured = capsys.readouterr()
    cut, whole = json.loads(captured.out)
    expected = (f"{files[0]}: only the first 4.0 s of 8.0 s decode (it ends before the length its header gives): the "
                "file is damaged or cut short; those are used (re-export it, or copy it again, for the rest)")
    assert cut["warning"] == expected and cut["error"] is None and 3.9 < cut["duration"] <= 4.0 and cut["translation"]
    assert whole["warning"] is None and whole["error"] is None
    assert captured.err.splitlines()[-1] == ("llm-srt translate: 1 of 2 inputs decoded only in part (named above: "
                                             "damaged or cut short); their outputs hold the part that decoded")
    out = tmp_path / "out"  # the part that decoded is the output: written as finished, the run's code says the rest
    assert cli.main(["translate", files[0], *base, "--format", "srt", "--out-dir", str(out)]) == SOME_FAILED
    assert (out / "cut.srt").read_text().count("-->") == 1 and not (out / "cut.srt.incomplete").exists()
    assert cli.main(["translate", files[1], *base, "--format", "srt", "--out-dir", str(out)]) == 0
    (tmp_path / "cut.wav").write_bytes(data)  # the file copied again whole: its record no longer matches it
    capsys.readouterr()
    assert cli.main(["translate", *files, *base, "--format", "srt", "--out-dir", str(out), "--skip-existing"]) == 0
    assert "1 of 2 inputs skipped" in capsys.readouterr().err and (out / "cut.srt").read_text().count("-->") == 2


def test_an_input_without_speech_gets_no_segment_and_no_text(tmp_path, monkeypatch, capsys):
    """Before, silence went in whole (or as its first second): the model made up subtitles for it."""
    stub = Stub()
    silent, hiss = np.zeros(5 * SR, np.float32), recording(40.0, [])
    results = SpeechTranslator(stub).translate([silent, hiss], "eng", "deu")
    assert stub.batches == [] and [r.to_dict()["no_speech"] for r in results] == [True, True]
    assert all(r.error is None and r.segments == [] and r.transcript == r.translation == "" for r in results)
    write_wav(tmp_path / "silent.wav", silent)
    write_wav(tmp_path / "speech.wav", recording(3.0, [(0.5, 2.5)]))
    stub_cli(monkeypatch, stub)
    files = [str(tmp_path / "silent.wav"), str(tmp_path / "speech.wav")]
    base = ["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu"]
    assert cli.main([*base, "--format", "srt", "--out-dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert (out / "silent.srt").read_text() == "" and "-->" in (out / "speech.srt").read_text()
    assert capsys.readouterr().err == (f"llm-srt translate: {files[0]}: no speech found (silence or steady noise); "
                                       "nothing to translate\n")
    assert cli.main([*base, "--format", "json"]) == 0
    silent_json = json.loads(capsys.readouterr().out)[0]
    assert silent_json["segments"] == [] and silent_json["no_speech"] and silent_json["translation"] == ""


def test_a_failing_batch_is_retried_down_to_the_rows_that_fail():
    """Before, a failed batch was retried once as two halves: the good rows sharing a half with a bad one failed
    with it."""
    from llm_srt.infer import run_items
    from llm_srt.model.protocol import Item

    items = [Item(tiny.tone(1.0 + k / 10, 300), "eng", "deu", Task.SRT) for k in range(8)]
    bad = items[5].audio.size
    stub = Stub(fails=lambda it: it.audio.size == bad)
    out = run_items(stub, items, OPTS, batch_size=8)
    assert [o.error is not None for o in out] == [k == 5 for k in range(8)]
    assert out[5].error == "RuntimeError: index out of range in self"
    assert len(stub.batches) == 7  # 8 -> 4 + 4 -> 2 + 2 -> 1 + 1
    seen = {}
    assert run_items(stub, items, OPTS, batch_size=8, on_output=seen.__setitem__) == out
    assert seen == dict(enumerate(out))  # each output handed over as it is ready
    assert len(stub.batches) == 14  # the same again: only running out of memory makes later batches smaller


class _OutOfMemory(Stub):
    """A GPU too small for a batch of more than 2 rows."""

    def run_batch(self, items, options):
        if len(items) > 2:
            self.batches.append([it.audio.size for it in items])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run_batch(items, options)


def test_after_running_out_of_memory_later_batches_hold_at_most_the_rows_that_then_ran():
    """Before, every batch began at --batch-size again: a batch size too large for the GPU ran out of memory on
    every batch (28 calls for 32 rows in batches of 8, each batch 8 -> 4 + 4 -> 2 + 2 + 2 + 2)."""
    from llm_srt.infer import run_items
    from llm_srt.model.protocol import Item

    items = [Item(tiny.tone(0.5 + k / 100, 300), "eng", "deu", Task.SRT) for k in range(32)]
    stub = _OutOfMemory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run_items(stub, items, OPTS, batch_size=8)
    assert all(o.error is None for o in out)
    assert [len(b) for b in stub.batches] == [8, 4, 2, 2, 4, 2, 2] + [2] * 12  # 19 calls
    assert [str(w.message) for w in caught if "later batches" in str(w.message)] == [
        "out of memory at batch 1: later batches use at most 2 rows"]
    stub.batches.clear()
    run_items(stub, items[:6], OPTS, batch_size=8)  # the same system's next call (evaluate's next group)
    assert [len(b) for b in stub.batches] == [2, 2, 2]
    # a server's call (one long request must not shrink every later batch): this call's batches only
    server = _OutOfMemory()
    run_items(server, items[:16], OPTS, batch_size=8, remember_out_of_memory=False)
    server.batches.clear()
    run_items(server, items[:6], OPTS, batch_size=8, remember_out_of_memory=False)
    assert [len(b) for b in server.batches] == [6, 3, 2, 1, 3, 2, 1]  # 6 ran out of memory again, then its halves


NAN = "the LLM's next-token scores are not numbers (NaN)"  # `decoding.refuse_broken_scores`' error, its start


class _NaNScores(Stub):
    """An LLM whose next-token scores are NaN for the rows that `bad(item)` says, refused as the decoders refuse them
    (`decoding.refuse_broken_scores`); `apart`: those rows decoded in a call of their own, apart from the others (as
    `SpeechLLMSystem.run_batch` decodes a batch's speech rows apart from its text ones)."""

    def __init__(self, bad, apart: bool = False):
        super().__init__()
        self.bad, self.apart = bad, apart

    def run_batch(self, items, options):
        from llm_srt.model.decoding import refuse_broken_scores

        self.batches.append([it.audio.size for it in items])
        calls = [[it for it in items if self.bad(it) == part] for part in (True, False)] if self.apart else [items]
        for call in calls:
            scores = torch.zeros(len(call), 5)
            scores[[k for k, it in enumerate(call) if self.bad(it)]] = float("nan")
            refuse_broken_scores(scores, torch.float16)
        return [Output(f"t{it.audio.size / SR:.2f}", f"tr{it.audio.size / SR:.2f}") for it in items]


def test_nan_scores_of_every_row_fail_the_batch_at_once_while_some_rows_are_still_found_in_halves():
    """An LLM overflowing float16 gives NaN scores for every row: the batch was retried in halves down to single
    rows (2n - 1 failing prefills for n rows), each failing as the batch did. Where the error holds for every row of
    the batch, each row gets it at once; where it holds for some rows, or for all rows of a part of the batch (its
    speech rows decoded apart), the halves still find the rows that run."""
    from llm_srt.infer import run_items

    items = [Item(tiny.tone(1.0 + k / 10, 300), "eng", "deu", Task.SRT) for k in range(8)]
    fix = "in float16: its activations overflow float16 (Gemma-3's do): run with --dtype float32"
    everywhere = _NaNScores(bad=lambda it: True)
    out = run_items(everywhere, items, OPTS, batch_size=8)
    assert len(everywhere.batches) == 1 and all(o.error.startswith(f"{NAN} for 8 of 8 rows {fix}") for o in out)
    bad = items[5].audio.size
    one = _NaNScores(bad=lambda it: it.audio.size == bad)
    out = run_items(one, items, OPTS, batch_size=8)
    assert [o.error is not None for o in out] == [k == 5 for k in range(8)] and len(one.batches) == 7
    assert out[5].error.startswith(f"{NAN} for 1 of 1 rows {fix}")
    longest = sorted(it.audio.size for it in items)[4:]
    apart = _NaNScores(bad=lambda it: it.audio.size in longest, apart=True)
    out = run_items(apart, items, OPTS, batch_size=8)  # 8 (4 of 4 NaN in a call) -> 4 NaN + 4 that run
    assert [o.error is not None for o in out] == [k >= 4 for k in range(8)] and len(apart.batches) == 3
    assert out[7].error.startswith(f"{NAN} for 4 of 4 rows {fix}")


def test_an_llm_overflowing_float16_costs_one_prefill_a_batch_not_2n_minus_1(model_dir):
    """The tiny SpeechLLM in float16 with NaN scores (an output head overflowing): a batch of 4 ran 7 prefills
    (4 -> 2 + 2 -> 1 + 1 + 1 + 1), every one refused; now 1, each row given the error."""
    from llm_srt.infer import run_items
    from llm_srt.model.llm import causal_lm
    from llm_srt.model.speech_llm import SpeechLLM
    from llm_srt.model.systems import SpeechLLMSystem

    model = SpeechLLM.from_pretrained(model_dir, dtype="float16").eval()
    lm, prefills = causal_lm(model.llm), []
    items = [Item(tiny.tone(0.6 + k / 5, 300 + 100 * k, seed=k), "eng", "deu", Task.SRT) for k in range(4)]

    def count(module, args, kwargs):  # a prefill takes the prompts' embeddings, a decode step token ids
        prefills.append(kwargs.get("inputs_embeds") is not None)

    hooks = [lm.get_output_embeddings().register_forward_hook(lambda m, a, out: torch.full_like(out, float("nan"))),
             lm.register_forward_pre_hook(count, with_kwargs=True)]
    try:
        out = run_items(SpeechLLMSystem(model), items, DecodingOptions(max_new_tokens=4), batch_size=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert prefills == [True]
    assert all(o.error.startswith(f"{NAN} for 4 of 4 rows in float16: ") for o in out)


def test_shortest_first_answers_a_short_input_before_a_long_one_s_other_segments():
    """A server's batch (`shortest_first`): a short request's one segment runs in the first batch, not after every
    segment of a long upload batched with it (segments run longest first otherwise)."""
    talk = recording(36.0, [(0.5, 3.0), (8.5, 10.0), (15.5, 17.0), (30.0, 33.5)])  # four segments
    short = tiny.tone(1.2, 650)
    for shortest_first, short_after in ((False, 3), (True, 1)):
        stub, answered = Stub(), {}
        SpeechTranslator(stub).translate([talk, short], "eng", "deu", batch_size=2, shortest_first=shortest_first,
                                         on_result=lambda i, r: answered.setdefault(i, len(stub.batches)))
        assert answered[1] == short_after and len(stub.batches) == 3  # after how many of the three model calls


def test_inputs_finish_window_by_window_so_a_kill_keeps_the_first_ones(monkeypatch):
    """Longest first over a whole group (up to 2 h of audio), every input had a short segment left until near the
    group's end: a run of long files killed at 90% had written none. A group runs in windows of about
    FINISH_WINDOW_SECONDS of audio, in input order: the first window's inputs are done after its own batches."""
    from llm_srt import infer

    monkeypatch.setattr(infer, "FINISH_WINDOW_SECONDS", 100.0)
    talks = [recording(36.0, [(0.5, 3.0), (8.5, 10.0), (15.5, 17.0), (30.0, 33.5)], seed=i) for i in range(6)]
    stub, answered = Stub(), {}
    results = SpeechTranslator(stub).translate(talks, "eng", "deu", batch_size=2,
                                               on_result=lambda i, r: answered.setdefault(i, len(stub.batches)))
    assert len(stub.batches) == 12 and all(r.error is None and len(r.segments) == 4 for r in results)
    assert max(answered[i] for i in range(3)) <= 6 < min(answered[i] for i in range(3, 6))  # windows of 0-108 s
    #   and 108-216 s of audio: inputs 0-2, then 3-5


def test_ctrl_c_prints_the_inputs_done_after_one_still_running(tmp_path, monkeypatch, capsys):
    """stdout keeps the inputs' order, so inputs done before an earlier one wait for it: Ctrl-C dropped them."""
    write_wav(tmp_path / "talk.wav", recording(36.0, [(0.5, 4.0), (8.5, 11.0), (15.5, 17.0), (30.0, 31.5)]))
    for name in ("s1", "s2"):
        write_wav(tmp_path / f"{name}.wav", recording(2.4, [(0.2, 2.2)]))
    stub = Stub(interrupt=3)  # talk's two longest segments, then both short inputs, then Ctrl-C
    stub_cli(monkeypatch, stub)
    rc = cli.main(["translate", *(str(tmp_path / f"{n}.wav") for n in ("talk", "s1", "s2")), "--model", "stub",
                   "--src", "eng", "--tgt", "deu", "--batch-size", "2"])
    out = capsys.readouterr()
    assert rc == 130 and len(stub.batches) == 3 and "interrupted" in out.err
    assert [line for line in out.out.splitlines() if line.startswith("# ")] == [
        f"# {tmp_path / n}.wav" for n in ("talk", "s1", "s2")] and out.out.count("tr2.40") == 2  # talk's 2 done too
    assert "talk.wav: the run was stopped before 2 of 4 segments were done; the 2 translated are printed" in out.err


def test_the_segments_of_an_input_whose_caller_is_gone_are_not_run():
    """`cancelled(i)` (a request timed out, its client gone): the input's segments not yet in a batch are left out,
    so the model does not go on for no one; the inputs still wanted are translated."""
    from llm_srt.infer import NOT_RUN

    talk = recording(36.0, [(0.5, 3.0), (8.5, 10.0), (15.5, 17.0), (30.0, 33.5)])
    short = tiny.tone(1.2, 650)
    stub = Stub()
    gone = lambda i: i == 0 and len(stub.batches) >= 1  # noqa: E731  the upload's caller leaves after one batch
    talk_out, short_out = SpeechTranslator(stub).translate([talk, short], "eng", "deu", batch_size=2,
                                                           cancelled=gone)
    assert len(stub.batches) == 2 and sum(map(len, stub.batches)) == 3  # 2 of the upload's 4 segments ran, + short
    assert short_out.error is None and short_out.translation == "tr1.20"
    assert [s.error for s in talk_out.segments].count(NOT_RUN) == 2 and "2 of 4 segments failed" in talk_out.error
    stub = Stub()  # gone before its turn: not even segmented
    out = SpeechTranslator(stub).translate([talk, short], "eng", "deu", cancelled=lambda i: i == 0)
    assert out[0].error == NOT_RUN and out[0].segments == [] and stub.batches == [[short.size]]


def test_a_failed_segment_is_counted_and_the_inputs_other_segments_kept(tmp_path, monkeypatch, capsys):
    """Before, the error line named no input ("RuntimeError: index out of range ...") and one failed segment lost all
    input's segments."""
    talk = recording(36.0, [(0.5, 3.0), (15.5, 17.0), (30.0, 33.5)])  # three phrases apart: three segments
    write_wav(tmp_path / "talk.wav", talk)
    write_wav(tmp_path / "other.wav", tiny.tone(1.2, 650))
    [_, middle, _] = SpeechTranslator(Stub()).translate([talk], "eng", "deu")[0].segments
    stub = Stub(fails=lambda it: abs(it.audio.size - (middle.end - middle.start) * SR) < 2)
    files = [str(tmp_path / "talk.wav"), str(tmp_path / "other.wav")]
    [talk_result, other] = SpeechTranslator(stub).translate(files, "eng", "deu", batch_size=4)
    assert [s.error is not None for s in talk_result.segments] == [False, True, False] and other.error is None
    assert talk_result.error.startswith("1 of 3 segments failed (the first, 00:00:15.") and \
        talk_result.error.endswith(": RuntimeError: index out of range in self)")
    assert len(talk_result.kept) == 2 and talk_result.translation.count("tr") == 2
    stub_cli(monkeypatch, Stub(fails=stub.fails))
    rc = cli.main(["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",
                   "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    retried = "failed (RuntimeError: index out of range in self); retrying it as two halves"  # (as a warning)
    assert rc == 3 and err == [f"llm-srt translate: warning: a batch of {n} {retried}" for n in (4, 2)] + [
                               f"llm-srt translate: {files[0]}: {talk_result.error}",
                               "llm-srt translate: 1 of 2 inputs failed in part (named above); the segments that did "
                               f"not fail are in their *.incomplete files in {tmp_path / 'out'}, and "
                               "--skip-existing translates them again"]
    assert (tmp_path / "out" / "talk.srt.incomplete").read_text().count("-->") == 2
    assert not (tmp_path / "out" / "talk.srt").exists()  # not taken for a finished input by --skip-existing
    assert (tmp_path / "out" / "other.srt").read_text().count("-->") == 1
    stub_cli(monkeypatch, Stub())  # the failure gone: --skip-existing translates the incomplete input whole
    rc = cli.main(["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",
                   "--out-dir", str(tmp_path / "out"), "--skip-existing"])
    assert rc == 0 and "1 of 2 inputs skipped" in capsys.readouterr().err
    assert (tmp_path / "out" / "talk.srt").read_text().count("-->") == 3
    assert not (tmp_path / "out" / "talk.srt.incomplete").exists()
    stub_cli(monkeypatch, Stub(fails=stub.fails))  # failing in part again with the same settings: the earlier
    again = ["translate", files[0], "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",  # whole
             "--out-dir", str(tmp_path / "out")]  # output of the same job is kept, said so (it was deleted)
    assert cli.main(again) == 0 and (f"{tmp_path / 'out' / 'talk.srt'}, an earlier run's whole output of that input "
                                     "with these settings, kept") in capsys.readouterr().err
    assert (tmp_path / "out" / "talk.srt").read_text().count("-->") == 3
    assert not (tmp_path / "out" / "talk.srt.incomplete").exists()  # (which --skip-existing would never redo)
    assert cli.main([*again, "--line-width", "30"]) == 3  # with other settings: the earlier output goes, said so
    assert (f"{tmp_path / 'out' / 'talk.srt'}, an earlier run's output of other audio or settings, removed: this run "
            "translated that input again and failed in part") in capsys.readouterr().err
    assert not (tmp_path / "out" / "talk.srt").exists() and (tmp_path / "out" / "talk.srt.incomplete").is_file()
    own = tmp_path / "own" / "talk.srt"  # a file no run recorded (the user's, or a run killed before its record)
    own.parent.mkdir()
    own.write_text("my own subtitles\n")
    assert cli.main([*again[:-1], str(own.parent)]) == 3 and f"{own} is left in place: no run's record says" in \
        capsys.readouterr().err  # it was removed, said to be an earlier output "with other settings"
    assert own.read_text() == "my own subtitles\n" and own.with_name("talk.srt.incomplete").is_file()


def test_evaluation_rows_and_smt_inputs_go_whole_with_their_silences():
    """evaluate scores test utterances whole, as the paper does (`whole_clips`), and an SMT input's transcript
    belongs to its whole clip: cut in two at a pause, the transcript would go with each half (translated twice)."""
    clip = recording(12.0, [(0.5, 4.0), (7.0, 11.0)])  # two phrases 3 s apart: two segments when cut
    stub = Stub()
    assert len(SpeechTranslator(stub).translate([clip], "eng", "deu")[0].segments) == 2
    for kwargs in ({"whole_clips": True}, {"task": "smt", "transcripts": ["hello world"]}):
        [r] = SpeechTranslator(stub).translate([clip], "eng", "deu", **kwargs)
        assert [(s.start, s.end) for s in r.segments] == [(0.0, 12.0)], kwargs
    [long] = SpeechTranslator(stub).translate([recording(31.0, [(0.5, 30.5)])], "eng", "deu", task="smt",
                                              transcripts=["hello"])
    assert "31.000 s of audio with its transcript (SMT)" in long.error and not long.segments
    # a frame over the window (a writer's off-by-one; 30 s at 8 kHz and one frame resample to 480,002 samples) is
    # cut to it, as training's loading cuts it: it was refused ("30.0 s ... must be at most 30 s"), or segmented
    edge = np.concatenate([recording(30.0, [(0.5, 29.5)]), np.zeros(2, np.float32)])
    for kwargs in ({"whole_clips": True}, {"task": "smt", "transcripts": ["hello world"]}):
        [r] = SpeechTranslator(stub).translate([edge], "eng", "deu", **kwargs)
        assert r.error is None and [(s.start, s.end) for s in r.segments] == [(0.0, 30.0)], kwargs


def test_each_input_is_written_as_soon_as_its_segments_are_done(tmp_path, monkeypatch, capsys):
    """Before, outputs were written only after a group of about 2 h of audio: Ctrl-C lost the finished inputs (and
    --skip-existing did them again). One clip a batch, Ctrl-C in the third: the first two are written."""
    files = []
    for k in range(4):
        write_wav(tmp_path / f"c{k}.wav", tiny.tone(1.0, 300 + 100 * k, seed=k))
        files.append(str(tmp_path / f"c{k}.wav"))
    stub_cli(monkeypatch, Stub(interrupt=3))
    rc = cli.main(["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",
                   "--batch-size", "1", "--out-dir", str(tmp_path / "out")])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != SETTINGS_FILE) == ["c0.srt", "c1.srt"]
    write_wav(tmp_path / "long.wav", tiny.tone(3.0, 500))  # done first (longest first), printed second
    stub = Stub()
    stub_cli(monkeypatch, stub)
    assert cli.main(["translate", files[0], str(tmp_path / "long.wav"), "--model", "stub", "--src", "eng", "--tgt",
                     "deu", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert stub.batches == [[3 * SR], [SR]] and out[0] == files[0] and out[3] == str(tmp_path / "long.wav")


class _Multiline(Stub):
    """A Stub whose texts hold line breaks, as a model may write them."""

    def run_batch(self, items, options):
        return [Output(f"{o.transcript}\nsecond line", f"{o.translation} \n\n zweite Zeile")
                for o in super().run_batch(items, options)]


def test_a_line_break_in_a_models_text_stays_inside_its_line_in_text_and_subtitles(tmp_path, monkeypatch, capsys):
    """--format text printed a text's lines after its first unindented, as lines of the file's own (a reviewer's
    find), and a subtitle cue had a line more. Each text is now one line; JSON keeps the model's text as written."""
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    stub_cli(monkeypatch, _Multiline())
    run = ["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu"]
    assert cli.main(run) == 0
    name, transcript, translation = capsys.readouterr().out.splitlines()
    assert name == str(tmp_path / "a.wav")
    assert re.fullmatch(r"  transcript:  t\d\.\d\d second line", transcript), transcript
    assert re.fullmatch(r"  translation: tr\d\.\d\d zweite Zeile", translation), translation
    assert cli.main([*run, "--format", "srt"]) == 0
    srt = capsys.readouterr().out
    assert re.fullmatch(r"1\n[\d:,]+ --> [\d:,]+\nt\d\.\d\d second line\ntr\d\.\d\d zweite Zeile\n+", srt), srt
    assert cli.main([*run, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["translation"].endswith(" \n\n zweite Zeile")


class Stopped(Stub):
    """A Stub whose batch numbered `interrupt` is a SIGTERM (`cli.Terminated`), not a Ctrl-C."""

    def run_batch(self, items, options):
        if len(self.batches) + 1 == self.interrupt:
            self.batches.append([it.audio.size for it in items])
            raise cli.Terminated()
        return super().run_batch(items, options)


def test_ctrl_c_or_sigterm_keeps_the_json_of_the_inputs_done(tmp_path, monkeypatch, capsys):
    """--format json printed its array, and wrote results.json, only once every input had run: Ctrl-C or SIGTERM
    lost every finished input, on stdout and in --out-dir alike."""
    files = []
    for k in range(3):
        write_wav(tmp_path / f"c{k}.wav", tiny.tone(1.0 + 0.2 * k, 300 + 100 * k, seed=k))
        files.append(str(tmp_path / f"c{k}.wav"))
    run = ["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "json",
           "--batch-size", "1"]
    for system, code in ((Stub, 130), (Stopped, cli.TERMINATED)):
        stub_cli(monkeypatch, system(interrupt=3))  # longest first: c2, c1, then the stop in c0's batch
        assert cli.main(run) == code
        assert [r["audio"] for r in json.loads(capsys.readouterr().out)] == files[1:]  # in input order
        out = tmp_path / system.__name__
        out.mkdir()
        (out / "results.json").write_text("[]\n")  # an earlier whole run's: kept
        stub_cli(monkeypatch, system(interrupt=3))
        assert cli.main([*run, "--out-dir", str(out)]) == code
        printed, err = capsys.readouterr()
        assert [r["audio"] for r in json.loads(printed)] == files[1:]
        assert json.loads((out / "results.partial.json").read_text()) == json.loads(printed)
        assert f"{out / 'results.partial.json'} holds the 2 of 3 inputs done before the run was stopped" in err
        assert (out / "results.json").read_text() == "[]\n"
        assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.partial.json"]  # no temporary file
    stub_cli(monkeypatch, Stub())  # a whole run: its results.json, and the stopped run's partial file gone
    assert cli.main([*run, "--out-dir", str(out)]) == 0
    assert len(json.loads((out / "results.json").read_text())) == 3 and not (out / "results.partial.json").exists()
    capsys.readouterr()
    stub_cli(monkeypatch, Stopped(interrupt=3))  # text: SIGTERM prints those held back behind c0, as Ctrl-C does
    assert cli.main([*run[:-4], "--batch-size", "1"]) == cli.TERMINATED
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("# ")] == [
        f"# {files[1]}", f"# {files[2]}"]


def test_a_run_stopped_inside_a_long_input_keeps_its_segments_done_in_an_incomplete_file(tmp_path, monkeypatch,
                                                                                        capsys):
    """An input was handed over only once its last segment was back: a 1 h recording stopped (Ctrl-C, SIGTERM)
    after 200 of its 240 segments left --out-dir empty, and --skip-existing started it from zero (a reviewer's
    find). Its segments done are now in its *.incomplete file, said on stderr, and in json's partial file."""
    write_wav(tmp_path / "talk.wav", recording(24.0, [(1.0, 3.0), (6.0, 8.5), (11.5, 14.5), (17.5, 21.0)]))
    run = ["translate", str(tmp_path / "talk.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu",
           "--batch-size", "1"]
    out = tmp_path / "out"
    for system, code in ((Stub, 130), (Stopped, cli.TERMINATED)):
        stub = system(interrupt=3)  # two segments of four done, the longest first
        stub_cli(monkeypatch, stub)
        assert cli.main([*run, "--format", "srt", "--out-dir", str(out)]) == code
        cues = (out / "talk.srt.incomplete").read_text().split("\n\n")
        assert sorted(c.splitlines()[-1] for c in cues) == sorted(f"tr{n / SR:.2f}" for n in sum(stub.batches[:2], []))
        assert not (out / "talk.srt").exists()
        assert (f"talk.wav: the run was stopped before 2 of 4 segments were done; the 2 translated are in "
                f"{out / 'talk.srt.incomplete'} (--skip-existing translates it again whole)") in capsys.readouterr().err
    stub_cli(monkeypatch, Stub())  # run again: translated whole, the incomplete file gone
    assert cli.main([*run, "--format", "srt", "--out-dir", str(out), "--skip-existing"]) == 0
    assert (out / "talk.srt").read_text().count("-->") == 4 and not (out / "talk.srt.incomplete").exists()
    stub_cli(monkeypatch, Stub(interrupt=3))  # json: the input's entry, its error saying it is in part
    assert cli.main([*run, "--format", "json", "--out-dir", str(tmp_path / "j")]) == 130
    [entry] = json.loads((tmp_path / "j" / PARTIAL_JSON).read_text())
    assert entry["error"] == "the run was stopped before 2 of 4 segments were done" and len(entry["segments"]) == 2
    for fmt in ("json", "srt"):  # the GPU failing inside it: kept in part, exit 3 in either format (json's was 1)
        stub_cli(monkeypatch, _Broken(interrupt=3))
        assert cli.main([*run, "--format", fmt, "--out-dir", str(tmp_path / f"gpu-{fmt}")]) == 3, fmt
    capsys.readouterr()
    stub_cli(monkeypatch, Stub(interrupt=3))  # stopped with other settings: the earlier whole talk.srt (deu) is not
    # left beside the new segments as if it were this run's
    assert cli.main([*run[:-3], "fra", *run[-2:], "--format", "srt", "--out-dir", str(out)]) == 130
    assert not (out / "talk.srt").exists() and (out / "talk.srt.incomplete").is_file()
    assert (f"{out / 'talk.srt'}, an earlier run's output of other audio or settings, removed: this run translated "
            "that input again and was stopped in it") in capsys.readouterr().err


class _Broken(Stub):
    """A Stub whose batch numbered `interrupt` breaks the GPU for the process (`infer._run_chunk` stops the run)."""

    def run_batch(self, items, options):
        if len(self.batches) + 1 == self.interrupt:
            self.batches.append([it.audio.size for it in items])
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().run_batch(items, options)


def test_a_gpu_failing_for_good_keeps_the_inputs_done_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """An illegal memory access stops the run (every later batch would fail too): it lost the finished inputs'
    JSON and the text held back behind an input still running, and exited 2, as a refused command does. Now what
    finished is kept as on Ctrl-C, the error is said, and the exit code is 3 (some inputs failed), 1 (none done)."""
    files = []
    for k in range(3):
        write_wav(tmp_path / f"c{k}.wav", tiny.tone(1.0 + 0.2 * k, 300 + 100 * k, seed=k))
        files.append(str(tmp_path / f"c{k}.wav"))
    run = ["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "json",
           "--batch-size", "1", "--out-dir", str(tmp_path / "out")]
    stub_cli(monkeypatch, _Broken(interrupt=2))  # longest first: c2 is done, then the GPU fails on c1
    assert cli.main(run) == 3
    printed, err = capsys.readouterr()
    assert [r["audio"] for r in json.loads(printed)] == files[2:]
    assert json.loads((tmp_path / "out" / "results.partial.json").read_text()) == json.loads(printed)
    assert err.splitlines()[-1].startswith("llm-srt translate: error: stub: the GPU failed on a batch of 1 "
                                           "(RuntimeError: CUDA error: an illegal memory access was encountered)")
    stub_cli(monkeypatch, _Broken(interrupt=2))  # --debug: the traceback too, and the same exit code (it was 2)
    assert cli.main(["--debug", *run[:-2], "--out-dir", str(tmp_path / "debug")]) == 3
    assert "Traceback" in capsys.readouterr().err
    stub_cli(monkeypatch, _Broken(interrupt=1))  # nothing done: an empty array, no file, exit code 1
    assert cli.main([*run[:-2], "--out-dir", str(tmp_path / "none")]) == 1
    assert json.loads(capsys.readouterr().out) == [] and not list((tmp_path / "none").iterdir())
    write_wav(tmp_path / "talk.wav", recording(36.0, [(0.5, 4.0), (8.5, 11.0), (15.5, 17.0), (30.0, 31.5)]))
    for name in ("s1", "s2"):
        write_wav(tmp_path / f"{name}.wav", recording(2.4, [(0.2, 2.2)]))
    stub_cli(monkeypatch, _Broken(interrupt=3))  # text: s1 and s2 are done, held back behind talk, still running
    assert cli.main(["translate", *(str(tmp_path / f"{n}.wav") for n in ("talk", "s1", "s2")), "--model", "stub",
                     "--src", "eng", "--tgt", "deu", "--batch-size", "2"]) == 3
    out = capsys.readouterr()
    assert [line for line in out.out.splitlines() if line.startswith("# ")] == [
        f"# {tmp_path / n}.wav" for n in ("talk", "s1", "s2")] and out.out.count("tr2.40") == 2
    assert "illegal memory access" in out.err.splitlines()[-1]
    from llm_srt import infer

    def refuses(*args, **kwargs):
        raise LLMSRTError("refused before any input ran")

    monkeypatch.setattr(infer.SpeechTranslator, "translate", refuses)  # another error stays a refusal: exit 2
    assert cli.main(run) == 2 and capsys.readouterr() == ("", "llm-srt translate: error: refused before any input "
                                                              "ran\n")


def test_a_results_json_that_cannot_be_written(clips, tmp_path, monkeypatch, capsys):
    """A results.json that is a folder was found only after every input had run, and a write that failed at the end
    (a full disk) gave exit code 2, which says the command was refused before any input ran."""
    import errno

    from llm_srt import out_files, translate

    (tmp_path / "out" / "results.json").mkdir(parents=True)
    monkeypatch.setattr(translate, "translator_from_args", lambda args: pytest.fail("the model loaded"))
    run = ["translate", *clips[:2], "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "json"]
    assert cli.main([*run, "--out-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"llm-srt translate: error: --out-dir: {tmp_path / 'out' / 'results.json'} "
                                       "is a folder, so results.json cannot be written; move that folder away, or "
                                       "choose another --out-dir\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    stub_cli(monkeypatch, Stub())
    monkeypatch.setattr(out_files, "atomic_file", full)
    assert cli.main([*run, "--out-dir", str(tmp_path / "other")]) == translate.SOME_FAILED
    printed, err = capsys.readouterr()
    assert [r["audio"] for r in json.loads(printed)] == clips[:2]  # every result on stdout all the same
    assert err == (f"llm-srt translate: {tmp_path / 'other' / 'results.json'}: cannot write the output (No space "
                   "left on device); check --out-dir\n")


def test_subtitles_of_a_text_the_task_never_writes_are_refused(monkeypatch, capsys, clips):
    """Before, --task s2tt --format vtt --subtitles transcript printed an empty WEBVTT file and exit code 0."""
    stub_cli(monkeypatch, Stub())
    for task, text in (("s2tt", "transcript"), ("asr", "translation")):
        assert cli.main(["translate", clips[0], "--model", "stub", "--src", "eng", "--tgt", "deu", "--task", task,
                         "--format", "vtt", "--subtitles", text]) == 2
        assert capsys.readouterr().err == (f"llm-srt translate: error: --task {task} writes no {text}, so --subtitles "
                                           f"{text} would give vtt files without a cue; use --subtitles both, or "
                                           "--task srt for both texts\n")
    assert cli.main(["translate", clips[0], "--model", "stub", "--src", "eng", "--tgt", "deu", "--task", "s2tt",
                     "--format", "vtt", "--subtitles", "translation"]) == 0
    assert "tr" in capsys.readouterr().out


def test_auto_source_language_is_heard_from_the_longest_segment():
    """A clip opening with a short "Yes." then a pause: language ID hears its longest segment, not 0.5 s."""
    heard = []

    class Listening(Stub):
        def detect_language(self, audio):
            heard.append(audio.size / SR)
            return "eng"

    [r] = SpeechTranslator(Listening()).translate([recording(12.0, [(0.5, 1.0), (4.0, 11.0)])], "auto", "deu")
    assert r.src == "eng" and len(r.segments) == 2 and heard == [pytest.approx(7.1, abs=0.2)]


def test_segments_are_joined_with_a_space_except_in_japanese_and_chinese():
    """Korean spaces its words and Thai its sentences: their segments were glued together ('좋습니다.내일')."""
    from llm_srt.infer import _joined

    parts = ["오늘 날씨가 좋습니다.", "내일 만나요."]
    assert _joined(parts, "kor") == "오늘 날씨가 좋습니다. 내일 만나요." and _joined(["a.", "", "b."], "tha") == "a. b."
    assert _joined(["今日は。", "明日。"], "jpn") == "今日は。明日。" == _joined(["今日は。", "明日。"], "zho")
    assert _joined(["a.", "b."], "yue") == "a.b." and _joined(["", ""], "eng") == ""


class _Untranslating(Stub):
    """Segments of 2 s or more come back with their transcript and no translation (a model that ended after it)."""

    def run_batch(self, items, options):
        return [Output(o.transcript, "" if it.audio.size >= 2 * SR else o.translation)
                for it, o in zip(items, super().run_batch(items, options))]


def test_segments_without_a_translation_are_counted_on_stderr_and_in_json(tmp_path, monkeypatch, capsys):
    """A segment that ended after its transcript (or reached its token budget first) had an empty translation, and
    nothing said so: its cue vanished under --subtitles translation."""
    write_wav(tmp_path / "talk.wav", recording(12.0, [(0.5, 1.5), (4.0, 7.0), (9.5, 10.5)]))
    stub_cli(monkeypatch, _Untranslating())
    base = ["translate", str(tmp_path / "talk.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu"]
    assert cli.main([*base, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    [result] = json.loads(out)
    assert [bool(s["translation"]) for s in result["segments"]] == [True, False, True]
    assert result["untranslated"] == 1 and result["error"] is None
    assert err == (f"llm-srt translate: {tmp_path / 'talk.wav'}: 1 of 3 segments got no translation (the model "
                   "wrote none, or reached the segment's token budget first); their transcripts are kept\n")
    assert cli.main([*base, "--format", "json", "--task", "asr"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["untranslated"] == 0  # ASR writes no translation


class _Capping(Stub):
    """Segments of 2 s or more come back cut at their token cap (Output.capped: no end token within it)."""

    def run_batch(self, items, options):
        return [Output(o.transcript, o.translation, capped=it.audio.size >= 2 * SR)
                for it, o in zip(items, super().run_batch(items, options))]


def test_segments_cut_at_their_token_cap_are_counted_on_stderr_and_in_json(tmp_path, monkeypatch, capsys):
    """A segment whose output reached its token cap lost the rest of its text, and nothing said so: a weak model
    and cut outputs looked alike. Each input's JSON says so (and each segment's), stderr counts them."""
    write_wav(tmp_path / "talk.wav", recording(12.0, [(0.5, 1.5), (4.0, 7.0), (9.5, 10.5)]))
    stub_cli(monkeypatch, _Capping())
    base = ["translate", str(tmp_path / "talk.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu"]
    note = (f"llm-srt translate: {tmp_path / 'talk.wav'}: 1 of 3 segments reached their token cap (--max-new-tokens, "
            "or the segment's duration budget): their text is cut there\n")
    assert cli.main([*base, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    [result] = json.loads(out)
    assert [s["capped"] for s in result["segments"]] == [False, True, False] and result["capped"] is True
    assert err == note
    assert cli.main([*base, "--format", "text"]) == 0 and capsys.readouterr().err == note
    stub_cli(monkeypatch, Stub())
    assert cli.main([*base, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["capped"] is False and err == ""


def test_skip_existing_translates_again_the_files_written_with_other_settings(tmp_path, monkeypatch, capsys):
    """A run into French with --skip-existing took the German files an earlier run wrote there for its own; so did
    one after a French run without the flag was stopped halfway (a folder-wide record would say French)."""
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav", recording(3.0, [(0.5, 2.5)]))
    stub = Stub()
    stub_cli(monkeypatch, stub)
    out = tmp_path / "out"
    base = ["translate", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--model", "stub", "--src", "eng",
            "--format", "srt", "--out-dir", str(out)]
    assert cli.main([*base, "--tgt", "deu"]) == 0 and len(stub.batches) == 1  # both in one batch
    assert cli.main([*base, "--tgt", "deu", "--skip-existing", "--batch-size", "2"]) == 0 and len(stub.batches) == 1
    capsys.readouterr()
    assert cli.main([*base, "--tgt", "fra", "--skip-existing"]) == 0 and len(stub.batches) == 2
    assert capsys.readouterr().err == (
        f"llm-srt translate: 2 of 2 inputs translated again: their files in {out} were written with other settings "
        '(tgt: "deu" -> "fra") (--skip-existing)\n')
    lines = (out / SETTINGS_FILE).read_text().splitlines()
    assert len(lines) == 4 and [json.loads(line)["settings"]["tgt"] for line in lines] == ["deu"] * 2 + ["fra"] * 2
    (out / SETTINGS_FILE).write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # b.srt's record cut by a kill
    assert cli.main([*base, "--tgt", "fra", "--skip-existing"]) == 0 and stub.batches[-1] == [3 * SR]
    assert "1 of 2 inputs translated again" in capsys.readouterr().err
    assert cli.main([*base, "--tgt", "fra", "--skip-existing"]) == 0 and len(stub.batches) == 3  # all done


def test_skip_existing_translates_again_after_another_transcript_or_dtype(tmp_path, monkeypatch, capsys):
    """A corrected --transcript (task smt) and another --dtype (bfloat16 changes outputs; `auto` resolves per
    machine) were taken as the same run: the old file was kept. --transcript belongs to task smt only."""
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    stub = Stub()
    stub_cli(monkeypatch, stub)
    base = ["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu", "--task", "smt",
            "--format", "srt", "--out-dir", str(tmp_path / "out"), "--skip-existing"]
    for extra, runs in ((["--transcript", "helo wrld"], 1), (["--transcript", "helo wrld"], 1),
                        (["--transcript", "hello world"], 2), (["--transcript", "hello world"], 2),
                        (["--transcript", "hello world", "--dtype", "bfloat16"], 3)):
        assert cli.main([*base, *extra]) == 0 and len(stub.batches) == runs, extra
    assert "(dtype: \"float32\" -> \"bfloat16\")" in capsys.readouterr().err
    assert cli.main([*base[:-7], "--task", "srt", "--transcript", "hi"]) == 2
    assert "--transcript goes with --task smt" in capsys.readouterr().err


def test_skip_existing_does_not_take_another_inputs_file_of_the_same_name(tmp_path, monkeypatch, capsys):
    """day2/talk.wav after day1/talk.wav into one --out-dir: both write talk.srt, and --skip-existing took day1's
    subtitles for day2's and translated nothing (the record named the file and the settings, not the input)."""
    for day, seconds in (("day1", 3.0), ("day2", 5.0)):
        (tmp_path / day).mkdir()
        write_wav(tmp_path / day / "talk.wav", recording(seconds, [(0.5, seconds - 0.5)]))
    stub = Stub()
    stub_cli(monkeypatch, stub)
    out = tmp_path / "subs"
    base = ["--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt", "--out-dir", str(out),
            "--skip-existing"]
    assert cli.main(["translate", str(tmp_path / "day1" / "talk.wav"), *base]) == 0 and len(stub.batches) == 1
    capsys.readouterr()
    assert cli.main(["translate", str(tmp_path / "day2" / "talk.wav"), *base, "--overwrite"]) == 0
    assert len(stub.batches) == 2 and "1 of 1 inputs translated again: their files in" in capsys.readouterr().err
    assert cli.main(["translate", str(tmp_path / "day2" / "talk.wav"), *base]) == 0 and len(stub.batches) == 2


def test_another_inputs_output_of_the_same_name_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """Recorders restart their numbering: day2/ZOOM0001.WAV after day1/ZOOM0001.WAV into one --out-dir replaced day
    1's subtitles without a word (exit 0), though the record named day 1's input. Refused now, as two inputs of one
    run that would share a file are; the same input runs again, and --overwrite (or day 1's input gone) replaces."""
    from llm_srt import translate

    for day, seconds in (("day1", 3.0), ("day2", 4.0)):
        (tmp_path / day).mkdir()
        write_wav(tmp_path / day / "ZOOM0001.WAV", recording(seconds, [(0.5, seconds - 0.5)]))
    stub = Stub()
    stub_cli(monkeypatch, stub)
    out = tmp_path / "subs"
    srt = out / "ZOOM0001.srt"

    def run(day: str, *more: str) -> int:
        return cli.main(["translate", str(tmp_path / day / "ZOOM0001.WAV"), "--model", "stub", "--src", "eng",
                         "--tgt", "deu", "--format", "srt", "--out-dir", str(out), *more])

    assert run("day1") == 0
    day1 = srt.read_text()
    capsys.readouterr()
    monkeypatch.setattr(translate, "translator_from_args", lambda args: pytest.fail("the model loaded"))
    assert run("day2") == 2 and srt.read_text() == day1
    err = capsys.readouterr().err
    names = (str(tmp_path / "day2" / "ZOOM0001.WAV"), str(srt), str(tmp_path / "day1" / "ZOOM0001.WAV"))
    assert err.count("\n") == 1 and all(name in err for name in (*names, "--overwrite")), err
    stub_cli(monkeypatch, stub)
    assert run("day1") == 0 and srt.read_text() == day1 and len(stub.batches) == 2  # the same input: written again
    assert run("day2", "--overwrite") == 0 and srt.read_text() != day1
    assert run("day1") == 2  # day 2's output now, and day2/ZOOM0001.WAV still there
    (tmp_path / "day2" / "ZOOM0001.WAV").unlink()  # nothing left to tell it from: written over as before
    assert run("day1") == 0 and srt.read_text() == day1
    capsys.readouterr()
    assert cli.main(["translate", str(tmp_path / "day1" / "ZOOM0001.WAV"), "--model", "stub", "--src", "eng",
                     "--tgt", "deu", "--overwrite"]) == 2  # nothing to write over
    assert "--overwrite needs --out-dir" in capsys.readouterr().err
    (tmp_path / "day3").mkdir()  # a mistyped or missing input of that name fails alone: neither refused (it writes
    (tmp_path / "day3" / "other.wav").write_bytes((tmp_path / "day1" / "ZOOM0001.WAV").read_bytes())  # nothing)
    for more, rc in (((), 3), (("--skip-existing",), 3)):  # nor counted as translated again (other.wav: skipped,
        #   so it counts as done: exit 3, some failed)
        assert cli.main(["translate", str(tmp_path / "day3" / "other.wav"), str(tmp_path / "day2" / "ZOOM0001.WAV"),
                         "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt", "--out-dir", str(out),
                         *more]) == rc and srt.read_text() == day1
        err = capsys.readouterr().err
        assert "would overwrite" not in err and "translated again" not in err and "ZOOM0001.WAV" in err, err


def test_a_json_run_of_other_inputs_is_refused_before_it_replaces_their_results(tmp_path, monkeypatch, capsys):
    """--format json --out-dir D: a run of other inputs replaced D/results.json, every earlier result gone without a
    word (text, srt and vtt refuse to write over another input's file). Refused now before the model loads, a stopped
    run's results.partial.json too; the same inputs again (or more), and --overwrite, replace it as before."""
    from llm_srt import translate

    a, b, c = (str(tmp_path / f"{n}.wav") for n in "abc")
    for k, name in enumerate((a, b, c)):
        write_wav(name, tiny.tone(1.0 + 0.2 * k, 300 + 100 * k, seed=k))
    out = tmp_path / "out"

    def run(system, *more: str, to: Path = out) -> int:
        monkeypatch.setattr(translate, "translator_from_args", lambda args: SpeechTranslator(system) if system else
                            pytest.fail("the model loaded"))
        return cli.main(["translate", *more, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "json",
                         "--batch-size", "1", "--out-dir", str(to)])

    assert run(Stub(), a, b) == 0
    first = (out / "results.json").read_text()
    capsys.readouterr()
    assert run(None, a) == 2 and (out / "results.json").read_text() == first
    assert capsys.readouterr().err == (f"llm-srt translate: error: --out-dir: {out / 'results.json'} holds the result "
                                       f"of {b}, which this run does not translate; choose another --out-dir, or give "
                                       "--overwrite to replace it\n")
    assert run(Stub(), b, a) == 0 and run(Stub(), a, b, c) == 0  # the same inputs, or more: nothing is lost
    assert run(Stub(), a, "--overwrite") == 0 and [r["audio"] for r in json.loads((out / "results.json").read_text())
                                                  ] == [a]
    assert run(Stub(interrupt=2), a, b, to=tmp_path / "stopped") == 130  # b is done, then Ctrl-C
    assert run(None, c, to=tmp_path / "stopped") == 2 and "results.partial.json holds the result of " in (
        capsys.readouterr().err)
    assert run(Stub(), b, a, to=tmp_path / "stopped") == 0 and not (tmp_path / "stopped" / PARTIAL_JSON).exists()
    (out / "results.json").write_text("my notes\n")  # not this command's
    assert run(None, a) == 2 and "results.json holds no array of llm-srt results" in capsys.readouterr().err
    # the same input run again from another folder: each entry keeps its input's absolute "path" (an entry's
    #   "audio" is the path as given, relative to the earlier run's folder: it was refused as another input's)
    sub = tmp_path / "sub"
    sub.mkdir()
    write_wav(sub / "d.wav", tiny.tone(1.0, 300, seed=0))
    monkeypatch.chdir(sub)
    assert run(Stub(), "d.wav", to=sub / "out") == 0
    entries = json.loads((sub / "out" / "results.json").read_text())
    assert [(e["audio"], e["path"]) for e in entries] == [("d.wav", str(sub / "d.wav"))]
    monkeypatch.chdir(tmp_path)
    assert run(Stub(), "sub/d.wav", to=sub / "out") == 0
    for e in entries:  # an older results.json, without "path": an "audio" that names no file from here is no other
        del e["path"]
    (sub / "out" / "results.json").write_text(json.dumps(entries))
    assert run(Stub(), "sub/d.wav", to=sub / "out") == 0


def test_an_input_is_the_same_however_its_path_is_spelled_and_a_dataclass_system_runs(tmp_path, monkeypatch):
    """../d1/a.wav and its absolute path are one input for --skip-existing; a system that cannot be hashed (a
    dataclass) runs (the out-of-memory cap is kept per system where one can be)."""
    from dataclasses import dataclass

    from llm_srt import infer, out_files
    from llm_srt.model.protocol import Item

    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    write_wav(tmp_path / "d1" / "a.wav", recording(1.0, [(0.2, 0.8)]))
    monkeypatch.chdir(tmp_path / "d2")
    assert out_files.input_of("../d1/a.wav") == out_files.input_of(str(tmp_path / "d1" / "a.wav"))

    from llm_srt.model.protocol import Output

    @dataclass
    class Plain:  # eq=True: unhashable
        name: str = "plain"
        placement: object = None

        def run_batch(self, items, options):
            return [Output("heard", "gehört") for _ in items]

    out = infer.run_items(Plain(), [Item(tiny.tone(0.5, 300), "eng", "deu", Task.SRT)], OPTS)
    assert out[0] == Output("heard", "gehört")


def test_json_results_reach_stdout_when_results_json_cannot_be_written(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))

    class Racing(Stub):  # a folder where the file should go, made while the model runs (one before is refused)
        def run_batch(self, items, options):
            (tmp_path / "out" / "results.json").mkdir(parents=True, exist_ok=True)
            return super().run_batch(items, options)

    stub_cli(monkeypatch, Racing())
    rc = cli.main(["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu",
                   "--format", "json", "--out-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 3 and "results.json: cannot write the output (Is a directory)" in captured.err  # 2: refused
    assert json.loads(captured.out)[0]["audio"].endswith("a.wav")


def test_a_folder_given_as_an_input_is_named_with_the_pattern_that_gives_its_files(tmp_path, monkeypatch, capsys):
    (tmp_path / "talks").mkdir()
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    stub_cli(monkeypatch, Stub())
    assert cli.main(["translate", str(tmp_path / "talks"), str(tmp_path / "a.wav"), "--model", "stub", "--src",
                     "eng", "--tgt", "deu"]) == 3  # the other input is translated
    err = capsys.readouterr().err
    assert f"{tmp_path / 'talks'}: is a directory, not a file; name the files in it (a shell pattern: " \
           f"{tmp_path / 'talks'}/*)" in err


def test_a_long_input_whose_every_segment_cannot_run_cannot_run_either():
    """evaluate's journal keeps what cannot run (the whisper system into German) instead of decoding it again on
    every resume: an input cut into segments, every one of which cannot run, says so too; one with any other failure
    may succeed again."""
    from llm_srt.infer import SegmentResult, retryable, segments_error
    from llm_srt.model.protocol import CANNOT_RUN

    said = f"{CANNOT_RUN}the whisper system translates only into English (eng), not deu"
    both = [SegmentResult(0.0, 20.0, "", "", error=said), SegmentResult(20.0, 40.0, "", "", error=said)]
    assert segments_error(both).startswith(f"{CANNOT_RUN}2 of 2 segments failed") and not retryable(
        segments_error(both))
    mixed = [both[0], SegmentResult(20.0, 40.0, "", "", error="OutOfMemoryError: CUDA out of memory")]
    assert segments_error(mixed).startswith("2 of 2 segments failed") and retryable(segments_error(mixed))
    assert not retryable(segments_error(both[:1])) and retryable("RuntimeError: boom") and not retryable(None)


def test_line_width_is_checked_before_any_model_loads():
    import argparse

    from llm_srt import translate
    from llm_srt.errors import LLMSRTError

    parser = argparse.ArgumentParser()
    translate.add_arguments(parser)
    for bad in ("3", "-1"):
        args = parser.parse_args(["a.wav", "--model", "nowhere", "--src", "eng", "--tgt", "deu", "--format", "srt",
                                  "--line-width", bad])
        with pytest.raises(LLMSRTError, match=rf"--line-width {bad}: give 0 \(one unwrapped cue a segment\) or at "
                                              "least 10 columns"):
            translate.main(args)
    for bad in ("0", "-2"):  # translate() refused it only once the model had loaded
        args = parser.parse_args(["a.wav", "--model", "nowhere", "--src", "eng", "--tgt", "deu", "--batch-size", bad])
        with pytest.raises(LLMSRTError, match=rf"--batch-size {bad}: give at least 1"):
            translate.main(args)


def test_skip_existing_translates_again_when_the_model_folders_files_change(tmp_path, monkeypatch, capsys):
    """The record named the model by its folder's path alone: a model trained again into the same folder (or weights
    copied over it) left every output of the old one "up to date". The folder's files (names, sizes, times) are part
    of the settings now; the same folder left alone is still skipped."""
    stub = Stub()
    stub_cli(monkeypatch, stub)
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    model = tmp_path / "m"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "w.bin").write_bytes(b"1234")
    args = ["translate", str(tmp_path / "a.wav"), "--model", str(model), "--src", "eng", "--tgt", "deu", "--format",
            "srt", "--out-dir", str(tmp_path / "out"), "--skip-existing"]
    assert cli.main(args) == 0 and len(stub.batches) == 1
    assert cli.main(args) == 0 and len(stub.batches) == 1  # skipped
    (model / "sub" / "w.bin").write_bytes(b"12345")  # other weights in the same folder
    capsys.readouterr()
    assert cli.main(args) == 0 and len(stub.batches) == 2
    assert "1 of 1 inputs translated again: their files in" in capsys.readouterr().err
    assert cli.main(args) == 0 and len(stub.batches) == 2
    shared = tmp_path / "shared"  # weights behind a linked folder (a model folder's llm -> /shared/...) count too
    shared.mkdir()
    (shared / "llm.bin").write_bytes(b"1")
    (model / "llm").symlink_to(shared, target_is_directory=True)
    (model / "loop").symlink_to(model, target_is_directory=True)  # a link loop ends
    assert cli.main(args) == 0 and len(stub.batches) == 3
    (shared / "llm.bin").write_bytes(b"22")
    assert cli.main(args) == 0 and len(stub.batches) == 4
    assert cli.main(args) == 0 and len(stub.batches) == 4


def test_an_input_keeps_its_place_in_out_dir_when_run_again_with_other_inputs(tmp_path, monkeypatch):
    """Outputs are placed by the folder the inputs given share: a.wav with b.wav went to OUT/d1/a.srt, a.wav alone
    (the input that failed, run again) to OUT/a.srt, beside the first run's files, and --skip-existing did not see
    it. An input recorded in the folder keeps its place."""
    def rows(stub: Stub) -> int:
        return sum(map(len, stub.batches))

    stub = Stub()
    stub_cli(monkeypatch, stub)
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        write_wav(tmp_path / d / f"{d}.wav", recording(3.0, [(0.5, 2.5)]))
    one, two = str(tmp_path / "d1" / "d1.wav"), str(tmp_path / "d2" / "d2.wav")
    out = tmp_path / "out"
    base = ["--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt", "--out-dir", str(out)]
    assert cli.main(["translate", one, two, *base]) == 0 and rows(stub) == 2
    assert cli.main(["translate", one, *base, "--skip-existing"]) == 0 and rows(stub) == 2  # skipped
    assert cli.main(["translate", one, *base]) == 0 and rows(stub) == 3  # translated again, in its place
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.srt")) == ["d1/d1.srt", "d2/d2.srt"]
    three = tmp_path / "d1" / "new.wav"  # a new input still goes where the inputs given with it place it
    write_wav(three, recording(3.0, [(0.5, 2.5)]))
    assert cli.main(["translate", one, str(three), *base, "--skip-existing"]) == 0 and rows(stub) == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.srt")) == ["d1/d1.srt", "d2/d2.srt", "new.srt"]


def test_the_exit_code_says_some_inputs_failed_and_a_failed_inputs_stale_output_goes(tmp_path, monkeypatch,
                                                                                      capsys):
    """Some inputs failing, whole or in part, was exit 0, as if all had gone well (a script went on without them);
    it is 3 now (1 when none was translated). An input that fails whole kept an earlier run's output of other audio
    beside this run's files, without a word: it is removed, and the line says so."""
    from llm_srt.translate import SOME_FAILED

    stub = Stub(fails=lambda item: item.audio.size < 1.5 * SR)
    stub_cli(monkeypatch, stub)
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    write_wav(tmp_path / "b.wav", recording(3.0, [(0.5, 2.5)]))
    write_wav(tmp_path / "part.wav", recording(9.0, [(0.5, 2.5), (5.0, 6.0)]))  # its short segment fails
    out = tmp_path / "out"
    base = ["--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt", "--out-dir", str(out)]
    files = [str(tmp_path / n) for n in ("a.wav", "b.wav")]
    assert cli.main(["translate", *files, *base]) == 0 and (out / "b.srt").is_file()
    (tmp_path / "b.wav").write_bytes(b"RIFF\x00\x00")  # other audio, which fails
    capsys.readouterr()
    assert cli.main(["translate", *files, *base]) == SOME_FAILED == 3
    assert not (out / "b.srt").exists() and (out / "a.srt").is_file()
    assert (f"{out / 'b.srt'}, an earlier run's output, removed: this run translated that input again, from other "
            "audio or with other settings, and failed") in capsys.readouterr().err
    assert cli.main(["translate", files[0], str(tmp_path / "part.wav"), *base]) == 3  # one failed in part
    assert cli.main(["translate", files[1], *base]) == 1  # none translated


def test_an_input_that_fails_whole_removes_only_its_own_earlier_output(tmp_path, monkeypatch, capsys):
    """A review: a failed input removed whatever file had its output's name and another record. Kept now: a file
    without a record (the user's own talk.srt), another input's output (d1/a.wav's a.srt, when d2/a.wav fails), and
    the output of an input whose audio is gone (moved, a mount down: the file may be its only text)."""
    stub = Stub()
    stub_cli(monkeypatch, stub)
    base = ["--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt"]
    (tmp_path / "talk.wav").write_bytes(b"RIFF\x00\x00")  # the user's own subtitles beside a damaged recording
    (tmp_path / "talk.srt").write_text("mine\n")
    assert cli.main(["translate", str(tmp_path / "talk.wav"), *base, "--out-dir", str(tmp_path)]) == 1
    assert (tmp_path / "talk.srt").read_text() == "mine\n"
    out = tmp_path / "out"
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        write_wav(tmp_path / d / "a.wav", recording(3.0, [(0.5, 2.5)]))
    assert cli.main(["translate", str(tmp_path / "d1" / "a.wav"), *base, "--out-dir", str(out)]) == 0
    written = (out / "a.srt").read_text()
    (tmp_path / "d2" / "a.wav").write_bytes(b"RIFF\x00\x00")
    # --overwrite: without it, the run is refused before d2/a.wav is read (d1/a.wav wrote a.srt)
    assert cli.main(["translate", str(tmp_path / "d2" / "a.wav"), *base, "--out-dir", str(out), "--overwrite"]) == 1
    assert (out / "a.srt").read_text() == written  # d1's
    (tmp_path / "d1" / "a.wav").rename(tmp_path / "moved.wav")
    capsys.readouterr()
    assert cli.main(["translate", str(tmp_path / "d1" / "a.wav"), *base, "--out-dir", str(out)]) == 1
    assert (out / "a.srt").read_text() == written and "removed" not in capsys.readouterr().err


def test_a_clip_of_speech_throughout_as_long_as_the_longest_segment_goes_whole():
    """README: a clip that is speech throughout goes to the model whole; one of 30.0 s (7.0 s with
    max_seconds=7) was cut in two (29.227 + 0.773 s), room kept for padding past the clip's edges."""
    from llm_srt.segment import SegmentOptions

    for seconds, options in ((30.0, SegmentOptions()), (29.95, SegmentOptions()),
                             (7.0, SegmentOptions(max_seconds=7.0))):
        stub = Stub()
        [r] = SpeechTranslator(stub).translate([recording(seconds, [(0.0, seconds)])], "eng", "deu",
                                               segment_options=options)
        assert [(s.start, s.end) for s in r.segments] == [(0.0, seconds)] and stub.batches == [[round(seconds * SR)]]


def test_max_segment_seconds_help_says_a_segment_may_give_several_cues():
    import argparse

    from llm_srt import infer

    parser = argparse.ArgumentParser()
    infer.add_segment_argument(parser)
    [text] = [a.help for a in parser._actions if "--max-segment-seconds" in a.option_strings]
    assert "is its own srt/vtt cue or cues" in text and "is one srt/vtt cue" not in text


@pytest.mark.parametrize("extra,message", [
    (["--src", "eng", "--tgt", "deutsch"], "--tgt: unknown language code 'deutsch': use one of deu, eng"),
    (["--src", "english", "--tgt", "deu"], "--src: unknown language code 'english': use one of deu, eng"),
    (["--src", "eng", "--tgt", "auto"], "--tgt: unknown language code 'auto'"),
    (["--src", "eng"], "task srt needs a target language (--tgt)"),
    (["--src", "eng", "--tgt", "deu", "--task", "smt"], "task smt needs one transcript per input (--transcript)"),
    (["--src", "eng", "--tgt", "deu", "--task", "smt", "--transcript", "a", "--transcript", "b"],
     "--transcript: 2 transcripts for 1 inputs; give one per input"),
], ids=["tgt", "src", "tgt-auto", "no-tgt", "smt-no-transcript", "transcripts"])
def test_languages_and_transcripts_are_checked_before_the_model_loads(tmp_path, monkeypatch, capsys, extra, message):
    """A typo in --tgt or --src, or a --transcript count that does not match, was refused by translate(), after the
    model had loaded (minutes for a 7B model); and the message did not name the option."""
    from llm_srt import translate

    def load(args):
        raise AssertionError("the model loaded before the options were checked")

    monkeypatch.setattr(translate, "translator_from_args", load)
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    assert cli.main(["translate", str(tmp_path / "a.wav"), "--model", "stub", *extra]) == 2
    assert capsys.readouterr().err.startswith(f"llm-srt translate: error: {message}")
    stub_cli(monkeypatch, Stub())
    assert cli.main(["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "auto", "--tgt", "deu"]) == 0
    heard = [line for line in capsys.readouterr().err.splitlines() if "heard as" in line]  # else said in json only
    assert len(heard) == 1 and heard[0].endswith("a.wav: source language heard as eng (--src auto)"), heard


def test_text_mt_takes_task_smt_alone_and_is_refused_before_it_loads(tmp_path, monkeypatch, capsys):
    """`--model mt` under the default task (auto: srt) loaded the LLM, then failed every input ("the text MT system
    translates given transcripts only"), exit 1. Any task but smt is refused before anything loads, exit 2."""
    from llm_srt import translate

    loaded = []

    def load(args):
        loaded.append(args.task)
        raise LLMSRTError("loaded")

    monkeypatch.setattr(translate, "translator_from_args", load)
    write_wav(tmp_path / "a.wav", recording(3.0, [(0.5, 2.5)]))
    run = ["translate", str(tmp_path / "a.wav"), "--model", "mt", "--src", "eng", "--tgt", "deu"]
    for task in ([], ["--task", "auto"], ["--task", "srt"], ["--task", "asr+smt"]):
        assert cli.main([*run, *task]) == 2 and loaded == []
        told = task[1] if task else "auto"
        assert capsys.readouterr().err == (f"llm-srt translate: error: --model mt translates given transcripts (text "
                                           f"MT), and --task {told} reads the audio; give --task smt with one "
                                           "--transcript per input, or --model cascade for speech\n")
    assert cli.main([*run, "--task", "smt", "--transcript", "Hello."]) == 2 and loaded == ["smt"]  # (it loads)


def test_the_summary_counts_an_input_failed_in_part_among_the_translated_as_such(tmp_path, monkeypatch, capsys):
    """An input failed in part was "translated" in the first summary line and "failed in part" in the next."""
    talk = recording(20.0, [(0.5, 3.5), (6.0, 9.0), (12.0, 14.5)])  # three phrases apart: three segments
    write_wav(tmp_path / "talk.wav", talk)
    (tmp_path / "bad.wav").write_bytes(b"junk")
    stub_cli(monkeypatch, Stub(fails=lambda item: item.audio.size > 3.05 * SR))  # the first two segments
    files = [str(tmp_path / "talk.wav"), str(tmp_path / "bad.wav")]
    assert cli.main(["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",
                     "--out-dir", str(tmp_path / "out")]) == 3
    summary = capsys.readouterr().err.splitlines()[-2:]
    assert summary[0] == ("llm-srt translate: 1 of 2 inputs failed (named above); the other 1 translated (1 of them "
                          "in part)")
    assert summary[1].startswith("llm-srt translate: 1 of 2 inputs failed in part (named above)")


def test_a_transcript_holding_a_tag_or_special_token_fails_its_input_only():
    """An SMT transcript holding `<|deu|>` or `</s>` went into the prompt as that token (a language switch or an
    end); manifests refuse such text, `--transcript` did not. Now the input fails with the token named, the others
    are translated."""
    clip = recording(3.0, [(0.5, 2.5)])
    results = SpeechTranslator(Stub()).translate([clip] * 3, "eng", "deu", task="smt",
                                                 transcripts=["hello<|deu|>world", "hello</s>", "hello <| deu |>"])
    assert "'<|deu|>'" in results[0].error and "remove it from the transcript" in results[0].error
    assert "'</s>'" in results[1].error
    assert results[2].error is None and results[2].translation


def test_translate_makes_device_cuda_n_the_current_gpu_before_the_model_loads(monkeypatch):
    """`translate --device cuda:1`: --compile's CUDA graphs and library handles ran on cuda:0 (evaluate and serve
    made the model's GPU current; translate did not)."""
    import argparse

    from llm_srt import device, infer

    made = []
    monkeypatch.setattr(torch.cuda, "set_device", made.append)
    monkeypatch.setattr(device, "resolve", lambda spec, dtype: device.Placement(torch.device("cuda", 1),
                                                                                 torch.bfloat16))
    monkeypatch.setattr(SpeechTranslator, "from_pretrained", classmethod(lambda cls, *a, **k: made.append("loaded")))
    args = argparse.Namespace(model="m", device="cuda:1", dtype="auto", llm=None, whisper=None, encoder=None)
    infer.translator_from_args(args)
    assert made == [torch.device("cuda", 1), "loaded"]


# ---- --task auto: what the model folder was trained for ------------------------------------------------------------
def test_translate_without_task_runs_what_the_folder_was_trained_for(model_dir, clips, tmp_path, capsys):
    """A Baseline (S2TT-trained) folder run without --task gave task "srt": its German translation reported as the
    transcript, forced tags, then text to the token cap as the translation. `--task auto`, the default, is the
    folder's training (its train_config.json): s2tt here, asr for an ASR stage; srt for a folder without one, as
    before. Said once on stderr where it is not srt."""
    run = ["translate", clips[1], "--src", "eng", "--tgt", "deu", "--format", "json", "--max-new-tokens", "10"]
    for name, tasks, task in (("s2tt", {"s2tt": 1.0}, "s2tt"), ("asr", {"asr": 1.0}, "asr"),
                              ("reference", None, "srt")):
        folder = tiny.trained_folder(model_dir, tmp_path / name, tasks)
        assert cli.main([*run, "--model", str(folder)]) == 0
        out, err = capsys.readouterr()
        [auto] = json.loads(out)
        assert cli.main([*run, "--model", str(folder), "--task", task]) == 0  # an explicit --task as before
        [named] = json.loads(capsys.readouterr().out)
        assert auto["task"] == task and auto == named, name
        said = (f"llm-srt translate: --task auto: {task}, what {folder} was trained for (its training record); "
                "give --task to run another\n")
        assert (said in err) == (task != "srt"), err
    assert auto["transcript"] and auto["translation"]  # (srt: the tiny model writes both)
    for name, told in (("s2tt", "srt"), ("srt", "s2tt")):  # the other of the one prompt: said (German came for fra)
        folder = tmp_path / name if name == "s2tt" else tiny.trained_folder(model_dir, tmp_path / name, {"srt": 1.0})
        assert cli.main([*run, "--model", str(folder), "--task", told]) == 0
        assert (f"llm-srt translate: warning: --task {told}, but {folder} was trained for {name}, not {told} (its "
                "training record)") in capsys.readouterr().err
    both = tiny.trained_folder(model_dir, tmp_path / "both", {"srt": 0.5, "s2tt": 0.5})  # trained on both: nothing
    tiny.trained_folder(model_dir, tmp_path / "unread", None)
    (tmp_path / "unread" / "train_config.json").write_text("{not json")  # the task given is run as asked
    for folder in (tmp_path / "reference", both, tmp_path / "unread"):  # (no record: nothing either)
        assert cli.main([*run, "--model", str(folder), "--task", "s2tt"]) == 0, folder
        assert "warning" not in capsys.readouterr().err
    s2tt = json.loads((cli.main([*run, "--model", str(tmp_path / "s2tt")]), capsys.readouterr().out)[1])[0]
    assert s2tt["forced_tags"] is False and s2tt["transcript"] == "" and s2tt["translation"]
    # the Python API's default is auto too, per input beside explicit tasks
    t = SpeechTranslator.from_pretrained(tmp_path / "s2tt")
    [r] = t.translate([clips[1]], "eng", "deu", options=DecodingOptions(max_new_tokens=10))
    assert r.task == "s2tt" and r.translation == s2tt["translation"]
    assert [r.task for r in t.translate(clips[:2], "eng", "deu", task=["auto", "srt"], options=OPTS)] == ["s2tt",
                                                                                                          "srt"]


def test_subtitles_auto_cannot_write_are_refused_before_the_model_loads(model_dir, clips, tmp_path, monkeypatch,
                                                                         capsys):
    """`--subtitles transcript` of a Baseline folder without --task: auto is s2tt, which writes no transcript,
    refused as `--task s2tt` is, before the model loads (the folder's train_config.json is read first); a
    train_config.json that cannot be read is a one-line error there too."""
    from llm_srt import translate

    def load(args):
        raise AssertionError("the model loaded before the task was checked")

    monkeypatch.setattr(translate, "translator_from_args", load)
    folder = tiny.trained_folder(model_dir, tmp_path / "s2tt", {"s2tt": 1.0})
    run = ["translate", clips[0], "--model", str(folder), "--src", "eng", "--tgt", "deu", "--format", "vtt"]
    assert cli.main([*run, "--subtitles", "transcript"]) == 2
    assert capsys.readouterr().err.endswith("llm-srt translate: error: --task s2tt writes no transcript, so "
                                            "--subtitles transcript would give vtt files without a cue; use "
                                            "--subtitles both, or --task srt for both texts\n")
    (folder / "train_config.json").write_text("{")
    assert cli.main([*run, "--task", "auto"]) == 2
    assert capsys.readouterr().err == (f"llm-srt translate: error: {folder}/train_config.json: cannot read the tasks "
                                       "the model was trained on (not JSON); give the task (--task, a request's "
                                       "task), or fix or remove the file (a folder without it runs srt)\n")


def test_translate_help_lists_auto_and_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["translate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--task {auto,asr," in text and "auto (default): what the model folder was trained for" in text


def test_between_batches_gets_the_share_of_the_whole_call_across_its_groups(monkeypatch):
    """translate() runs its inputs in groups of PENDING_SECONDS of audio, and `between_batches` was handed run_items'
    share of the group running: a server's batch spanning groups (--max-queued-seconds over 7200) took 2/3 for
    "12 of 14 s left" and 1/2 for "4 of 14 s left", and let a request longer than the batch's rest run ahead of it.
    Now it is the whole call's share: the groups to come count in it, the groups done do not."""
    from llm_srt import infer

    monkeypatch.setattr(infer, "PENDING_SECONDS", 6.0)  # groups: the 2 s and 4 s clips, then the two of 4 s
    shares = []
    clips = [recording(s, [(0.0, s)], seed=i) for i, s in enumerate([4.0, 2.0, 4.0, 4.0])]
    results = SpeechTranslator(Stub()).translate(clips, "eng", "deu", batch_size=1, shortest_first=True,
                                                 between_batches=shares.append)
    assert [len(r.segments) for r in results] == [1, 1, 1, 1] and not any(r.error for r in results)
    assert shares == pytest.approx([12 / 14, 8 / 14, 4 / 14])  # 8/14: between the groups (see the test below)


class _Ordered(Stub):
    """A Stub that logs its model calls and language IDs in `events`, beside its caller's `between_batches`."""

    def __init__(self, events: list):
        super().__init__()
        self.events = events

    def run_batch(self, items, options):
        self.events.append(("call", len(items)))
        return super().run_batch(items, options)

    def detect_language(self, audio):
        self.events.append(("lid", round(audio.size / SR)))
        return super().detect_language(audio)


def test_a_waiting_request_may_run_ahead_where_one_group_ends_and_the_next_begins(monkeypatch):
    """`between_batches` ran only between two batches inside one of translate()'s groups (PENDING_SECONDS of audio,
    2 h): where a group ended, the next group's inputs were decoded, heard by language ID and run a first batch
    before a server could run the short request waiting meanwhile, and a group that fits one batch never let it in.
    Now it is called before each later group, with the share of the call then left."""
    from llm_srt import infer

    monkeypatch.setattr(infer, "PENDING_SECONDS", 6.0)  # groups: the 4 s and 2 s clips, then the two of 4 s
    events: list = []
    clips = [recording(s, [(0.0, s)], seed=i) for i, s in enumerate([4.0, 2.0, 4.0, 4.0])]
    results = SpeechTranslator(_Ordered(events)).translate(
        clips, "auto", "deu", batch_size=2, shortest_first=True,
        between_batches=lambda left: events.append(("between", round(left * 14))))
    assert not any(r.error for r in results)
    assert events == [("lid", 4), ("lid", 2), ("call", 2), ("between", 8), ("lid", 4), ("lid", 4), ("call", 2)]


def test_an_input_given_as_the_bytes_of_a_file_is_named_as_bytes_not_as_an_array():
    """translate() named every input that is not a path "<array i>", so the bytes of a file that would not decode
    failed as "<array 0>: cannot decode audio", which sent its caller looking for a bad array."""
    good = np.zeros(SR, np.float32)
    results = SpeechTranslator(Stub()).translate([b"not audio at all", good, bytearray(b"nor this")], "eng", "deu")
    assert [r.audio for r in results] == ["<bytes 0>", "<array 1>", "<bytes 2>"]
    assert results[0].error.startswith("<bytes 0>: cannot decode audio") and results[1].error is None
    assert results[2].error.startswith("<bytes 2>: ")


class _SaysInLines(Stub):
    """A system whose error (an LLMSRTError quoting another error of several lines) has three lines: in its batches
    (`where` "batch") or in its language ID ("lid")."""

    MESSAGE = "shard 2: shape mismatch:\n  encoder.conv1.weight is (2, 3)\n\ngive the folder it was trained with"

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def run_batch(self, items, options):
        if self.where == "batch":
            raise LLMSRTError(self.MESSAGE)
        return super().run_batch(items, options)

    def detect_language(self, audio):
        if self.where == "lid":
            raise LLMSRTError(self.MESSAGE)
        return "eng"


def test_an_error_of_several_lines_is_one_line_in_a_row():
    """error_line gave an LLMSRTError's message as it was: one quoting an error of several lines was a row error of
    several lines (results.json, the report's rows, a server's JSON and its X-LLM-SRT-Error header)."""
    from llm_srt.infer import error_line, run_items

    one = "shard 2: shape mismatch: encoder.conv1.weight is (2, 3) give the folder it was trained with"
    assert error_line(LLMSRTError(_SaysInLines.MESSAGE)) == one
    items = [Item(tiny.tone(1.0, 300), "eng", "deu", Task.SRT)]
    assert [o.error for o in run_items(_SaysInLines("batch"), items, OPTS)] == [one]
    speech = recording(2.0, [(0.0, 2.0)])
    for where, src in (("batch", "eng"), ("lid", "auto")):
        result, = SpeechTranslator(_SaysInLines(where)).translate([speech], src, "deu", options=OPTS)
        assert one in result.error and "\n" not in result.error, (where, result.error)
