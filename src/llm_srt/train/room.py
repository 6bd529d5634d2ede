"""The room a stage's data needs, checked before it is used: the feature cache's disk (before the fill) and the
shared memory its DataLoader workers pass batches through (`/dev/shm`), each on every rank, so that none is left
waiting at a collective for one that stopped."""

import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..audio import format_bytes
from ..errors import ConfigError
from .parallel import Dist, all_max, all_sum

PREFETCH = 4  # batches each DataLoader worker prepares ahead
SHARED_MEMORY = "/dev/shm"  # where a DataLoader worker's batch tensors pass to its rank (Linux): PREFETCH + 1 each


def check_cache_room(root: Path, free: int, mine: list[float], d: Dist, kept: int = 0) -> dict[str, float]:
    """Before a feature cache is filled: `mine` = [bytes, utterances, seconds of audio, utterances already cached]
    that this rank adds, `free` the free bytes of its disk, `kept` those of them held back for one checkpoint of
    output_dir on the same disk (rank 0: `same_disk`). Returns the totals over ranks, with the least `free` left;
    raises ConfigError on every rank (none is left waiting at a collective) when the total does not fit there.
    The total, not a rank's share: ranks on one machine, or on a shared filesystem, fill the same disk."""
    total = all_sum(torch.tensor([*mine, kept], dtype=torch.float64), d).tolist()
    usable = free - kept
    least = -all_max(torch.tensor([-float(usable)], dtype=torch.float64), d).item()  # the least free of any rank
    need, utterances, seconds, cached, held = total
    if need > least:
        beside = f" once {format_bytes(held)} are kept for one checkpoint of output_dir, on the same disk" if held \
            else ""
        raise ConfigError(f"data.feature_cache: the encoder features of {utterances:,.0f} utterances "
                          f"({seconds / 3600:,.1f} h of audio) need about {format_bytes(need)} in {root}, which "
                          f"has {format_bytes(max(0.0, least))} free{'' if least == usable else ' on one rank'}{beside}"
                          f"; point data.feature_cache at a disk with room{' (or output_dir)' if held else ''}, or set "
                          "it to null to run the encoder in every step (no cache); features an older version of the "
                          "toolkit stored there are not read again (README, the feature cache): deleting that folder "
                          "gives their room back")
    return {"bytes": need, "utterances": int(utterances), "seconds": seconds, "cached": int(cached), "free": least}


def same_disk(folder: Path, other: Path) -> bool:
    """Whether two folders (or, for one not made yet, its nearest existing parent) are on one filesystem."""
    def device(path: Path) -> int:
        path = Path(path).absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        return os.stat(path).st_dev

    try:
        return device(folder) == device(other)
    except OSError:  # unreadable: nothing held back, as before (the room for a checkpoint is checked after the fill)
        return False


def check_shared_memory(workers: int, batch_size: int, frames: int, dim: int, itemsize: int, d: Dist,
                        say: Callable[[str], Any]) -> None:
    """Before the DataLoader starts (and the feature cache fills): whether /dev/shm's free space (not its total:
    other jobs use it) holds what this node's workers keep there: LOCAL_WORLD_SIZE ranks x `workers` x PREFETCH + 1
    batches x the largest batch (`batch_size` x `frames` x `dim` x `itemsize` bytes). Short of it: one line through
    `say`, once a node; short of one batch per worker of a rank: ConfigError on every rank. A container's default
    /dev/shm (Docker: 64 MB) killed a worker mid-run with torch's "bus error ... insufficient shared memory"."""
    free = math.inf  # nothing to check: no workers, or no /dev/shm (macOS)
    if workers and sys.platform.startswith("linux") and os.path.isdir(SHARED_MEMORY):
        free = shutil.disk_usage(SHARED_MEMORY).free
    least = -all_max(torch.tensor([-free], dtype=torch.float64), d).item()  # the least free of any rank
    node, batch = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), batch_size * frames * dim * itemsize
    need = node * workers * (PREFETCH + 1) * batch
    mib = "{:,.1f} MiB".format
    parts = f"{mib(batch / 2**20)}: {batch_size} x {frames} frames x {dim} x {itemsize} bytes"
    ways = (f"give the container --ipc=host or --shm-size {max(1, math.ceil(need / 2**30))}g or more, or set "
            "data.num_workers: 0 (batches built in the training process)")
    if least < workers * batch:
        where = "" if least == free else " on one rank"
        raise ConfigError(f"data.num_workers: {SHARED_MEMORY} has {mib(least / 2**20)} free{where}, less than one "
                          f"batch for each of a rank's {workers} DataLoader workers ({workers} x {parts}): they would "
                          f"die with a bus error; {ways}")
    if free < need and d.local_rank == 0:
        say(f"warning: {SHARED_MEMORY} has {mib(free / 2**20)} free, and training's DataLoader workers may hold "
            f"{mib(need / 2**20)} there ({node} rank(s) x {workers} workers x {PREFETCH + 1} batches x {parts}): a "
            f"worker that runs short dies with torch's \"bus error\", the run with it; {ways}")
