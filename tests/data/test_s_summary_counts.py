"""The summary `llm-srt prepare` prints counts in words that agree with their number: "1 bad clip (1 table row)",
"left out 1 table row", "1 row"; "2 bad clips", "0 rows" (it said "skipped 1 bad clips (1 table rows)")."""

from pathlib import Path

import pytest

from llm_srt.data.clips import BadClip, Summary

REASON = "no translation"


def summary(n: int) -> list[str]:
    s = Summary(Path("out"), written={"train": n, "test": 0})
    for i in range(n):
        s.drop(REASON, f"t.tsv:{i + 2}")
        s.bad_clips.append(BadClip(f"t.tsv:{i + 10}", f"c{i}.mp3", "empty"))
    s.rows_without_clip = n
    return s.lines()


@pytest.mark.parametrize("n, row, clip", [(1, "row", "clip"), (2, "rows", "clips")])
def test_each_count_in_the_summary_agrees_with_its_number(n, row, clip):
    lines = summary(n)
    assert lines[:2] == [f"{Path('out') / 'train.jsonl'}: {n} {row}", f"{Path('out') / 'test.jsonl'}: 0 rows"]
    assert f"left out {n} table {row}: {REASON}; the first {n}:" in lines
    assert f"skipped {n} bad {clip} ({n} table {row}); the first {n} (all in {Path('out') / 'summary.json'}):" in lines


def test_one_bad_clip_may_take_several_table_rows():
    s = Summary(Path("out"), bad_clips=[BadClip("t.tsv:2", "c.mp3", "empty")], rows_without_clip=3)
    assert any(line.startswith("skipped 1 bad clip (3 table rows); ") for line in s.lines())
