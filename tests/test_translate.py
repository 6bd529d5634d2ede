"""`llm-srt translate` on the stub systems of test_infer: what reaches stdout and stderr, and what is refused before
the model loads."""

import contextlib
import io
import json
import os
import re
import sys

import pytest

from llm_srt import cli, translate
from llm_srt.audio import write_wav
from llm_srt.model.protocol import Output
from test_infer import SR, Stopped, Stub, _Broken, recording, stub_cli

RUN = ["--model", "stub", "--src", "eng", "--tgt", "deu"]


def _not_loaded(monkeypatch) -> None:
    monkeypatch.setattr(translate, "translator_from_args", lambda args: pytest.fail("the model loaded"))


def test_a_run_stopped_inside_a_long_input_prints_its_segments_done_to_stdout(tmp_path, monkeypatch, capsys):
    """`llm-srt translate talk.wav --format srt > talk.srt` stopped (Ctrl-C, SIGTERM, the GPU failing for good)
    inside its one input wrote nothing, where --out-dir and json keep the segments done (exit code 1, not 3, when
    the GPU failed; a reviewer's find). Now they are printed, said on stderr, with --out-dir's exit code."""
    write_wav(tmp_path / "talk.wav", recording(24.0, [(1.0, 3.0), (6.0, 8.5), (11.5, 14.5), (17.5, 21.0)]))
    run = ["translate", str(tmp_path / "talk.wav"), *RUN, "--batch-size", "1", "--format", "srt"]
    for system, code in ((Stub, 130), (Stopped, cli.TERMINATED), (_Broken, 3)):
        stub = system(interrupt=3)  # two segments of four done, the longest first
        stub_cli(monkeypatch, stub)
        assert cli.main(run) == code, system.__name__
        out, err = capsys.readouterr()
        assert out.startswith("1\n"), (system.__name__, out)  # an SRT file: no "# talk.wav" above its first cue
        cues = out.rstrip("\n").split("\n\n")
        assert [c.splitlines()[0] for c in cues] == ["1", "2"] and "# " not in out
        done = sum(stub.batches[:2], [])
        assert sorted(c.splitlines()[-1] for c in cues) == sorted(f"tr{n / SR:.2f}" for n in done)
        assert (f"llm-srt translate: {tmp_path / 'talk.wav'}: the run was stopped before 2 of 4 segments were done; "
                "the 2 translated are printed\n") in err
    write_wav(tmp_path / "lecture.wav", recording(36.0, [(0.5, 4.0), (8.5, 11.0), (15.5, 17.0), (30.0, 31.5)]))
    for name in ("s1", "s2"):  # the inputs done after it, held back behind it: each under its name, in input order
        write_wav(tmp_path / f"{name}.wav", recording(2.4, [(0.2, 2.2)]))
    stub_cli(monkeypatch, Stub(interrupt=3))  # the lecture's two longest segments, both short inputs, then Ctrl-C
    files = [str(tmp_path / f"{n}.wav") for n in ("lecture", "s1", "s2")]
    assert cli.main(["translate", *files, *RUN, "--batch-size", "2"]) == 130
    out = capsys.readouterr().out
    assert re.findall(r"^# (.*)$", out, re.M) == files and out.count("tr2.40") == 2
    lecture = out.split(f"# {files[1]}")[0]  # its two segments done, in one translation
    assert len(re.findall(r"^  translation: tr[\d.]+ tr[\d.]+$", lecture, re.M)) == 1, lecture


