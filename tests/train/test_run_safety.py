"""Runs that cannot trample each other or run code: a malicious pickle in a checkpoint, two `train` processes on one
folder, changed settings on resume, a full disk under the training logs."""

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llm_srt import cli
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import checkpoint, recipe, run_lock, shared
from llm_srt.train.config import load_config
from llm_srt.train.final import FINAL, RUN_SETTINGS
from llm_srt.train.schedule import lr_lambda

from .conftest import SHORT_STEPS as STEPS
from .conftest import overrides
from .conftest import saved_every_step as _config


def _interrupted(base, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    shutil.rmtree(out / FINAL)
    return out


class _Payload:
    """Unpickling this writes a marker file: what a crafted trainer state would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_a_malicious_pickle_in_a_resealed_checkpoint_is_never_unpickled(base, tiny_setup, tmp_path):
    out = _interrupted(base, tmp_path)
    marker = tmp_path / "marker"
    newest = out / "checkpoints" / checkpoint.step_name(STEPS)
    state_dir = newest / checkpoint.STATE_DIR
    buffer = io.BytesIO()
    torch.save({"step": _Payload(marker)}, buffer)  # as the earlier format's state.pt, with a payload
    evil = buffer.getvalue()
    # 1. the old format's file name, the new files gone, checksums resealed: refused, with what to do
    for p in state_dir.iterdir():
        p.unlink()
    (state_dir / checkpoint.LEGACY_STATE).write_bytes(evil)
    checkpoint.seal(newest)
    assert checkpoint.verify(newest) is None
    messages = []
    with pytest.raises(LLMSRTError, match=r"old pickled format \(trainer_state/state.pt\), which is not loaded "
                                          r"\(unpickling can run code\); .*model.init_from=") as e:
        recipe.train(_config(tiny_setup, out, STEPS + 1), log=messages.append)
    assert "\n" not in str(e.value)
    # 2. the pickle under the new names (as the tensors file, as the JSON): an unreadable state, never run
    for name in (checkpoint.STATE_TENSORS, checkpoint.STATE_JSON):
        shutil.rmtree(newest)
        shutil.copytree(base / "checkpoints" / checkpoint.step_name(STEPS), newest)
        (state_dir / name).write_bytes(evil)
        checkpoint.seal(newest)
        with pytest.raises(LLMSRTError, match=r"cannot read trainer state .*delete this checkpoint"):
            checkpoint.load_trainer_state(newest)
    assert not marker.exists()
    # the same pickle through torch.load(weights_only=False), as the earlier code read it, does run: the test bites
    torch.load(state_dir / checkpoint.STATE_JSON, weights_only=False)
    assert marker.read_text() == "code ran"


def test_trainer_state_round_trips_exactly_without_pickle(tmp_path):
    import random

    import numpy as np

    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum((p ** 2).sum() for p in params).backward()
    opt.step()
    state = {"step": 7, "optimizer": opt.state_dict(), "rng": {"python": random.getstate(),
                                                              "numpy": np.random.get_state(),
                                                              "torch": torch.get_rng_state()},
             "odd": {"__tensor__": 1, 3: (1.5, float("inf"), None)}, "shared": [torch.ones(2)] * 2}
    checkpoint.write_trainer_state(tmp_path / checkpoint.STATE_DIR, state)
    back = checkpoint.load_trainer_state(tmp_path, required=("step", "optimizer"))
    assert back["step"] == 7 and back["odd"] == {"__tensor__": 1, 3: (1.5, float("inf"), None)}
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys stay integers (load_state_dict needs them)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert all(torch.equal(back["optimizer"]["state"][0][k], v) for k, v in opt.state_dict()["state"][0].items())
    random.setstate(back["rng"]["python"])
    np.random.set_state(back["rng"]["numpy"])
    torch.set_rng_state(back["rng"]["torch"])
    with pytest.raises(LLMSRTError, match=r"cannot read trainer state .*no 'data'"):
        checkpoint.load_trainer_state(tmp_path, required=("data",))


def _contents(out):
    """Every file's bytes and modification time under `out`, but TensorBoard's events (the running first run writes
    them on)."""
    return {p.relative_to(out): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*")
            if p.is_file() and "tensorboard" not in p.relative_to(out).parts}


def test_a_second_train_on_the_same_folder_is_refused_naming_the_holder(tiny_setup, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "train"] + overrides(
        tiny_setup, out, max_steps=100_000, save_every=100_000, log_every=100_000), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it writes no train_log.jsonl line while it runs
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(out.glob("tensorboard/*")) or \
                not (out / run_lock.LOCK).read_text().strip():  # holding the lock, its files all made
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        files, before = sorted(p.relative_to(out) for p in out.rglob("*")), _contents(out)
        rc = cli.main(["train", *overrides(tiny_setup, out, max_steps=2)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert f"another training run is writing this output folder (pid {first.pid} on " in err
        assert "started 20" in err and "Traceback" not in err
        assert first.poll() is None  # still holding the lock: what changed in `out` came from the second run
        assert not (out / "train_log.jsonl").exists()  # nothing written by the second (the first logs none)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == files and _contents(out) == before
    finally:
        first.kill()
        first.wait()
    # the killed holder's lock file stays behind; it does not block (the kernel dropped the lock)
    assert (out / run_lock.LOCK).is_file()
    lock = run_lock.RunLock(out).acquire()
    with pytest.raises(LLMSRTError, match=rf"pid {os.getpid()} on "):  # held in this process: a second holder fails
        run_lock.RunLock(out).acquire()
    lock.release()
    run_lock.RunLock(out).acquire().release()


def test_resume_with_changed_settings_refuses_before_building_anything(base, tiny_setup, tmp_path):
    out = _interrupted(base, tmp_path)
    messages = []
    with pytest.raises(ConfigError, match=r"step-00000002: resuming with settings that differ from the checkpoint's: "
                                          r"examples per step \(data.batch_size x optim.accumulation x ranks\) "
                                          r"4 -> 8; optim.lr 0.003 -> 0.001\. .*allow_changes=true"):
        recipe.train(_config(tiny_setup, out, STEPS + 1, **{"optim.lr": 1e-3, "optim.accumulation": 2}),
                     log=messages.append)
    assert not any("trainable parameters" in m for m in messages)  # refused before the model was built
    manifest = tmp_path / "train.jsonl"  # the same path but another content (one row less)
    manifest.write_text("".join(Path(tiny_setup["manifest"]).read_text().splitlines(True)[:-1]))
    with pytest.raises(ConfigError, match=r"data.train \(the manifests' content or list changed\)"):
        recipe.train(_config(tiny_setup, out, STEPS + 1, **{"data.train": str(manifest)}), log=messages.append)
    moved = Path(tiny_setup["root"]) / f"moved-{tmp_path.name}.jsonl"  # another path, the same content: no change
    shutil.copy(tiny_setup["manifest"], moved)
    recipe.train(_config(tiny_setup, out, STEPS + 1, **{"data.train": str(moved), "log_every": 5}),
                 log=messages.append)
    assert any(f"resumed from {out / 'checkpoints' / checkpoint.step_name(STEPS)}" in m for m in messages)


def test_allow_changes_resumes_with_the_new_lr_applied(base, tiny_setup, tmp_path):
    out = _interrupted(base, tmp_path)
    messages = []
    recipe.train(_config(tiny_setup, out, STEPS + 2, **{"optim.lr": 1e-3, "allow_changes": "true"}),
                 log=messages.append)
    assert any("resuming with changed settings (allow_changes): optim.lr 0.003 -> 0.001" in m for m in messages)
    lrs = [r["lr"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs == [3e-3] * STEPS + [1e-3] * 2
    state = checkpoint.load_trainer_state(out / "checkpoints" / checkpoint.step_name(STEPS + 2))
    assert state["settings"]["optim.lr"] == 1e-3  # the next resume compares against the new settings


def test_allow_changes_resumes_at_another_batch_size_with_the_examples_its_epoch_has_left(base, tiny_setup, tmp_path):
    """The saved position counted batches of the old size: read as batches of the new one, some examples of the
    epoch were trained twice and others never, without a word. The sampler now says what it does, in the log."""
    out = tmp_path / "run"
    recipe.train(_config(tiny_setup, out, 1, **{"data.batch_size": 1}), log=lambda *_: None)
    shutil.rmtree(out / FINAL)  # interrupted after step 1
    messages = []
    recipe.train(_config(tiny_setup, out, 2, **{"data.batch_size": 2, "allow_changes": "true"}), log=messages.append)
    assert any("the saved data position (epoch 0: 1 examples trained, in batches of 1) counts batches of another "
               "size than this run's 2: the rest of that epoch is its" in m for m in messages), messages


def test_a_finished_run_asked_for_with_other_settings_is_refused_not_handed_back(base, tiny_setup, tmp_path):
    """Only max_steps and the starting weights were compared: a stage (or a curriculum) run again with another lr
    or task mix said "already finished" and handed back the old model."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    messages = []
    with pytest.raises(ConfigError, match=r"final: this output_dir holds a model finished with other settings: "
                                          r"optim.lr 0.003 -> 0.001\. Choose another output_dir"):
        recipe.train(_config(tiny_setup, out, **{"optim.lr": 1e-3}), log=messages.append)
    assert not any("already finished" in m for m in messages)
    recipe.train(_config(tiny_setup, out, **{"optim.lr": 1e-3, "allow_changes": "true"}), log=messages.append)
    assert any("taking the finished model trained with other settings (allow_changes): optim.lr" in m
               for m in messages)
    messages.clear()
    recipe.train(_config(tiny_setup, out, **{"log_every": 7, "data.num_workers": 0}), log=messages.append)
    assert any("already finished" in m for m in messages)  # what runs how: the same model
    (out / FINAL / RUN_SETTINGS).unlink()  # a final/ from before the record: its last checkpoint's
    with pytest.raises(ConfigError, match=r"optim.lr 0.003 -> 0.001"):
        recipe.train(_config(tiny_setup, out, **{"optim.lr": 1e-3}), log=messages.append)


def test_a_finished_run_asked_for_with_another_accumulation_on_as_many_ranks_is_refused(base, tiny_setup, tmp_path):
    """A finished run's check left out its examples per step (the ranks may differ), and with them
    optim.accumulation: 4 after 1 said "already finished" and handed back the model of a quarter of the examples per
    step, where data.batch_size 2 was refused. final/ records its ranks: on as many, they are compared, as a resume
    compares them; on others, or with a final/ from before the record, not."""
    from llm_srt.train.final import RANKS

    out = tmp_path / "run"
    shutil.copytree(base, out)
    record = out / FINAL / RUN_SETTINGS
    settings = json.loads(record.read_text())
    assert settings[RANKS] == 1
    messages = []
    with pytest.raises(ConfigError, match=r"final: this output_dir holds a model finished with other settings: "
                                          r"examples per step \(data.batch_size x optim.accumulation x ranks\) 4 -> "
                                          r"16\. Choose another output_dir"):
        recipe.train(_config(tiny_setup, out, **{"optim.accumulation": 4}), log=messages.append)
    assert not any("already finished" in m for m in messages)
    for ranks in (2, None):  # trained on 2 ranks (another cluster), or a final/ from before the record
        record.write_text(json.dumps({k: v for k, v in {**settings, RANKS: ranks}.items() if k != RANKS or v}))
        messages.clear()
        recipe.train(_config(tiny_setup, out, **{"optim.accumulation": 4}), log=messages.append)
        assert any("already finished" in m for m in messages), messages


def test_a_second_launch_leaves_the_running_jobs_half_written_checkpoint_alone(base, tiny_setup, tmp_path):
    """Asking whether the run is finished read the checkpoints through latest(), which deleted every .tmp-* folder
    before the run lock was met: a second launch removed the checkpoint the running job (extending the finished
    run) was writing, and its rename failed. Only the run holding the lock removes them."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    (out / FINAL / RUN_SETTINGS).unlink()  # a final/ from before the record: the newest checkpoint's
    writing = out / "checkpoints" / f".tmp-{checkpoint.step_name(STEPS + 1)}-{os.getppid()}"
    writing.mkdir()
    (writing / "adapter.safetensors").write_bytes(b"x" * 64)
    messages = []
    lock = run_lock.RunLock(out).acquire()  # the running job's
    try:
        recipe.train(_config(tiny_setup, out), log=messages.append)
    finally:
        lock.release()
    assert any("already finished" in m for m in messages)
    assert (writing / "adapter.safetensors").read_bytes() == b"x" * 64
    recipe.train(_config(tiny_setup, out, STEPS + 1), log=messages.append)  # a run of its own: the lock is its
    assert not writing.exists()
    assert checkpoint.latest(out).step == STEPS + 1


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "train_log.jsonl")


def test_a_full_disk_under_the_training_log_saves_a_last_checkpoint_and_says_so(base, tiny_setup, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "run"
    real = recipe._log_json
    monkeypatch.setattr(recipe, "_log_json", lambda o, r: _no_space() if r["step"] == 2 else real(o, r))
    with pytest.raises(LLMSRTError, match=r"cannot write the training logs in .* at step 2: No space left on device; "
                                          r"saved a last checkpoint, .*step-00000002\. Free space") as e:
        recipe.train(_config(tiny_setup, out, 3, save_every=100), log=lambda *_: None)
    assert "\n" not in str(e.value) and checkpoint.latest(out).step == 2
    # the progress bar / TensorBoard failing: reported at the next log line, the checkpoint attempt failing too
    monkeypatch.setattr(recipe, "_log_json", real)
    shutil.rmtree(out)
    from torch.utils.tensorboard import SummaryWriter
    monkeypatch.setattr(SummaryWriter, "add_scalar", _no_space)
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    with pytest.raises(LLMSRTError, match=r"at step 1: No space left on device; the last checkpoint attempt failed "
                                          r"too \(.*cannot write the checkpoint.*\); the newest one is none"):
        recipe.train(_config(tiny_setup, out, 4, save_every=100), log=lambda *_: None)
    assert checkpoint.latest(out) is None and not (out / "final").exists()


def test_a_log_sink_failing_with_any_error_stops_every_rank_the_same_way(base, tiny_setup, tmp_path, monkeypatch):
    """TensorBoard failing with its own error (not an OSError) is reported at the log line after a last checkpoint,
    as a full disk is: rank 0 re-raised it where the other ranks got an LLMSRTError, so it left alone and they
    waited at the checkpoint's collectives until the process group timed out."""
    from torch.utils.tensorboard import SummaryWriter

    def broken(*args, **kwargs):
        raise ValueError("the event writer is closed")
    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    out = tmp_path / "run"
    with pytest.raises(LLMSRTError, match=r"cannot write the training logs in .* at step 1: ValueError: the event "
                                          r"writer is closed; saved a last checkpoint, .*step-00000001\. --debug "
                                          r"shows where") as e:
        recipe.train(_config(tiny_setup, out, 3, save_every=100), log=lambda *_: None)
    assert checkpoint.latest(out).step == 1 and isinstance(e.value.__cause__, ValueError)  # its traceback kept
    monkeypatch.undo()
    real = recipe._log_json  # the log line itself failing so, with an empty message: the same, by its type
    monkeypatch.setattr(recipe, "_log_json", lambda o, r: (_ for _ in ()).throw(AssertionError()) if r["step"] == 2
                        else real(o, r))
    shutil.rmtree(out)
    with pytest.raises(LLMSRTError, match=r"at step 2: AssertionError; saved a last checkpoint"):
        recipe.train(_config(tiny_setup, out, 3, save_every=100), log=lambda *_: None)


@pytest.mark.cuda
def test_trainer_state_with_gpu_tensors_and_gpu_rng_states_round_trips(tmp_path):
    """A GPU run's state: CUDA tensors are stored from the host, every GPU's generator restores exactly."""
    state = {"rng": checkpoint.rng_state(), "t": torch.arange(4.0, device="cuda")}
    checkpoint.write_trainer_state(tmp_path / checkpoint.STATE_DIR, state)
    back = checkpoint.load_trainer_state(tmp_path)
    assert len(back["rng"]["cuda"]) == torch.cuda.device_count()
    assert torch.equal(back["t"], torch.arange(4.0)) and back["t"].device.type == "cpu"
    checkpoint.set_rng_state(back["rng"])
    first = torch.rand(3, device="cuda")
    checkpoint.set_rng_state(back["rng"])
    assert torch.equal(torch.rand(3, device="cuda"), first)


@pytest.mark.parametrize("item,error", [
    ("data.feature_cache=false", r"data.feature_cache: 'false' would be a folder of that name; write "
                                 r"data.feature_cache=null"),
    ("data.feature_cache=off", r"'off' would be a folder"),
    ("data.feature_cache=''", r"data.feature_cache: '' would be the current folder"),
    ("output_dir=''", r"output_dir is empty, which would be the current folder"),
    ("dtype=fp16", r"dtype: float16 is for inference"),
])
def test_settings_that_meant_no_or_float16_are_refused_in_one_line(tiny_setup, tmp_path, item, error):
    """`data.feature_cache=false` made a cache folder named "false"; `dtype=fp16` trained fp16 frozen weights
    without loss scaling, which `dtype=float16` is refused for; an empty output_dir or feature_cache wrote the run or
    the cache into the working folder."""
    key, value = item.split("=")
    with pytest.raises(ConfigError, match=error):
        _config(tiny_setup, tmp_path / "run", **{key: value})


@pytest.mark.parametrize("overrides,error", [
    (["trainable=[adapter, lroa]"], r"trainable: unknown group\(s\) \['lroa'\]; choose from adapter, lora"),
    (["trainable=[adapter, lora]", "model.lora=null"], r"trainable lists lora but model.lora is null"),
    (["fsdp_within_node=true"], r"fsdp_within_node: true needs distributed: fsdp"),
    (['data.train=""'], r"stage srt \(configs/embedded/srt.yaml\): data.train is empty"),
])
def test_a_curriculum_stops_at_a_bad_stage_before_the_first_step(tmp_path, overrides, error):
    """`curriculum`'s plan loads every stage's config before any trains: these settings were refused only once
    their stage had built its model, after the earlier stages had trained (days, at paper scale)."""
    from llm_srt.train import curriculum

    with pytest.raises(ConfigError, match=error):
        curriculum.plan(["configs/embedded"], [f"srt:{item}" for item in overrides])


def test_fsdp_within_node_may_change_on_resume_like_the_other_strategies(tiny_setup, tmp_path):
    """README: the strategy may change freely on resume; fsdp_within_node (HSDP) stopped a resume as a change."""
    from dataclasses import replace

    from llm_srt.train import resume

    cfg = _config(tiny_setup, tmp_path / "run")
    hsdp = replace(cfg, distributed="fsdp", fsdp_within_node=True)
    assert resume.changes(resume.run_settings(cfg), resume.run_settings(hsdp)) == []
    assert resume.changes(resume.run_settings(cfg), resume.run_settings(replace(cfg, seed=cfg.seed + 1)))  # guarded


def test_a_checkpoint_of_the_older_weighting_does_not_resume_with_weights(tiny_setup, tmp_path):
    """data.train_weights share out each kind of row since 2026-12-05 (another epoch order than before): a
    checkpoint saved before has no such setting, and resuming it with weights stops; without weights, nothing
    changed and it resumes."""
    from dataclasses import replace

    from llm_srt.train import resume

    cfg = _config(tiny_setup, tmp_path / "run")
    weighted = replace(cfg, data=replace(cfg.data, train=[cfg.data.train], train_weights=[1.0]))
    older = {k: v for k, v in resume.run_settings(weighted).items() if k != resume.WEIGHTED}
    assert resume.changes(older, resume.run_settings(weighted)) == [
        "data.train_weights (the checkpoint's run weighted all rows together; they now weigh each kind of row apart, "
        "another epoch order: allow_changes=true goes on with it)"]
    assert resume.changes(resume.run_settings(weighted), resume.run_settings(weighted)) == []
    assert resume.WEIGHTED not in resume.run_settings(cfg)


def test_a_stage_finished_before_the_per_kind_weighting_is_still_taken_as_finished(tiny_setup, tmp_path):
    """A curriculum run again over a stage that finished with data.train_weights before 2026-12-05 (its record has
    no WEIGHTED): the finished model is that run's, not "finished with other settings"."""
    import json

    from llm_srt.train import resume

    out = tmp_path / "run"
    cfg = _config(tiny_setup, out, 1, **{"data.train": f"[{tiny_setup['manifest']}]", "data.train_weights": "[1.0]"})
    recipe.train(cfg, log=lambda *_: None)
    record = out / FINAL / RUN_SETTINGS
    settings = json.loads(record.read_text())
    assert settings.pop(resume.WEIGHTED) == "each kind of row"
    record.write_text(json.dumps(settings))  # as a stage finished before today records it
    said = []
    recipe.train(cfg, log=said.append)
    assert any("already finished" in line for line in said)


def test_a_raised_max_steps_stretches_a_cosine_schedule_from_the_resumed_step_on(tiny_setup, tmp_path):
    """The first step after raising max_steps trained at the old curve's end (lr 0), then jumped into the new one."""
    out = tmp_path / "run"
    cosine = {"optim.schedule": "cosine", "optim.warmup_steps": 1}
    recipe.train(_config(tiny_setup, out, 3, **cosine), log=lambda *_: None)
    messages = []
    recipe.train(_config(tiny_setup, out, 6, **cosine), log=messages.append)
    lrs = [r["lr"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "lr" in r]
    schedule = lr_lambda(_config(tiny_setup, out, 6, **cosine).optim, 6)
    assert lrs[3:] == pytest.approx([3e-3 * schedule(step) for step in (3, 4, 5)], abs=1e-6) and lrs[3] > 0
    assert any("the cosine schedule now runs to max_steps 6: lr" in m for m in messages)


@pytest.mark.parametrize("item,error", [("precision=bf16", r"precision: bf16 autocast needs a CUDA device here"),
                                        ("data.train=gone.jsonl", r"data.train: gone.jsonl: no such manifest"),
                                        ("data.train=[]", r"data.train: give the training manifest"),
                                        ('data.train=""', r"data.train: give the training manifest"),
                                        ("data.train=.", r"data.train: \.: a folder, not a manifest")])
def test_a_cpu_bf16_run_or_a_missing_manifest_stops_before_the_model_is_loaded(tiny_setup, tmp_path, item, error):
    """Each stopped only after the model was built (and for the first two the feature cache filled: for 7B/32B
    minutes to hours)."""
    key, value = item.split("=")
    messages = []
    with pytest.raises(ConfigError, match=error):
        recipe.train(_config(tiny_setup, tmp_path / "run", **{key: value, "device": "cpu"}), log=messages.append)
    assert not any("trainable parameters" in m for m in messages)


def test_a_rank_that_reads_no_manifest_is_not_refused_for_one_its_node_lacks(tiny_setup, tmp_path):
    """Under torchrun rank 0 alone reads the manifests (`from_rank0`): another node's ranks were refused at start
    for a manifest on node 0's disk only, though they never read it."""
    from llm_srt.train.preflight import check_before_start

    cfg = _config(tiny_setup, tmp_path / "run", **{"data.train": str(tmp_path / "node0.jsonl"), "device": "cpu"})
    with pytest.raises(ConfigError, match=r"data.train: .*node0.jsonl: no such manifest"):
        check_before_start(cfg)
    check_before_start(cfg, manifests=False)


def test_a_task_whose_rows_the_manifest_lacks_names_the_manifest(tiny_setup, tmp_path):
    """`data.tasks: {smt: 1}` on a manifest of transcripts only: the error names data.train's manifest and what to
    do, not "the manifest"."""
    from llm_srt.data.manifest import read_manifest, write_manifest

    asr_only = tmp_path / "asr_only.jsonl"
    write_manifest(asr_only, [row for row in read_manifest(tiny_setup["manifest"]) if row.is_asr])
    cfg = load_config(None, overrides(tiny_setup, tmp_path / "run", max_steps=1, **{
        "data.train": str(asr_only), "data.tasks": "{smt: 1.0}"}))
    with pytest.raises(LLMSRTError, match=r"task smt needs translation rows and data.train '.*asr_only.jsonl' has "
                                          r"none; add them \(`llm-srt prepare` writes both kinds\) or drop it"):
        recipe.train(cfg, log=lambda *_: None)


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_clean_logs_and_no_leftovers(tiny_setup,
                                                                                                tmp_path):
    """The fresh start appended to the killed run's train_log.jsonl (steps 1, 2, 3, 1, 2, ...) and TensorBoard
    kept its events beside the new ones; a killed write of final/ left final.tmp-PID / final.old-PID (the trained
    weights' size each) for ever. A reviewer's finds, each reproduced with SIGKILL."""
    import subprocess

    out = tmp_path / "run"
    recipe.train(_config(tiny_setup, out, 3, save_every=100), log=lambda *_: None)  # the killed run, as it left
    shutil.rmtree(out / "checkpoints")  # ... its logs: no checkpoint yet
    shutil.rmtree(out / "final")
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f"final.tmp-{dead.pid}", f"final.old-{dead.pid}"):
        (out / name).mkdir()
        (out / name / "adapter.safetensors").write_bytes(b"x" * 64)
    running = out / f"final.tmp-{os.getppid()}"  # a write in progress (a live process): not ours to remove
    running.mkdir()
    # a restart is another process, seconds later: TensorBoard names event files by the second, then a per-process
    # counter (unpadded: ...9 sorts after ...10), and reads them in name order, so two runs of one process within a
    # second could read the killed run's events after the new run's purge (a flaky [1, 2, 3] under pytest-xdist)
    time.sleep(1.0 - time.time() % 1.0)
    recipe.train(_config(tiny_setup, out, 2, save_every=100), log=lambda *_: None)
    steps = [r["step"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("final")) == ["final", running.name]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_a_disk_without_room_for_one_checkpoint_is_refused_before_the_first_step(tiny_setup, tmp_path,
                                                                                  monkeypatch):
    """The pre-flight check asked for 64 MiB, a paper checkpoint (73.7M trainable weights with AdamW's two moments)
    takes ~843 MiB: a nearly full disk passed, and training died at the first save, save_every (2,000) steps in,
    with nothing to resume from. Once the model is built, one checkpoint's size is asked for."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=70 << 20))  # short of 79 + 2 MiB
    wide = "{num_queries: 4, hidden_size: 512, num_layers: 2, num_heads: 4, intermediate_size: 2048}"  # 6.9M
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=2, keep_last=3, **{"model.adapter_kwargs": wide}))
    stepped = []
    real_step = recipe.Recipe.train_step
    monkeypatch.setattr(recipe.Recipe, "train_step", lambda self: stepped.append(self.step) or real_step(self))
    with pytest.raises(LLMSRTError, match=r"run: 70 MiB free, and one checkpoint of this run needs about 79 MiB "
                                          r"\(6\.9M trainable parameters with AdamW's 2 moments\) and its logs about "
                                          r"2 MiB until then; free space or choose another output_dir \(keep_last 3 "
                                          r"holds about 316 MiB of checkpoints") as e:
        recipe.train(cfg, log=lambda *_: None)
    assert "\n" not in str(e.value) and not stepped and not (out / "checkpoints").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=82 << 20))  # room for one: it trains
    assert recipe.train(cfg, log=lambda *_: None).is_dir() and stepped == [0, 1]
    assert checkpoint.latest(out).step == 2


def test_one_process_writes_no_probe_in_output_dir(tiny_setup, tmp_path, monkeypatch):
    """Only several ranks prove they see one output_dir (test_parallel.py): one process draws no probe's name."""
    def went_on(self):
        raise RuntimeError("went on")

    monkeypatch.setattr(shared, "secrets", None)  # any probe would draw its name here
    monkeypatch.setattr(recipe.Recipe, "setup_model", went_on)
    with pytest.raises(RuntimeError, match="went on"):
        recipe.train(load_config(None, overrides(tiny_setup, tmp_path / "run", max_steps=2)), log=lambda *_: None)
    assert not [p.name for p in (tmp_path / "run").iterdir() if "ranks-" in p.name]


def test_a_probe_rank_0_cannot_write_is_one_line_naming_output_dir(tmp_path):
    """Rank 0's probe of a shared output_dir (a disk full since the writable check) was an OSError's traceback on
    rank 0 and "rank 0: OSError" on the others."""
    from llm_srt.errors import LLMSRTError

    with pytest.raises(LLMSRTError, match=r"gone: cannot write to output_dir \(No such file or directory\); free "):
        shared._write_probe(tmp_path / "gone" / ".ranks-0")
    assert shared._write_probe(tmp_path / ".ranks-1").read_text() == ".ranks-1"


def _signalled(monkeypatch, at: int, *signums) -> None:
    """Train steps that send `signums` right after step `at` to this process and its DataLoader workers, from another
    process (`kill`), as SLURM does to every process of the job (docker stop, Ctrl-C to the terminal's group). Sent
    from this process, the workers' own handler (torch's) ended them quietly, as it does for their parent's SIGTERM;
    from another, it killed them, and the run stopped saving nothing."""
    import multiprocessing

    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == at:
            for signum in signums:
                pids = [p.pid for p in multiprocessing.active_children()] + [os.getpid()]
                subprocess.run(["kill", f"-{signal.Signals(signum).name.removeprefix('SIG')}", *map(str, pids)],
                               check=True)
        return loss
    monkeypatch.setattr(recipe.Recipe, "train_step", step)


@pytest.mark.long(20)
def test_sigterm_or_ctrl_c_saves_the_step_then_the_resume_is_bit_identical(tiny_setup, tmp_path, monkeypatch):
    """SIGTERM (SLURM's preemption, `docker stop`, torchrun) or Ctrl-C wrote no checkpoint: every step since the last
    save was lost (up to 1,999 with the paper's save_every). The step in progress ends, is saved, and the signal's
    exception goes on (the exit status stays); the resume from there gives the uninterrupted run's weights."""
    import signal

    from llm_srt.errors import Terminated
    from safetensors.torch import load_file

    def cfg(out):
        return load_config(None, overrides(tiny_setup, out, max_steps=10, save_every=10, keep_last=3,
                                           **{"data.num_workers": 1}))  # a worker, which must outlive the signal

    said = []
    ref = recipe.train(cfg(tmp_path / "ref"), log=said.append)
    assert "[asr] starting from a fresh adapter (model.init_from: null)" in said
    for signum, raised, at in ((signal.SIGTERM, Terminated, 7), (signal.SIGINT, KeyboardInterrupt, 3)):
        out, said = tmp_path / signal.Signals(signum).name, []
        with monkeypatch.context() as m, cli.stop_on_sigterm():  # the CLI's SIGTERM handler, as `llm-srt train`
            _signalled(m, at, signum)
            handler = signal.getsignal(signum)
            with pytest.raises(raised):
                recipe.train(cfg(out), log=said.append)
            # put back, as the signal's own handler leaves it: cli's arms the default action for the next SIGTERM,
            # so one during the clean-up ends the process (it raised Terminated again, inside the clean-up)
            restored = signal.getsignal(signum) is (signal.SIG_DFL if signum == signal.SIGTERM else handler)
        assert said[-1] == (f"[asr] {signal.Signals(signum).name} at step {at}: saved a checkpoint, "
                            f"{out / 'checkpoints' / f'step-{at:08d}'}; the same command resumes from it")
        assert checkpoint.latest(out).step == at and not (out / FINAL).exists() and restored
        said = []
        final = recipe.train(cfg(out), log=said.append)
        assert any(f"resumed from {out / 'checkpoints'}/step-{at:08d} at step {at}" in line for line in said), said
        a, b = load_file(str(ref / "adapter.safetensors")), load_file(str(final / "adapter.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.long(10)
@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="no sigwaitinfo (macOS): torch's handler stays")
def test_a_sigterm_to_the_process_group_saves_the_step_and_leaves_no_worker(tiny_setup, tmp_path):
    """`llm-srt train` with DataLoader workers, its process group sent SIGTERM (SLURM's preemption or time limit
    signals every process of the step; torchrun's agent each rank's group): a worker died of it, and the run stopped
    with "DataLoader worker (pid N) is killed by signal: Terminated.", exit 1, no checkpoint. The step is saved, the
    exit status is SIGTERM's, and no worker outlives the run."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "train"] + overrides(
        tiny_setup, out, max_steps=400, **{"data.num_workers": 2}), env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, deadline = out / "train_log.jsonl", time.time() + 120
        while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        said = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    saved = re.search(r"\[asr\] SIGTERM at step (\d+): saved a checkpoint, \S+; the same command resumes from it", said)
    assert proc.returncode == 128 + signal.SIGTERM and saved, said[-2000:]
    assert checkpoint.latest(out).step == int(saved[1]) and not (out / FINAL).exists()
    deadline = time.time() + 1  # (a worker left to its watchdog would live on for 5 s)
    while time.time() < deadline and _group_alive(proc.pid):
        time.sleep(0.05)
    assert not _group_alive(proc.pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sigterm_after_the_last_steps_agreement_still_stops_the_run(tiny_setup, tmp_path, monkeypatch):
    """A signal after the last step's agreement sat in the list: the run went on to final/ and exit 0."""
    import signal

    from llm_srt.errors import Terminated

    held, real_step, real_max = {}, recipe.Recipe.train_step, recipe.all_max

    def train_step(self):
        held["recipe"] = self
        return real_step(self)

    def all_max(value, d):  # right after the last step's agreement (its grad-norm check ran at step 3)
        out = real_max(value, d)
        if held.get("recipe") is not None and held["recipe"].step == 4 and not held.get("sent"):
            held["sent"] = True
            os.kill(os.getpid(), signal.SIGTERM)
        return out
    monkeypatch.setattr(recipe.Recipe, "train_step", train_step)
    monkeypatch.setattr(recipe, "all_max", all_max)
    out, said = tmp_path / "run", []
    with cli.stop_on_sigterm(), pytest.raises(Terminated):
        recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=4)), log=said.append)
    assert held["sent"] and checkpoint.latest(out).step == 4 and not (out / FINAL).exists()
    assert said[-1].startswith("[asr] SIGTERM at step 4: saved a checkpoint")


