import codecs
import functools
import os
import re
import json
from pathlib import Path

import pytest
import soundfile as sf

from llm_srt.data import clips as clips_module
from llm_srt.data import tables
from llm_srt.data.clips import REPEATED
from llm_srt.data.commonvoice import WRONG_WIDTH, prepare_commonvoice
from llm_srt.data.manifest import read_manifest
from llm_srt.data.tables import STRAY_CR
from llm_srt.errors import LLMSRTError

# split -> [(clip, client_id, sentence_id, sentence)]; Common Voice splits by speaker.
SPLITS = {
    "train": [("de_1.mp3", "spkA", "s1", "Guten Tag."), ("de_2.mp3", "spkB", "s2", 'Er sagte "ja.')],
    "dev": [("de_3.mp3", "spkC", "s3", "Danke schön.")],
    "test": [("de_4.mp3", "spkD", "s4", "Bis morgen.")],
}
# validated = the split files' clips, plus: a new speaker and sentence (kept), a dev speaker reading a new
# sentence (left out: speaker), a new speaker reading a test sentence (left out: sentence)
EXTRA = [("de_5.mp3", "spkE", "s5", "Gute Nacht."), ("de_6.mp3", "spkC", "s6", "Neuer Satz."),
         ("de_7.mp3", "spkF", "s4", "Bis morgen.")]


def _cv_rows(items):
    return [{"client_id": spk, "path": clip, "sentence_id": sid, "sentence": text, "up_votes": 2, "down_votes": 0,
             "locale": "de"} for clip, spk, sid, text in items]


@pytest.fixture
def locale_dir(tmp_path, audio_file, mp3_format, layouts):
    """A Common Voice 17+ locale folder (cv-corpus-17.0/de/) with mp3 clips."""
    root = tmp_path / "cv-corpus" / "de"
    for split, items in SPLITS.items():
        layouts.write_cv_table(root / f"{split}.tsv", layouts.CV17_HEADER, _cv_rows(items))
    layouts.write_cv_table(root / "validated.tsv", layouts.CV17_HEADER,
                           _cv_rows([i for items in SPLITS.values() for i in items] + EXTRA))
    for i, (clip, *_) in enumerate([i for items in SPLITS.values() for i in items] + EXTRA):
        audio_file(root / "clips" / clip, seconds=0.5 + 0.1 * i, sr=48000, fmt=mp3_format)
    return root


