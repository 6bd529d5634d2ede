"""The first signal during training is said at once (train/signals.py): a first Ctrl-C that printed nothing while the
step in progress ended (~15 s a step on a busy CPU) was pressed again, and the second stopped the run unsaved."""

import os
import signal

import pytest

from llm_srt.train import signals


@pytest.mark.parametrize("signum, line", [
    (signal.SIGINT, "Ctrl-C: finishing the step in progress, then saving a checkpoint; Ctrl-C again (2 s or more "
                    "later) stops at once without saving"),
    (signal.SIGTERM, "SIGTERM: finishing the step in progress, then saving a checkpoint; another SIGTERM (2 s or more "
                     "later) stops at once without saving"),
])
def test_the_first_signal_is_said_at_once_and_a_repeat_as_soon_is_the_same_stop(signum, line, monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    with signals.signals_noted() as noted:
        os.kill(os.getpid(), signum)
        assert capsys.readouterr().err == line + "\n"  # before the step ends: the handler said it
        os.kill(os.getpid(), signum)  # within SIGNAL_REPEAT_S: the same stop, said once
    assert noted == [signum] and capsys.readouterr().err == ""


def test_another_rank_says_which_it_is(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "3")
    with signals.signals_noted() as noted:
        os.kill(os.getpid(), signal.SIGINT)
    assert noted == [signal.SIGINT]
    assert capsys.readouterr().err.startswith("[rank 3] Ctrl-C: finishing the step in progress, then saving")


def test_the_step_in_progress_is_named_where_the_caller_knows_it(monkeypatch, capsys):
    """"finishing the step in progress" left a user who might wait minutes for a 7B step without its number."""
    monkeypatch.delenv("RANK", raising=False)
    at = [6]
    with signals.signals_noted(lambda: f"step {at[0]} of 5000") as noted:
        at[0] = 1234  # read when the signal comes, not when the run notes signals
        os.kill(os.getpid(), signal.SIGTERM)
    assert noted == [signal.SIGTERM]
    assert capsys.readouterr().err == ("SIGTERM: finishing step 1234 of 5000, then saving it; another SIGTERM (2 s or "
                                       "more later) stops at once without saving\n")
