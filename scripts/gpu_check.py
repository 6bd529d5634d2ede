#!/usr/bin/env python3
"""The prepared GPU check (`make gpu-check`): everything that needs a GPU, in one run within --budget-s (default
520 s), on a bare one-GPU machine that has torch, transformers, peft, accelerate and sacrebleu but none of our other
dependencies (they come as wheels: `make fetch-wheels` here, then `.whl/` travels with the tree).

    python3 scripts/gpu_check.py run --out DIR [--device cuda] [--dtype auto] [--shapes qwen2.5-7b,qwen2.5-3b]
    python3 scripts/gpu_check.py fetch-wheels [--dest .whl]

Steps, each a subprocess with its own time limit, through the real CLI verbs (`python -m llm_srt.cli`), in the order
of what they prove that nothing else has (a budget that runs short takes the last). The default plan on CUDA, with
rough seconds on one H100: ESTIMATES, not measurements (one H200 took 34 s for 13 cuda tests, 81 s for e2e before its
FSDP parts, 100 s for the 7B bench, 2026-11-30; the compiled bench has never run):
  env                        ~10 s  python, torch, CUDA, the GPU, package versions
  cuda-tests                ~150 s  pytest -m cuda (22 tests needing a GPU; they skip where torch sees none): the 9
                                    added since the 13 measured never ran on a GPU, 3 of them compiling (--compile,
                                    CUDA graphs) on a cold Inductor cache
  e2e                       ~120 s  tiny random models, a tone-clip corpus: `curriculum` (ASR -> SMT -> SRT, the SRT
                                    stage under 1-rank FSDP with activation checkpointing), `train` (FSDP, with
                                    deterministic kernels) killed with SIGKILL after its second checkpoint and resumed
                                    from its first: the 6+ steps it trains again must log the killed run's losses,
                                    its second checkpoint the killed run's tensors and optimizer state (a tolerance
                                    that cannot tell a wrong resume fails it), `translate` and `evaluate` of the SRT
                                    model
  bench-compiled-qwen2.5-7b ~120 s  `bench --paper-shape qwen2.5-7b --compiled-only`: greedy with --compile (static KV
                                    cache, CUDA graphs) at batch 1 and 64, mostly compilation; first of the benches, as
                                    the code least proven; stopped 110 s before the budget ends, which the eager
                                    bench needs to start (MIN_BENCH_S + STOP_S), and not run with under 60 s of its own:
                                    not an estimate of what it needs (never run), but what the steps above leave it
  bench-qwen2.5-7b          ~120 s  `bench --paper-shape qwen2.5-7b`: Table 7 rows, the largest batch, training steps
                                    with and without activation checkpointing, and with head_losses in 8x larger blocks
That is ~520 s: the default budget. Within the device machine's 600 s call, the rest (~45 s) is for installing the
wheels (~15 s), starting Python and torch (~10 s), and stopping and reaping the command running when the budget ends
(up to 20 s). `--shapes qwen2.5-7b,qwen2.5-3b` adds the 3B bench (~115 s): give it --budget-s and a call to match.
It writes DIR/report.md, DIR/report.json (both rewritten as each step starts and ends: a check stopped from outside
leaves the steps it finished, and says it did not finish, with what the running step had finished: e2e's parts, a
bench's rows; a bench stopped before its end leaves the rows its --json-out held, which bench rewrites after each
one: DIR/bench-running.json while it runs, in report.json once it ends), DIR/gpu-check.log (every command's output
as it comes, under its start time, and its exit status and seconds after it; each step's `commands` in report.json
list them), and, where the check was killed mid-bench, DIR/bench-running.json.
`--device cpu` runs the same steps with the tiny shape (a test runs it). Exit status 0 when every step passed, 1 when
one failed, 2 when none failed but the budget left one undone (not started, or stopped by the budget before its own
limit): "incomplete", never "passed". On a GPU the cuda tests fail when one of them skipped, or none ran.

Not proven by this check, whatever it says, and named in its report: several NCCL ranks (DDP, FSDP's fill of the
weightless ranks from rank 0, HSDP's 2-D mesh; one GPU cannot host two NCCL ranks, so these ran on gloo only) and
FSDP at a paper shape (the benches run 7B and 3B on one GPU unsharded; 32B is a command of its own, README).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

# Our dependencies that the GPU machine's image lacks (or has in another version than constraints.txt pins),
# fetched as wheels for CPython 3.12 x86-64; versions come from constraints.txt. The image's torch, accelerate,
# sacrebleu, numpy, tokenizers, safetensors, huggingface-hub, pyyaml, tqdm, matplotlib, tensorboard and pytest
# are used as they are; what a wheel requires beyond them is a wheel too (annotated-doc, which fastapi imports with
# itself, anyio, idna, click, h11: the web stack of the image's huggingface-hub changes with its releases).
GPU_WHEELS = ("transformers", "peft", "gguf", "soundfile", "cffi", "pycparser", "soxr", "jiwer", "RapidFuzz",
              "whisper_normalizer", "indic_numtowords", "more-itertools", "text2num", "fastapi", "starlette",
              "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions",
              "opentelemetry-api", "uvicorn", "python-multipart", "annotated-doc", "anyio", "idna", "click", "h11")
WHEELS_MIB = 22.4  # what `make fetch-wheels` downloads (28 wheels, 2026-12-06): .whl/ travels with the tracked
#   tree, within a device call's 64 MiB (a test adds them up)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                   "manylinux1_x86_64")
VERSIONS = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "sacrebleu", "numpy",
            "soundfile", "jiwer")
MIN_STEP_S = 10  # a step is not started with less of the budget left
MIN_BENCH_S = 90  # nor a bench with less than this: building a paper shape takes ~20 s before its first row
MIN_COMPILED_S = 60  # nor the compiled rows with less than this of their own, after what they keep for the bench
#   after them: building the shape and compiling batch 1 (never measured on a GPU: a guess)
STOP_S = 20  # stopping and reaping a command at its limit (_kill_group waits 10 s, its output's readers 10 s)
STEP_LIMITS = {"cuda-tests": 200, "e2e": 240, "bench": 240}  # seconds per step (bench: per shape), within --budget-s
TEST_TIMEOUT_S = 90  # per cuda test, where pytest-timeout is installed (the GPU image has it): one that hangs fails
#   alone instead of taking the step's whole limit from the tests after it
BUDGET_S = 520  # the default --budget-s: the default plan's ~520 s (the module's docstring), within a 600 s call
ESTIMATE_S = {"env": 10, "cuda-tests": 150, "e2e": 120, "bench-compiled-qwen2.5-7b": 120, "bench-qwen2.5-7b": 120,
              "bench-qwen2.5-3b": 115}  # rough seconds on one H100 (the docstring's; guesses, not measurements; the
#   compiled rows': what the budget leaves them)
DEFAULT_SHAPES = {"cpu": ["tiny"], "cuda": ["qwen2.5-7b"]}  # 3B, measured on 2026-11-30, does not fit the budget
COMMAND_LIMIT_S = 150  # seconds per command of the e2e step (its commands share the step's limit)
IMPORTS = ("transformers", "peft", "accelerate", "soundfile", "soxr")  # what every step after env imports (the
#   model, the audio): one missing, all of them fail, so on a GPU the check stops at env instead of spending its time
IMAGE_IMPORTS = ("yaml",)  # what every step after env imports from the GPU image, not from .whl/ (every config, the
#   bench's too): as IMPORTS. On an image without one, env passed and every later step failed on its import, e2e's
#   report blaming the product ("the killed run sealed fewer than two checkpoints")
STEP_IMPORTS = {"cuda-tests": ("pytest",), "e2e": ("tensorboard",)}  # what one step alone imports from the GPU
#   image (the recipe's TensorBoard log): one missing fails env, naming it, and that step, not run; the check goes
#   on (without pytest or tensorboard the whole session stopped at env, its benches with it)
OPTIONAL_IMPORTS = {"jiwer": ("tests/evaluate",), "whisper_normalizer": ("tests/evaluate",), "gguf": (),
                    "matplotlib": ("tests/evaluate",), "fastapi": ("tests/serve",), "uvicorn": ("tests/serve",),
                    "python_multipart": ("tests/serve",), "starlette.testclient": ("tests/serve",)}
#   what else .whl/ brings (matplotlib: the image, for evaluate's plots), and the cuda test folders that import it:
#   one missing fails env, naming it, and the check goes on without those folders (and with e2e's evaluate failing,
#   for jiwer, whisper_normalizer or matplotlib): one bad wheel does not cost the session its benches.
#   starlette.testclient (fastapi's TestClient, which tests/serve's conftest imports) raises a RuntimeError without
#   httpx, which the image's huggingface-hub brings in some releases only: all 22 cuda tests went with that conftest
COMPILED_BATCHES = {"qwen2.5-7b": "1,64", "tiny": "1,2"}  # shapes also timed with --compile at these batches, in
# a step of their own just before the shape's bench (never run on a GPU yet: the eager rows were measured; its limit
# bounds what a slow compilation takes from the steps after it); tiny's: the CPU rehearsal runs the GPU plan's
# compiled command too (~30 s here)
SENTENCES = (("a cat", "eine Katze"), ("the dog", "der Hund"), ("red sun", "rote Sonne"),
             ("big tree", "grosser Baum"), ("cold water", "kaltes Wasser"), ("my house", "mein Haus"))
CUDA_MARK = re.compile(r"^\s*@pytest\.mark\.cuda\b|^pytestmark\s*=.*\bmark\.cuda\b|\bmarks=pytest\.mark\.cuda\b",
                       re.MULTILINE)  # a decorator, a module's marks, or one parameter's (pytest.param(..., marks=))
TINY_ADAPTER = "{num_queries: 4, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64}"


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


def verdict(ok: bool | None) -> str:
    return "ok" if ok else "FAILED" if ok is False else "not done (budget)"


# ---- steps ---------------------------------------------------------------------------------------------------------
NOT_INSTALLED = "wheels-not-installed.txt"  # in OUT: the wheels gpu-check.sh's one-by-one install could not install
RUNNING_BENCH = "bench-running.json"  # in OUT: the running bench's --json-out (bench_step)


def env_step(check: Check) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    index = None  # the GPU the check runs on: --device cuda:N's, else the current one
    if torch.cuda.is_available() and check.device != "cpu":
        index = torch.device(check.device).index if check.device.startswith("cuda:") else torch.cuda.current_device()
    gpu = torch.cuda.get_device_name(index) if index is not None else None
    problems = {name: why for name in IMPORTS if (why := unimportable(name)) is not None}
    missing = [name for name, why in problems.items() if why == "missing"]
    broken = [f"{name} ({why})" for name, why in problems.items() if why != "missing"]
    optional = {name: why for name in OPTIONAL_IMPORTS if (why := unimportable(name)) is not None}
    image = (*IMAGE_IMPORTS, *(name for names in STEP_IMPORTS.values() for name in names))
    lacking = {name: why for name in image if (why := unimportable(name)) is not None}
    try:
        pins = dict(p.split("==") for p in pinned(("torch", "transformers", "peft"), ROOT / "constraints.txt"))
    except SystemExit as e:  # a report, not the end of the check
        pins, missing = {}, [*missing, str(e)]
    other = [f"{n} {versions.get(n)} (constraints.txt: {v})" for n, v in pins.items()
             if (versions.get(n) or "").split("+")[0] != v]  # a local build tag (2.13.0+cu128) is the pinned release
    # auto found no GPU where nvidia-smi is installed: torch cannot see this machine's GPU, and the CPU plan would
    #   spend the GPU session reporting "passed"
    blind = check.asked == "auto" and check.device == "cpu" and shutil.which("nvidia-smi")
    error = ("no CUDA GPU visible to torch" if check.device != "cpu" and gpu is None else
             f"no CUDA GPU visible to torch {versions['torch']} (CUDA {torch.version.cuda}), yet nvidia-smi is on "
             f"PATH ({blind}): a GPU machine whose torch sees none; --device cpu (DEVICE=cpu) for a CPU rehearsal"
             if blind else
             f"missing {', '.join(missing)}: carry .whl/ (make fetch-wheels here first) or install them" if missing
             else f"cannot import {'; '.join(broken)}: carry .whl/ built for this machine's Python (make fetch-wheels "
                  "here first) or install them" if broken else None)
    fatal = error is not None or not lacking.keys().isdisjoint(IMAGE_IMPORTS)  # the steps after env cannot run:
    #   on a GPU the check stops here
    if lacking:  # a step that needs one alone fails as not run (Check.step), and the check goes on
        steps = [step for step, names in STEP_IMPORTS.items() if not lacking.keys().isdisjoint(names)]
        said = (f"the GPU image lacks {'; '.join(f'{n} ({why})' for n, why in lacking.items())}, which .whl/ does "
                "not bring (GPU_WHEELS counts on the image for it): install it, or add its wheels to GPU_WHEELS"
                + (f"; the check goes on without {', '.join(steps)}" if steps and not fatal else ""))
        error = f"{error}; {said}" if error else said
    if optional:
        needs = sorted({folder for name in optional for folder in OPTIONAL_IMPORTS[name]})
        said = (f"cannot import {'; '.join(f'{n} ({why})' for n, why in optional.items())}"
                + ("" if fatal else " (the check goes on)")
                + (f"; left out of cuda-tests: {', '.join(needs)}" if needs else "")
                # llm_srt.evaluate.metrics imports them as the evaluate verb starts
                + ("; e2e's evaluate will fail" if {"jiwer", "whisper_normalizer", "matplotlib"} & optional.keys()
                   else ""))
        error = f"{error}; {said}" if error else said
    # wheels pip could not install one by one (gpu-check.sh): the image's own copy, if any, runs in their place
    unlisted = (check.out / NOT_INSTALLED).read_text().split() if (check.out / NOT_INSTALLED).is_file() else []
    if unlisted:
        said = f"not installed from .whl/ (pip-install.log): {', '.join(unlisted)}"
        error = f"{error}; {said}" if error else said
    return {"ok": error is None, "fatal": fatal, **({"wheels_not_installed": unlisted} if unlisted else {}),
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "gpu": gpu,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1) if gpu else None,
            "versions": versions, **({"other_versions": other} if other else {}),
            **({"unimportable": sorted(optional)} if optional else {}), **({"error": error} if error else {})}


def unimportable(name: str) -> str | None:
    """Why module `name` cannot be imported here ("missing" when it is not installed), or None. An import, not only
    a look for it: a wheel built for another Python or lacking its shared library is found, then every step that
    imports it fails after spending its time."""
    try:  # a finder may refuse a module by raising (ModuleNotFoundError), not only by finding none
        if importlib.util.find_spec(name) is None:
            return "missing"
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        return "missing" if e.name == name else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    except Exception as e:  # noqa: BLE001 - any failure to import is the report
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    return None


def cuda_test_files() -> list[str]:
    """The test files that hold tests marked cuda: collecting only these keeps modules that import what the GPU
    machine lacks (ctranslate2, faster-whisper, openai: test-only dependencies) out of the run."""
    files = (p for p in sorted((ROOT / "tests").rglob("test_*.py")) if CUDA_MARK.search(p.read_text(encoding="utf-8")))
    return [str(p.relative_to(ROOT)) for p in files]


def pytest_argv(paths: list[str], xml: Path) -> list[str]:
    """The cuda tests' pytest command: -v writes each test's outcome to the log as it ends (the junit XML comes only
    at the session's end, so a pytest stopped at its limit left none), and with pytest-timeout a per-test limit."""
    timeout = ["--timeout", str(TEST_TIMEOUT_S)] if importlib.util.find_spec("pytest_timeout") else []
    return [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rfEs", "-p", "no:cacheprovider",
            f"--junitxml={xml}", *timeout, *paths]


OUTCOME = re.compile(r"^(\S+::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?: \((.*)\))?(?:\s+\[\s*\d+%\])?\s*$")
WORSE = ("PASSED", "XPASS", "XFAIL", "SKIPPED", "FAILED", "ERROR")  # a test's outcome in -v: its worst line's (a
#   teardown error follows a PASSED line)


def pytest_outcomes(stdout: str) -> tuple[dict[str, tuple[str, str]], str | None]:
    """(node id -> (outcome, reason), the test that was running when pytest stopped or None) from `pytest -v`'s
    lines; a reason (a skip's, cut to the terminal's width) where pytest gives one."""
    tests: dict[str, tuple[str, str]] = {}
    running = None
    for line in stdout.splitlines():
        if match := OUTCOME.match(line):
            node, outcome, reason = match.groups()
            if node not in tests or WORSE.index(outcome) > WORSE.index(tests[node][0]):
                tests[node] = (outcome, reason or "")
            running = None
        elif "::" in line and line.strip() and " " not in line.strip():
            running = line.strip()  # -v writes a test's id as it starts, its outcome as it ends
    return tests, running


def left_out_folders() -> dict[str, str]:
    """The cuda test folders (OPTIONAL_IMPORTS) that import a module this Python cannot: folder -> why. Collecting
    one would fail the step on an ImportError that env has already reported."""
    gone = {name: why for name in OPTIONAL_IMPORTS if (why := unimportable(name)) is not None}
    left: dict[str, list[str]] = {}
    for name, why in gone.items():
        for folder in OPTIONAL_IMPORTS[name]:
            left.setdefault(folder, []).append(f"{name} {why}" if why == "missing" else f"{name} unimportable")
    return {folder: ", ".join(whys) for folder, whys in left.items()}


UNCOLLECTED = re.compile(r"^ImportError while loading conftest '(?P<conftest>.+)'\.$"  # (pytest's exit 4)
                         r"|^_+ ERROR collecting (?P<module>\S+) _+$", re.MULTILINE)  # a test module's (exit 2)


def uncollected(output: str, paths: list[str]) -> dict[str, str]:
    """The paths of `paths` that pytest's `output` says it could not collect, each under a conftest that failed to
    import or itself a module that did -> what failed and its error's last line."""
    rootdir = re.search(r"^rootdir: (.+?)(?:, |$)", output, re.MULTILINE)  # what "ERROR collecting X" is relative to
    broken: dict[Path, str] = {}
    for match in UNCOLLECTED.finditer(output):
        error = re.search(r"^E +(.+)$", output[match.end():], re.MULTILINE)
        where = Path(match["conftest"] or Path(rootdir[1] if rootdir else ROOT) / match["module"]).resolve()
        said = error[1].strip() if error else "an error (gpu-check.log)"
        broken[where] = f"{where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}: {said}" \
            if match["conftest"] else said
    found = {}
    for path in paths:
        full = (ROOT / path).resolve()
        for where, why in broken.items():
            if full == where or (where.name == "conftest.py" and full.is_relative_to(where.parent)):
                found[path] = why
    return found


def cuda_tests_step(check: Check, paths: list[str]) -> dict:
    left_out = left_out_folders() if paths == ["auto"] else {}
    paths = [p for p in cuda_test_files() if not any(p.startswith(f"{folder}/") for folder in left_out)] \
        if paths == ["auto"] else paths
    xml, ends = check.work / "cuda-tests.xml", time.monotonic() + STEP_LIMITS["cuda-tests"]
    done = check.run("cuda-tests", pytest_argv(paths, xml), STEP_LIMITS["cuda-tests"])
    # one import error in a conftest or test module stops pytest before any test (exit 4 or 2): all 22 cuda tests
    #   went for one folder's. Once more without what it could not collect; the step fails, naming it
    broken = uncollected(done.stdout + done.stderr, paths) if done.returncode in (2, 4) else {}
    again = bool(broken) and len(broken) < len(paths)
    if again:
        paths = [p for p in paths if p not in broken]
        done = check.run("cuda-tests again", pytest_argv(paths, xml), max(1.0, ends - time.monotonic()))
    tests, running = pytest_outcomes(done.stdout)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    skips = [f"{node}: {reason}" for node, (outcome, reason) in tests.items() if outcome in ("SKIPPED", "XFAIL")]
    if xml.is_file():
        root = ElementTree.parse(xml).getroot()
        for suite in root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        skips = [f"{case.get('classname')}::{case.get('name')}: {skip.get('message', '')}"  # the reasons in full
                 for case in root.iter("testcase") for skip in case.iter("skipped")]
    else:  # stopped before its session's end: the outcomes it wrote as each test ended
        kinds = [outcome for outcome, _ in tests.values()]
        counts = {"tests": len(kinds), "failures": kinds.count("FAILED"), "errors": kinds.count("ERROR"),
                  "skipped": kinds.count("SKIPPED") + kinds.count("XFAIL")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = done.returncode in (0, 5) and not counts["failures"] and not counts["errors"]  # 5: none collected
    failed = [node for node, (outcome, _) in tests.items() if outcome in ("FAILED", "ERROR")]
    error = None if ok else f"pytest exit {done.returncode}" + (f"; failed: {', '.join(failed)}" if failed else "") + (
        f"; stopped while {running} ran" if done.returncode == 124 and running else "")
    if broken:
        check.failed = True  # the step's own failure, whatever the budget cut
        said = (f"pytest could not collect {', '.join(broken)} ({'; '.join(sorted(set(broken.values())))})"
                + ("; the others ran without them" if again else ""))
        ok, error = False, f"{said}; {error}" if error else said
    # on the CPU they skip, as they should; on a GPU none has a reason to (each needs only torch and a GPU, the
    #   fixtures they use tiny random models and tone clips): a skip there, or none run, proves nothing
    if check.device != "cpu" and (counts["skipped"] or not (counts["passed"] or done.cut)):
        check.failed = True  # the step's own failure, whatever the budget cut
        what = (f"no cuda test ran on the GPU ({counts['skipped']} skipped of {counts['tests']} collected)"
                if not counts["passed"] else f"{counts['skipped']} cuda test(s) skipped on the GPU")
        ok, error = False, "; ".join([what + (": " + "; ".join(skips) if skips else ""), *([error] if error else [])])
    result = {"ok": ok, **counts, "files": paths}
    extra = {"left_out": left_out, "uncollected": broken, "skips": skips, "failed_tests": failed,
             "running_when_stopped": done.returncode == 124 and running,
             "counted_from": not xml.is_file() and "gpu-check.log (pytest ended before writing its junit XML)",
             "error": error}
    return result | {k: v for k, v in extra.items() if v}


def write_corpus(root: Path) -> dict[str, Path]:
    """Tone clips for SENTENCES in eng and deu, an ASR row and a translation row each: train, dev and test."""
    import numpy as np

    from llm_srt.audio import write_wav
    from llm_srt.data.manifest import Row, write_manifest

    (root / "audio").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for k, (en, de) in enumerate(SENTENCES):
        split = "train" if k < 4 else "dev" if k == 4 else "test"
        for lang, text, other, other_text, f0 in (("eng", en, "deu", de, 300), ("deu", de, "eng", en, 500)):
            seconds = 0.8 + 0.1 * k
            t = np.arange(int(seconds * 16000)) / 16000
            clip = (0.4 * np.sin(2 * np.pi * (f0 + 90 * k) * t)
                    + 0.05 * np.random.default_rng(k).standard_normal(t.size)).astype(np.float32)
            audio = root / "audio" / f"{lang}-{k}.wav"
            write_wav(audio, clip)
            base = dict(audio=str(audio), duration=seconds, src_lang=lang, transcript=text, split=split,
                        corpus="gpu-check", sentence_id=f"s{k}")
            splits[split].append(Row(id=f"{lang}-{k}", tgt_lang="", translation="", **base))
            splits[split].append(Row(id=f"{lang}-{k}-{other}", tgt_lang=other, translation=other_text, **base))
    paths = {}
    for split, rows in splits.items():
        paths[split] = root / f"{split}.jsonl"
        write_manifest(paths[split], rows)
    return paths


def train_overrides(check: Check, folders, corpus: dict[str, Path]) -> list[str]:
    """key=value overrides that point configs/embedded at the tiny models and corpus, on the check's device."""
    from llm_srt.train.config import TrainConfig

    values = {"model.encoder": folders.encoder, "model.llm": folders.llm, "model.adapter_kwargs": TINY_ADAPTER,
              "data.train": corpus["train"], "data.dev": corpus["dev"], "data.batch_size": 4,
              "data.feature_cache": check.work / "features", "optim.warmup_steps": 0, "log_every": 1,
              "data.num_workers": 2}  # a GPU's default: named, so that the CPU path runs DataLoader workers too
    fields = TrainConfig.__dataclass_fields__
    if "device" in fields:  # the training config's own device / dtype keys, once they exist
        values |= {"device": check.device, "dtype": check.dtype}
    elif check.device != "cpu":
        values["model.dtype"] = "bfloat16" if check.dtype in ("auto", "bfloat16", "bf16") else check.dtype
    return [f"{k}={v}" for k, v in values.items()]


def e2e_step(check: Check) -> dict:
    from llm_srt.model import presets

    folders = presets.write_folders("tiny", check.work / "models", weights=True)
    corpus = write_corpus(check.work / "corpus")
    common = train_overrides(check, folders, corpus)
    runs, ends = check.work / "runs", time.monotonic() + STEP_LIMITS["e2e"]
    parts: dict[str, bool | None] = {}
    resume: dict = {}  # kill_and_resume's numbers

    def limit() -> float:  # each command's: at most COMMAND_LIMIT_S, and within what the step has left
        return max(1.0, min(COMMAND_LIMIT_S, ends - time.monotonic()))

    def judge(part: str, ok: bool, done: Done) -> None:
        """parts[part] from what `done`, its command, did and wrote: a part that failed is not done (None) when the
        budget cut its command, else failed (False) on its own (exit 0 with a wrong result too): the step failed.
        Into the report at once: a check stopped from outside (SIGTERM, or a SIGKILL that runs nothing after it)
        keeps the parts it finished."""
        parts[part] = True if ok else None if done.cut else False
        check.partial = {"parts": dict(parts), **resume}
        check.report()

    done = check.cli("e2e curriculum", "curriculum", str(ROOT / "configs" / "embedded"), "--out-root", str(runs),
                     *common, "save_every=2", "asr:max_steps=4", "smt:max_steps=2", "srt:max_steps=2",
                     "srt:activation_checkpointing=true", "srt:distributed=fsdp",  # 1-rank FSDP: NCCL on a GPU
                     timeout=limit())
    final = runs / "srt" / "final"
    judge("curriculum", done.returncode == 0 and (final / "config.json").is_file(), done)

    done, proofs, numbers = kill_and_resume(check, common, limit)
    resume.update(numbers)
    for part, ok in proofs.items():  # kill_resume, resume_losses, resume_state
        judge(part, ok, done)

    clip = corpus["test"].parent / "audio" / "eng-5.wav"
    done = check.cli("e2e translate", "translate", str(clip), "--model", str(final), "--src", "eng", "--tgt", "deu",
                     "--format", "json", "--max-new-tokens", "8", "--device", check.device, "--dtype", check.dtype,
                     timeout=limit())
    try:
        results = json.loads(done.stdout)
        results = results if isinstance(results, list) else [results]
        translated = done.returncode == 0 and all(r.get("error") is None for r in results)
    except json.JSONDecodeError:
        translated = False
    judge("translate", translated, done)

    report = check.work / "eval"
    done = check.cli("e2e evaluate", "evaluate", "--model", f"srt={final}", "--manifest", str(corpus["test"]),
                     "--out", str(report), "--max-new-tokens", "8", "--device", check.device, "--dtype", check.dtype,
                     timeout=limit())
    judge("evaluate", done.returncode == 0 and (report / "results.json").is_file(), done)
    failed = [k for k, v in parts.items() if v is False]
    undone = [k for k, v in parts.items() if v is None]  # the budget cut their commands
    error = "; ".join([f"{what}: {', '.join(keys)}" for what, keys in (("failed", failed), ("not done", undone))
                       if keys] + resume.get("resume_problems", []))
    return {"ok": not failed and not undone, "parts": parts, **resume, **({"error": error} if error else {})}


RESUME_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-4}  # a resumed step's loss against the uninterrupted run's (relative):
#   the CPU's float32 resume is bit-identical (make test); on a GPU both runs take deterministic kernels
#   (DETERMINISTIC), and one without a deterministic version (it only warns) moves a loss by far less than this
STATE_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-2}  # the resumed run's trainable tensors and optimizer state at the next
#   checkpoint: their distance from the uninterrupted run's, as a fraction of how far that run moved them from the
#   checkpoint resumed from (Adam's moments dropped at the resume: 0.1 to 2.7 per tensor; a run started again: 1)
MARGIN = 10  # a loss tolerance decides only this many times below the run's own median step-to-step loss change,
#   about what a step trained on another batch or from other weights moves (the tiny random LLM's loss stays near
#   ln(V): 6.95 -> 6.83 over 20 steps; Adam's moments dropped moved the resumed losses by 3.6e-4 at most)
DETERMINISTIC = ("import runpy, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                 "runpy.run_module('llm_srt.cli', run_name='__main__', alter_sys=True)")  # `python -m llm_srt.cli`
#   with deterministic kernels (cuBLAS's also need CUBLAS_WORKSPACE_CONFIG); warn_only: an op that has none warns
#   in the log instead of stopping the run


def kill_and_resume(check: Check, common: list[str], limit) -> tuple[Done, dict[str, bool], dict]:
    """`train` killed with SIGKILL after its second checkpoint (B) and one more step, B moved aside as the
    uninterrupted run's, then the same command again: it must say it resumed (from the checkpoint before B), finish,
    log the steps it trained again with the killed run's losses (`compare_losses`) and write at step B the killed
    run's trainable tensors and optimizer state (`compare_states`). Both runs take deterministic kernels. `limit()`:
    the seconds a command may take now. Returns the resumed command (whether the budget cut it), each part's
    verdict, and the numbers behind them (with `resume_problems`: why a part failed)."""
    from llm_srt.train.checkpoint import step_name

    out = check.work / "killed"
    argv = [sys.executable, "-c", DETERMINISTIC, "train", str(ROOT / "configs" / "embedded" / "asr.yaml"), *common,
            "max_steps=20", "save_every=5", "keep_last=5", f"output_dir={out}",  # killed between steps 11 and 19
            "distributed=fsdp"]  # resumed: the optimizer's state loads into sharded parameters
    env = dict(check.env, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    t0 = check.header("e2e kill", argv)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=check.log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_check())  # a SIGKILLed check does not leave it training
    deadline = time.monotonic() + min(limit() / 2, check.left())
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sealed = sealed_steps(out)
            if len(sealed) >= 2 and max(logged_losses(out), default=0) > sealed[-1]:
                break
            time.sleep(0.02)
    except BaseException:  # the check stopped (SIGTERM, Ctrl-C): the run is not left training on the GPU
        proc.kill()
        proc.wait()
        raise
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    check.ended("e2e kill", proc.returncode, t0)
    sealed = sealed_steps(out) or [0]
    start = sealed[-2] if len(sealed) > 1 else sealed[-1]
    reference = check.work / "uninterrupted" if len(sealed) > 1 else None
    if reference:  # out of the run's folder: the resume starts from the checkpoint before, and writes B again
        os.replace(out / "checkpoints" / step_name(sealed[-1]), reference)
    first = {k: v for k, v in logged_losses(out).items() if k > start}  # the steps the resumed run trains again
    check.write(f"\n----- killed: {killed} after step {max(first, default=start)} (resumes from checkpoint {start}"
                + (f"; checkpoint {sealed[-1]} moved aside: the uninterrupted run's" if reference else "") + ")\n")
    done = check.run("e2e resume", argv, limit(), env=env)
    resumed = killed and done.returncode == 0 and "resumed from" in done.stdout + done.stderr \
        and (out / "final" / "config.json").is_file()
    device = torch_device_type(check.device)
    same_losses, losses = compare_losses(first, logged_losses(out), device)
    same_state, state = compare_states(reference, out / "checkpoints" / step_name(sealed[-1]),
                                       out / "checkpoints" / step_name(start), device)
    problems = [p for p in (losses.pop("problem", None), state.pop("problem", None)) if p]
    return done, {"kill_resume": resumed, "resume_losses": same_losses, "resume_state": same_state}, {
        **losses, **state, **({"resume_problems": problems} if problems else {})}


def sealed_steps(out: Path) -> list[int]:
    """The steps of an output_dir's sealed checkpoints, oldest first (one is renamed into place once written)."""
    return sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*/trainer_state"))


def compare_losses(first: dict[int, float], again: dict[int, float], device: str) -> tuple[bool, dict]:
    """Whether the resumed run's losses (`again`, step -> loss) repeat the uninterrupted run's (`first`: the steps
    after the checkpoint it resumed from) within RESUME_TOLERANCE[device], and whether that tolerance can tell a
    wrong resume: MARGIN times below the uninterrupted run's median step-to-step loss change, else it cannot decide
    (not ok). Returns the verdict and its numbers, with `problem`: why not ok."""
    tolerance, steps = RESUME_TOLERANCE[device], sorted(first)
    change = statistics.median(abs(first[b] - first[a]) / max(abs(first[a]), 1e-9)
                               for a, b in zip(steps, steps[1:])) if len(steps) > 1 else None
    diffs = {k: abs(again[k] - v) / max(abs(v), 1e-9) for k, v in first.items() if k in again}
    worst = max(diffs, key=diffs.get, default=None)
    facts = {"resume_steps_compared": len(diffs), "resume_worst_relative": diffs.get(worst),
             "resume_tolerance": tolerance, "resume_loss_change": change}
    if len(diffs) < max(2, len(first)):
        problem = (f"resume_losses: the resumed run logged {len(diffs)} of the {len(first)} steps the killed run "
                   "logged after its checkpoint (at least 2 are needed)")
    elif tolerance * MARGIN > change:
        problem = (f"resume_losses cannot decide: its tolerance ({tolerance:.0e}) is not {MARGIN}x below the run's "
                   f"own step-to-step loss change ({change:.1e})")
    elif diffs[worst] > tolerance:
        problem = (f"resume_losses: step {worst}'s loss is {diffs[worst]:.1e} off the uninterrupted run's "
                   f"(tolerance {tolerance:.0e})")
    else:
        problem = None
    return problem is None, facts | ({"problem": problem} if problem else {})


def compare_states(reference: Path | None, resumed: Path, start: Path, device: str) -> tuple[bool, dict]:
    """Whether the resumed run's checkpoint `resumed` holds what the uninterrupted run's of the same step
    (`reference`) does: the same step, schedule, data position and RNG states, and each kind of tensor (a weights
    file's, the optimizer's exp_avg, exp_avg_sq, step) within STATE_TOLERANCE[device] of it, as a fraction of how
    far the uninterrupted run moved that kind from `start` (the checkpoint resumed from). Returns the verdict and
    its numbers, with `problem`: why not ok."""
    if reference is None or not resumed.is_dir():
        what = ("the killed run sealed fewer than two checkpoints: no uninterrupted state to compare with"
                if reference is None else f"the resumed run left no {resumed.name}")
        return False, {"problem": f"resume_state: {what}"}
    (ref, ref_plain), (res, res_plain), (base, _) = (checkpoint_state(f) for f in (reference, resumed, start))
    drift = {kind: relative_drift(ref[kind], res.get(kind, {}), base.get(kind, {})) for kind in ref}
    worst = max(drift, key=drift.get, default=None)
    tolerance = STATE_TOLERANCE[device]
    finite = drift.get(worst) is not None and math.isfinite(drift[worst])
    facts = {"resume_state_step": ref_plain["step"], "resume_state_drift": drift[worst] if finite else None,
             "resume_state_worst": worst, "resume_state_tolerance": tolerance}
    other = [key for key in ref_plain if not same(res_plain.get(key), ref_plain[key])]
    if other or not drift:
        problem = (f"resume_state: the resumed run's {resumed.name} has another {', '.join(other)} than the "
                   "uninterrupted run's" if other else "resume_state: no tensors to compare")
    elif not finite:
        problem = (f"resume_state: {worst} at {resumed.name} is missing, shaped otherwise, or moved where the "
                   "uninterrupted run's stayed")
    elif drift[worst] > tolerance:
        problem = (f"resume_state: {worst} at {resumed.name} is off the uninterrupted run's by {drift[worst]:.1e} "
                   f"of that run's own movement since {start.name} (tolerance {tolerance:.0e})")
    else:
        problem = None
    return problem is None, facts | ({"problem": problem} if problem else {})


def checkpoint_state(folder: Path) -> tuple[dict[str, dict[str, object]], dict]:
    """A checkpoint's tensors by kind (kind -> name -> tensor: each weights file, and each of the optimizer's
    per-parameter states: exp_avg, exp_avg_sq, step) and its training position (step, schedule, data, RNG)."""
    import torch
    from safetensors.torch import load_file

    from llm_srt.train.checkpoint import load_trainer_state

    kinds: dict[str, dict[str, object]] = {p.stem: load_file(p) for p in sorted(folder.glob("*.safetensors"))}
    state = load_trainer_state(folder)
    for param, values in state["optimizer"]["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                kinds.setdefault(f"optimizer {name}", {})[str(param)] = value
    return kinds, {key: state.get(key) for key in ("step", "scheduler", "data", "rng")}


def same(a, b) -> bool:
    """Exact equality of two nested trainer-state values (tensors and numpy arrays element by element)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    if hasattr(a, "shape"):  # a tensor or an array
        return hasattr(b, "shape") and tuple(a.shape) == tuple(b.shape) and bool((a == b).all())
    return a == b


def relative_drift(reference: dict, resumed: dict, start: dict) -> float:
    """|resumed - reference| / |reference - start| over one kind's tensors (each a flat vector of all of them): a
    resumed run's distance from the uninterrupted one as a fraction of how far that run moved over the same steps
    (0: exact; 1: as far off as not having trained them at all). Infinite: one is missing from `resumed` or `start`
    or shaped otherwise, or the uninterrupted run did not move the kind and the resumed run's differs."""
    if any(name not in other or other[name].shape != ref.shape for name, ref in reference.items()
           for other in (resumed, start)):
        return math.inf
    off = moved = 0.0
    for name, ref in reference.items():
        ref = ref.double()
        off += float((resumed[name].double() - ref).square().sum())
        moved += float((ref - start[name].double()).square().sum())
    return math.sqrt(off / moved) if moved else 0.0 if off == 0 else math.inf


def logged_losses(out: Path) -> dict[int, float]:
    """step -> loss of an output_dir's train_log.jsonl (a line cut by a kill skipped)."""
    losses = {}
    try:
        lines = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return losses
    for line in lines:
        try:
            record = json.loads(line)
            losses[int(record["step"])] = float(record["loss"])
        except (ValueError, KeyError, TypeError):
            continue
    return losses


def torch_device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def bench_step(check: Check, shape: str, memory_gib: float | None, compiled: str | None = None,
               leave: float = 0.0) -> dict:
    """`bench --paper-shape SHAPE`; with `compiled` (batch sizes), its --compile rows alone. A bench stopped before
    its end (its limit, the budget, a crash) reports the rows its --json-out holds: bench rewrites it after each.
    That file is OUT/RUNNING_BENCH while it runs (named in the report as it starts), folded into the step's result
    as it ends: a check stopped from outside leaves the rows there (a SIGTERM also in the report; a SIGKILL runs
    nothing after it). `leave`: seconds of the budget it keeps for the bench after it (the budget stops it sooner,
    and it is not run with less than MIN_COMPILED_S of its own)."""
    if leave and check.left() - leave < MIN_COMPILED_S:
        return {"ok": None, "error": f"not run: {check.left():.0f} s of the check's time budget (--budget-s) left, "
                f"{leave:.0f} s of them kept for the bench after it, and this one needs {MIN_COMPILED_S} s of its own"}
    result_file = check.out / RUNNING_BENCH
    result_file.unlink(missing_ok=True)  # none of another bench's rows under this one's name
    check.partial = {"rows_file": RUNNING_BENCH}
    check.report()
    extra = ["--memory-gib", str(memory_gib)] if memory_gib else []
    if compiled:
        extra += ["--compile-batches", compiled, "--compiled-only"]
    done = check.cli(f"bench {shape}{' compiled' if compiled else ''}", "bench", "--device", check.device, "--dtype",
                     check.dtype, "--paper-shape", shape, "--json-out", str(result_file), *extra,
                     timeout=STEP_LIMITS["bench"], reserve=leave)
    result = read_json(result_file)
    result_file.unlink(missing_ok=True)  # in the step's result now: OUT keeps few files (what comes back)
    if done.returncode != 0 or not (result or {}).get("finished"):
        rows = measured_rows(result)
        at = [line for line in done.stderr.splitlines() if line.startswith("[bench] ")]
        return {"ok": False, "error": f"bench exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
                + (f"; it was at: {at[-1][len('[bench] '):]}" if at else "")
                + f"; {len(rows)} measured before it stopped (report.json's rows)", "rows": rows}
    skips = sum(r.get("cudagraph_skips") or 0 for r in result["decode"])
    # compiled, but not replayed as CUDA graphs: the rows would not measure what --compile is for
    problems = [f"{skips} CUDA-graph skips in the compiled rows"] * bool(skips) + unproven(check, result, compiled)
    if problems:
        return {"ok": False, "error": "; ".join(problems), "table": done.stdout.strip(), "result": result}
    return {"ok": True, "table": done.stdout.strip(), "result": result}


def unproven(check: Check, result: dict, compiled: str | None) -> list[str]:
    """What a finished bench did not measure that its step is run to prove: a compiled row at each batch asked
    (`compiled`), the training step with activation checkpointing (the eager bench), and on a GPU each measured
    row's reserved peak (reserved_mib: what a card must hold) and, where --dtype auto or bf16 was asked on a GPU
    with native bfloat16, bfloat16. A row out of memory or missing is recorded, not measured: the bench ends
    `finished` all the same, and the step passed without the rows it exists for."""
    decode = [r for r in result.get("decode", []) if not r.get("out_of_memory")]
    train = [t for t in result.get("train", []) if not t.get("out_of_memory")]
    problems = []
    asked = [int(b) for b in compiled.split(",")] if compiled else []
    unmeasured = [b for b in asked if not any(r.get("compiled") and r.get("batch_size") == b for r in decode)]
    if unmeasured:
        problems.append(f"no compiled row measured at batch {', '.join(map(str, unmeasured))} (out of memory, or not "
                        "run: the table says which)")
    if not compiled and not any(t.get("activation_checkpointing") and t.get("layers_recomputed") for t in train):
        problems.append("no training row measured with activation checkpointing (out of memory, or not run: the "
                        "table says which)")
    if torch_device_type(check.device) == "cuda":
        lacking = [r for r in decode + train if r.get("reserved_mib") is None]
        if lacking:
            problems.append(f"{len(lacking)} of {len(decode) + len(train)} rows measured on the GPU have no "
                            "reserved_mib (torch's reserved peak, which a card must hold)")
        import torch

        from llm_srt.device import native_bf16

        native = torch.cuda.is_available() and native_bf16(torch.device(check.device))
        if native and check.dtype in ("auto", "bf16", "bfloat16") and result.get("dtype") != "bfloat16":
            problems.append(f"--dtype {check.dtype} on a GPU with native bfloat16 ran in {result.get('dtype')}")
    return problems


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None where there is none (a bench stopped before its first row wrote nothing;
    bench writes it whole, by a rename, so a kill never leaves half of one)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measured_rows(result: dict | None) -> list[dict]:
    """A bench result's measurements, one {its section of the result: it} each: the decode rows, each system's
    largest-batch search, the training rows."""
    result = result or {}
    return ([{"decode": r} for r in result.get("decode", [])]
            + [{"largest_batch": {system: s}} for system, s in result.get("largest_batch", {}).items()]
            + [{"train": t} for t in result.get("train", [])])


# ---- report ----------------------------------------------------------------------------------------------------------
UNPROVEN = ("several NCCL ranks (DDP, FSDP's fill of the weightless ranks from rank 0, HSDP): one GPU cannot host "
            "two NCCL ranks, so they ran on gloo only (make test)", "FSDP at a paper shape (32B): the benches run 7B "
            "and 3B on one GPU, unsharded")
OUTCOMES = {"passed": 0, "FAILED": 1, "incomplete": 2}  # report.json's outcome -> the check's exit status


def write_report(check: Check, started: float, final: bool = True) -> str:
    """report.json and report.md; the outcome: "passed" when every step passed, "FAILED" when one failed (or none
    ran, or the check itself broke), else "incomplete" (a step the budget left undone: listed, neither passed nor
    failed). Not `final` (written as the check goes): "FAILED" once a step failed, else "incomplete", with
    `finished` false, the step running and those not reached: what a check stopped from outside leaves."""
    names = {s["step"] for s in check.steps}
    not_reached = [n for n in check.plan if n not in names and n != check.running]
    undone = sum(s["ok"] is None for s in check.steps)
    failed = any(s["ok"] is False for s in check.steps) or check.error is not None
    outcome = ("FAILED" if failed or (final and not any(s["ok"] for s in check.steps))
               else "incomplete" if undone or not final or not_reached else "passed")
    env = next((s for s in check.steps if s["step"] == "env"), {})
    other = env.get("other_versions") or []
    torch_note = (" (the image's torch: its FSDP2 and DTensor code is another release's)"
                  if any(v.startswith("torch ") for v in other) else "")
    unproven = [*UNPROVEN, *([f"the pinned versions: this machine ran {', '.join(other)}{torch_note}"]
                             if other else [])]
    partial = running_partial(check) if check.running and not final else {}
    summary = {"ok": outcome == "passed", "outcome": outcome, "finished": final, "device": check.device,
               "dtype": check.dtype, "seconds": round(time.time() - started, 1), "steps": check.steps,
               **({"running": check.running} if check.running else {}), **({"partial": partial} if partial else {}),
               **({"not_reached": not_reached} if not_reached else {}),
               **({"error": check.error} if check.error else {}),
               **({"stopped": check.stopped} if check.stopped else {}), "not_proven_here": unproven}
    gpu = (env.get("gpu") or "no GPU") + (f", {env['gpu_memory_gib']} GiB" if env.get("gpu_memory_gib") else "")
    lines = ["# llm-srt GPU check", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, device {check.device} ({gpu}), dtype "
             f"{check.dtype}, torch {env.get('versions', {}).get('torch')}, CUDA {env.get('cuda')}; "
             f"{summary['seconds']:.0f} s in all: **{outcome}**"
             + (f" ({undone} step{'s' * (undone > 1)} not done for want of time)" if undone else "")]
    if not final:
        lines += ["", "**Not finished**: this report was written while the check ran"
                  + (f" step {check.running}" if check.running else "") + "; left like this, the check was stopped "
                  "before its end (the machine's time ran out): the steps below are those it finished."]
        if partial.get("parts"):
            lines += ["", f"Step {check.running} had finished: "
                      + ", ".join(f"{k} {verdict(v)}" for k, v in partial["parts"].items()) + resume_details(partial)
                      + "."]
    if not_reached:
        lines += ["", f"Not reached: {', '.join(not_reached)}."]
    if check.error or check.stopped:
        lines += ["", f"The check itself {'broke' if check.error else 'was stopped'}: {check.error or check.stopped}"]
    lines += ["", "| step | result | seconds | details |", "|---|---|---|---|"]
    for s in check.steps:
        details = s.get("error", "")
        if s["step"] == "cuda-tests" and "tests" in s:
            details = (f"{s['passed']} passed, {s['failures']} failed, {s['errors']} errors, {s['skipped']} skipped "
                       f"of {s['tests']}" + (f", counted from {s['counted_from']}" if s.get("counted_from") else "")
                       + (f"; {details}" if details else "")
                       + "".join(f"; left out {folder} ({why})" for folder, why in s.get("left_out", {}).items()))
        if s["step"] == "e2e" and "parts" in s:
            details = ", ".join(f"{k} {verdict(v)}" for k, v in s["parts"].items())
            details += resume_details(s)
        if s["step"] == "env":  # the versions, and why it failed (the check may have gone on, or stopped here)
            details = ", ".join([f"{k} {v}" for k, v in s.get("versions", {}).items()] + [details] * bool(details))
        lines.append(f"| {s['step']} | {verdict(s['ok'])} | {s['seconds']} | {details} |")
    lines += ["", "Not proven by this check: " + "; ".join(unproven) + "."]
    for s in check.steps:
        if s.get("table"):
            lines += ["", f"## {s['step']}", "", "```", s["table"], "```"]
        elif s.get("rows"):  # a bench stopped before its table: what it measured, as JSON lines
            lines += ["", f"## {s['step']} (stopped: the rows it measured)", "", "```",
                      *(json.dumps(r) for r in s["rows"]), "```"]
    if "rows_file" in partial:  # the running bench's: those it measured after this report, in the file alone
        lines += ["", f"## {check.running} (running: {len(partial['rows'])} rows measured as this was written; "
                  f"{partial['rows_file']} beside it holds every row it measured)"]
        lines += ["", "```", *(json.dumps(r) for r in partial["rows"]), "```"] if partial["rows"] else []
    from llm_srt.paths import atomic_file  # the standard library alone: importable before the env step's checks

    for name, text in (("report.json", json.dumps(summary, indent=2) + "\n"), ("report.md", "\n".join(lines) + "\n")):
        with atomic_file(check.out / name) as f:  # whole: a kill mid-write leaves the last one, not half
            f.write(text)
    return outcome


def running_partial(check: Check) -> dict:
    """What the running step has finished (check.partial), with a bench's rows as its --json-out in OUT holds
    them now."""
    partial = dict(check.partial)
    if "rows_file" in partial:
        partial["rows"] = measured_rows(read_json(check.out / partial["rows_file"]))
    return partial


def resume_details(s: dict) -> str:
    """e2e's resume numbers for report.md: how close the resumed run came to the uninterrupted one, and how close it
    had to come."""
    said = []
    if s.get("resume_worst_relative") is not None:
        said.append(f"resumed losses of {s['resume_steps_compared']} steps within {s['resume_worst_relative']:.1e} "
                    f"of the uninterrupted run's (tolerance {s['resume_tolerance']:.0e}; the run's own step-to-step "
                    f"change {s['resume_loss_change'] or 0:.1e})")
    if s.get("resume_state_drift") is not None:
        said.append(f"its tensors and optimizer state at step {s['resume_state_step']} within "
                    f"{s['resume_state_drift']:.1e} of their movement (tolerance {s['resume_state_tolerance']:.0e})")
    return f" ({'; '.join(said)})" if said else ""


def plan(device: str, args) -> list[tuple[str, object, tuple, float | None]]:
    """(name, function, its arguments after the check, the budget it needs to start) of each step, in order: the
    proofs that nothing else gives first (the module's docstring), so that a budget running short takes the last."""
    wanted = set(args.steps.split(","))
    shapes = args.shapes.split(",") if args.shapes else DEFAULT_SHAPES[torch_device_type(device)]
    least = MIN_BENCH_S if device != "cpu" else None
    steps = [("env", env_step, (), None), ("cuda-tests", cuda_tests_step, (args.tests.split(","),), None),
             ("e2e", e2e_step, (), None)]
    for shape in shapes:  # a shape's compiled rows (never run on a GPU) before its eager ones (measured 2026-11-30)
        if shape in COMPILED_BATCHES:  # a slow compilation, stopped in time, still leaves the eager bench its start
            leave = (least or MIN_STEP_S) + STOP_S
            steps.append((f"bench-compiled-{shape}", bench_step, (shape, None, COMPILED_BATCHES[shape], leave), least))
        steps.append((f"bench-{shape}", bench_step, (shape, args.memory_gib), least))
    return [s for s in steps if ("bench" if s[0].startswith("bench-") else s[0]) in wanted]


STEPS = ("env", "cuda-tests", "e2e", "bench")  # --steps' names (bench: every bench step)


def refused(args) -> str | None:
    """Why the check's options cannot be run as given, or None: a step name --steps does not know was left out of
    the plan without a word (--steps env,cuda-test ran env alone, "passed"), and a --device or --dtype no command
    takes failed every step after spending its time."""
    unknown = [name for name in args.steps.split(",") if name not in STEPS]
    if unknown:
        return (f"--steps {args.steps}: no step {', '.join(map(repr, unknown))} (the steps: {','.join(STEPS)}); "
                "nothing was run")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        return f"--device {args.device!r}: give auto, cpu, cuda or cuda:N; nothing was run"
    if args.dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16"):
        return f"--dtype {args.dtype!r}: give auto, float32 or bfloat16; nothing was run"
    return None


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def stop(signum, _frame):  # the machine's call ending sends SIGTERM: the report says so, the command goes too
        raise SystemExit(f"stopped by signal {signum}")

    (out / RUNNING_BENCH).unlink(missing_ok=True)  # an earlier check's, stopped from outside: not this one's rows
    previous = signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="llm-srt-gpu-check-") as tmp:
        check = Check(out, Path(tmp), args.device, args.dtype, args.budget_s)
        try:
            check.report()  # before anything can fail: a report that says the check began and did not end
            check.error = refused(args)  # a typo in GPU_CHECK_ARGS: said in the report, and nothing run
            import torch

            check.device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            steps = [] if check.error else plan(check.device, args)
            check.plan = [name for name, *_ in steps]
            guess = ESTIMATE_S if check.device != "cpu" else {}  # a GPU's seconds
            print("[gpu-check] plan: " + ", ".join(f"{n} (~{guess[n]} s)" if n in guess else n for n in check.plan)
                  + f"; budget {args.budget_s:.0f} s", flush=True)
            for name, fn, fn_args, least in steps:
                result = check.step(name, fn, check, *fn_args, least=least)
                if name == "env" and result["ok"] is False and result.get("fatal", True) \
                        and (check.device != "cpu" or check.asked == "auto"):
                    break  # no GPU, or an essential wheel missing: every other step would fail; the report says why
        except BaseException as e:  # Ctrl-C, SIGTERM (`stop`): their report, unfinished (the time ran out); a bug
            what = f"{type(e).__name__}: {e}".splitlines()[0]  # outside the steps ends the check: FAILED, its error
            check.error, check.stopped = (what, None) if isinstance(e, Exception) else (None, what)
            write_report(check, check.started, final=isinstance(e, Exception))
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            check.log.close()
        outcome = write_report(check, check.started)
    print((out / "report.md").read_text())
    return OUTCOMES[outcome]


# ---- wheels for the GPU machine --------------------------------------------------------------------------------------
def pinned(names: tuple[str, ...], constraints: Path) -> list[str]:
    """name==version for each name, from constraints.txt (names compared case- and -/_-insensitively)."""
    def norm(n: str) -> str:
        return n.lower().replace("_", "-")

    pins = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[norm(name.strip())] = version.strip()
    missing = [n for n in names if norm(n) not in pins]
    if missing:
        raise SystemExit(f"gpu_check: {constraints} pins no version of {', '.join(missing)}")
    return [f"{n}=={pins[norm(n)]}" for n in names]


def fetch_wheels(args) -> int:
    """Download GPU_WHEELS (CPython 3.12, x86-64 manylinux, no dependencies: the list is complete) into `dest`."""
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".fetch-*"):  # an interrupted fetch's: .whl/ travels to the GPU machine whole
        shutil.rmtree(stale, ignore_errors=True)
    # the old set stays until the new one is whole; the download goes inside dest (.whl/, git-ignored), not beside
    #   it in the repository's root, where an interrupted fetch left it to travel with the tree (gpu-check.sh
    #   installs dest/*.whl only)
    fresh = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
            "3.12", "--implementation", "cp", *platforms, "-d", str(fresh),
            *pinned(GPU_WHEELS, ROOT / "constraints.txt")]
    done = subprocess.run(argv)
    if done.returncode == 0:  # an earlier pin's wheel beside the new one: pip refuses the pair at install
        for old in dest.glob("*.whl"):
            old.unlink()
        for new in fresh.glob("*.whl"):
            new.replace(dest / new.name)
    shutil.rmtree(fresh, ignore_errors=True)
    if done.returncode == 0:
        size = sum(f.stat().st_size for f in dest.glob("*.whl"))
        print(f"{len(list(dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {dest}")
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the check and write the report")
    r.add_argument("--out", required=True, help="report folder ($OUT on the device machine)")
    r.add_argument("--device", default="auto", help="auto (cuda when present; env fails where nvidia-smi is "
                   "but torch sees no GPU), cuda, or cpu (the rehearsal, tiny shapes)")
    r.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), float32, bfloat16")
    r.add_argument("--shapes", default=None, help="paper shapes to bench (default: qwen2.5-7b on CUDA, tiny on the "
                   "CPU; each with its compiled rows first)")
    r.add_argument("--memory-gib", type=float, default=24.0, help="memory cap of the largest-batch search "
                   "(default 24: the paper's RTX 4090); 0 = the whole GPU")
    r.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"time budget of the whole check (default "
                   f"{BUDGET_S}: the default plan, within a 600 s call); a step that would start after it is "
                   "reported as not run")
    r.add_argument("--steps", default="env,cuda-tests,e2e,bench", help="which steps to run")
    r.add_argument("--tests", default="auto", help="comma-separated pytest paths for the cuda-tests step (auto: "
                   "the test files that hold cuda-marked tests)")
    r.set_defaults(fn=run)
    w = sub.add_parser("fetch-wheels", help="download the wheels the GPU machine lacks")
    w.add_argument("--dest", default=str(ROOT / ".whl"))
    w.set_defaults(fn=fetch_wheels)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
