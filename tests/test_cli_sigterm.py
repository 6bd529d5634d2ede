"""After a SIGTERM (torchrun's to the ranks left when one dies, SLURM's preemption), `llm-srt train`, `curriculum` and
`evaluate` say in their one line what the run kept and how to go on, as after a dead peer (`cli.ON_STOPPED`); the
training recipe's own line on a signal comes only within its steps (train/stops.py), not while the model or the data
load, and evaluate had none. Other verbs' line is as before."""

import os
import signal
import sys
import types
from pathlib import Path

import pytest

from tone_rows import tone_manifest

from llm_srt import cli
from llm_srt.errors import TERMINATED, Terminated
from llm_srt.evaluate import run
from llm_srt.model import systems
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task
from llm_srt.train import signals


@pytest.mark.parametrize("verb, line", [
    ("train", "llm-srt train: stopped by SIGTERM; run the same command again to resume from its last checkpoint, if "
              "it saved one (else the run starts again from step 0)"),
    ("curriculum", "llm-srt curriculum: stopped by SIGTERM; run the same command again to resume from the stage's "
                   "last checkpoint, if it saved one (else the stage starts again from step 0)"),
    ("evaluate", "llm-srt evaluate: stopped by SIGTERM; the rows decoded so far are kept: run the same command "
                 "again to go on from them"),
    ("translate", "llm-srt translate: stopped by SIGTERM"),
    ("score", "llm-srt score: stopped by SIGTERM"),
])
def test_the_sigterm_line_says_how_to_go_on_where_the_run_can(verb, line, monkeypatch, capsys):
    def main(args):  # a SIGTERM while the model loads: before the recipe notes signals (`signals_noted`)
        raise Terminated()

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, verb, ("fake_verb", "a verb SIGTERMed"))
    assert cli.main([verb]) == TERMINATED
    assert capsys.readouterr().err == line + "\n"


class Stopping:
    """A system whose outputs follow from each item alone; it sends its own process SIGTERM when it is handed batch
    number `stop_at` (1-based), as torchrun or SLURM would."""

    def __init__(self, state):
        self.name, self.state = "stopping", state

    def run_batch(self, items, options):
        self.state["batches"] += 1
        if self.state["batches"] == self.state["stop_at"]:
            os.kill(os.getpid(), signal.SIGTERM)  # cli's handler raises Terminated here
        self.state["rows"] += len(items)
        return [Output(f"heard {it.audio.size} {it.src}", "" if it.task is Task.ASR else f"{it.tgt} {it.audio.size}")
                for it in items]

    def detect_language(self, audio):
        return "eng"


def test_evaluate_sigtermed_keeps_its_rows_and_the_same_command_goes_on_from_them(tmp_path, monkeypatch, capsys):
    tone_manifest(tmp_path, 4)
    state = {"batches": 0, "stop_at": 3, "rows": 0}
    monkeypatch.setitem(systems.SYSTEMS, "stopping", lambda name, placement, **_: Stopping(state))
    monkeypatch.setattr(run, "GROUP_BATCHES", 1)  # with --batch-size 1, each row its own group, journaled as it ends

    def evaluate(out: str) -> int:
        return cli.main(["evaluate", "--model", "s=stopping", "--manifest", str(tmp_path / "test.jsonl"), "--out",
                         str(tmp_path / out), "--task", "srt", "--batch-size", "1", "--significance", "0",
                         "--device", "cpu", "--dtype", "float32"])

    assert evaluate("r") == TERMINATED
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"llm-srt evaluate: stopped by SIGTERM; 2 decoded rows are kept in "
                                    f"{tmp_path / 'r' / 'partial'}: run the same command again to go on from them"), err
    assert state["rows"] == 2  # the third batch was stopped
    state.update(stop_at=None, rows=0)
    assert evaluate("r") == 0  # the same command
    assert "2 rows decoded by an earlier run kept" in capsys.readouterr().out and state["rows"] == 2
    assert evaluate("whole") == 0 and state["rows"] == 2 + 4
    for name in ("hyps.s.jsonl", "results.json"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert not (tmp_path / "r" / run.PARTIAL).exists()


@pytest.mark.parametrize("verb, line", [
    ("train", "llm-srt train: interrupted; run the same command again to resume from its last checkpoint, if it "
              "saved one (else the run starts again from step 0)"),
    ("evaluate", "llm-srt evaluate: interrupted; the rows decoded so far are kept: run the same command again to go "
                 "on from them"),
    ("score", "llm-srt score: interrupted"),
])
def test_the_ctrl_c_line_says_how_to_go_on_where_the_run_can(verb, line, monkeypatch, capsys):
    """Ctrl-C stops training at a saved step as SIGTERM does (train/signals.py): its line gives the same advice."""
    def main(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, verb, ("fake_verb", "a verb interrupted"))
    assert cli.main([verb]) == 130
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("kept, advice", [
    (signals.Kept(3, True, Path("c/step-00000003")), "the training state is the stage's checkpoint saved at step 3: "
                                                     "run the same command again to resume from it"),
    (signals.Kept(), "the step in progress was not saved: run the same command again to resume from the stage's last "
                     "checkpoint, if it saved one (else the stage starts again from step 0)"),
    (signals.Kept(3, False, Path("c/step-00000002")), "step 3 was not saved: run the same command again to resume "
                                                      f"from the stage's last checkpoint, {Path('c/step-00000002')}"),
    (signals.Kept(3), "step 3 was not saved, nor any step before it: run the same command again and the stage starts "
                      "again from step 0"),
])
def test_a_stopped_stage_says_what_it_kept(kept, advice, monkeypatch, capsys):
    """The stage's last checkpoint was claimed whatever the stop kept: after a second Ctrl-C before any was saved, the
    same command started the stage again from step 0 (tests/train/test_stop_line.py: from real runs)."""
    def main(args):
        error = KeyboardInterrupt()
        error.kept = kept
        raise error

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, "curriculum", ("fake_verb", "a verb interrupted"))
    assert cli.main(["curriculum"]) == 130
    assert capsys.readouterr().err == f"llm-srt curriculum: interrupted; {advice}\n"
