"""A Ctrl-C or SIGTERM within a group of rows (GROUP_BATCHES batches, run together): the rows decoded before it are
kept and the last line says how many. Rows reached the journal a whole group at a time, so a stop at batch 8 of 16
lost up to 127 decoded rows while the line claimed "the rows decoded so far are kept"."""

import json
import os
import signal
from pathlib import Path

import pytest

from tone_rows import tone_manifest

from llm_srt import cli
from llm_srt.errors import TERMINATED
from llm_srt.evaluate import journal, run
from llm_srt.model import systems
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task

N_ROWS = 6


class Stopping:
    """A system whose outputs follow from each item alone; it sends its own process `state["signal"]` when it is
    handed batch number `stop_at` (1-based), as Ctrl-C, torchrun or SLURM would."""

    def __init__(self, state):
        self.name, self.state = "stopping", state

    def run_batch(self, items, options):
        self.state["batches"] += 1
        if self.state["batches"] == self.state["stop_at"]:
            os.kill(os.getpid(), self.state["signal"])  # cli's handler raises Terminated here, Python's Ctrl-C
        self.state["rows"] += len(items)
        return [Output(f"heard {it.audio.size} {it.src}", "" if it.task is Task.ASR else f"{it.tgt} {it.audio.size}")
                for it in items]

    def detect_language(self, audio):
        return "eng"


@pytest.fixture
def manifest(tmp_path) -> Path:
    return tone_manifest(tmp_path, N_ROWS)


@pytest.mark.parametrize("signum, said, code", [(signal.SIGTERM, "stopped by SIGTERM", TERMINATED),
                                                (signal.SIGINT, "interrupted", 130)])
def test_a_stop_within_a_group_keeps_the_rows_decoded_and_says_how_many(signum, said, code, manifest, tmp_path,
                                                                        monkeypatch, capsys):
    """One group of 6 rows (batches of 1, GROUP_BATCHES as shipped), stopped at its fourth batch: 3 rows kept, said
    in the last line; the same command decodes the other 3 alone, and writes what an uninterrupted run writes."""
    assert run.GROUP_BATCHES >= N_ROWS  # every row in one group
    state = {"batches": 0, "stop_at": 4, "rows": 0, "signal": signum}
    monkeypatch.setitem(systems.SYSTEMS, "stopping", lambda name, placement, **_: Stopping(state))

    def evaluate(out: str) -> int:
        return cli.main(["evaluate", "--model", "s=stopping", "--manifest", str(manifest), "--out",
                         str(tmp_path / out), "--task", "srt", "--batch-size", "1", "--significance", "0",
                         "--device", "cpu", "--dtype", "float32"])

    assert evaluate("r") == code
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"llm-srt evaluate: {said}; 3 decoded rows are kept in {tmp_path / 'r' / 'partial'}"
                                    ": run the same command again to go on from them"), err
    assert state["rows"] == 3
    state.update(stop_at=None, rows=0)
    assert evaluate("r") == 0  # the same command
    assert "3 rows decoded by an earlier run kept" in capsys.readouterr().out
    assert state["rows"] == 3  # the rows not kept, none twice
    assert evaluate("whole") == 0 and state["rows"] == 3 + N_ROWS
    for name in ("hyps.s.jsonl", "results.json", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert not (tmp_path / "r" / run.PARTIAL).exists()


def test_a_stop_at_the_first_batch_says_no_row_is_kept(manifest, tmp_path, monkeypatch, capsys):
    state = {"batches": 0, "stop_at": 1, "rows": 0, "signal": signal.SIGTERM}
    monkeypatch.setitem(systems.SYSTEMS, "stopping", lambda name, placement, **_: Stopping(state))
    assert cli.main(["evaluate", "--model", "s=stopping", "--manifest", str(manifest), "--out", str(tmp_path / "r"),
                     "--task", "srt", "--batch-size", "2", "--significance", "0", "--device", "cpu"]) == TERMINATED
    assert capsys.readouterr().err.splitlines()[-1] == ("llm-srt evaluate: stopped by SIGTERM; no decoded row is kept: "
                                                        "run the same command again")


@pytest.mark.parametrize("rows, rank, advice", [
    (1, None, f"1 decoded row is kept in {Path('o/partial')}: run the same command again to go on from them"),
    (40, 1, f"rank 1 keeps 40 decoded rows in {Path('o/partial')}: run the same command again to go on from them"),
    (0, 3, "rank 3 keeps no decoded row: run the same command again"),
])
def test_the_line_says_what_this_ranks_journals_keep(rows, rank, advice):
    """Under torchrun each rank keeps its own journal, and says its own count (a dead peer's line too)."""
    error = KeyboardInterrupt()
    error.kept = journal.Kept(rows, Path("o/partial"), rank)
    assert cli.stopped_advice("evaluate", error) == f"; {advice}"


class Raising:
    """A system whose outputs follow from each item alone; a KeyboardInterrupt (a Ctrl-C) at its batch `stop_at`."""

    def __init__(self, state):
        self.name, self.state = "raising", state

    def run_batch(self, items, options):
        self.state["batches"] += 1
        if self.state["batches"] == self.state["stop_at"]:
            raise KeyboardInterrupt
        self.state["rows"] += len(items)
        return [Output(f"heard {it.audio.size} {it.src}", f"{it.tgt} {it.audio.size}") for it in items]

    def detect_language(self, audio):
        return "eng"


def _rank(rank: int, world: int, port: int, manifest: str, out: str, stop_at: int | None) -> None:
    """One torchrun rank (its environment set by hand) of `evaluate`, stopped at its batch `stop_at`; the rows it
    decoded and what its stop kept (`error.kept`) go to OUT/rank<R>.json."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    state = {"batches": 0, "stop_at": stop_at, "rows": 0}
    systems.SYSTEMS["raising"] = lambda name, placement, **_: Raising(state)
    kept = None
    try:
        run.evaluate({"s": "raising"}, manifest, out, task="s2tt", batch_size=1, significance=0,
                     placement=run.device.resolve("cpu", "float32"), log=lambda *_: None)
    except KeyboardInterrupt as e:
        kept = [e.kept.rows, str(e.kept.folder), e.kept.rank]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"rows": state["rows"], "kept": kept}))


@pytest.mark.slow  # torchrun, three runs of two processes
@pytest.mark.long(40)
def test_under_torchrun_each_rank_keeps_the_rows_it_decoded_before_a_stop_within_its_group(manifest, tmp_path):
    """Two ranks, each with its 3 rows in one group, each stopped at its second batch: each rank's journal keeps its
    one row decoded and its line says so; the same command decodes the 2 rows left on each rank, and writes what an
    uninterrupted run of two processes writes."""
    import socket

    import torch.multiprocessing as mp

    def spawn(out: Path, stop_at: int | None) -> list[dict]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_rank, args=(2, port, str(manifest), str(out), stop_at), nprocs=2, join=True)
        return [json.loads((out / f"rank{k}.json").read_text()) for k in range(2)]

    partial = tmp_path / "r" / run.PARTIAL
    assert spawn(tmp_path / "r", 2) == [{"rows": 1, "kept": [1, str(partial), k]} for k in range(2)]
    for k in range(2):
        assert len((partial / f"s.hyps.rank{k}.jsonl").read_text().splitlines()) == 1 + 1  # settings, one row
    assert [said["rows"] for said in spawn(tmp_path / "r", None)] == [2, 2]  # none twice
    assert [said["rows"] for said in spawn(tmp_path / "whole", None)] == [3, 3]
    for name in ("hyps.s.jsonl", "results.json", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert not partial.exists()
