"""How the GPU check runs a command (scripts/gpu_check_runner.py): its output in the log as it comes, its
process group stopped at its limit, and the command killed with the check."""

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
import gpu_check_runner  # noqa: E402


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
