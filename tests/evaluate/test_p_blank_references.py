"""A results file whose rows say "ref_translation": "" (hand-made; evaluate writes null for a row without one)."""

import json

from llm_srt.evaluate.comet import sample
from llm_srt.evaluate.report import UtteranceResult, build_report, load_results, score_system

GOLD = "die Katze sitzt auf der Matte und schläft in der Sonne"


def _rows(blank: str) -> list[dict]:
    rows = [{"id": f"{i}", "src": "eng", "tgt": "deu", "hyp_translation": GOLD, "ref_translation": GOLD,
             "ref_transcript": "the cat sits", "task": "s2tt"} for i in range(3)]
    rows.append({"id": "x", "src": "eng", "tgt": "deu", "hyp_translation": "etwas ganz anderes",
                 "ref_translation": blank, "ref_transcript": "something", "task": "s2tt"})
    return rows


def test_a_blank_reference_translation_is_a_row_without_one_not_a_bleu_of_zero(tmp_path):
    """A row with "ref_translation": "" entered BLEU against an empty reference: with it, a system whose every other
    row is its reference scored well below 100, and COMET scored it against "". It is now a row without a reference
    translation (as null), left out of BLEU and COMET as evaluate's own files leave it."""
    null = score_system("s", _rows(None))  # type: ignore[arg-type]
    assert round(null.bleu[("eng", "deu")].score, 6) == 100 and null.n_scored == 3
    for blank in ("", "  "):
        path = tmp_path / "hyps.s.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _rows(blank)), encoding="utf-8")
        rows = load_results(path)
        assert rows[-1].ref_translation is None and sample(rows[-1]) is None
        scores = score_system("s", rows)
        assert scores.bleu == null.bleu and scores.n_scored == 3 and scores.ids == null.ids
        assert build_report({"s": rows}).systems[0].bleu == null.bleu
    assert UtteranceResult("a", "eng", "deu", ref_translation="").ref_translation is None
    assert UtteranceResult("a", "eng", "deu", ref_translation=" x ").ref_translation == " x "  # kept as written
