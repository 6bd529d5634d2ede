"""`llm-srt train` stopped by a signal: its last line said "the training state is its last checkpoint: run the same
command again to resume from it" whatever was saved; after a second Ctrl-C that stopped the run before any checkpoint,
the same command started again from step 0, unsaid. The line says what the stop kept (cli.stopped_advice)."""

import os
import signal

import pytest

from llm_srt import cli
from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, recipe, signals

from .conftest import overrides


def _signalled_after(monkeypatch, at: int, *signums) -> None:
    """Train steps that send this process `signums` right after step `at` (the terminal's Ctrl-C, SLURM's SIGTERM)."""
    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == at:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return loss
    monkeypatch.setattr(recipe.Recipe, "train_step", step)


def _train(tiny_setup, out, capsys, **extra) -> tuple[int, str]:
    code = cli.main(["train", *overrides(tiny_setup, out, max_steps=5, **extra)])
    return code, capsys.readouterr().err.splitlines()[-1]


def test_a_ctrl_c_saved_at_step_n_says_so(tiny_setup, tmp_path, monkeypatch, capsys):
    _signalled_after(monkeypatch, 2, signal.SIGINT)
    code, line = _train(tiny_setup, tmp_path / "run", capsys)
    assert (code, line) == (130, "llm-srt train: interrupted; the training state is its checkpoint saved at step 2: "
                                 "run the same command again to resume from it")
    assert checkpoint.latest(tmp_path / "run").step == 2


@pytest.mark.parametrize("signum, code, how", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 128 + signal.SIGTERM, "stopped by SIGTERM")])
def test_a_second_signal_says_the_step_was_not_saved(signum, code, how, tiny_setup, tmp_path, monkeypatch, capsys):
    """It said "resume from its last checkpoint, if it saved one (else the run starts again from step 0)": the run
    knows which (RunStops._note_kept)."""
    monkeypatch.setattr(signals, "SIGNAL_REPEAT_S", 0.0)  # the second one later: it stops at once, unsaved
    _signalled_after(monkeypatch, 2, signum, signum)
    assert _train(tiny_setup, tmp_path / "run", capsys) == (
        code, f"llm-srt train: {how}; step 2 was not saved, nor any step before it: run the same command again and "
              "the run starts again from step 0")
    assert checkpoint.latest(tmp_path / "run") is None


def test_a_second_signal_names_the_checkpoint_before_it(tiny_setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(signals, "SIGNAL_REPEAT_S", 0.0)
    _signalled_after(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    out = tmp_path / "run"
    assert _train(tiny_setup, out, capsys, save_every=2) == (
        130, "llm-srt train: interrupted; step 3 was not saved: run the same command again to resume from its last "
             f"checkpoint, {out / 'checkpoints' / 'step-00000002'}")
    assert checkpoint.latest(out).step == 2


def test_a_stop_before_any_checkpoint_says_the_run_starts_again(tiny_setup, tmp_path, monkeypatch, capsys):
    """The save at the stop failed (a full disk), and no step was saved before it."""
    def save_checkpoint(self, *args, **kwargs):
        raise LLMSRTError(f"{self.out}: cannot write the checkpoint (No space left on device)")

    monkeypatch.setattr(recipe.Recipe, "save_checkpoint", save_checkpoint)
    _signalled_after(monkeypatch, 2, signal.SIGINT)
    assert _train(tiny_setup, tmp_path / "run", capsys) == (
        130, "llm-srt train: interrupted; step 2 was not saved, nor any step before it: run the same command again "
             "and the run starts again from step 0")


def test_a_failed_save_at_the_stop_names_the_checkpoint_before_it(tiny_setup, tmp_path, monkeypatch, capsys):
    real = recipe.Recipe.save_checkpoint

    def save_checkpoint(self, *args, **kwargs):
        if self.step == 3:
            raise LLMSRTError(f"{self.out}: cannot write the checkpoint (No space left on device)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(recipe.Recipe, "save_checkpoint", save_checkpoint)
    _signalled_after(monkeypatch, 3, signal.SIGTERM)
    out = tmp_path / "run"
    assert _train(tiny_setup, out, capsys, save_every=2) == (
        128 + signal.SIGTERM, "llm-srt train: stopped by SIGTERM; step 3 was not saved: run the same command again "
                              f"to resume from its last checkpoint, {out / 'checkpoints' / 'step-00000002'}")
