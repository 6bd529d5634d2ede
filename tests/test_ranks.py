"""ranks.py: what torchrun's ranks share, and a rank's watch on its launcher."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    """Running (a zombie, dead and not yet reaped by whoever adopted it, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_rank_stops_once_its_torchrun_launcher_is_gone(tmp_path):
    """torchrun starts each rank in a session of its own: a SIGKILL to the launcher (or its process group) left the
    ranks training on, holding the GPUs and the run's lock. A rank watches its launcher and stops without it; a
    process outside torchrun watches nothing (a parent shell may end while a run goes on)."""
    rank = textwrap.dedent("""
        import sys, time
        from llm_srt import ranks
        print(ranks.stop_with_launcher(poll_s=0.05), flush=True)
        time.sleep(30)
        """)
    launcher = textwrap.dedent(f"""
        import os, subprocess, sys
        env = dict(os.environ, **({{"TORCHELASTIC_RUN_ID": "run"}} if sys.argv[1] == "torchrun" else {{}}))
        child = subprocess.Popen([sys.executable, "-c", {rank!r}], env=env, stdout=open(sys.argv[2], "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True)
        print(child.pid, flush=True)
        while not open(sys.argv[2]).read():
            pass
        os.kill(os.getpid(), 9)
        """)
    for how, stops in (("torchrun", True), ("plain", False)):
        out = tmp_path / f"{how}.txt"
        proc = subprocess.run([sys.executable, "-c", launcher, how, str(out)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        pid = int(proc.stdout)
        try:
            deadline = time.monotonic() + (10 if stops else 1)  # plain: still running after 20 polls
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _alive(pid) != stops, (how, out.read_text())
            if stops:
                assert "the torchrun launcher (pid" in out.read_text() and "is gone: this rank stops" in out.read_text()
            else:
                assert out.read_text().strip() == "False"
        finally:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
