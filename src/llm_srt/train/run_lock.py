"""The lock a training run holds on its output folder (`RunLock`: `run_dir/.lock`), so that a second run on the
same folder stops in one line naming the holder instead of writing checkpoints beside it."""

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from ..errors import LLMSRTError

logger = logging.getLogger(__name__)

LOCK = ".lock"  # in a run folder: pid, host and start of the run that holds it

_HELD_LOCKS: set[int] = set()  # this process's RunLock file descriptors


def _close_held_locks_in_child() -> None:
    """In a forked child (a DataLoader worker): close the run lock's descriptor, never unlock it (the parent's lock
    is the same open file). A child that kept it held the lock after its parent was killed, until it noticed and
    exited, and the same command run again at once was refused as "another training run"."""
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunLock:
    """An advisory lock (fcntl.flock) on `run_dir/.lock`, held while a training process writes the folder: a second
    run on the same folder stops with a one-line error naming the holder. The kernel drops the lock when its process
    ends, however it ends, so the file a killed run leaves never blocks; forked children (DataLoader workers) do not
    keep it (`_close_held_locks_in_child`). (Advisory: on a network file system without flock support, two hosts
    are not kept apart.)"""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LLMSRTError(f"{self.path}: cannot create the run lock ({e.strerror or e}); choose another "
                              "output_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # no flock on this file system
                logger.warning("%s: this file system takes no lock (%s): nothing keeps a second run off this "
                               "output folder", self.path, e.strerror or e)  # (Lustre -o noflock, some FUSE)
                self._fd = fd
                _HELD_LOCKS.add(fd)
                return self
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise LLMSRTError(f"{self.path.parent}: another training run is writing this output folder "
                              f"({_holder(holder)}); wait for it to end or stop it, or choose another "
                              f"output_dir (on a network disk a host that died can leave its lock: once that host "
                              f"is surely gone, delete {self.path})") from None
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info + b"\n", 0)
        except OSError:
            pass  # the lock holds without its note; a second run then names no holder
        self._fd = fd
        _HELD_LOCKS.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None and self._fd not in _HELD_LOCKS:  # a forked child's copy, closed at the fork
            self._fd = None
        if self._fd is not None:
            _HELD_LOCKS.discard(self._fd)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError:  # a file system without flock: there was nothing to let go
                pass
            os.close(self._fd)
            self._fd = None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {int(info['pid'])} on {str(info['host'])[:64]}, started {str(info['started'])[:32]}"
    except (ValueError, KeyError, TypeError):
        return "its holder did not say who it is"
