"""translate / evaluate on a tiny random SpeechLLM saved to a folder, and the baselines on the embedded Whisper."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny
from llm_srt import cli
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator, max_new_tokens
from llm_srt.model.decoding import DecodingOptions
from llm_srt.prompts import Task

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


def test_bad_file_is_reported_and_the_rest_translated(model_dir, clips, tmp_path, capsys):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00")
    files = [clips[0], str(junk), str(tmp_path / "missing.flac"), clips[1]]
    rc = cli.main(["translate", *files, "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--format", "json",
                   "--max-new-tokens", "8"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["audio"] for r in out] == files
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


def test_output_length_is_capped_by_duration():
    assert max_new_tokens(2.0, Task.ASR, 256) < max_new_tokens(2.0, Task.SRT, 256) < max_new_tokens(10, Task.SRT, 256)
    assert max_new_tokens(600, Task.SRT, 256) == 256


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
    assert len(hyps) == len(rows) and {(h["src"], h["tgt"]) for h in hyps} == {("eng", "deu"), ("deu", "eng"),
                                                                              ("eng", "eng")}


@pytest.mark.integration
def test_whisper_baseline_transcribes_and_detects_english(embedded, speak):
    from llm_srt import device
    from llm_srt.evaluate.metrics import wer
    from llm_srt.model.systems import detect_language

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
    assert [r.to_dict() for r in t.translate(clips[:2], "eng", "deu", options=DecodingOptions(max_new_tokens=8))] \
        == out


def test_a_moved_model_folder_is_repointed_with_encoder_and_llm(model_dir, clips, tmp_path):
    import shutil

    config = json.loads((model_dir / "config.json").read_text())
    moved = {key: tmp_path / f"moved-{key}" for key in ("encoder", "llm")}
    for key, dst in moved.items():
        shutil.copytree(config[key], dst)
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "config.json").write_text(json.dumps(config | {"encoder": "/gone/whisper", "llm": "/gone/llm"}))
    with pytest.raises(LLMSRTError, match="/gone/"):
        SpeechTranslator.from_pretrained(folder, device="cpu")
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
    assert (out / "a" / "x.srt").read_text(encoding="utf-8") != "" and "translate:" not in capsys.readouterr().err

    shutil.copy(clips[3], tmp_path / "a" / "x.flac")
    assert cli.main(["translate", str(inputs[0]), str(tmp_path / "a" / "x.flac"), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"llm-srt translate: error: --out-dir: {inputs[0]} and {tmp_path / 'a' / 'x.flac'} would both "
                   f"write {out / 'x.srt'}; rename one, or translate them in separate runs")


def test_inputs_are_run_in_groups_so_memory_does_not_grow_with_their_number(model_dir, clips, monkeypatch):
    """With a 1.5 s budget the four clips (0.7, 1.6, 1.1, 2.0 s) run as two groups of two, each decoded only when
    its group comes; the results are those of one group."""
    from llm_srt import infer

    t = SpeechTranslator.from_pretrained(model_dir)
    whole = [r.to_dict() for r in t.translate(clips, "eng", "deu", options=OPTS, batch_size=4)]
    loaded, groups = [], []
    real_load, real_run = infer.load_audio, infer.run_items
    monkeypatch.setattr(infer, "load_audio", lambda x, **kw: (loaded.append(x), real_load(x, **kw))[1])
    monkeypatch.setattr(infer, "run_items", lambda system, items, *a: (groups.append((len(loaded), len(items))),
                                                                       real_run(system, items, *a))[1])
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

    def run_items(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args)

    monkeypatch.setattr(infer, "run_items", run_items)
    monkeypatch.setattr(infer, "PENDING_SECONDS", 1.5)  # groups: clips 0-1, then 2-3
    out = tmp_path / "out"
    rc = cli.main(["translate", *clips, "--model", str(model_dir), "--src", "eng", "--tgt", "deu",
                   "--max-new-tokens", "4", "--format", "srt", "--out-dir", str(out)])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["c0.srt", "c1.srt"]


def test_skip_existing_goes_on_from_an_interrupted_run(model_dir, clips, tmp_path, monkeypatch, capsys):
    """A run stopped in its second group, then the same command with --skip-existing: only the inputs without
    their file are translated, and the files are those of one uninterrupted run; no half-written file is left."""
    from llm_srt import infer

    args = ["translate", *clips, "--model", str(model_dir), "--src", "eng", "--tgt", "deu", "--max-new-tokens", "4",
            "--format", "srt"]
    assert cli.main([*args, "--out-dir", str(tmp_path / "whole")]) == 0
    real_run, items = infer.run_items, []

    def run_items(system, batch, *rest):
        items.extend(batch)
        if len(items) > 2 and stop:
            raise KeyboardInterrupt
        return real_run(system, batch, *rest)

    monkeypatch.setattr(infer, "run_items", run_items)
    monkeypatch.setattr(infer, "PENDING_SECONDS", 1.5)  # groups: clips 0-1, then 2-3
    stop = True
    assert cli.main([*args, "--out-dir", str(tmp_path / "r")]) == 130
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["c0.srt", "c1.srt"]
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
    assert not list((tmp_path / "r").glob("*.part"))
    assert cli.main([*args, "--format", "json", "--out-dir", str(tmp_path / "j"), "--skip-existing"]) == 2
    assert "--skip-existing needs --out-dir and --format text, srt or vtt" in capsys.readouterr().err
