"""`make gpu-check`'s CPU path: the same steps as on a GPU (cuda tests, tiny curriculum + kill/resume + translate +
evaluate through the CLI, the paper-shape bench at tiny size), with its report; and the wheel list it needs."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402
import gpu_check_bench  # noqa: E402
import gpu_check_e2e  # noqa: E402
import gpu_check_env  # noqa: E402
import gpu_check_pytest  # noqa: E402
import gpu_check_report  # noqa: E402
import gpu_check_runner  # noqa: E402


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPU_PYTHON=sys.executable, USE_WHEELS="0")
    return subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # its steps are the CLI's own, each tested in make test
@pytest.mark.long(99)
def test_cpu_path_runs_every_step_and_writes_the_report(tmp_path):
    done = run_check(tmp_path, "cpu", "--tests", "tests/test_device.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["env", "cuda-tests", "e2e", "bench-compiled-tiny", "bench-tiny"] and report["ok"]
    compiled = steps["bench-compiled-tiny"]["result"]["decode"]
    assert {(r["batch_size"], r["compiled"]) for r in compiled} == {(1, True), (2, True)}
    assert steps["cuda-tests"]["tests"] >= 1 and steps["cuda-tests"]["skipped"] == steps["cuda-tests"]["tests"]
    assert steps["e2e"]["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True,
                                     "resume_state": True, "translate": True, "evaluate": True}
    e2e = steps["e2e"]  # float32 on the CPU: bit-identical, over the steps from the first checkpoint to the second
    assert e2e["resume_steps_compared"] >= 6 and e2e["resume_worst_relative"] == 0.0
    assert e2e["resume_state_step"] == 10 and e2e["resume_state_drift"] == 0.0
    bench = steps["bench-tiny"]["result"]
    assert bench["shape"] == "tiny" and bench["decode"] and len(bench["train"]) == 3  # ckpt off, on, wide head blocks
    md = (tmp_path / "report.md").read_text()
    assert "**passed**" in md and "| e2e | ok |" in md and "LLM-SRT (Q-Former)" in md
    log = (tmp_path / "gpu-check.log").read_text()
    assert "resumed from" in log and "killed: True" in log and "use_deterministic_algorithms(True" in log
    assert bench["finished"] is True and "[bench] llm-srt: greedy batch 1" in log  # its progress, as it came
    assert "test_cuda_peak_memory_counts_an_allocation SKIPPED" in log  # pytest -v: each outcome as it comes


def test_a_failed_step_fails_the_check(tmp_path):
    done = run_check(tmp_path, "cuda", "--steps", "env")  # asks for CUDA where torch sees none
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 1 and not report["ok"] and "no CUDA GPU" in report["steps"][0]["error"]
    assert "**FAILED**" in (tmp_path / "report.md").read_text()


def test_a_step_the_budget_leaves_undone_is_neither_passed_nor_failed(tmp_path, monkeypatch):
    """A step not started, or stopped by the check's budget before its own limit, is reported as not done and does
    not fail the check; one that runs past its own limit still fails it."""
    monkeypatch.setattr(gpu_check_runner, "MIN_STEP_S", 1)
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=3)
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]

    def command(limit):
        done = check.run("sleep", sleep, limit)
        return {"ok": done.returncode == 0, "error": done.stderr}

    cut = check.step("cut", command, 60)  # the budget (3 s) stops it before its own limit
    assert cut["ok"] is None and "cut short by the check's time budget" in cut["error"]
    assert check.step("late", command, 60)["ok"] is None  # the budget is spent: not started
    assert gpu_check_report.write_report(check, time.time()) == "FAILED"  # nothing passed: not a passed check
    check.steps.append({"step": "env", "ok": True, "seconds": 0.1})
    assert gpu_check_report.write_report(check, time.time()) == "incomplete"  # never "passed" with a step undone
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "incomplete" and not report["ok"] and report["not_proven_here"]
    md = (tmp_path / "report.md").read_text()
    assert "**incomplete** (2 steps not done for want of time)" in md and "Not proven by this check: several NCCL" in md
    check.steps = [s for s in check.steps if s["ok"]]
    assert gpu_check_report.write_report(check, time.time()) == "passed"
    check.steps[0]["other_versions"] = ["torch 2.11.0 (constraints.txt: 2.13.0)"]  # the image's torch, not the pin
    assert gpu_check_report.write_report(check, time.time()) == "passed"
    assert "this machine ran torch 2.11.0 (constraints.txt: 2.13.0)" in json.loads(
        (tmp_path / "report.json").read_text())["not_proven_here"][-1]
    assert "torch 2.11.0 (constraints.txt: 2.13.0)" in (tmp_path / "report.md").read_text().split("Not proven")[1]
    check.steps[0]["other_versions"] = ["peft 0.20.0 (constraints.txt: 0.21.2)"]  # torch pinned: no torch note
    gpu_check_report.write_report(check, time.time())
    assert "FSDP2" not in json.loads((tmp_path / "report.json").read_text())["not_proven_here"][-1]
    check.deadline = time.monotonic() + 60
    assert check.step("own", command, 1)["ok"] is False  # its own limit: a failure
    assert gpu_check_report.write_report(check, time.time()) == "FAILED"

    def failed_then_cut():  # a command that fails on its own, then one the budget stops: the step failed
        check.deadline = time.monotonic() + 3
        first = check.run("fails", [sys.executable, "-c", "raise SystemExit(1)"], 60)
        check.run("sleep", sleep, 60)
        return {"ok": False, "error": f"rc {first.returncode}"}

    assert check.step("failed", failed_then_cut)["ok"] is False
    check.log.close()


def test_a_step_that_failed_on_its_own_stays_failed_when_the_budget_cuts_it_later(tmp_path):
    """A step can fail with every command exiting 0 (e2e: resumed losses out of tolerance); a later command the
    budget cut then turned it into "not done (budget)" and the check into "incomplete". Only a step whose every
    failure traces back to a budget-cut command is not done; a part that failed on its own, or the step's code
    breaking, fails it."""
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)

    def e2e_like(resume_losses, breaks=False):  # /tmp/rev_bench/mask.py: a check of its own, then a cut command
        check.deadline = time.monotonic() + 1.5
        done = check.run("e2e evaluate", [sys.executable, "-c", "import time; time.sleep(30)"], 60)
        assert done.cut and done.returncode == 124
        if breaks:
            raise KeyError("resume_worst_relative")
        return {"ok": False, "parts": {"resume_losses": resume_losses, "evaluate": None}}

    def step(*args):  # started with the budget's time left; its command ends it
        check.deadline = time.monotonic() + 60
        return check.step("e2e", e2e_like, *args)

    failed = step(False)
    assert failed["ok"] is False and failed["parts"] == {"resume_losses": False, "evaluate": None}
    assert step(True, True)["ok"] is False  # it broke: not the budget's doing
    cut = step(True)  # the budget's alone: not done
    assert cut["ok"] is None and "cut short by the check's time budget" in cut["error"]
    check.steps.insert(0, {"step": "env", "ok": True, "seconds": 0.1})
    assert gpu_check_report.write_report(check, time.time()) == "FAILED"
    check.log.close()


def test_e2e_parts_are_failed_on_their_own_or_not_done_when_the_budget_cut_their_command(tmp_path, monkeypatch):
    """e2e judges each part from its command and what it wrote: a wrong result from a command that exited 0 (no
    final/config.json, an item error from translate, the resumed losses) fails the step; a part whose command the
    budget cut is not done, and only a step with nothing else wrong is "not done (budget)"."""
    import types

    from llm_srt.model import presets

    monkeypatch.setattr(presets, "write_folders", lambda *a, **k: types.SimpleNamespace(encoder="e", llm="l"))
    monkeypatch.setattr(gpu_check_e2e, "write_corpus", lambda root: {s: root / f"{s}.jsonl" for s in ("train", "dev",
                                                                                                    "test")})

    def scenario(**how):  # command -> "ok", "wrong" (exit 0, a wrong result) or "cut" (by the budget)
        check = gpu_check_runner.Check(tmp_path, tmp_path / how["name"], "cpu", "float32", budget_s=60)
        run = check.run

        def fake(name, argv, timeout, cwd=gpu_check_env.ROOT):
            what = how[name.split()[-1]]
            writes = {"curriculum": check.work / "runs" / "srt" / "final" / "config.json",
                      "evaluate": check.work / "eval" / "results.json"}.get(name.split()[-1])
            if what == "ok" and writes:
                writes.parent.mkdir(parents=True, exist_ok=True)
                writes.write_text("{}")
            if what == "cut":
                check.deadline = time.monotonic() + 1.5
            code = {"ok": "print('[{\"error\": null}]')", "wrong": "print('[{\"error\": \"boom\"}]')",
                    "cut": "import time; time.sleep(30)"}[what]
            return run(name, [sys.executable, "-c", code], timeout, cwd)

        def kill_and_resume(check, common, limit):
            done = check.run("e2e resume", [], limit())
            return done, {"kill_resume": how["resume"] != "cut", "resume_losses": how["resume"] == "ok",
                          "resume_state": how["resume"] != "wrong"}, {
                **({"resume_problems": ["resume_losses: step 12's loss is 2e-04 off"]} if how["resume"] == "wrong"
                   else {}), "resume_worst_relative": None, "resume_steps_compared": 2}

        check.work.mkdir()
        monkeypatch.setattr(check, "run", fake)
        monkeypatch.setattr(gpu_check_e2e, "kill_and_resume", kill_and_resume)
        result = check.step("e2e", gpu_check_e2e.e2e_step, check)
        check.steps.insert(0, {"step": "env", "ok": True, "seconds": 0.1})
        outcome = gpu_check_report.write_report(check, time.time())
        check.log.close()
        return result, outcome, (tmp_path / "report.md").read_text()

    result, outcome, md = scenario(name="own", curriculum="wrong", resume="wrong", translate="wrong", evaluate="cut")
    assert result["parts"] == {"curriculum": False, "kill_resume": True, "resume_losses": False,
                               "resume_state": False, "translate": False, "evaluate": None}
    assert result["ok"] is False and outcome == "FAILED"
    assert result["error"] == ("failed: curriculum, resume_losses, resume_state, translate; not done: evaluate; "
                               "resume_losses: step 12's loss is 2e-04 off")
    assert "translate FAILED, evaluate not done (budget)" in md
    result, outcome, md = scenario(name="cut", curriculum="ok", resume="ok", translate="cut", evaluate="cut")
    assert result["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True, "resume_state": True,
                               "translate": None, "evaluate": None}
    assert result["ok"] is None and outcome == "incomplete" and "not done: translate, evaluate" in result["error"]
    result, outcome, _ = scenario(name="fine", curriculum="ok", resume="ok", translate="ok", evaluate="ok")
    assert result["ok"] is True and outcome == "passed" and "error" not in result


# ---- can the kill/resume comparison fail? ----------------------------------------------------------------------------
# the e2e's own `train` (asr.yaml, the check's overrides, float32 on the CPU): losses of steps 1..20, a tiny random LLM
#   whose loss stays near ln(V); and steps 11..20 of it resumed at step 10 with Adam's moments dropped
UNINTERRUPTED = (6.931241, 6.95365, 6.944173, 6.90365, 6.930494, 6.903476, 6.895276, 6.925763, 6.879389, 6.907396,
                 6.898775, 6.866898, 6.884576, 6.85919, 6.852342, 6.866477, 6.837543, 6.852853, 6.847685, 6.828687)
ADAM_DROPPED = (6.898775, 6.868073, 6.882804, 6.859959, 6.853098, 6.863997, 6.837292, 6.850607, 6.845229, 6.827893)


def test_resumed_losses_fail_a_broken_resume_on_a_gpu_and_pass_an_exact_one():
    """On CUDA the resumed losses were compared at a relative tolerance of 2e-2, while the run's whole curve moves
    1.8% in 20 steps: a resume that dropped Adam's moments (3.6e-4 off) or started again from scratch (step k+10
    scored as step k: 1.3e-2 off) passed. A tolerance that cannot tell (not 10x below the run's own step-to-step
    loss change) now fails too, as undecided."""
    run = dict(enumerate(UNINTERRUPTED, 1))
    after = {k: v for k, v in run.items() if k > 10}  # what the killed run logged after its checkpoint
    for device in ("cpu", "cuda"):
        ok, facts = gpu_check_e2e.compare_losses(after, run, device)
        assert ok and "problem" not in facts and facts["resume_worst_relative"] == 0.0, facts
        assert facts["resume_steps_compared"] == 10 and facts["resume_loss_change"] > 10 * 1e-4
    for again in (dict(zip(range(11, 21), ADAM_DROPPED)), {k: run[k - 10] for k in after}):
        ok, facts = gpu_check_e2e.compare_losses(after, again, "cuda")
        assert not ok and "'s loss is" in facts["problem"] and "off the uninterrupted run's (tolerance 1e-04)" in (
            facts["problem"])
    ok, facts = gpu_check_e2e.compare_losses(after, {k: v * (1 + 5e-5) for k, v in after.items()}, "cuda")
    assert ok  # within a GPU's tolerance (a kernel without a deterministic version), not within the CPU's
    assert not gpu_check_e2e.compare_losses(after, {k: v * (1 + 5e-5) for k, v in after.items()}, "cpu")[0]
    flat = {k: 6.9 + 2e-5 * (k % 2) for k in after}  # a curve this flat: a wrong batch would pass unseen
    ok, facts = gpu_check_e2e.compare_losses(flat, flat, "cuda")
    assert not ok and facts["problem"] == ("resume_losses cannot decide: its tolerance (1e-04) is not 10x below the "
                                           "run's own step-to-step loss change (2.9e-06)")
    ok, facts = gpu_check_e2e.compare_losses(after, {k: v for k, v in after.items() if k < 15}, "cuda")
    assert not ok and "logged 4 of the 10 steps" in facts["problem"]
    assert not gpu_check_e2e.compare_losses({11: 6.9}, {11: 6.9}, "cpu")[0]  # one step proves nothing of the next


def _adam(weights, state, steps):
    """`weights` (one tensor) and AdamW's state dict after `steps` (their numbers give each step's gradient) from
    `state` (None: a fresh optimizer)."""
    import copy

    import torch

    w = torch.nn.Parameter(weights.clone())
    optimizer = torch.optim.AdamW([w], lr=1e-2)
    if state is not None:
        optimizer.load_state_dict(state)
    for step in steps:
        w.grad = w.detach() - torch.sin(torch.arange(w.numel(), dtype=w.dtype).reshape(w.shape) * step)
        optimizer.step()
    return w.detach().clone(), copy.deepcopy(optimizer.state_dict())


def _checkpoint(folder: Path, step: int, weights, optimizer, batch: int = 0, rng: int = 0) -> Path:
    """A checkpoint folder as `train` writes it: adapter.safetensors and trainer_state/."""
    import torch
    from safetensors.torch import save_file

    from llm_srt.train.checkpoint import write_trainer_state

    folder.mkdir(parents=True)
    save_file({"query": weights}, str(folder / "adapter.safetensors"))
    write_trainer_state(folder / "trainer_state", {"step": step, "optimizer": optimizer, "scheduler": {
        "last_epoch": step}, "data": {"epoch": step // 2, "batch": batch}, "rng": {"torch": torch.full((4,), rng)}})
    return folder


def test_the_resumed_state_must_be_the_uninterrupted_run_s_trainable_tensors_and_optimizer_state(tmp_path):
    """The losses alone cannot see Adam's moments dropped at a resume on a GPU (3.6e-4 off, within bf16's noise
    without deterministic kernels): the resumed run's checkpoint at the uninterrupted run's next checkpoint step
    must hold its weights and optimizer state, within a fraction of how far training moved them in between."""
    import torch

    from llm_srt.train.checkpoint import load_trainer_state

    w0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    w10, adam10 = _adam(w0, None, range(1, 11))
    start = _checkpoint(tmp_path / "step-10", 10, w10, adam10)
    w20, adam20 = _adam(w10, adam10, range(11, 21))
    reference = _checkpoint(tmp_path / "uninterrupted", 20, w20, adam20)

    def resumed(name, weights, optimizer, **how):
        return gpu_check_e2e.compare_states(reference, _checkpoint(tmp_path / name, 20, weights, optimizer, **how),
                                        start, "cuda")

    ok, facts = resumed("exact", *_adam(w10, load_trainer_state(start)["optimizer"], range(11, 21)))
    assert ok and facts["resume_state_drift"] == 0.0 and facts["resume_state_step"] == 20, facts
    ok, facts = resumed("near", w20 + 1e-3 * (w20 - w10), adam20)  # a GPU's tolerance: 1e-2 of the movement
    assert ok and 0 < facts["resume_state_drift"] < 1e-2
    worst = {}
    for name, (weights, optimizer) in {"adam_dropped": _adam(w10, None, range(11, 21)),
                                       "started_again": (w10, adam10)}.items():
        ok, facts = resumed(name, weights, optimizer)
        assert not ok and facts["resume_state_drift"] > 0.1 and "tolerance 1e-02" in facts["problem"], facts
        worst[name] = facts["resume_state_worst"]
    assert worst == {"adam_dropped": "optimizer exp_avg_sq", "started_again": "adapter"}  # 1.2 and 1.0 of the way
    ok, facts = resumed("other_batch", *_adam(w10, adam10, range(11, 21)), batch=1)
    assert not ok and facts["problem"] == ("resume_state: the resumed run's other_batch has another data than the "
                                           "uninterrupted run's")
    assert not resumed("other_rng", *_adam(w10, adam10, range(11, 21)), rng=1)[0]
    lost = {**adam20, "state": {}}  # no optimizer state at all
    ok, facts = resumed("lost", w20, lost)
    assert not ok and "is missing, shaped otherwise, or moved" in facts["problem"]
    ok, facts = gpu_check_e2e.compare_states(None, tmp_path / "exact", start, "cuda")
    assert not ok and "fewer than two checkpoints" in facts["problem"]


def test_a_resume_the_comparison_fails_fails_the_e2e_step_naming_why(tmp_path):
    """A part that failed names its reason in the step's error and report.md shows the numbers it was judged by."""
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)
    check.log.close()
    step = {"step": "e2e", "ok": False, "seconds": 1.0, "parts": {"resume_losses": True, "resume_state": False},
            "error": "failed: resume_state", "resume_steps_compared": 12, "resume_worst_relative": 0.0,
            "resume_tolerance": 1e-4, "resume_loss_change": 2.2e-3, "resume_state_step": 20,
            "resume_state_drift": 0.77, "resume_state_tolerance": 1e-2}
    check.steps = [{"step": "env", "ok": True, "seconds": 0.1}, step]
    assert gpu_check_report.write_report(check, time.time()) == "FAILED"
    assert ("resume_losses ok, resume_state FAILED (resumed losses of 12 steps within 0.0e+00 of the uninterrupted "
            "run's (tolerance 1e-04; the run's own step-to-step change 2.2e-03); its tensors and optimizer state at "
            "step 20 within 7.7e-01 of their movement (tolerance 1e-02))") in (tmp_path / "report.md").read_text()