def test_inputs_none_of_which_can_be_read_fail_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """A typo, or a shell pattern that matched nothing (given as it is), was said only once the model had loaded
    (minutes for a 7B model). Where no input can be read, each fails as before, with the same lines, output and exit
    code, but the model is not loaded; where one can, the others fail alone as it runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "talks").mkdir()
    _not_loaded(monkeypatch)
    assert cli.main(["translate", "missing.wav", *RUN, "--format", "srt"]) == 1
    assert capsys.readouterr() == ("", "llm-srt translate: missing.wav: no such file\n")
    assert cli.main(["translate", "missing.wav", "talks", *RUN, "--format", "json", "--out-dir", "out"]) == 1
    out, err = capsys.readouterr()
    assert [(e["audio"], e["error"]) for e in json.loads(out)] == [
        ("missing.wav", "missing.wav: no such file"),
        ("talks", "talks: is a directory, not a file; name the files in it (a shell pattern: talks/*)")]
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(out)
    assert err.splitlines()[-1] == "llm-srt translate: 2 of 2 inputs failed (named above); none translated"
    write_wav(tmp_path / "talks" / "a.wav", recording(2.4, [(0.2, 2.2)]))
    stub_cli(monkeypatch, Stub())
    assert cli.main(["translate", "missing.wav", "talks/a.wav", *RUN]) == 3  # one can be read: run, the other fails
    out, err = capsys.readouterr()
    assert "tr2.40" in out and "llm-srt translate: missing.wav: no such file\n" in err


def test_an_empty_out_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """`--out-dir "$OUT"` with $OUT unset was taken as no --out-dir: every output went to stdout, exit code 0."""
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    _not_loaded(monkeypatch)
    assert cli.main(["translate", str(tmp_path / "a.wav"), *RUN, "--format", "srt", "--out-dir", ""]) == 2
    assert capsys.readouterr() == ("", "llm-srt translate: error: --out-dir is empty; give a folder, or leave "
                                       "--out-dir out to print to standard output\n")


class _Chinese(Stub):
    """A Stub whose texts are Chinese and German: characters a Latin-1 standard output cannot all write."""

    def run_batch(self, items, options):
        super().run_batch(items, options)
        return [Output("你好", "Grüße – 明天") for _ in items]


def test_a_standard_output_in_latin1_takes_any_text(tmp_path, monkeypatch):
    """Under a Latin-1 locale (or PYTHONIOENCODING) the first Chinese text stopped the run in a UnicodeEncodeError
    traceback, the inputs after it lost (json: every one, results.json unwritten). srt, vtt and json are written in
    UTF-8, their formats' encoding; text in the locale's, what it cannot write escaped."""
    files = []
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav", recording(2.4, [(0.2, 2.2)]))
        files.append(str(tmp_path / f"{name}.wav"))
    for fmt in ("srt", "json", "text"):
        stub_cli(monkeypatch, _Chinese())
        raw = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="latin-1"))
        assert cli.main(["translate", *files, *RUN, "--format", fmt]) == 0, fmt
        sys.stdout.flush()
        out = raw.getvalue()
        if fmt == "text":
            assert out.decode("latin-1").count("  translation: Grüße \\u2013 \\u660e\\u5929\n") == 2
            assert sys.stdout.errors == "strict"  # the caller's stream as it was
        elif fmt == "json":
            assert [e["translation"] for e in json.loads(out.decode("utf-8"))] == ["Grüße – 明天"] * 2
        else:
            assert out.decode("utf-8").count("\n你好\nGrüße – 明天\n") == 2


def test_stdouts_encoding_is_the_clis_alone_and_set_back(tmp_path, monkeypatch):
    """translate.main switched sys.stdout to UTF-8 for srt, vtt and json (cli too escaped what it could not write),
    and nothing set it back: a program that runs the command in-process (cli.main, or translate.main with its
    parsed arguments) had its sys.stdout changed for good. cli sets it for its run alone, then as it found it; the
    command's output on an ASCII stdout loses nothing."""
    import argparse

    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    parser = argparse.ArgumentParser()
    translate.add_arguments(parser)
    for fmt in ("srt", "vtt", "json", "text"):
        argv = [str(tmp_path / "a.wav"), *RUN, "--format", fmt]
        stub_cli(monkeypatch, _Chinese())
        raw = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
        assert cli.main(["translate", *argv]) == 0, fmt
        assert (sys.stdout.encoding, sys.stdout.errors) == ("ascii", "strict"), fmt
        out = raw.getvalue().decode("utf-8" if fmt != "text" else "ascii")
        assert ("Grüße – 明天" if fmt != "text" else "Gr\\xfc\\xdfe \\u2013 \\u660e\\u5929") in out, fmt
        stub_cli(monkeypatch, Stub())  # in-process, the caller's stream as it is: texts it can write
        raw = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
        assert translate.main(parser.parse_args(argv)) == 0, fmt
        assert (sys.stdout.encoding, sys.stdout.errors) == ("ascii", "strict"), fmt
        sys.stdout.flush()
        assert "tr2.40" in raw.getvalue().decode("ascii"), fmt


