"""The one training recipe. A curriculum stage (ASR, SMT, SRT, the baseline's S2TT) is a config, not code.

    llm-srt train configs/embedded/asr.yaml [key=value ...]
    torchrun --nproc_per_node 4 -m llm_srt.cli train configs/paper/qwen2.5-3b/asr.yaml   # DDP
    torchrun --nproc_per_node 4 -m llm_srt.cli train configs/paper/qwen2.5-32b/asr.yaml  # distributed: fsdp

setup -> train (resumes from the newest intact checkpoint) -> save final/. Only rank 0 writes.
"""

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import config as config_lib
from ..errors import ConfigError, LLMSRTError
from ..prompts import Task
from . import checkpoint
from .data import DataSection
from .parallel import Dist, Parallel, all_sum, barrier, init_distributed, on_main

FINAL = "final"  # the finished model folder inside output_dir


@dataclass
class ModelSection:
    encoder: str = "embedded"  # HF Whisper folder; "embedded" = the converted Whisper base (llm-srt setup)
    llm: str = "embedded"  # HF causal-LM folder; "embedded" = the converted Gemma-3-270M
    adapter: str = "qformer"  # qformer | pooled | linear (llm_srt.model.adapter.ADAPTERS)
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {num_queries: 80, num_layers: 8}
    lora: dict[str, Any] | None = None  # LoRA options (r, alpha, dropout, target_modules) or null
    dtype: str = "float32"  # LLM weight dtype: float32 | bfloat16 | float16
    init_from: str | None = None  # a model folder (the previous stage) whose adapter / LoRA start this run


@dataclass
class OptimSection:
    lr: float = 1e-4  # peak learning rate (AdamW)
    warmup_steps: int = 1000  # linear warm-up from 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # after warm-up
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    accumulation: int = 1  # micro-batches per optimizer step


@dataclass
class TrainConfig:
    stage: str = "asr"  # a name for logs (asr, smt, srt, baseline, ...)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainable: list[str] = field(default_factory=lambda: ["adapter"])  # adapter | lora
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    max_steps: int = 1000  # optimizer steps
    log_every: int = 10
    eval_every: int = 0  # steps between dev evaluations (0 = only at the end, if dev is set)
    save_every: int = 100  # steps between checkpoints
    keep_last: int = 2  # checkpoints kept (plus the best by dev loss)
    seed: int = 0  # model init / dropout seed
    threads: int = 0  # torch CPU threads (0 = torch's default)
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: ddp (whole model per rank) | fsdp (LLM sharded)
    output_dir: str = "runs/default"

    def __post_init__(self):
        for name in self.data.tasks:
            try:
                Task(name)
            except ValueError:
                raise ConfigError(f"data.tasks: unknown task {name!r}; use {', '.join(t.value for t in Task)}") \
                    from None
        if self.max_steps < 1 or self.data.batch_size < 1 or self.optim.accumulation < 1:
            raise ConfigError("max_steps, data.batch_size and optim.accumulation must be >= 1")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    return config_lib.load(TrainConfig, path, overrides)


def is_finished(output_dir: str | Path) -> bool:
    return (Path(output_dir) / FINAL / "config.json").is_file()


