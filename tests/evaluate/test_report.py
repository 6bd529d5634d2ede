import json
import math
from dataclasses import replace

import pytest
import sacrebleu

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import render
from llm_srt.evaluate import report as rep
from llm_srt.prompts import Task
from llm_srt.evaluate.report import UtteranceResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (id, src, tgt, ref transcript, ref translation)
REFS = [
    ("u1", "eng", "deu", "the weather is nice today", "das wetter ist heute schön"),
    ("u2", "eng", "deu", "we meet at noon", "wir treffen uns am mittag"),
    ("u1", "eng", "zho", "the weather is nice today", "今天天气很好"),
    ("u2", "eng", "zho", "we meet at noon", "我们中午见面"),
    ("d1", "deu", "eng", "ich habe einen hund", "i have a dog"),
    ("d2", "deu", "eng", "das haus ist groß", "the house is big"),
]
# system -> id/tgt -> (hyp transcript, hyp translation)
HYPS = {
    "curriculum": {
        ("u1", "deu"): ("the weather is nice today", "das wetter ist heute schön"),
        ("u2", "deu"): ("we meet at new", "wir treffen uns mittags"),
        ("u1", "zho"): ("the weather is nice today", "今天天气很好"),
        ("u2", "zho"): ("we meet at noon", "我们中午见"),
        ("d1", "eng"): ("ich habe einen hund", "i have a dog"),
        ("d2", "eng"): ("das haus ist gross", "the house is large"),
    },
    "baseline": {
        ("u1", "deu"): (None, "das wetter ist heute gut"),
        ("u2", "deu"): (None, "wir treffen uns am abend"),
        ("u1", "zho"): (None, "今天天气不错"),
        ("u2", "zho"): (None, "我们中午见面了"),
        ("d1", "eng"): (None, "i have a cat"),
        ("d2", "eng"): (None, "the house is very big"),
    },
}


def results(system: str, fail: tuple[str, str] | None = None) -> list[UtteranceResult]:
    out = []
    for uid, src, tgt, rt, rtr in REFS:
        ht, htr = HYPS[system][(uid, tgt)]
        error = "decoding failed: out of memory" if fail == (uid, tgt) else None
        out.append(UtteranceResult(uid, src, tgt, None if error and ht else ht, "GARBAGE GARBAGE" if error else htr,
                                   rt, rtr, error))
    return out


def direct_bleu(system: str, src: str, tgt: str, failed=()) -> float:
    """BLEU by sacrebleu itself; the utterances in `failed` count as empty hypotheses."""
    rows = [("" if (u, t) in failed else HYPS[system][(u, t)][1], rtr)
            for u, s, t, _, rtr in REFS if (s, t) == (src, tgt)]
    tok = "char" if tgt == "zho" else "13a"
    return sacrebleu.corpus_bleu([h for h, _ in rows], [[r for _, r in rows]], tokenize=tok).score


def mt_results() -> list[UtteranceResult]:
    """The curriculum system's own LLM on text MT of the same rows (gold transcript in); one row failed."""
    mt = {("u1", "deu"): "das wetter ist heute schön", ("u2", "deu"): "wir treffen uns am mittag",
          ("u1", "zho"): "今天天气很好", ("u2", "zho"): "我们中午见面", ("d1", "eng"): "i have a dog"}
    return [UtteranceResult(uid, src, tgt, None, mt.get((uid, tgt)), rt, rtr,
                            None if (uid, tgt) in mt else "CUDA out of memory", task="mt")
            for uid, src, tgt, rt, rtr in REFS]


@pytest.fixture
def report():
    return rep.build_report({"curriculum": results("curriculum", fail=("u2", "deu")), "baseline": results("baseline")},
                            mt={"curriculum": mt_results()})


def test_scores_per_direction_and_averages(report):
    cur, base = report.systems
    assert [s.name for s in report.systems] == ["curriculum", "baseline"]
    assert report.directions == [("eng", "deu"), ("eng", "zho"), ("deu", "eng")]
    for system, scores in (("curriculum", cur), ("baseline", base)):
        failed = {("u2", "deu")} if system == "curriculum" else set()
        for d in report.directions:
            assert scores.bleu[d].score == pytest.approx(direct_bleu(system, *d, failed=failed))
    assert all(0 < s.score < 100 for s in base.bleu.values())
    assert "tok:char" in cur.bleu[("eng", "zho")].signature and "tok:13a" in cur.bleu[("eng", "deu")].signature
    # the failed utterance is an empty hypothesis (not its garbage, not dropped): BLEU falls below the 100 of u1
    assert cur.bleu[("eng", "deu")].n == 2 and 0 < cur.bleu[("eng", "deu")].score < 100
    assert len(cur.failed) == 1 and cur.failed[0].id == "u2" and cur.n_scored == 6 and base.n_scored == 6
    assert cur.failed_by_direction() == {("eng", "deu"): 1, ("eng", "zho"): 0, ("deu", "eng"): 0}
    assert cur.rows == {("eng", "deu"): 2, ("eng", "zho"): 2, ("deu", "eng"): 2}
    assert cur.failed_summary() == "failed: 1 of 6" and base.failed_summary() == "failed: 0 of 6"
    by_src = cur.by_source()
    assert by_src["eng"] == pytest.approx((cur.bleu[("eng", "deu")].score + cur.bleu[("eng", "zho")].score) / 2)
    assert by_src["deu"] == pytest.approx(cur.bleu[("deu", "eng")].score)
    assert cur.by_target()["eng"] == pytest.approx(cur.bleu[("deu", "eng")].score)
    assert cur.average() == pytest.approx(sum(s.score for s in cur.bleu.values()) / 3)
    m = cur.matrix(["eng", "deu"], ["deu", "zho", "eng"])
    assert m.shape == (2, 3) and math.isnan(m[0, 2]) and math.isnan(m[1, 0]) and math.isnan(m[1, 1])
    assert m[1, 2] == pytest.approx(cur.bleu[("deu", "eng")].score)


