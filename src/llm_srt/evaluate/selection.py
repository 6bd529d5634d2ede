"""Which manifest rows a system decodes under a task, and each torchrun rank's share of them (`llm-srt evaluate`);
how the rows --skip-bad dropped are named (`named_bad`)."""

from ..data.clips import counted
from ..data.manifest import Row
from ..errors import first_few
from ..prompts import Task


def row_task(row: Row, task: Task) -> Task:
    """The task a row runs as: `task`, or ASR for a row without a target (and for every row under --task asr)."""
    return Task.ASR if row.is_asr or task is Task.ASR else task


def select_rows(rows: list[Row], task: Task) -> list[Row]:
    """The rows to run, those a score takes: for --task asr one row per (audio, source language), since every direction
    of an N-way manifest repeats the same clip and its transcript: its transcript-only (ASR) row where it has one (a
    translation row's id, "s1:deu", named an ASR result), else its first; under a task that writes the transcript beside
    the translation (SRT, ASR+SMT), every row but the transcript-only (ASR) rows of a source language that has rows of
    that task with a reference transcript: its WER/CER is theirs (`report.transcript_rows`, as the paper scores it), so
    those ASR rows were decoded for no score (half the rows of a CoVoST test manifest). Under other tasks (S2TT, SMT),
    all of them."""
    if task is Task.ASR:
        chosen: dict[tuple[str, str], Row] = {}
        for r in rows:
            if (r.audio, r.src_lang) not in chosen or r.is_asr and not chosen[r.audio, r.src_lang].is_asr:
                chosen[r.audio, r.src_lang] = r
        kept = {id(r) for r in chosen.values()}
        return [r for r in rows if id(r) in kept]
    if not task.writes_transcript:
        return rows
    given = {r.src_lang for r in rows if not r.is_asr and r.transcript}
    return [r for r in rows if not (r.is_asr and r.src_lang in given)]


def unscored_rows(rows: list[Row], task: Task) -> list[Row]:
    """The rows `select_rows` leaves out whose clip (audio, source language) has no row it runs, so no score takes
    their transcript under `task`: a transcript-only row of a clip without a translation row (CoVoST's empty or
    REMOVE translations) beside other clips' SRT rows of its language. --task asr scores them."""
    chosen = select_rows(rows, task)
    clips, kept = {(r.audio, r.src_lang) for r in chosen}, {id(r) for r in chosen}
    return [r for r in rows if id(r) not in kept and (r.audio, r.src_lang) not in clips]


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


def left_out(rows: list[Row], task: Task, shown: int = 3) -> str:
    """What `select_rows` leaves out of `rows` under `task`, for the log ('' where nothing, or only --task asr's
    repeats of a clip): '; N transcript-only (ASR) rows not decoded ...', naming those `unscored_rows` holds."""
    n = 0 if task is Task.ASR else len(rows) - len(select_rows(rows, task))
    if not n:
        return ""
    unscored = unscored_rows(rows, task)
    ids = first_few([r.id for r in unscored], shown, counted=False)
    return (f"; {counted(n, 'transcript-only (ASR) row')} not decoded (the {task.value} rows of their language give "
            f"its WER/CER)" + (f", {len(unscored)} of them of a clip with no {task.value} row, so not scored ({ids}): "
                           "--task asr scores them" if unscored else ""))


def named_bad(n: int, skipped: tuple[tuple[str, str], ...], shown: int) -> str:
    """'file:line: why; ...' of the first `shown` of `skipped` (of `n` bad rows), '; ... (k more)' after them."""
    more = n - min(shown, len(skipped))
    return "; ".join(f"{at}: {why}" for at, why in skipped[:shown]) + (f"; ... ({more} more)" if more else "")