def test_a_second_sigterm_stops_at_once_and_one_at_the_same_moment_is_the_same_stop(tiny_setup, tmp_path,
                                                                                     monkeypatch):
    """The first SIGTERM waits for the step's end; a second one SIGNAL_REPEAT_S later acts as without it (cli's
    handler: `Terminated` at once, no checkpoint), for a save that hangs. Two at once are one stop: under `srun
    torchrun` a time limit reaches each rank from SLURM and from torchrun, and the second stopped the rank mid-step."""
    import signal

    from llm_srt.errors import Terminated

    _signalled(monkeypatch, 2, signal.SIGTERM, signal.SIGTERM)
    out = tmp_path / "twice"
    with cli.stop_on_sigterm(), pytest.raises(Terminated):
        recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=4)), log=lambda *_: None)
    assert checkpoint.latest(out).step == 2  # one stop, saved
    from llm_srt.train import signals

    monkeypatch.setattr(signals, "SIGNAL_REPEAT_S", 0.0)  # the second one later
    out = tmp_path / "run"
    with cli.stop_on_sigterm(), pytest.raises(Terminated):
        recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=4)), log=lambda *_: None)
    assert checkpoint.latest(out) is None


def test_a_feature_cache_turned_off_on_resume_is_said(base, tiny_setup, tmp_path):
    """A cache turned off (or on) since the checkpoint went on without a word, and the resumed run was not the
    uninterrupted one's (cached features are float16): said in the log; another cache folder is the same features."""
    out = _interrupted(base, tmp_path)
    said = []
    recipe.train(_config(tiny_setup, out, 3, **{"data.feature_cache": tmp_path / "elsewhere"}), log=said.append)
    assert not any("feature_cache changed" in line for line in said), said
    shutil.rmtree(out / FINAL)
    recipe.train(_config(tiny_setup, out, 4, **{"data.feature_cache": "null"}), log=said.append)
    assert ("[asr] data.feature_cache changed since the checkpoint (on -> null): the run goes on, not bit-identical "
            "from here (cached encoder features are rounded to float16, computed ones are not)") in said


