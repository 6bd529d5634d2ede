import codecs
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from llm_srt.data.clips import MARKUP, REPEATED
from llm_srt.data.fleurs import BAD_ID, SPLIT_CONFLICT, WRONG_COLUMNS, prepare_fleurs
from llm_srt.data.manifest import read_manifest
from llm_srt.data.tables import STRAY_CR
from llm_srt.errors import LLMSRTError

# locale -> split -> [(sentence id, speakers)]; fra lacks sentence 4, deu has sentence 5 alone.
LAYOUT = {
    "en_us": {"train": [(1, 2), (2, 1), (3, 1), (4, 1)], "dev": [(10, 1), (11, 1)], "test": [(20, 2)]},
    "de_de": {"train": [(1, 1), (2, 2), (3, 1), (4, 1), (5, 1)], "dev": [(10, 1), (11, 1)], "test": [(20, 1)]},
    "fr_fr": {"train": [(1, 1), (2, 1), (3, 1)], "dev": [(10, 1)], "test": [(20, 1)]},
}
CODE = {"en_us": "eng", "de_de": "deu", "fr_fr": "fra"}


def _text(locale, sid):
    return f"{CODE[locale]} sentence {sid}."


@pytest.fixture
def fleurs_root(tmp_path, audio_file, layouts):
    root = tmp_path / "fleurs"
    for locale, splits in LAYOUT.items():
        for split, items in splits.items():
            rows = []
            for sid, speakers in items:
                for spk in range(speakers):
                    name = f"{CODE[locale]}{sid}{spk}{split}.wav"
                    seconds = 0.3 + 0.1 * spk
                    audio_file(root / locale / "audio" / split / name, seconds=seconds)
                    rows.append((str(sid), name, _text(locale, sid), int(seconds * 16000)))
            layouts.write_fleurs_table(root / locale / f"{split}.tsv", rows)
    return root


def _expected_pairs(split, src, tgt):
    tgt_ids = {sid for sid, _ in LAYOUT[tgt][split]}
    return sum(speakers for sid, speakers in LAYOUT[src][split] if sid in tgt_ids)


def test_pairs_every_utterance_with_every_language_sharing_its_sentence_id(fleurs_root, tmp_path):
    written = prepare_fleurs(fleurs_root, None, tmp_path / "out").written
    for split in ("train", "dev", "test"):
        rows = read_manifest(tmp_path / "out" / f"{split}.jsonl")
        assert written[split] == len(rows)
        asr = [r for r in rows if r.is_asr]
        assert len(asr) == sum(s for items in LAYOUT.values() for _, s in items[split])
        counts = Counter((r.src_lang, r.tgt_lang) for r in rows if not r.is_asr)
        for src in LAYOUT:
            for tgt in LAYOUT:
                if src != tgt:
                    assert counts[(CODE[src], CODE[tgt])] == _expected_pairs(split, src, tgt), (split, src, tgt)
        for r in rows:
            if not r.is_asr:
                inverse = {v: k for k, v in CODE.items()}
                assert r.translation == _text(inverse[r.tgt_lang], r.sentence_id)
                assert r.transcript == _text(inverse[r.src_lang], r.sentence_id)


def test_splits_are_disjoint_by_sentence_id(fleurs_root, tmp_path):
    prepare_fleurs(fleurs_root, None, tmp_path / "out")
    ids = {s: {r.sentence_id for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")} for s in ("train", "dev", "test")}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]


def test_durations_from_the_sample_count(fleurs_root, tmp_path):
    """The table's sample counts say 0.04 s more than the wavs hold (within the 0.05 s a header may differ by):
    durations read from the headers fail here."""
    tsv = fleurs_root / "en_us" / "test.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("\t4800\t", "\t5440\t").replace("\t6400\t", "\t7040\t"),
                   encoding="utf-8")
    summary = prepare_fleurs(fleurs_root, ["eng"], tmp_path / "out", splits=("test",))
    rows = read_manifest(tmp_path / "out" / "test.jsonl")
    assert sorted(round(r.duration, 3) for r in rows) == [0.34, 0.44]
    assert summary.durations_from == "the tables' sample counts" and not summary.notes


def test_a_damaged_sample_count_is_read_from_the_wav_header(fleurs_root, tmp_path):
    """A sample count field holding a digit int() does not take ('²' or '①', which str.isdigit() calls digits):
    a ValueError traceback ended the conversion. The wav's header gives the length instead, as for a count absent."""
    tsv = fleurs_root / "en_us" / "test.tsv"
    text = tsv.read_text(encoding="utf-8")
    tsv.write_text(text.replace("\t4800\t", "\t48\u00b2\t").replace("\t6400\t", "\t\u2460\t"), encoding="utf-8")
    summary = prepare_fleurs(fleurs_root, ["eng"], tmp_path / "out", splits=("test",))
    rows = read_manifest(tmp_path / "out" / "test.jsonl")
    assert sorted(round(r.duration, 3) for r in rows) == [0.3, 0.4]  # the headers'
    assert not summary.dropped


def test_a_wav_longer_than_its_table_says_is_written_with_its_header_s_length(fleurs_root, tmp_path, audio_file):
    """The headers were read and then ignored where the table gave a length: a 31 s wav whose table says 0.4 s was
    written as 0.4 s, so it passed the 30 s window filter, and training refused it at run time. A length that differs
    from the table's by more than 0.05 s and 1% is the header's, with a note naming both."""
    audio_file(fleurs_root / "en_us" / "audio" / "train" / "eng11train.wav", seconds=31.0)  # train.tsv: 6400 samples
    audio_file(fleurs_root / "en_us" / "audio" / "dev" / "eng100dev.wav", seconds=1.0)  # dev.tsv: 4800
    summary = prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "out")
    train, dev = (read_manifest(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "dev"))
    assert not any("eng11train" in r.id for r in train) and any("eng10train" in r.id for r in train)
    reason = "clip longer than the 30 s a training utterance may last (Whisper's window): left out of train"
    assert summary.dropped[reason] == 1 and summary.dropped_at[reason][0].endswith("eng11train.wav (31.0 s)")
    assert {r.duration for r in dev if r.id.startswith("fleurs:eng:eng100dev")} == {1.0}
    assert {r.duration for r in dev if r.id.startswith("fleurs:eng:eng110dev")} == {0.3}  # the table's, agreeing
    note = next(n for n in summary.notes if "measured length" in n)
    assert note.startswith("the measured length of 2 clip(s) is used where their table or duration list gives "
                           "another (by more than 0.05 s and 1%); the first: ")
    assert note.endswith(f"en_us/train.tsv:2: 0.40 s listed, 31.00 s in {fleurs_root}/en_us/audio/train/eng11train.wav")