def test_asr_per_source_language(report):
    cur, base = report.systems
    # eng: the failed utterance's transcript is empty: its 4 words are deletions, of 5 + 4 + 5 + 4 reference words
    assert cur.asr["eng"].metric == "wer" and cur.asr["eng"].n == 4
    assert cur.asr["eng"].score == pytest.approx(100 * 4 / 18)
    # deu: "gross" vs "groß" is an error: Whisper's basic normalizer keeps ß (1 of 4 + 4 words)
    assert cur.asr["deu"].score == pytest.approx(100 / 8)
    assert base.asr == {}  # the baseline writes no transcript


def test_failed_row_enters_wer_when_its_task_writes_a_transcript():
    ok = UtteranceResult("a", "eng", "deu", None, "hallo", "hello there", "hallo", task="s2tt")
    s2tt_failed = replace(ok, id="b", hyp_translation=None, error="boom")
    # a direct S2TT system writes no transcript: its failure is counted and in BLEU, never in WER
    s = rep.score_system("s2tt", [ok, s2tt_failed])
    assert s.asr == {} and len(s.failed) == 1 and s.bleu[("eng", "deu")].n == 2
    # an SRT (or ASR) row that failed is an empty transcript even when no other row wrote one
    s = rep.score_system("srt", [replace(s2tt_failed, task="srt")])
    assert s.asr["eng"].score == pytest.approx(100.0) and s.bleu[("eng", "deu")].score == 0.0
    # no task recorded (older results files): it follows the other rows of its source language
    s = rep.score_system("old", [replace(ok, hyp_transcript="hello there", task=None),
                                 replace(s2tt_failed, task=None)])
    assert s.asr["eng"].n == 2 and s.asr["eng"].score == pytest.approx(50.0)


def test_a_row_whose_translation_alone_failed_keeps_its_transcript_in_wer():
    """The whisper system under SRT writes the transcript of a row it cannot translate (a target other than English)
    and fails its translation: the row is failed (an empty hypothesis in BLEU) but its transcript is scored. Before,
    every such row was an empty transcript, and an English clip's WER read 100."""
    from llm_srt.data.manifest import Row
    from llm_srt.evaluate.run import _result

    rows = [Row(id=f"u{i}-{t}", audio="a.wav", duration=1.0, src_lang="eng", transcript="the cat sat", tgt_lang=t,
                translation="x", split="test", corpus="t", sentence_id=str(i))
            for i in range(2) for t in ("deu", "fra")]
    results = [_result(r, Task.SRT, "the cat sat", error="the whisper system translates only into English (eng)")
               for r in rows]
    assert all(r.failed and r.hyp_transcript == "the cat sat" and r.hyp_translation is None for r in results)
    s = rep.score_system("whisper", results)
    assert s.asr["eng"].score == 0.0 and s.asr["eng"].n == 4 and len(s.failed) == 4
    assert s.bleu[("eng", "deu")].score == 0.0
    assert _result(rows[0], Task.SRT, "", error="out of memory").hyp_transcript is None  # a whole failure: WER ""


def test_a_sources_wer_is_its_srt_transcripts_not_its_asr_rows_beside_them():
    """An N-way test manifest holds a transcript-only (ASR) row per clip beside its SRT rows: under --task srt the
    WER is the SRT transcripts' (the paper's), not a mix of the two tasks; a source with ASR rows alone keeps them."""
    srt = UtteranceResult("u1-deu", "eng", "deu", "the cat sat", "die katze", "the cat sat", "die katze", task="srt")
    asr = UtteranceResult("u1-asr", "eng", "eng", "a dog ran", "a dog ran", "the cat sat", None, task="asr")
    only_asr = UtteranceResult("d1-asr", "deu", "deu", "ein hund", "ein hund", "eine katze", None, task="asr")
    s = rep.score_system("srt", [srt, asr, only_asr])
    assert s.asr["eng"].score == 0.0 and s.asr["eng"].n == 1 and s.asr["deu"].n == 1


