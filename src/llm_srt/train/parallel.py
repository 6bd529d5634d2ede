"""Data parallelism for the recipe: DDP (every rank holds the whole model) or FSDP (the LLM sharded across ranks).

Under `torchrun`, `distributed: ddp` (the default) wraps the model in DistributedDataParallel. `distributed: fsdp`
applies FSDP2 (`fully_shard`): every decoder layer of the LLM is its own shard group, the adapter another, the input
embedding table another unless the output head shares it, and the rest (final norm, output head) the root group, so each
rank holds 1/N of the frozen LLM, e.g. Qwen2.5-32B in bf16 is 64 GB whole but 16 GB per GPU on 4 GPUs. The root group is
gathered whole from the forward to the backward; a table of its own only for each lookup. The Whisper encoder stays
whole on every rank (it only fills the feature cache, or, in a stage without one, encodes each batch under no_grad).
FSDP also runs in a single process (no torchrun): it then shards over a 1-rank process group of its own, e.g. one GPU
with a bf16 LLM and fp32 LoRA.

Only rank 0 reads the LLM from disk: the other ranks build it on the meta device (`llm_device`), and `wrap()`
broadcasts rank 0's weights into every rank's shards (one tensor at a time), so no host holds N whole copies of a
32B model: rank 0 peaks at the whole LLM plus its shard, the others at their shard (measured with a 0.5B bf16 LLM on
2 gloo ranks: 1.9 GB and 1.0 GB peak RSS, against 1.5 GB and 1.6 GB when every rank loads it).

Mixed precision: a shard group may hold parameters of several dtypes (a bf16 decoder layer with fp32 LoRA inside): FSDP2
all-gathers such a group as bytes, and only requires the group's *trainable* parameters to share one dtype. So the
policy (`mixed_precision_policy`) casts nothing (each parameter computes in its own dtype: the LLM in bf16, LoRA and the
adapter in fp32) and reduces gradients in fp32.

`apply_activation_checkpointing` recomputes each decoder layer in the backward instead of keeping its activations
(transformers' non-reentrant checkpointing of the layer's `forward`, not its `__call__`: FSDP2's module hooks, which
gather and free the layer's shards, stay outside the recomputed region; test_parallel checks they run once a step).

Checkpoints are written in the same format either way: the trainable tensors and their optimizer states are
gathered to full tensors (only those: never the frozen LLM), so a run saved under FSDP resumes under DDP or on one
process and the other way round.
"""

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .. import device as device_lib
from .. import ranks
from ..errors import ConfigError, LLMSRTError

STRATEGIES = ("ddp", "fsdp")
# the optimizer state entries that hold one value per parameter element (AdamW's; torch's names)
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_min: float = 30.0, device: str = "auto") -> tuple[Dist, torch.device]:
    """This process's rank and device. Under torchrun (WORLD_SIZE > 1) it joins the process group (NCCL on CUDA,
    gloo on the CPU) with a collective timeout of `timeout_min` minutes: a rank stuck longer (a dead peer, a
    hung filesystem) fails with an error instead of hanging for ever; ranks on CUDA then check that each holds a GPU
    of its own (`check_own_gpus`). Any torchrun rank, one alone included, stops with its launcher."""
    if timeout_min <= 0:
        raise ConfigError(f"distributed_timeout_min: must be > 0 minutes, got {timeout_min}")
    ranks.stop_with_launcher()  # under torchrun only (`--nproc_per_node 1` too: it trained on past torchrun's end)
    d = Dist()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    placed = device_lib.resolve_device(device, flag="device=")  # a training config's key, named so in its errors
    if placed.type == "cuda":
        torch.cuda.set_device(placed)
    _host[2] = timedelta(minutes=timeout_min)
    if d.world > 1 and not dist.is_initialized():
        dist.init_process_group(_backend(placed), timeout=timedelta(minutes=timeout_min))
    if d.world > 1:
        d = Dist(dist.get_rank(), dist.get_world_size(), d.local_rank)
        if placed.type == "cuda":
            check_own_gpus(d, placed)
    return d, placed


def check_own_gpus(d: Dist, device: torch.device) -> None:
    """Every rank's (host, GPU uuid) gathered over the gloo `host_group`: where two ranks hold one GPU (more ranks on
    a host than the GPUs it shows: `resolve_device` gives each cuda:0 where a host shows one), every rank raises the
    same line, here, before rank 0 locks the run. NCCL failed them at the first collective instead ("Duplicate GPU
    detected", a traceback on every rank)."""
    import socket

    props = torch.cuda.get_device_properties(device)
    mine = (socket.gethostname(), str(getattr(props, "uuid", "") or ""), props.name)
    said = [None] * d.world
    dist.all_gather_object(said, mine, group=host_group(d))
    if all(uuid for _, uuid, _ in said) and (shared := shared_gpu(said)) is not None:  # (without a uuid: no
        #   check; SLURM's one GPU a task shows every rank its own as cuda:0)
        raise LLMSRTError(shared)


