"""How the GPU check ends outside its steps: a crash of the check itself is reported as the check's failure, not as
a check stopped from outside."""

import json
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

