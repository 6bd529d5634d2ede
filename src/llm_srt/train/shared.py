"""Every rank of a run sees output_dir as rank 0 writes it: checked at the start (a probe file) and at a resume (the
checkpoint rank 0 resumes from); else every rank stops with the same one line, before any rank waits at a collective
for another that cannot go on. Only rank 0 writes output_dir."""

import contextlib
import secrets
import time
from pathlib import Path

import torch

from ..errors import LLMSRTError
from . import checkpoint
from .data import from_rank0
from .parallel import Dist, all_max


def failing_rank(failed: bool, d: Dist) -> int | None:
    """The highest rank on which `failed` holds, the same on every rank (None: on none), so every rank raises the
    same line and none goes on to wait at a collective for one that stopped."""
    worst = int(all_max(torch.tensor([d.rank + 1 if failed else 0]), d).item())
    return worst - 1 if worst else None


def shared_checkpoint(d: Dist, found: checkpoint.CheckpointInfo | None) -> None:
    """Every rank can read the checkpoint rank 0 resumes from (its trainer state: this rank's RNG, the optimizer);
    else every rank stops with one line (no rank waits at a collective for another that cannot resume)."""
    if d.world == 1 or found is None:
        return
    if (rank := failing_rank(not (Path(found.path) / checkpoint.STATE_DIR).is_dir(), d)) is not None:
        raise LLMSRTError(f"rank {rank} cannot read {found.path}, the checkpoint rank 0 resumes from: output_dir "
                          "must be one folder that every rank reads (on several nodes, a shared filesystem), or start "
                          "in a new output_dir")


PROBE_WAIT_S = 5.0  # how long a rank looks for rank 0's probe file in output_dir (a network file system may lag)


def shared_output(d: Dist, out: Path) -> None:
    """Every rank sees output_dir as rank 0 writes it, else every rank stops now with one line, not at the first
    resume (only rank 0 writes: a node-local output_dir on several nodes trains a whole stage that never resumes).
    Rank 0 writes a probe file, closed before any rank opens it (NFS's close-to-open); one process: no probe."""
    if d.world == 1:
        return
    mine = out / f".ranks-{secrets.token_hex(8)}"  # rank 0's is the one every rank looks for
    try:
        probe = from_rank0(d, lambda: _write_probe(mine))
        seen, end = False, time.monotonic() + PROBE_WAIT_S
        while True:
            with contextlib.suppress(OSError, ValueError):
                seen = probe.read_text() == probe.name
            if seen or time.monotonic() > end:
                break
            time.sleep(0.25)
        if (rank := failing_rank(not seen, d)) is not None:  # once it returns, every rank has looked
            raise LLMSRTError(f"rank {rank} cannot see {probe} that rank 0 wrote: output_dir must be one folder "
                              "every rank reads and writes (on several nodes, a shared file system); choose such a "
                              "folder")
    finally:
        if d.main:
            with contextlib.suppress(OSError):  # a probe that cannot be removed stops nothing
                mine.unlink()


def _write_probe(probe: Path) -> Path:
    try:
        probe.write_text(probe.name)
    except OSError as e:  # (output_dir was found writable a moment before: a disk just full, a quota)
        raise LLMSRTError(f"{probe.parent}: cannot write to output_dir ({e.strerror or e}); free space there or "
                          "choose another output_dir") from None
    return probe
