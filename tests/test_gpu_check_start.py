"""How the GPU check starts and ends outside its steps: a Python that cannot run it is said in one line before
anything starts, and a crash of the check itself is reported as the check's failure, not as a check stopped from
outside."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402


def test_a_crash_of_the_check_itself_is_its_failure_not_a_check_the_time_stopped(tmp_path, monkeypatch):
    """A bug outside the steps (here, in the plan) left a report saying the check was stopped before its end "(the
    machine's time ran out)", beside "The check itself broke": it now says the check failed, with its error line."""
    def broken_plan(device, args):
        raise RuntimeError("a bug in the plan\nits second line")

    monkeypatch.setattr(gpu_check, "plan", broken_plan)
    with pytest.raises(RuntimeError, match="a bug in the plan"):
        gpu_check.main(["run", "--out", str(tmp_path), "--device", "cpu"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "FAILED" and report["finished"] and not report["ok"]
    assert report["error"] == "RuntimeError: a bug in the plan" and "stopped" not in report
    text = (tmp_path / "report.md").read_text()
    assert "The check itself broke: RuntimeError: a bug in the plan\n" in text and "**FAILED**" in text
    assert "Not finished" not in text and "time ran out" not in text


def test_a_python_without_torch_is_said_in_one_line_before_the_check_starts(tmp_path):
    """GPU_PYTHON naming a Python without torch ran gpu_check.py into a ModuleNotFoundError traceback and a report
    blaming the machine's time; gpu-check.sh now says which module is missing and what to set, in its report too."""
    python = tmp_path / "bare-python"  # this Python without its site-packages: no torch
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, GPU_PYTHON=str(python), USE_WHEELS="0")
    done = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), str(out), "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    said = f"{python} has no torch: set GPU_PYTHON to the Python that has torch"
    assert done.returncode == 1 and done.stderr == f"gpu-check: {said}\n", done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"] == "FAILED" and report["finished"] and report["error"] == said
    assert f"**FAILED** before any step: {said}" in (out / "report.md").read_text()


@pytest.mark.parametrize("status, said", [(0, None), (1, "FAILED"), (2, "incomplete"),
                                          (137, "no outcome: stopped; see ")])
def test_make_gpu_check_says_the_check_s_own_exit_status(tmp_path, status, said):
    """make turns any failed command into its own exit status 2, which README gives for "incomplete": a FAILED check
    read as an incomplete one. make's last line before its error now says the check's status and what it means."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    python = tmp_path / "python"  # this Python, whose check ends with `status`
    python.write_text(f'#!/bin/sh\n[ "$1" = scripts/gpu_check.py ] && exit {status}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(["make", "-s", "--no-print-directory", "gpu-check", f"PY={python}", f"OUT={out}",
                           "DEVICE=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    if said is None:  # passed: make passes, and says nothing
        assert done.returncode == 0 and lines == [], done.stderr
        return
    assert done.returncode == 2 and len(lines) == 2 and lines[1].endswith(f"gpu-check] Error {status}"), done.stderr
    assert lines[0].startswith(f"gpu-check: exit {status} ({said}")
    assert lines[0].endswith("); make itself exits 2 for any failure")


def test_make_gpu_check_says_a_failed_check_s_status(tmp_path):
    """The same through the check itself: an option it refuses is FAILED, exit 1 (make's 2)."""
    out = tmp_path / "out"
    make = ["make", "-s", "--no-print-directory", "gpu-check", f"PY={sys.executable}", f"OUT={out}", "DEVICE=cpu"]
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run([*make, "GPU_CHECK_ARGS=--steps no-such-step"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and json.loads((out / "report.json").read_text())["outcome"] == "FAILED"
    assert "gpu-check: exit 1 (FAILED); make itself exits 2 for any failure\n" in done.stderr