def test_cuda_tests_that_all_skip_on_a_gpu_fail_the_step(tmp_path, monkeypatch):
    """On the CPU the cuda tests skip, as they should; on a GPU a step in which none of them ran (every one skipped,
    or none collected) is a failure, not a pass."""
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pytest.skip('no GPU here')\n")
    for device, ok in (("cpu", True), ("cuda", False)):
        check = gpu_check_runner.Check(tmp_path, tmp_path, device, "auto", budget_s=120)
        result = gpu_check_pytest.cuda_tests_step(check, [str(test)])
        check.log.close()
        assert result["ok"] is ok and result["skipped"] == 1, result
    assert "no cuda test ran on the GPU (1 skipped of 1 collected)" in result["error"]


def test_cuda_tests_are_found_by_their_marker():
    files = gpu_check_pytest.cuda_test_files()
    assert "tests/test_device.py" in files and "tests/serve/test_serve_openai.py" not in files
    assert "tests/model/test_ctc.py" in files  # its cuda case is one parameter's (pytest.param(..., marks=))
    assert "tests/test_gpu_check.py" not in files  # names the marker in text only
    assert all(gpu_check_pytest.CUDA_MARK.search((ROOT / f).read_text()) for f in files)


def test_the_environment_step_names_the_gpu_the_check_runs_on(tmp_path, monkeypatch):
    """--device cuda:1: GPU 1's name and memory in the report, not GPU 0's; cuda / auto: the current GPU's."""
    import types

    import torch

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: asked.append(i) or f"GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: asked.append(i) or types.SimpleNamespace(
        total_memory=(i + 1) * 2**30))
    for device, index in (("cuda:1", 1), ("cuda", 2), ("auto", 2)):
        asked.clear()
        env = gpu_check_env.env_step(types.SimpleNamespace(device=device, asked=device, out=tmp_path))
        assert asked == [index, index] and env["gpu"] == f"GPU {index}" and env["gpu_memory_gib"] == index + 1
    # this machine's torch is the pinned release under a local build tag (2.13.0+cpu; +cu128 on a GPU): not "other"
    import importlib.metadata as md

    assert "+" in md.version("torch") or md.version("torch") == "2.13.0"
    assert not any(v.startswith("torch ") for v in env.get("other_versions", []))


