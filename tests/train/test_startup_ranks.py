"""The start-up checks under torchrun on two nodes, each in a working folder of its own: a check that fails on one
node stops every rank with that node's one line, none in a transport traceback or a hang."""

import os
import re
import subprocess
import sys

import pytest

from .conftest import overrides
from .test_recipe import _free_port


@pytest.mark.long(20)
@pytest.mark.parametrize("verb", ["train", "curriculum"])
def test_a_start_up_check_failing_on_one_node_stops_every_node_with_that_nodes_line(tiny_setup, tmp_path, verb):
    """`model.llm=llm`, a folder on node 0's disk alone. `train`: node 1 stopped in one line (`check_before_start`),
    and node 0 went on to rank 0's lock of output_dir, a collective rank 1 never reached: a 70-line gloo traceback
    ("Connection closed by peer"; under NCCL a hang for distributed_timeout_min). `curriculum` checked its stages
    before any process group existed. A clean stop is exit status 2 (an error line), a traceback 1; torchrun's own
    report of a failed rank follows either way."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n in (0, 1):
        (tmp_path / f"node{n}").mkdir()
    (tmp_path / "node0" / "llm").symlink_to(tiny_setup["llm"])
    args = overrides(tiny_setup, tmp_path / "out", max_steps=2, distributed_timeout_min=1, **{"model.llm": "llm"})
    where = ""
    if verb == "curriculum":
        (tmp_path / "asr.yaml").write_text("stage: asr\n")
        args, where = [str(tmp_path / "asr.yaml"), *args], f"stage asr ({tmp_path / 'asr.yaml'}): "
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(n), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               "-m", "llm_srt.cli", verb, *args], cwd=tmp_path / f"node{n}", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    try:
        said = [node.communicate(timeout=150)[0] for node in nodes]
    except subprocess.TimeoutExpired:
        pytest.fail("a node hung")
    finally:
        for node in nodes:
            node.kill()
    line = f"{where}model.llm: llm: no such folder; fix the path (or the variable it came from)"
    for n, (out, prefix) in enumerate(zip(said, ("rank 1: ", ""))):
        errors = [s for s in out.splitlines() if s.startswith(f"llm-srt {verb}: error:")]
        assert errors == [f"llm-srt {verb}: error: {prefix}{line}"], (n, out[-3000:])
        assert "(exitcode: 2)" in out and "Connection closed" not in out, (n, out[-3000:])
        assert not re.search(r"^\[rank\d+\]: Traceback", out, re.M), (n, out[-3000:])
