"""`make gpu-check`'s CPU path: the same steps as on a GPU (cuda tests, tiny curriculum + kill/resume + translate +
evaluate through the CLI, the paper-shape bench at tiny size), with its report; and the wheel list it needs."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


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
    assert list(steps) == ["env", "cuda-tests", "e2e", "bench-tiny"] and report["ok"]
    assert steps["cuda-tests"]["tests"] >= 1 and steps["cuda-tests"]["skipped"] == steps["cuda-tests"]["tests"]
    assert steps["e2e"]["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True,
                                     "translate": True, "evaluate": True}
    assert steps["e2e"]["resume_steps_compared"] >= 2 and steps["e2e"]["resume_worst_relative"] == 0.0  # float32
    bench = steps["bench-tiny"]["result"]
    assert bench["shape"] == "tiny" and bench["decode"] and len(bench["train"]) == 3  # ckpt off, on, wide head blocks
    md = (tmp_path / "report.md").read_text()
    assert "**passed**" in md and "| e2e | ok |" in md and "LLM-SRT (Q-Former)" in md
    log = (tmp_path / "gpu-check.log").read_text()
    assert "resumed from" in log and "killed: True" in log


def test_a_failed_step_fails_the_check(tmp_path):
    done = run_check(tmp_path, "cuda", "--steps", "env")  # asks for CUDA where torch sees none
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 1 and not report["ok"] and "no CUDA GPU" in report["steps"][0]["error"]
    assert "**FAILED**" in (tmp_path / "report.md").read_text()


def test_a_step_the_budget_leaves_undone_is_neither_passed_nor_failed(tmp_path, monkeypatch):
    """A step not started, or stopped by the check's budget before its own limit, is reported as not done and does
    not fail the check; one that runs past its own limit still fails it."""
    monkeypatch.setattr(gpu_check, "MIN_STEP_S", 1)
    check = gpu_check.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=3)
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]

    def command(limit):
        done = check.run("sleep", sleep, limit)
        return {"ok": done.returncode == 0, "error": done.stderr}

    cut = check.step("cut", command, 60)  # the budget (3 s) stops it before its own limit
    assert cut["ok"] is None and "cut short by the check's time budget" in cut["error"]
    assert check.step("late", command, 60)["ok"] is None  # the budget is spent: not started
    assert gpu_check.write_report(check, time.time()) == "FAILED"  # nothing passed: not a passed check
    check.steps.append({"step": "env", "ok": True, "seconds": 0.1})
    assert gpu_check.write_report(check, time.time()) == "incomplete"  # never "passed" with a step undone
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "incomplete" and not report["ok"] and report["not_proven_here"]
    md = (tmp_path / "report.md").read_text()
    assert "**incomplete** (2 steps not done for want of time)" in md and "Not proven by this check: several NCCL" in md
    check.steps = [s for s in check.steps if s["ok"]]
    assert gpu_check.write_report(check, time.time()) == "passed"
    check.steps[0]["other_versions"] = ["torch 2.11.0 (constraints.txt: 2.13.0)"]  # the image's torch, not the pin
    assert gpu_check.write_report(check, time.time()) == "passed"
    assert "this machine ran torch 2.11.0 (constraints.txt: 2.13.0)" in json.loads(
        (tmp_path / "report.json").read_text())["not_proven_here"][-1]
    assert "torch 2.11.0 (constraints.txt: 2.13.0)" in (tmp_path / "report.md").read_text().split("Not proven")[1]
    check.steps[0]["other_versions"] = ["peft 0.20.0 (constraints.txt: 0.21.2)"]  # torch pinned: no torch note
    gpu_check.write_report(check, time.time())
    assert "FSDP2" not in json.loads((tmp_path / "report.json").read_text())["not_proven_here"][-1]
    check.deadline = time.monotonic() + 60
    assert check.step("own", command, 1)["ok"] is False  # its own limit: a failure
    assert gpu_check.write_report(check, time.time()) == "FAILED"

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
    check = gpu_check.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)

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
    assert gpu_check.write_report(check, time.time()) == "FAILED"
    check.log.close()


def test_e2e_parts_are_failed_on_their_own_or_not_done_when_the_budget_cut_their_command(tmp_path, monkeypatch):
    """e2e judges each part from its command and what it wrote: a wrong result from a command that exited 0 (no
    final/config.json, an item error from translate, the resumed losses) fails the step; a part whose command the
    budget cut is not done, and only a step with nothing else wrong is "not done (budget)"."""
    import types

    from llm_srt.model import presets

    monkeypatch.setattr(presets, "write_folders", lambda *a, **k: types.SimpleNamespace(encoder="e", llm="l"))
    monkeypatch.setattr(gpu_check, "write_corpus", lambda root: {s: root / f"{s}.jsonl" for s in ("train", "dev",
                                                                                                    "test")})

    def scenario(**how):  # command -> "ok", "wrong" (exit 0, a wrong result) or "cut" (by the budget)
        check = gpu_check.Check(tmp_path, tmp_path / how["name"], "cpu", "float32", budget_s=60)
        run = check.run

        def fake(name, argv, timeout, cwd=gpu_check.ROOT):
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
                          "resume_worst_relative": None, "resume_steps_compared": 2}

        check.work.mkdir()
        monkeypatch.setattr(check, "run", fake)
        monkeypatch.setattr(gpu_check, "kill_and_resume", kill_and_resume)
        result = check.step("e2e", gpu_check.e2e_step, check)
        check.steps.insert(0, {"step": "env", "ok": True, "seconds": 0.1})
        outcome = gpu_check.write_report(check, time.time())
        check.log.close()
        return result, outcome, (tmp_path / "report.md").read_text()

    result, outcome, md = scenario(name="own", curriculum="wrong", resume="wrong", translate="wrong", evaluate="cut")
    assert result["parts"] == {"curriculum": False, "kill_resume": True, "resume_losses": False, "translate": False,
                               "evaluate": None}
    assert result["ok"] is False and outcome == "FAILED"
    assert result["error"] == "failed: curriculum, resume_losses, translate; not done: evaluate"
    assert "translate FAILED, evaluate not done (budget)" in md
    result, outcome, md = scenario(name="cut", curriculum="ok", resume="ok", translate="cut", evaluate="cut")
    assert result["parts"] == {"curriculum": True, "kill_resume": True, "resume_losses": True, "translate": None,
                               "evaluate": None}
    assert result["ok"] is None and outcome == "incomplete" and "not done: translate, evaluate" in result["error"]
    result, outcome, _ = scenario(name="fine", curriculum="ok", resume="ok", translate="ok", evaluate="ok")
    assert result["ok"] is True and outcome == "passed" and "error" not in result


def test_cuda_tests_that_all_skip_on_a_gpu_fail_the_step(tmp_path, monkeypatch):
    """On the CPU the cuda tests skip, as they should; on a GPU a step in which none of them ran (every one skipped,
    or none collected) is a failure, not a pass."""
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pytest.skip('no GPU here')\n")
    for device, ok in (("cpu", True), ("cuda", False)):
        check = gpu_check.Check(tmp_path, tmp_path, device, "auto", budget_s=120)
        result = gpu_check.cuda_tests_step(check, [str(test)])
        check.log.close()
        assert result["ok"] is ok and result["skipped"] == 1, result
    assert "no cuda test ran on the GPU (1 skipped of 1 collected)" in result["error"]


def test_cuda_tests_are_found_by_their_marker():
    files = gpu_check.cuda_test_files()
    assert "tests/test_device.py" in files and "tests/serve/test_serve_openai.py" not in files
    assert "tests/model/test_ctc.py" in files  # its cuda case is one parameter's (pytest.param(..., marks=))
    assert "tests/test_gpu_check.py" not in files  # names the marker in text only
    assert all(gpu_check.CUDA_MARK.search((ROOT / f).read_text()) for f in files)


def test_the_environment_step_names_the_gpu_the_check_runs_on(monkeypatch):
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
        env = gpu_check.env_step(types.SimpleNamespace(device=device))
        assert asked == [index, index] and env["gpu"] == f"GPU {index}" and env["gpu_memory_gib"] == index + 1
    # this machine's torch is the pinned release under a local build tag (2.13.0+cpu; +cu128 on a GPU): not "other"
    import importlib.metadata as md

    assert "+" in md.version("torch") or md.version("torch") == "2.13.0"
    assert not any(v.startswith("torch ") for v in env.get("other_versions", []))


def test_every_wheel_is_pinned_in_constraints():
    pins = gpu_check.pinned(gpu_check.GPU_WHEELS, ROOT / "constraints.txt")
    assert len(pins) == len(gpu_check.GPU_WHEELS) and all("==" in p for p in pins)
    assert "transformers==5.23.0" in pins  # the version the tests run with, not the GPU image's own
    with pytest.raises(SystemExit, match="no-such-package"):
        gpu_check.pinned(("no-such-package",), ROOT / "constraints.txt")


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
    check = gpu_check.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
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
    env = gpu_check.env_step(types.SimpleNamespace(device="cuda"))
    assert env["ok"] is False and env["error"].startswith("missing soxr: carry .whl/")
    ran = []
    monkeypatch.setattr(gpu_check, "cuda_tests_step", lambda *a: ran.append("cuda-tests") or {"ok": True})
    monkeypatch.setattr(gpu_check, "e2e_step", lambda *a: ran.append("e2e") or {"ok": True})
    rc = gpu_check.main(["run", "--out", str(tmp_path), "--device", "cuda", "--steps", "env,cuda-tests,e2e"])
    assert rc == 1 and ran == []


def test_fetching_wheels_again_clears_the_earlier_ones(tmp_path, monkeypatch):
    """Two versions of one package side by side (after a pin moved) made pip refuse the install on the GPU."""
    (tmp_path / "transformers-5.0.0-py3-none-any.whl").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda argv: subprocess.CompletedProcess(argv, 0))
    assert gpu_check.main(["fetch-wheels", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


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

    check = gpu_check.Check(tmp_path, tmp_path, "cpu", "float32", budget_s=60)
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


def test_a_module_found_but_not_importable_fails_the_environment_with_its_reason(monkeypatch):
    """The environment step looked for each module without importing it: a wheel built for another Python, or one
    whose shared library is missing, passed, and every step that imported it failed later, having spent its time."""
    import importlib
    import types

    real = importlib.import_module

    def import_module(name, *a):
        if name == "soxr":
            raise ImportError("libsoxr.so.0: cannot open shared object file")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", import_module)
    env = gpu_check.env_step(types.SimpleNamespace(device="cpu"))
    assert env["ok"] is False and env["error"] == (
        "cannot import soxr (ImportError: libsoxr.so.0: cannot open shared object file): carry .whl/ built for this "
        "machine's Python (make fetch-wheels here first) or install them")
    assert gpu_check.unimportable("json") is None and gpu_check.unimportable("no_such_module_here") == "missing"