def test_asr_rows_per_split_with_language_from_the_folder(locale_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(clips_module, "CHUNK", 1)
    monkeypatch.setattr(clips_module, "tqdm", functools.partial(clips_module.tqdm, mininterval=0))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", workers=2)
    assert summary.written == {"train": 2, "dev": 1, "test": 1}
    rows = read_manifest(tmp_path / "out" / "train.jsonl")
    assert all(r.is_asr and r.src_lang == "deu" and r.corpus == "commonvoice" for r in rows)
    assert [r.transcript for r in rows] == ["Guten Tag.", 'Er sagte "ja.']  # a bare " is text (QUOTE_NONE)
    assert [r.duration for r in rows] == pytest.approx([0.5, 0.6], abs=0.06)
    assert summary.durations_from == "the clips' headers"
    bar = capsys.readouterr().err  # the progress bar moves as clips are read, with an ETA
    assert "reading clip headers:  25%" in bar and "1/4 [" in bar and "4/4 [" in bar and "<00:0" in bar


def test_validated_as_train_leaves_out_dev_and_test_speakers_and_sentences(locale_dir, tmp_path):
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    assert summary.written["train"] == 3 and [r.sentence_id for r in train] == ["s1", "s2", "s5"]
    assert summary.dropped == {"validated.tsv clip by a dev/test speaker (client_id)": 1,
                               "validated.tsv clip of a dev/test sentence": 1}


@pytest.mark.parametrize("splits", [("train", "dev"), ("train",), ("train", "test")])
def test_validated_as_train_leaves_out_held_out_speakers_even_when_their_split_is_not_converted(locale_dir, tmp_path,
                                                                                               splits):
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", splits=splits, validated_as_train=True)
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    assert [r.sentence_id for r in train] == ["s1", "s2", "s5"]  # no dev/test clip, speaker or sentence
    assert summary.dropped == {"validated.tsv clip by a dev/test speaker (client_id)": 1,
                               "validated.tsv clip of a dev/test sentence": 1}
    assert [w.rsplit("/", 1)[1] for w in summary.dropped_at["validated.tsv clip by a dev/test speaker (client_id)"]] \
        == ["validated.tsv:7"]


def test_rows_without_sentence_or_path_are_left_out_and_counted(locale_dir, tmp_path, layouts):
    rows = _cv_rows(SPLITS["train"] + [("de_5.mp3", "spkE", "s5", " "), ("", "spkE", "s6", "Kein Pfad.")])
    layouts.write_cv_table(locale_dir / "train.tsv", layouts.CV17_HEADER, rows)
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert [r.transcript for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["Guten Tag.", 'Er sagte "ja.']
    assert summary.dropped == {"empty sentence": 1, "no clip (empty path)": 1}
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {k: [w.rsplit("/", 1)[1] for w in v] for k, v in saved["dropped_at"].items()} == {
        "empty sentence": ["train.tsv:4"], "no clip (empty path)": ["train.tsv:5"]}
    assert "left out 1 table row: empty sentence; the first 1:" in summary.lines()
    assert f"  {locale_dir / 'train.tsv'}:4" in summary.lines()


def test_a_clip_listed_again_is_kept_once_and_test_keeps_a_clip_train_also_lists(locale_dir, tmp_path, layouts):
    # train.tsv repeats its line 2 and lists test's clip; both manifests still pass the validator (unique ids)
    layouts.write_cv_table(locale_dir / "train.tsv", layouts.CV17_HEADER,
                           _cv_rows(SPLITS["train"] + SPLITS["train"][:1] + SPLITS["test"]))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    assert [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["s1", "s2", "s5"]
    assert [r.sentence_id for r in read_manifest(tmp_path / "out" / "test.jsonl")] == ["s4"]
    assert summary.dropped[REPEATED] == 2
    assert [w.replace(f"{locale_dir}/", "") for w in summary.dropped_at[REPEATED]] == [
        "train.tsv:4 (first at train.tsv:2)", "train.tsv:5 (first at test.tsv:2)"]


def test_headers_are_read_only_for_clips_that_survive_the_filters(locale_dir, tmp_path, monkeypatch):
    read = []
    real_info = sf.info
    monkeypatch.setattr(clips_module.sf, "info", lambda path: read.append(path.rsplit("/", 1)[1]) or real_info(path))
    prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    assert sorted(read) == ["de_1.mp3", "de_2.mp3", "de_3.mp3", "de_4.mp3", "de_5.mp3"]


@pytest.mark.parametrize("listing", ["clip_durations.tsv", "times.txt"])
def test_durations_from_the_release_duration_list(locale_dir, tmp_path, monkeypatch, layouts, listing):
    """Train's listed clips have their headers read: a clip no decoder opens was written with its listed length
    (bad_clips [], `prepare check` ok), though README says every converter skips one; it is skipped and counted like
    the others. Dev's and test's are decoded whole (a clip cut short is found only so); where a clip's length is not
    the list's, train's too, the measured one is written."""
    ms = {clip: 4000 + 100 * i for i, (clip, *_) in enumerate([i for s in SPLITS.values() for i in s] + EXTRA)}
    ms["de_4.mp3"] = 830  # test's clip: 0.8 s, listed within 0.05 s
    (locale_dir / "clips" / "de_1.mp3").write_bytes(os.urandom(4096))  # train, listed: undecodable
    write = layouts.write_clip_durations if listing == "clip_durations.tsv" else layouts.write_times_txt
    write(locale_dir, ms)
    read, real_info = [], sf.info
    monkeypatch.setattr(clips_module.sf, "info", lambda path: read.append(path.rsplit("/", 1)[1]) or real_info(path))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert summary.durations_from == listing and sorted(read) == ["de_1.mp3", "de_2.mp3", "de_3.mp3", "de_4.mp3"]
    assert [r.duration for r in read_manifest(tmp_path / "out" / "train.jsonl")] == [
        pytest.approx(0.6, abs=0.06)]  # de_2's as measured, not the 4.1 s listed
    assert read_manifest(tmp_path / "out" / "dev.jsonl")[0].duration == pytest.approx(0.7, abs=0.06)  # not 4.2
    assert read_manifest(tmp_path / "out" / "test.jsonl")[0].duration == 0.83  # the list's, agreeing
    assert [(b.where, b.clip.rsplit("/", 1)[1]) for b in summary.bad_clips] == [(f"{locale_dir}/train.tsv:2",
                                                                                 "de_1.mp3")]
    assert "cannot be decoded" in summary.bad_clips[0].reason and summary.rows_without_clip == 1
    assert any(n.startswith("the measured length of 2 clip(s) is used") and "train.tsv:3: 4.10 s listed" in n
               for n in summary.notes)


@pytest.mark.parametrize("listing", ["clip_durations.tsv", "times.txt"])
def test_a_clip_listed_with_a_duration_of_0_is_measured_from_its_header(locale_dir, tmp_path, monkeypatch, layouts,
                                                                        listing):
    """0 means the release could not measure the clip: it was counted bad unread, though de_2 plays fine."""
    ms = {clip: 4000 + 100 * i for i, (clip, *_) in enumerate([i for s in SPLITS.values() for i in s])}
    ms["de_1.mp3"] = ms["de_2.mp3"] = 0
    (locale_dir / "clips" / "de_1.mp3").write_bytes(b"not audio")  # bad only because its header read fails too
    (layouts.write_clip_durations if listing == "clip_durations.tsv" else layouts.write_times_txt)(locale_dir, ms)
    read, real_info = [], sf.info
    monkeypatch.setattr(clips_module.sf, "info", lambda path: read.append(path.rsplit("/", 1)[1]) or real_info(path))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert sorted(read) == ["de_1.mp3", "de_2.mp3", "de_3.mp3", "de_4.mp3"]
    assert [(r.id, r.duration) for r in read_manifest(tmp_path / "out" / "train.jsonl")] == [
        ("commonvoice:deu:de_2", pytest.approx(0.6, abs=0.06))]
    assert read_manifest(tmp_path / "out" / "dev.jsonl")[0].duration == pytest.approx(0.7, abs=0.06)  # decoded
    assert [b.clip.rsplit("/", 1)[1] for b in summary.bad_clips] == ["de_1.mp3"]
    assert "cannot be decoded" in summary.bad_clips[0].reason and "gives 0" in summary.bad_clips[0].reason


def test_a_split_manifest_an_earlier_run_left_in_out_is_moved_aside(locale_dir, tmp_path):
    """Converting again into the same OUT with fewer splits left the old train.jsonl, which summary.json disowned;
    it is moved aside, not deleted (`--splits test` into a full conversion must not lose hours of work)."""
    out = tmp_path / "out"
    prepare_commonvoice(locale_dir, out)
    train = (out / "train.jsonl").read_bytes()
    (out / "prose.jsonl").write_text("{}\n", encoding="utf-8")  # no split manifest of this tool: left alone
    summary = prepare_commonvoice(locale_dir, out, splits=("dev", "test"))
    assert sorted(p.name for p in out.iterdir()) == ["dev.jsonl", "prose.jsonl", "summary.json", "test.jsonl",
                                                      "train.jsonl.stale"]
    assert (out / "train.jsonl.stale").read_bytes() == train
    assert ("moved an earlier prepare's files aside: train.jsonl to train.jsonl.stale (this run did not write it); "
            "rename them back if still wanted, or keep corpora in separate --out folders") in summary.lines()
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert saved["written"] == {"dev": 1, "test": 1} and saved["notes"] == summary.notes
    assert prepare_commonvoice(locale_dir, out, splits=("dev", "test")).notes == []  # nothing stale the second time


def test_missing_empty_and_undecodable_clips_are_skipped_or_stop_with_strict(locale_dir, tmp_path, layouts):
    layouts.write_cv_table(locale_dir / "dev.tsv", layouts.CV17_HEADER, _cv_rows(SPLITS["dev"] + EXTRA[:1]))
    layouts.write_cv_table(locale_dir / "test.tsv", layouts.CV17_HEADER, _cv_rows(SPLITS["test"] + EXTRA[1:2]))
    (locale_dir / "clips" / "de_1.mp3").unlink()
    layouts.write_bytes(locale_dir / "clips" / "de_3.mp3")
    layouts.write_bytes(locale_dir / "clips" / "de_4.mp3", b"RIFF....WAVEjunk" * 8)
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert summary.written == {"train": 1, "dev": 1, "test": 1} and summary.rows_without_clip == 3
    reasons = [(b.where.rsplit("/", 1)[1], b.reason.split(".mp3 ")[1]) for b in summary.bad_clips]
    assert [(w, r.split(" (")[0]) for w, r in reasons] == [
        ("train.tsv:2", "is missing"), ("dev.tsv:2", "is empty"), ("test.tsv:2", "cannot be decoded")]
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())["bad_clips"]) == 3
    with pytest.raises(LLMSRTError, match=r"train\.tsv:2: clip .*de_1\.mp3 is missing"):
        prepare_commonvoice(locale_dir, tmp_path / "strict", strict=True)


def test_sentence_id_from_text_in_a_common_voice_4_folder(locale_dir, tmp_path, layouts):
    for split, items in SPLITS.items():
        layouts.write_cv_table(locale_dir / f"{split}.tsv", layouts.CV4_HEADER, _cv_rows(items))
    prepare_commonvoice(locale_dir, tmp_path / "out")
    ids = [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")]
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)


def test_a_split_whose_clips_are_all_bad_stops_and_names_the_folder(locale_dir, tmp_path, layouts):
    for clip in ("de_3.mp3", "de_5.mp3"):
        (locale_dir / "clips" / clip).unlink()
    with pytest.raises(LLMSRTError, match=rf"^{locale_dir / 'clips'}: the dev split has no usable clip \(1 listed, "
                                          r"the first at .*dev\.tsv:2: clip .*de_3\.mp3 is missing\); is the audio "
                                          r"unpacked there\?"):
        prepare_commonvoice(locale_dir, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.jsonl"))  # no manifest, but the list of bad clips
    assert len(json.loads((tmp_path / "out" / "summary.failed.json").read_text())["bad_clips"]) == 1
    with pytest.raises(LLMSRTError, match=r"dev\.tsv:2: clip .*de_3\.mp3 is missing \(without --strict"):
        prepare_commonvoice(locale_dir, tmp_path / "strict", strict=True)  # --strict still stops at the first
    # a split whose table lists no clip is no error
    layouts.write_cv_table(locale_dir / "dev.tsv", layouts.CV17_HEADER, [])
    assert prepare_commonvoice(locale_dir, tmp_path / "out").written == {"train": 2, "dev": 0, "test": 1}


@pytest.mark.parametrize("folder", ["yue", "zh-HK"])
def test_cantonese_from_either_common_voice_locale(locale_dir, tmp_path, folder):
    cantonese = locale_dir.rename(locale_dir.parent / folder)
    prepare_commonvoice(cantonese, tmp_path / "out", splits=("dev",))
    assert read_manifest(tmp_path / "out" / "dev.jsonl")[0].src_lang == "yue"


def test_unknown_locale_folder_asks_for_the_language(locale_dir, tmp_path):
    other = locale_dir.rename(locale_dir.parent / "xx")
    with pytest.raises(LLMSRTError, match="--lang"):
        prepare_commonvoice(other, tmp_path / "out")
    assert prepare_commonvoice(other, tmp_path / "out", lang="deu").written["dev"] == 1


def test_a_release_folder_given_for_a_locale_names_its_locale_folders(locale_dir, tmp_path):
    """The release folder (cv-corpus-17.0-.../) instead of one of its locales: the error says which to give, with or
    without --lang, instead of "not a locale of a known language" or "train.tsv missing"."""
    release = locale_dir.parent
    for lang in (None, "deu"):
        with pytest.raises(LLMSRTError, match=rf"{re.escape(str(release))}.*a Common Voice release folder, not a "
                                              rf"locale's; give one of its locale folders \(de\), e.g. "
                                              rf"{re.escape(str(locale_dir))}$"):
            prepare_commonvoice(release, tmp_path / "out", lang=lang)


def test_a_table_line_that_is_not_utf8_is_named_by_file_and_line(locale_dir, tmp_path):
    """A damaged extraction: one byte that is not UTF-8 gave a bare UnicodeDecodeError with no file or line."""
    train = locale_dir / "train.tsv"
    data = train.read_bytes()
    line = data[:data.index(b"Tag")].count(b"\n") + 1
    train.write_bytes(data.replace(b"Tag", b"T\xffg"))
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(train))}:{line}: not UTF-8 text \(byte \d+ of the "
                                          "line\\); the file is damaged or was saved in another encoding"):
        prepare_commonvoice(locale_dir, tmp_path / "out")


