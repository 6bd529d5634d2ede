import json
import os
import subprocess
import sys
import warnings

import pytest

from llm_srt import paths
from llm_srt.data.clips import Summary
from llm_srt.data.manifest import Row, parse_directions, read_manifest, write_manifest
from llm_srt.errors import LLMSRTError, ManifestError


def _row(i, audio="a.wav", **over):
    row = {"id": f"u{i}", "audio": audio, "duration": 1.5, "src_lang": "eng", "transcript": "Hello there.",
           "tgt_lang": "deu", "translation": "Hallo.", "split": "train", "corpus": "test", "sentence_id": str(i)}
    row.update(over)
    return row


def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path, audio_file):
    audio_file(tmp_path / "a.wav")
    return tmp_path


def test_reads_good_rows_and_resolves_audio_against_the_manifest_folder(folder, monkeypatch):
    path = _write(folder / "m.jsonl", [_row(1), _row(2, tgt_lang="", translation=""), _row(3, tgt_lang=None,
                                                                                           translation=None)])
    monkeypatch.chdir("/")
    rows = read_manifest(path)
    assert [r.id for r in rows] == ["u1", "u2", "u3"]
    assert rows[0].audio == str(folder / "a.wav")
    assert not rows[0].is_asr and rows[1].is_asr and rows[2].is_asr and rows[2].tgt_lang == ""


BAD_ROWS = {
    "bad JSON": ('{"id": "x", ', "not valid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing field": ({k: v for k, v in _row(9).items() if k != "transcript"}, "missing field(s) transcript"),
    "wrong type": (_row(9, duration="long"), "field 'duration' should be int or float"),
    "bool duration": (_row(9, duration=True), "field 'duration'"),
    "non-positive duration": (_row(9, duration=0), "not positive"),
    "unknown source language": (_row(9, src_lang="en"), "src_lang 'en' is not a known language"),
    "unknown target language": (_row(9, tgt_lang="xyz"), "tgt_lang 'xyz' is not a known language"),
    "translation without target": (_row(9, tgt_lang=""), "must both be set"),
    # trained as a translation it taught the model to copy; scored as one, a transcript's BLEU read as MT's
    "translation into the speech's own language": (_row(9, tgt_lang="eng"), "tgt_lang 'eng' is the speech's own "
                                                   "language (src_lang): a transcription row leaves tgt_lang"),
    "missing audio": (_row(9, audio="nope.wav"), "does not exist"),
    "empty audio": (_row(9, audio="empty.wav"), "is empty (0 bytes)"),
    "audio is a folder": (_row(9, audio="sub"), "is not a file"),
    "duplicate id": (_row(1), "duplicate id 'u1' (first on line 1)"),
    "lone surrogate": (_row(9, transcript="ab\ud800c"), "field 'transcript' holds a lone surrogate '\\ud800' at "
                                                         "character 3"),
    "lone surrogate in the id": (_row(9, id="\udfff"), "field 'id' holds a lone surrogate"),
    "audio is a FIFO": (_row(9, audio="pipe.wav"), "is a FIFO (named pipe), not a regular file"),
    "audio is a symlink loop": (_row(9, audio="loop.wav"), "is a symlink loop"),
    "ASR row without its transcript": (_row(9, tgt_lang="", translation="", transcript=" "),
                                       "transcript is empty in an ASR row"),
    # a tokenizer reads these as its tokens, not text: training taught EOS or a tag in the middle of a target
    "a language tag in the transcript": (_row(9, transcript="see <|deu|> here"),
                                         "transcript holds '<|deu|>', which the model reads as a tag or special "
                                         "token, not text; remove or rewrite it"),
    "an end token in the translation": (_row(9, translation="sie tippte </s> hier"), "translation holds '</s>'"),
    "Qwen's end of text in the transcript": (_row(9, transcript="a <|endoftext|> b"), "holds '<|endoftext|>'"),
}


def test_text_that_only_looks_like_a_tag_is_kept(folder):
    """Elm's `<| update |>` or an empty `<||>` is plain text to a tokenizer: the whole manifest was refused."""
    path = _write(folder / "m.jsonl", [_row(1, transcript="Elm: model <| update |> view <||>")])
    assert read_manifest(path)[0].transcript == "Elm: model <| update |> view <||>"


def test_a_json_error_reads_as_one_sentence(folder):
    """json's own message may end in "at": "Invalid control character at at column 11"."""
    path = folder / "m.jsonl"
    path.write_text('{"id": "a\tb"}\n{"id": "x', encoding="utf-8")  # a tab inside a string; one cut at the file's end
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:1: not valid JSON (Invalid control character at column 10)" in str(e.value)
    assert f"{path}:2: not valid JSON (Unterminated string starting at column 8)" in str(e.value)


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_each_bad_row_kind_is_reported_with_file_and_line(folder, kind):
    (folder / "empty.wav").write_bytes(b"")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "pipe.wav")
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    bad, message = BAD_ROWS[kind]
    path = _write(folder / "m.jsonl", [_row(1), "", _row(2), bad])  # the blank line still counts
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert f"{path}:4: " in str(e.value) and message in str(e.value)
    assert "1 bad row" in str(e.value)