def test_text_mt_of_the_systems_own_llm(report):
    cur, base = report.systems
    assert base.mt is None and cur.mt.name == "curriculum (MT)"
    assert cur.mt.bleu[("eng", "deu")].score == pytest.approx(100.0)
    assert cur.mt.failed_summary() == "failed: 1 of 6" and cur.mt.failed_by_direction()[("deu", "eng")] == 1
    assert cur.mt.bleu[("deu", "eng")].n == 2 and cur.mt.bleu[("deu", "eng")].score < 100
    assert set(report.mt_bleu) == {"curriculum"}
    assert report.mt_bleu["curriculum"][("eng", "zho")] == pytest.approx(100.0)
    with pytest.raises(LLMSRTError, match="not among the systems"):
        rep.build_report({"a": results("baseline")}, mt={"b": mt_results()})


def test_asr_counts_errors():
    rows = [UtteranceResult("a", "eng", "deu", "we meet at new", "x", "we meet at noon", "y"),
            UtteranceResult("b", "zho", "eng", "你好世介", "x", "你好，世界", "y")]
    s = rep.score_system("s", rows)
    assert s.asr["eng"].score == pytest.approx(25.0) and s.asr["zho"].metric == "cer"
    assert s.asr["zho"].score == pytest.approx(40.0)  # "你好 世界": the comma's space and 界 missed, 2 of 5


def test_files_written(report, tmp_path):
    paths = render.write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "matrix", "scatter"}
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    cur = data["systems"]["curriculum"]
    assert set(cur["bleu"]) == {"eng-deu", "eng-zho", "deu-eng"}
    assert cur["bleu"]["deu-eng"]["score"] == pytest.approx(direct_bleu("curriculum", "deu", "eng"))
    assert cur["n_failed"] == 1 and cur["n_rows"] == 6 and cur["failed"][0]["error"].startswith("decoding failed")
    assert cur["failed_by_direction"]["eng-deu"] == {"failed": 1, "of": 2}
    assert cur["failed_by_direction"]["eng-zho"] == {"failed": 0, "of": 2}
    assert data["systems"]["baseline"]["average_bleu"] == pytest.approx(report.systems[1].average())
    assert data["systems"]["curriculum"]["mt"]["bleu"]["eng-zho"]["score"] == pytest.approx(100.0)
    assert data["systems"]["curriculum"]["mt"]["n_failed"] == 1 and "mt" not in data["systems"]["baseline"]
    md = paths["markdown"].read_text(encoding="utf-8")
    base_deu_eng = f"{direct_bleu('baseline', 'deu', 'eng'):.1f}"
    # languages in order of first appearance, the same order for rows and columns
    assert "| eng→X | deu→X | Avg |" in md and "| X→eng | X→deu | X→zho | Avg |" in md
    assert "## BLEU matrix: baseline" in md and f"| deu | {base_deu_eng} | – | – | {base_deu_eng} |" in md
    assert "| 6 | 1 of 6 |" in md.split("##")[0] and "| 6 | 0 of 6 |" in md.split("##")[0]  # summary: failed
    assert "## Failed utterances (2, scored as empty hypotheses)" in md
    assert "| system | eng→deu | eng→zho | deu→eng | all |" in md
    assert "| curriculum | 1 of 2 | 0 of 2 | 0 of 2 | 1 of 6 |" in md
    assert "| baseline | 0 of 2 | 0 of 2 | 0 of 2 | 0 of 6 |" in md
    assert "| curriculum (MT) | 0 of 2 | 0 of 2 | 1 of 2 | 1 of 6 |" in md
    assert "| curriculum | u2 | eng→deu | decoding failed: out of memory |" in md
    assert "| curriculum (MT) | d2 | deu→eng | CUDA out of memory |" in md
    assert "| eng→deu | 100.0 |" in md  # text MT vs speech: the curriculum's own MT column
    assert "| eng (WER) | deu (WER) |" in md
    for key in ("matrix", "scatter"):
        blob = paths[key].read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 5000


def test_no_scatter_without_mt(tmp_path):
    r = rep.build_report({"only": results("baseline")})
    paths = render.write_report(r, tmp_path)
    assert "scatter" not in paths and not (tmp_path / render.SCATTER_PNG).exists()
    assert (tmp_path / render.MATRIX_PNG).exists()