def test_a_wav_cut_short_is_a_bad_clip_named_with_the_seconds_that_decode(fleurs_root, tmp_path):
    """A wav cut to half its bytes was written with the table's length and passed `prepare check`; load_audio then
    refuses it ("only the first ... decode"): training skipped it and evaluation scored each of its rows (a test wav:
    one a direction) as an empty hypothesis. Its header gives it away, with no decoding."""
    for split, name in (("train", "eng10train.wav"), ("test", "eng200test.wav")):
        wav = fleurs_root / "en_us" / "audio" / split / name
        wav.write_bytes(wav.read_bytes()[:44 + 4800])  # the header, then 0.15 s of the 0.3 s it claims
    summary = prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "out")
    assert [(b.where.split("fleurs/")[1], b.reason.split(".wav ")[1]) for b in summary.bad_clips] == [
        ("en_us/train.tsv:1", "is cut short: only the first 0.1 s of 0.3 s decode (it ends before the length its "
                              "header gives)"),
        ("en_us/test.tsv:1", "is cut short: only the first 0.1 s of 0.3 s decode (it ends before the length its "
                             "header gives)")]
    assert summary.rows_without_clip == 2
    for split in ("train", "test"):
        assert not any(r.audio.endswith(("eng10train.wav", "eng200test.wav"))
                       for r in read_manifest(tmp_path / "out" / f"{split}.jsonl"))
    with pytest.raises(LLMSRTError, match=r"en_us/test\.tsv:1: clip .*eng200test\.wav is cut short: only the first"):
        prepare_fleurs(fleurs_root, ["eng"], tmp_path / "strict", splits=("test",), strict=True)


def test_direction_presets_restrict_the_pairs(fleurs_root, tmp_path):
    prepare_fleurs(fleurs_root, ["eng", "deu", "fra"], tmp_path / "out", directions="eng:deu,fra",
                   splits=("train",))
    pairs = {(r.src_lang, r.tgt_lang) for r in read_manifest(tmp_path / "out" / "train.jsonl") if not r.is_asr}
    assert pairs == {("eng", "deu"), ("eng", "fra")}
    prepare_fleurs(fleurs_root, ["eng", "deu", "fra"], tmp_path / "six", directions="6x12", splits=("dev",))
    pairs = {(r.src_lang, r.tgt_lang) for r in read_manifest(tmp_path / "six" / "dev.jsonl") if not r.is_asr}
    assert pairs == {(s, t) for s in ("eng", "deu", "fra") for t in ("eng", "deu", "fra") if s != t}


def test_bad_wavs_are_skipped_and_counted_or_stop_with_strict(fleurs_root, tmp_path, layouts):
    (fleurs_root / "de_de" / "audio" / "dev" / "deu110dev.wav").unlink()  # dev.tsv line 2
    layouts.write_bytes(fleurs_root / "fr_fr" / "audio" / "dev" / "fra100dev.wav")
    layouts.write_bytes(fleurs_root / "en_us" / "audio" / "test" / "eng201test.wav", b"RIFF\x00\x00WAVEfmt junk")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev", "test"))
    assert [(b.where.split("fleurs/")[1], b.reason.split(".wav ")[1].split(" (")[0]) for b in summary.bad_clips] == [
        ("de_de/dev.tsv:2", "is missing"), ("fr_fr/dev.tsv:1", "is empty"), ("en_us/test.tsv:2", "cannot be decoded")]
    assert summary.rows_without_clip == 3
    dev = {r.id: r for r in read_manifest(tmp_path / "out" / "dev.jsonl")}
    # no rows from the missing German utterance, but its text is still the German target of the others
    assert not any(i.startswith("fleurs:deu:deu110dev") for i in dev)
    assert dev["fleurs:eng:eng110dev:deu"].translation == _text("de_de", 11)
    assert "fleurs:fra:fra100dev" not in dev and "fleurs:eng:eng100dev:fra" in dev
    assert {r.id for r in read_manifest(tmp_path / "out" / "test.jsonl") if r.src_lang == "eng"} == {
        "fleurs:eng:eng200test", "fleurs:eng:eng200test:deu", "fleurs:eng:eng200test:fra"}
    with pytest.raises(LLMSRTError, match=r"de_de/dev\.tsv:2: clip .*deu110dev\.wav is missing"):
        prepare_fleurs(fleurs_root, ["deu"], tmp_path / "strict", splits=("dev",), strict=True)