def finished_steps(output_dir: str | Path) -> int | None:
    """max_steps the finished model was trained for (None if its train_config.json is missing or unreadable)."""
    try:
        return int(json.loads((Path(output_dir) / FINAL / "train_config.json").read_text())["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- the run ----------------------------------------------------------------------------------------------------
def lr_lambda(optim: OptimSection, max_steps: int):
    def f(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps)
        if optim.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def train(cfg: TrainConfig, log=print) -> Path:
    """Run (or resume) one training stage; returns the final model folder."""
    from .data import TrainingData
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig
    from ..model.llm import LoraOptions

    out = Path(cfg.output_dir)
    extending = False
    if is_finished(out):
        done = finished_steps(out)
        if done is None or done >= cfg.max_steps:
            log(f"[{cfg.stage}] already finished: {out / FINAL}")
            return out / FINAL
        log(f"[{cfg.stage}] {out / FINAL} has {done} steps; max_steps is now {cfg.max_steps}: continuing from the "
            "newest checkpoint")
        extending = True
    d, device = init_distributed()
    if not d.main:  # one rank speaks; errors still surface from every rank
        log = _quiet
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if d.main:
        checkpoint.check_writable(out, need_bytes=64 << 20)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    model_cfg = SpeechLLMConfig(
        encoder=cfg.model.encoder, llm=cfg.model.llm,
        adapter=cfg.model.adapter, adapter_kwargs=dict(cfg.model.adapter_kwargs),
        lora=LoraOptions.from_dict(cfg.model.lora), trainable=tuple(cfg.trainable), dtype=cfg.model.dtype)
    if cfg.model.init_from:
        init = Path(cfg.model.init_from)
        if not (init / "config.json").is_file():
            raise LLMSRTError(f"model.init_from: {init} is not a model folder (no config.json); train the previous "
                              "stage first or fix the path")
        model = SpeechLLM.from_pretrained(init, encoder=model_cfg.encoder, llm=model_cfg.llm, lora=model_cfg.lora,
                                          trainable=model_cfg.trainable, dtype=model_cfg.dtype)
        log(f"[{cfg.stage}] initialized from {init}")
    else:
        model = SpeechLLM(model_cfg)
    counts = model.parameter_counts()
    log(f"[{cfg.stage}] trainable parameters: adapter {counts['adapter'] / 1e6:.2f}M, lora {counts['lora'] / 1e6:.2f}M,"
        f" total {counts['trainable'] / 1e6:.2f}M of {counts['all'] / 1e6:.1f}M")
    latest = checkpoint.latest(out, log=log)
    if extending and latest is None:
        raise LLMSRTError(f"{out}: no checkpoint left to continue the finished run from; raise max_steps in a new "
                          "output_dir with model.init_from pointing at the finished model instead")
    if latest is not None:  # weights before sharding; the optimizer state once it exists
        model.load_trainable(latest.path)

    parallel = Parallel(model, cfg.distributed, d, device)
    data = TrainingData(cfg.data, model, d, log=log)
    parallel.wrap()
    if parallel.sharded:
        held, whole = parallel.llm_numel()
        log(f"[{cfg.stage}] FSDP over {d.world} ranks: rank {d.rank} holds {held / 1e6:.3f}M of the LLM's "
            f"{whole / 1e6:.3f}M parameters")
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, cfg.max_steps))

    step = 0
    if latest is not None:
        state = checkpoint.load_trainer_state(latest.path)
        parallel.load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data.load_state_dict(state["data"])
        step = state["step"]
        _restore_rng(state["rng"], d, cfg.seed, step)
        log(f"[{cfg.stage}] resumed from {latest.path} at step {step}")

    writer = _tensorboard(out) if d.main else None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if _use_bf16(cfg, device)
                else contextlib.nullcontext())
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.stage}", disable=not d.main, dynamic_ncols=True)
    model.train()
    last_good = latest.path if latest is not None else None
    t0, steps_timed = time.perf_counter(), 0
    while step < cfg.max_steps:
        optimizer.zero_grad(set_to_none=True)
        micro = [data.next_batch() for _ in range(cfg.optim.accumulation)]
        n_total = all_sum(torch.tensor(float(sum(b["n_target_tokens"] for b in micro))), d)
        loss_sum = torch.zeros(())
        for i, batch in enumerate(micro):
            with parallel.sync_gradients(i == len(micro) - 1):
                with autocast:  # the forward only: backward runs in the dtypes autocast chose
                    result = parallel.runner(batch)
                # token-weighted so that N ranks x B examples equals 1 rank x N*B examples
                weight = result["n_tokens"].float() * d.world / n_total.clamp(min=1)
                (result["loss"] * weight).backward()
            loss_sum += result["loss"].detach().float().cpu() * result["n_tokens"].float().cpu()
        loss = (all_sum(loss_sum, d) / n_total.clamp(min=1)).item()
        if not math.isfinite(loss):
            where = f"; the last good checkpoint is {last_good}" if last_good else ""
            raise LLMSRTError(f"[{cfg.stage}] loss is {loss} at step {step + 1}: training stopped{where}. Lower "
                              "optim.lr or check the data")
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        steps_timed += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if writer is not None:
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
        if d.main and (step % cfg.log_every == 0 or step == cfg.max_steps):
            _log_json(out, {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0],
                            "s_per_step": (time.perf_counter() - t0) / steps_timed})
        dev_loss = None
        if data.has_dev and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps):
            dev = data.evaluate(model, autocast, sharded=parallel.sharded)
            dev_loss = dev["dev_loss"]
            if d.main:
                bar.write(f"[{cfg.stage}] step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in dev.items()))
                _log_json(out, {"step": step, **dev})
                if writer is not None:
                    for k, v in dev.items():
                        writer.add_scalar(f"dev/{k.removeprefix('dev_')}", v, step)
            model.train()
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            weights = parallel.trainable_state()  # whole tensors, gathered from every rank under FSDP
            state = {"step": step, "optimizer": parallel.optimizer_state(optimizer),
                     "scheduler": scheduler.state_dict(), "data": data.state_dict(), "rng": _gather_rng(d),
                     "config": config_lib.to_dict(cfg)}
            last_good = on_main(d, lambda: checkpoint.save(out, step, lambda p: model.save_pretrained(
                p, state=weights), state, cfg.keep_last, dev_loss)) or last_good
    bar.close()
    if writer is not None:
        writer.close()
    weights = parallel.trainable_state()
    on_main(d, lambda: _save_final(model, out, weights, cfg))
    if d.main:
        log(f"[{cfg.stage}] done: {out / FINAL} ({(time.perf_counter() - t0) / max(1, steps_timed):.2f} s/step)")
    barrier(d)
    return out / FINAL


def _save_final(model, out: Path, weights: dict, cfg: TrainConfig) -> None:
    from safetensors import SafetensorError

    try:
        model.save_pretrained(out / FINAL, state=weights)
        (out / FINAL / "train_config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2) + "\n")
    except (OSError, SafetensorError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise LLMSRTError(f"{out / FINAL}: cannot write the finished model ({detail}); free space or fix the folder, "
                          "then run the same command to resume from the last checkpoint") from None


def _quiet(*_) -> None:
    pass


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision: bf16 autocast needs a CUDA device here; use fp32 (or auto) on CPU")
    return device.type == "cuda" and cfg.precision in ("auto", "bf16")


def _restore_rng(saved: Any, d: Dist, seed: int, step: int) -> None:
    """Every rank's RNG as saved; resumed on another number of ranks, rank 0 takes the saved first state and the
    others a seed of their own (so their dropout masks differ), which is reproducible but not the old stream."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == d.world:
        checkpoint.set_rng_state(states[d.rank])
        return
    checkpoint.set_rng_state(states[0])
    if d.rank:
        own = seed * 1_000_003 + step * 1009 + d.rank
        torch.manual_seed(own)
        np.random.seed(own % 2**32)


def _gather_rng(d: Dist) -> Any:
    state = checkpoint.rng_state()
    if d.world == 1:
        return state
    states = [None] * d.world
    dist.all_gather_object(states, state)
    return states


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def _log_json(out: Path, record: dict) -> None:
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}) + "\n")


# ---- CLI ----------------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="+", metavar="CONFIG_OR_OVERRIDE",
                        help="a stage YAML (e.g. configs/embedded/asr.yaml), then key=value overrides "
                        "(e.g. optim.lr=1e-5 max_steps=10)")


def main(args) -> int:
    configs = [i for i in args.items if "=" not in i]
    if len(configs) > 1:
        raise ConfigError(f"give one config file, got {configs}; use `llm-srt curriculum` for several stages")
    train(load_config(configs[0] if configs else None, [i for i in args.items if "=" in i]))
    return 0