def test_unreadable_audio_is_reported(folder, monkeypatch):
    locked = folder / "locked.wav"
    locked.write_bytes(b"RIFF")
    locked.chmod(0)
    access = os.access  # root reads it all the same (CI runs as root): os.access says no for this file alone
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: os.path.realpath(path) != os.path.realpath(locked)
                        and access(path, mode, **kw))
    with pytest.raises(ManifestError, match="not readable"):
        read_manifest(_write(folder / "m.jsonl", [_row(1, audio="locked.wav")]))


def test_all_problems_listed_up_to_a_limit_then_counted(folder):
    lines = [_row(i, src_lang="zz") for i in range(25)]
    with pytest.raises(ManifestError) as e:
        read_manifest(_write(folder / "m.jsonl", lines))
    text = str(e.value)
    assert "25 bad row(s)" in text and "m.jsonl:20:" in text and "m.jsonl:21:" not in text
    assert "and 5 more" in text


def test_skip_bad_warns_and_keeps_the_good_rows(folder):
    path = _write(folder / "m.jsonl", [_row(1), "{oops", _row(2, audio="nope.wav"), _row(3), _row(3)])
    with pytest.warns(UserWarning, match="skipped 3 bad rows"):
        rows = read_manifest(path, skip_bad=True)
    assert [r.id for r in rows] == ["u1", "u3"]


def test_skipped_rows_are_reported_at_every_read_not_once_per_process(folder):
    """Python's default filter showed a message from one line once per process: a curriculum's SMT and SRT stages
    read the same manifest in one process, and the second stage's skipped rows went unsaid. A filter that ignores
    the warning still does."""
    path = _write(folder / "m.jsonl", [_row(1), "{oops"])
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")  # Python's own, which pytest.warns would replace
        for _ in range(2):
            read_manifest(path, skip_bad=True)
    assert [str(w.message).split(" (")[0] for w in said] == [f"{path}: skipped 1 bad rows"] * 2
    assert all(w.filename == __file__ for w in said)  # named where read_manifest was called
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("ignore")
        read_manifest(path, skip_bad=True)
    assert said == []
    code = f"from llm_srt.data.manifest import read_manifest; read_manifest({str(path)!r}, skip_bad=True)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "skipped 1 bad rows" in done.stderr, done.stderr[-2000:]  # from python -c
    #   it raised ImportError ('__main__' is not a built-in module) where it should warn


def test_rows_longer_than_the_longest_duration_are_bad_rows(folder):
    """Training takes clips of at most Whisper's 30 s window: a longer row is named with its line when the manifest
    is read, not met by the encoder in a training step (on one rank, without its file)."""
    path = _write(folder / "m.jsonl", [_row(1, duration=30.0), _row(2, duration=31.25), _row(3)])
    assert len(read_manifest(path)) == 3
    with pytest.raises(ManifestError, match=r"m.jsonl:2: 31.25 s is longer than the 30 s a training utterance"):
        read_manifest(path, max_duration=30)
    with pytest.warns(UserWarning, match="skipped 1 bad rows"):
        assert [r.id for r in read_manifest(path, skip_bad=True, max_duration=30)] == ["u1", "u3"]


