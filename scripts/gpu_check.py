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
limit): "incomplete", never "passed"; 128 + N when signal N stopped it (143 for SIGTERM, the device call's end; 130
for Ctrl-C), as a process the signal ended: no outcome (report.json: `finished` false, `stopped`). On a GPU the cuda
tests fail when one of them skipped, or none ran.

Not proven by this check, whatever it says, and named in its report: several NCCL ranks (DDP, FSDP's fill of the
weightless ranks from rank 0, HSDP's 2-D mesh; one GPU cannot host two NCCL ranks, so these ran on gloo only) and
FSDP at a paper shape (the benches run 7B and 3B on one GPU unsharded; 32B is a command of its own, README).

Its modules lie beside it in scripts/ (found through this script's folder, no install): gpu_check_env.py (the wheels
and the env step), gpu_check_runner.py (the steps' commands), gpu_check_pytest.py (cuda-tests), gpu_check_e2e.py,
gpu_check_bench.py, gpu_check_report.py (report.json and report.md).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its modules, beside it (also under python -P or -I)

from gpu_check_bench import RUNNING_BENCH, bench_step  # noqa: E402
from gpu_check_e2e import e2e_step  # noqa: E402
from gpu_check_env import ROOT, env_step, fetch_wheels  # noqa: E402
from gpu_check_pytest import cuda_tests_step  # noqa: E402
from gpu_check_report import OUTCOMES, write_report  # noqa: E402
from gpu_check_runner import MIN_STEP_S, STOP_S, Check, torch_device_type  # noqa: E402

MIN_BENCH_S = 90  # a bench is not started with less of the budget left (a step: MIN_STEP_S): building a paper
#   shape takes ~20 s before its first row
BUDGET_S = 520  # the default --budget-s: the default plan's ~520 s (the module's docstring), within a 600 s call
ESTIMATE_S = {"env": 10, "cuda-tests": 150, "e2e": 120, "bench-compiled-qwen2.5-7b": 120, "bench-qwen2.5-7b": 120,
              "bench-qwen2.5-3b": 115}  # rough seconds on one H100 (the docstring's; guesses, not measurements; the
#   compiled rows': what the budget leaves them)
DEFAULT_SHAPES = {"cpu": ["tiny"], "cuda": ["qwen2.5-7b"]}  # 3B, measured on 2026-11-30, does not fit the budget
COMPILED_BATCHES = {"qwen2.5-7b": "1,64", "tiny": "1,2"}  # shapes also timed with --compile at these batches, in
# a step of their own just before the shape's bench (never run on a GPU yet: the eager rows were measured; its limit
# bounds what a slow compilation takes from the steps after it); tiny's: the CPU rehearsal runs the GPU plan's
# compiled command too (~30 s here)


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

    signals: list[int] = []  # the signal that stopped the check (`stop`)

    def stop(signum, _frame):  # the machine's call ending sends SIGTERM: the report says so, the command goes too
        signals.append(signum)
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
            if signals and isinstance(e, SystemExit):  # stopped, not failed (exit 1 read as FAILED): 128 + N, a
                #   shell's status for a process the signal ended (Ctrl-C's 130 too), which make gpu-check reads as
                #   stopped without an outcome
                print(f"gpu-check: {e} (exit {128 + signals[0]}); {out / 'report.md'} says what it had finished",
                      file=sys.stderr, flush=True)
                raise SystemExit(128 + signals[0]) from None
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            check.log.close()
        outcome = write_report(check, check.started)
    print((out / "report.md").read_text())
    return OUTCOMES[outcome]



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
