"""Training faults beyond tests/train/test_recipe.py (which covers kill -9 resume, NaN loss and unwritable output):
a damaged newest checkpoint at resume, a full disk before the start and in the middle of a checkpoint write, every
checkpoint damaged, and a trainer state that cannot be read."""

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from llm_srt import cli
from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, recipe
from llm_srt.train.config import load_config
from llm_srt.train.final import FINAL

from train.conftest import overrides, tiny_setup  # noqa: F401  (tiny_setup is a fixture)

pytestmark = pytest.mark.reliability("fault")
STEPS = 3  # the base run: checkpoints at steps 1, 2, 3


def _config(setup, out: Path, steps: int):
    return load_config(None, overrides(setup, out, max_steps=steps, save_every=1, keep_last=3,
                                       **{"data.tasks": "{srt: 0.7, asr: 0.3}"}))


def _interrupted_run(base: Path, tmp_path: Path) -> Path:
    """A copy of a run that saved steps 1-3 and was stopped before writing final/."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    shutil.rmtree(out / FINAL)
    return out


def _last_step(out: Path) -> int:
    return max(json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def base(tiny_setup, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("faults")
    recipe.train(_config(tiny_setup, root / "base", STEPS), log=lambda *_: None)
    recipe.train(_config(tiny_setup, root / "reference", STEPS + 2), log=lambda *_: None)
    return namedtuple("Base", "run reference setup")(root / "base", root / "reference", tiny_setup)


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(base, tmp_path):
    out = _interrupted_run(base.run, tmp_path)
    newest = out / "checkpoints" / checkpoint.step_name(STEPS) / "adapter.safetensors"
    newest.write_bytes(newest.read_bytes()[:200])
    (out / "checkpoints" / "index.json").write_text("{half an ind")  # and a damaged index on top
    messages = []
    final = recipe.train(_config(base.setup, out, STEPS + 2), log=messages.append)
    text = "\n".join(messages)
    assert f"{checkpoint.step_name(STEPS)} is damaged" in text and "truncated" in text
    assert f"resumed from {out / 'checkpoints' / checkpoint.step_name(STEPS - 1)} at step {STEPS - 1}" in text
    assert _last_step(out) == STEPS + 2 and (final / "config.json").is_file()
    # resuming from step 2 replays steps 3-5 exactly: the same weights as a run never interrupted
    a, b = load_file(str(final / "adapter.safetensors")), load_file(str(base.reference / "final" /
                                                                         "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_checkpoint_damaged_starts_over_with_a_message(base, tmp_path):
    out = _interrupted_run(base.run, tmp_path)
    for folder in (out / "checkpoints").glob("step-*"):
        (folder / "checksums.json").unlink()
    messages = []
    recipe.train(_config(base.setup, out, 2), log=messages.append)
    assert sum("is damaged" in m for m in messages) == STEPS
    assert not any("resumed from" in m for m in messages) and (out / "final" / "config.json").is_file()


def test_unreadable_trainer_state_is_a_one_line_error(base, tmp_path):
    """A checkpoint whose checksums match but whose state cannot be read (e.g. re-sealed by a copy tool)."""
    out = _interrupted_run(base.run, tmp_path)
    newest = out / "checkpoints" / checkpoint.step_name(STEPS)
    (newest / checkpoint.STATE_DIR / checkpoint.STATE_JSON).write_bytes(b"not json")
    checkpoint.seal(newest)
    with pytest.raises(LLMSRTError, match=r"cannot read trainer state .*delete this checkpoint"):
        recipe.train(_config(base.setup, out, STEPS + 2), log=lambda *_: None)


def test_full_disk_is_detected_before_training_starts(base, tmp_path, monkeypatch, capsys):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda path: usage._replace(free=100 << 10))  # 100 KiB left
    messages = []
    with pytest.raises(LLMSRTError, match=r"only 0 MiB free, less than the 1 MiB a run's logs take before its first "
                                          r"checkpoint \(whose own size is checked once the model is built\)"):
        recipe.train(_config(base.setup, tmp_path / "run", 2), log=messages.append)
    assert messages == [] and not (tmp_path / "run" / "train_log.jsonl").exists()  # nothing was built or trained
    rc = cli.main(["train", *overrides(base.setup, tmp_path / "run2", max_steps=2)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and "MiB free" in err


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_space_safetensors(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


# what hits the full disk: the trainer state (its tensors' safetensors file) or the adapter weights (safetensors,
# inside save_model)
FULL_DISK_AT = {"trainer-state": (checkpoint, "save_file", _no_space),
                "adapter-weights": (safetensors.torch, "save_file", _no_space_safetensors)}


@pytest.mark.parametrize("where", FULL_DISK_AT)
def test_disk_full_while_writing_a_checkpoint_keeps_the_last_one_and_resumes(base, tmp_path, monkeypatch, where):
    out = _interrupted_run(base.run, tmp_path)
    module, name, fail = FULL_DISK_AT[where]
    with monkeypatch.context() as mp:
        mp.setattr(module, name, fail)
        with pytest.raises(LLMSRTError, match=r"step-00000004: cannot write the checkpoint \(.*No space left on "
                                              r"device.*run the same command to resume from step-00000003"):
            recipe.train(_config(base.setup, out, STEPS + 2), log=lambda *_: None)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.name != "index.json") == [
        checkpoint.step_name(s) for s in range(1, STEPS + 1)]  # the old ones intact, no half-written debris
    assert all(checkpoint.verify(p) is None for p in ckpts.glob("step-*"))
    messages = []
    final = recipe.train(_config(base.setup, out, STEPS + 2), log=messages.append)
    assert any("resumed from" in m and f"at step {STEPS}" in m for m in messages)
    a, b = load_file(str(final / "adapter.safetensors")), load_file(str(base.reference / "final" /
                                                                         "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # torchrun, 21 s; make test: test_disk_full_while_writing_a_checkpoint_keeps_the_last_one_and_resumes
#   (one process) and test_a_nan_gradient_on_one_rank_stops_every_rank (a rank's error stops every rank)
@pytest.mark.long(21)
def test_a_failed_checkpoint_write_under_torchrun_stops_every_rank_with_the_reason(tiny_setup, tmp_path):  # noqa: F811
    """Rank 0 alone writes checkpoints: when that fails, rank 1 must not wait forever nor die with a bare
    'connection closed': every rank raises the one-line reason."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoint folder goes")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           "-m", "llm_srt.cli", "train"] + overrides(
                               tiny_setup, out, max_steps=4, save_every=2, **{"data.batch_size": 2}),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line and "cannot write the checkpoint" in line]
    assert len(errors) == 2 and any("rank 1: rank 0 stopped" in line for line in errors), proc.stderr[-2000:]
    assert not any(line.startswith("[rank") and "Traceback" in line for line in proc.stderr.splitlines())
    assert "Connection closed" not in proc.stderr
