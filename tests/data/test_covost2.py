import codecs
import json
import re
import subprocess
from collections import Counter

import pytest

from llm_srt.data import clips as clips_module
from llm_srt.data.clips import REPEATED
from llm_srt.data.commonvoice import WRONG_WIDTH
from llm_srt.data.covost2 import DAMAGED_SOURCE, NO_TRANSLATION, prepare_covost2
from llm_srt.data.manifest import read_manifest
from llm_srt.data.tables import STRAY_CR
from llm_srt.errors import LLMSRTError

# Common Voice 4 English: clip -> (sentence, client_id). en_2's sentence holds a bare " (QUOTE_NONE keeps it, and
# the next line stays a row of its own); en_7 is an empty file, en_9 no decoder opens; en_8 is in the CoVoST tables
# but not in validated.tsv (another Common Voice version).
VALIDATED = {
    "common_voice_en_1.mp3": ("Hello there.", "spk1"),
    "common_voice_en_2.mp3": ('He said "hi to me.', "spk2"),
    "common_voice_en_3.mp3": ("See you.", "spk3"),
    "common_voice_en_4.mp3": ("Thanks a lot.", "spk4"),
    "common_voice_en_5.mp3": ("Good night.", "spk1"),
    "common_voice_en_6.mp3": ("Nothing to see.", "spk5"),
    "common_voice_en_7.mp3": ("An empty clip.", "spk6"),
    "common_voice_en_9.mp3": ("A broken clip.", "spk6"),
}
# the release table's rows: clip -> (German translation, split); Japanese = "[ja] " + English sentence.
# en_2's translation holds a " (written escaped, \"), en_4's a backslash (written \\).
COVOST = {
    "common_voice_en_1.mp3": ("Hallo.", "train"),
    "common_voice_en_2.mp3": ('Er sagte "hallo" zu mir.', "train"),
    "common_voice_en_3.mp3": ("Bis dann.", "dev"),
    "common_voice_en_4.mp3": ("Danke \\ schön.", "test"),
    "common_voice_en_5.mp3": ("Gute Nacht.", "train_covost"),
    "common_voice_en_6.mp3": ("REMOVE", "train"),
    "common_voice_en_7.mp3": ("Leer.", "train"),
    "common_voice_en_8.mp3": ("Nicht da.", "train"),
    "common_voice_en_9.mp3": ("Kaputt.", "dev"),
}
SECONDS = {"common_voice_en_1.mp3": 1.0, "common_voice_en_2.mp3": 1.25, "common_voice_en_3.mp3": 1.5,
           "common_voice_en_4.mp3": 1.75, "common_voice_en_5.mp3": 0.75}


def _translation(clip, tgt):
    de, _ = COVOST[clip]
    if tgt == "de" or de == "REMOVE":
        return de if tgt == "de" else ""  # en_6: REMOVE in German, empty in Japanese
    return "[ja] " + VALIDATED.get(clip, ("?",))[0]


@pytest.fixture
def release(tmp_path, audio_file, mp3_format, layouts):
    """TSV_DIR with the released en_de and en_ja tables, and the Common Voice 4 English folder."""
    cv = tmp_path / "cv4" / "en"
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": spk, "path": clip, "sentence": text, "up_votes": 2, "down_votes": 0}
                            for clip, (text, spk) in VALIDATED.items()])
    for clip, seconds in SECONDS.items():
        audio_file(cv / "clips" / clip, seconds=seconds, sr=48000, fmt=mp3_format)
    audio_file(cv / "clips" / "common_voice_en_6.mp3", seconds=0.5, sr=48000, fmt=mp3_format)
    layouts.write_bytes(cv / "clips" / "common_voice_en_7.mp3")
    layouts.write_bytes(cv / "clips" / "common_voice_en_9.mp3", b"not an mp3 at all " * 20)
    tsv = tmp_path / "covost"
    for tgt in ("de", "ja"):
        layouts.write_covost_table(tsv / f"covost_v2.en_{tgt}.tsv", layouts.COVOST_RELEASE_HEADER,
                                   [{"path": clip, "translation": _translation(clip, tgt), "split": split}
                                    for clip, (_, split) in COVOST.items()])
    return tsv, cv


def _rows(out):
    return {r.id: r for split in ("train", "dev", "test") for r in read_manifest(out / f"{split}.jsonl")}