def test_text_longer_than_its_audio_can_hold_is_a_bad_row_in_training(folder):
    """A 0.6 s row with a 50,000-character translation passed: its batch padded to ~12k target tokens, out of GPU
    memory, and the resumed run drew it again. More than max(500, 60 a second) characters is a bad row where
    training reads the manifest (max_duration); a FLEURS-like 30 s row with 600 characters, a 0.6 s one with 500,
    or 2 s of Chinese pass. A text-only stage (max_text) bounds every row alike, whatever its duration says."""
    long = "Wort " * 10_000
    path = _write(folder / "m.jsonl", [
        _row(1, duration=30.0, translation="x" * 600, transcript="y" * 1800), _row(2, duration=0.6, translation=long),
        _row(3, duration=0.6, transcript="z" * 500), _row(4, src_lang="zho", transcript="今天天气很好", duration=2),
        _row(5, duration=10.0, tgt_lang="", translation="", transcript="a" * 601)])
    assert len(read_manifest(path)) == 5  # (evaluate and prepare: unchecked)
    with pytest.raises(ManifestError) as e:
        read_manifest(path, max_duration=30)
    assert "2 bad row(s)" in str(e.value)
    assert ("m.jsonl:2: translation has 50,000 characters, more than 0.6 s of speech can hold (at most 500: 60 a "
            "second, at least 500): a misaligned or merged row, whose batch would run out of memory; fix it, split "
            "it or drop it") in str(e.value)
    assert "m.jsonl:5: transcript has 601 characters, more than 10 s of speech can hold (at most 600" in str(e.value)
    with pytest.warns(UserWarning, match="skipped 2 bad rows"):
        assert [r.id for r in read_manifest(path, skip_bad=True, max_duration=30)] == ["u1", "u3", "u4"]
    with pytest.raises(ManifestError, match=r"m.jsonl:1: transcript has 1,800 characters, more than the 1,000 a row "
                                            r"of a text-only stage may have"):
        read_manifest(path, max_text=1000)


def test_check_audio_off_accepts_missing_files(folder):
    rows = read_manifest(_write(folder / "m.jsonl", [_row(1, audio="later.wav")]), check_audio=False)
    assert rows[0].audio.endswith("later.wav")


def test_empty_manifest_is_an_error(folder):
    with pytest.raises(ManifestError, match="no usable rows"):
        read_manifest(_write(folder / "m.jsonl", [""]))


def test_write_then_read_round_trip_with_relative_audio(folder, monkeypatch):
    rows = [Row("a", str(folder / "a.wav"), 1.0, "fra", "Bonjour.", "", "", "dev", "x", "7", source="gettext:x"),
            Row("b", str(folder / "a.wav"), 2.0, "fra", "Bonjour.", "eng", "Hello.", "dev", "x", "7")]
    out = folder / "out" / "m.jsonl"
    monkeypatch.chdir(folder)
    assert write_manifest(out, rows) == 2
    first = json.loads(out.read_text().splitlines()[0])
    assert first["audio"] == str(folder / "a.wav")  # outside the manifest folder: absolute
    write_manifest(folder / "m.jsonl", [rows[0]])
    assert json.loads((folder / "m.jsonl").read_text())["audio"] == "a.wav"  # inside: relative
    assert read_manifest(out) == rows
    assert not list(out.parent.glob("*.tmp"))


def test_parse_directions_presets_and_lists():
    langs = ["eng", "deu", "jpn", "tha"]
    assert len(parse_directions("all", langs)) == 12
    assert parse_directions("none", langs) == []
    six = parse_directions("6x12", langs)
    assert ("eng", "deu") in six and ("deu", "jpn") in six
    assert not any("tha" in pair for pair in six)  # Thai is in neither 6x12 list
    assert parse_directions("eng,deu:jpn", langs) == [("eng", "jpn"), ("deu", "jpn")]
    with pytest.raises(LLMSRTError, match="not among the languages"):
        parse_directions("eng:fra", langs)
    with pytest.raises(LLMSRTError, match="use all, 6x12"):
        parse_directions("sideways", langs)
    # a preset none of whose directions is among the languages: an error, not an ASR-only manifest
    with pytest.raises(LLMSRTError, match=r"directions '6x12' translate from eng, deu, fra, zho, rus, jpn into .*: "
                                          r"none of them is among the languages yue, tha, kor; use all"):
        parse_directions("6x12", ["yue", "tha", "kor"])
    assert parse_directions("6x12", ["eng"]) == [] and sorted(parse_directions("15x14", ["eng", "deu"])) == [
        ("deu", "eng"), ("eng", "deu")]