def test_a_plot_this_report_does_not_draw_is_not_left_from_an_earlier_one(report, tmp_path):
    """evaluate into a folder an earlier evaluate wrote: its bleu_matrix.png and mt_vs_s2tt.png stayed beside the
    new report (ASR only: no BLEU, no MT) as if they were of it."""
    assert {"matrix", "scatter"} <= set(render.write_report(report, tmp_path))
    asr = [UtteranceResult(f"a{i}", "eng", "eng", "the cat sat", "the cat sat", "the cat sat", None, task="asr")
           for i in range(3)]
    assert set(render.write_report(rep.build_report({"asr": asr}), tmp_path)) == {"json", "markdown"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [render.REPORT_MD, render.RESULTS_JSON]
    render.write_report(report, tmp_path)  # BLEU again, without MT this time: the matrix, and no scatter
    assert set(render.write_report(rep.build_report({"only": results("baseline")}), tmp_path)) == {
        "json", "markdown", "matrix"}
    assert (tmp_path / render.MATRIX_PNG).is_file() and not (tmp_path / render.SCATTER_PNG).exists()


def test_rows_with_forced_srt_tags_are_counted_and_reported(tmp_path):
    """An SRT row whose language tags were written for it (force_srt_tags) is counted per system: in the terminal
    table, the markdown and the JSON; a system without such rows says nothing; results files keep the flag."""
    ok = UtteranceResult("a", "eng", "deu", "hello", "hallo", "hello", "hallo", task="srt")
    forced = replace(ok, id="b", forced_tags=True)
    report = rep.build_report({"forced": [ok, forced], "plain": [ok, replace(ok, id="b")]})
    assert [s.forced_tags for s in report.systems] == [1, 0]
    text = render.format_table(report)
    assert "forced: language tags written for 1 of 2 utterances" in text and "plain: language" not in text
    assert "forced 1 of 2" in render.to_markdown(report)
    assert rep.to_json(report)["systems"]["forced"]["n_forced_tags"] == 1
    path = tmp_path / "hyps.jsonl"
    path.write_text(json.dumps(vars(forced)) + "\n", encoding="utf-8")
    assert rep.load_results(path)[0].forced_tags
    assert "language tags" not in render.format_table(rep.build_report({"plain": [ok]}))


def test_rows_cut_at_their_token_cap_are_counted_and_reported(tmp_path):
    """A row whose output reached its token cap (cut there, without its end token) is counted per system, its text
    MT too: in the terminal table, report.md and results.json; a system without such rows says nothing; results
    files keep the flag, and one written before it (no "capped" key) reads as not capped."""
    ok = UtteranceResult("a", "eng", "deu", "hello", "hallo", "hello", "hallo", task="srt")
    cut = replace(ok, id="b", capped=True)
    report = rep.build_report({"cut": [ok, cut, replace(ok, id="c")], "plain": [ok]},
                              mt={"plain": [replace(ok, task="mt", capped=True)]})
    assert [(s.capped, s.mt and s.mt.capped) for s in report.systems] == [(1, None), (0, 1)]
    text = render.format_table(report)
    assert "cut: 1 of 3 rows reached their token cap (--max-new-tokens, the row's duration budget, or text MT" in text
    assert "plain (MT): 1 of 1 rows reached their token cap" in text and "plain: 1" not in text
    md = render.to_markdown(report)
    assert "cut: 1 of 3 rows reached their token cap; plain (MT): 1 of 1 rows reached their token cap (" in md
    data = rep.to_json(report)["systems"]
    assert (data["cut"]["n_capped"], data["plain"]["n_capped"], data["plain"]["mt"]["n_capped"]) == (1, 0, 1)
    path = tmp_path / "hyps.jsonl"
    old = {k: v for k, v in vars(ok).items() if k != "capped"}  # a file from before the flag
    path.write_text(json.dumps(vars(cut)) + "\n" + json.dumps(old) + "\n", encoding="utf-8")
    assert [r.capped for r in rep.load_results(path)] == [True, False]
    plain = rep.build_report({"plain": [ok]})
    assert "token cap" not in render.format_table(plain) + render.to_markdown(plain)
    path.write_text(json.dumps({**old, "capped": 1}) + "\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"result row 'a': capped must be true or false or null, not 1"):
        rep.load_results(path)


def test_terminal_table(report):
    text = render.format_table(report)
    lines = text.splitlines()
    assert lines[0] == "BLEU" and "eng->deu" in lines[1] and "Avg" in lines[1] and "failed" in lines[1]
    cur = report.systems[0]
    assert lines[3].startswith("curriculum") and f"{cur.average():.1f}" in lines[3] and lines[3].endswith("1 of 6")
    assert f"{cur.bleu[('eng', 'zho')].score:.1f}" in lines[3] and lines[4].endswith("0 of 6")
    assert ("curriculum: failed: 1 of 6 (scored as empty hypotheses); by direction: eng->deu 1 of 2" in lines)
    assert ("curriculum (MT): failed: 1 of 6 (scored as empty hypotheses); by direction: deu->eng 1 of 2" in lines)
    assert any(line.startswith("curriculum") and f"{cur.mt.average():.1f}" in line for line in lines)


def test_load_results_jsonl(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [{"id": "a", "src": "eng", "tgt": "deu", "hyp_translation": "hallo", "ref_translation": "hallo",
             "extra": 1}, {"id": "b", "src": "eng", "tgt": "deu", "error": "boom"},
            {"id": "c", "src": "eng", "tgt": "deu", "transcript": "hello", "translation": "hallo"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    loaded = rep.load_results(path)
    assert loaded[0].hyp_translation == "hallo" and loaded[1].failed
    assert loaded[2].hyp_transcript == "hello" and loaded[2].hyp_translation == "hallo"  # infer.py's keys
    path.write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"r.jsonl:2:"):
        rep.load_results(path)
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"r.jsonl:1: .*must be an object"):
        rep.load_results(path)
    path.write_text(json.dumps({"id": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"r.jsonl:1: .*missing src, tgt"):
        rep.load_results(path)
    # a re-run's rows appended to the file: the report would score both, the paired test the last one only
    path.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], rows[1], {**rows[1], "error": None}]))
    with pytest.raises(LLMSRTError, match=r"r.jsonl:3: id 'b' again \(first on line 2\); keep one result per row"):
        rep.load_results(path)
    for key, value, kind in (("comet", "0.5", "a number"), ("forced_tags", 1, "true or false"),
                             ("hyp_translation", 3, "a string"), ("comet", True, "a number")):
        path.write_text(json.dumps({**rows[0], key: value}) + "\n", encoding="utf-8")
        with pytest.raises(LLMSRTError, match=rf"r.jsonl:1: result row 'a': {key} must be {kind} or null, not"):
            rep.load_results(path)
    path.write_text(json.dumps({**rows[0], "comet": 0.5, "forced_tags": True, "sentence": None}) + "\n")
    assert rep.load_results(path)[0].comet == 0.5


def test_a_15x14_report_md_keeps_its_failed_rows_and_comet_tables_readable():
    """At the paper's 15 x 14, report.md's failed-rows table had a column for each of 210 directions (a 2,536-
    character header, rows of "0 of 4") and so had COMET's: the first lists the directions where a row failed, the
    second becomes a src x tgt matrix per system, like BLEU's."""
    langs = ["eng", "deu", "fra", "spa", "por", "ita", "nld", "rus", "jpn", "kor", "vie", "ind", "tha", "zho", "yue"]
    rows = [UtteranceResult(f"{s}-{t}-{i}", s, t, None, "a cat", None, "a cat sat", task="s2tt",
                            error="OutOfMemoryError" if (t == "zho" and i == 0) else None, comet=50.0 + i)
            for s in langs for t in langs if s != t for i in range(2)]
    report = replace(rep.build_report({"A": rows}), comet_model="tiny")
    md = render.to_markdown(report)
    assert max(len(line) for line in md.splitlines() if not line.startswith("| A | OutOfMemory")) < 400
    failed = md[md.index("## Failed utterances"):]
    assert "Directions where a row failed" in failed
    header = next(line for line in failed.splitlines() if line.startswith("| system |"))
    assert header.count("→zho") == 14 and "→deu" not in header  # only the directions where a row failed
    assert "### COMET matrix: A (rows: source, columns: target)" in md
    small = render.to_markdown(replace(rep.build_report({"A": rows[:8]}), comet_model="tiny"))
    assert "COMET matrix" not in small and "Directions where a row failed" not in small


def test_report_md_tables_stay_whole_with_a_line_break_or_a_pipe_in_a_cell():
    """An error of several lines (a results file's, another tool's) or a '|' in a system name or a row id cut
    report.md's table there: every line after the break read as loose text, and a '|' made a column too many."""
    rows = results("baseline")
    rows[0] = replace(rows[0], hyp_translation=None, error="RuntimeError: CUDA error\nlaunch failed | see above")
    rows[1] = replace(rows[1], id="u2|b")
    md = render.to_markdown(rep.build_report({"A|B": rows}))
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert not any(line.startswith("launch failed") for line in md.splitlines())
    assert "| A\\|B | u1 | eng→deu | RuntimeError: CUDA error launch failed \\| see above |" in tables
    for line in tables:  # every row of a table has as many cells as its header
        header = next(h for h in reversed(tables[:tables.index(line) + 1]) if h.startswith("| system |")
                      or h.startswith("| src \\ tgt |"))
        assert line.replace("\\|", "").count("|") == header.replace("\\|", "").count("|"), line


def test_an_unknown_language_is_an_error_naming_it_not_a_missing_score():
    """A source code the registry does not know ("en" for "eng") made its WER/CER vanish from the report without a
    word (the error was taken for "every reference empty"); an unknown target was always an error (BLEU)."""
    row = UtteranceResult("r0", "en", "deu", "this is bad", "das ist gut", "this is good", "das ist gut", task="srt")
    for bad in (row, replace(row, src="eng", tgt="de")):
        code = "en" if bad.src == "en" else "de"
        with pytest.raises(LLMSRTError, match=f"^system x: row 'r0': unknown language code '{code}': use one of "):
            rep.score_system("x", [bad, replace(bad, id="r1")])
    # a code no score looks up is not checked: an S2TT row's source without a transcript written
    s = rep.score_system("x", [replace(row, hyp_transcript=None, task="s2tt")])
    assert s.asr == {} and list(s.bleu) == [("en", "deu")]
    # every reference transcript empty after normalization: that source has no WER, as before, and no error
    s = rep.score_system("x", [replace(row, src="eng", ref_transcript="[noise]")])
    assert s.asr == {} and s.n_utterances == 1


def test_an_asr_report_counts_the_utterances_it_scored(tmp_path):
    """report.md's summary said 0 utterances for a --task asr report (it counted BLEU rows only), where WER was
    computed over every row."""
    asr = [UtteranceResult(f"a{i}", "eng", "eng", "the cat sat", "the cat sat", "the cat sat", None, task="asr")
           for i in range(3)]
    s = rep.score_system("asr", asr)
    assert s.n_scored == 0 and s.n_utterances == 3 and s.asr["eng"].n == 3
    md = render.to_markdown(rep.build_report({"asr": asr}))
    assert "| asr | – | 0 | 3 | 0 of 3 |" in md.split("##")[0]
    srt = results("curriculum")  # BLEU and WER over the same rows: counted once
    assert rep.score_system("srt", srt).n_utterances == rep.score_system("srt", srt).n_scored == 6


def test_the_report_says_how_texts_were_normalized(tmp_path):
    """BLEU's texts are NFC-normalized, and English WER uses Whisper's English normalizer where the paper's
    scoring script uses the basic one for every language: report.md and results.json say so."""
    import unicodedata

    ref = "Tôi đang học tiếng Việt"
    rows = [rep.UtteranceResult("1", "eng", "vie", "the cat sat", unicodedata.normalize("NFD", ref), "the cat sat",
                                ref),
            rep.UtteranceResult("2", "deu", "vie", "die katze", ref, "die Katze", ref)]
    report = rep.build_report({"a": rows})
    assert report.systems[0].average() == pytest.approx(100.0)  # the NFD hypothesis is the reference's text
    render.write_report(report, tmp_path)
    md = (tmp_path / render.REPORT_MD).read_text(encoding="utf-8")
    assert "BLEU: hypotheses and references NFC-normalized (Unicode) before SacreBLEU." in md
    assert ("eng whisper-english, where the paper's scoring script uses whisper-basic for every language: not "
            "directly comparable with it (English WER comes out lower)." in md)
    data = json.loads((tmp_path / render.RESULTS_JSON).read_text(encoding="utf-8"))["systems"]["a"]
    assert data["bleu"]["eng-vie"]["unicode"] == "NFC" and "|tok:13a|" in data["bleu"]["eng-vie"]["signature"]
    assert "norm:whisper-english" in data["asr"]["eng"]["signature"]
    assert "norm:whisper-basic|" in data["asr"]["deu"]["signature"]


def claim(better: str, samples: int = 300, seed: int = 3) -> str:
    return (f"verdict: on each row's claim that its system is better than the one it is compared with ({better}), "
            f"paired bootstrap over test sentences, {samples} resamples, seed {seed}; holds / reversed: p < 0.05 for / "
            "against the claim")


def test_each_table_of_paired_tests_says_the_claim_its_verdicts_judge(report):
    """`| b | a | -15.7 | ... | reversed |` said neither which claim the verdict judges (b is better than a) nor how it
    was tested: a line under each table of paired tests, in the terminal and report.md, says so; results.json keeps
    the seed beside the resamples."""
    from llm_srt.evaluate.significance import Comparison

    worse, lower = Comparison(20.0, 35.7, 0.002, -24.6, -6.7, 40, 300, 3), Comparison(10.0, 15.0, 0.01, -8.0, -2.0,
                                                                                        40, 300, 3)
    report = replace(report, comparisons=(("baseline", "curriculum", worse),),
                     comet_comparisons=(("baseline", "curriculum", worse),),
                     transcript_comparisons=(("baseline", "curriculum", "eng", lower),))
    lines, md = render.format_table(report).splitlines(), render.to_markdown(report).splitlines()
    for better, verdict in (("higher average BLEU", "reversed"), ("higher mean COMET", "reversed"),
                            ("lower WER / CER", "holds")):
        assert lines[lines.index(claim(better)) - 1].endswith(verdict)  # right under its table's last row
        assert md[md.index(claim(better)) - 2].endswith(f"| {verdict} |") and not md[md.index(claim(better)) - 1]
    data = rep.to_json(report)["systems"]["baseline"]
    assert data["significance"]["resamples"] == 300 and data["significance"]["seed"] == 3
    assert data["comet_significance"]["seed"] == 3 and data["transcript_significance"]["eng"]["seed"] == 3
    assert "verdict: on" not in render.format_table(rep.build_report({"only": results("baseline")}))


def test_an_average_over_fewer_directions_than_the_tables_is_marked(tmp_path):
    """Avg is a mean over directions (the paper's): a system scored on eng->deu alone showed `Avg 25.9` beside
    another's over eng->deu and eng->fra with no word. Each average over fewer of its column's directions than the
    systems cover together is marked "(k of N)", in the terminal and report.md; results.json keeps the numbers."""
    def rows(tgts, hyp, comet=None):
        return [UtteranceResult(f"{t}{i}", "eng", t, None, hyp, None, "the cat sat on the mat", comet=comet)
                for t in tgts for i in range(2)]

    full, part = rows(("deu", "fra"), "the cat sat on a mat", 0.8), rows(("deu",), "the cat sat on the", 0.5)
    report = replace(rep.build_report({"a": full, "c": part}), comet_model="tiny")
    a, c = report.systems
    avg = f"{c.average():.1f} (1 of 2)"
    text = render.format_table(report).splitlines()
    assert text[3].split()[-4:] == [f"{a.average():.1f}", "0", "of", "4"] and "(" not in text[3]
    assert text[4].endswith(f"{avg}  0 of 2") and text[5] == render.PARTIAL_NOTE
    assert any(line.startswith("c ") and line.split()[-5:] == ["50.0", "(1", "of", "2)", "0"] for line in text)  # COMET
    paths = render.write_report(report, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert f"| c | {avg} | 1 | 2 | 0 of 2 |" in md and f"| a | {a.average():.1f} | 2 | 4 | 0 of 4 |" in md
    assert render.PARTIAL_NOTE in md
    assert f"| c | {avg} | {avg} |" in md  # by source: eng->X is over 1 of eng's 2 directions too
    assert f"| c | {c.bleu[('eng', 'deu')].score:.1f} | – | {avg} |" in md  # by target: X->deu is whole
    assert "| c | 50.0 | – | 50.0 (1 of 2) | 0 |" in md  # COMET
    data = json.loads(paths["json"].read_text(encoding="utf-8"))["systems"]["c"]
    assert data["average_bleu"] == pytest.approx(c.average()) and data["n_directions"] == 1
    # more directions than columns: the terminal's src->X averages are marked too
    wide = rep.build_report({"a": rows(("deu", "fra", "spa", "ita", "nld", "por", "rus"), "the cat"),
                             "c": rows(("deu", "fra"), "the cat")})
    text = render.format_table(wide).splitlines()
    assert text[1].split()[:3] == ["system", "eng->X", "Avg"] and "(2 of 7)" in text[4]
    same = rep.build_report({"a": full, "b": rows(("deu", "fra"), "the cat")})
    assert "of 2)" not in render.format_table(same) + render.to_markdown(same)
    assert render.PARTIAL_NOTE not in render.format_table(same) + render.to_markdown(same)


def test_transcript_tables_count_the_references_wer_skipped():
    """A reference transcript empty after normalization ("[noise]") is left out of WER/CER (`Score.skipped`), which
    only results.json said; `llm-srt score` says "skipped N of M lines". The terminal and report.md now say it under
    their transcript tables, where any was skipped."""
    rows = [UtteranceResult(f"u{i}", "eng", "deu", "the cat sat", "die katze", ref, "die katze", task="srt")
            for i, ref in enumerate(["the cat sat", "[noise]", "the cat sat", "[music]"])]
    report = rep.build_report({"a": rows, "b": rows[:1] + rows[2:3]})
    assert report.systems[0].asr["eng"].skipped == 2
    line = "WER/CER skipped (reference transcript empty after normalization): a eng 2 of 4"
    text = render.format_table(report).splitlines()
    assert text[text.index(line) - 1].startswith("b ")  # under the transcript table
    md = render.to_markdown(report).splitlines()
    assert md[md.index(line) - 2].startswith("| b |")
    assert "WER/CER skipped" not in render.format_table(rep.build_report({"b": rows[:1]}))


def test_load_results_names_a_line_that_is_not_utf8_and_reads_a_bom(tmp_path):
    """A results file that is not UTF-8 (a hand-edited file saved as Latin-1) was a UnicodeDecodeError traceback,
    and one that starts with a byte-order mark was "not a result row": the first is one line naming the file, line
    and byte, the second reads as plain UTF-8, as `llm-srt score` and the manifest reader have them."""
    row = {"id": "a", "src": "eng", "tgt": "deu", "hyp_translation": "Grüße", "ref_translation": "Hallo"}
    path = tmp_path / "bad.jsonl"
    latin = json.dumps(row, ensure_ascii=False).encode("latin-1")
    path.write_bytes(json.dumps({**row, "id": "b"}).encode() + b"\n" + latin + b"\n")
    byte = latin.index("ü".encode("latin-1")) + 1
    with pytest.raises(LLMSRTError, match=rf"bad.jsonl:2: not valid UTF-8 \(byte {byte} of the line\); re-save the "
                                          r"file as UTF-8$"):
        rep.load_results(path)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row, ensure_ascii=False).encode() + b"\r\n"
                     + json.dumps({**row, "id": "b"}).encode() + b"\r\n")
    assert [(r.id, r.hyp_translation) for r in rep.load_results(path)] == [("a", "Grüße"), ("b", "Grüße")]