def shared_gpu(said: list[tuple[str, str, str]]) -> str | None:
    """The error for the first two ranks (in rank order) whose (host, GPU uuid, GPU name) of `said` name one GPU;
    None where each rank has its own."""
    first: dict[tuple[str, str], int] = {}
    for rank, (host, uuid, name) in enumerate(said):
        other = first.setdefault((host, uuid), rank)
        if other != rank:
            return (f"ranks {other} and {rank} both use GPU {name} ({uuid}) on {host}: start torchrun with "
                    "--nproc-per-node equal to the GPUs each node shows (or give each rank its own GPU: "
                    "CUDA_VISIBLE_DEVICES)")
    return None


def llm_device(strategy: str, d: Dist, device: torch.device | None = None) -> str | None:
    """Where the recipe builds the LLM (`SpeechLLM(config, device, llm_device=...)`): under FSDP with several ranks
    only rank 0 loads the weights, the others build a weightless skeleton on "meta" that `Parallel.wrap` fills
    from rank 0. Rank 0 of an FSDP run on GPUs loads onto the host ("cpu"): `wrap` moves the LLM to the GPU one
    shard at a time, so no GPU ever holds the whole LLM. None: on `device` like the rest of the model."""
    _check_strategy(strategy)
    if strategy != "fsdp":
        return None
    if d.world > 1 and not d.main:
        return "meta"
    return "cpu" if device is not None and torch.device(device).type == "cuda" else None


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"distributed: must be {' or '.join(STRATEGIES)}, got {strategy!r}")


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def all_sum(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum `value` over ranks in place (NCCL only reduces CUDA tensors: a CPU value goes there and back)."""
    return _all_reduce(value, d, dist.ReduceOp.SUM) if d.world > 1 else value


def all_max(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The largest `value` of any rank, in place."""
    return _all_reduce(value, d, dist.ReduceOp.MAX) if d.world > 1 else value


def _all_reduce(value: torch.Tensor, d: Dist, op) -> torch.Tensor:
    if dist.get_backend() == "nccl" and value.device.type != "cuda":
        on_gpu = value.cuda()
        dist.all_reduce(on_gpu, op=op)
        value.copy_(on_gpu)
    else:
        dist.all_reduce(value, op=op)
    return value


HOST_WAIT = timedelta(hours=24)  # how long the other ranks wait for rank 0's work on the host alone (reading and
#   checking a corpus's manifests and audio: millions of files on a network disk), as no collective between steps
#   should (distributed_timeout_min)
_host = [None, None, timedelta(minutes=30), None]  # (the default group, its HOST_WAIT gloo group,
#   distributed_timeout_min, the gloo group of that timeout made first to connect the ranks)


def release_groups() -> None:
    """A run's process groups let go before the interpreter exits: the gloo groups kept here, then the default group
    (`train` and `curriculum` under torchrun, however they end: finished, refused or stopped). Left to the interpreter's
    teardown, a gloo group still referenced here aborted a rank now and then ("terminate called without an active
    exception", exit -6, so torchrun called the finished run failed: 3 of 26 two-rank runs here, 0 of 40 released)."""
    _host[:] = [None, None, _host[2], None]
    _mesh[:] = [None, None]
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def host_group(d: Dist):
    """A gloo group of every rank whose collectives wait HOST_WAIT, for what ranks hand each other on the host and
    the long waits for rank 0's work (`from_rank0`, `host_wait`, gathered texts); made once per default group, by
    every rank at the same call (None in one process). A group of distributed_timeout_min is made first (and kept):
    gloo connects every pair of ranks as a group is made, so a node whose host name resolves to a loopback address
    (set GLOO_SOCKET_IFNAME) fails in that time, not in HOST_WAIT. (A monitored barrier cannot stand in for the
    long group: its own timeout holds on rank 0 only, the other ranks wait as their group does.)"""
    if d.world == 1:
        return None
    if _host[0] is not dist.group.WORLD:
        # connected, or failed, in time; kept (destroying a gloo subgroup at once aborted a rank now and then)
        probe = dist.new_group(backend="gloo", timeout=_host[2])
        _host[:] = [dist.group.WORLD, dist.new_group(backend="gloo", timeout=HOST_WAIT), _host[2], probe]
    return _host[1]


def host_wait(d: Dist) -> None:
    """Every rank waits here for the others for up to HOST_WAIT (rank 0 reading a corpus, ranks filling a feature
    cache): a barrier of `host_group`."""
    if d.world > 1:
        dist.barrier(group=host_group(d))


def barrier(d: Dist) -> None:
    """Every rank waits here (the default group). Under NCCL on the rank's GPU, made current by `init_distributed`,
    which is named: torch 2.13 warned "barrier(): using the device under current context" on rank 0 at each barrier
    (the group is made without `device_id`, which would connect NCCL at once: ranks sharing a GPU then failed there
    on NCCL's "Duplicate GPU detected" traceback, before `check_own_gpus` says so in one line)."""
    if d.world > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def on_main(d: Dist, fn):
    """Run `fn` on rank 0 only (a checkpoint write); if it fails with an LLMSRTError, every rank raises the same
    error, so no rank is left waiting at the next collective and each log says why."""
    result, error, failure = None, None, None
    if d.main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001  every rank must hear of any failure, then rank 0 re-raises it
            failure = e
            error = str(e) if isinstance(e, LLMSRTError) else f"{type(e).__name__}: {e}"
    if d.world > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise LLMSRTError(f"rank {d.rank}: rank 0 stopped: {error}")
    return result


class Parallel:
    """How one model is run across ranks: `runner(batch)` for the forward, plus what saving and resuming need."""

    def __init__(self, model: nn.Module, strategy: str, d: Dist, device: torch.device,
                 activation_checkpointing: bool = False, unused_parameters: bool = False, within_node: bool = False):
        """Place the model: whole on `device`, or (FSDP) only the adapter, so the encoder loads there; the LLM
        moves one layer at a time in `wrap`, never whole. FSDP in a single process joins a 1-rank process group
        (made here when none exists; `close()` ends it). `unused_parameters`: a step may leave trained parameters
        unused (a text-only batch skips the adapter): DDP then looks for them each step. FSDP needs no such search
        (a group that does not run has no gradient to reduce) but every rank must run the same modules at each step,
        which TrainConfig sees to (it refuses text-only mt beside speech under fsdp).
        `within_node` (FSDP): shard within each node and replicate across nodes (`shard_mesh`)."""
        _check_strategy(strategy)
        if within_node and strategy != "fsdp":
            raise ConfigError("fsdp_within_node: true needs distributed: fsdp")
        self.within_node = within_node
        self.unused_parameters = unused_parameters
        self.model, self.d, self.device = model, d, torch.device(device)
        self.sharded = strategy == "fsdp"
        self.runner: nn.Module = model
        self.checkpointed_layers = apply_activation_checkpointing(model) if activation_checkpointing else 0
        self._own_group: str | None = None  # the store folder of a 1-rank group made here
        if self.sharded and not dist.is_initialized():
            if d.world > 1:
                raise LLMSRTError(f"distributed: fsdp on {d.world} ranks but no process group; call "
                                  "init_distributed() first")
            self._own_group = _init_single_process_group(self.device)
        (model.adapter if self.sharded else model).to(self.device)

    def wrap(self) -> None:
        """Shard (FSDP) or wrap (DDP) the model; call once the encoder is loaded, before building the optimizer."""
        if self.sharded:
            _fully_shard(self.model, self.device, self.d, self.within_node)
        elif self.d.world > 1:
            # every rank loaded the same frozen weights: DDP's start-up broadcast of rank 0's module states (all of
            # them by default: 15 GB for a bf16 7B LLM, at every stage) and its buffer broadcast before each forward
            # are left to the trainable parameters, which start from rank 0's initialization as before
            frozen = [n for n, p in self.model.named_parameters() if not p.requires_grad]
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.model, frozen + [n for n, _ in self.model.named_buffers()])
            self.runner = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.unused_parameters, forward_sync_buffers=False,
                gradient_as_bucket_view=True)  # the gradients are views into DDP's buckets: no second copy of them

    def close(self) -> None:
        """End the 1-rank process group this object made (a torchrun group belongs to the launcher)."""
        if self._own_group and dist.is_initialized():
            _mesh[:] = [None, None]  # its mesh holds the group: let go with it (`release_groups`)
            dist.destroy_process_group()
        if self._own_group:
            shutil.rmtree(self._own_group, ignore_errors=True)
        self._own_group = None

    def llm_numel(self) -> tuple[int, int]:
        """(LLM parameters held by this rank, LLM parameters in all)."""
        from torch.distributed.tensor import DTensor

        params = list(self.model.llm.parameters())
        held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
        return held, sum(p.numel() for p in params)

    def sync_gradients(self, sync: bool):
        """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of an accumulated step."""
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        if isinstance(self.runner, nn.parallel.DistributedDataParallel) and not sync:
            return self.runner.no_sync()
        return contextlib.nullcontext()

    def trainable_state(self) -> dict:
        """What a model folder stores (`SpeechLLM.trainable_state`: the adapter's tensors, frozen or not, LoRA's and
        the CTC head's) as whole CPU tensors on rank 0 (a collective under FSDP: every rank must call it)."""
        return {k: (None if sd is None else {n: self._kept(t) for n, t in sd.items()})
                for k, sd in self.model.trainable_state().items()}

    def _kept(self, t: torch.Tensor) -> torch.Tensor | None:
        """A whole CPU copy of `t` on rank 0, which writes it; every rank gathers (a collective under FSDP), the
        others keep nothing (at 32B each held ~1.1 GB of host copies of the trainable state and the optimizer's
        moments for nothing at every save)."""
        full = _full(t)
        return full.cpu() if self.d.rank == 0 else None

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """optimizer.state_dict() with whole CPU tensors (a collective under FSDP), loadable on any device."""
        state = optimizer.state_dict()
        state["state"] = {i: {k: self._kept(v) if torch.is_tensor(v) else v for k, v in s.items()}
                          for i, s in sorted(state["state"].items())}
        return state

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a state written by `optimizer_state` (whole tensors), cutting each to this rank's shard. A scalar
        moment saved for what is now a 1-element parameter (the CTC head's `log_scale`, 1-D since 2026-12-01) takes
        its shape; any other mismatch is left for the optimizer to refuse."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, s in state["state"].items():
            for k in MOMENTS:
                v = s.get(k)
                if torch.is_tensor(v) and v.dim() == 0 and i < len(params) and tuple(params[i].shape) == (1,):
                    s[k] = v.reshape(1)
        if self.sharded:
            from torch.distributed.tensor import DTensor, distribute_tensor

            for i, s in state["state"].items():
                p = params[i]
                if isinstance(p, DTensor):
                    s.update({k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                              for k, v in s.items() if torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape)})
        optimizer.load_state_dict(state)


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _init_single_process_group(device: torch.device) -> str:
    """A process group of one rank (gloo on the CPU, NCCL on CUDA) over a file store (no port to pick); returns
    the store's folder."""
    store_dir = tempfile.mkdtemp(prefix="llm-srt-pg-")
    store = dist.FileStore(os.path.join(store_dir, "store"), 1)
    dist.init_process_group(_backend(device), store=store, rank=0, world_size=1,
                            device_id=device if device.type == "cuda" else None)
    return store_dir


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's transformer blocks: the classes HF lists in `_no_split_modules` (e.g. Qwen2DecoderLayer), also once
    sharded (FSDP2 gives each a subclass, FSDPQwen2DecoderLayer)."""
    from ..model.llm import causal_lm

    names = set(getattr(causal_lm(llm), "_no_split_modules", None) or [])
    layers = [m for m in llm.modules() if any(c.__name__ in names for c in type(m).__mro__)]
    if not layers:
        raise ConfigError(f"distributed: fsdp cannot find the decoder layers of {type(causal_lm(llm)).__name__} "
                          "(its _no_split_modules is empty); use distributed: ddp")
    return layers


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every decoder layer of the LLM (of a SpeechLLM, or an LLM itself) in the backward instead of
    storing its activations; returns how many layers. Non-reentrant, so it needs no input that requires grad and
    works with LoRA inside the layers, DDP and FSDP2 (apply it before sharding)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from ..model.llm import causal_lm

    lm = causal_lm(getattr(model, "llm", model))
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise ConfigError(f"activation_checkpointing: {type(lm).__name__} does not support it; set "
                          "activation_checkpointing: false")
    lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # transformers also makes the embedding output require grad (for reentrant checkpointing); non-reentrant
    # needs no such input, so the hook would only add work
    lm.disable_input_require_grads()
    layers = sum(1 for m in lm.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing)
    if not layers:
        raise ConfigError(f"activation_checkpointing: no decoder layer of {type(lm).__name__} can be recomputed; "
                          "set activation_checkpointing: false")
    return layers


def mixed_precision_policy():
    """Each parameter computes in its own dtype (bf16 frozen LLM, fp32 LoRA and adapter); gradients (only of the
    fp32 trainable parameters) are reduced in fp32. A group mixing bf16 and fp32 is all-gathered as bytes."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)