CARRY_MIB = 63  # of a device call's 64 MiB, for the tracked tree and .whl/ together


def test_the_tree_and_the_wheels_fit_one_device_call():
    """A device call carries the working tree and .whl/ within 64 MiB: the tracked files were 39.5 MiB (30.7 of them
    the embedded checkpoints) and the wheels 22.4 MiB, 61.9 in all; a little more of either and the one GPU
    session's check cannot travel. The tracked files as checked out, and .whl/ where fetched (else what `make
    fetch-wheels` last brought: WHEELS_MIB), stay under CARRY_MIB."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"no git checkout here to list the tracked files of ({listed.stderr.decode().strip()})")
    sizes = {name: (ROOT / name).lstat().st_size for name in listed.stdout.decode().split("\0")
             if name and os.path.lexists(ROOT / name)}
    wheels = list((ROOT / ".whl").glob("*.whl"))
    wheel_mib = sum(w.stat().st_size for w in wheels) / 2**20 if wheels else gpu_check_env.WHEELS_MIB
    tree_mib = sum(sizes.values()) / 2**20
    largest = ", ".join(f"{name} {sizes[name] / 2**20:.1f} MiB" for name in sorted(sizes, key=sizes.get)[-4:][::-1])
    assert tree_mib + wheel_mib <= CARRY_MIB, (
        f"the tracked files ({tree_mib:.1f} MiB) and .whl/ ({wheel_mib:.1f} MiB) make {tree_mib + wheel_mib:.1f} MiB, "
        f"past {CARRY_MIB} of the 64 MiB a device call carries: drop a wheel the GPU check can do without from "
        f"GPU_WHEELS, or move a large file out of the tracked tree (the largest: {largest})")


def test_every_wheel_is_pinned_in_constraints():
    pins = gpu_check_env.pinned(gpu_check_env.GPU_WHEELS, ROOT / "constraints.txt")
    assert len(pins) == len(gpu_check_env.GPU_WHEELS) and all("==" in p for p in pins)
    assert "transformers==5.23.0" in pins  # the version the tests run with, not the GPU image's own
    with pytest.raises(SystemExit, match="no-such-package"):
        gpu_check_env.pinned(("no-such-package",), ROOT / "constraints.txt")


IMAGE = ("torch", "accelerate", "sacrebleu", "numpy", "tokenizers", "safetensors", "huggingface-hub", "pyyaml", "tqdm",
         "matplotlib", "tensorboard", "pytest")  # what the GPU image brings, as GPU_WHEELS' comment lists it
UNIMPORTED = {"typer": "transformers' command-line tool alone imports it",
              "requests": "gguf imports it only to download a model"}  # required, never imported by what we run
WHEEL_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "os_name": "posix",
                "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "extra": ""}  # what the wheels are fetched for


def _requires(dist: str) -> list[str]:
    """The names of what distribution `dist` (as installed here) requires on WHEEL_PYTHON, without extras."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    needs = [Requirement(r) for r in md.requires(dist) or []]
    return [r.name for r in needs if r.marker is None or r.marker.evaluate(WHEEL_PYTHON)]


def test_the_wheels_bring_what_they_require_that_the_gpu_image_lacks():
    """fetch-wheels downloads with --no-deps ("the list is complete"), and it was not: fastapi imports annotated_doc
    at its own import and requires anyio, uvicorn requires click and h11, jiwer click; on an image without them
    tests/serve was left out. Each requirement of a wheel (on the wheels' Python) is now another wheel, or the
    image's: a package it lists, or one those require (not through huggingface-hub, whose requirements change with
    each release: requests, then httpx and click, then httpx2)."""
    import importlib.metadata as md

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    image, todo = set(), list(IMAGE)
    while todo:
        name = norm(todo.pop())
        if name in image:
            continue
        image.add(name)
        with contextlib.suppress(md.PackageNotFoundError):  # one not installed here adds only its name
            todo += _requires(name) if name != "huggingface-hub" else []
    wheels = {norm(name) for name in gpu_check_env.GPU_WHEELS}
    lacking = {f"{name} (required by {wheel})" for wheel in gpu_check_env.GPU_WHEELS for name in _requires(wheel)
               if norm(name) not in wheels | image | set(UNIMPORTED)}
    assert not lacking, f"GPU_WHEELS lacks {', '.join(sorted(lacking))}"


@pytest.mark.long(10)
def test_profile_decode_reports_each_batch_with_its_step_time_and_totals(tmp_path):
    """scripts/profile_decode.py (the GPU diagnostic behind README's decode profile) at the tiny shape here."""
    out = tmp_path / "profile.txt"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_decode.py"), "--shape", "tiny",
                           "--batches", "1,2", "--tokens", "4", "--rows", "5", "--out", str(out), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for batch in (1, 2):
        assert f"batch {batch}: " in text and f"batch {batch} under the profiler: self CPU" in text
    assert "ms per decode step" in text and "aten::" in text


def test_a_command_the_timeout_stops_keeps_what_it_said_and_leaves_no_process_behind(tmp_path):
    """A bench cut by its limit said where it was on stderr, which the log lost; its own subprocesses (pytest's,
    DataLoader workers) outlived it and kept the GPU's memory for the next step."""
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
    pid_file = tmp_path / "child.pid"
    done = check.run("hangs", _parent_of_a_sleeper(pid_file, "compiling batch 64"), 3)
    check.log.close()
    assert done.returncode == 124 and "compiling batch 64" in done.stderr and "timed out after 3 s" in done.stderr
    assert "compiling batch 64" in (tmp_path / "gpu-check.log").read_text()
    _gone(int(pid_file.read_text()), "its timeout")


