"""Red-team of configs and run folders (issue 18): hostile or careless config values, config files and checkpoint
folder states. Each case must end in a one-line error naming the input and what to do, or be handled as
documented (ignored, rebuilt) - never a traceback, a hang, code run or training state lost. Fast: no model is
built."""

import hashlib
import json
import os
import re

import pytest
import torch

from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import checkpoint, run_lock
from llm_srt.train.config import load_config
from llm_srt.train.final import FINAL, finished_steps, is_finished

# ---- config values: key=value -> what the one-line error must say -------------------------------------------------
VALUES = {
    "optim.lr=nan": "optim.lr must be a finite number", "optim.lr=.inf": "optim.lr must be a finite number",
    "optim.lr=1e400": "optim.lr must be a finite number", "optim.lr=-1": "optim.lr must be > 0",
    "optim.lr=0": "optim.lr must be > 0", "optim.lr=true": "optim.lr must be float",
    "optim.betas=[2, 3]": r"optim.betas\[0\] must be >= 0 and < 1", "optim.betas=[0.9]": "list of 2 items",
    "optim.betas=[0.9, -0.1]": r"optim.betas\[1\] must be >= 0", "optim.weight_decay=-1": "weight_decay must be >= 0",
    "optim.grad_clip=nan": "grad_clip must be a finite", "optim.accumulation=0": "accumulation must be >= 1",
    "optim.warmup_steps=-5": "warmup_steps must be >= 0", "optim.schedule=exp": "schedule must be one of",
    "save_every=0": "save_every must be >= 1", "log_every=0": "log_every must be >= 1",
    "eval_every=-1": "eval_every must be >= 0", "keep_last=0": r"keep_last must be >= 1 \(the newest",
    "threads=-1": "threads must be >= 0", "threads=100000": "threads must be >= 0 and <= 4096",
    "seed=-1": "seed must be >= 0", "seed=1099511627776": "seed must be >= 0 and <= 4294967295",
    "max_steps=0": "max_steps must be >= 1", "max_steps=1e3": "max_steps must be int",
    "distributed_timeout_min=1e300": "distributed_timeout_min must be > 0 and <= 10080",
    "distributed_timeout_min=.nan": "distributed_timeout_min must be a finite",
    "data.tasks={srt: .inf}": "data.tasks.srt must be a finite", "data.tasks={srt: 0}": "data.tasks.srt must be > 0",
    "data.tasks={1: 1.0}": "a key of data.tasks must be str", "data.train_weights=[.nan]": "must be a finite",
    "data.batch_size=0": "data.batch_size must be >= 1", "data.num_workers=-1": "data.num_workers must be >= 0",
    "data.dev_size=-1": "data.dev_size must be >= 0", "data.dev_decode=-1": "data.dev_decode must be >= 0",
    "data.seed=-1": "data.seed must be >= 0", "allow_changes=maybe": "allow_changes must be bool",
    "model.lora={dropout: .nan}": "model.lora.dropout must be a finite",
    "model.adapter_kwargs={num_queries: -1}": "model.adapter_kwargs.num_queries must be >= 1",
    "model.adapter_kwargs={hidden_size: 0}": "model.adapter_kwargs.hidden_size must be >= 1",
    "model.adapter_kwargs={dropout: 2.0}": "model.adapter_kwargs.dropout must be >= 0 and < 1",
    "optim={lr: 1, lr: 2}": "key 'lr' appears twice", "trainable=[&a x, *a]": "YAML aliases",
    # huge values are shortened in the message, never formatted whole
    "device=" + "x" * 100_000: r"device must be auto, cpu, cuda or cuda:N, got 'x+\.\.\.x+'$",
    "dtype=" + "y" * 100_000: r"dtype must be .*, got 'y+\.\.\.y+'$",
    "model.adapter=" + "z" * 100_000: r"model.adapter: unknown adapter 'z+\.\.\.z+'; choose one of",
    "data.tasks={" + "t" * 1000 + ": 1}": r"data.tasks: unknown task 't+\.\.\.t+'; use",
    "model.lora={r: 0, target_modules: [" + ", ".join(["q"] * 3_000) + "]}": r"model.lora: needs r >= 1",
    "model.lora={bias: " + "b" * 100_000 + "}": r"model.lora.bias must be none .*, got 'b+\.\.\.b+'$",
}


@pytest.mark.parametrize("override", VALUES, ids=[o[:40] for o in VALUES])
def test_a_bad_value_is_one_line_naming_the_key(override):
    with pytest.raises(ConfigError, match=VALUES[override]) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


