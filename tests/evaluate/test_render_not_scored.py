"""report.md counts and names a system's rows that no score took (`SystemScores.not_scored`: an ASR row of a clip
with no SRT row under --task srt) beside its failed rows, as the terminal log and results.json do."""

from dataclasses import replace

from test_scored_rows import CPU, NO_TRANSLATION, OPTS, gold, manifest  # noqa: F401 (fixtures)

from llm_srt.evaluate import render, run
from llm_srt.evaluate import report as rep
from llm_srt.evaluate.report import UtteranceResult

HEADER = "| system | avg BLEU | directions | utterances | failed | not scored |"
LINE = "Transcript-only (ASR) rows not scored ("


def test_report_md_counts_and_names_the_rows_not_scored():
    ok = UtteranceResult("a", "eng", "deu", "hello", "hallo", "hello", "hallo", task="srt")
    report = rep.build_report({"many": [ok], "none": [ok]})
    plain = render.to_markdown(report)
    assert "not scored" not in plain  # no system left a row unscored: the report as before
    ids = tuple(f"asr:{i}" for i in range(render.SHOWN_NOT_SCORED + 2))
    report = replace(report, systems=(replace(report.systems[0], not_scored=ids), report.systems[1]))
    md = render.to_markdown(report)
    table = md.splitlines()[2:6]
    assert table[0] == HEADER and table[2].startswith("| many |") and table[2].endswith("| 0 of 1 | 12 |")
    assert table[3].endswith("| 0 of 1 | 0 |")
    [line] = [line for line in md.splitlines() if line.startswith(LINE)]
    shown = ", ".join(ids[:render.SHOWN_NOT_SCORED])
    assert line.endswith(f": many 12 ({shown}, ...)") and ids[-1] not in line and "none" not in line
    assert "--task asr scores them" in line and "not_scored" in line


def test_an_srt_evaluation_writes_its_rows_not_scored_into_report_md(gold, manifest, tmp_path):  # noqa: F811
    run.evaluate({"gold": "gold"}, manifest, tmp_path, task="srt", options=OPTS, batch_size=4, placement=CPU,
                 log=lambda *_: None)
    md = (tmp_path / render.REPORT_MD).read_text(encoding="utf-8")
    assert HEADER in md and "| 0 of 6 | 1 |" in md
    assert f": gold 1 (covost2:{NO_TRANSLATION})" in md
    run.evaluate({"gold": "gold"}, manifest, tmp_path / "asr", task="asr", options=OPTS, batch_size=4,
                 placement=CPU, log=lambda *_: None)
    assert "not scored" not in (tmp_path / "asr" / render.REPORT_MD).read_text(encoding="utf-8")  # every clip scored