def test_the_room_check_counts_the_frozen_adapter_a_checkpoint_saves(tiny_setup, tmp_path, monkeypatch):
    """Under trainable: [lora] the adapter is frozen, yet every checkpoint saves it whole (adapter.safetensors: the
    paper's 73.7M, ~281 MiB) beside the LoRA (1.8M): the room check counted the LoRA and its moments alone, so a disk
    with room for them passed and the first save, save_every steps in, found no room."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=20 << 20))  # short of 26 + 2 MiB
    wide = "{num_queries: 4, hidden_size: 512, num_layers: 2, num_heads: 4, intermediate_size: 2048}"  # 6.9M
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=1, **{
        "model.adapter_kwargs": wide, "model.lora": "{r: 4, alpha: 8}", "trainable": "[lora]"}))
    stepped = []
    real_step = recipe.Recipe.train_step
    monkeypatch.setattr(recipe.Recipe, "train_step", lambda self: stepped.append(self.step) or real_step(self))
    with pytest.raises(LLMSRTError, match=r"run: 20 MiB free, and one checkpoint of this run needs about 26 MiB "
                                          r"\(0\.0M trainable parameters with AdamW's 2 moments, and 26 MiB of frozen "
                                          r"weights saved with them\) and its logs about 2 MiB until then; free space "
                                          r"or choose another output_dir \(keep_last 2 holds about 79 MiB") as e:
        recipe.train(cfg, log=lambda *_: None)
    assert "\n" not in str(e.value) and not stepped and not (out / "checkpoints").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=30 << 20))  # room for one: it trains
    assert recipe.train(cfg, log=lambda *_: None).is_dir() and stepped == [0]


@pytest.mark.parametrize("failing", ["loss", "dev_loss"])
def test_a_log_line_failing_at_a_due_evaluation_saves_the_step_with_it_or_marked_due(tiny_setup, tmp_path,
                                                                                     monkeypatch, failing):
    """The last step's train line failing (a full disk) saved the step without a dev loss and without saying its
    evaluation was due: the resume at max_steps trained nothing and evaluated nothing, so final_weights best passed
    the last step over (with eval_every 0 no checkpoint had a dev loss at all). Its dev line failing saved the step
    without the dev loss just measured. Now the step is saved marked due (the resume evaluates it first, as after
    a signal), or with its dev loss."""
    out, evaluated = tmp_path / "run", []
    real_log, real_eval = recipe._log_json, recipe.Recipe.evaluate
    monkeypatch.setattr(recipe.Recipe, "evaluate", lambda self: evaluated.append(self.step) or real_eval(self))
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=2, final_weights="best", **{
        "data.dev": tiny_setup["manifest"], "data.dev_size": 2}))
    with monkeypatch.context() as m:
        m.setattr(recipe, "_log_json", lambda o, r: _no_space() if r["step"] == 2 and failing in r else real_log(o, r))
        with pytest.raises(LLMSRTError, match=r"at step 2: No space left on device; saved a last checkpoint"):
            recipe.train(cfg, log=lambda *_: None)
    state = checkpoint.load_trainer_state(checkpoint.latest(out).path)
    assert evaluated == ([] if failing == "loss" else [2]) and state["step"] == 2
    assert (state.get("eval_due"), state["dev_loss"] is None) == ((True, True) if failing == "loss" else (None, False))
    said = []
    recipe.train(cfg, log=said.append)
    assert evaluated == [2]  # the due evaluation ran on resume (once in all)
    best = checkpoint.read_index(out / "checkpoints")
    assert best["best_step"] == 2 and any("the best checkpoint's weights, step 2" in line for line in said), said


def test_a_feature_cache_that_fills_output_dirs_disk_is_refused_before_the_first_step(tiny_setup, tmp_path,
                                                                                     monkeypatch):
    """The room for one checkpoint was checked before the feature cache's fill, which checks only its own room: on
    one disk (data.feature_cache: auto, under the home folder beside runs/) the fill took the checkpoint's room, and
    the first save failed save_every steps in. The room is checked again once the cache is filled."""
    from llm_srt.train import data

    usage, filled, stepped = shutil.disk_usage(tmp_path), [], []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=(2 if filled else 4) << 20))
    real_fill, real_step = data.TrainingData._fill, recipe.Recipe.train_step
    monkeypatch.setattr(data.TrainingData, "_fill", lambda self, *a: real_fill(self, *a) or filled.append(1))
    monkeypatch.setattr(recipe.Recipe, "train_step", lambda self: stepped.append(self.step) or real_step(self))
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=1, **{"data.feature_cache": str(tmp_path / "f")}))
    with pytest.raises(LLMSRTError, match=r"run: 2 MiB free now that the feature cache is filled \(data\.feature_cache "
                                          r"may share this disk\), and one checkpoint of this run needs about 0 MiB "
                                          r"\(0\.0M trainable parameters with AdamW's 2 moments\) and its logs about "
                                          r"2 MiB") as e:
        recipe.train(cfg, log=lambda *_: None)
    assert "\n" not in str(e.value) and filled and not stepped and not (out / "checkpoints").exists()


def test_a_signal_during_the_resumed_due_evaluation_stops_there_with_its_dev_loss_saved(tiny_setup, tmp_path,
                                                                                       monkeypatch):
    """A resume first runs the dev evaluation a signal skipped (minutes at 7B). A SIGTERM during it trained a whole
    step and saved that before stopping, past the grace torchrun's agent (30 s) or docker stop (10 s) leaves before
    SIGKILL: the step's checkpoint then never came, and every resume evaluated again. It stops after the evaluation,
    the step saved with its dev loss (no longer due)."""
    from llm_srt.errors import Terminated

    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=3, eval_every=1, **{
        "data.dev": tiny_setup["manifest"], "data.dev_size": 2}))
    with monkeypatch.context() as m, cli.stop_on_sigterm():
        _signalled(m, 2, signal.SIGTERM)
        with pytest.raises(Terminated):
            recipe.train(cfg, log=lambda *_: None)
    assert checkpoint.load_trainer_state(checkpoint.latest(out).path)["eval_due"] is True
    real_eval, stepped = recipe.Recipe.evaluate, []

    def evaluate(self):  # the signal arrives while the resumed run evaluates step 2
        subprocess.run(["kill", "-TERM", str(os.getpid())], check=True)
        return real_eval(self)

    monkeypatch.setattr(recipe.Recipe, "evaluate", evaluate)
    real_step = recipe.Recipe.train_step
    monkeypatch.setattr(recipe.Recipe, "train_step", lambda self: stepped.append(self.step) or real_step(self))
    said = []
    with cli.stop_on_sigterm(), pytest.raises(Terminated):
        recipe.train(cfg, log=said.append)
    state = checkpoint.load_trainer_state(checkpoint.latest(out).path)
    assert not stepped and state["step"] == 2 and "eval_due" not in state and state["dev_loss"] is not None, said
    assert said[-1] == f"[asr] SIGTERM at step 2: saved a checkpoint, {out / 'checkpoints' / 'step-00000002'}; the " \
                       "same command resumes from it"