def test_release_tables_joined_with_common_voice_4(release, tmp_path):
    tsv, cv = release
    summary = prepare_covost2(tsv, cv, tmp_path / "out", workers=2)
    rows = _rows(tmp_path / "out")
    # train = train + train_covost (en_5); en_6 (REMOVE / empty) gives its ASR row alone; en_8 (not in
    # validated.tsv) and the bad clips en_7 (empty) and en_9 (undecodable) give no rows
    assert summary.written == {"train": 10, "dev": 3, "test": 3}
    assert {r.sentence_id for r in rows.values()} == {f"common_voice_en_{i}" for i in (1, 2, 3, 4, 5, 6)}
    assert rows["covost2:common_voice_en_5:deu"].split == "train"
    assert Counter((r.src_lang, r.tgt_lang) for r in rows.values()) == {("eng", ""): 6, ("eng", "deu"): 5,
                                                                        ("eng", "jpn"): 5}
    # transcripts come from validated.tsv (bare " kept); escapes in the tables are undone
    row = rows["covost2:common_voice_en_2:deu"]
    assert (row.transcript, row.translation) == ('He said "hi to me.', 'Er sagte "hallo" zu mir.')
    assert rows["covost2:common_voice_en_3"].transcript == "See you."
    assert rows["covost2:common_voice_en_4:deu"].translation == "Danke \\ schön."
    assert rows["covost2:common_voice_en_2:jpn"].translation == '[ja] He said "hi to me.'
    assert summary.dropped == {NO_TRANSLATION: 2, "clip not in validated.tsv (CoVoST 2 needs Common Voice 4)": 2}
    # the bad clips: counted, named with their table line, listed in summary.json; their 4 table rows left out
    assert [b.where.rsplit("/", 1)[1] for b in summary.bad_clips] == ["covost_v2.en_de.tsv:8",
                                                                     "covost_v2.en_de.tsv:10"]
    assert "is empty (0 bytes)" in summary.bad_clips[0].reason and "cannot be decoded" in summary.bad_clips[1].reason
    assert summary.rows_without_clip == 4
    lines = "\n".join(summary.lines())
    assert "skipped 2 bad clips (4 table rows)" in lines and "common_voice_en_9.mp3 cannot be decoded" in lines
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [b["clip"].rsplit("/", 1)[1] for b in saved["bad_clips"]] == ["common_voice_en_7.mp3",
                                                                        "common_voice_en_9.mp3"]
    # durations from the mp3 headers (no duration list in Common Voice 4); mp3 framing adds a little
    assert [rows[f"covost2:{c[:-4]}"].duration for c in SECONDS] == pytest.approx(list(SECONDS.values()), abs=0.06)


def test_get_covost_splits_files_give_the_same_manifests(release, tmp_path, layouts):
    tsv, cv = release
    prepare_covost2(tsv, cv, tmp_path / "from_release", pairs=[("eng", "deu")])
    # what get_covost_splits.py writes: the join, train = train + train_covost, REMOVE rows still there
    split_dir = tmp_path / "splits"
    for split in ("train", "dev", "test"):
        rows = [{"path": clip, "sentence": VALIDATED[clip][0], "translation": de, "client_id": VALIDATED[clip][1]}
                for clip, (de, label) in COVOST.items() if clip in VALIDATED and label.split("_")[0] == split]
        layouts.write_covost_table(split_dir / f"covost_v2.en_de.{split}.tsv", layouts.COVOST_SPLIT_HEADER, rows)
    summary = prepare_covost2(split_dir, cv, tmp_path / "from_splits", pairs=[("eng", "deu")])
    ours = {i: (r.transcript, r.translation, r.split, r.duration) for i, r in _rows(tmp_path / "from_splits").items()}
    official = {i: (r.transcript, r.translation, r.split, r.duration)
                for i, r in _rows(tmp_path / "from_release").items()}
    assert ours == official and len(ours) == 11
    assert summary.dropped == {NO_TRANSLATION: 1} and len(summary.bad_clips) == 2
    dev = split_dir / "covost_v2.en_de.train.tsv"  # a CR in a split file's line: counted as damage (was "no clip")
    lines = dev.read_bytes().split(b"\n")
    dev.write_bytes(b"\n".join([lines[0], lines[1].replace(b"\t", b"\r\t", 1)] + lines[2:]))
    summary = prepare_covost2(split_dir, cv, tmp_path / "damaged", pairs=[("eng", "deu")])
    assert summary.dropped == {NO_TRANSLATION: 1, STRAY_CR: 1} and summary.dropped_at[STRAY_CR] == [f"{dev}:2"]
    assert len(_rows(tmp_path / "damaged")) == 9  # the line's clip gave a transcript row and a translation row