def test_each_audio_file_is_checked_once_however_many_rows_share_it(folder, monkeypatch, audio_file):
    from llm_srt.data import manifest

    audio_file(folder / "b.wav")
    checked = []
    real = manifest._check_audio
    monkeypatch.setattr(manifest, "_check_audio", lambda audio: (checked.append(audio), real(audio)))
    rows = [_row(i, audio="a.wav" if i < 4 else "b.wav") for i in range(6)]
    rows += [_row(9, audio="gone.wav"), _row(10, audio="gone.wav")]
    path = _write(folder / "m.jsonl", rows)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert sorted(p.name for p in checked) == ["a.wav", "b.wav", "gone.wav"]
    assert str(err.value).count("gone.wav does not exist") == 2  # both rows reported, with their lines
    # a relative path is read from the manifest's folder: said where it is missing ("data/x.wav" in data/test.jsonl)
    assert str(err.value).count(f"(a relative audio path is read from the manifest's folder, {folder})") == 2
    assert ":7: audio file" in str(err.value) and ":8: audio file" in str(err.value)
    checked.clear()
    assert len(read_manifest(path, check_audio=False)) == 8 and checked == []


def test_a_row_that_is_not_utf8_text_is_refused_when_written_and_the_file_is_kept(folder):
    good = Row("a", str(folder / "a.wav"), 1.0, "fra", "Bonjour.", "", "", "dev", "x", "7")
    path = folder / "m.jsonl"
    write_manifest(path, [good])
    before = path.read_bytes()
    with pytest.raises(ManifestError, match=r"m.jsonl: row 2 \(id 'b'\) holds a lone surrogate '\\udc80'"):
        write_manifest(path, [good, Row("b", str(folder / "a.wav"), 1.0, "fra", "x\udc80", "", "", "dev", "x", "8")])
    assert path.read_bytes() == before and not list(folder.glob("*.tmp"))


def test_a_manifest_that_is_a_fifo_or_a_symlink_loop_is_named_not_waited_on(tmp_path):
    fifo, loop = tmp_path / "m.jsonl", tmp_path / "loop.jsonl"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    with pytest.raises(ManifestError, match=r"m.jsonl: is a FIFO \(named pipe\), not a regular file"):
        read_manifest(fifo)
    with pytest.raises(ManifestError, match=r"loop.jsonl: a symlink loop"):
        read_manifest(loop)


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_manifests_and_summaries_get_the_permissions_a_plain_open_gives(tmp_path, umask):
    before = os.umask(umask)
    try:
        assert paths.umask() == umask
        row = Row(**_row(1, audio=str(tmp_path / "a.wav")))
        write_manifest(tmp_path / "m.jsonl", [row])
        summary = Summary(tmp_path)
        written = summary.write()
    finally:
        os.umask(before)
    assert (tmp_path / "m.jsonl").stat().st_mode & 0o777 == written.stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "m.jsonl").chmod(0o600)  # a file written again keeps its permissions, as with open()
    write_manifest(tmp_path / "m.jsonl", [row])
    assert (tmp_path / "m.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_converted_row_whose_text_holds_markup_is_left_out_and_counted(tmp_path):
    """read_manifest refuses such a row, so `prepare` leaves it out (counted, with its id) rather than write a
    manifest that training would refuse."""
    from llm_srt.data.clips import MARKUP, write_manifests

    rows = [Row(**_row(i, audio=str(tmp_path / "a.wav"), split="test")) for i in range(3)]
    rows[1] = Row(**_row(1, audio=str(tmp_path / "a.wav"), split="test", translation="ja <|endoftext|> nein"))
    summary = Summary(tmp_path / "out")
    write_manifests(summary, {"test": rows}, {})
    assert [r.id for r in read_manifest(tmp_path / "out" / "test.jsonl", check_audio=False)] == ["u0", "u2"]
    assert summary.dropped[MARKUP] == 1 and summary.dropped_at[MARKUP] == ["u1 ('<|endoftext|>')"]



@pytest.mark.parametrize("links", [True, False], ids=["hard links", "no hard links"])
def test_replace_all_renames_every_staged_file_or_none(tmp_path, monkeypatch, links):
    """prepare's manifests and summary.json: a rename that failed left the files renamed before it, of the new run,
    beside the earlier run's."""
    for name in ("a", "b", "s"):
        (tmp_path / name).write_text(f"old {name}\n")
    staged = []
    for name in ("a", "b", "c"):  # c is new
        with paths.atomic_file(tmp_path / name, staged=staged) as f:
            f.write(f"new {name}\n")
    assert (tmp_path / "a").read_text() == "old a\n" and [d.name for _, d in staged] == ["a", "b", "c"]
    moves = [*staged[:2], (tmp_path / "s", tmp_path / "s.stale"), staged[2]]
    if not links:
        monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(1, "Operation not permitted")))
    replace = os.replace

    def full(source, destination):  # the last of the four renames fails
        if destination == tmp_path / "c":
            raise OSError(28, "No space left on device")
        return replace(source, destination)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as e:
        paths.replace_all(moves)
    assert e.value.errno == 28 and e.value.filename == str(tmp_path / "c")
    temps = {t.name for t, _ in staged}
    assert {p.name: p.read_text() for p in tmp_path.iterdir() if p.name not in temps} == {
        "a": "old a\n", "b": "old b\n", "s": "old s\n"}  # no backup left, the stale one back
    monkeypatch.setattr(os, "replace", replace)
    paths.replace_all(moves)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a": "new a\n", "b": "new b\n", "c": "new c\n", "s.stale": "old s\n"}


