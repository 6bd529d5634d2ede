"""A stop before any checkpoint was saved said to resume from one: "loss is nan at step 2: training stopped. Lower
optim.lr and add allow_changes=true to resume from it", and a full disk "the newest one is none. ... then run the
same command to resume", where the same command starts again from step 0. They say so, and what to change."""

import errno

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, recipe
from llm_srt.train.config import load_config

from .conftest import overrides


def test_a_nan_loss_before_any_checkpoint_says_the_run_starts_again(tiny_setup, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=50, save_every=1000,
                                      **{"optim.lr": 1e30, "optim.grad_clip": 0}))
    with pytest.raises(LLMSRTError) as e:
        recipe.train(cfg, log=lambda *_: None)
    assert checkpoint.latest(out) is None
    said = str(e.value)
    assert "allow_changes" not in said and "resume" not in said, said
    assert said.startswith("[asr] loss is "), said
    assert said.endswith(": training stopped before any checkpoint was saved (save_every 1000): the run starts "
                         "again from step 0. Lower optim.lr and run the same command (the same settings reach the same "
                         "loss again), or check the data"), said
    # as it says: the same command, with a lower lr, starts again (no checkpoint, no changed setting to allow)
    lower = load_config(None, overrides(tiny_setup, out, max_steps=2, save_every=1000, **{"optim.lr": 1e-3}))
    assert recipe.train(lower, log=lambda *_: None) == out / "final"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "train_log.jsonl")


def test_a_full_disk_before_any_checkpoint_says_the_run_starts_again(tiny_setup, tmp_path, monkeypatch):
    real = recipe._log_json
    monkeypatch.setattr(recipe, "_log_json", lambda o, r: _no_space() if r["step"] == 2 else real(o, r))
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=4, save_every=100))
    with pytest.raises(LLMSRTError) as e:
        recipe.train(cfg, log=lambda *_: None)
    said = str(e.value)
    assert checkpoint.latest(out) is None
    assert "; the newest one is none. Free space or fix the folder, then run the same command and the run starts " \
           "again from step 0" in said and "resume" not in said.split("; the newest one is none")[1], said


def test_a_log_failing_with_another_error_before_any_checkpoint_says_the_run_starts_again(tiny_setup, tmp_path,
                                                                                         monkeypatch):
    real = recipe._log_json

    def log_json(out, record):
        if record["step"] == 2:
            raise ValueError("a sink's own error")
        return real(out, record)
    monkeypatch.setattr(recipe, "_log_json", log_json)
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    out = tmp_path / "run"
    with pytest.raises(LLMSRTError) as e:
        recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=4, save_every=100)), log=lambda *_: None)
    said = str(e.value)
    assert said.endswith("; the newest one is none. --debug shows where it was raised; once it is fixed, the same "
                         "command starts the run again from step 0"), said
