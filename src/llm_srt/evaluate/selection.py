"""Which manifest rows a system decodes under a task, and each torchrun rank's share of them (`llm-srt evaluate`)."""

from ..data.manifest import Row
from ..prompts import Task


def row_task(row: Row, task: Task) -> Task:
    """The task a row runs as: `task`, or ASR for a row without a target (and for every row under --task asr)."""
    return Task.ASR if row.is_asr or task is Task.ASR else task


def select_rows(rows: list[Row], task: Task) -> list[Row]:
    """The rows to run: all of them; for --task asr one row per (audio, source language), since every direction of
    an N-way manifest repeats the same clip and its transcript."""
    if task is not Task.ASR:
        return rows
    seen: set[tuple[str, str]] = set()
    return [r for r in rows if (r.audio, r.src_lang) not in seen and not seen.add((r.audio, r.src_lang))]


def shard(rows: list[Row], rank: int, world: int) -> list[Row]:
    """This rank's length-bucketed share of `rows`: longest first, each row goes to the rank with the least audio so
    far, so every rank gets a similar number of seconds (and of rows) to decode. Rows keep their manifest order."""
    load = [0.0] * world
    mine = []
    for i in sorted(range(len(rows)), key=lambda i: (-rows[i].duration, i)):
        k = min(range(world), key=lambda k: (load[k], k))
        load[k] += rows[i].duration
        if k == rank:
            mine.append(i)
    return [rows[i] for i in sorted(mine)]


def mt_rows(rows: list[Row]) -> list[Row]:
    """The rows --with-mt translates: those with a target language."""
    return [r for r in rows if not r.is_asr]
