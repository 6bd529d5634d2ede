"""`make gpu-check`'s CPU path: the same steps as on a GPU (cuda tests, tiny curriculum + kill/resume + translate +
evaluate through the CLI, the paper-shape bench at tiny size), with its report; its plan and budget, and a check
stopped, killed or refused. Each step's own tests: tests/test_gpu_check_{env,pytest,e2e,bench,runner}.py."""

import contextlib
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
import gpu_check_bench  # noqa: E402
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


def test_a_check_a_sigterm_stops_exits_128_plus_15_not_failed(tmp_path):
    """A SIGTERM (the device call's end) ended the check through SystemExit("stopped by signal 15"): exit 1, which
    README and make gpu-check read as FAILED, while its report said it was stopped, not failed. It now exits 143
    (128 + 15: a shell's status for a process SIGTERM ended, as train's and serve's), which make gpu-check reads as
    stopped without an outcome, and says so in one line; its report is a stopped check's, as before."""
    import signal

    script = f"""import sys, time
sys.path.insert(0, {str(ROOT / "scripts")!r})
import gpu_check
gpu_check.e2e_step = lambda check: time.sleep(60)
sys.exit(gpu_check.main(["run", "--out", {str(tmp_path)!r}, "--device", "cpu", "--steps", "e2e"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            report = tmp_path / "report.json"
            if report.is_file() and json.loads(report.read_text()).get("running") == "e2e":
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == (f"gpu-check: stopped by signal 15 (exit 143); {tmp_path / 'report.md'} "
                                            "says what it had finished")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stopped"] == "SystemExit: stopped by signal 15" and report["finished"] is False


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