def _release_rows(tgt, overrides=(), extra=()):
    """The release table's rows for `tgt`, with (clip -> split) `overrides` and `extra` rows appended."""
    splits = {clip: dict(overrides).get(clip, split) for clip, (_, split) in COVOST.items()}
    return [{"path": clip, "translation": _translation(clip, tgt), "split": split}
            for clip, split in splits.items()] + list(extra)


def test_rows_without_transcript_or_path_are_left_out_and_counted(release, tmp_path, layouts):
    tsv, cv = release
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": spk, "path": clip, "sentence": "" if clip.endswith("_5.mp3") else text}
                            for clip, (text, spk) in VALIDATED.items()])
    layouts.write_covost_table(tsv / "covost_v2.en_de.tsv", layouts.COVOST_RELEASE_HEADER,
                               _release_rows("de", extra=[{"path": "", "translation": "Ohne Pfad.", "split": "dev"}]))
    summary = prepare_covost2(tsv, cv, tmp_path / "out")
    assert not any("common_voice_en_5" in i for i in _rows(tmp_path / "out"))
    assert summary.dropped["empty transcript (sentence)"] == 2 and summary.dropped["no clip (empty path)"] == 1
    assert [w.rsplit("/", 1)[1] for w in summary.dropped_at["no clip (empty path)"]] == ["covost_v2.en_de.tsv:11"]
    assert [w.rsplit("/", 1)[1] for w in summary.dropped_at["empty transcript (sentence)"]] == [
        "covost_v2.en_de.tsv:6", "covost_v2.en_ja.tsv:6"]
    assert summary.dropped[NO_TRANSLATION] == 2  # as before


def test_a_clip_listed_again_is_kept_once_in_the_first_split_of_test_dev_train(release, tmp_path, layouts):
    tsv, cv = release
    # en_de repeats en_1's line; en_ja puts en_2 (train in en_de) in test
    layouts.write_covost_table(tsv / "covost_v2.en_de.tsv", layouts.COVOST_RELEASE_HEADER,
                               _release_rows("de", extra=_release_rows("de")[:1]))
    layouts.write_covost_table(tsv / "covost_v2.en_ja.tsv", layouts.COVOST_RELEASE_HEADER,
                               _release_rows("ja", overrides={"common_voice_en_2.mp3": "test"}))
    summary = prepare_covost2(tsv, cv, tmp_path / "out")
    by_split = {split: {r.id for r in read_manifest(tmp_path / "out" / f"{split}.jsonl")}  # the validator passes
                for split in ("train", "dev", "test")}
    assert {"covost2:common_voice_en_2", "covost2:common_voice_en_2:jpn"} <= by_split["test"]
    assert not any("common_voice_en_2" in i for i in by_split["dev"] | by_split["train"])
    assert "covost2:common_voice_en_1:deu" in by_split["train"]
    assert summary.dropped[REPEATED] == 2
    assert [w.replace(f"{tsv}/", "") for w in summary.dropped_at[REPEATED]] == [
        "covost_v2.en_de.tsv:3 (first at covost_v2.en_ja.tsv:3)",
        "covost_v2.en_de.tsv:11 (first at covost_v2.en_de.tsv:2)"]


def test_strict_stops_at_the_first_bad_clip(release, tmp_path, monkeypatch):
    tsv, cv = release
    monkeypatch.setattr(clips_module, "CHUNK", 1)  # one clip per task: the first bad one is still reported first
    with pytest.raises(LLMSRTError, match=r"covost_v2\.en_de\.tsv:8: clip .*common_voice_en_7\.mp3 is empty"):
        prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")], strict=True, workers=4)