def test_missing_wheels_fail_the_environment_and_stop_the_check_on_a_gpu(tmp_path, monkeypatch):
    """Without .whl/ carried, every step failed on ImportError after spending its time; the environment step now
    names what is missing, and on a GPU nothing else runs."""
    import importlib.util
    import types

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "soxr" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and env["error"].startswith("missing soxr: carry .whl/") and env["fatal"]
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda", "--steps", "env,cuda-tests,e2e"])
    assert rc == 1 and ran == []


def test_a_missing_optional_wheel_fails_the_environment_but_the_check_goes_on_without_what_needs_it(tmp_path,
                                                                                                  monkeypatch):
    """Any of ten modules missing stopped the whole GPU session at env, fastapi or gguf as much as transformers,
    though the benches need none of them. Now only one every later step imports stops it; another fails env, naming
    it, and cuda-tests leaves out the test folders that import it, saying so."""
    import importlib.util
    import types

    import torch

    real = importlib.util.find_spec
    gone = {"fastapi", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and not env["fatal"] and env["unimportable"] == ["fastapi", "gguf"]
    assert env["error"] == ("cannot import gguf (missing); fastapi (missing) (the check goes on); left out of "
                            "cuda-tests: tests/serve")
    assert gpu_check_pytest.left_out_folders() == {"tests/serve": "fastapi missing"}
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)
    argvs = []
    monkeypatch.setattr(check, "run", lambda name, argv, timeout: argvs.append(argv) or gpu_check_runner.Done(
        argv, 0, "tests/test_device.py::test_x PASSED\n", ""))
    result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, ["auto"])
    files = result["files"]
    assert result["left_out"] == {"tests/serve": "fastapi missing"} and argvs[0][-len(files):] == files
    assert "tests/test_device.py" in files and not [f for f in files if f.startswith("tests/serve/")]
    gpu_check_report.write_report(check, time.time())
    check.log.close()
    assert "; left out tests/serve (fastapi missing) |" in (tmp_path / "report.md").read_text()
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda", "--steps", "env,cuda-tests,e2e"])
    assert rc == 1 and ran == ["cuda-tests", "e2e"]  # failed (env), having run the rest
    assert "fastapi (missing)" in json.loads((tmp_path / "report.json").read_text())["steps"][0]["error"]
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| env |"))
    assert "| FAILED |" in row and ", cannot import gguf (missing); fastapi (missing) (the check goes on)" in row


def test_auto_on_a_gpu_machine_whose_torch_sees_no_gpu_fails_instead_of_rehearsing_on_the_cpu(tmp_path, monkeypatch):
    """DEVICE=auto fell back to the CPU plan where torch saw no GPU and reported "passed": on the device machine a
    CPU-only torch would spend the GPU session proving nothing. Where nvidia-smi is on PATH, env now fails and the
    check stops; --device cpu stays the rehearsal, and auto on a machine without a GPU still runs it."""
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked, smi, fails in (("auto", "/usr/bin/nvidia-smi", True), ("cpu", "/usr/bin/nvidia-smi", False),
                              ("auto", None, False)):
        monkeypatch.setattr(gpu_check_env.shutil, "which", lambda name, *a: smi if name == "nvidia-smi" else None)
        env = gpu_check_env.env_step(types.SimpleNamespace(device="cpu", asked=asked, out=tmp_path))
        assert (env["ok"], env["fatal"]) == (not fails, fails), (asked, smi, env)
    monkeypatch.setattr(gpu_check_env.shutil, "which", lambda name, *a: "/usr/bin/nvidia-smi")
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--steps", "env,cuda-tests"])  # --device auto
    report = json.loads((tmp_path / "report.json").read_text())
    assert rc == 1 and ran == [] and report["outcome"] == "FAILED"
    assert "yet nvidia-smi is on PATH (/usr/bin/nvidia-smi): a GPU machine whose torch sees none" in (
        report["steps"][0]["error"])
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cpu", "--steps", "env,cuda-tests"])
    assert rc == 0 and ran == ["cuda-tests"]


