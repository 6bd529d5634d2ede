"""The learning-rate schedule: linear warm-up, then constant, linear or cosine decay to max_steps; and a resumed
optimizer and schedule brought to this run's settings.
"""

import math

import torch

from .config import OptimSection, TrainConfig


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


def schedule_note(cfg: TrainConfig) -> str | None:
    """A warning when warm-up outlasts the run, so the lr never reaches its peak (a smoke run of a paper config with
    max_steps=500 ended at half of it); None otherwise (warmup_steps = max_steps, the defaults' 1000 and 1000, reaches
    it at the last step). Not an error: a short smoke run is legitimate."""
    warmup, steps, lr = cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.lr
    if warmup <= steps:
        return None
    end = lr * lr_lambda(cfg.optim, steps)(steps - 1)  # step k trains at the schedule's value for k - 1
    after = "" if cfg.optim.schedule == "constant" else f" (and the {cfg.optim.schedule} decay never starts)"
    return (f"[{cfg.stage}] warning: warmup_steps {warmup} > max_steps {steps}: the schedule never reaches the peak "
            f"optim.lr {lr:.3g}; it ends at {end:.3g} ({end / lr:.0%} of it){after}. Fine for a smoke run; else "
            f"lower optim.warmup_steps")


def _apply_optim_settings(optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig) -> None:
    """This config's lr, betas and weight decay on a resumed optimizer and schedule (their states hold the
    checkpoint's), at the schedule's current step."""
    factor = lr_lambda(cfg.optim, cfg.max_steps)(scheduler.last_epoch)
    scheduler.base_lrs = [cfg.optim.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group.update(initial_lr=cfg.optim.lr, lr=cfg.optim.lr * factor, betas=tuple(cfg.optim.betas),
                     weight_decay=cfg.optim.weight_decay)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _follow_schedule(optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig, log) -> None:
    """The resumed step's lr as this run's schedule gives it: a raised max_steps stretches a linear or cosine
    schedule, and the restored optimizer held the old curve's lr (the first resumed step trained at the old end's
    0). The same number when nothing changed (exact resume)."""
    lrs = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    old = [group["lr"] for group in optimizer.param_groups]
    if lrs != old:
        log(f"[{cfg.stage}] the {cfg.optim.schedule} schedule now runs to max_steps {cfg.max_steps}: lr "
            f"{lrs[0]:.3g} at step {scheduler.last_epoch} (the checkpoint's {old[0]:.3g})")
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs
