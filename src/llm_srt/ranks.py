"""What torchrun's ranks take from rank 0: a result rank 0 computes alone (reading a corpus or a manifest, finding a
checkpoint), handed to every rank, so that ranks never decide apart; and what each rank checks for itself, agreed
(`on_every_rank`); and what a collective's error says of another rank gone (`peer_gone`). Used by training and
evaluation alike."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import LLMSRTError

LAUNCHER_POLL_S = 2.0  # how often a torchrun rank looks whether its launcher still runs
_watching: list[int] = []  # the launcher's pid, once this process watches it
# what the same command does after the launcher went (this thread knows neither the command nor what was saved: a
#   run that had saved no checkpoint starts again from step 0, where "to resume" promised more)
_GONE_RESUME = ("run the same command again to resume: training from its last checkpoint, if one was saved (else from "
               "step 0), an evaluation from the rows it had decoded")


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
              f"rank stops ({_GONE_RESUME})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # as if killed with it: a checkpoint is written whole or not at all

    threading.Thread(target=watch, name="llm-srt-launcher-watch", daemon=True).start()
    return True


# What a collective raises on a rank whose peer has gone (killed, out of memory, its node lost), known by the text
# that says so. gloo's transport names the peer's address ("[.../gloo/transport/tcp/pair.cc:537] Read error
# [10.0.0.2]:4242: Connection reset by peer"); NCCL's DistBackendError a remote error ("remote process exited or there
# was a network error", ncclRemoteError) or a socket of its own closed, or its watchdog's timeout (a rank gone or
# stuck); a DistNetworkError the run's store gone (its host with it). Anything else keeps its traceback: a bug.
_GLOO_GONE = re.compile(r"gloo/transport/\S*\].*?(Connection (?:closed|reset) by peer|Broken pipe)", re.S)
_NCCL_GONE = re.compile(r"remote process exited|ncclRemoteError|Connection (?:closed by remote|reset by) peer")
_NCCL_TIMEOUT = re.compile(r"Watchdog caught collective operation timeout")
_STORE_GONE = re.compile(r"Connection was likely closed|Connection reset by peer|Broken pipe")
_ADDRESS = re.compile(r"\[([^\]\s/]+)\]:(\d+)")  # gloo's peer: [10.0.0.2]:4242


def peer_gone(error: BaseException) -> str | None:
    """What `error`, raised in a collective, says: that another rank has gone, as the start of one line ("[rank 0]
    rank 1 at 10.0.0.2:4242 is gone (gloo: Connection reset by peer): this rank stops"); None for any other error,
    which keeps its traceback. The other rank is named where the world has two; else its address, where gloo gives
    it."""
    dist = sys.modules.get("torch.distributed")  # (not imported: no collective ran)
    if dist is None or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    nccl = isinstance(error, getattr(dist, "DistBackendError", ())) or text.startswith("NCCL error")
    state = "is gone"
    if found := _GLOO_GONE.search(text):
        how = f"gloo: {found[1]}"
    elif nccl and _NCCL_GONE.search(text):
        how = "NCCL: remote process exited or network error"
    elif nccl and _NCCL_TIMEOUT.search(text):
        how, state = "NCCL: its collective timed out", "is gone or stuck"
    elif isinstance(error, getattr(dist, "DistNetworkError", ())) and _STORE_GONE.search(text):
        return (f"[rank {_rank_and_world(dist)[0]}] the run's store closed its connection (its host, a rank or the "
                "launcher, is gone): this rank stops")
    else:
        return None
    rank, world = _rank_and_world(dist)
    who = f"rank {1 - rank}" if world == 2 and rank in (0, 1) else "another rank"
    end = text.find("\n", found.end()) if found else -1  # gloo's peer: on its line, before or after the reason
    if found and (address := _ADDRESS.search(text, found.start(), len(text) if end < 0 else end)):
        who += f" at {address[1]}:{address[2]}"
    return f"[rank {rank}] {who} {state} ({how}): this rank stops"


def _rank_and_world(dist) -> tuple[int | str, int]:
    """This process's rank and the world's size: the process group's, else torchrun's environment ("?", 1 without)."""
    try:
        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001  a group being torn down: the environment says the same
        pass
    rank, world = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "1")
    return (int(rank) if rank.isdigit() else rank), (int(world) if world.isdigit() else 1)


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
