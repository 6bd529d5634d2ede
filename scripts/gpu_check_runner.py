"""How the GPU check (scripts/gpu_check.py) runs its steps and their commands: each command in a session of its
own, its output streamed into the log, stopped at its limit or the check's budget, and killed with the check."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gpu_check_env import ROOT, SRC, STEP_IMPORTS, unimportable
from gpu_check_report import verdict, write_report

MIN_STEP_S = 10  # a step is not started with less of the budget left
STOP_S = 20  # stopping and reaping a command at its limit (_kill_group waits 10 s, its output's readers 10 s)
STEP_LIMITS = {"cuda-tests": 200, "e2e": 240, "bench": 240}  # seconds per step (bench: per shape), within --budget-s


class Done(subprocess.CompletedProcess):
    """A command's result; `cut`: the check's budget stopped it below its own limit (rc 124, not a failure of its
    own: what a step judges from it is not done, neither passed nor failed)."""
    cut = False


class Check:
    """Runs the steps, keeps their results and output, writes the report (after every step, and as each starts)."""

    def __init__(self, out: Path, work: Path, device: str, dtype: str, budget_s: float):
        self.out, self.work, self.device, self.dtype = out, work, device, dtype
        self.asked = device  # --device as given: `run` resolves auto into `device`
        self.deadline = time.monotonic() + budget_s
        self.started = time.time()
        self.steps: list[dict] = []
        self.plan: list[str] = []  # the steps' names, in order (the report lists those not reached)
        self.running: str | None = None  # the step under way
        self.error: str | None = None  # an exception outside every step (a bug of the check: it failed)
        self.stopped: str | None = None  # what stopped the check from outside (SIGTERM, Ctrl-C): not a failure
        self.cut = False  # the running step's command was stopped by the budget, not by the step's own limit
        self.commands: list[dict] = []  # the running step's commands: name, rc, seconds (its result's `commands`)
        self.failed = False  # one of the running step's commands failed on its own (or the step broke)
        self.partial: dict = {}  # what the running step has finished so far (e2e's parts; a bench's rows file in
        #   OUT): a report written while it runs gives it, so a check stopped from outside keeps it
        self.log = open(out / "gpu-check.log", "w", encoding="utf-8")
        self.lock = threading.Lock()  # a command's stdout and stderr reach the log from two threads
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC)] + [p for p in [
            os.environ.get("PYTHONPATH")] if p]), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def write(self, text: str) -> None:
        with self.lock:
            self.log.write(text)
            self.log.flush()

    def header(self, name: str, argv: list[str]) -> float:
        """A command's header in the log, with the wall-clock time it starts; returns its start (perf_counter)."""
        self.write(f"\n===== {time.strftime('%H:%M:%S UTC', time.gmtime())} {name}: {' '.join(argv)}\n")
        return time.perf_counter()

    def ended(self, name: str, rc: int, t0: float, note: str = "") -> None:
        """A command's footer in the log (its exit status and seconds), and its entry in the step's `commands`."""
        seconds = round(time.perf_counter() - t0, 1)
        self.commands.append({"command": name, "rc": rc, "seconds": seconds})
        self.write(f"{note}\n----- rc {rc} in {seconds} s\n")

    def pump(self, stream, said: list[str]) -> None:
        """A command's output into `said` and the log line by line as it comes: a check stopped from outside (the
        machine's call ending) keeps in the log all that its running command had said, not nothing."""
        with contextlib.suppress(ValueError, OSError):  # the log closed under a straggler that kept the pipe
            for line in stream:
                said.append(line)
                self.write(line)

    def run(self, name: str, argv: list[str], timeout: float, cwd: Path = ROOT, env: dict | None = None,
            reserve: float = 0.0) -> Done:
        """One command (in `env`, else the check's), its output streamed into the log; a timeout is a failed command
        (rc 124). One that the check's budget cut below the step's own limit marks the step as cut short, any other
        failure as failed (`step`). `reserve`: seconds of the budget it leaves to the steps after it."""
        t0 = self.header(name, argv)
        given = max(1.0, self.left() - reserve)  # what the budget gives it
        budget = given < timeout
        timeout = min(timeout, given)
        # a session of its own: a timeout kills the command's whole process group (pytest's subprocesses, DataLoader
        #   workers), not only the command, so nothing keeps the GPU's memory for the next step; and the command dies
        #   with the check (`die_with_check`), which a SIGKILL gives no time to kill its group
        proc = subprocess.Popen(argv, cwd=cwd, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True,  # output cut mid-character
                                preexec_fn=die_with_check())
        out: list[str] = []
        err: list[str] = []
        pumps = [threading.Thread(target=self.pump, args=pipe, daemon=True)
                 for pipe in ((proc.stdout, out), (proc.stderr, err))]
        for pump in pumps:
            pump.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            timed_out = True
        except BaseException:  # Ctrl-C or a kill of the check: its own session no longer reaches the command
            _kill_group(proc)
            raise
        ends = time.monotonic() + 10  # a process outside the group (its own session) may hold the pipes: not long
        for pump in pumps:
            pump.join(max(0.0, ends - time.monotonic()))
        if any(pump.is_alive() for pump in pumps):  # what of its group outlived it: not left holding the GPU
            _kill_group(proc)
        note = f"\ntimed out after {timeout:.0f} s" if timed_out else ""
        # what it said before the timeout (a bench logs its progress to stderr) shows where it was
        done = Done(argv, 124 if timed_out else proc.returncode, "".join(out), "".join(err) + note)
        if timed_out:
            done.cut = budget
            self.cut = self.cut or budget
        if done.returncode != 0 and not (timed_out and budget):
            self.failed = True  # on its own: the step failed, whatever the budget cut after it
        self.ended(name, done.returncode, t0, note)
        return done

    def left(self) -> float:
        """Seconds left of the whole check's budget."""
        return max(1.0, self.deadline - time.monotonic())

    def cli(self, name: str, verb: str, *args: str, timeout: float, **run_args) -> Done:
        return self.run(name, [sys.executable, "-m", "llm_srt.cli", verb, *args], timeout, **run_args)

    def report(self) -> None:
        """report.json and report.md as they stand, marked unfinished (`run` writes the last one)."""
        write_report(self, self.started, final=False)

    def step(self, name: str, fn, *args, least: float | None = None) -> dict:
        """One step: `ok` True (passed), False (failed), or None (not run, or cut short, for want of the check's time
        budget: neither passed nor failed, and said so). `least`: the seconds of budget it needs to be started. A
        failed step is cut short only when every failure traces back to the budget: a budget-cut command, and none
        of its commands, `parts` (None: the part's command was cut) or code failed on its own. One that needs a
        module this Python cannot import (STEP_IMPORTS) fails, not run. The report is written as it starts (naming
        it as running) and as it ends."""
        print(f"[gpu-check] {name} ...", flush=True)
        t0 = time.perf_counter()
        self.cut = self.failed = False
        self.commands, self.partial = [], {}
        self.running = name
        self.report()
        lacking = [f"{module} ({why})" for module in STEP_IMPORTS.get(name, ())
                   if (why := unimportable(module)) is not None]
        if lacking:
            self.failed, result = True, {"ok": False, "error": f"not run: needs {', '.join(lacking)}, which the GPU "
                                         "image lacks and .whl/ does not bring (env)"}
        elif self.deadline - time.monotonic() < (MIN_STEP_S if least is None else least):
            result = {"ok": None, "error": "not run: the check's time budget (--budget-s) is spent"}
        else:
            try:
                result = fn(*args)
            except Exception as e:  # a step that breaks is reported (a failure, cut or not); the others still run
                self.failed, result = True, {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            own = self.failed or any(v is False for v in result.get("parts", {}).values())
            if self.cut and not own and not result["ok"]:
                result = {**result, "ok": None, "error": "cut short by the check's time budget (--budget-s); give "
                          f"it more to finish ({result.get('error', 'timed out')})"}
        result = {"step": name, **result, "seconds": round(time.perf_counter() - t0, 1),
                  **({"commands": self.commands} if self.commands else {})}
        self.steps.append(result)
        self.running, self.partial = None, {}
        self.report()
        print(f"[gpu-check] {name}: {verdict(result['ok'])} ({result['seconds']} s)"
              + (f": {result['error']}" if result.get("error") else ""), flush=True)
        return result


PR_SET_PDEATHSIG = 1  # prctl(2)'s option: the signal a process gets when the thread that started it ends


def _prctl():
    """libc's prctl (Linux), or None where there is none. Looked up here, not in a forked child: a child of a
    process with threads may only call what needs no lock (a dlopen takes one)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PRCTL = _prctl()


def die_with_check():
    """A Popen preexec_fn that has the command SIGKILLed when the check ends, however it ends: a SIGKILL of the
    check (the device call's hard limit, rc 137) runs none of its cleanup, and a command in a session of its own
    went on holding the GPU for the next call's check. None where prctl is missing (the command may outlive a
    killed check there). The command alone gets the signal: its own subprocesses go only where they watch it
    (DataLoader workers do). Popen must run in the check's main thread (the signal comes when the thread that
    started the command ends)."""
    if PRCTL is None:
        return None
    parent = os.getpid()

    def child() -> None:
        PRCTL(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))  # fails quietly: the command then runs unguarded
        if os.getppid() != parent:  # the check died before prctl took hold: nothing would send the signal
            os._exit(137)
    return child


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to a command's whole process group (it runs in a session of its own), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)



def torch_device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"
