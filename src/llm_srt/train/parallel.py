"""Data parallelism for the recipe: DDP (every rank holds the whole model) or FSDP (the LLM sharded across ranks).

Under `torchrun`, `distributed: ddp` (the default) wraps the model in DistributedDataParallel. `distributed: fsdp`
applies FSDP2 (`fully_shard`): every decoder layer of the LLM is its own shard group, the adapter another, and the
rest (embeddings, final norm, output head) the root group, so each rank holds 1/N of the frozen LLM, e.g. Qwen2.5-32B
in bf16 is 64 GB whole but 16 GB per GPU on 4 GPUs. The Whisper encoder stays whole on every rank (it only fills
the feature cache).

Checkpoints are written in the same format either way: the trainable tensors and their optimizer states are
gathered to full tensors (only those: never the frozen LLM), so a run saved under FSDP resumes under DDP or on one
process and the other way round.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, LLMSRTError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> tuple[Dist, torch.device]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
        return d, torch.device("cuda", d.local_rank)
    return d, torch.device("cpu")


def all_sum(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum `value` over ranks in place (NCCL only reduces CUDA tensors: a CPU value goes there and back)."""
    if d.world > 1:
        if dist.get_backend() == "nccl" and value.device.type != "cuda":
            on_gpu = value.cuda()
            dist.all_reduce(on_gpu)
            value.copy_(on_gpu)
        else:
            dist.all_reduce(value)
    return value


def barrier(d: Dist) -> None:
    if d.world > 1:
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

    def __init__(self, model: nn.Module, strategy: str, d: Dist, device: torch.device):
        """Place the model: whole on `device`, or (FSDP) only the adapter, so the encoder loads there; the LLM
        moves one layer at a time in `wrap`, never whole."""
        if strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"distributed: must be ddp or fsdp, got {strategy!r}")
        self.model, self.d, self.device = model, d, device
        self.sharded = strategy == "fsdp" and d.world > 1
        self.runner: nn.Module = model
        (model.adapter if self.sharded else model).to(device)

    def wrap(self) -> None:
        """Shard (FSDP) or wrap (DDP) the model; call once the encoder is loaded, before building the optimizer."""
        if self.sharded:
            _fully_shard(self.model, self.device, self.d)
        elif self.d.world > 1:
            self.runner = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.d.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=False)

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
        """The model's trainable tensors as whole CPU tensors (a collective under FSDP: every rank must call it)."""
        return {k: (None if sd is None else {n: _full(t).cpu() for n, t in sd.items()})
                for k, sd in self.model.trainable_state().items()}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """optimizer.state_dict() with whole CPU tensors (a collective under FSDP), loadable on any device."""
        state = optimizer.state_dict()
        state["state"] = {i: {k: _full(v).cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                          for i, s in sorted(state["state"].items())}
        return state

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a state written by `optimizer_state` (whole tensors), cutting each to this rank's shard."""
        if self.sharded:
            from torch.distributed.tensor import DTensor, distribute_tensor

            params = [p for group in optimizer.param_groups for p in group["params"]]
            for i, s in state["state"].items():
                p = params[i]
                if isinstance(p, DTensor):
                    s.update({k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                              for k, v in s.items() if torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape)})
        optimizer.load_state_dict(state)


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's transformer blocks: the classes HF lists in `_no_split_modules` (e.g. Qwen2DecoderLayer)."""
    from ..model.llm import causal_lm

    names = set(getattr(causal_lm(llm), "_no_split_modules", None) or [])
    layers = [m for m in llm.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"distributed: fsdp cannot find the decoder layers of {type(causal_lm(llm)).__name__} "
                          "(its _no_split_modules is empty); use distributed: ddp")
    return layers


def _fully_shard(model: nn.Module, device: torch.device, d: Dist) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (d.world,))
    # the encoder (if loaded) stays whole on every rank: it runs outside forward when filling the feature cache
    whisper = model._whisper
    ignored = set(whisper.parameters()) if whisper is not None else None
    for layer in decoder_layers(model.llm):  # each moves to `device` (params and buffers) and is cut into shards
        fully_shard(layer, mesh=mesh)
    fully_shard(model.adapter, mesh=mesh)
    fully_shard(model, mesh=mesh, ignored_params=ignored)
    # decoding calls the model outside forward(): gather the root's shards around it as forward does
    register_fsdp_forward_method(model, "generate_ids")