def test_a_split_still_in_its_hub_archive_stops_with_the_command_that_extracts_it(fleurs_root, tmp_path):
    audio = fleurs_root / "de_de" / "audio"
    with tarfile.open(audio / "dev.tar.gz", "w:gz") as tar:  # as on the dataset hub: members dev/<file name>
        tar.add(audio / "dev", arcname="dev")
    shutil.rmtree(audio / "dev")
    with pytest.raises(LLMSRTError, match=r"de_de/audio/dev\.tar\.gz: the dev wavs are still in this archive; "
                                          r"extract it first: tar -xzf ") as e:
        prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    subprocess.run(shlex.split(str(e.value).split("extract it first: ")[1]), check=True)
    assert prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",)).bad_clips == []


def test_a_split_whose_wavs_are_all_bad_stops_and_names_the_folder(fleurs_root, tmp_path):
    shutil.rmtree(fleurs_root / "en_us" / "audio" / "test")
    with pytest.raises(LLMSRTError, match=rf"^{fleurs_root / 'en_us' / 'audio' / 'test'}: the test split has no "
                                          r"usable clip \(2 listed, the first at .*en_us/test\.tsv:1: clip "):
        prepare_fleurs(fleurs_root, ["eng"], tmp_path / "out", splits=("dev", "test"))
    assert not list((tmp_path / "out").glob("*.jsonl")) and not (tmp_path / "out" / "summary.json").exists()
    assert len(json.loads((tmp_path / "out" / "summary.failed.json").read_text())["bad_clips"]) == 2


def test_rows_without_transcription_or_file_name_are_left_out_and_counted(fleurs_root, tmp_path, layouts):
    tsv = fleurs_root / "en_us" / "dev.tsv"
    with open(tsv, "a", encoding="utf-8") as f:
        f.write("12\teng120dev.wav\t \t \t \t4800\tMALE\n" "13\t\tNo file.\tno file.\tn o\t4800\tMALE\n")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    assert {r.id for r in read_manifest(tmp_path / "out" / "dev.jsonl") if r.src_lang == "eng" and r.is_asr} == {
        "fleurs:eng:eng100dev", "fleurs:eng:eng110dev"}
    assert summary.dropped == {"empty transcription": 1, "no clip (empty file name)": 1}
    assert [w.split("fleurs/")[1] for ws in summary.dropped_at.values() for w in ws] == [
        "en_us/dev.tsv:3", "en_us/dev.tsv:4"]


def test_a_wav_listed_again_is_kept_once_and_test_keeps_a_wav_train_also_lists(fleurs_root, tmp_path, audio_file):
    train, test = fleurs_root / "en_us" / "train.tsv", fleurs_root / "en_us" / "test.tsv"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines + lines[:1]), encoding="utf-8")  # line 6 repeats line 1
    test.write_text(test.read_text(encoding="utf-8") + lines[4], encoding="utf-8")  # train's line 5, as test line 3
    shutil.copy(fleurs_root / "en_us" / "audio" / "train" / "eng40train.wav", fleurs_root / "en_us" / "audio" / "test")
    summary = prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "out")
    ids = {split: [r.id for r in read_manifest(tmp_path / "out" / f"{split}.jsonl")]  # the validator passes
           for split in ("train", "test")}
    assert "fleurs:eng:eng40train" in ids["test"]
    assert not any(i.startswith("fleurs:eng:eng40train") for i in ids["train"])
    assert summary.dropped == {REPEATED: 2, SPLIT_CONFLICT: 1}  # German sentence 4 follows English's into test
    assert [w.replace(f"{fleurs_root}/en_us/", "") for w in summary.dropped_at[REPEATED]] == [
        "train.tsv:5 (first at test.tsv:3)", "train.tsv:6 (first at train.tsv:1)"]


