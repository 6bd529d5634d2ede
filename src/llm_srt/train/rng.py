"""Each rank's random stream (dropout masks, CTC negatives): seeded apart from rank 0's, gathered into a checkpoint and
restored from it.
"""

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint
from .parallel import Dist


def seed_own_stream(seed: int, step: int, rank: int) -> None:
    """Rank `rank` (>= 1) draws from a random stream of its own from `step` on (rank 0 keeps the run's seed)."""
    own = seed * 1_000_003 + step * 1009 + rank
    torch.manual_seed(own)
    np.random.seed(own % 2**32)


def _restore_rng(saved: Any, d: Dist, seed: int, step: int, log=None) -> None:
    """Every rank's RNG as saved; resumed on another number of ranks, rank 0 takes the saved first state and the
    others a seed of their own (so their dropout masks differ), which is reproducible but not the old stream.
    `log` hears of CUDA generator states this host has no GPU for."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == d.world:
        checkpoint.set_rng_state(states[d.rank], log=log)
        return
    checkpoint.set_rng_state(states[0], log=log)
    if d.rank:
        seed_own_stream(seed, step, d.rank)


def _gather_rng(d: Dist) -> Any:
    state = checkpoint.rng_state()
    if d.world == 1:
        return state
    states = [None] * d.world
    dist.all_gather_object(states, state)
    return states
