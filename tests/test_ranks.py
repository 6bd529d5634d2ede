"""ranks.py: what torchrun's ranks share, and a rank's watch on its launcher."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


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
                # whether the same command resumes depends on what was saved (none: training starts at step 0)
                assert out.read_text().rstrip().endswith(
                    "this rank stops (run the same command again to resume: training from its last checkpoint, if "
                    "one was saved (else from step 0), an evaluation from the rows it had decoded)"), out.read_text()
            else:
                assert out.read_text().strip() == "False"
        finally:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _every_subclass(kind: type) -> list[type]:
    return [k for sub in kind.__subclasses__() for k in (sub, *_every_subclass(sub))]


def test_every_error_kind_survives_pickling_and_a_rebuild_from_its_message():
    """UndecodableAudio required a `detail`: from_rank0's `kind(message)` on the other ranks raised a TypeError that
    hid rank 0's line, and a pickle round-trip (pickle calls kind(*args)) failed. Every kind pickles whole; one whose
    __init__ wants more than a message (serve's OverQueueLimit) is rebuilt on another rank as a plain LLMSRTError."""
    import pickle

    import llm_srt.serve.batcher  # noqa: F401  its kinds too
    from llm_srt import errors, ranks
    from llm_srt.errors import LLMSRTError

    kinds = [LLMSRTError, *_every_subclass(LLMSRTError)]
    assert {"UndecodableAudio", "OverQueueLimit"} <= {k.__name__ for k in kinds}
    for kind in kinds:
        made = kind(3.0, 2.0) if kind.__name__ == "OverQueueLimit" else kind("a.wav: wrong; fix it")
        made.extra = "kept"
        back = pickle.loads(pickle.dumps(made))
        assert type(back) is kind and str(back) == str(made) and back.__dict__ == made.__dict__, kind
        rebuilt = ranks._rebuilt(kind, "rank 0 said this")
        assert str(rebuilt) == "rank 0 said this" and isinstance(rebuilt, LLMSRTError), kind
        if kind.__module__ == errors.__name__:  # ours: each made from its message alone
            assert type(kind("rank 0 said this")) is type(rebuilt) is kind
    assert pickle.loads(pickle.dumps(errors.UndecodableAudio("x", "bad header"))).detail == "bad header"


@pytest.mark.long(25)
def test_rank0s_undecodable_audio_reaches_the_other_rank_as_itself(tmp_path):
    """The reviewer's two-rank run (gloo, CPU): rank 1 raised TypeError instead of rank 0's UndecodableAudio."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = textwrap.dedent(f"""
        import os, torch.distributed as dist, torch.multiprocessing as mp
        from llm_srt.ranks import from_rank0
        from llm_srt.errors import UndecodableAudio

        def fn():
            raise UndecodableAudio("a.wav: cannot decode audio (bad header); use wav or flac", "bad header")

        def work(rank, world):
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
            dist.init_process_group("gloo", rank=rank, world_size=world)
            try:
                from_rank0(fn, rank, world)
            except Exception as e:
                # one write of the whole line (print writes the text and the newline apart: the ranks' lines
                # interleaved as "rank 1: ...rank 0: ..." under load)
                os.write(1, f"rank {{rank}}: {{type(e).__name__}}: {{e}}\\n".encode())
            dist.destroy_process_group()

        if __name__ == "__main__":
            mp.spawn(work, args=(2,), nprocs=2)
        """)
    (tmp_path / "two_ranks.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(tmp_path / "two_ranks.py")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    said = "UndecodableAudio: a.wav: cannot decode audio (bad header); use wav or flac"
    assert sorted(done.stdout.splitlines()) == [f"rank 0: {said}", f"rank 1: {said}"], done.stderr[-2000:]


GLOO_RESET = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:13955: "
              "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the "
              "application. Check the logs of the remote worker before reporting an error. GLHF!")
GLOO_CLOSED = "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:23456"
NCCL_REMOTE = ("NCCL error in: /pytorch/torch/csrc/distributed/c10d/NCCLUtils.cpp:77, remote process exited or there "
               "was a network error, NCCL version 2.26.2\nncclRemoteError: A call failed possibly due to a network "
               "error or a remote process exiting prematurely.\nLast error:\nsocketProgress: Connection closed by "
               "remote peer node2<47512>")
NCCL_TIMEOUT = ("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=19, OpType=ALLREDUCE, "
                "NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600081 milliseconds before timing out.")
STORE_GONE = "Failed to recv, got 0 bytes. Connection was likely closed. Did the remote server shutdown or crash?"


def test_peer_gone_names_the_rank_that_went_and_nothing_else(monkeypatch):
    """A rank whose peer was killed died in a 33-line traceback ending in gloo's "Connection closed by peer" (NCCL: a
    DistBackendError). Those errors, and the run's store gone, are one line's start naming the rank gone; a bug's
    (a gloo timeout of a rank that is stuck, NCCL's invalid usage, a store never reached, any other RuntimeError or
    a socket's own OSError) is None: it keeps its traceback."""
    import torch.distributed as dist

    from llm_srt import ranks

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    gone = {
        RuntimeError(GLOO_RESET): "[rank 0] rank 1 at 127.0.0.1:13955 is gone (gloo: Connection reset by peer)",
        RuntimeError(GLOO_CLOSED): "[rank 0] rank 1 at 10.0.0.2:23456 is gone (gloo: Connection closed by peer)",
        dist.DistBackendError(GLOO_CLOSED): "[rank 0] rank 1 at 10.0.0.2:23456 is gone (gloo: Connection closed by "
                                            "peer)",
        dist.DistBackendError(NCCL_REMOTE): "[rank 0] rank 1 is gone (NCCL: remote process exited or network error)",
        dist.DistBackendError(NCCL_TIMEOUT): "[rank 0] rank 1 is gone or stuck (NCCL: its collective timed out)",
        dist.DistNetworkError(STORE_GONE): "[rank 0] the run's store closed its connection (its host, a rank or the "
                                           "launcher, is gone)",
    }
    for error, line in gone.items():
        assert ranks.peer_gone(error) == f"{line}: this rank stops", error
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")  # which of 7 others: its address alone
    assert ranks.peer_gone(RuntimeError(GLOO_CLOSED)).startswith("[rank 3] another rank at 10.0.0.2:23456 is gone")
    assert ranks.peer_gone(dist.DistBackendError(NCCL_REMOTE)).startswith("[rank 3] another rank is gone (NCCL")
    kept = [
        RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 60000ms for "
                     "recv operation to complete"),
        dist.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp:3356, invalid usage (run with NCCL_DEBUG=WARN for "
                              "details), NCCL version 2.26.2\nncclInvalidUsage: This usually reflects invalid usage "
                              "of NCCL library.\nLast error:\nDuplicate GPU detected : rank 1 and rank 0 both on CUDA "
                              "device 1000"),
        dist.DistNetworkError("The client socket has timed out after 600000ms while trying to connect to "
                              "(10.0.0.1, 29500)."),
        RuntimeError("Connection reset by peer"),  # not a collective's
        RuntimeError(NCCL_TIMEOUT),  # the watchdog's text, but not NCCL's error
        ConnectionResetError(104, "Connection reset by peer"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ]
    for error in kept:
        assert ranks.peer_gone(error) is None, error
