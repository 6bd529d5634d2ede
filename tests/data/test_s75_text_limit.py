"""A train or dev row whose transcript or translation is longer than its clip can hold (the rule `prepare check` and
`llm-srt train` apply) is left out and counted once per table line: such a row was written, exit 0, and `prepare
check` then refused the manifest. Test keeps it (evaluation reads it; `prepare check` only notes it)."""

from llm_srt import cli
from llm_srt.data.commonvoice import prepare_commonvoice
from llm_srt.data.covost2 import prepare_covost2
from llm_srt.data.manifest import read_manifest

LONG = "Das ist ein sehr langer Satz. " * 25  # 750 characters: more than the 500 a 0.5 s clip may carry


def _reason(summary, split):
    reason, = [r for r in summary.dropped if r.startswith("transcript or translation longer than its clip")
               and r.endswith(f"left out of {split}")]
    return reason


def test_common_voice_rows_too_long_for_their_clip_are_left_out_of_train_and_dev_and_pass_check(
        tmp_path, layouts, audio_file, capsys):
    root = tmp_path / "cv" / "de"
    texts = {"train": ["Guten Tag.", LONG], "dev": [LONG, "Danke."], "test": [LONG]}
    i = 0
    for split, sentences in texts.items():
        rows = []
        for text in sentences:
            i += 1
            audio_file(root / "clips" / f"de_{i}.wav", seconds=0.5)
            rows.append({"client_id": f"spk{i}", "path": f"de_{i}.wav", "sentence_id": f"s{i}", "sentence": text})
        layouts.write_cv_table(root / f"{split}.tsv", layouts.CV17_HEADER, rows)
    layouts.write_cv_table(root / "validated.tsv", layouts.CV17_HEADER, [])
    out = tmp_path / "out"
    summary = prepare_commonvoice(root, out, workers=1)
    assert summary.written == {"train": 1, "dev": 1, "test": 1}  # test keeps its row
    assert summary.dropped_at[_reason(summary, "train")] == [
        f"{root}/train.tsv:3 (commonvoice:deu:de_2: its transcript has {len(LONG.strip()):,} characters, 0.5 s hold "
        "at most 500)"]
    assert summary.dropped_at[_reason(summary, "dev")] == [
        f"{root}/dev.tsv:2 (commonvoice:deu:de_3: its transcript has {len(LONG.strip()):,} characters, 0.5 s hold "
        "at most 500)"]
    assert [r.id for r in read_manifest(out / "train.jsonl")] == ["commonvoice:deu:de_1"]
    assert cli.main(["prepare", "check", str(out / "train.jsonl"), str(out / "dev.jsonl"),
                     str(out / "test.jsonl")]) == 0


def test_a_covost_translation_too_long_loses_its_row_and_a_transcript_too_long_each_table_line(
        tmp_path, layouts, audio_file):
    cv = tmp_path / "cv4" / "en"
    sentences = {"a.wav": "Hello there.", "b.wav": LONG, "c.wav": "Good night."}
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": f"s{i}", "path": clip, "sentence": text}
                            for i, (clip, text) in enumerate(sentences.items())])
    for clip in sentences:
        audio_file(cv / "clips" / clip, seconds=0.5)
    tsv = tmp_path / "covost"
    for tgt in ("de", "ja"):
        layouts.write_covost_table(tsv / f"covost_v2.en_{tgt}.tsv", layouts.COVOST_RELEASE_HEADER,
                                   [{"path": clip, "split": "train",
                                     "translation": LONG if (tgt, clip) == ("ja", "c.wav") else f"[{tgt}] {clip}"}
                                    for clip in sentences])
    summary = prepare_covost2(tsv, cv, tmp_path / "out", workers=1)
    reason = _reason(summary, "train")
    assert summary.dropped == {reason: 3}  # b.wav's line in each table, and c.wav's en_ja line
    assert summary.dropped_at[reason] == [
        f"{tsv}/covost_v2.en_de.tsv:3 (covost2:b: its transcript has {len(LONG.strip()):,} characters, 0.5 s hold at "
        "most 500)",
        f"{tsv}/covost_v2.en_ja.tsv:3 (covost2:b:jpn: its transcript has {len(LONG.strip()):,} characters, 0.5 s hold "
        "at most 500)",
        f"{tsv}/covost_v2.en_ja.tsv:4 (covost2:c:jpn: its translation has {len(LONG.strip()):,} characters, 0.5 s "
        "hold at most 500)"]
    ids = sorted(r.id for r in read_manifest(tmp_path / "out" / "train.jsonl"))
    assert ids == ["covost2:a", "covost2:a:deu", "covost2:a:jpn", "covost2:c", "covost2:c:deu"]