def test_a_sentence_id_in_two_splits_stays_in_the_first_of_test_dev_train(fleurs_root, tmp_path):
    """Sentence 3 in de_de/test.tsv but en_us/ and fr_fr/train.tsv: the English and French text of a test sentence
    was trained on, and its pairs with German vanished uncounted."""
    de = fleurs_root / "de_de"
    train = (de / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (de / "train.tsv").write_text("".join(line for line in train if not line.startswith("3\t")), encoding="utf-8")
    with open(de / "test.tsv", "a", encoding="utf-8") as f:  # as test.tsv line 2
        f.write(next(line for line in train if line.startswith("3\t")))
    (de / "audio" / "train" / "deu30train.wav").rename(de / "audio" / "test" / "deu30train.wav")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out")
    ids = {s: {r.sentence_id for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")} for s in ("train", "test")}
    assert "3" in ids["test"] and "3" not in ids["train"]
    assert summary.dropped == {SPLIT_CONFLICT: 2}
    assert [w.replace(f"{fleurs_root}/", "") for w in summary.dropped_at[SPLIT_CONFLICT]] == [
        "en_us/train.tsv:4 (in test at de_de/test.tsv:2)", "fr_fr/train.tsv:3 (in test at de_de/test.tsv:2)"]
    assert (f"warning: 1 sentence ids are listed in more than one split, e.g. {fleurs_root}/en_us/train.tsv:4 (in test "
            f"at {fleurs_root}/de_de/test.tsv:2); their 2 utterances") in "\n".join(summary.lines())
    # converting train alone still keeps the test sentence out of it
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "train_only", splits=("train",))
    assert "3" not in {r.sentence_id for r in read_manifest(tmp_path / "train_only" / "train.jsonl")}
    assert summary.dropped == {SPLIT_CONFLICT: 2}


def test_no_check_audio_counts_a_missing_wav_the_table_gives_no_length_for(fleurs_root, tmp_path):
    tsv = fleurs_root / "de_de" / "dev.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("\t4800\t", "\t0\t"), encoding="utf-8")
    (fleurs_root / "de_de" / "audio" / "dev" / "deu110dev.wav").unlink()  # dev.tsv line 2, no sample count
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",), check_audio=False)
    assert [(b.where.split("fleurs/")[1], b.reason.split(".wav ")[1]) for b in summary.bad_clips] == [
        ("de_de/dev.tsv:2", "is missing")]
    assert summary.written["dev"] > 0 and summary.rows_without_clip == 1


def test_empty_root_is_a_clear_error(tmp_path, fleurs_root):
    with pytest.raises(LLMSRTError, match=r"no FLEURS locale folders found \(expected e.g. en_us/, de_de/ with "
                                          r"train.tsv and audio/\)$"):
        prepare_fleurs(tmp_path / "out", None, tmp_path / "out")
    hub = tmp_path / "hub"  # the dataset's own layout: data/<locale>/
    hub.mkdir()
    fleurs_root.rename(hub / "data")
    with pytest.raises(LLMSRTError, match=rf"no FLEURS locale folders .*; this looks like the dataset's root: give "
                                          rf"{re.escape(str(hub / 'data'))}$"):
        prepare_fleurs(hub, None, tmp_path / "out")


def test_a_table_line_that_is_not_utf8_is_named_by_file_and_line(fleurs_root, tmp_path):
    tsv = next(fleurs_root.glob("*/train.tsv"))
    tsv.write_bytes(tsv.read_bytes() + b"9\tx.wav\tcaf\xe9\t4800\n")  # Latin-1, not UTF-8
    lines = len(tsv.read_bytes().splitlines())
    with pytest.raises(LLMSRTError, match=rf"{re.escape(str(tsv))}:{lines}: not UTF-8 text \(byte 12 of the line\)"):
        prepare_fleurs(fleurs_root, None, tmp_path / "out")


def test_a_clip_longer_than_whisper_s_window_is_left_out_of_train_and_dev_but_kept_in_test(fleurs_root, tmp_path,
                                                                                         audio_file):
    """Training refuses an utterance over 30 s: prepare wrote it, and the stage then stopped before step 1."""
    for split, name in (("train", "eng11train.wav"), ("test", "eng201test.wav")):
        audio_file(fleurs_root / "en_us" / "audio" / split / name, seconds=31.0)
        tsv = fleurs_root / "en_us" / f"{split}.tsv"
        tsv.write_text(tsv.read_text().replace("\t6400\t", "\t496000\t"))  # name's 0.4 s -> 31 s
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out")
    train, test = (read_manifest(tmp_path / "out" / f"{s}.jsonl", max_duration=None) for s in ("train", "test"))
    assert not any("eng11train" in r.id for r in train) and any("eng10train" in r.id for r in train)
    assert [r.duration for r in test if r.id == "fleurs:eng:eng201test"] == [31.0]
    reason = "clip longer than the 30 s a training utterance may last (Whisper's window): left out of train"
    assert summary.dropped[reason] == 1 and summary.dropped_at[reason][0].endswith("eng11train.wav (31.0 s)")
    read_manifest(tmp_path / "out" / "train.jsonl", max_duration=30)  # what training reads: no bad row


def test_a_table_that_starts_with_a_byte_order_mark_keeps_its_first_utterance_s_pairs(fleurs_root, tmp_path):
    """A table saved by a Windows tool starts with a UTF-8 byte order mark: it stayed in the first sentence id
    ('\\ufeff1'), and that utterance lost every translation pair without a count."""
    plain = prepare_fleurs(fleurs_root, None, tmp_path / "plain")
    for tsv in (fleurs_root / "en_us").glob("*.tsv"):
        tsv.write_bytes(codecs.BOM_UTF8 + tsv.read_bytes())
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "bom")
    assert summary.written == plain.written and summary.dropped == plain.dropped == {}
    for split in ("train", "dev", "test"):
        bom, without = (read_manifest(tmp_path / out / f"{split}.jsonl") for out in ("bom", "plain"))
        assert bom == without
    assert "fleurs:eng:eng10train:deu" in {r.id for r in read_manifest(tmp_path / "bom" / "train.jsonl")}


def test_a_line_of_fewer_than_3_columns_is_left_out_and_counted(fleurs_root, tmp_path):
    """It stopped the whole import, where every other bad row is left out and counted; a table none of whose lines
    has 7 columns (not a FLEURS table) still stops it, naming its first line."""
    tsv = fleurs_root / "en_us" / "dev.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8") + "12\teng120dev.wav\n" + "a stray note\n", encoding="utf-8")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    assert summary.dropped == {WRONG_COLUMNS: 2}
    assert [w.replace(f"{fleurs_root}/", "") for w in summary.dropped_at[WRONG_COLUMNS]] == [
        "en_us/dev.tsv:3 (2 columns)", "en_us/dev.tsv:4 (1 columns)"]
    assert {r.id for r in read_manifest(tmp_path / "out" / "dev.jsonl") if r.src_lang == "eng" and r.is_asr} == {
        "fleurs:eng:eng100dev", "fleurs:eng:eng110dev"}
    assert f"left out 2 table rows: {WRONG_COLUMNS}; the first 2:" in summary.lines()
    tsv.write_text("10 eng100dev.wav eng sentence 10.\n", encoding="utf-8")  # spaces for tabs
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(tsv))}:1: expected 7 tab-separated columns \(sentence_id, "
                                          r".*\), got 1, and no line of the file has 7: is it a FLEURS table"):
        prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))