# ---- config files ---------------------------------------------------------------------------------------------------
def _bomb() -> str:
    text = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi"):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    return text


FILES = {  # name -> (content, what the error must say)
    "alias-bomb": (_bomb(), r"bad.yaml:2: YAML aliases \(\*a\) are not accepted"),
    "merge-alias": ("base: &b {lr: 1}\noptim:\n  <<: *b\n", r"bad.yaml:3: YAML aliases"),
    "duplicate-section": ("optim:\n  lr: 1.0e-3\nmax_steps: 3\noptim:\n  warmup_steps: 0\n",
                          r"bad.yaml:4: key 'optim' appears twice in one mapping \(first on line 1\)"),
    "duplicate-nested": ("data:\n  batch_size: 2\n  batch_size: 4\n", r"bad.yaml:3: key 'batch_size' appears twice"),
    "deep-nesting": ("stage: " + "[" * 600 + "]" * 600 + "\n", r"bad.yaml: nested too deeply"),
    "huge-file": ("#" + "x" * (1 << 20) + "\n", r"bad.yaml: \d+ bytes; a config is at most 1024 KiB"),
    "python-tag": ("stage: !!python/object/apply:os.system ['touch {marker}']\n", r"bad.yaml:1: not valid YAML"),
    "top-level-list": ("- a\n- b\n", r"bad.yaml: the top level must be a mapping"),
    "not-utf8": (b"stage: \xff\xfe\n", r"bad.yaml: not UTF-8 text"),
    "tab-indent": ("data:\n\tbatch_size: 2\n", r"bad.yaml:2: not valid YAML"),
    "binary-value": ("stage: !!binary aGVsbG8=\n", r"stage must be str, got b'hello'"),
    "timestamp-value": ("output_dir: 2020-01-01\n", r"output_dir must be str, got datetime.date"),
    "list-key": ("[a, b]: 1\n", r"bad.yaml:1: not valid YAML"),
    "null-key": ("~: 1\n", r"unknown key 'None'"),
    "huge-key": ("k" * 50_000 + ": 1\n", r"bad.yaml:1: not valid YAML"),
    "long-key": ("k" * 1000 + ": 1\n", r"unknown key 'k+\.\.\.k+'"),
    "huge-value": ("stage: [" + ", ".join(["[1, 2]"] * 1000) + "]\n", r"stage must be str, got \[\[1, 2\], "),
    "section-not-mapping": ("optim: 3\n", r"optim must be a mapping, got int"),
    "bom": ("\ufeffmax_steps: 3\nlog_every: 0\n", r"bad.yaml:2: log_every must be >= 1"),
}


@pytest.mark.parametrize("filename", ["bad.yaml", "bad (1).yaml"])  # " (": the line was put inside the name
@pytest.mark.parametrize("name", FILES)
def test_a_hostile_config_file_is_one_line_naming_it(name, filename, tmp_path):
    text, message = FILES[name]
    message = message.replace("bad.yaml", re.escape(filename))
    marker = tmp_path / "marker"
    path = tmp_path / filename
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("{marker}", str(marker)), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 500 + len(str(path))
    assert not marker.exists()


