"""The bench's training comparison: a step from audio (the Whisper encoder runs) vs one from the encoder-feature
cache (it does not), through the recipe's own pieces; and how much of the audio step the encoder is, so the cache's
real job can be judged: a cached step should cost no more than the audio step less its encoder time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import device as dev
from ..prompts import Task, build
from .common import PeakMemory


# ---- training: encoder-feature cache vs audio ---------------------------------------------------------------------
def time_training(model, utts: list, batch_size: int, steps: int, workdir: Path) -> dict:
    """Seconds per optimizer step on one batch read as audio (encoder runs) vs from the feature cache (it does not),
    through the recipe's own pieces (collate, FeatureCache, SpeechLLM.forward, AdamW), and the seconds the encoder
    (log-mel + forward, timed around `WhisperEncoder.encode`) took inside the audio steps: medians over `steps`
    timed steps each way, the two ways taking turns in either order. Trained weights restored from a copy on the
    CPU (on a GPU one beside them counted in `peak_mib`, the adapter's size again for the comparison's peak)."""
    from ..data.features import FeatureCache
    from ..data.loader import Example, collate

    chosen = [utts[i % len(utts)] for i in range(batch_size)]
    examples = []
    for i, u in enumerate(chosen):
        prompt, target = build(Task.SRT, u.src, u.tgt, u.transcript, u.translation)
        examples.append(Example(id=f"bench{i}", audio=u.path, duration=u.seconds, task=Task.SRT, prompt=prompt,
                                target=target, src=u.src, tgt=u.tgt, transcript=u.transcript,
                                translation=u.translation))
    whisper = model.encoder
    cache = FeatureCache(workdir / "features", whisper.identity, {"pad_to_30s": whisper.pad_to_30s})

    @torch.inference_mode()
    def encode(audios):
        h, mask = whisper.encode(audios)
        return [h[i, mask[i]].float().cpu().numpy() for i in range(len(audios))]

    paths = [e.audio for e in examples]
    cache.get_or_compute(paths, encode)  # fill the cache (the recipe does this once, before training)
    batches = {"audio": lambda: collate(examples),
               "cached": lambda: collate(examples, cache.get_or_compute(paths, encode))}
    params = model.trainable_parameters()
    saved = [p.detach().to("cpu", copy=True) for p in params]  # on the CPU: no part of the device's peak_mib
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    times: dict[str, list[float]] = {"audio": [], "cached": []}
    encoder_calls = {"audio": 0, "cached": 0}
    way = "audio"

    def count(*_):
        encoder_calls[way] += 1

    handle = whisper.encoder.conv1.register_forward_hook(count)
    encoder_s: list[float] = []
    original_encode = whisper.encode

    def timed_encode(audios):  # an instance attribute shadows the method until the finally below
        dev.synchronize(device)
        t0 = time.perf_counter()
        out = original_encode(audios)
        dev.synchronize(device)
        if timing:
            encoder_s.append(time.perf_counter() - t0)
        return out

    model.train()
    device = model.device
    autocast = recipe_autocast(device, "auto")  # configs/embedded's precision (none is set: the default)
    timing = False
    whisper.encode = timed_encode
    try:
        with PeakMemory(device) as memory:
            # step 0 warms up; the two ways alternate in turns of either order (ABBA), so that a drift of the
            # machine and what one way leaves the other (e.g. freed memory) hit both alike
            for step in range(steps + 1):
                for way in ("audio", "cached") if step % 2 == 0 else ("cached", "audio"):
                    timing = bool(step) and way == "audio"
                    dev.synchronize(device)
                    t0 = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:  # the forward only, as the recipe
                        loss = model(batches[way]())["loss"]
                    loss.backward()
                    optimizer.step()
                    dev.synchronize(device)
                    if step:
                        times[way].append(time.perf_counter() - t0)
    finally:
        handle.remove()
        del whisper.encode
        model.eval()
        optimizer.zero_grad(set_to_none=True)  # else the gradients stay, the trainable weights' size again, on their
        #   device for the rest of the bench (as bench/paper.py's training rows let theirs go)
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
    audio_s, cached_s = float(np.median(times["audio"])), float(np.median(times["cached"]))  # medians: one slow
    encoder_median = float(np.median(encoder_s))  # step on a shared machine moves no row alone
    return {"batch_size": batch_size, "steps": steps,
            "s_per_step_audio": round(audio_s, 4), "s_per_step_cached": round(cached_s, 4),
            "encoder_s_per_audio_step": round(encoder_median, 4),
            "cached_vs_audio_less_encoder": cached_vs_audio_less_encoder(cached_s, audio_s, encoder_median),
            "encoder_calls_audio": encoder_calls["audio"], "encoder_calls_cached": encoder_calls["cached"],
            "cache_hits": cache.hits, "cache_misses": cache.misses, "peak_mib": memory.mib,
            "rss_start_mib": memory.start_mib, "peak_rise_mib": memory.rise_mib,  # on the CPU: what the steps added
            "reserved_mib": memory.reserved_mib}  # on CUDA: the allocator's reserved peak (paper.py's rows' too)


def cached_vs_audio_less_encoder(cached_s: float, audio_s: float, encoder_s: float) -> float | None:
    """A cached step's seconds over an audio step's less its encoder's, of the unrounded medians (the stored ones are
    rounded to 0.1 ms, so a tiny model's steps read 0.0003 - 0.0003 and summarize stopped on a ZeroDivisionError),
    itself unrounded: summarize rounds it once, to 2 decimals, as every ratio (rounded to 4 first, 1.05503 read 1.055,
    then 1.05, not 1.06); None where the encoder took the whole audio step (nothing is left to compare with)."""
    rest = audio_s - encoder_s
    return cached_s / rest if rest > 0 else None


def recipe_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast the training recipe runs a step's forward under, on `device` with the config's `precision`
    (train/preflight.py's `use_bf16`): bf16 on CUDA where precision is bf16 (configs/paper's), or auto on a GPU that
    computes bf16 natively (configs/embedded's: the default); off on the CPU. The config and the GPU decide, not the
    weights' dtype, which the bench's rows followed: `bench --dtype float32` on an H100 timed float32 products where
    the recipe runs bf16 ones, and bf16 weights on a V100 (emulated bf16) an autocast its embedded recipe does not."""
    from types import SimpleNamespace

    from ..train.preflight import use_bf16

    bf16 = device.type == "cuda" and use_bf16(SimpleNamespace(precision=precision), device)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
