"""The embedded bench's encoder rows: Whisper's encoder on variable-length input vs padded to 30 s."""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import device as dev
from ..audio import SAMPLE_RATE
from .common import PeakMemory


def time_encoder(variable, padded, clips: list[np.ndarray], repeats: int, device: torch.device) -> dict:
    """Best-of-`repeats` seconds of encode() (log-mel + forward) on one batch of long clips, each way, after one
    untimed encode() of that same batch: the first call at a shape makes its allocations and oneDNN primitives,
    which a warm-up on one clip left inside the timer (all of it under --quick, whose one pass is the row).
    `{way}_peak_mib` is the pass's peak (on the CPU the whole process's RSS: the models, what the way before left
    resident); there `{way}_rss_start_mib` and `{way}_peak_rise_mib` say what the pass itself added, as the decode
    rows' `rss_start_mib` and `peak_rise_mib` do (None on CUDA, whose peak is the pass's own); on CUDA
    `{way}_reserved_mib` is the allocator's reserved peak (None on the CPU)."""
    out = {"clips": len(clips), "clip_seconds": round(clips[0].size / SAMPLE_RATE, 2)}
    for name, enc in (("variable", variable), ("padded", padded)):
        with torch.inference_mode():
            enc.encode(clips)  # warm-up, at the timed batch's shape
            times = []
            with PeakMemory(device) as memory:
                for _ in range(repeats):
                    dev.synchronize(device)
                    t0 = time.perf_counter()
                    h, _ = enc.encode(clips)
                    dev.synchronize(device)
                    times.append(time.perf_counter() - t0)
                    frames = int(h.shape[1])
                    del h  # not held while the next pass (or the other way) runs
        out |= {f"{name}_s": round(min(times), 4), f"{name}_frames": frames, f"{name}_peak_mib": memory.mib,
                f"{name}_rss_start_mib": memory.start_mib, f"{name}_peak_rise_mib": memory.rise_mib,
                f"{name}_reserved_mib": memory.reserved_mib}
    return out