def test_special_files_are_named_not_read(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(ConfigError, match=r"fifo.yaml: not a regular file"):
        load_config(fifo)
    with pytest.raises(ConfigError, match=r": not a regular file"):
        load_config(tmp_path)


# ---- checkpoint folder states ---------------------------------------------------------------------------------------
def _save_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")


def _run(tmp_path, losses=(3.0, 1.0, 2.0)):
    """A run folder with checkpoints 1..3 (dev losses given: the best is step 2), keep_last 2 -> steps 1 is gone."""
    for step, loss in enumerate(losses, 1):
        checkpoint.save(tmp_path, step, _save_model, {"step": step, "t": torch.full((2,), float(step))},
                        keep_last=2, dev_loss=loss, log=lambda _: None)
    return tmp_path / "checkpoints"


def _bad_index(text):
    def make(root):
        (root / "index.json").write_text(text)
    return make


def _stray(name, folder=True):
    def make(root):
        p = root / name
        if folder:
            (p / "sub").mkdir(parents=True)
        else:
            p.write_text("x")
    return make


def _copy_bak(root):
    import shutil

    shutil.copytree(root / "step-00000003", root / "step-00000003.bak")


INDEX_STATES = {  # a damaged index or stray names: the newest checkpoint is still found, the best kept
    "index-a-list": _bad_index("[]"),
    "index-steps-a-string": _bad_index('{"steps": "x", "best_step": null, "best_loss": null}'),
    "index-names-a-missing-step": _bad_index('{"steps": [2, 3, 7], "best_step": 2, "best_loss": 1.0}'),
    "index-truncated": _bad_index('{"steps": [2, 3'),
    "index-deeply-nested": _bad_index("[" * 100_000 + "]" * 100_000),
    "index-nan-best": _bad_index('{"steps": [2, 3], "best_step": 2, "best_loss": NaN}'),
    "index-bool-step": _bad_index('{"steps": [true, 3], "best_step": 2, "best_loss": 1.0}'),
    "index-missing": lambda root: (root / "index.json").unlink(),
    "step-bak-copy": _copy_bak,
    "step-not-a-number": _stray("step-latest"),
    "step-name-is-a-file": _stray("step-00000009", folder=False),
    "step-with-suffix": _stray("step-00000009-old"),
    "tmp-leftover": _stray(".tmp-step-00000004-123"),
}


@pytest.mark.parametrize("state", INDEX_STATES)
def test_a_damaged_index_or_stray_names_keep_the_newest_and_the_best(state, tmp_path):
    root = _run(tmp_path)
    INDEX_STATES[state](root)
    assert checkpoint.latest(tmp_path, log=lambda _: None).step == 3
    checkpoint.remove_leftovers(tmp_path)  # what the run does once it holds the lock
    messages = []
    checkpoint.save(tmp_path, 4, _save_model, {"step": 4}, keep_last=2, dev_loss=5.0, log=messages.append)
    steps = sorted(int(p.name.split("-")[1]) for p in root.iterdir()
                   if checkpoint.STEP_FOLDER.fullmatch(p.name) and p.is_dir())
    assert steps == [2, 3, 4]  # the best (2, by its own dev loss) and the last two
    index = json.loads((root / "index.json").read_text())
    assert index == {"steps": [2, 3, 4], "best_step": 2, "best_loss": 1.0}
    assert len(messages) <= 1 and all("\n" not in m for m in messages)
    assert not list(root.glob(".tmp-*"))


def _state_json(text):
    def make(folder):
        (folder / checkpoint.STATE_DIR / checkpoint.STATE_JSON).write_text(text)
    return make


def _truncate_tensors(folder):
    p = folder / checkpoint.STATE_DIR / checkpoint.STATE_TENSORS
    p.write_bytes(p.read_bytes()[:20])


def _legacy(folder):
    for p in (folder / checkpoint.STATE_DIR).iterdir():
        p.unlink()
    (folder / checkpoint.STATE_DIR / checkpoint.LEGACY_STATE).write_bytes(b"\x80\x02}q\x00.")


STATE_FAULTS = {  # resealed after the change (as a copy tool would): a one-line refusal, nothing run
    "state-not-json": (_state_json("not json"), "cannot read trainer state"),
    "state-a-list": (_state_json("[1, 2]"), r"no 'step'"),
    "state-missing-tensor": (_state_json('{"step": {"__tensor__": "99"}}'), "cannot read trainer state .*KeyError"),
    "state-object-array": (_state_json('{"step": {"__ndarray__": [1], "dtype": "|O"}}'), "an array of object"),
    "state-list-key": (_state_json('{"step": {"__items__": [[[1], 2]]}}'), "cannot read trainer state .*TypeError"),
    "state-deeply-nested": (_state_json("[" * 100_000 + "]" * 100_000), "cannot read trainer state"),
    "tensors-truncated": (_truncate_tensors, "cannot read trainer state"),
    "legacy-pickle": (_legacy, r"old pickled format .*not loaded"),
}


@pytest.mark.parametrize("fault", STATE_FAULTS)
def test_a_resealed_bad_trainer_state_is_a_one_line_refusal(fault, tmp_path):
    root = _run(tmp_path)
    make, message = STATE_FAULTS[fault]
    make(root / "step-00000003")
    checkpoint.seal(root / "step-00000003")
    with pytest.raises(LLMSRTError, match=message) as e:
        checkpoint.load_trainer_state(root / "step-00000003", required=("step",))
    assert "\n" not in str(e.value) and len(str(e.value)) < 300 + 2 * len(str(root))
    assert checkpoint.load_trainer_state(root / "step-00000002")["step"] == 2  # the previous one reads


def _entry(path):
    """A checksums.json entry that `path` matches: its size and sha256 right, so only its name can be refused."""
    return {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


# checksums.json of step-00000003 (given the file beside the checkpoints, `outside`) -> the problem reported
CHECKSUM_FAULTS = {
    "checksums-a-list": (lambda outside: [], r"checksums\.json is malformed"),
    "checksums-bad-entry": (lambda outside: {"config.json": 3}, r"checksums\.json is malformed"),
    "checksums-outside": (lambda outside: {"../../outside.txt": _entry(outside)},
                          r"checksums\.json names '\.\./\.\./outside\.txt', outside the checkpoint"),
    "checksums-absolute": (lambda outside: {str(outside): _entry(outside)},
                           r"checksums\.json names '/.*', outside the checkpoint"),  # the path cut to 80 characters
}


@pytest.mark.parametrize("fault", CHECKSUM_FAULTS)
def test_malformed_checksums_mark_the_checkpoint_damaged(fault, tmp_path):
    root = _run(tmp_path)
    outside = tmp_path / "outside.txt"  # ../../outside.txt from a checkpoint's folder
    outside.write_text("a file beside the run's checkpoints, not one of them")
    sums, problem = CHECKSUM_FAULTS[fault]
    (root / "step-00000003" / checkpoint.CHECKSUMS).write_text(json.dumps(sums(outside)))
    messages = []
    assert checkpoint.latest(tmp_path, log=messages.append).step == 2
    assert len(messages) == 1 and re.search(rf"step-00000003 is damaged \({problem}\)", messages[0]), messages


def test_lock_file_states(tmp_path):
    (tmp_path / run_lock.LOCK).write_bytes(b"\x00garbage{")  # left by a killed run, unreadable: no block
    lock = run_lock.RunLock(tmp_path).acquire()
    with pytest.raises(LLMSRTError, match=rf"another training run .*\(pid {os.getpid()} on .*, started "):
        run_lock.RunLock(tmp_path).acquire()
    lock.release()
    (tmp_path / run_lock.LOCK).unlink()
    (tmp_path / run_lock.LOCK).mkdir()  # a folder where the lock file goes
    with pytest.raises(LLMSRTError, match=r"\.lock: cannot create the run lock .*choose another output_dir"):
        run_lock.RunLock(tmp_path).acquire()


@pytest.mark.parametrize("text", ["[]", '{"max_steps": Infinity}', '{"max_steps": "x"}', "[" * 100_000, "\x00"])
def test_a_damaged_final_train_config_counts_as_finished_without_a_traceback(text, tmp_path):
    (tmp_path / FINAL).mkdir()
    (tmp_path / FINAL / "config.json").write_text("{}")
    (tmp_path / FINAL / "train_config.json").write_text(text)
    assert is_finished(tmp_path) and finished_steps(tmp_path) is None


def test_odd_things_under_checkpoint_names_are_replaced_or_named(tmp_path):
    root = _run(tmp_path)
    (root / "step-00000004").write_text("a stray file under the next checkpoint's name")
    (root / "step-00000005").symlink_to(tmp_path / "elsewhere")
    for step in (4, 5):
        checkpoint.save(tmp_path, step, _save_model, {"step": step}, keep_last=2, log=lambda _: None)
    assert checkpoint.latest(tmp_path).step == 5 and checkpoint.verify(root / "step-00000004") is None
    (root / "index.json").unlink()
    (root / "index.json").mkdir()  # a folder where the index goes
    with pytest.raises(LLMSRTError, match=r"index.json: cannot write the checkpoint index .*step-00000006 is saved"):
        checkpoint.save(tmp_path, 6, _save_model, {"step": 6}, keep_last=2, log=lambda _: None)
    assert checkpoint.latest(tmp_path).step == 6


def test_a_killed_runs_forked_children_do_not_keep_its_lock(tmp_path):
    """DataLoader workers are forked: each held the run lock's descriptor, so after the training process was killed
    (SIGKILL, the OOM killer) its workers kept the lock until they noticed, and the same command run again at once
    was refused as "another training run"."""
    import signal
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from llm_srt.train import run_lock
        run_lock.RunLock({str(tmp_path)!r}).acquire()
        child = os.fork()
        if child == 0:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1), os.dup2(null, 2)  # the test's pipes: not held open by the child
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout)
    try:
        os.kill(child, 0)  # the forked child outlives its parent, as a worker does for a while
        run_lock.RunLock(tmp_path).acquire().release()
    finally:
        os.kill(child, signal.SIGKILL)
