"""A converted row left out (markup, a clip over Whisper's window) is named by its table line and counted once per
table line: CoVoST lists a clip once per target table, and a clip's rows were counted, or named, as one line."""

import pytest

from llm_srt.data import clips as clips_module
from llm_srt.data.clips import MARKUP
from llm_srt.data.commonvoice import prepare_commonvoice
from llm_srt.data.covost2 import prepare_covost2
from llm_srt.data.manifest import read_manifest

SENTENCES = {"a.wav": "Hello there.", "b.wav": "See you.", "c.wav": "Good night."}
SECONDS = {"a.wav": 0.4, "b.wav": 0.9, "c.wav": 0.4}


@pytest.fixture
def covost(tmp_path, audio_file, layouts):
    """An en_de and an en_ja release table listing the train clips a, b, c (lines 2, 3, 4 of each)."""
    cv = tmp_path / "cv4" / "en"
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": f"s{i}", "path": clip, "sentence": text, "up_votes": 2, "down_votes": 0}
                            for i, (clip, text) in enumerate(SENTENCES.items())])
    for clip, seconds in SECONDS.items():
        audio_file(cv / "clips" / clip, seconds=seconds)
    tsv = tmp_path / "covost"

    def tables(translations: dict[tuple[str, str], str] = {}):  # (tgt, clip) -> translation, else "[tgt] ..."
        for tgt in ("de", "ja"):
            layouts.write_covost_table(tsv / f"covost_v2.en_{tgt}.tsv", layouts.COVOST_RELEASE_HEADER,
                                       [{"path": clip, "split": "train",
                                         "translation": translations.get((tgt, clip), f"[{tgt}] {text}")}
                                        for clip, text in SENTENCES.items()])
        return tsv, cv
    return tables


def test_a_long_clip_of_several_covost_tables_counts_each_table_line(covost, tmp_path, monkeypatch):
    monkeypatch.setattr(clips_module, "WINDOW_SECONDS", 0.6)  # b.wav (0.9 s) is over it
    tsv, cv = covost()
    summary = prepare_covost2(tsv, cv, tmp_path / "out", workers=1)
    (reason, n), = summary.dropped.items()
    clip = cv / "clips" / "b.wav"
    assert n == 2 and summary.dropped_at[reason] == [
        f"{tsv / 'covost_v2.en_de.tsv'}:3 (its 2 manifest rows): {clip} (0.9 s)",  # its ASR row and eng->deu
        f"{tsv / 'covost_v2.en_ja.tsv'}:3 (its 1 manifest rows): {clip} (0.9 s)"]
    assert f"left out 2 table rows: {reason}; the first 2:" in summary.lines()
    assert len(read_manifest(tmp_path / "out" / "train.jsonl")) == 2 * 3  # a and c: ASR, deu, jpn


def test_markup_in_a_covost_translation_is_named_by_its_table_line(covost, tmp_path):
    tsv, cv = covost({("ja", "c.wav"): "oyasumi <|endoftext|>"})
    summary = prepare_covost2(tsv, cv, tmp_path / "out", workers=1)
    assert summary.dropped == {MARKUP: 1}
    assert summary.dropped_at[MARKUP] == [f"{tsv / 'covost_v2.en_ja.tsv'}:4 ('<|endoftext|>')"]  # not its row id
    ids = {r.id for r in read_manifest(tmp_path / "out" / "train.jsonl")}
    assert "covost2:c:jpn" not in ids and {"covost2:c", "covost2:c:deu"} <= ids


def test_markup_in_a_covost_transcript_counts_each_table_line_once(covost, tmp_path, layouts):
    tsv, cv = covost()
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": f"s{i}", "path": clip, "up_votes": 2, "down_votes": 0,
                             "sentence": "See </s> you." if clip == "b.wav" else text}
                            for i, (clip, text) in enumerate(SENTENCES.items())])
    summary = prepare_covost2(tsv, cv, tmp_path / "out", workers=1)
    # its ASR row, eng->deu and eng->jpn: three manifest rows from two table lines (were "3 table rows", by row id)
    assert summary.dropped == {MARKUP: 2}
    assert summary.dropped_at[MARKUP] == [f"{tsv / 'covost_v2.en_de.tsv'}:3 ('</s>')",
                                          f"{tsv / 'covost_v2.en_ja.tsv'}:3 ('</s>')"]
    assert f"left out 2 table rows: {MARKUP}; the first 2:" in summary.lines()


def test_markup_in_a_common_voice_transcript_is_named_by_its_table_line(tmp_path, audio_file, layouts):
    locale = tmp_path / "cv" / "en"
    rows = [{"client_id": f"s{i}", "path": clip, "sentence": text, "up_votes": 2, "down_votes": 0}
            for i, (clip, text) in enumerate(SENTENCES.items())]
    rows[1]["sentence"] = "See <|deu|> you."
    layouts.write_cv_table(locale / "train.tsv", layouts.CV4_HEADER, rows)
    for clip, seconds in SECONDS.items():
        audio_file(locale / "clips" / clip, seconds=seconds)
    summary = prepare_commonvoice(locale, tmp_path / "out", "eng", ("train",), workers=1)
    assert summary.dropped == {MARKUP: 1}
    assert summary.dropped_at[MARKUP] == [f"{locale / 'train.tsv'}:3 ('<|deu|>')"]  # was "commonvoice:eng:b"