def test_load_results_names_a_lone_surrogate_with_its_line(tmp_path):
    """A results file's JSON escape of half a character ("\\ud800", a broken \\u escape) loaded, and evaluate
    stopped on a UnicodeEncodeError traceback writing the hyps file again; it is the file, the line and the field."""
    path = tmp_path / "hyps.x.jsonl"
    good = {"id": "1", "src": "eng", "tgt": "deu", "hyp_translation": "a b", "ref_translation": "a b"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "2", "hyp_translation": "a \ud800 b"})
                    + "\n", encoding="utf-8")
    assert "\\ud800" in path.read_text()
    with pytest.raises(LLMSRTError) as e:
        rep.load_results(path)
    assert str(e.value) == (f"{path}:2: hyp_translation holds a lone surrogate '\\ud800' at character 3, which is "
                            "not text (a broken \\u escape); fix or drop it")


def test_a_report_that_cannot_be_written_whole_leaves_the_earlier_one(report, tmp_path, monkeypatch):
    """results.json and report.md were written in place, one after the other: a disk that filled (here a file-size
    limit) or a kill part way through left the earlier report's results.json cut short (not JSON), or a new
    results.json beside the earlier report.md and plots. The earlier report stays whole until every file is written."""
    import resource
    import signal

    render.write_report(report, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = rep.build_report({"only": results("baseline")})
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limit[1]))
    try:
        with pytest.raises(OSError):
            render.write_report(other, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads(before[render.RESULTS_JSON])["systems"]

    def killed(report):
        raise KeyboardInterrupt
    monkeypatch.setattr(render, "to_markdown", killed)  # stopped after results.json
    with pytest.raises(KeyboardInterrupt):
        render.write_report(other, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    assert set(render.write_report(other, tmp_path)) == {"json", "markdown", "matrix"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [render.MATRIX_PNG, render.REPORT_MD, render.RESULTS_JSON]


def test_a_transcript_or_comet_score_over_other_rows_than_the_first_systems_is_marked():
    """A results file of B holding 4 of A's 8 ASR rows (those A got right) printed `A 32.4 / B 0.0` as if comparable:
    only BLEU was marked "(other rows)". Each system's transcript rows are compared per source language with those of
    the first system that transcribed it (the one its paired test is against), and COMET per direction follows
    BLEU's rows; marked in the terminal and report.md with a line under the table, counted in results.json."""
    from llm_srt.evaluate.compare import compare_systems

    refs = ["the cat sat on the mat", "a dog ran in the park", "red and blue houses", "we meet tomorrow at noon",
            "it is raining in berlin", "see you later", "the tree is green", "open the door please"]
    a = [UtteranceResult(f"c{i}", "eng", "eng", r if i % 2 else r + " extra words", r, r, task="asr",
                         sentence=f"s{i}") for i, r in enumerate(refs)]
    b = [replace(r, hyp_transcript=r.ref_transcript) for r in a if int(r.id[1:]) % 2]  # A's right rows only
    report = compare_systems(rep.build_report({"A": a, "B": b}), {"A": [a], "B": [b]}, 100, log=lambda *_: None)
    assert report.other_transcript_rows == {"B": {"eng": 4}} and report.transcribed_first("eng") == "A"
    note = ("(other rows): B's transcripts were scored on other rows than A's in eng (4 rows in only one of them); "
            "not comparable there (score results of the same test manifest)")
    lines = render.format_table(report).splitlines()
    assert lines[lines.index(note) - 1].split() == ["B", "0.0", "(other", "rows)"]
    assert "(other" not in lines[lines.index(note) - 2]  # A's row
    md = render.to_markdown(report).splitlines()
    wer = f"{report.systems[0].asr['eng'].score:.1f}"
    assert md[md.index(note) - 2] == "| B | 0.0 (other rows) |" and md[md.index(note) - 3] == f"| A | {wer} |"
    data = rep.to_json(report)["systems"]
    assert data["B"]["other_transcript_rows"] == {"eng": 4} and "other_transcript_rows" not in data["A"]
    # over the same rows (a row whose reference is empty after normalization enters no WER): no marker
    noise = replace(a[0], id="n", ref_transcript="[noise]", sentence="n")
    for same in (rep.build_report({"A": a + [noise], "B": a}), rep.build_report({"A": b, "B": a[1::2]})):
        assert not same.other_transcript_rows and "other_transcript_rows" not in rep.to_json(same)["systems"]["B"]
        assert "other rows" not in render.format_table(same) + render.to_markdown(same)

    # COMET per direction: its rows are BLEU's with a score, marked as BLEU is, with its line under the COMET table
    rows = [UtteranceResult(f"u{i}", "eng", "deu", None, "die katze", None, "die katze sass", comet=0.5 + i / 100)
            for i in range(6)]
    report = replace(rep.build_report({"A": rows, "B": rows[:3]}), comet_model="tiny")
    note = ("(other rows): B was scored on other rows than A in eng→deu (3 rows in only one of them); not comparable "
            "with A there (score results of the same test manifest)")
    text = render.format_table(report)
    comet = text[text.index("COMET (x 100)"):].splitlines()
    assert comet[4].startswith("B ") and comet[4].count("(other rows)") == 2 and comet[5] == note  # cell and Avg
    assert "(other" not in comet[3]
    md = render.to_markdown(report)
    comet = md[md.index("## COMET by direction"):].splitlines()
    assert "| B | 51.0 (other rows) | 51.0 (other rows) | 0 |" in comet and note in comet
    same = replace(rep.build_report({"A": rows, "B": rows}), comet_model="tiny")
    assert "other rows" not in render.format_table(same) + render.to_markdown(same)
