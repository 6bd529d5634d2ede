"""train/parallel.py's CUDA/NCCL-only branches, run on the CPU: the code of each branch runs for real over gloo, and
only what a CPU cannot do is faked (CUDA's queries and moves, NCCL's name for the default group, a CUDA device mesh,
DDP's device_ids on a CPU module). Under torchrun on GPUs these branches are behind every all_sum/all_max, the
process group's start and its GPU check, DDP, HSDP's mesh and single-process FSDP; no CPU test ran them before."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import parallel
from llm_srt.train.parallel import Dist, Parallel

from .conftest import gloo_when_all_arrived


class _Net(nn.Module):
    """A frozen layer, a trained head and a buffer; `to` a CUDA device stays on the CPU and notes where it was sent."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(3, 3).requires_grad_(False)
        self.head = nn.Linear(3, 1)
        self.register_buffer("scale", torch.full((1,), 2.0))
        self.placed: list[str] = []

    def to(self, device):
        self.placed.append(str(device))
        return self

    def forward(self, x):
        return self.head(self.frozen(x) * self.scale).sum()


def _net_input(rank: int) -> torch.Tensor:
    return torch.arange(6.0).reshape(2, 3) * (rank + 1)


def _fake_gpus(rank: int, said: dict) -> tuple[list, dict]:
    """Two GPUs shown to each rank (its GPU's uuid: `uuids["now"][rank]`); a tensor's `.cuda()` is a CPU copy kept
    in `on_gpu`; the default group is NCCL's (the host groups stay gloo), and its all_reduce, as NCCL's, refuses a
    tensor that is not on the GPU."""
    on_gpu: list[torch.Tensor] = []
    uuids = {"now": ("GPU-a", "GPU-b")}
    torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: 2)
    torch.cuda.set_device = lambda device: said.setdefault("set_device", []).append(str(device))

    def properties(device):
        said.setdefault("properties_of", []).append(str(device))
        return SimpleNamespace(uuid=uuids["now"][rank], name="NVIDIA H100")

    torch.cuda.get_device_properties = properties

    def cuda(self, *args, **kwargs):
        copy = self.clone()
        on_gpu.append(copy)
        return copy

    torch.Tensor.cuda = cuda
    real_backend, real_all_reduce = dist.get_backend, dist.all_reduce

    def backend(group=None):
        return "nccl" if group is None or group is dist.group.WORLD else real_backend(group)

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if backend(group) == "nccl" and not any(tensor is t for t in on_gpu):
            raise RuntimeError("NCCL: no support for CPU tensors")
        return real_all_reduce(tensor, op=op, group=group, async_op=async_op)

    dist.get_backend, dist.all_reduce = backend, all_reduce
    return on_gpu, uuids


def _nccl_rank(rank: int, world: int, store: str, out: str) -> None:
    """One torchrun rank on a host of 2 GPUs (LOCAL_RANK = rank), its default group NCCL's: init_distributed, its
    GPU check, all_sum/all_max, DDP on the rank's GPU, and HSDP's 2-D mesh."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    said: dict = {}
    on_gpu, uuids = _fake_gpus(rank, said)
    real_init = dist.init_process_group

    def init(backend, timeout, **kwargs):
        said["init"] = [backend, timeout.total_seconds(), sorted(kwargs)]
        dist.init_process_group = real_init
        gloo_when_all_arrived(store, rank, world, timedelta(seconds=30))

    dist.init_process_group = init

    def keep():  # what this rank said so far, on disk (a rank stopped later still shows it)
        Path(out, f"rank{rank}.json").write_text(json.dumps(said))

    try:
        uuids["now"] = ("GPU-a", "GPU-a")  # both ranks on one GPU: refused as the group starts
        try:
            parallel.init_distributed(timeout_min=0.5, device="cuda")
        except LLMSRTError as e:
            said["shared"] = str(e)
        for case, now in (("own", ("GPU-a", "GPU-b")), ("no_uuid", ("", ""))):  # without a uuid: not checked
            uuids["now"] = now
            d, placed = parallel.init_distributed(timeout_min=0.5, device="cuda")
            said[case] = [d.rank, d.world, d.local_rank, str(placed)]
        keep()

        values = torch.tensor([1.0 + rank, 10.0 * (rank + 1)])
        summed = parallel.all_sum(values, d)
        said["sum"] = [summed is values, values.device.type, values.tolist()]
        peak = torch.tensor([rank, -rank])
        said["max"] = [parallel.all_max(peak, d) is peak, peak.tolist()]
        said["moved"] = len(on_gpu)
        keep()

        _ddp(d, placed, said)
        keep()
        _hsdp_mesh(d, said)
    except Exception as e:  # noqa: BLE001  kept beside what the rank said before it (the test shows both)
        said["error"] = f"{type(e).__name__}: {e}"
    finally:
        keep()
        parallel.release_groups()


def _ddp(d: Dist, placed: torch.device, said: dict) -> None:
    """DDP on this rank's GPU: device_ids [its index] (DDP itself then runs on the CPU, without them)."""
    class OnCpu(nn.parallel.DistributedDataParallel):
        def __init__(self, module, device_ids=None, **kwargs):
            said["device_ids"] = device_ids
            super().__init__(module, device_ids=None, **kwargs)

    nn.parallel.DistributedDataParallel = OnCpu
    net = _Net()
    par = Parallel(net, "ddp", d, placed)
    par.wrap()
    par.runner(_net_input(d.rank)).backward()
    said["ddp"] = {"placed": net.placed, "ignored": sorted(par.runner.parameters_to_ignore),
                   "grads": {n: p.grad.tolist() for n, p in net.named_parameters() if p.grad is not None}}


