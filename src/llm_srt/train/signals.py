"""Signals during training: a SIGTERM (SLURM's preemption or time limit, `docker stop`, torchrun) or Ctrl-C lets
the step in progress end, so the recipe can save a consistent checkpoint there (`Recipe._stop_on_signal`)."""

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import Terminated

SIGNAL_REPEAT_S = 2.0  # a signal this soon after the first is the same stop: under `srun torchrun` a time limit
#   reaches each rank twice at once (SLURM signals every process of the step, and torchrun forwards its own)


@dataclass(frozen=True)
class Kept:
    """What a training run that a signal stopped keeps, on the exception it stops with (`error.kept`), for cli's last
    line: it said "the training state is the stage's last checkpoint" after a second Ctrl-C had stopped the run
    before any was saved, and the same command then started again from step 0. A run stopped otherwise (another
    rank gone) carries one too (`RunStops._note_kept`)."""
    step: int | None = None  # the step it stopped at; None: a second signal stopped the step in progress unsaved
    #   (the recipe then says what it had saved: `RunStops._note_kept`)
    saved: bool = False  # a checkpoint holds `step` (saved at the stop, or by the step itself)
    newest: Path | None = None  # the checkpoint the same command resumes from; None: none (step None: not known)


@contextlib.contextmanager
def _carrying(kept: Kept):
    """The exception raised within it (the signal's, through its handler) carries `kept`."""
    try:
        yield
    except BaseException as e:
        e.kept = kept
        raise


class Noted(list):
    """The signals noted (their numbers, the first first), and `stop`: the signal's own way out, once the step is
    saved."""

    def __init__(self):
        super().__init__()
        self.previous: dict[int, object] = {}  # signal -> the handler before `signals_noted`
        self.handed_back: set[int] = set()  # signals whose earlier handler is back (and may have rearmed itself)

    def stop(self, kept: Kept) -> None:
        """Raise the first signal's exception through the handler it had before (cli's SIGTERM handler raises
        `Terminated` and leaves the next SIGTERM to end the process at once, for a clean-up that hangs; Ctrl-C's
        raises KeyboardInterrupt); `Terminated` where there was none, or none was noted here (another rank's). The
        exception carries `kept` (`error.kept`)."""
        signum = self[0] if self else signal.SIGTERM
        for number, handler in self.previous.items():
            signal.signal(number, handler)
            self.handed_back.add(number)
        handler = self.previous.get(signum)
        with _carrying(kept):
            if callable(handler) and self:
                handler(signum, None)
            raise KeyboardInterrupt if signum == signal.SIGINT and self else Terminated()


def _announce(signum: int, step: Callable[[], str] | None = None) -> None:
    """One line at once for the first signal: the step in progress ends before the save (~15 s a step on a busy CPU,
    minutes at 7B), and a first Ctrl-C that printed nothing was pressed again, which stopped without saving. `step`:
    the step in progress, named ("step 1234 of 5000": whether to wait for it), where the caller knows it. Said by the
    rank that got it (under torchrun, other ranks' lines name their rank), on a line of its own above the bar."""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    again = "Ctrl-C again" if signum == signal.SIGINT else f"another {name}"
    rank = os.environ.get("RANK", "0")
    try:
        doing = f"{step()}, then saving it" if step is not None else "the step in progress, then saving a checkpoint"
        tqdm.write(f"{'' if rank == '0' else f'[rank {rank}] '}{name}: finishing {doing}; {again} "
                   f"({SIGNAL_REPEAT_S:g} s or more later) stops at once without saving", file=sys.stderr)
    except (OSError, RuntimeError, ValueError):  # stderr gone, closed, or in the middle of a write the signal cut
        pass


@contextlib.contextmanager
def signals_noted(step: Callable[[], str] | None = None):
    """Within it, a SIGTERM or SIGINT (Ctrl-C) goes into the `Noted` it yields instead of stopping the run mid-step
    (a step half-done, its optimizer update half-applied, cannot be saved), said at once in one line (naming the step
    in progress, `step()`, where given); the loop saves at the end of the step, then calls `Noted.stop`. A second
    one, SIGNAL_REPEAT_S or more after the first, acts as it would without this (cli's SIGTERM handler raises
    `Terminated` at once, Ctrl-C raises KeyboardInterrupt); one sooner is the same stop. Outside the main thread: no
    change."""
    noted = Noted()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    owner, previous, first = os.getpid(), noted.previous, []

    def note(signum, frame) -> None:
        if os.getpid() != owner:  # a DataLoader worker (SLURM signals every process): it serves the step to its end
            signal.signal(signum, signal.SIG_IGN)  # (dead, it would fail a batch the run is fetching); the run ends
            return  # it, or SIGKILL does, or its watchdog once the run is gone
        if not first:
            first.append(time.monotonic())
            noted.append(signum)
            _announce(signum, step)
            return
        if time.monotonic() - first[0] < SIGNAL_REPEAT_S:
            return
        signal.signal(signum, previous[signum])  # a second signal: as without this, at once
        noted.handed_back.add(signum)  # (its handler may rearm itself: cli's leaves the next SIGTERM to end it)
        if callable(previous[signum]):
            with _carrying(Kept()):  # the step in progress unsaved
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
            if signum not in noted.handed_back:
                signal.signal(signum, handler)
