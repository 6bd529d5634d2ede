"""A CoVoST table of a locale llm_srt/languages.py lacks (covost_v2.en_ar.tsv) is skipped with a line on stderr and
named in the summary's notes (printed and in OUT/summary.json): summary.json showed nothing left out."""

import json

from llm_srt.data.covost2 import prepare_covost2


def test_a_table_of_an_unknown_locale_is_named_in_the_summary(tmp_path, layouts, audio_file, capsys):
    cv = tmp_path / "cv4" / "en"
    layouts.write_cv_table(cv / "validated.tsv", layouts.CV4_HEADER,
                           [{"client_id": "s1", "path": "a.wav", "sentence": "Hello there."}])
    audio_file(cv / "clips" / "a.wav", seconds=0.5)
    tsv = tmp_path / "covost"
    for tgt in ("de", "ar", "xx"):
        layouts.write_covost_table(tsv / f"covost_v2.en_{tgt}.tsv", layouts.COVOST_RELEASE_HEADER,
                                   [{"path": "a.wav", "split": "train", "translation": f"[{tgt}] Hello there."}])
    out = tmp_path / "out"
    summary = prepare_covost2(tsv, cv, out, workers=1)
    note = ("skipped 2 tables of a locale not in llm_srt/languages.py, their rows not converted: "
            "covost_v2.en_ar.tsv ('ar'), covost_v2.en_xx.tsv ('xx')")
    assert summary.notes == [note] and note in summary.lines()
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["notes"] == [note]
    assert "skipping covost_v2.en_ar.tsv: locale 'ar' is not in llm_srt/languages.py" in capsys.readouterr().err
    assert summary.written == {"train": 2, "dev": 0, "test": 0}  # a's ASR row and eng->deu
