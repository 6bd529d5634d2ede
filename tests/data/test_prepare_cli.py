import json
import shutil
from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.data.manifest import read_manifest

SENTENCES = {
    "The file could not be opened.": "Die Datei konnte nicht geöffnet werden.",
    "Please try again later.": "Bitte versuchen Sie es später erneut.",
    "The password is too short.": "Das Passwort ist zu kurz.",
    "The operation was cancelled by the user.": "Der Vorgang wurde vom Benutzer abgebrochen.",
}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_prepare_mini_survey_build_and_check(tmp_path, mo_file, capsys):
    locale = tmp_path / "locale"
    mo_file(locale / "de" / "LC_MESSAGES" / "app.mo", SENTENCES)
    assert cli.main(["prepare", "mini", "--survey", "--locale-dir", str(locale)]) == 0
    survey = capsys.readouterr().out
    assert "deu  German" in survey and "4 sentences paired with English" in survey
    out = tmp_path / "mini"
    rc = cli.main(["prepare", "mini", "--out", str(out), "--locale-dir", str(locale), "--langs", "eng,deu",
                   "--train", "2", "--dev", "1", "--test", "1", "--audio-format", "wav"])
    printed = capsys.readouterr().out
    assert rc == 0 and "sentences per split: train 2, dev 1, test 1" in printed and "hours of speech" in printed
    assert len(list((out / "audio" / "deu").glob("*.wav"))) == 4
    assert cli.main(["prepare", "check", str(out / "train.jsonl")]) == 0
    assert "8 rows ok: 4 ASR" in capsys.readouterr().out
    # --unseen-test takes test sentences after train, skipping the ids --unseen-by lists
    first, second = dict.fromkeys(r.sentence_id for r in read_manifest(out / "train.jsonl"))
    (tmp_path / "seen.txt").write_text(first + "\n")
    rc = cli.main(["prepare", "mini", "--out", str(tmp_path / "unseen"), "--locale-dir", str(locale), "--langs",
                   "eng,deu", "--train", "0", "--dev", "1", "--test", "1", "--unseen-test", "1", "--unseen-by",
                   str(tmp_path / "seen.txt")])
    assert rc == 0 and "test 2 (1 of the test sentences taken after train" in capsys.readouterr().out
    test = {r.sentence_id for r in read_manifest(tmp_path / "unseen" / "test.jsonl")}
    assert second in test and first not in test
    # the voice options reach the build: --augment records an augmentation ("augment") for train clips only
    # (voices.jsonl)
    rc = cli.main(["prepare", "mini", "--out", str(tmp_path / "aug"), "--locale-dir", str(locale), "--langs",
                   "eng,deu", "--train", "2", "--dev", "1", "--test", "1", "--audio-format", "wav", "--augment",
                   "--augment-p", "1"])
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "aug" / "voices.jsonl").read_text().splitlines()]
    train = {r.audio for r in read_manifest(tmp_path / "aug" / "train.jsonl")}
    augmented = {r["audio"] for r in records if r.get("augment")}
    assert augmented and all(any(a.endswith(Path(t).name) for t in train) for a in augmented)