def test_exclude_keeps_an_evaluation_sets_clips_speakers_and_sentences_out_of_train_and_dev(locale_dir, tmp_path):
    """CoVoST 2's test set is made of Common Voice 4 clips; a later release redraws its splits, so its train and
    validated clips held CoVoST test clips and their speakers (a leak into the ASR stage)."""
    from llm_srt.data.manifest import Row, write_manifest

    def row(clip, text):
        return Row(id=clip, audio=f"cv4/clips/{clip}", duration=1.0, src_lang="deu", transcript=text, tgt_lang="eng",
                   translation="x", split="test", corpus="covost2", sentence_id=clip)

    validated = locale_dir / "validated.tsv"
    header = validated.read_text().splitlines()[0].split("\t")
    extra = {"client_id": "spkB", "path": "de_8.mp3", "sentence_id": "s8", "sentence": "Noch ein Satz."}
    with open(validated, "a") as f:  # another clip of de_2's speaker, in validated.tsv alone
        f.write("\t".join(extra.get(c, "") for c in header) + "\n")
    test = tmp_path / "covost-test.jsonl"  # de_2 (train, spkB), de_3 (dev), and de_5's sentence (validated)
    write_manifest(test, [row("de_2.mp3", "Anders."), row("de_3.mp3", "Danke schön."),
                          row("de_99.mp3", "Gute  Nacht.")])
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True, exclude=[test])
    train, kept = (read_manifest(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "test"))
    assert [r.sentence_id for r in train] == ["s1"] and summary.written["dev"] == 0
    assert [r.sentence_id for r in kept] == ["s4"]  # test keeps its clips
    assert summary.dropped["clip of an --exclude manifest"] == 2  # de_2 (train), de_3 (dev)
    assert summary.dropped["clip by the speaker of an --exclude manifest's clip (client_id)"] == 1  # de_8
    assert summary.dropped["sentence of an --exclude manifest"] == 1  # de_5, "Gute Nacht."