def test_a_line_of_more_or_fewer_than_7_columns_is_left_out_and_never_a_transcript_or_target(fleurs_root, tmp_path,
                                                                                            audio_file):
    """A tab inside a transcription (8 columns) kept the line with its text cut short ("Hello"), and a line break
    inside one (a quoted sentence run onto the next line: 3 columns, then 5) kept '"Quoted line one'; both were the
    utterance's transcript and the other languages' translation target, uncounted."""
    for locale, code, fields in (("en_us", "eng", "Hello\tworld, it is five.\thello world it is five"),
                                 ("de_de", "deu", '"Zeile eins\nZeile zwei"\tzeile eins zeile zwei')):
        audio_file(fleurs_root / locale / "audio" / "dev" / f"{code}12dev.wav", seconds=0.3)
        with open(fleurs_root / locale / "dev.tsv", "a", encoding="utf-8") as f:
            f.write(f"12\t{code}12dev.wav\t{fields}\tx\t4800\tMALE\n")
    with open(fleurs_root / "fr_fr" / "dev.tsv", "a", encoding="utf-8") as f:  # French is whole: its pairs stay
        f.write("12\tfra12dev.wav\tDouze.\tdouze.\td o u z e\t4800\tMALE\n")
    audio_file(fleurs_root / "fr_fr" / "audio" / "dev" / "fra12dev.wav", seconds=0.3)
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    rows = read_manifest(tmp_path / "out" / "dev.jsonl")
    texts = {r.transcript for r in rows} | {r.translation for r in rows}
    assert not [t for t in texts if t.startswith(("Hello", '"Zeile', "Zeile"))]
    assert not [r.id for r in rows if r.sentence_id == "12" and r.src_lang != "fra"]
    assert {r.id for r in rows if r.sentence_id == "12"} == {"fleurs:fra:fra12dev"}  # no target for French either
    assert summary.dropped == {WRONG_COLUMNS: 3}
    assert [w.replace(f"{fleurs_root}/", "") for w in summary.dropped_at[WRONG_COLUMNS]] == [
        "de_de/dev.tsv:3 (3 columns)", "de_de/dev.tsv:4 (5 columns)", "en_us/dev.tsv:3 (8 columns)"]


def test_a_language_named_twice_is_converted_once(fleurs_root, tmp_path):
    """--langs eng,deu,eng read English twice: every English row was written twice (a manifest training refuses for
    its repeated ids), and each eng<->deu pair twice over."""
    once = prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "once", splits=("dev",))
    twice = prepare_fleurs(fleurs_root, ["eng", "deu", "eng", "deu"], tmp_path / "twice", splits=("dev",))
    assert twice.written == once.written and twice.dropped == once.dropped == {}
    assert read_manifest(tmp_path / "twice" / "dev.jsonl") == read_manifest(tmp_path / "once" / "dev.jsonl")


def test_a_sentence_s_split_is_the_same_whatever_langs(fleurs_root, tmp_path):
    """Sentence 5 in en_us/train.tsv and de_de/test.tsv: a run with German put it in test, an English-only run in
    train; training on the English manifest and testing on the larger one trained on test references."""
    en, de = fleurs_root / "en_us", fleurs_root / "de_de"
    with open(en / "train.tsv", "a", encoding="utf-8") as f:  # as train.tsv line 6
        f.write("5\teng50train.wav\teng sentence 5.\teng sentence 5.\te n g\t4800\tMALE\n")
    shutil.copy(en / "audio" / "train" / "eng40train.wav", en / "audio" / "train" / "eng50train.wav")
    train = (de / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (de / "train.tsv").write_text("".join(line for line in train if not line.startswith("5\t")), encoding="utf-8")
    with open(de / "test.tsv", "a", encoding="utf-8") as f:  # as test.tsv line 2
        f.write(next(line for line in train if line.startswith("5\t")))
    (de / "audio" / "train" / "deu50train.wav").rename(de / "audio" / "test" / "deu50train.wav")
    ids = {}
    for name, langs in (("both", ["eng", "deu"]), ("eng", ["eng"]), ("eng_fra", ["eng", "fra"])):
        summary = prepare_fleurs(fleurs_root, langs, tmp_path / name)
        ids[name] = {s: {r.sentence_id for r in read_manifest(tmp_path / name / f"{s}.jsonl")}
                     for s in ("train", "test")}
        assert "5" not in ids[name]["train"], name
        assert summary.dropped[SPLIT_CONFLICT] == 1
        assert summary.dropped_at[SPLIT_CONFLICT] == [f"{en}/train.tsv:6 (in test at {de}/test.tsv:2)"]
    assert "5" in ids["both"]["test"] and "5" not in ids["eng"]["test"]  # English has no test utterance of it
    assert (f"1 of those sentence ids are in an earlier split in a locale folder this run does not convert, e.g. in "
            f"test at {de}/test.tsv:2: a sentence's split is decided from every locale folder under {fleurs_root}, "
            "so it is the same whatever --langs") in summary.lines()
    assert not any("locale folder this run does not convert" in line
                   for line in prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "again").lines())