def test_fetching_wheels_again_clears_the_earlier_ones(tmp_path, monkeypatch):
    """Two versions of one package side by side (after a pin moved) made pip refuse the install on the GPU."""
    (tmp_path / "transformers-5.0.0-py3-none-any.whl").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / ".fetch-interrupted").mkdir()  # an earlier fetch's, stopped mid-way: .whl/ travels whole
    (tmp_path / ".fetch-interrupted" / "peft-0.1-py3-none-any.whl").write_bytes(b"half")
    downloads = []
    monkeypatch.setattr(gpu_check_env.subprocess, "run", lambda argv: downloads.append(Path(argv[argv.index("-d") + 1]))
                        or subprocess.CompletedProcess(argv, 0))
    assert gpu_check.main(["fetch-wheels", "--dest", str(tmp_path / "whl")]) == 0
    # downloaded inside dest (.whl/, git-ignored), not beside it: the repository's root travels with the tree
    assert downloads[0].parent == tmp_path / "whl" and downloads[0].name.startswith(".fetch-")
    assert gpu_check.main(["fetch-wheels", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "whl"]


def _parent_of_a_sleeper(pid_file: Path, said: str = "") -> list[str]:
    """A command that starts a subprocess of its own (its pid written to `pid_file`), says `said` on stderr, and
    waits a minute."""
    say = f"print({said!r}, file=sys.stderr, flush=True); " if said else ""
    return [sys.executable, "-c", "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
            f"'import time; time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(child.pid)); {say}"
            "time.sleep(60)"]


def _gone(pid: int, what: str) -> None:
    """Within 5 s, no process `pid` (the command's own subprocess) is left."""
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the command's own subprocess {pid} outlived {what}")


def test_an_interrupted_check_takes_the_running_command_s_process_group_with_it(tmp_path):
    """The command runs in a session of its own (so a timeout can kill its group): a Ctrl-C of the check no longer
    reached it, and an interrupted gpu-check left pytest or a bench holding the GPU."""
    import signal

    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
    pid_file = tmp_path / "child.pid"

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            check.run("hangs", _parent_of_a_sleeper(pid_file), 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        check.log.close()
    _gone(int(pid_file.read_text()), "the interrupted check")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("phase", ["step", "e2e kill"])
def test_a_check_killed_with_sigkill_takes_its_running_command_with_it(tmp_path, phase):
    """A SIGKILL of the check (the device call's hard limit) runs none of its cleanup: a step's command, in a session
    of its own, and e2e's train before its kill, went on running, and a rerun on the warm machine shared the GPU with
    a leftover 7B bench. The command now dies with the check."""
    import signal

    pid_file = tmp_path / "command.pid"
    command = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    run = ("gpu_check_e2e.kill_and_resume(check, [], lambda: 60)" if phase == "e2e kill" else
           "check.run('bench', [sys.executable, '-c', gpu_check_e2e.DETERMINISTIC], 40)")
    script = f"""import sys, types
sys.path.insert(0, {str(ROOT / "scripts")!r})
sys.modules["llm_srt.train.checkpoint"] = types.SimpleNamespace(step_name=str)  # not torch's import time
import gpu_check_e2e
import gpu_check_runner
gpu_check_e2e.DETERMINISTIC = {command!r}  # what e2e's train runs: a stand-in
check = gpu_check_runner.Check(gpu_check_runner.Path({str(tmp_path)!r}), gpu_check_runner.Path({str(tmp_path)!r}),
                               "cpu", "auto", 60)
{run}
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    pid = None
    try:
        for _ in range(100):
            if pid_file.is_file() and pid_file.read_text().strip():
                pid = int(pid_file.read_text())
                break
            time.sleep(0.05)
        assert pid is not None, "the command did not start"
        os.kill(proc.pid, signal.SIGKILL)  # the check alone, as a hard limit kills what it started
        proc.wait(timeout=10)
        for _ in range(20):
            if not _running(pid):
                return
            time.sleep(0.1)
        pytest.fail(f"the check's command {pid} outlived the check's SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid is not None and _running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_command_whose_check_died_before_it_started_does_not_run(tmp_path, monkeypatch):
    """The signal is asked for in the command's process before it runs: a check that died before then sends none,
    and the command, seeing another parent than the check, exits instead of running unguarded."""
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: 1)  # the check as seen from a command started after it died: not its parent
        guard = gpu_check_runner.die_with_check()
    ran = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-c", f"open({str(ran)!r}, 'w')"], preexec_fn=guard, timeout=30)
    assert done.returncode == 137 and not ran.exists()


def _running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by whoever took it over, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_module_found_but_not_importable_fails_the_environment_with_its_reason(tmp_path, monkeypatch):
    """The environment step looked for each module without importing it: a wheel built for another Python, or one
    whose shared library is missing, passed, and every step that imported it failed later, having spent its time."""
    import importlib
    import types

    real = importlib.import_module

    def import_module(name, *a, **k):  # peft and fastapi, imported here first, pass package=
        if name == "soxr":
            raise ImportError("libsoxr.so.0: cannot open shared object file")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", import_module)
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cpu", asked="cpu", out=tmp_path))
    assert env["ok"] is False and env["error"] == (
        "cannot import soxr (ImportError: libsoxr.so.0: cannot open shared object file): carry .whl/ built for this "
        "machine's Python (make fetch-wheels here first) or install them")
    assert gpu_check_env.unimportable("json") is None and gpu_check_env.unimportable("no_such_module_here") == "missing"

    class Refuse:  # a finder that refuses by raising (the reviewer's bare-machine simulation): not a broken check
        def find_spec(self, name, path=None, target=None):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    assert gpu_check_env.unimportable("no_such_module_here") == "missing"


# ---- what a check stopped from outside, or cut short, still leaves ---------------------------------------------------
def test_a_command_s_output_reaches_the_log_while_it_runs(tmp_path):
    """The log was written after each command ended: a check stopped from outside (the device machine's call ending)
    left nothing of what the running command had said."""
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
    code = ("import pathlib, time; said = 'first' + ' line'; print(said, flush=True); time.sleep(1.5); "  # the log's
            f"print('seen' if said in pathlib.Path({str(tmp_path / 'gpu-check.log')!r}).read_text() "  # header
            "else 'not in the log yet')")  # holds this code, not the words it prints
    done = check.run("says", [sys.executable, "-c", code], 30)
    check.log.close()
    assert done.returncode == 0 and done.stdout.splitlines() == ["first line", "seen"]


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_check_killed_mid_step_leaves_a_report_of_the_steps_it_finished(tmp_path, signal_name):
    """report.json and report.md were written once, at the end: a check killed mid-way (its machine's time spent)
    left none. They are rewritten as each step starts and ends, marked unfinished until the last; a SIGTERM is
    said in them too."""
    import signal

    script = f"""import sys, time
sys.path.insert(0, {str(ROOT / "scripts")!r})
import gpu_check
gpu_check.cuda_tests_step = lambda check, paths: {{"ok": True, "tests": 3, "passed": 3, "failures": 0, "errors": 0,
                                                  "skipped": 0}}
gpu_check.e2e_step = lambda check: time.sleep(60)
sys.exit(gpu_check.main(["run", "--out", {str(tmp_path)!r}, "--device", "cpu", "--steps", "cuda-tests,e2e,bench"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        for _ in range(300):
            report = tmp_path / "report.json"
            md = tmp_path / "report.md"  # written after report.json: a kill between the two left the older one
            if report.is_file() and json.loads(report.read_text()).get("running") == "e2e" and md.is_file() \
                    and "step e2e" in md.read_text():
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(getattr(signal, signal_name))
        proc.wait(timeout=30)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(s["step"], s["ok"]) for s in report["steps"]] == [("cuda-tests", True)]
    assert report.get("stopped") == ("SystemExit: stopped by signal 15" if signal_name == "SIGTERM" else None)
    assert report["running"] == "e2e" and report["not_reached"] == ["bench-compiled-tiny", "bench-tiny"]
    assert report["finished"] is False
    assert report["outcome"] == "incomplete" and not report["ok"]
    md = (tmp_path / "report.md").read_text()
    assert "**Not finished**" in md and "step e2e" in md and "| cuda-tests | ok |" in md


def test_a_bench_stopped_before_its_end_reports_the_rows_it_measured(tmp_path, monkeypatch):
    """bench wrote --json-out only at its end: a 7B bench cut at its limit after minutes of rows reported none. Now
    bench rewrites it after each row, search and training row (`finished` false until the end), and a stopped
    bench's step lists the rows that file holds; one stopped before its first row, none."""
    from llm_srt.bench import paper

    decode = [{"system": "llm-srt", "beam": 1, "batch_size": 1, "compiled": True}]
    search = {"llm-srt": {"probes": [], "largest_fit": None}}
    train = [{"activation_checkpointing": False, "s_per_step": 0.5}]
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)
    written = [paper.so_far({"shape": "qwen2.5-7b"}, decode, search, train, 99.0)]  # what bench had written

    def stopped(name, argv, timeout, cwd=None, reserve=0.0):
        assert argv[1:4] == ["-m", "llm_srt.cli", "bench"] and "--compiled-only" in argv  # the plain CLI
        if written:
            Path(argv[argv.index("--json-out") + 1]).write_text(json.dumps(written[0]))
        check.failed = True
        return gpu_check_runner.Done(argv, 124, "", "[bench] llm-srt: greedy compiled batch 1\n"
                              "[bench] llm-srt: greedy compiled batch 64\ntimed out after 240 s")

    monkeypatch.setattr(check, "run", stopped)
    result = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    assert result["ok"] is False
    assert result["rows"] == [{"decode": decode[0]}, {"largest_batch": search}, {"train": train[0]}]
    assert result["error"] == ("bench exit 124: timed out after 240 s; it was at: llm-srt: greedy compiled batch 64; "
                               "3 measured before it stopped (report.json's rows)")
    assert json.dumps({"decode": decode[0]}) in (tmp_path / "report.md").read_text()
    assert not (tmp_path / gpu_check_bench.RUNNING_BENCH).exists()  # its rows in report.json: not left in OUT too
    written.clear()  # stopped before its first row: no file
    result = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    check.log.close()
    assert result["ok"] is False and result["rows"] == [] and "0 measured before it stopped" in result["error"]


def _bench_result(dtype="bfloat16", reserved=512.0, oom=()) -> dict:
    """A finished paper-shape bench's result on a GPU: compiled rows at batch 1 and 64, a greedy row, the three
    training rows; those named in `oom` ("compiled 64", "ckpt") out of memory."""
    def decode(batch, compiled):
        if f"compiled {batch}" in oom and compiled:
            return {"system": "llm-srt", "batch_size": batch, "compiled": True, "out_of_memory": True}
        return {"system": "llm-srt", "batch_size": batch, "compiled": compiled, "peak_mib": 300.0,
                "reserved_mib": reserved, "memory": "gpu", "out_of_memory": False, "cudagraph_skips": 0}

    def train(ckpt, block):
        if ckpt and "ckpt" in oom:
            return {"activation_checkpointing": True, "head_block_logits": block, "out_of_memory": True}
        return {"activation_checkpointing": ckpt, "layers_recomputed": 28 * ckpt, "head_block_logits": block,
                "peak_mib": 9000.0, "reserved_mib": reserved and 12000.0, "memory": "gpu", "out_of_memory": False}

    return {"shape": "qwen2.5-7b", "dtype": dtype, "finished": True,
            "decode": [decode(1, True), decode(64, True), decode(8, False)],
            "train": [train(False, 1), train(True, 1), train(True, 8)]}


@pytest.mark.parametrize("case", ["proven", "compiled 64 out of memory", "checkpointing out of memory",
                                  "no reserved peak", "auto ran in float32"])
def test_a_finished_bench_that_did_not_measure_what_its_step_proves_fails_it(tmp_path, monkeypatch, case):
    """A bench ends `finished` with its rows out of memory recorded, not measured: the compiled 7B step passed with
    its batch-64 row out of memory, the eager one with the checkpointed training rows out of memory, a GPU's rows
    without their reserved peak (reserved_mib), and --dtype auto that ran in float32 on a bfloat16 GPU. The step
    now fails, naming what was not measured, its table and result kept."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    result = {"proven": _bench_result(), "compiled 64 out of memory": _bench_result(oom=("compiled 64",)),
              "checkpointing out of memory": _bench_result(oom=("ckpt",)), "no reserved peak": _bench_result(
                  reserved=None), "auto ran in float32": _bench_result(dtype="float32")}[case]
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)

    def bench(name, argv, timeout, cwd=None, reserve=0.0):
        Path(argv[argv.index("--json-out") + 1]).write_text(json.dumps(result))
        return gpu_check_runner.Done(argv, 0, "the table", "")

    monkeypatch.setattr(check, "run", bench)
    compiled = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    eager = check.step("bench-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", 24.0)
    check.log.close()
    errors = {"compiled": compiled.get("error"), "eager": eager.get("error")}
    assert compiled["result"] == eager["result"] == result and compiled["table"] == "the table"
    assert errors == {
        "proven": {"compiled": None, "eager": None},
        "compiled 64 out of memory": {"compiled": "no compiled row measured at batch 64 (out of memory, or not run: "
                                                  "the table says which)", "eager": None},
        "checkpointing out of memory": {"compiled": None, "eager": "no training row measured with activation "
                                        "checkpointing (out of memory, or not run: the table says which)"},
        "no reserved peak": {what: "6 of 6 rows measured on the GPU have no reserved_mib (torch's reserved peak, "
                             "which a card must hold)" for what in ("compiled", "eager")},
        "auto ran in float32": {what: "--dtype auto on a GPU with native bfloat16 ran in float32"
                                for what in ("compiled", "eager")}}[case]
    assert (compiled["ok"], eager["ok"]) == (errors["compiled"] is None, errors["eager"] is None)


STOPPED_CHECK = """import sys, types
sys.path.insert(0, {scripts!r})
import gpu_check
import gpu_check_e2e
import gpu_check_runner
ROWS = {rows!r}
BENCH = ("import json, sys, time; json.dump({{'decode': %r, 'finished': False}}, open(sys.argv[1], 'w')); "
         "time.sleep(60)" % ROWS)  # the bench: three rows into --json-out, then long at the fourth
SLEEP = "import time; time.sleep(60)"


def cli(self, name, verb, *args, timeout, **run_args):  # the CLI's commands, each a stand-in
    if verb == "bench":
        return self.run(name, [sys.executable, "-c", BENCH, args[args.index("--json-out") + 1]], timeout, **run_args)
    if verb == "curriculum":
        final = self.work / "runs" / "srt" / "final"
        final.mkdir(parents=True)
        (final / "config.json").write_text("{{}}")
        return gpu_check_runner.Done([], 0, "", "")
    return self.run(name, [sys.executable, "-c", SLEEP], timeout, **run_args)  # translate: long


gpu_check_runner.Check.cli = cli
sys.modules["llm_srt.model"] = types.SimpleNamespace(presets=types.SimpleNamespace(write_folders=lambda *a, **k: None))
gpu_check_e2e.write_corpus = lambda root: {{"test": root / "test.jsonl"}}
gpu_check_e2e.train_overrides = lambda *a: []
gpu_check_e2e.kill_and_resume = lambda check, common, limit: (gpu_check_runner.Done([], 0, "", ""), {{
    "kill_resume": True, "resume_losses": True, "resume_state": True}}, {{"resume_steps_compared": 9,
    "resume_worst_relative": 0.0, "resume_tolerance": 1e-6, "resume_loss_change": 3e-3}})
sys.exit(gpu_check.main(["run", "--out", {out!r}, "--device", "cpu", "--steps", {steps!r}, "--shapes", "tiny"]))
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("steps", ["bench", "e2e"])
def test_a_check_stopped_mid_step_leaves_what_that_step_had_finished(tmp_path, steps, signal_name):
    """A check stopped from outside (SIGTERM, or the device call's kill at its limit) lost what its running step had
    done: the bench's --json-out was in the check's temporary folder, deleted as it unwound (report.json: "running
    bench-tiny", no rows), and e2e's parts were kept only when the step returned (SIGTERM during translate, after the
    curriculum and the kill and resume: steps []). Now the running bench writes OUT/bench-running.json (in the
    report too, on a SIGTERM), and e2e puts each part in the report as it is judged: a SIGKILL runs nothing after."""
    import signal

    rows = [{"system": "llm-srt", "beam": 1, "batch_size": b, "compiled": True} for b in (1, 2, 4)]
    script = STOPPED_CHECK.format(scripts=str(ROOT / "scripts"), rows=rows, out=str(tmp_path), steps=steps)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL)
    report, running = tmp_path / "report.json", tmp_path / gpu_check_bench.RUNNING_BENCH

    def ready() -> bool:  # the bench at its fourth row; e2e in translate, three parts judged
        with contextlib.suppress(OSError, ValueError):
            if steps == "bench":
                return len(json.loads(running.read_text())["decode"]) == 3
            return "e2e translate" in (tmp_path / "gpu-check.log").read_text() and len(
                json.loads(report.read_text()).get("partial", {}).get("parts", {})) == 4
        return False

    try:  # (generous limits: on a loaded 2-core machine, 30 s did not always see the check start and stop)
        for _ in range(1200):
            if ready() or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(getattr(signal, signal_name))
        proc.wait(timeout=120)
    written = json.loads(report.read_text())
    assert written["finished"] is False and written["running"] == ("bench-compiled-tiny" if steps == "bench" else
                                                                    "e2e"), written
    md = (tmp_path / "report.md").read_text()
    if steps == "bench":  # the rows in OUT, the report naming the file (a SIGTERM: the rows in it too)
        assert json.loads(running.read_text())["decode"] == rows
        assert written["partial"] == {"rows_file": gpu_check_bench.RUNNING_BENCH, "rows": [
            {"decode": r} for r in rows] if signal_name == "SIGTERM" else []}
        assert "## bench-compiled-tiny (running: " in md and "bench-running.json beside it" in md
        assert (json.dumps({"decode": rows[2]}) in md) is (signal_name == "SIGTERM")
    else:
        assert written["partial"]["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True,
                                               "resume_state": True} and written["partial"]["resume_steps_compared"]
        assert "Step e2e had finished: curriculum ok, kill_resume ok, resume_losses ok, resume_state ok (resumed " in md
        assert not running.exists()


def test_a_missing_metrics_package_fails_e2e_s_evaluate_alone(tmp_path, monkeypatch):
    """The check asked each verb whether it took --device by importing it in its own process: evaluate's import
    needs jiwer, so a missing jiwer or whisper-normalizer failed the whole e2e step on a ModuleNotFoundError,
    discarding the curriculum and the kill and resume it had proven (README: only evaluate fails then). Both verbs
    take --device now; the check imports neither."""
    import types

    monkeypatch.setitem(sys.modules, "jiwer", None)  # `import jiwer` raises, as where it is not installed
    for name in [m for m in sys.modules if m == "llm_srt.evaluate" or m.startswith("llm_srt.evaluate.")]:
        monkeypatch.delitem(sys.modules, name)
    import llm_srt

    monkeypatch.delattr(llm_srt, "evaluate", raising=False)
    from llm_srt.model import presets

    monkeypatch.setattr(presets, "write_folders", lambda *a, **k: types.SimpleNamespace(encoder="e", llm="l"))
    monkeypatch.setattr(gpu_check_e2e, "write_corpus", lambda root: {s: root / f"{s}.jsonl" for s in ("train", "dev",
                                                                                                    "test")})
    monkeypatch.setattr(gpu_check_e2e, "train_overrides", lambda *a: [])
    monkeypatch.setattr(gpu_check_e2e, "kill_and_resume", lambda check, common, limit: (
        gpu_check_runner.Done([], 0, "", ""), {
        "kill_resume": True, "resume_losses": True, "resume_state": True}, {}))
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
    argvs = {}

    def cli(name, verb, *args, timeout, **run_args):  # each command as it would go here without jiwer
        argvs[verb] = args
        if verb == "curriculum":
            (tmp_path / "runs" / "srt" / "final").mkdir(parents=True)
            (tmp_path / "runs" / "srt" / "final" / "config.json").write_text("{}")
        if verb == "evaluate":
            return gpu_check_runner.Done([], 1, "", "ModuleNotFoundError: No module named 'jiwer'")
        return gpu_check_runner.Done([], 0, '[{"error": null}]' if verb == "translate" else "", "")

    monkeypatch.setattr(check, "cli", cli)
    result = check.step("e2e", gpu_check_e2e.e2e_step, check)
    check.log.close()
    assert result["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True, "resume_state": True,
                               "translate": True, "evaluate": False}, result
    assert result["ok"] is False and result["error"] == "failed: evaluate"
    for verb in ("translate", "evaluate"):
        assert argvs[verb][-4:] == ("--device", "cpu", "--dtype", "float32")


def _pytest_check(tmp_path, device: str, tests: str, **limits):
    """cuda_tests_step over one file of `tests` on `device`, within `limits` (STEP_LIMITS' keys)."""
    test = tmp_path / "test_these.py"
    test.write_text("import time\n\nimport pytest\n\n" + tests)
    check = gpu_check_runner.Check(tmp_path, tmp_path, device, "auto", budget_s=120)
    with pytest.MonkeyPatch.context() as m:
        for key, seconds in limits.items():
            m.setitem(gpu_check_runner.STEP_LIMITS, key, seconds)
        result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, [str(test)])
    check.log.close()
    return result


def test_a_pytest_stopped_at_its_limit_still_reports_the_tests_that_passed(tmp_path):
    """pytest writes its junit XML at its session's end: one stopped at the step's limit reported 0 passed. With
    -v each outcome is in the log as the test ends, and the step counts from there, naming the test that hung."""
    result = _pytest_check(tmp_path, "cpu", "pytestmark = pytest.mark.cuda\n\n\ndef test_a():\n    pass\n\n\n"
                           "def test_b():\n    pass\n\n\ndef test_hangs():\n    time.sleep(60)\n",
                           **{"cuda-tests": 12})
    assert result["ok"] is False and result["passed"] == 2 and result["tests"] == 2, result
    assert result["running_when_stopped"].endswith("test_these.py::test_hangs")
    assert "pytest exit 124; stopped while" in result["error"] and "gpu-check.log" in result["counted_from"]
    assert "2 passed, 0 failed, 0 errors, 0 skipped of 2, counted from gpu-check.log" in (
        tmp_path / "report.md").read_text()


def test_the_cuda_tests_get_a_per_test_timeout_where_pytest_timeout_is_installed(tmp_path, monkeypatch):
    real = gpu_check_pytest.importlib.util.find_spec
    for present in (True, False):
        monkeypatch.setattr(gpu_check_pytest.importlib.util, "find_spec",
                            lambda name, *a: (present or None) if name == "pytest_timeout" else real(name, *a))
        argv = gpu_check_pytest.pytest_argv(["tests/test_device.py"], tmp_path / "x.xml")
        assert "-v" in argv and argv[-1] == "tests/test_device.py"
        if present:
            assert argv[-3:-1] == ["--timeout", str(gpu_check_pytest.TEST_TIMEOUT_S)]
        else:
            assert "--timeout" not in argv


def test_a_cuda_test_that_skips_on_a_gpu_fails_the_step_with_its_reason(tmp_path):
    """On a GPU a cuda test has no reason to skip (each needs only torch and a GPU): one skipped beside others that
    passed let the step pass, proving nothing of it. Now it fails the step, naming the test and the reason."""
    tests = ("pytestmark = pytest.mark.cuda\n\n\ndef test_runs():\n    pass\n\n\n"
             "def test_skips():\n    pytest.skip('needs a CUDA GPU')\n")
    assert _pytest_check(tmp_path, "cpu", tests)["ok"] is True  # on the CPU they skip, as they should
    result = _pytest_check(tmp_path, "cuda", tests)
    assert result["ok"] is False and result["passed"] == 1 and result["skipped"] == 1, result
    assert result["error"].startswith("1 cuda test(s) skipped on the GPU: ") and "needs a CUDA GPU" in result["error"]
    assert "test_skips" in result["skips"][0] and "test_skips" in (tmp_path / "report.md").read_text()


def test_a_serve_conftest_without_fastapi_s_test_client_leaves_out_tests_serve_alone(monkeypatch):
    """tests/serve's conftest imports fastapi's TestClient, whose starlette.testclient raises a RuntimeError without
    httpx (which the image's huggingface-hub brings in some releases only): pytest stopped at that conftest (exit
    4) and all 22 cuda tests went with it. Env now names it, and cuda-tests leaves tests/serve out."""
    import importlib

    real = importlib.import_module

    def import_module(name, *a, **k):
        if name == "starlette.testclient":
            raise RuntimeError("The starlette.testclient module requires the httpx package to be installed.\n")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", import_module)
    assert gpu_check_env.unimportable("starlette.testclient") == (
        "RuntimeError: The starlette.testclient module requires the httpx package to be installed.")
    assert gpu_check_pytest.left_out_folders() == {"tests/serve": "starlette.testclient unimportable"}


@pytest.mark.parametrize("broken", ["conftest", "module"])
def test_a_test_folder_pytest_cannot_collect_costs_the_step_only_its_own_tests(tmp_path, broken):
    """An import error that env did not foresee, in one folder's conftest (pytest exit 4) or one test module (exit
    2), stopped pytest before any test: "pytest exit 4", 0 of 0. The step now runs pytest once more without what
    it could not collect, and fails, naming it: the other cuda tests still report."""
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "test_s.py").write_text("import pytest\n\n\n@pytest.mark.cuda\ndef test_s():\n    pass\n")
    boom = "raise RuntimeError('The starlette.testclient module requires the httpx package')\n"
    if broken == "conftest":
        (tmp_path / "serve" / "conftest.py").write_text(boom)
    else:
        (tmp_path / "serve" / "test_s.py").write_text(boom)
    (tmp_path / "test_ok.py").write_text("import pytest\n\npytestmark = pytest.mark.cuda\n\n\ndef test_a():\n    pass\n"
                                         "\n\ndef test_b():\n    pass\n")
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "auto", budget_s=120)
    paths = [str(tmp_path / "test_ok.py"), str(tmp_path / "serve" / "test_s.py")]
    result = check.step("cuda-tests", gpu_check_pytest.cuda_tests_step, check, paths)
    check.log.close()
    assert [c["rc"] for c in result["commands"]] == [4 if broken == "conftest" else 2, 0], result
    assert result["ok"] is False and result["passed"] == 2 and result["files"] == paths[:1], result
    why = "RuntimeError: The starlette.testclient module requires the httpx package"
    assert result["uncollected"] == {paths[1]: f"{tmp_path / 'serve' / 'conftest.py'}: {why}" if broken == "conftest"
                                     else why}
    assert result["error"] == (f"pytest could not collect {paths[1]} ({result['uncollected'][paths[1]]}); the others "
                               "ran without them")


def _env_step_with_wheels(tmp_path, wheels, out) -> subprocess.CompletedProcess:
    """gpu-check.sh's env step into `out`, installing the wheels of folder `wheels` under tmp_path/site."""
    python = tmp_path / "python3.12"  # says it is CPython 3.12 (the wheels' Python), else this Python
    python.write_text(f'#!/bin/sh\ncase "$*" in *version_info*) exit 0;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ, GPU_PYTHON=str(python), USE_WHEELS="1", WHEEL_DIR=str(wheels),
               WHEEL_SITE=str(tmp_path / "site"))
    return subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(out), "cpu", "--steps", "env"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_failed_wheel_install_leaves_a_report_saying_why(tmp_path):
    """With `set -e`, a failed pip install of .whl/ ended gpu-check.sh before any report existed: the one GPU
    session's OUT held nothing. Now report.json and report.md say why, and the exit status is 1."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    out = tmp_path / "out"
    done = _env_step_with_wheels(tmp_path, wheels, out)
    report = json.loads((out / "report.json").read_text())
    assert done.returncode == 1 and report["outcome"] == "FAILED" and not report["ok"] and report["steps"] == []
    assert report["error"].startswith(f"pip install of {wheels}/*.whl into {tmp_path / 'site'} failed: ERROR: ")
    assert "broken" in report["error"] and "**FAILED** before any step" in (out / "report.md").read_text()
    assert "broken" in (out / "pip-install.log").read_text()


def _wheel(folder: Path, name: str) -> Path:
    """A pure-Python wheel of one module `name` (name.py) that pip installs."""
    import zipfile

    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}.py": "ANSWER = 42\n", f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.mark.slow  # two whole env steps (29-50 s); its all-fail twin, a failed install's report, stays in make test
def test_one_bad_wheel_does_not_lose_the_others(tmp_path):
    """pip installs .whl/ as one batch: one bad wheel failed it, and the check ended before any step with none of
    the wheels installed. Now the rest are installed one by one and the check runs (its env step names what cannot
    be imported); only when none installs does it end before any step."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "gpu_check_good")
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    out = tmp_path / "out"
    done = _env_step_with_wheels(tmp_path, wheels, out)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # env FAILED, naming the wheel
    assert (tmp_path / "site" / "gpu_check_good.py").is_file()
    assert "not installed: broken-1.0-py3-none-any.whl (pip-install.log)" in done.stderr
    report = json.loads((out / "report.json").read_text())  # said in the report too, the check going on
    [step] = [s for s in report["steps"] if s["step"] == "env"]
    assert step["wheels_not_installed"] == ["broken-1.0-py3-none-any.whl"] and not step["fatal"]
    assert "not installed from .whl/ (pip-install.log): broken-1.0-py3-none-any.whl" in step["error"]
    (wheels / "broken-1.0-py3-none-any.whl").unlink()  # the same OUT again, every wheel installing: none named
    done = _env_step_with_wheels(tmp_path, wheels, out)
    assert done.returncode == 0 and json.loads((out / "report.json").read_text())["outcome"] == "passed", done.stderr


def test_the_log_times_each_command_and_the_step_lists_them(tmp_path):
    """The log said neither when a command started nor how long it took, and a step's seconds were its commands'
    sum: on the GPU session the time of a slow compilation or test could not be told from the rest."""
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)

    def two():
        check.run("first", [sys.executable, "-c", "import time; time.sleep(0.3)"], 30)
        check.run("second", [sys.executable, "-c", "raise SystemExit(3)"], 30)
        return {"ok": True}

    result = check.step("two", two)
    check.log.close()
    assert [(c["command"], c["rc"]) for c in result["commands"]] == [("first", 0), ("second", 3)]
    assert result["commands"][0]["seconds"] >= 0.3 and sum(c["seconds"] for c in result["commands"]) <= (
        result["seconds"] + 0.1)
    log = (tmp_path / "gpu-check.log").read_text()
    assert re.search(r"^===== \d\d:\d\d:\d\d UTC first: ", log, re.MULTILINE), log
    assert re.search(r"^----- rc 0 in \d+\.\d s$", log, re.MULTILINE) and re.search(
        r"^----- rc 3 in \d+\.\d s$", log, re.MULTILINE), log
    assert json.loads((tmp_path / "report.json").read_text())["steps"][0]["commands"] == result["commands"]