def test_a_carriage_return_inside_a_line_is_damage_counted_but_crlf_and_cr_only_files_read_whole(locale_dir,
                                                                                                  tmp_path):
    """A lone CR ended a table line: "Hel\rlo" gave the transcript "Hel" and a bogus row "lo", uncounted. Now such a
    line is left out and counted with its file:line (its fields emptied: a row without a clip), the lines after it
    keep their numbers; CRLF line ends, and a file whose lines all end in lone CRs (old Mac tools), read as before."""
    from llm_srt.data.tables import STRAY_CR
    from llm_srt.data.commonvoice import read_table

    tsv = tmp_path / "t.tsv"
    tsv.write_bytes(b"path\tsentence\r\na.mp3\tHel\rlo\r\nb.mp3\tSecond\rc.mp3\tThird\nd.mp3\tFourth\r\n")
    rows = [(n, r["path"], r["sentence"]) for n, r in read_table(tsv, ("path", "sentence"))]
    assert rows == [(2, "", ""), (3, "", ""), (4, "d.mp3", "Fourth")]
    tsv.write_bytes(b"path\tsentence\ra.mp3\tHello\rb.mp3\tWorld\r")  # no line feed anywhere: CRs end the lines
    assert [(n, r["path"], r["sentence"]) for n, r in read_table(tsv, ("path", "sentence"))] == [
        (2, "a.mp3", "Hello"), (3, "b.mp3", "World")]
    train = locale_dir / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    train.write_bytes(b"\n".join([lines[0], lines[1].replace(b"Guten ", b"Guten\r")] + lines[2:]))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert summary.dropped == {STRAY_CR: 1} and summary.dropped_at[STRAY_CR] == [f"{train}:2"]  # was "no clip"
    assert summary.written == {"train": 1, "dev": 1, "test": 1}
    assert [r.transcript for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ['Er sagte "ja.']


def test_a_line_of_another_field_count_than_the_header_is_left_out_and_counted(locale_dir, tmp_path, audio_file,
                                                                               mp3_format):
    """A tab inside a sentence (14 fields to the header's 13) kept the line, its sentence cut short ("Er sagte"); a
    sentence broken over two lines kept '"Zeile eins', and its second line became a row whose clip was its
    sentence_domain: "clip .../general is missing", where the damage went uncounted."""
    for clip in ("de_8.mp3", "de_9.mp3"):
        audio_file(locale_dir / "clips" / clip, seconds=0.5, sr=48000, fmt=mp3_format)
    with open(locale_dir / "train.tsv", "a", encoding="utf-8") as f:
        f.write("spkG\tde_8.mp3\ts8\tEr sagte\tHallo zu mir.\tgeneral\t2\t0\t\t\t\t\tde\t\n"
                'spkH\tde_9.mp3\ts9\t"Zeile eins\nZeile zwei"\tgeneral\t2\t0\t\t\t\t\tde\t\n')
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert [r.transcript for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["Guten Tag.", 'Er sagte "ja.']
    assert summary.bad_clips == [] and summary.dropped == {WRONG_WIDTH: 3}
    assert [w.replace(f"{locale_dir}/", "") for w in summary.dropped_at[WRONG_WIDTH]] == [
        "train.tsv:4 (14 fields, the header has 13)", "train.tsv:5 (4 fields, the header has 13)",
        "train.tsv:6 (10 fields, the header has 13)"]


def test_validated_as_train_holds_out_the_clip_and_speaker_of_a_damaged_dev_line(locale_dir, tmp_path, audio_file,
                                                                                 mp3_format, layouts):
    """The dev line left out as damaged (a tab inside its sentence) no longer held its clip and speaker out of train:
    validated.tsv's whole copy of it, and another clip of its speaker, went into train."""
    dev = locale_dir / "dev.tsv"
    audio_file(locale_dir / "clips" / "de_10.mp3", seconds=0.5, sr=48000, fmt=mp3_format)  # dev keeps a usable line
    layouts.write_cv_table(dev, layouts.CV17_HEADER, _cv_rows(SPLITS["dev"] + [("de_10.mp3", "spkJ", "s10", "Hallo.")]))
    dev.write_text(dev.read_text(encoding="utf-8").replace("Danke schön.", "Danke\tschön."), encoding="utf-8")
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    assert [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["s1", "s2", "s5"]
    assert summary.dropped == {WRONG_WIDTH: 1, "validated.tsv clip by a dev/test speaker (client_id)": 1,
                               "validated.tsv clip of a dev/test sentence": 1}
    assert summary.dropped_at[WRONG_WIDTH] == [f"{dev}:2 (14 fields, the header has 13)"]


def test_a_failed_run_leaves_the_earlier_manifests_and_their_summary_as_they_were(locale_dir, tmp_path):
    """A re-run that stopped (a split without a usable clip) wrote its summary.json beside the earlier run's
    manifests, which it described no more."""
    out = tmp_path / "out"
    prepare_commonvoice(locale_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (locale_dir / "clips" / "de_4.mp3").unlink()  # test's only clip
    with pytest.raises(LLMSRTError, match=rf"All are listed in {re.escape(str(out / 'summary.failed.json'))} "
                                          rf"\(nothing else in {re.escape(str(out))} was changed\)"):
        prepare_commonvoice(locale_dir, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "summary.failed.json"} == before
    failed = json.loads((out / "summary.failed.json").read_text())
    assert [b["where"] for b in failed["bad_clips"]] == [f"{locale_dir / 'test.tsv'}:2"]
    assert prepare_commonvoice(locale_dir, out, splits=("train", "dev")).written == {"train": 2, "dev": 1}
    assert not (out / "summary.failed.json").exists()  # a run that went through replaces it
    assert json.loads((out / "summary.json").read_text())["written"] == {"train": 2, "dev": 1}


def test_a_wav_whose_recorder_never_wrote_its_sizes_is_measured_not_skipped(tmp_path):
    """load_audio decodes such a WAV (its header says 0 frames, the samples follow): prepare skipped it as holding no
    audio. A WAV of a header alone still holds none."""
    import struct

    import numpy as np

    from llm_srt.audio import write_wav
    from llm_srt.data.clips import check_clips

    whole, header = tmp_path / "unsized.wav", tmp_path / "header.wav"
    write_wav(whole, (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32))
    data = bytearray(whole.read_bytes())
    data[4:8] = data[40:44] = struct.pack("<I", 0)
    whole.write_bytes(bytes(data))
    header.write_bytes(bytes(data[:44]))
    seconds, bad = check_clips({whole: "t.tsv:2", header: "t.tsv:3"}, workers=1)
    assert seconds == {whole: pytest.approx(1.0)} and [b.clip for b in bad] == [str(header)]
    assert "holds no audio" in bad[0].reason


def test_ctrl_c_while_checking_clips_does_not_wait_for_the_queued_chunks(monkeypatch):
    """Only --strict cancelled the queued chunks: on Ctrl-C leaving the pool checked every clip still queued (an hour
    on a big corpus), and a second Ctrl-C hung again."""
    import time

    ran = []

    def chunk(paths, known, read_header, decode):
        ran.append(paths)
        time.sleep(0.05)
        return [(p, 1.0, None) for p in paths]

    class Interrupted(clips_module.tqdm):
        def update(self, n=1):
            raise KeyboardInterrupt  # Ctrl-C reaches the main thread as the first chunk's clips are counted

    monkeypatch.setattr(clips_module, "CHUNK", 1)
    monkeypatch.setattr(clips_module, "_check_chunk", chunk)
    monkeypatch.setattr(clips_module, "tqdm", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        clips_module.check_clips({Path(f"/clips/{i}.mp3"): f"t.tsv:{i + 1}" for i in range(50)}, workers=1)
    assert len(ran) < 10  # the chunk in hand may finish; the queued ones are cancelled


@pytest.mark.parametrize("listing", [None, "clip_durations.tsv"])
def test_clips_cut_short_are_bad_in_test_and_dev_whatever_the_duration_list(locale_dir, tmp_path, layouts,
                                                                               audio_file, mp3_format, listing):
    """An MP3 whose Xing header counts its frames, cut in half, was written with its whole length (the header's, or
    clip_durations.tsv's) and passed `prepare check`; load_audio refuses it ("only the first ... decode"), so
    evaluation scored it as an empty hypothesis. Only decoding finds it (a FLAC alike): test's and dev's clips are
    decoded whole. An Ogg cut short is found from its last page wherever its header is read (train without a list)."""
    if mp3_format != "MP3":
        pytest.skip("this libsndfile writes no MP3")
    layouts.write_cv_table(locale_dir / "test.tsv", layouts.CV17_HEADER, _cv_rows(SPLITS["test"] + EXTRA[:1]))
    layouts.write_cv_table(locale_dir / "dev.tsv", layouts.CV17_HEADER, _cv_rows(SPLITS["dev"] + EXTRA[1:2]))
    clips = locale_dir / "clips"
    audio_file(clips / "de_4.mp3", seconds=2.0, sr=48000, fmt="MP3")  # test
    audio_file(clips / "de_3.mp3", seconds=2.0, sr=48000, fmt="FLAC")  # dev: libsndfile goes by the content
    audio_file(clips / "de_1.mp3", seconds=5.0, sr=48000, fmt="OGG")  # train (a short Ogg cut does not open)
    for name, kept in (("de_4.mp3", 1 / 2), ("de_3.mp3", 1 / 2), ("de_1.mp3", 3 / 4)):
        (clips / name).write_bytes((clips / name).read_bytes()[:int((clips / name).stat().st_size * kept)])
    if listing:
        layouts.write_clip_durations(locale_dir, {f"de_{i}.mp3": 2000 for i in range(1, 8)})
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    reasons = {Path(b.clip).name: b.reason.split(".mp3 ")[1] for b in summary.bad_clips}
    assert re.fullmatch(r"is cut short: only the first (0\.\d|1\.0) s of 2\.0 s decode \(.*\)", reasons.pop("de_4.mp3"))
    assert re.fullmatch(r"is cut short: only the first (0\.\d|1\.0) s of 2\.0 s decode \(.*\)", reasons.pop("de_3.mp3"))
    # (listed: its header's 2.6 s is not the list's 2 s, so it is checked as test's are)
    assert re.fullmatch(r"is cut short: only the first [1-4]\.\d s decode \(it ends before its Ogg stream's last "
                        r"page\)", reasons.pop("de_1.mp3")) and reasons == {}
    assert [r.id for r in read_manifest(tmp_path / "out" / "test.jsonl")] == ["commonvoice:deu:de_5"]
    assert [r.id for r in read_manifest(tmp_path / "out" / "dev.jsonl")] == ["commonvoice:deu:de_6"]


def test_a_damaged_mp3_is_named_damaged_not_missing(tmp_path):
    """libsndfile answers "File does not exist" for an mp3 it cannot parse: the reason must not send a user with a
    release's damaged clips looking for missing files."""
    clip = tmp_path / "damaged.mp3"
    clip.write_bytes(b"garbage" * 100)
    path, seconds, reason = clips_module._check(clip, None, True)
    assert seconds == 0.0 and "does not exist" not in reason
    assert reason == "cannot be decoded (not a decodable audio file: damaged, or not wav/flac/mp3/ogg)"


def test_the_language_comes_from_the_folder_given_as_dot(locale_dir, tmp_path, monkeypatch):
    """`cd cv-corpus-17.0/de && llm-srt prepare commonvoice --locale-dir . ...`: the folder's name is read from
    its resolved path (it was '', refused as an unknown locale)."""
    monkeypatch.chdir(locale_dir)
    summary = prepare_commonvoice(Path("."), tmp_path / "out", splits=("test",))
    assert summary.written == {"test": 1}
    assert read_manifest(tmp_path / "out" / "test.jsonl")[0].src_lang == "deu"


def test_tables_that_start_with_a_byte_order_mark_are_read_as_without_one(locale_dir, tmp_path):
    """A table saved by a spreadsheet starts with a UTF-8 byte order mark: the header read '\\ufeffclient_id', so
    every speaker id was empty: --exclude silently stopped leaving out an evaluation clip's speaker, and
    validated_as_train stopped with "header lacks column(s) client_id"."""
    from llm_srt.data.manifest import Row, write_manifest

    def manifest(name, clip):
        write_manifest(tmp_path / name, [Row(id="x", audio=f"cv4/clips/{clip}", duration=1.0, src_lang="deu",
                                             transcript="Anders.", tgt_lang="", translation="", split="test",
                                             corpus="covost2", sentence_id="x")])
        return tmp_path / name

    validated = locale_dir / "validated.tsv"
    header = validated.read_text(encoding="utf-8").splitlines()[0].split("\t")
    extra = {"client_id": "spkB", "path": "de_8.mp3", "sentence_id": "s8", "sentence": "Noch ein Satz."}
    with open(validated, "a", encoding="utf-8") as f:  # another clip of de_2's speaker, in validated.tsv alone
        f.write("\t".join(extra.get(c, "") for c in header) + "\n")
    for name in ("train.tsv", "dev.tsv", "test.tsv", "validated.tsv"):
        (locale_dir / name).write_bytes(codecs.BOM_UTF8 + (locale_dir / name).read_bytes())
    # de_6 is in validated.tsv alone, read by spkC: dev's de_3, by spkC too, is left out
    summary = prepare_commonvoice(locale_dir, tmp_path / "dev", splits=("dev",), exclude=[manifest("a", "de_6.mp3")])
    assert summary.written == {"dev": 0}
    assert summary.dropped_at == {"clip by the speaker of an --exclude manifest's clip (client_id)": [
        f"{locale_dir}/dev.tsv:2"]}
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True,
                                  exclude=[manifest("b", "de_2.mp3")])
    assert [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["s1", "s5"]
    assert summary.dropped == {
        "clip of an --exclude manifest": 1, "clip by the speaker of an --exclude manifest's clip (client_id)": 1,
        "validated.tsv clip by a dev/test speaker (client_id)": 1, "validated.tsv clip of a dev/test sentence": 1}


@pytest.mark.parametrize("listing", ["clip_durations.tsv", "times.txt"])
def test_a_duration_list_that_starts_with_a_byte_order_mark_is_read(locale_dir, tmp_path, layouts, listing):
    """clip_durations.tsv's header read '\\ufeffclip' (refused), times.txt's first line did not parse (refused)."""
    ms = {clip: 520 + 100 * i for i, (clip, *_) in enumerate([i for s in SPLITS.values() for i in s])}  # agreeing
    write = layouts.write_clip_durations if listing == "clip_durations.tsv" else layouts.write_times_txt
    path = write(locale_dir, ms)
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert summary.durations_from == listing
    assert [r.duration for r in read_manifest(tmp_path / "out" / "train.jsonl")] == [0.52, 0.62]  # the list's


@pytest.mark.parametrize("listing", ["clip_durations.tsv", "times.txt"])
def test_a_duration_list_that_is_not_utf8_is_a_one_line_error_naming_it(locale_dir, tmp_path, layouts, listing):
    """A byte that is not UTF-8 in the duration list ended in a bare UnicodeDecodeError traceback."""
    ms = {clip: 4000 for clip, *_ in [i for s in SPLITS.values() for i in s]}
    write = layouts.write_clip_durations if listing == "clip_durations.tsv" else layouts.write_times_txt
    path = write(locale_dir, ms)
    path.write_bytes(path.read_bytes() + b"\xff\xfe broken\n")
    with pytest.raises(LLMSRTError, match=rf"/{listing}: not UTF-8 text \(invalid start byte\); remove the file"):
        prepare_commonvoice(locale_dir, tmp_path / "out")


def test_a_clip_whose_header_gives_no_length_is_measured_by_decoding_it_or_counted_bad(locale_dir, tmp_path,
                                                                                         audio_file, monkeypatch):
    """libsndfile gives SF_COUNT_MAX frames for a FLAC whose total-samples field is 0 (as one written to a pipe has):
    it was measured as 5.8e14 s, left out of train as "longer than 30 s", and written to test, where evaluation
    could not decode it."""
    data = bytearray(audio_file(tmp_path / "whole.flac", seconds=1.0, fmt="FLAC").read_bytes())
    streaminfo = 8  # "fLaC", then the block's 4-byte header; its total samples: the low 4 bits of byte 13 and 14-17
    data[streaminfo + 13] &= 0xF0
    data[streaminfo + 14:streaminfo + 18] = bytes(4)
    clip = locale_dir / "clips" / "de_1.mp3"  # train; libsndfile goes by the content, not the name
    clip.write_bytes(bytes(data))
    assert sf.info(str(clip)).frames >= 1 << 62
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")  # libsndfile's own read decodes it to its end
    assert summary.written == {"train": 2, "dev": 1, "test": 1} and summary.bad_clips == []  # was refused as
    #   "cannot decode audio whose header gives no length ... re-encode it to a file first"
    rows = {r.audio: r for r in read_manifest(tmp_path / "out" / "train.jsonl")}
    assert rows[str(clip)].duration == pytest.approx(1.0, abs=0.01)
    assert not any("longer than" in reason for reason in summary.dropped)
    import numpy as np

    monkeypatch.setattr(clips_module, "load_audio", lambda path: np.zeros(24000, np.float32))  # a decoder that can
    assert clips_module.check_clips({clip: "test.tsv:2"}, workers=1) == ({clip: 1.5}, [])


def test_a_test_sentence_typed_in_another_unicode_form_stays_out_of_train(locale_dir, tmp_path, layouts):
    """text_id hashed the bytes: the same sentence decomposed (NFD, as macOS writes it) by another speaker in
    validated.tsv had another id, and --validated-as-train put a test sentence into train."""
    import hashlib
    import unicodedata

    from llm_srt.data.commonvoice import text_id

    composed = "Schöne Grüße."
    splits = {**SPLITS, "test": [("de_4.mp3", "spkD", "s4", composed)]}
    extra = EXTRA[:2] + [("de_7.mp3", "spkF", "s7", unicodedata.normalize("NFD", composed))]
    for split, items in splits.items():  # Common Voice 4: no sentence_id column, ids from the text
        layouts.write_cv_table(locale_dir / f"{split}.tsv", layouts.CV4_HEADER, _cv_rows(items))
    layouts.write_cv_table(locale_dir / "validated.tsv", layouts.CV4_HEADER,
                           _cv_rows([i for items in splits.values() for i in items] + extra))
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    assert [r.transcript for r in train] == ["Guten Tag.", 'Er sagte "ja.', "Gute Nacht."]
    assert summary.dropped["validated.tsv clip of a dev/test sentence"] == 1
    assert summary.dropped_at["validated.tsv clip of a dev/test sentence"] == [f"{locale_dir / 'validated.tsv'}:8"]
    assert text_id(unicodedata.normalize("NFD", composed)) == text_id(f" {composed} ") \
        == hashlib.sha1(composed.encode()).hexdigest()[:16]  # an NFC sentence keeps the id manifests hold
    # the transcripts are written in NFC whatever form the table holds
    layouts.write_cv_table(locale_dir / "test.tsv", layouts.CV4_HEADER,
                           _cv_rows([("de_4.mp3", "spkD", "s4", unicodedata.normalize("NFD", composed))]))
    prepare_commonvoice(locale_dir, tmp_path / "nfd", splits=("test",))
    assert [r.transcript for r in read_manifest(tmp_path / "nfd" / "test.jsonl")] == [composed]


def test_the_language_comes_from_the_folder_name_as_given_not_from_a_links_target(locale_dir, tmp_path, monkeypatch):
    """cv/de -> /data/cv-corpus/de_17 was refused: "folder name 'de_17' is not a Common Voice locale"."""
    target = locale_dir.rename(locale_dir.parent / "de_17")
    link = tmp_path / "cv" / "de"
    link.parent.mkdir()
    link.symlink_to(target)
    prepare_commonvoice(link, tmp_path / "out", splits=("test",))
    assert read_manifest(tmp_path / "out" / "test.jsonl")[0].src_lang == "deu"
    monkeypatch.chdir(link)  # `cd cv/de && llm-srt prepare commonvoice --locale-dir .`: the shell's $PWD
    monkeypatch.setenv("PWD", str(link))
    prepare_commonvoice(Path("."), tmp_path / "dot", splits=("test",))
    assert read_manifest(tmp_path / "dot" / "test.jsonl")[0].src_lang == "deu"
    other = tmp_path / "cv" / "xx"
    other.symlink_to(target)
    with pytest.raises(LLMSRTError, match=r"folder name 'xx' \(a link to 'de_17'\) is not a Common Voice locale"):
        prepare_commonvoice(other, tmp_path / "out")


def test_a_table_the_os_will_not_read_is_one_line_naming_it(locale_dir, tmp_path, monkeypatch, layouts):
    from llm_srt.data.tables import text_lines

    refused = {locale_dir / "dev.tsv", locale_dir / "clip_durations.tsv"}

    def guarded(path, *args, **kwargs):
        if Path(path) in refused:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(tables, "open", guarded, raising=False)  # (tables.open_table opens the tables)
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(locale_dir / 'dev.tsv'))}: cannot read \(Permission "
                                          r"denied\); check its permissions, or extract it again from the release$"):
        prepare_commonvoice(locale_dir, tmp_path / "out")
    layouts.write_clip_durations(locale_dir, {"de_4.mp3": 500})
    with pytest.raises(LLMSRTError, match=r"clip_durations\.tsv: cannot read \(Permission denied\)"):
        prepare_commonvoice(locale_dir, tmp_path / "out", splits=("test",))

    class Failing:  # a disk error part way through the file
        def __iter__(self):
            yield b"client_id\tpath\n"
            raise OSError(5, "Input/output error")

    with pytest.raises(LLMSRTError, match=r"^t\.tsv: cannot read \(Input/output error\)"):
        list(text_lines(Failing(), "t.tsv"))


def test_cr_cr_lf_tables_read_as_lf_and_a_table_with_no_usable_line_stops_the_run(locale_dir, tmp_path):
    """A CRLF table re-saved in text mode on Windows ends its lines in CR CR LF: the header was read as damaged, "header
    lacks column(s) path, sentence (found: )". A table whose every line is left out stopped nothing: its split was
    written empty; it stops the run, naming the most common reason and its first file:line."""
    plain = prepare_commonvoice(locale_dir, tmp_path / "plain", validated_as_train=True)
    for table in locale_dir.glob("*.tsv"):
        table.write_bytes(table.read_bytes().replace(b"\n", b"\r\r\n"))
    crcr = prepare_commonvoice(locale_dir, tmp_path / "crcr", validated_as_train=True)
    assert crcr.written == plain.written == {"train": 3, "dev": 1, "test": 1} and crcr.dropped == plain.dropped
    for split in ("train", "dev", "test"):
        assert read_manifest(tmp_path / "crcr" / f"{split}.jsonl") == read_manifest(tmp_path / "plain" /
                                                                                     f"{split}.jsonl")
    train = locale_dir / "train.tsv"
    header, *lines = train.read_bytes().split(b"\r\r\n")
    train.write_bytes(b"\n".join([header] + [line.replace(b" ", b"\r ") for line in lines]))
    with pytest.raises(LLMSRTError) as e:
        prepare_commonvoice(locale_dir, tmp_path / "bad")
    assert str(e.value) == (f"{train}:2: no line of this table can be used (2 of its 2 lines: {STRAY_CR}); fix the "
                            "table, or extract it again from the release")


def test_validated_as_train_counts_a_damaged_validated_line_only_when_its_clip_is_left_out(locale_dir, tmp_path):
    """validated.tsv's damaged line of a clip train.tsv lists (de_1) was counted as a row left out, though that clip is
    in train; the damaged line of a clip no split table lists (de_5) is still counted."""
    validated = locale_dir / "validated.tsv"
    text = validated.read_text(encoding="utf-8")
    validated.write_text(text.replace("Guten Tag.", "Guten\tTag.").replace("Gute Nacht.", "Gute\tNacht."),
                         encoding="utf-8")
    summary = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    assert [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["s1", "s2"]
    assert summary.dropped[WRONG_WIDTH] == 1
    assert summary.dropped_at[WRONG_WIDTH] == [f"{validated}:6 (14 fields, the header has 13)"]


def test_a_clip_name_holding_a_nul_byte_is_a_bad_clip_named_by_its_line(locale_dir, tmp_path, layouts):
    """A damaged table line whose path holds a NUL byte (no file name can): stat() raised "ValueError: embedded null
    byte" in the clip check's worker, a traceback that ended the whole conversion. It is a bad clip now, named by
    its tsv:line (the NUL shown as an escape), and with --strict the one-line stop at that line."""
    rows = _cv_rows(SPLITS["train"] + [("de_\x009.mp3", "spkG", "s9", "Kaputt.")])
    layouts.write_cv_table(locale_dir / "train.tsv", layouts.CV17_HEADER, rows)
    summary = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert summary.written == {"train": 2, "dev": 1, "test": 1}
    [bad] = summary.bad_clips
    assert bad.where == f"{locale_dir / 'train.tsv'}:4" and "\\x00" in bad.reason and "\x00" not in bad.reason
    assert bad.reason.endswith("is no file name: it holds a NUL byte (a damaged table line)")
    with pytest.raises(LLMSRTError, match=r"train.tsv:4: clip .*de_\\x009.mp3 is no file name"):
        prepare_commonvoice(locale_dir, tmp_path / "strict", strict=True)


def test_an_exclude_file_that_is_no_manifest_is_told_what_exclude_takes(locale_dir, tmp_path):
    """`--exclude notes.txt` was told to "skip them (evaluate --skip-bad, train data.skip_bad=true)", options prepare
    does not have; the advice is --exclude's own."""
    notes = tmp_path / "notes.txt"
    notes.write_text("de_2.mp3\nde_3.mp3\n", encoding="utf-8")
    with pytest.raises(LLMSRTError) as e:
        prepare_commonvoice(locale_dir, tmp_path / "out", exclude=[notes])
    first = str(e.value).splitlines()[0]
    assert first == (f"{notes}: not a JSON-lines manifest, no line of it is JSON (2 lines); --exclude takes a "
                     "manifest (JSONL, e.g. an `llm-srt prepare` run's test.jsonl): fix them, or give that manifest "
                     "instead:")
    assert "skip-bad" not in str(e.value) and "skip_bad" not in str(e.value)
    assert not (tmp_path / "out").exists()