def test_only_locale_folders_decide_splits_and_a_bad_table_of_a_language_not_converted_is_skipped(fleurs_root,
                                                                                                   tmp_path, layouts):
    """A user's own folder under ROOT with a 2-column train.tsv stopped every conversion, and so did a bad table of a
    language not asked for. A locale of the release beyond our languages (af_za) still decides a sentence's split."""
    (fleurs_root / "my_notes").mkdir()
    (fleurs_root / "my_notes" / "train.tsv").write_text("a\tb\n", encoding="utf-8")
    layouts.write_fleurs_table(fleurs_root / "af_za" / "test.tsv", [("11", "afr110test.wav", "Sin 11.", 4800)])
    fra_train = fleurs_root / "fr_fr" / "train.tsv"
    fra_train.write_text("a\tb\n", encoding="utf-8")
    summary = prepare_fleurs(fleurs_root, ["eng"], tmp_path / "out", splits=("dev",))
    assert {r.sentence_id for r in read_manifest(tmp_path / "out" / "dev.jsonl")} == {"10"}
    assert summary.dropped_at[SPLIT_CONFLICT] == [
        f"{fleurs_root}/en_us/dev.tsv:2 (in test at {fleurs_root}/af_za/test.tsv:1)"]
    skipped = [n for n in summary.notes if "skipped" in n]  # one note, naming the file and line; my_notes/ not read
    assert len(skipped) == 1 and skipped[0].startswith("warning: skipped a table of a language not converted, read "
                                                       f"only for its ids: {fra_train}:1: expected 7 ")
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(fra_train))}:1: expected 7 tab-separated columns"):
        prepare_fleurs(fleurs_root, ["fra"], tmp_path / "fra", splits=("dev",))  # its language converted: stops


def test_a_row_whose_sentence_id_is_empty_or_not_a_number_is_left_out_and_counted(fleurs_root, tmp_path, audio_file):
    """Rows with an empty id were paired with each other: an English "Hello." and a French "Bonjour tout le monde."
    became a translation pair, uncounted."""
    for locale, code, text in (("en_us", "eng", "Hello."), ("fr_fr", "fra", "Bonjour tout le monde.")):
        audio_file(fleurs_root / locale / "audio" / "dev" / f"{code}x.wav", seconds=0.3)
        with open(fleurs_root / locale / "dev.tsv", "a", encoding="utf-8") as f:
            f.write(f"\t{code}x.wav\t{text}\t{text.lower()}\tx\t4800\tMALE\n")
    with open(fleurs_root / "de_de" / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("1a\tdeu1a.wav\tHallo.\thallo.\tx\t4800\tMALE\n")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    rows = read_manifest(tmp_path / "out" / "dev.jsonl")
    assert not [r.id for r in rows if Path(r.audio).stem.endswith("x") or r.translation in ("Hello.", "Hallo.")]
    assert summary.dropped == {BAD_ID: 3}
    assert [w.replace(f"{fleurs_root}/", "") for w in summary.dropped_at[BAD_ID]] == [
        "de_de/dev.tsv:3 ('1a')", "en_us/dev.tsv:3 ('')", "fr_fr/dev.tsv:2 ('')"]


def test_a_carriage_return_inside_a_line_leaves_the_line_out_counted(fleurs_root, tmp_path):
    """A stray CR cut the transcript short ("eng sentence 10." became "eng") and made a bogus row of the rest."""
    plain = prepare_fleurs(fleurs_root, None, tmp_path / "plain", splits=("dev",))
    tsv = fleurs_root / "en_us" / "dev.tsv"
    tsv.write_bytes(tsv.read_bytes().replace(b"eng sentence 10.\t", b"eng\rsentence 10.\t"))
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))
    assert summary.dropped == {STRAY_CR: 1} and summary.dropped_at[STRAY_CR] == [f"{tsv}:1"]
    rows = read_manifest(tmp_path / "out" / "dev.jsonl")
    assert {r.id for r in rows if r.src_lang == "eng" and r.is_asr} == {"fleurs:eng:eng110dev"}
    assert "fleurs:eng:eng110dev:deu" in {r.id for r in rows}  # line 2 keeps its number and its pairs
    for locale in ("en_us", "de_de", "fr_fr"):  # CRLF line ends read as before
        for table in (fleurs_root / locale).glob("*.tsv"):
            table.write_bytes(table.read_bytes().replace(b"\r", b" ").replace(b"\n", b"\r\n"))
    crlf = prepare_fleurs(fleurs_root, None, tmp_path / "crlf", splits=("dev",))
    assert crlf.dropped == {} and crlf.written == plain.written
    assert read_manifest(tmp_path / "crlf" / "dev.jsonl") == read_manifest(tmp_path / "plain" / "dev.jsonl")