def test_a_row_of_another_name_of_a_language_names_the_code_meant(folder):
    """A row with src_lang "en" (or FLEURS's "cmn") was listed as bad with the codes alone, not the one meant."""
    path = _write(folder / "m.jsonl", [_row(1, src_lang="en"), _row(2, tgt_lang="cmn"), _row(3, tgt_lang="xyz")])
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    lines = str(e.value).splitlines()
    assert lines[1].startswith(f"  {path}:1: src_lang 'en' is not") and lines[1].endswith("; did you mean 'eng'?")
    assert lines[2].startswith(f"  {path}:2: tgt_lang 'cmn' is not") and lines[2].endswith("; did you mean 'zho'?")
    assert lines[3].startswith(f"  {path}:3: tgt_lang 'xyz' is not") and lines[3].endswith("languages.py)")


def test_prepare_check_reads_each_clips_header_and_names_a_corrupt_or_cut_one(folder):
    """`llm-srt prepare check` passed a corrupt or truncated wav (only there and not empty), which showed at decode
    time; with read_headers each clip's header is read, as the converters read theirs, and a bad one named file:line.
    Without it (training and evaluation, which skip or count such a clip as they decode it) nothing changes."""
    import soundfile as sf

    whole = (folder / "a.wav").read_bytes()
    assert sf.info(str(folder / "a.wav")).frames > 0
    (folder / "junk.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)  # not empty, not audio
    (folder / "cut.wav").write_bytes(whole[:len(whole) // 2])  # its header still claims the whole length
    manifest = _write(folder / "m.jsonl", [_row(1), _row(2, audio="junk.wav"), _row(3, audio="cut.wav"),
                                           _row(4, audio="junk.wav", tgt_lang="", translation="")])
    assert len(read_manifest(manifest)) == 4
    with pytest.raises(ManifestError) as bad:
        read_manifest(manifest, read_headers=True)
    lines = str(bad.value).splitlines()
    assert lines[0].startswith(f"{manifest}: 3 bad row(s)")
    assert lines[1].startswith(f"  {manifest}:2: audio file {folder / 'junk.wav'} cannot be decoded (")
    assert lines[2] == (f"  {manifest}:3: audio file {folder / 'cut.wav'} is cut short (it ends before the length its "
                        "header gives); replace it with the whole file, or drop its rows")
    assert lines[3].startswith(f"  {manifest}:4: audio file {folder / 'junk.wav'} cannot be decoded (")
    assert [row.id for row in read_manifest(manifest, read_headers=True, skip_bad=True, on_skipped=print)] == ["u1"]