def test_clear_errors_for_a_wrong_layout(release, tmp_path, layouts):
    tsv, cv = release
    (cv / "validated.tsv").rename(cv / "validated.old")
    with pytest.raises(LLMSRTError, match=r"validated\.tsv: missing; covost_v2\.en_de\.tsv holds path, translation "
                                          r"and split only"):
        prepare_covost2(tsv, cv, tmp_path / "out")
    (cv / "validated.old").rename(cv / "validated.tsv")
    layouts.write_covost_table(tsv / "covost_v2.zh-CN_en.tsv", layouts.COVOST_RELEASE_HEADER, [])
    with pytest.raises(LLMSRTError, match=r"one Common Voice locale folder, but the tables translate from en, "
                                          r"zh-CN: pick one source with --pairs"):
        prepare_covost2(tsv, cv, tmp_path / "out")
    # a folder holding one folder per locale is the other way
    with pytest.raises(LLMSRTError, match=r"a folder holding zh-CN/"):
        prepare_covost2(tsv, cv.parent, tmp_path / "out")
    (tsv / "covost_v2.zh-CN_en.tsv").write_text("file\tsentence\n", encoding="utf-8")
    (cv.parent / "zh-CN" / "clips").mkdir(parents=True)
    (cv.parent / "zh-CN" / "validated.tsv").write_text("path\tsentence\tclient_id\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"tsv:1: header lacks column\(s\) path, translation, split"):
        prepare_covost2(tsv, cv.parent, tmp_path / "out", pairs=[("zho", "eng")])


def test_another_locales_folder_is_an_error_not_empty_manifests(release, tmp_path, layouts):
    """--cv-dir at the German folder for English tables joined no clip: it wrote three empty manifests and exited 0."""
    tsv, cv = release
    de = tmp_path / "cv4" / "de"
    layouts.write_cv_table(de / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": "s", "path": "common_voice_de_1.mp3", "sentence": "Hallo.", "up_votes": 2,
                             "down_votes": 0}])
    (de / "clips").mkdir()
    with pytest.raises(LLMSRTError, match=r"covost_v2\.en_de\.tsv: none of its 9 clips is in .*de/validated\.tsv \("
                                          r"the table names e\.g\. common_voice_en_9\.mp3, the folder holds e\.g\. "
                                          r"common_voice_de_1\.mp3\); point --cv-dir at the Common Voice 4 'en' "
                                          r"folder"):
        prepare_covost2(tsv, de, tmp_path / "out", pairs=[("eng", "deu")])
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_tables_still_packed_as_they_download_are_named_with_the_command_that_extracts_them(release, tmp_path):
    tsv, cv = release
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "covost_v2.en_de.tsv.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(LLMSRTError) as e:
        prepare_covost2(packed, cv, tmp_path / "out")
    assert str(e.value) == (f"{packed / 'covost_v2.en_de.tsv.tar.gz'}: this table is still packed; extract it first: "
                            f"tar -xzf {packed / 'covost_v2.en_de.tsv.tar.gz'} -C {packed}")


def test_tables_still_packed_beside_unpacked_ones_are_all_named_in_one_line(release, tmp_path):
    """Without --pairs, en_ja and en_zh-CN still packed beside en_de unpacked: only the German rows were written, the
    packed tables skipped without a word. Every one is named, with how to unpack them, or to give --pairs."""
    tsv, cv = release
    (tsv / "covost_v2.en_ja.tsv").unlink()
    for name in ("covost_v2.en_ja.tsv.tar.gz", "covost_v2.en_zh-CN.tsv.tar.gz"):
        (tsv / name).write_bytes(b"\x1f\x8b")  # as they download
    (tsv / "covost_v2.en_de.tsv.tar.gz").write_bytes(b"\x1f\x8b")  # unpacked already: not named
    with pytest.raises(LLMSRTError) as e:
        prepare_covost2(tsv, cv, tmp_path / "out")
    message = str(e.value)
    assert "\n" not in message and message.startswith(
        f"{tsv}: 2 tables are still packed (covost_v2.en_ja.tsv.tar.gz, covost_v2.en_zh-CN.tsv.tar.gz); extract them "
        f"first: for a in {tsv}/covost_v2.*.tsv.tar.gz; do ")
    assert message.endswith("; or give --pairs eng-deu to convert only the tables unpacked")
    assert not (tmp_path / "out").exists()
    loop = message.split("extract them first: ", 1)[1].split("; or give --pairs")[0]
    done = subprocess.run(["bash", "-c", loop.replace("tar -xzf", "echo")], capture_output=True, text=True)
    assert done.stdout.split() == [f"{tsv}/covost_v2.en_ja.tsv.tar.gz", "-C", str(tsv),
                                   f"{tsv}/covost_v2.en_zh-CN.tsv.tar.gz", "-C", str(tsv)]  # not en_de's


