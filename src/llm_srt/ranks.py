"""What torchrun's ranks take from rank 0: a result rank 0 computes alone (reading a corpus or a manifest, finding a
checkpoint), handed to every rank, so that ranks never decide apart; and what each rank checks for itself, agreed
(`on_every_rank`). Used by training and evaluation alike."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import LLMSRTError

LAUNCHER_POLL_S = 2.0  # how often a torchrun rank looks whether its launcher still runs
_watching: list[int] = []  # the launcher's pid, once this process watches it


def stop_with_launcher(poll_s: float = LAUNCHER_POLL_S) -> bool:
    """Under torchrun: a daemon thread that ends this rank once its launcher is gone. torchrun starts each rank in a
    session of its own, so a SIGKILL to the launcher (or its process group; the OOM killer) left the ranks running:
    they trained on, held the GPUs and the run's lock, and the same command run again was refused. (A rank the
    launcher still has is ended by it, as ever.) Outside torchrun nothing is watched: a parent shell may end
    (`nohup`) while a run goes on. Returns whether this call started the watch."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or _watching:
        return False
    launcher = os.getppid()
    _watching.append(launcher)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print(f"[rank {os.environ.get('RANK', '?')}] llm-srt: the torchrun launcher (pid {launcher}) is gone: this "
              "rank stops (run the same command again to resume)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # as if killed with it: a checkpoint is written whole or not at all

    threading.Thread(target=watch, name="llm-srt-launcher-watch", daemon=True).start()
    return True


def from_rank0(fn: Callable[[], Any], rank: int, world: int, group=None) -> Any:
    """fn() run on rank 0 only; every rank gets its result (broadcast in `group`, the default one if None), or raises
    its error, so no rank stats the files rank 0 already checked nor waits forever on a rank that failed."""
    import torch.distributed as dist

    result, failure = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001  every rank must hear of it; rank 0 re-raises the original
            failure = e
    if world > 1:
        message = None if failure is None else (
            str(failure) if isinstance(failure, LLMSRTError) else f"rank 0: {type(failure).__name__}: {failure}")
        box = [(result, message, type(failure) if isinstance(failure, LLMSRTError) else LLMSRTError)]
        dist.broadcast_object_list(box, src=0, group=group)
        result, message, kind = box[0]
        if message is not None and failure is None:
            raise _rebuilt(kind, message)
    if failure is not None:
        raise failure
    return result


def _rebuilt(kind: type[LLMSRTError], message: str) -> LLMSRTError:
    """Rank 0's error of `kind` on another rank; a plain LLMSRTError where that kind cannot be made from its message
    alone (its __init__ wants more): the same line, not a TypeError that hides it."""
    try:
        return kind(message)
    except Exception:  # noqa: BLE001  any failure of a subclass's __init__
        return LLMSRTError(message)


def on_every_rank(fn: Callable[[], Any], rank: int, world: int, group=None, name_rank: bool = False) -> Any:
    """fn() on every rank; where it fails on any rank, every rank raises the lowest failing rank's error (one
    LLMSRTError line, agreed in `group`), so no rank goes on (to load a model, to decode) while another has
    stopped. With `name_rank`, where only some ranks failed the others' line starts with the failing rank ("rank 1:
    model.llm: llm: no such folder ..."): alone, it said the folder was missing on the nodes that hold it."""
    import torch.distributed as dist

    result, failure = None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001  every rank must hear of it; this rank re-raises its own
        failure = e
    if world > 1:
        said = [None] * world
        dist.all_gather_object(said, None if failure is None else str(failure) if isinstance(failure, LLMSRTError)
                               else f"rank {rank}: {type(failure).__name__}: {failure}", group=group)
        first = next((k for k, message in enumerate(said) if message is not None), rank)
        if first != rank:
            message = said[first]
            if name_rank and None in said and not message.startswith(f"rank {first}: "):
                message = f"rank {first}: {message}"
            raise LLMSRTError(message) from failure
    if failure is not None:
        raise failure
    return result