def test_prepare_check_reports_bad_rows_and_exits_1(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x"}) + "\n", encoding="utf-8")
    assert cli.main(["prepare", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llm-srt prepare: error:") and f"{path}:1: missing field(s)" in err


def _manifest_row(i, duration=2.0, split="train", **over):
    row = {"id": f"u{i}", "audio": "a.wav", "duration": duration, "src_lang": "eng", "transcript": "Hello.",
           "tgt_lang": "", "translation": "", "split": split, "corpus": "test", "sentence_id": str(i)}
    return {**row, **over}


def test_prepare_check_names_the_rows_training_refuses_and_checks_every_manifest(tmp_path, capsys):
    """A 40 s row (or a text longer than its clip can hold) gave "1 rows ok", though training refuses it; and the
    first bad manifest stopped the check, the others never read. Each manifest is checked, each row training would
    refuse named by file:line; a test manifest keeps its long clips (prepare writes them), noted only."""
    def write(name, rows):
        lines = (r if isinstance(r, str) else json.dumps(r) for r in rows)
        (tmp_path / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return str(tmp_path / name)

    broken = write("broken.jsonl", ['{"id": "x'])
    train = write("train.jsonl", [_manifest_row(1), _manifest_row(2, duration=40.0),
                                  _manifest_row(3, transcript="y" * 501, duration=0.5)])
    test = write("test.jsonl", [_manifest_row(1, split="test"), _manifest_row(2, duration=40.0, split="test")])
    devtest = write("devtest.jsonl", [_manifest_row(1, split="devtest"), _manifest_row(2, duration=42.0,
                                                                                         split="devtest")])
    good = write("good.jsonl", [_manifest_row(1), _manifest_row(2, tgt_lang="deu", translation="Hallo.")])
    assert cli.main(["prepare", "check", "--no-check-audio", broken, train, test, good]) == 1
    out, err = capsys.readouterr()
    assert f"llm-srt prepare: error: {broken}: 1 bad row(s)" in err and f"{broken}:1: not valid JSON" in err
    assert (f"llm-srt prepare: error: {train}: 2 of its 3 rows `llm-srt train` refuses; fix or drop them, or skip "
            f"them (train data.skip_bad=true):\n  {train}:2: 40 s is longer than the 30 s a training utterance may "
            "last (Whisper's window)") in err
    assert f"\n  {train}:3: transcript has 501 characters, more than 0.5 s of speech can hold" in err
    assert "llm-srt prepare: 2 of 4 manifests are bad (named above)" in err
    assert f"{train}: " not in out and f"{test}: 2 rows ok" in out and f"{good}: 2 rows ok: 1 ASR" in out
    assert (f"{test}: 1 row of test `llm-srt train` would refuse (evaluation reads them), the first: {test}:2: 40 s"
            in out)
    assert cli.main(["prepare", "check", "--no-check-audio", test, good, devtest]) == 0  # a corpus's own split name
    assert f"{devtest}: 1 row of devtest `llm-srt train` would refuse" in capsys.readouterr().out
    validation = write("validation.jsonl", [_manifest_row(1, split="validation"),
                                            _manifest_row(2, duration=40.0, split="validation")])
    assert cli.main(["prepare", "check", "--no-check-audio", validation]) == 1  # training reads any other split's
    assert f"{validation}:2: 40 s is longer than the 30 s" in capsys.readouterr().err


def test_prepare_check_names_the_rows_training_refuses_beside_bad_rows(tmp_path, capsys):
    """A manifest with a bad row (an unknown language) was named for it alone: its 40 s train row, which training
    refuses, came to light only once that row was fixed and the check run again. Both are named, exit 1."""
    path = tmp_path / "mixed.jsonl"
    rows = [_manifest_row(1, src_lang="xx"), _manifest_row(2, duration=40.0), _manifest_row(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert cli.main(["prepare", "check", "--no-check-audio", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"llm-srt prepare: error: {path}: 1 bad row(s)" in err and f"\n  {path}:1: src_lang 'xx'" in err
    assert (f"llm-srt prepare: error: {path}: 1 of its 2 other rows `llm-srt train` refuses; fix or drop them, or "
            f"skip them (train data.skip_bad=true):\n  {path}:2: 40 s is longer than the 30 s") in err
    assert out == "" and "skipped" not in err and "manifests are bad" not in err  # (one manifest, said once)


def test_prepare_check_counts_one_row_in_the_singular(tmp_path, capsys):
    """prepare check said "1 rows ok", "1 translation rows", "1 rows of test ... would refuse" and "1 of its 1
    rows": one row is "1 row" (data.clips.counted), more are "rows"."""
    def check(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        code = cli.main(["prepare", "check", "--no-check-audio", str(path)])
        return code, path, *capsys.readouterr()

    code, path, out, _ = check("one.jsonl", [_manifest_row(1, tgt_lang="deu", translation="Hallo.")])
    assert code == 0 and out.startswith(f"{path}: 1 row ok: 0 ASR (0.00 h), 1 translation row in 1 directions\n")
    code, path, out, _ = check("two.jsonl", [_manifest_row(1), _manifest_row(2, split="test", duration=40.0)])
    assert code == 0 and f"{path}: 2 rows ok: 2 ASR" in out and ", 0 translation rows in 0 directions\n" in out
    assert f"{path}: 1 row of test `llm-srt train` would refuse (evaluation reads them), the first: {path}:2:" in out
    code, path, _, err = check("long.jsonl", [_manifest_row(1, duration=40.0)])
    assert code == 1 and f"error: {path}: 1 of its 1 row `llm-srt train` refuses; fix or drop them" in err
    code, path, _, err = check("mixed.jsonl", [_manifest_row(1, src_lang="xx"), _manifest_row(2, duration=40.0)])
    assert code == 1 and f"error: {path}: 1 of its 1 other row `llm-srt train` refuses; fix or drop them" in err


def test_splits_are_read_with_spaces_and_checked(tmp_path, capsys):
    from llm_srt.data.prepare import _splits

    assert _splits("train, dev") == ("train", "dev") and _splits("test,test,") == ("test",)
    assert cli.main(["prepare", "commonvoice", "--locale-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--splits", "train,validation"]) == 2
    assert "--splits 'train,validation': name splits among train, dev, test" in capsys.readouterr().err


def test_prepare_fleurs_needs_a_root(tmp_path, capsys):
    assert cli.main(["prepare", "fleurs", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no FLEURS locale folders" in capsys.readouterr().err


def test_prepare_covost2_skips_a_bad_clip_and_strict_stops(tmp_path, audio_file, mp3_format, layouts, capsys):
    cv = tmp_path / "cv4-en"  # Common Voice 4 archives extract without a locale folder name
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": "c1", "path": "common_voice_en_1.mp3", "sentence": "Hello."},
                            {"client_id": "c2", "path": "common_voice_en_2.mp3", "sentence": "Bye."},
                            {"client_id": "c3", "path": "common_voice_en_3.mp3", "sentence": "See you."}])
    for clip in ("common_voice_en_1.mp3", "common_voice_en_3.mp3"):
        audio_file(cv / "clips" / clip, seconds=0.5, fmt=mp3_format)
    layouts.write_bytes(cv / "clips" / "common_voice_en_2.mp3")
    layouts.write_covost_table(tmp_path / "covost" / "covost_v2.en_de.tsv", layouts.COVOST_RELEASE_HEADER,
                               [{"path": "common_voice_en_1.mp3", "translation": "Hallo.", "split": "train_covost"},
                                {"path": "common_voice_en_2.mp3", "translation": "Tschüss.", "split": "test"},
                                {"path": "common_voice_en_3.mp3", "translation": "Bis dann.", "split": "test"},
                                {"path": "common_voice_en_3.mp3", "translation": "Bis dann.", "split": "test"}])
    args = ["prepare", "covost2", "--tsv-dir", str(tmp_path / "covost"), "--cv-dir", str(cv), "--out",
            str(tmp_path / "out"), "--workers", "2"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "train.jsonl: 2 rows" in printed and "test.jsonl: 2 rows" in printed
    assert "skipped 1 bad clip (1 table row)" in printed and "common_voice_en_2.mp3 is empty" in printed
    assert "left out 1 table row: clip listed again (its first listing is kept); the first 1:" in printed
    assert f"covost_v2.en_de.tsv:5 (first at {tmp_path / 'covost' / 'covost_v2.en_de.tsv'}:4)" in printed
    assert cli.main(["prepare", "check", str(tmp_path / "out" / "test.jsonl")]) == 0
    assert cli.main(args + ["--strict"]) == 2
    assert "covost_v2.en_de.tsv:3: clip" in capsys.readouterr().err
    # a split none of whose clips is usable is an error, not an empty manifest
    (cv / "clips" / "common_voice_en_3.mp3").unlink()
    assert cli.main(args) == 2
    assert f"error: {cv / 'clips'}: the test split has no usable clip (2 listed" in capsys.readouterr().err


def test_disk_and_folder_errors_are_one_line_and_exit_2(tmp_path, audio_file, layouts, capsys, monkeypatch):
    """Each was a traceback: a folder in the way of a manifest (IsADirectoryError, after train.jsonl and dev.jsonl
    had been replaced), an --out that is a file (FileExistsError, once every clip was read), any other OSError."""
    root = tmp_path / "fleurs"
    for i, split in enumerate(("train", "dev", "test")):
        name = f"{split}.wav"
        audio_file(root / "en_us" / "audio" / split / name, seconds=0.5)
        layouts.write_fleurs_table(root / "en_us" / f"{split}.tsv", [(str(i + 1), name, f"Sentence {i}.", 8000)])
    out = tmp_path / "out"
    args = ["prepare", "fleurs", "--root", str(root), "--workers", "1", "--out"]
    assert cli.main(args + [str(out)]) == 0
    (out / "test.jsonl").unlink()
    (out / "test.jsonl").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(args + [str(out)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err == (f"llm-srt prepare: error: {out / 'test.jsonl'}: cannot write (Is a directory); move the folder of "
                   f"that name aside, or choose another --out (this run's summary is in {out / 'summary.failed.json'}"
                   f"; nothing else in {out} was changed)")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "summary.failed.json"} == before
    (tmp_path / "afile").touch()
    assert cli.main(args + [str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == (f"llm-srt prepare: error: --out {tmp_path / 'afile'}: is a file, not a folder; "
                                       "give a folder (made if missing)\n")
    from llm_srt.data import fleurs

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error", str(root / "en_us" / "audio" / "dev" / "dev.wav"))

    monkeypatch.setattr(fleurs, "prepare_fleurs", broken)
    assert cli.main(args + [str(out)]) == 2
    assert capsys.readouterr().err == (f"llm-srt prepare: error: {root / 'en_us' / 'audio' / 'dev' / 'dev.wav'}: "
                                       "cannot read or write (Input/output error); check the disk and its permissions "
                                       "there, then run it again\n")


@pytest.mark.parametrize("given", [False, True])
def test_prepare_mini_on_a_read_only_cache_says_so_and_names_llm_srt_cache(tmp_path, capsys, monkeypatch, given):
    """`prepare mini` without --out on a read-only cache said "--out CACHE/data/mini: cannot write in CACHE
    (permission denied); make it writable, or choose another --out": the user gave no --out, and no permission
    change makes a read-only file system writable. It says read-only, and, the --out being defaulted, names
    LLM_SRT_CACHE; an --out given is still asked for again."""
    import os

    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(tmp_path)))
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((0,) * 8 + (os.ST_RDONLY, 255)))
    out = tmp_path / "mini"
    assert cli.main(["prepare", "mini", *(["--out", str(out)] if given else [])]) == 2
    todo = "choose another --out" if given else "set LLM_SRT_CACHE=/a/writable/dir, or give --out DIR"
    where = f"--out {out}" if given else tmp_path / "cache" / "data" / "mini"
    assert capsys.readouterr().err == (f"llm-srt prepare: error: {where}: cannot write in {tmp_path} (read-only file "
                                       f"system); {todo}\n")


def test_prepare_check_reads_each_clips_header(tmp_path, capsys):
    """`prepare check` passed a clip of random bytes and a WAV cut short (it checked only that the file was there and
    not empty), so the failure came at decode time; each clip's header is read, as the converters do, and a bad one
    named file:line (--no-check-audio reads none)."""
    import numpy as np
    import soundfile as sf

    good, noise, cut = tmp_path / "good.wav", tmp_path / "noise.wav", tmp_path / "cut.wav"
    sf.write(good, np.zeros(16000, dtype=np.float32), 16000)
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    sf.write(cut, np.zeros(32000, dtype=np.float32), 16000)
    cut.write_bytes(cut.read_bytes()[:20000])  # its header still claims 2 s
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(_manifest_row(i, duration=1.0, audio=str(a))) + "\n"
                            for i, a in enumerate([good, noise, cut])), encoding="utf-8")
    assert cli.main(["prepare", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and f"{path}:3:" in err and f"{path}:1:" not in err
    assert cli.main(["prepare", "check", "--no-check-audio", str(path)]) == 0
