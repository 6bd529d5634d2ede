"""A journal write that a full disk refuses: the line says how many decoded rows are kept, counted as a stop counts
them. It said "the rows written before are kept in OUT/partial ... go on from them" where the disk had cut the first
batch short, so that nothing was kept and the same command decoded every row again."""

import errno
import os
from pathlib import Path

import pytest

from tone_rows import tone_manifest

from llm_srt import cli
from llm_srt.evaluate import journal, run
from llm_srt.model import systems
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task

N_ROWS = 4
FULL = os.strerror(errno.ENOSPC)


class Echo:
    """A system whose outputs follow from each item alone; it counts the rows it decodes."""

    def __init__(self, state):
        self.name, self.state = "echo", state

    def run_batch(self, items, options):
        self.state["rows"] += len(items)
        return [Output(f"heard {it.audio.size}", "" if it.task is Task.ASR else f"{it.tgt} {it.audio.size}")
                for it in items]

    def detect_language(self, audio):
        return "eng"


class Torn:
    """A journal file opened to append, on a disk that fills up at append number `full_at` (1-based): that write
    puts the first half of its text there, as a full disk does, and fails."""

    def __init__(self, fh, full):
        self.fh, self.full = fh, full

    def write(self, text):
        if self.full:
            self.fh.write(text[:len(text) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, FULL)
        return self.fh.write(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.fixture
def state(monkeypatch):
    state = {"rows": 0, "appends": 0, "full_at": None}
    monkeypatch.setitem(systems.SYSTEMS, "echo", lambda name, placement, **_: Echo(state))
    real_open = open

    def filling(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        if "a" not in mode or Path(path).parent.name != run.PARTIAL:
            return fh
        state["appends"] += 1
        return Torn(fh, state["full_at"] is not None and state["appends"] >= state["full_at"])

    monkeypatch.setattr(journal, "open", filling, raising=False)
    return state


def evaluate(manifest: Path, out: Path, batch_size: int) -> int:
    return cli.main(["evaluate", "--model", "s=echo", "--manifest", str(manifest), "--out", str(out), "--task", "srt",
                     "--batch-size", str(batch_size), "--significance", "0", "--device", "cpu", "--dtype", "float32"])


def test_a_first_batch_cut_short_says_no_row_is_kept(state, tmp_path, capsys):
    """The tester's case: 4 rows in one batch, whose write the full disk cut short: none is kept, and the line says
    so; the same command decodes all 4 again."""
    manifest = tone_manifest(tmp_path, N_ROWS)
    state["full_at"] = 1
    assert evaluate(manifest, tmp_path / "r", N_ROWS) == 2
    partial = tmp_path / "r" / run.PARTIAL
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"llm-srt evaluate: error: {partial / 's.hyps.rank0.jsonl'}: cannot write a decoded row there ({FULL}); no "
        "decoded row is kept: make room (or make it writable) and run the same command again")
    assert state["rows"] == N_ROWS
    state.update(rows=0, full_at=None)
    assert evaluate(manifest, tmp_path / "r", N_ROWS) == 0
    assert "decoded by an earlier run kept" not in capsys.readouterr().out
    assert state["rows"] == N_ROWS  # nothing was kept: every row again


def test_batches_written_whole_are_counted_and_the_torn_one_is_not(state, tmp_path, capsys):
    """Batches of 1: two written whole, the third cut short: "2 decoded rows are kept", and the same command decodes
    the other two alone."""
    manifest = tone_manifest(tmp_path, N_ROWS)
    state["full_at"] = 3
    assert evaluate(manifest, tmp_path / "r", 1) == 2
    partial = tmp_path / "r" / run.PARTIAL
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"llm-srt evaluate: error: {partial / 's.hyps.rank0.jsonl'}: cannot write a decoded row there ({FULL}); 2 "
        f"decoded rows are kept in {partial}: make room (or make it writable) and run the same command again to go on "
        "from them")
    state.update(rows=0, full_at=None)
    assert evaluate(manifest, tmp_path / "r", 1) == 0
    assert "2 rows decoded by an earlier run kept" in capsys.readouterr().out
    assert state["rows"] == N_ROWS - 2


@pytest.mark.parametrize("rows, rank, said", [
    (1, None, f"1 decoded row is kept in {Path('o/partial')}"),
    (40, 1, f"rank 1 keeps 40 decoded rows in {Path('o/partial')}"),
    (0, None, "no decoded row is kept"),
    (0, 3, "rank 3 keeps no decoded row"),
])
def test_a_full_disk_and_a_stop_say_what_is_kept_in_the_same_words(rows, rank, said):
    """One wording, the stop's (cli's last line after Ctrl-C) and the full disk's."""
    kept = journal.Kept(rows, Path("o/partial"), rank)
    error = KeyboardInterrupt()
    error.kept = kept
    assert cli.stopped_advice("evaluate", error) == f"; {said}: {kept.again()}"
    assert str(journal.Unwritten(Path("o/partial/s.hyps.rank0.jsonl"), FULL).saying(kept)).endswith(
        f"({FULL}); {said}: make room (or make it writable) and {kept.again()}")