def _hsdp_mesh(d: Dist, said: dict) -> None:
    """fsdp_within_node's mesh on CUDA: nodes of other sizes refused by both ranks (their sizes all_max'ed), then 2
    nodes of 1 GPU each, a (2, 1) mesh made once."""
    from torch.distributed import device_mesh

    real_mesh = device_mesh.init_device_mesh

    def mesh(device_type, shape, mesh_dim_names=None):
        said.setdefault("meshes", []).append([device_type, list(shape), list(mesh_dim_names or [])])
        return real_mesh("cpu", shape, mesh_dim_names=mesh_dim_names)

    device_mesh.init_device_mesh = mesh
    cuda = torch.device("cuda", d.local_rank)
    os.environ["LOCAL_WORLD_SIZE"] = "2" if d.rank == 0 else "1"
    try:
        parallel.shard_mesh(cuda, d, within_node=True)
    except ConfigError as e:
        said["uneven"] = str(e)
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    made = parallel.shard_mesh(cuda, d, within_node=True)
    said["mesh"] = [made is parallel.shard_mesh(cuda, d, within_node=True), made.ndim, list(made.mesh_dim_names)]


@pytest.mark.long(15)
def test_nccl_ranks_start_check_their_gpus_reduce_through_the_gpu_and_wrap_ddp_on_their_own(tmp_path, monkeypatch):
    """Two ranks of a host with 2 GPUs, their default group NCCL's (gloo beneath): init_distributed starts NCCL on
    the rank's GPU and refuses two ranks on one GPU; all_sum/all_max send a CPU value to the GPU for NCCL and copy the
    result back into it; DDP is given the rank's GPU; HSDP's mesh is made on CUDA once."""
    import socket

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    ranks = mp.spawn(_nccl_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False)
    deadline, stopped = time.monotonic() + 60, ""  # ranks that part ways (one making a group the other never
    while not ranks.join(timeout=1):  # joins) wait for ever in its store: stopped, what each said still checked
        if time.monotonic() > deadline:
            for p in ranks.processes:
                p.kill()
            stopped = " (the ranks hung: stopped after 60 s)"
            break
    said = [json.loads(f.read_text()) if (f := tmp_path / f"rank{r}.json").exists() else {} for r in (0, 1)]
    host = socket.gethostname()
    for rank, s in enumerate(said):
        got = s.get  # (a rank that raised said less, and why: its "error")
        why = f"rank {rank}: {got('error')}{stopped}"
        assert got("init") == ["nccl", 30.0, []], why  # NCCL, once, with the collective timeout
        assert got("set_device") == [f"cuda:{rank}"] * 3 and set(got("properties_of") or ()) == {f"cuda:{rank}"}, why
        assert got("shared") == (f"ranks 0 and 1 both use GPU NVIDIA H100 (GPU-a) on {host}: start torchrun with "
                                 "--nproc-per-node equal to the GPUs each node shows (or give each rank its own GPU: "
                                 "CUDA_VISIBLE_DEVICES)"), why
        assert got("own") == got("no_uuid") == [rank, 2, rank, f"cuda:{rank}"], why
        # reduced on the GPU (the fake NCCL refuses CPU tensors), the result back in the caller's CPU tensor
        assert got("sum") == [True, "cpu", [3.0, 30.0]] and got("max") == [True, [1, 0]], why
        assert got("moved") == 2, why
        assert got("device_ids") == [rank] and got("ddp", {}).get("placed") == [f"cuda:{rank}"], why
        assert got("ddp", {}).get("ignored") == ["frozen.bias", "frozen.weight", "scale"], why
        assert "not whole nodes of one size (LOCAL_WORLD_SIZE 1 to 2)" in got("uneven", ""), why
        assert got("meshes") == [["cuda", [2, 1], ["replicate", "shard"]]], why
        assert got("mesh") == [True, 2, ["replicate", "shard"]], why
        assert got("error") is None and not stopped, why
    # DDP averaged the head's gradient over the ranks' inputs; the frozen layer has none
    grads = []
    for rank in (0, 1):
        net = _Net()
        net(_net_input(rank)).backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    for s in said:
        assert s["ddp"]["grads"].keys() == grads[0].keys() == {"head.weight", "head.bias"}
        for n, g in grads[0].items():
            torch.testing.assert_close(torch.tensor(s["ddp"]["grads"][n]), (g + grads[1][n]) / 2, msg=n)


class _Sharded(nn.Module):
    def __init__(self):
        super().__init__()
        self.adapter = _Net()


def test_fsdp_on_one_gpu_starts_a_one_rank_nccl_group_bound_to_that_gpu(monkeypatch):
    """FSDP with no torchrun on cuda:0 makes its own 1-rank group: NCCL, bound to the GPU (device_id), over a file
    store that close() removes with the group; the adapter goes to the GPU (the LLM is left to `wrap`)."""
    assert not dist.is_initialized()
    seen = {}
    real_init = dist.init_process_group

    def init(backend, store, rank, world_size, device_id):
        seen.update(backend=backend, rank=rank, world=world_size, device_id=device_id)
        real_init("gloo", store=store, rank=rank, world_size=world_size)

    monkeypatch.setattr(dist, "init_process_group", init)
    model = _Sharded()
    par = Parallel(model, "fsdp", Dist(), torch.device("cuda", 0))
    store = Path(par._own_group)
    try:
        assert seen == {"backend": "nccl", "rank": 0, "world": 1, "device_id": torch.device("cuda", 0)}
        assert dist.is_initialized() and dist.get_world_size() == 1 and (store / "store").exists()
        assert model.adapter.placed == ["cuda:0"]
    finally:
        par.close()
    assert not dist.is_initialized() and not store.exists()
