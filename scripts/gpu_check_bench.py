"""The GPU check's bench steps (scripts/gpu_check.py): `bench --paper-shape SHAPE`, its compiled rows in a step
of their own, and what a finished bench must have measured."""

from __future__ import annotations

from gpu_check_report import measured_rows, read_json
from gpu_check_runner import STEP_LIMITS, Check, torch_device_type

MIN_COMPILED_S = 60  # the compiled rows are not run with less than this of their own, after what they keep for
#   the bench after them: building the shape and compiling batch 1 (never measured on a GPU: a guess)
RUNNING_BENCH = "bench-running.json"  # in OUT: the running bench's --json-out (bench_step)


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
