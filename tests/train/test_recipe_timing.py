"""The recipe's step timer (train_log.jsonl's s_per_step, the final line's s/step) on a GPU: the clock is read once
the device has done the step's queued work, the optimizer's update included, not while it is still queued."""

import torch

from llm_srt.train import recipe
from llm_srt.train.config import load_config

from .conftest import overrides


def _record_clock(monkeypatch, events):
    """torch.cuda.synchronize and the recipe's perf_counter, recorded in `events` in the order they are called."""
    clock = [0.0]

    def perf_counter():
        clock[0] += 1.0
        events.append("clock")
        return clock[0]

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("cuda sync", str(device))))
    monkeypatch.setattr(recipe.time, "perf_counter", perf_counter)


def test_the_step_clock_waits_for_a_gpus_queued_work_before_it_is_read(monkeypatch):
    """step_seconds was read straight after optimizer.step() and scheduler.step(), which on a GPU return once their
    work is queued: that work's time went to the next step's figure, and the last step's to none. On a CUDA device
    the clock is read after torch.cuda.synchronize of that device; on the CPU (nothing queued) without one."""
    events = []
    _record_clock(monkeypatch, events)
    step = recipe.Recipe.__new__(recipe.Recipe)  # the clock reads the device's type alone: no GPU needed
    step.device = torch.device("cuda", 1)
    step._clock()
    assert events == [("cuda sync", "cuda:1"), "clock"]
    events.clear()
    step.device = torch.device("cpu")
    step._clock()
    assert events == ["clock"]


def test_a_training_step_stops_its_clock_after_the_optimizers_update(tiny_setup, tmp_path, monkeypatch):
    """In a real run each step's timer starts and stops through that clock, its stop after the optimizer's
    update (on the CPU, no torch.cuda.synchronize at all)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    events = []
    _record_clock(monkeypatch, events)
    synchronize = recipe.device_lib.synchronize

    def synced(device):
        events.append(("sync", device.type))
        synchronize(device)

    monkeypatch.setattr(recipe.device_lib, "synchronize", synced)
    hook = register_optimizer_step_post_hook(lambda *_: events.append("optimizer step"))
    try:
        recipe.train(load_config(None, overrides(tiny_setup, tmp_path / "run", max_steps=2)), log=lambda *_: None)
    finally:
        hook.remove()
    steps = [i for i, e in enumerate(events) if e == "optimizer step"]
    assert len(steps) == 2
    for i in steps:
        assert events[i + 1:i + 3] == [("sync", "cpu"), "clock"], events
    assert not any(e[0] == "cuda sync" for e in events if isinstance(e, tuple))