def test_results_json_is_written_when_standard_outputs_reader_has_gone(tmp_path, monkeypatch):
    """`llm-srt translate ... --format json --out-dir out | head -1`: the array is printed first, and the pipe closed
    under it left results.json unwritten, the whole run's results lost (exit 141). It is written all the same."""
    files = []
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav", recording(2.4, [(0.2, 2.2)]))
        files.append(str(tmp_path / f"{name}.wav"))
    stub_cli(monkeypatch, Stub())
    read, write = os.pipe()
    os.close(read)  # as `head -1` does once it has its line
    with open(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert cli.main(["translate", *files, *RUN, "--format", "json", "--out-dir", str(tmp_path / "out")]) == \
            cli.BROKEN_PIPE
        monkeypatch.undo()
        with contextlib.suppress(BrokenPipeError):
            closed.close()
    entries = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["translation"] for e in entries] == ["tr2.40", "tr2.40"]


def test_numbered_recordings_each_get_their_own_output(tmp_path, monkeypatch, capsys):
    """`translate rec.001 rec.002 --out-dir out` (a recorder's numbered parts): both outputs were named rec.srt, so
    the run was refused as two inputs sharing one file. An extension without a letter is now part of the output's
    name (rec.001.srt); an ordinary file keeps its name (talk.wav -> talk.srt)."""
    files = []
    for name in ("rec.001", "rec.002", "talk.wav"):
        write_wav(tmp_path / "clip.wav", recording(2.4, [(0.2, 2.2)]))
        (tmp_path / "clip.wav").rename(tmp_path / name)
        files.append(str(tmp_path / name))
    stub_cli(monkeypatch, Stub())
    out = tmp_path / "out"
    assert cli.main(["translate", *files, *RUN, "--format", "srt", "--out-dir", str(out)]) == 0, capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.srt")) == ["rec.001.srt", "rec.002.srt", "talk.srt"]
    assert "tr2.40" in (out / "rec.002.srt").read_text()
    assert cli.main(["translate", *files, *RUN, "--format", "srt", "--out-dir", str(out), "--skip-existing"]) == 0
    assert "3 of 3 inputs skipped" in capsys.readouterr().err


@pytest.mark.parametrize("edit", [{"input": "a.wav"}, {"settings": ["deu"]}, {"file": 7}, {"file": None}])
def test_a_hand_edited_settings_record_is_one_line_naming_its_line(tmp_path, monkeypatch, capsys, edit):
    """A line of OUT/.llm-srt-translate.jsonl edited by hand into another shape ("input" a string, "settings" a
    list, "file" a number) stopped --skip-existing, or any --out-dir run, with an AttributeError traceback. It is
    one line naming the file and the line, saying what to do, before the model loads; a line a kill cut is still
    passed."""
    from llm_srt.out_files import SETTINGS_FILE

    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    out = tmp_path / "out"
    run = ["translate", str(tmp_path / "a.wav"), *RUN, "--format", "srt", "--out-dir", str(out), "--skip-existing"]
    stub_cli(monkeypatch, Stub())
    assert cli.main(run) == 0
    [line] = (out / SETTINGS_FILE).read_text().splitlines()
    record = json.loads(line)
    (out / SETTINGS_FILE).write_text(line[:30] + "\n" + json.dumps({**record, **edit}) + "\n")
    capsys.readouterr()
    _not_loaded(monkeypatch)
    assert cli.main(run) == 2
    key = next(iter(edit))
    assert capsys.readouterr() == ("", f"llm-srt translate: error: {out / SETTINGS_FILE}:2: not a record of "
                                   f"llm-srt translate ({key!r} is {json.dumps(edit[key])}); fix that line or delete "
                                   "it (--skip-existing then translates its file again)\n")
