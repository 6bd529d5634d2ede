"""A stop's line quotes a failed checkpoint attempt's error: it was cut at 200 characters, which cut our own sentence
("...then run the same command to resume from step-0000070); the newest one is .../step-00000700", step 700 read as
70; another rank's copy, behind "rank 1: rank 0 stopped: ", "...run the same command to )"). Ours is quoted whole;
only another's text (the OS's, a library's) is cut (stops.FOREIGN_CHARS)."""

import os
import signal

from llm_srt import cli
from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, recipe, stops

from .conftest import overrides
from .test_stop_lines import _index_unwritable_at, _log_unwritable_at


def _long_out(tmp_path):
    return tmp_path / ("a-run-folder-with-a-long-name-" * 4)  # the index error's path alone takes ~200 characters


def test_a_log_failure_quotes_the_failed_checkpoints_error_whole(tiny_setup, tmp_path, monkeypatch, capsys):
    _index_unwritable_at(monkeypatch, 3)
    _log_unwritable_at(monkeypatch, 3)
    out = _long_out(tmp_path)
    assert cli.main(["train", *overrides(tiny_setup, out, max_steps=5, save_every=2)]) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    index = out / "checkpoints" / checkpoint.INDEX
    assert (f"the last checkpoint attempt failed too ({index}: cannot write the checkpoint index (No space left on "
            "device); step-00000003 is saved: fix or remove the index, then run the same command to resume); the "
            f"newest one is {out / 'checkpoints' / 'step-00000003'}. Free space") in line, line


def test_a_signals_stop_quotes_the_failed_checkpoints_error_whole(tiny_setup, tmp_path, monkeypatch, capsys):
    said = "rank 1: rank 0 stopped: " + "x" * 300 + ": cannot write the checkpoint; then run the same command to resume"

    def save_checkpoint(self, *args, **kwargs):  # as another rank hears rank 0's failed write
        raise LLMSRTError(said)
    monkeypatch.setattr(recipe.Recipe, "save_checkpoint", save_checkpoint)
    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(recipe.Recipe, "train_step", step)
    assert cli.main(["train", *overrides(tiny_setup, tmp_path / "run", max_steps=5)]) == 130
    stop = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("[asr] SIGINT at step 2: "))
    assert f"the checkpoint attempt failed ({said}); " in stop, stop


def test_another_errors_text_is_cut():
    assert stops._first_line(RuntimeError("y" * 500 + "\nmore")) == "y" * stops.FOREIGN_CHARS
    assert stops._first_line(LLMSRTError("z" * 500 + "\nmore")) == "z" * 500
