"""Rows --skip-bad drops are counted and named in report.md and results.json, every one of them with its file:line
and reason, and the first few in the notice: it said "skipped 2 bad rows (first: bad.jsonl:8: ...)" on stderr alone,
while report.md said "utterances 7" and results.json had no count, so a saved report hid that its test set was
smaller."""

import json

import numpy as np

from tone_rows import tone_rows

from llm_srt import cli
from llm_srt.audio import SAMPLE_RATE, write_wav
from llm_srt.data.manifest import Row, row_to_dict
from llm_srt.model import systems
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task


class Gold:
    name = "gold"

    def run_batch(self, items, options):
        return [Output("a cat sat", "" if it.task is Task.ASR else "die Katze") for it in items]

    def detect_language(self, audio):
        return "eng"


def test_the_rows_skip_bad_dropped_are_in_the_report(tmp_path, monkeypatch, capsys):
    lines = [json.dumps(row_to_dict(row, tmp_path)) for row in tone_rows(tmp_path, 5)]
    lines[1] = lines[1].replace('"deu"', '"xxx"')  # an unknown language: line 2
    lines[3] = lines[3][:-1]  # cut short: line 4
    lines.append(json.dumps({"id": "5"}))  # fields missing: line 6
    (tmp_path / "bad.jsonl").write_text("".join(line + "\n" for line in lines))
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Gold())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "--model", "gold", "--manifest", "bad.jsonl", "--out", "r", "--task", "s2tt",
                     "--skip-bad", "--significance", "0", "--device", "cpu"]) == 0
    notice = [line for line in capsys.readouterr().err.splitlines() if "--skip-bad" in line]
    assert len(notice) == 1 and notice[0].startswith(
        "llm-srt evaluate: warning: --skip-bad: bad.jsonl: skipped 3 bad rows (bad.jsonl:2: tgt_lang 'xxx' is not a "
        "known language"), notice
    assert "; bad.jsonl:4: " in notice[0] and "; bad.jsonl:6: " in notice[0]
    assert notice[0].endswith("; report.md and results.json count them")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["systems"]["gold"]["n_rows"] == 3  # of 5 rows, 2 bad; and a sixth bad
    assert results["n_skipped_bad"] == 3
    assert [s["row"] for s in results["skipped_bad"]] == ["bad.jsonl:2", "bad.jsonl:4", "bad.jsonl:6"]
    assert results["skipped_bad"][0]["reason"].startswith("tgt_lang 'xxx' is not a known language")
    assert all(s["reason"] for s in results["skipped_bad"])
    report = (tmp_path / "r" / "report.md").read_text()
    said = [line for line in report.splitlines() if line.startswith("Manifest rows skipped as bad")]
    assert len(said) == 1 and said[0].startswith(
        "Manifest rows skipped as bad (--skip-bad), in no score or count: 3 (bad.jsonl:2: tgt_lang 'xxx'"), said
    assert said[0].endswith("); results.json lists them: skipped_bad") and "bad.jsonl:6: " in said[0]


def test_more_bad_rows_than_the_manifest_error_lists_are_counted_and_listed_all(tmp_path, monkeypatch, capsys):
    """read_manifest's error lists its first MAX_LISTED problems; results.json counted every bad row but listed only
    those (read back from that error's text): it lists each now, handed over by read_manifest itself."""
    from llm_srt.data.manifest import MAX_LISTED

    path = tmp_path / "c.wav"
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    write_wav(path, (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    good = Row(id="g", audio=str(path), duration=0.6, src_lang="eng", transcript="a cat sat", tgt_lang="deu",
               translation="die Katze", split="test", corpus="t", sentence_id="0")
    n_bad = MAX_LISTED + 5
    (tmp_path / "m.jsonl").write_text(json.dumps(row_to_dict(good, tmp_path)) + "\n"
                                      + "".join(json.dumps({"id": f"b{i}"}) + "\n" for i in range(n_bad)))
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Gold())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "--model", "gold", "--manifest", "m.jsonl", "--out", "r", "--task", "s2tt",
                     "--skip-bad", "--significance", "0", "--device", "cpu"]) == 0
    assert f"skipped {n_bad} bad rows (m.jsonl:2: " in capsys.readouterr().err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["n_skipped_bad"] == n_bad
    assert [s["row"] for s in results["skipped_bad"]] == [f"m.jsonl:{2 + i}" for i in range(n_bad)]
    assert n_bad > MAX_LISTED and (f"; ... ({n_bad - 5} more)); results.json lists them: skipped_bad"
            in (tmp_path / "r" / "report.md").read_text())
