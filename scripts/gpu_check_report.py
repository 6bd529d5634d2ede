"""The GPU check's report (scripts/gpu_check.py): report.json and report.md, written as each step starts and
ends, and the outcome they give the check."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_check_runner import Check

UNPROVEN = ("several NCCL ranks (DDP, FSDP's fill of the weightless ranks from rank 0, HSDP): one GPU cannot host "
            "two NCCL ranks, so they ran on gloo only (make test)", "FSDP at a paper shape (32B): the benches run 7B "
            "and 3B on one GPU, unsharded")
OUTCOMES = {"passed": 0, "FAILED": 1, "incomplete": 2}  # report.json's outcome -> the check's exit status


def verdict(ok: bool | None) -> str:
    return "ok" if ok else "FAILED" if ok is False else "not done (budget)"



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