def test_every_pair_asked_for_needs_its_table(release, tmp_path):
    """--pairs eng-deu,eng-jpn,eng-fra with only en_de extracted wrote the German rows alone and said nothing."""
    tsv, cv = release
    (tsv / "covost_v2.en_ja.tsv").unlink()
    (tsv / "covost_v2.en_ja.tsv.tar.gz").write_bytes(b"\x1f\x8b")  # as it downloads
    with pytest.raises(LLMSRTError) as e:
        prepare_covost2(tsv, cv, tmp_path / "out",
                        pairs=[("eng", "deu"), ("eng", "jpn"), ("eng", "fra"), ("zho", "eng"), ("deu", "fra")])
    assert str(e.value) == (
        f"{tsv}: no table for --pairs eng-jpn (covost_v2.en_ja.tsv is still packed: extract it first with tar -xzf "
        f"{tsv}/covost_v2.en_ja.tsv.tar.gz -C {tsv}); eng-fra (no covost_v2.en_fr.tsv: CoVoST 2 has no such "
        "direction, of the languages llm_srt/languages.py knows it translates only English into deu, ind, jpn, zho); "
        "zho-eng (covost_v2.zh-CN_en.tsv not found); deu-fra (no covost_v2.de_fr.tsv: CoVoST 2 has no such "
        "direction, each of its 36 is into or out of English); add the tables there or leave those pairs out of "
        "--pairs")
    assert not (tmp_path / "out").exists()
    assert prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")]).written  # the pairs it has still run