def shard_mesh(device: torch.device, d: Dist, within_node: bool = False):
    """The device mesh FSDP shards over: every rank (1-D); with `within_node` on several nodes, (nodes, GPUs per
    node): each node shards the LLM over its own GPUs and the nodes hold replicas of it (HSDP: the frozen weights,
    gathered at every layer of every step, never cross nodes; only the trainable parameters' gradients are reduced
    across them). torchrun numbers a node's ranks consecutively (LOCAL_WORLD_SIZE of them)."""
    from torch.distributed.device_mesh import init_device_mesh

    local = int(os.environ.get("LOCAL_WORLD_SIZE", d.world))
    if within_node and d.world > 1:  # every rank decides alike: nodes of other sizes raise on every rank, not hang
        sizes = all_max(torch.tensor([local, -local]), d)
        most, least = int(sizes[0]), -int(sizes[1])
        if most != least or d.world % local:
            raise ConfigError(f"fsdp_within_node: {d.world} ranks are not whole nodes of one size (LOCAL_WORLD_SIZE "
                              f"{least} to {most}); give every node as many GPUs, or set fsdp_within_node: false")
    shape, names = ((d.world,), None) if not within_node or local >= d.world else \
        ((d.world // local, local), ("replicate", "shard"))
    key = (dist.group.WORLD, device.type, shape)
    if _mesh[0] != key:  # made once per default group: each 2-D mesh makes NCCL communicators of its own (GPU
        _mesh[:] = [key, init_device_mesh(device.type, shape, mesh_dim_names=names)]  # buffers), one per stage
    return _mesh[1]


_mesh: list = [None, None]  # (the default group, device type, shape) and the mesh `shard_mesh` made for it


def _fully_shard(model: nn.Module, device: torch.device, d: Dist, within_node: bool = False) -> None:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    llm = model.llm
    on_meta = any(t.is_meta for t in (*llm.parameters(), *llm.buffers()))
    if on_meta and d.main:
        raise LLMSRTError("distributed: fsdp: rank 0 must load the LLM's weights (llm_device(...) gives None or "
                          "'cpu' there, 'meta' only on the other ranks)")
    # rank 0's whole LLM (and adapter, LoRA) is the source of every rank's weights; captured before sharding
    # drops all but rank 0's own shard. Whole tensors on rank 0's host only.
    source = llm.state_dict() if d.main and d.world > 1 else {}
    broadcast = d.world > 1 and _any_rank(on_meta, device)
    if d.world > 1:  # the adapter's and the CTC head's init follow the RNG, which the meta ranks used differently
        for part in (model.adapter, model.ctc_head):
            for t in (part.state_dict().values() if part is not None else ()):
                dist.broadcast(t, src=0)

    mesh = shard_mesh(device, d, within_node)
    policy = mixed_precision_policy()
    # the encoder (if loaded) stays whole on every rank: it runs outside forward when filling the feature cache
    whisper = model._whisper
    ignored = set(whisper.parameters()) if whisper is not None else None
    for layer in decoder_layers(llm):  # each moves to `device` (params and buffers) and is cut into shards
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    if not embedding_tied(llm):  # gathered for each lookup only; the root group stays whole from forward to backward
        fully_shard(llm.get_input_embeddings(), mesh=mesh, mp_policy=policy)  # (1.56 GB a GPU at 32B in bf16)
    fully_shard(model.adapter, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, ignored_params=ignored, mp_policy=policy)
    if broadcast:
        _load_from_rank0(llm, source, device)
    del source
    # decoding calls the model outside forward(): gather the root's shards around it as forward does
    register_fsdp_forward_method(model, "generate_ids")


def embedding_tied(llm: nn.Module) -> bool:
    """Whether the LLM's output head is its input embedding table (Qwen2.5-3B, Gemma): then the table is the head's
    too, which `head_losses` reads directly (outside any module call FSDP could gather it for), so it stays in the
    root group; an untied table (Qwen2.5-7B/32B) is a shard group of its own."""
    head = llm.get_output_embeddings()
    return head is not None and getattr(head, "weight", None) is llm.get_input_embeddings().weight


def _any_rank(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _load_from_rank0(llm: nn.Module, source: dict, device: torch.device) -> None:
    """Fill every rank's shards with rank 0's weights (one tensor at a time), and its non-persistent buffers (e.g.
    rotary `inv_freq`, which no state dict carries and a meta skeleton lacks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if any(t.is_meta for t in (*llm.parameters(), *llm.buffers())):
        llm.to_empty(device=device)  # uninitialized memory for this rank's shards, filled below
    set_model_state_dict(llm, source, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for module in llm.modules():
        for name in sorted(module._non_persistent_buffers_set):
            buffer = module._buffers.get(name)
            if buffer is not None:
                dist.broadcast(buffer, src=0)
