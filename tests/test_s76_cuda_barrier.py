"""`parallel.barrier` on an NCCL default group named no device: torch 2.13's dist.barrier then warned "barrier(): using
the device under current context" on rank 0 (the group is made without `device_id`, on purpose: see `barrier`). It
now names the rank's current GPU (made current by `init_distributed`); a gloo group's barrier is called as before, and
one process calls none. (No GPU or NCCL here: the backend's name, the current device and dist.barrier are faked.)"""

import torch
import torch.distributed as dist

from llm_srt.train import parallel
from llm_srt.train.parallel import Dist


def test_an_nccl_barrier_names_the_ranks_gpu_a_gloo_one_none(monkeypatch):
    called = []
    backend = ["nccl"]
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend[0])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: called.append((args, kwargs)))
    parallel.barrier(Dist(rank=1, world=2, local_rank=1))
    assert called == [((), {"device_ids": [1]})]
    called.clear()
    backend[0] = "gloo"  # a CPU run: as before
    parallel.barrier(Dist(rank=1, world=2, local_rank=1))
    assert called == [((), {})]
    called.clear()
    parallel.barrier(Dist())  # one process: no collective
    assert called == []