def test_the_default_plan_on_a_gpu_runs_the_least_proven_first_and_fits_its_budget():
    """The plan (cuda tests 200 s, e2e 240 s, 7B, compiled 7B and 3B benches at 240 s each) could not fit the
    budget, and the compiled 7B bench, never run, was the one it left out. Now the compiled rows come first among
    the benches, the 3B bench is left to --shapes, and the estimates fit the default budget."""
    args = gpu_check.argparse.Namespace(steps="env,cuda-tests,e2e,bench", shapes=None, tests="auto", memory_gib=24.0)
    names = [name for name, *_ in gpu_check.plan("cuda", args)]
    assert names == ["env", "cuda-tests", "e2e", "bench-compiled-qwen2.5-7b", "bench-qwen2.5-7b"]
    assert sum(gpu_check.ESTIMATE_S[n] for n in names) <= gpu_check.BUDGET_S <= 520  # 600 s call: ~45 s to spare
    # the CPU rehearsal runs the GPU plan's compiled bench command too (`--compiled-only`, never run elsewhere)
    assert [name for name, *_ in gpu_check.plan("cpu", args)] == ["env", "cuda-tests", "e2e", "bench-compiled-tiny",
                                                                  "bench-tiny"]
    args.shapes, args.steps = "qwen2.5-7b,qwen2.5-3b", "bench"
    assert [name for name, *_ in gpu_check.plan("cuda", args)] == ["bench-compiled-qwen2.5-7b", "bench-qwen2.5-7b",
                                                                   "bench-qwen2.5-3b"]