def test_a_failed_re_run_leaves_the_earlier_manifests_and_summary_json_as_they_were(fleurs_root, tmp_path):
    """summary.json was rewritten by the failed run, beside the earlier run's manifests, which it no longer
    described."""
    out = tmp_path / "out"
    prepare_fleurs(fleurs_root, ["eng"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.rmtree(fleurs_root / "en_us" / "audio" / "test")
    with pytest.raises(LLMSRTError, match="summary.failed.json"):
        prepare_fleurs(fleurs_root, ["eng"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "summary.failed.json"} == before
    assert len(json.loads((out / "summary.failed.json").read_text())["bad_clips"]) == 2


@pytest.mark.parametrize("fails", ["writing", "renaming"])
def test_a_full_disk_at_the_third_file_leaves_the_earlier_run_as_it_was(fleurs_root, tmp_path, monkeypatch, fails):
    """write_manifests replaced train.jsonl, dev.jsonl, test.jsonl one at a time: a full disk at test.jsonl left
    train and dev of the new run beside the earlier run's summary.json, with an OSError traceback."""
    from llm_srt.data import clips

    out = tmp_path / "out"
    prepare_fleurs(fleurs_root, ["eng"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def full(real):
        def call(*args, **kwargs):
            calls.append(args)
            if len(calls) == 3 if fails == "writing" else [Path(a[1]).name for a in calls].count("test.jsonl") == 1 \
                    and Path(args[1]).name == "test.jsonl":  # the 3rd file, or its rename into place (once: not the
                #   undoing), after the earlier run's manifests this run's differ from were moved aside
                raise OSError(28, "No space left on device")
            return real(*args, **kwargs)
        return call

    if fails == "writing":
        monkeypatch.setattr(clips, "write_manifest", full(clips.write_manifest))
    else:
        monkeypatch.setattr(os, "replace", full(os.replace))
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(fleurs_root, None, out)  # more languages: every manifest would change
    assert str(e.value) == (f"{out / 'test.jsonl'}: cannot write (No space left on device); free space there, or "
                            f"choose another --out (this run's summary is in {out / 'summary.failed.json'}; nothing "
                            f"else in {out} was changed)")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "summary.failed.json"} == before  # no .tmp
    assert json.loads((out / "summary.failed.json").read_text())["written"] == {}
    monkeypatch.undo()
    assert prepare_fleurs(fleurs_root, None, out).written["test"] > 0 and not (out / "summary.failed.json").exists()


def test_a_folder_in_the_way_of_a_manifest_or_an_out_that_is_a_file_is_one_line(fleurs_root, tmp_path):
    """A folder named test.jsonl made the rename fail after train.jsonl and dev.jsonl were replaced (IsADirectoryError
    traceback); an --out that is a file failed with FileExistsError once every clip had been read."""
    out = tmp_path / "out"
    prepare_fleurs(fleurs_root, ["eng"], out)
    (out / "test.jsonl").unlink()
    (out / "test.jsonl").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(out / 'test.jsonl'))}: cannot write \(Is a directory\); "
                                          r"move the folder of that name aside, or choose another --out \(this run's "):
        prepare_fleurs(fleurs_root, None, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "summary.failed.json"} == before
    (tmp_path / "afile").write_text("mine\n")
    below = f"lies below {tmp_path / 'afile'}, which is a file"
    for given, where in ((tmp_path / "afile", "is a file"), (tmp_path / "afile" / "x", below)):
        with pytest.raises(LLMSRTError, match=rf"^--out {re.escape(str(given))}: {where}, not a folder; give a folder "
                                              r"\(made if missing\)$"):
            prepare_fleurs(tmp_path / "no such root", None, given)  # before any table is read
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_an_out_this_user_cannot_write_in_is_refused_before_any_table_is_read(fleurs_root, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(LLMSRTError, match=rf"^--out {re.escape(str(tmp_path / 'new'))}: cannot write in "
                                          rf"{re.escape(str(tmp_path))} \(permission denied\); make it writable, or "
                                          r"choose another --out$"):
        prepare_fleurs(tmp_path / "no such root", None, tmp_path / "new")


def test_a_table_the_os_will_not_read_is_one_line_naming_it(fleurs_root, tmp_path, monkeypatch):
    from llm_srt.data import tables

    tsv = fleurs_root / "de_de" / "dev.tsv"

    def guarded(path, *args, **kwargs):
        if Path(path) == tsv:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(tables, "open", guarded, raising=False)  # (tables.open_table opens the tables)
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(tsv))}: cannot read \(Permission denied\); check its "
                                          r"permissions, or extract it again from the release$"):
        prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev",))


