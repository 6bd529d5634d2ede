"""Signals during training: a SIGTERM (SLURM's preemption or time limit, `docker stop`, torchrun) or Ctrl-C lets
the step in progress end, so the recipe can save a consistent checkpoint there (`Recipe._stop_on_signal`)."""

import contextlib
import os
import signal
import threading
import time

SIGNAL_REPEAT_S = 2.0  # a signal this soon after the first is the same stop: under `srun torchrun` a time limit
#   reaches each rank twice at once (SLURM signals every process of the step, and torchrun forwards its own)


@contextlib.contextmanager
def signals_noted():
    """Within it, a SIGTERM or SIGINT (Ctrl-C) goes into the list it yields instead of stopping the run mid-step
    (a step half-done, its optimizer update half-applied, cannot be saved); the loop saves at the end of the step.
    A second one, SIGNAL_REPEAT_S or more after the first, acts as it would without this (cli's SIGTERM handler
    raises `Terminated` at once, Ctrl-C raises KeyboardInterrupt); one sooner is the same stop. Outside the main
    thread: no change."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    owner, previous, first = os.getpid(), {}, []

    def note(signum, frame) -> None:
        if os.getpid() != owner:  # a DataLoader worker (SLURM signals every process): it serves the step to its end
            signal.signal(signum, signal.SIG_IGN)  # (dead, it would fail a batch the run is fetching); the run ends
            return  # it, or SIGKILL does, or its watchdog once the run is gone
        if not first:
            first.append(time.monotonic())
            noted.append(signum)
            return
        if time.monotonic() - first[0] < SIGNAL_REPEAT_S:
            return
        signal.signal(signum, previous[signum])  # a second signal: as without this, at once
        if callable(previous[signum]):
            previous[signum](signum, frame)
        else:  # the default action (SIG_DFL: end the process by that signal)
            os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN:  # ignored (Ctrl-C in a job started with `&`): left so
            continue
        previous[signum] = signal.SIG_DFL if handler is None else handler  # None: set from C, cannot be set back
        signal.signal(signum, note)
    try:
        yield noted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