def test_a_row_without_translation_still_gives_its_clip_s_asr_row(release, tmp_path):
    """en_6's translation is REMOVE in en_de and empty in en_ja: the whole record went, its ASR row too, though the
    transcript is Common Voice's own (for X->eng no other table supplies it; fairseq's prep_covost_data.py drops no
    REMOVE row from its ASR data either). Only the translation rows are left out, and counted."""
    tsv, cv = release
    summary = prepare_covost2(tsv, cv, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert [i for i in rows if "common_voice_en_6" in i] == ["covost2:common_voice_en_6"]
    row = rows["covost2:common_voice_en_6"]
    assert (row.is_asr, row.split, row.transcript) == (True, "train", "Nothing to see.")
    assert [w.rsplit("/", 1)[1] for w in summary.dropped_at[NO_TRANSLATION]] == ["covost_v2.en_de.tsv:7",
                                                                               "covost_v2.en_ja.tsv:7"]
    assert f"left out 2 table rows: {NO_TRANSLATION}; the first 2:" in summary.lines()


def test_tables_that_start_with_a_byte_order_mark_are_read_as_without_one(release, tmp_path):
    """A table saved by a spreadsheet starts with a UTF-8 byte order mark: the header read '\\ufeffpath', and the
    import stopped (or, in validated.tsv, every speaker id went empty)."""
    tsv, cv = release
    prepare_covost2(tsv, cv, tmp_path / "plain")
    for table in [cv / "validated.tsv", *tsv.glob("*.tsv")]:
        table.write_bytes(codecs.BOM_UTF8 + table.read_bytes())
    summary = prepare_covost2(tsv, cv, tmp_path / "bom")
    assert summary.written == {"train": 10, "dev": 3, "test": 3}
    assert _rows(tmp_path / "bom") == _rows(tmp_path / "plain")


def test_a_carriage_return_inside_a_translation_leaves_the_line_out_counted(release, tmp_path):
    """A stray CR ended the line: "Hal\rlo." made two rows of line 2 (dropped there only for the split column it cut
    off), and every later line was named by the number of the line before it."""
    tsv, cv = release
    table = tsv / "covost_v2.en_de.tsv"
    table.write_bytes(table.read_bytes().replace(b"Hallo.", b"Hal\rlo."))  # line 2: en_1, train
    summary = prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")])
    rows = _rows(tmp_path / "out")
    assert not any(r.translation in ("Hal", "lo.") for r in rows.values())
    assert "covost2:common_voice_en_1:deu" not in rows and "covost2:common_voice_en_2:deu" in rows
    assert [w for ws in summary.dropped_at.values() for w in ws if w.endswith(":2")] == [f"{table}:2"]
    assert summary.dropped_at[STRAY_CR] == [f"{table}:2"]  # was "split '' is none of train, dev, test"
    assert [b.where for b in summary.bad_clips] == [f"{table}:8", f"{table}:10"]  # the lines after keep their numbers


def test_a_line_of_another_field_count_than_its_header_gives_no_row_and_is_counted(release, tmp_path, layouts):
    """A tab inside validated.tsv's sentence (9 fields to the header's 8) cut it short: "Good" was the transcript of
    en_5's ASR row and of its translation rows, uncounted. A raw tab inside a split file's translation (5 fields to
    4) kept the row with its translation cut short ("Gute")."""
    tsv, cv = release
    validated = cv / "validated.tsv"
    validated.write_text(validated.read_text(encoding="utf-8").replace("Good night.", "Good\tnight."), encoding="utf-8")
    summary = prepare_covost2(tsv, cv, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert not [i for i, r in rows.items() if "en_5" in i or r.transcript.startswith("Good")]
    assert summary.written == {"train": 7, "dev": 3, "test": 3}  # 10 in train with en_5's 3 rows
    assert summary.dropped[DAMAGED_SOURCE] == 2 and summary.dropped_at[DAMAGED_SOURCE] == [
        f"{tsv / f'covost_v2.en_{tgt}.tsv'}:6 ({validated}:6: 9 fields, the header has 8)" for tgt in ("de", "ja")]
    assert summary.dropped["clip not in validated.tsv (CoVoST 2 needs Common Voice 4)"] == 2  # en_8, as before
    split_dir = tmp_path / "splits"
    for split in ("train", "dev", "test"):
        rows = [{"path": clip, "sentence": VALIDATED[clip][0], "translation": de, "client_id": VALIDATED[clip][1]}
                for clip, (de, label) in COVOST.items() if clip in VALIDATED and label.split("_")[0] == split]
        layouts.write_covost_table(split_dir / f"covost_v2.en_de.{split}.tsv", layouts.COVOST_SPLIT_HEADER, rows)
    train = split_dir / "covost_v2.en_de.train.tsv"
    train.write_text(train.read_text(encoding="utf-8").replace("Gute Nacht.", "Gute\tNacht."), encoding="utf-8")
    summary = prepare_covost2(split_dir, cv, tmp_path / "from_splits", pairs=[("eng", "deu")])
    assert not [r.id for r in _rows(tmp_path / "from_splits").values() if "en_5" in r.id]
    assert summary.dropped[WRONG_WIDTH] == 1 and summary.dropped_at[WRONG_WIDTH] == [
        f"{train}:4 (5 fields, the header has 4)"]


def test_transcripts_and_translations_are_written_in_unicode_nfc(release, tmp_path):
    """A table typed on macOS holds decomposed text (NFD): the same sentence was trained on in two byte forms."""
    import unicodedata

    tsv, cv = release
    for table in (cv / "validated.tsv", tsv / "covost_v2.en_de.tsv"):
        table.write_text(unicodedata.normalize("NFD", table.read_text().replace("See you.", "Café.")))
    prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")])
    rows = _rows(tmp_path / "out")
    assert rows["covost2:common_voice_en_3:deu"].transcript == "Café."
    assert rows["covost2:common_voice_en_4:deu"].translation == "Danke \\ schön."
    assert all(unicodedata.is_normalized("NFC", r.transcript + r.translation) for r in rows.values())


def test_a_test_clip_cut_short_is_found_by_decoding_it(release, tmp_path, mp3_format):
    """An MP3 cut short keeps the length its Xing header counts: prepare wrote it to test, and evaluation, whose
    load_audio refuses it, scored its rows as empty hypotheses. The clips of test and dev are decoded whole."""
    if mp3_format != "MP3":
        pytest.skip("this libsndfile writes no MP3")
    tsv, cv = release
    clip = cv / "clips" / "common_voice_en_4.mp3"  # test's only clip: the split is then left with none
    clip.write_bytes(clip.read_bytes()[:clip.stat().st_size // 2])
    with pytest.raises(LLMSRTError, match=r"the test split has no usable clip \(1 listed, the first at \S+: clip "
                                          r"\S+common_voice_en_4\.mp3 is cut short: only the first 0\.\d s of 1\.8 s "
                                          r"decode \(it ends before the length its header gives\)\)"):
        prepare_covost2(tsv, cv, tmp_path / "out")


def test_a_missing_validated_tsv_is_named_beside_the_release_table_and_some_split_files(release, tmp_path, layouts):
    """The release table, one of get_covost_splits.py's files (a leftover) and no validated.tsv: the error said
    covost_v2.en_de.dev.tsv was missing "and no release table", beside the release table; what is missing is
    validated.tsv (the transcripts), and it says so, or that all three split files would stand in for it."""
    tsv, cv = release
    (cv / "validated.tsv").rename(cv / "validated.old")
    layouts.write_covost_table(tsv / "covost_v2.en_de.train.tsv", layouts.COVOST_SPLIT_HEADER, [])
    with pytest.raises(LLMSRTError) as e:
        prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")])
    assert str(e.value).startswith(f"{cv / 'validated.tsv'}: missing; covost_v2.en_de.tsv holds path, translation")
    assert "no release table" not in str(e.value) and "(only train here)" in str(e.value)