def test_a_slow_compiled_bench_leaves_the_eager_bench_its_start(tmp_path, monkeypatch):
    """The compiled 7B bench had the whole bench limit (240 s): one compiling to its end left less of the budget
    than MIN_BENCH_S, and the eager 7B bench (the Table 7 rows) was not run. The budget now stops the compiled rows
    while the eager bench can still start (its own start, MIN_BENCH_S, and STOP_S for the stopped command), and
    the compiled rows are not run where that leaves them under MIN_COMPILED_S."""
    monkeypatch.setattr(gpu_check, "MIN_BENCH_S", 2)  # the same rules in seconds, not minutes
    monkeypatch.setattr(gpu_check, "STOP_S", 1)
    monkeypatch.setattr(gpu_check_bench, "MIN_COMPILED_S", 0.5)
    args = gpu_check.argparse.Namespace(steps="bench", shapes="qwen2.5-7b", tests="auto", memory_gib=None)
    steps = gpu_check.plan("cuda", args)
    assert [name for name, *_ in steps] == ["bench-compiled-qwen2.5-7b", "bench-qwen2.5-7b"]
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=5)
    started = {}  # eager bench -> the seconds of the budget left as it started

    def cli(name, verb, *argv, timeout, **run_args):  # the compiled rows compile for ever; the eager bench ends
        if "--compiled-only" in argv:
            return check.run(name, ["sleep", "30"], timeout, **run_args)
        started[name] = check.deadline - time.monotonic()
        return gpu_check_runner.Done(argv, 0, "", "")

    monkeypatch.setattr(check, "cli", cli)
    results = [check.step(name, fn, check, *fn_args, least=least) for name, fn, fn_args, least in steps]
    check.log.close()
    assert results[0]["ok"] is None and "cut short by the check's time budget" in results[0]["error"]
    assert started and started["bench qwen2.5-7b"] >= gpu_check.MIN_BENCH_S, results  # the eager bench ran
    # too little left for both: the compiled rows are not run, saying why, and the eager bench has the budget
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=3.2)
    monkeypatch.setattr(check, "cli", cli)
    started.clear()
    results = [check.step(name, fn, check, *fn_args, least=least) for name, fn, fn_args, least in steps]
    check.log.close()
    assert results[0]["ok"] is None and results[0]["error"].startswith("not run:"), results[0]
    assert "kept for the bench after it" in results[0]["error"] and "bench qwen2.5-7b" in started
    assert [c["command"] for c in results[0].get("commands", [])] == []  # nothing was started


