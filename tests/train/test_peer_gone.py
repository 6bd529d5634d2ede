"""Two ranks of `llm-srt train` on gloo (the CPU), their environment set as torchrun's: one killed while they train,
the other stops in one line."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from llm_srt.train import checkpoint

from .conftest import overrides
from .test_recipe import _free_port


@pytest.mark.long(15)
def test_a_rank_whose_peer_is_killed_while_training_stops_in_one_line_naming_the_fix(tiny_setup, tmp_path):
    """The user's walkthrough: `torchrun --nproc_per_node 2 -m llm_srt.cli train ...`, `kill -9` of rank 1, and rank 0
    printed a 33-line traceback ending in gloo's "RuntimeError: ...pair.cc:553] Connection closed by peer" (here
    "Read error ...: Connection reset by peer": which the kernel gives depends on what the rank was doing). It is one
    line: the rank gone, where the state is, and to run the same command again; exit status 2, as every refusal.
    (Started without torchrun: on one node its own SIGTERM to the rank left often comes first, "stopped by
    SIGTERM"; across nodes, or where the rank is in a collective, the collective's error does.)"""
    killed, left = 1, 0
    out = tmp_path / "out"
    args = overrides(tiny_setup, out, max_steps=100000, save_every=2, distributed_timeout_min=1)
    port = _free_port()
    ranks, errs = [], []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        env.pop("TORCHELASTIC_RUN_ID", None)
        errs.append(open(tmp_path / f"rank{rank}.err", "w+"))
        ranks.append(subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "train", *args], env=env,
                                      stdout=subprocess.DEVNULL, stderr=errs[-1]))
    try:
        log, deadline = out / "train_log.jsonl", time.monotonic() + 120
        while not (log.exists() and log.read_text().count("\n") >= 3):  # training: a checkpoint saved, steps on
            assert all(r.poll() is None for r in ranks) and time.monotonic() < deadline, \
                [e.seek(0) or e.read()[-3000:] for e in errs]
            time.sleep(0.05)
        ranks[killed].send_signal(signal.SIGKILL)
        rc = ranks[left].wait(timeout=90)
    finally:
        for r in ranks:
            r.kill()
            r.wait()
    errs[left].seek(0)
    said = errs[left].read()
    lines = [s for s in re.split(r"[\r\n]", said) if s.strip()]
    assert "Traceback" not in said, said[-3000:]
    found = re.fullmatch(rf"llm-srt train: error: \[rank {left}\] rank {killed} at 127\.0\.0\.1:\d+ is gone \(gloo: "
                         r"Connection (reset|closed) by peer\): this rank stops; (the training state is its "
                         r"checkpoint saved at step (\d+): run the same command again to resume from it|step \d+ was "
                         r"not saved: run the same command again to resume from its last checkpoint, .*step-0*(\d+))",
                         lines[-1])
    assert found, said[-3000:]
    assert rc == 2 and sum("error" in s for s in lines) == 1, (rc, said[-3000:])
    assert checkpoint.latest(out).step == int(found[3] or found[4])  # the last checkpoint the line speaks of