def test_transcripts_and_translations_are_written_in_unicode_nfc(fleurs_root, tmp_path):
    """A table typed on macOS holds decomposed text: the same sentence was written in two byte forms."""
    import unicodedata

    tsv = fleurs_root / "de_de" / "dev.tsv"
    tsv.write_text(tsv.read_text().replace("deu sentence 10.", unicodedata.normalize("NFD", "Grüße, Fräulein.")))
    prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "out", splits=("dev",))
    rows = read_manifest(tmp_path / "out" / "dev.jsonl")
    assert {r.transcript for r in rows if r.id == "fleurs:deu:deu100dev"} == {"Grüße, Fräulein."}
    assert {r.translation for r in rows if r.id == "fleurs:eng:eng100dev:deu"} == {"Grüße, Fräulein."}
    assert all(unicodedata.is_normalized("NFC", r.transcript + r.translation) for r in rows)


def test_cr_cr_lf_line_ends_read_as_lf_and_a_table_with_no_usable_line_stops_the_run(fleurs_root, tmp_path):
    """A CRLF table re-saved in text mode on Windows ends its lines in CR CR LF: every line was read as holding a
    stray carriage return, left out, and the run wrote three empty manifests and exited 0. Its lines are read whole;
    a table none of whose lines can be used (here: no sentence id is a number) stops the run with one line naming the
    most common reason and its first file:line."""
    plain = prepare_fleurs(fleurs_root, None, tmp_path / "plain")
    for table in fleurs_root.glob("*/*.tsv"):
        table.write_bytes(table.read_bytes().replace(b"\n", b"\r\r\n"))
    crcr = prepare_fleurs(fleurs_root, None, tmp_path / "crcr")
    assert crcr.dropped == {} and crcr.written == plain.written and all(plain.written.values())
    for split in ("train", "dev", "test"):
        assert read_manifest(tmp_path / "crcr" / f"{split}.jsonl") == read_manifest(tmp_path / "plain" /
                                                                                     f"{split}.jsonl")
    tsv = fleurs_root / "de_de" / "dev.tsv"
    tsv.write_bytes(re.sub(rb"^(?=.)", b"x", tsv.read_bytes(), flags=re.M))  # ids "x10", "x11": not numbers
    with pytest.raises(LLMSRTError) as e:
        prepare_fleurs(fleurs_root, None, tmp_path / "bad", splits=("dev",))
    assert str(e.value) == (f"{tsv}:1 ('x10'): no line of this table can be used (2 of its 2 lines: {BAD_ID}); fix the "
                            "table, or extract it again from the release")


def test_a_speaker_s_transcript_with_markup_is_left_out_once_and_another_speaker_s_gives_the_target(fleurs_root,
                                                                                                   tmp_path):
    """English sentence 1 is read by two speakers; the first's transcript held `<|endoftext|>`. It was every other
    language's English target for that sentence: each of those pairs was dropped (counted by row id, one a source
    language), though the second speaker's text is clean."""
    tsv = fleurs_root / "en_us" / "train.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("\teng sentence 1.\t", "\teng sentence 1<|endoftext|>\t",
                                                           1), encoding="utf-8")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("train",))
    rows = {r.id: r for r in read_manifest(tmp_path / "out" / "train.jsonl")}
    assert rows["fleurs:deu:deu10train:eng"].translation == rows["fleurs:fra:fra10train:eng"].translation == (
        "eng sentence 1.")
    assert "fleurs:eng:eng11train:deu" in rows and not [i for i in rows if "eng10train" in i]
    assert summary.dropped == {MARKUP: 1} and summary.dropped_at[MARKUP] == [f"{tsv}:1 ('<|endoftext|>')"]


def test_a_test_or_dev_float_wav_holding_nan_or_integer_scaled_samples_is_a_bad_clip(fleurs_root, tmp_path):
    """Only a float WAV's header was read: one holding NaN, or int16 values stored as float, passed prepare, and
    load_audio refused it at evaluation (each of its rows scored as an empty hypothesis). Test's and dev's are decoded,
    as a compressed clip is, and named with load_audio's reason; train's are not (training skips one, naming it)."""
    import numpy as np
    import soundfile as sf

    tone = (0.3 * np.sin(np.arange(4800) * 0.05)).astype(np.float32)
    for split, name, samples in (("test", "eng200test.wav", np.where(np.arange(4800) == 100, np.nan, tone)),
                                 ("dev", "eng100dev.wav", tone * 32768), ("train", "eng20train.wav", tone + np.inf)):
        sf.write(fleurs_root / "en_us" / "audio" / split / name, samples, 16000, subtype="FLOAT")
    summary = prepare_fleurs(fleurs_root, ["eng", "deu"], tmp_path / "out")
    assert [(b.where.split("fleurs/")[1], b.reason.split(".wav ")[1]) for b in summary.bad_clips] == [
        ("en_us/dev.tsv:1", "does not load (samples reach 9830, far outside [-1, 1]: integer-scaled audio stored as "
                            "float? divide by 32768 (int16) or 2147483648 (int32), or re-export it; a float mix above "
                            "0 dBFS: normalize it to peak at 1)"),
        ("en_us/test.tsv:1", "does not load (the audio contains NaN or infinite samples; re-export it from the "
                             "source)")]
    assert "fleurs:eng:eng20train" in {r.id for r in read_manifest(tmp_path / "out" / "train.jsonl")}
    with pytest.raises(LLMSRTError, match=r"en_us/test\.tsv:1: clip .*eng200test\.wav does not load \(the audio "
                                          r"contains NaN"):
        prepare_fleurs(fleurs_root, ["eng"], tmp_path / "strict", splits=("test",), strict=True)