def _a_gpu(monkeypatch) -> None:
    """torch sees one CUDA GPU (for the env step and the plan; no step here touches it)."""
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=2**30))


def test_a_module_the_gpu_image_should_bring_fails_the_environment_and_what_needs_it(tmp_path, monkeypatch):
    """pytest, pyyaml and tensorboard come from the GPU image, not .whl/; env checked only the wheels' modules, so on
    an image without tensorboard env passed and e2e then failed every command on its import, its report blaming the
    product ("the killed run sealed fewer than two checkpoints"). Then any of the three stopped the check at env,
    though only cuda-tests needs pytest and only e2e tensorboard: a GPU session lost its benches (the compiled 7B
    rows have never run anywhere) for want of a TensorBoard log. Now env fails, naming the module, and stops the
    check only for pyyaml (every step's configs, the bench's too); the step that needs another fails, not run."""
    import types

    real = gpu_check_env.unimportable
    gone = {"tensorboard"}
    monkeypatch.setattr(gpu_check_env, "unimportable", lambda name: "missing" if name in gone else real(name))
    monkeypatch.setattr(gpu_check_runner, "unimportable", gpu_check_env.unimportable)  # Check.step's, for e2e
    _a_gpu(monkeypatch)
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and not env["fatal"]
    assert env["error"] == ("the GPU image lacks tensorboard (missing), which .whl/ does not bring (GPU_WHEELS counts "
                            "on the image for it): install it, or add its wheels to GPU_WHEELS; the check goes on "
                            "without e2e")
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    monkeypatch.setattr(gpu_check, "bench_step", lambda check, shape, memory, compiled=None, leave=0.0: ran.append(
        f"bench {shape}{' compiled' if compiled else ''}") or {"ok": True})
    assert gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda"]) == 1
    assert ran == ["cuda-tests", "bench qwen2.5-7b compiled", "bench qwen2.5-7b"]
    steps = {s["step"]: s for s in json.loads((tmp_path / "report.json").read_text())["steps"]}
    assert [steps[name]["ok"] for name in ("env", "cuda-tests", "e2e", "bench-compiled-qwen2.5-7b",
                                           "bench-qwen2.5-7b")] == [False, True, False, True, True]
    assert steps["e2e"]["error"].startswith("not run: needs tensorboard (missing), which the GPU image lacks")
    assert "| e2e | FAILED |" in (tmp_path / "report.md").read_text()
    gone = {"yaml", "pytest"}  # every step's configs: the check stops at env, naming both
    env = gpu_check_env.env_step(types.SimpleNamespace(device="cuda", asked="cuda", out=tmp_path))
    assert env["ok"] is False and env["fatal"] and "goes on" not in env["error"]
    assert env["error"].startswith("the GPU image lacks yaml (missing); pytest (missing), which .whl/ does not bring")
    ran.clear()
    assert gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda"]) == 1 and ran == []


@pytest.mark.parametrize("option, said", [
    (["--steps", "env,cuda-test"], "--steps env,cuda-test: no step 'cuda-test' (the steps: env,cuda-tests,e2e,bench)"),
    (["--steps", "env,e2e", "--device", "gpu"], "--device 'gpu': give auto, cpu, cuda or cuda:N"),
    (["--steps", "env,e2e", "--dtype", "bf32"], "--dtype 'bf32': give auto, float32 or bfloat16")])
def test_an_option_the_check_cannot_run_is_refused_in_its_report_before_any_step(tmp_path, monkeypatch, option,
                                                                                 said):
    """`make gpu-check GPU_CHECK_ARGS="--steps env,cuda-test"` left the unknown step out of the plan without a word
    and reported "passed" for env alone; a --device or --dtype no command takes failed every step after spending
    the GPU session's time. Each is now the report's one error, exit status 1, with no step run."""
    ran = []
    monkeypatch.setattr(gpu_check, "env_step", lambda check: ran.append("env") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda check: ran.append("e2e") or {"ok": True})
    assert gpu_check.main(["run", "--out", str(tmp_path), *option]) == 1 and ran == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "FAILED" and report["finished"] and report["steps"] == []
    assert report["error"] == f"{said}; nothing was run" and said in (tmp_path / "report.md").read_text()
    assert gpu_check.main(["run", "--out", str(tmp_path), "--steps", "env,e2e", "--device", "cpu"]) == 0
    assert ran == ["env", "e2e"]


def test_a_relative_out_is_the_callers_folder_not_the_repository_s(tmp_path):
    """scripts/gpu-check.sh changed to the repository's root before reading OUT: `gpu-check.sh out` run from another
    folder wrote its report into the repository's out/, and the caller's out/ stayed empty."""
    env = dict(os.environ, GPU_PYTHON=sys.executable, USE_WHEELS="0")
    done = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "gpu-check-out", "cpu", "--steps", "no-such-step"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "no step 'no-such-step'" in json.loads((tmp_path / "gpu-check-out" / "report.json").read_text())["error"]
    assert not (ROOT / "gpu-check-out").exists()
