"""The one error type users see: a single line saying what is wrong, where, and what to do."""

import errno
import os
import signal
import stat
import sys
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal


class LLMSRTError(Exception):
    """A problem the user can act on. The CLI prints it as one line (no traceback unless --debug). Every subclass
    can be made from its message alone (another rank's, `ranks.from_rank0`)."""

    def __reduce__(self):
        # pickled (to another process) with its attributes, and rebuilt without __init__: pickle's default calls
        # type(self)(*self.args), which fails for a subclass whose __init__ takes other arguments than its message
        return _rebuild, (type(self), self.args), self.__dict__ or None


def _rebuild(kind: type[LLMSRTError], args: tuple) -> LLMSRTError:
    return kind.__new__(kind, *args)  # args set, as __init__ would (BaseException.__new__ keeps them)


TERMINATED = 128 + signal.SIGTERM  # the exit code after a SIGTERM: a shell's for a process it ended (143)


class Terminated(SystemExit):
    """A SIGTERM, raised where the main thread is (`cli.stop_on_sigterm`). A SystemExit, so `except Exception` lets it
    through and only `finally` / `except BaseException` clean-ups run; not a KeyboardInterrupt, which some verbs
    take for Ctrl-C."""

    def __init__(self) -> None:
        super().__init__(TERMINATED)


class DeviceFailed(LLMSRTError):
    """The GPU failed for the whole process (a device-side assert, an illegal memory access): every later batch
    would fail too, so a run stops there, keeping what it finished (unlike a refusal, raised before any input ran)."""


class AudioError(LLMSRTError):
    """Audio that cannot be read, decoded or used."""


class UndecodableAudio(AudioError):
    """Bytes that no decoder opens (not audio, or an unknown format), as against a damaged file of a known one.
    `detail`: the decoder's own reason."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class AudioOverLimit(AudioError):
    """Audio longer, or decoding to more, than a limit the caller set (max_seconds / max_bytes): an input too
    large for the request (a server's 413), not a damaged file. `limit`: which of load_audio's limits it is over,
    "max_seconds" (the duration, the header's claim or as decoded) or "max_bytes" (the samples it decodes to), so
    that a caller naming its own option for each need not read the message's words."""

    def __init__(self, message: str, limit: Literal["max_seconds", "max_bytes"] = "max_seconds"):
        super().__init__(message)
        self.limit = limit


class ConfigError(LLMSRTError):
    """A config file or a key=value override that is wrong."""


class ManifestError(LLMSRTError):
    """A manifest row that is wrong (the message names file and line)."""


def shown(text: str) -> str:
    """`text` fit for a one-line message: control characters (a newline or an escape sequence in a file name),
    line separators and lone surrogates (the bytes of a name that is not UTF-8) are written as escapes."""
    if all(unicodedata.category(c) not in UNPRINTED for c in text):
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in UNPRINTED else c for c in text)


UNPRINTED = {"Cc", "Cs", "Zl", "Zp"}  # Unicode categories shown as escapes


def first_few(items: Sequence[str], shown: int, counted: bool = True) -> str:
    """The first `shown` of `items` for a one-line message, comma-separated, and ', ... (N more)' where there are
    more (', ...' alone without `counted`)."""
    if len(items) <= shown:
        return ", ".join(items)
    return ", ".join(items[:shown]) + (f", ... ({len(items) - shown} more)" if counted else ", ...")


# ---- files that are not what they seem: the words for them, one place ------------------------------------------
SPECIAL_FILES = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
                 stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}


def special_kind(mode: int) -> str:
    """"a FIFO (named pipe)", "a socket", ... for a stat mode that is neither a regular file nor a folder."""
    return next((kind for test, kind in SPECIAL_FILES.items() if test(mode)), "a special file")


def open_regular(path: str | Path, label: str, error: type[LLMSRTError] = LLMSRTError) -> int:
    """A read-only file descriptor of `path` (links followed), which must be a regular file. It is opened without
    blocking (a FIFO never waits for a writer) and checked on the open descriptor, so nothing can swap it between
    the check and the read. Otherwise raises `error` with one line: "LABEL: <what is wrong>; <what to do>"."""
    label = shown(label)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise error(f"{label}: {_open_error(Path(path), e)}") from None
    except ValueError:  # a NUL byte in the path
        raise error(f"{label}: the path contains a NUL byte; fix the name") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{label}: is a directory, not a file; name the files in it (a shell pattern: "
                        f"{_files_in(label)})")
        if not stat.S_ISREG(mode):
            raise error(f"{label}: is {special_kind(mode)}, not a regular file; save the data to a file first")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _files_in(folder: str) -> str:
    """The shell pattern of the files in `folder`: "batch2/*" for "batch2" and for "batch2/" (not "batch2//*")."""
    return os.path.join(folder.rstrip(os.sep) or os.sep, "*")


def _open_error(path: Path, e: OSError) -> str:
    """What keeps a path from opening, in words."""
    if e.errno == errno.ELOOP:
        return "a symlink loop (the link leads back to itself); fix or remove the link"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; make the file readable"
    if e.errno == errno.ENAMETOOLONG:
        return "the path is too long; use a shorter name"
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file" + (" (a symlink to a missing file)" if path.is_symlink() else "")
    try:
        mode = path.stat().st_mode  # a socket cannot be opened at all (ENXIO): say what it is
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return f"is {special_kind(mode)}, not a regular file; save the data to a file first"
    return f"cannot open the file ({e.strerror or e}); check the path"


def warn_each_time(message: str, stacklevel: int = 1) -> None:
    """warnings.warn(message, stacklevel=stacklevel) shown at every call the warning filters let through: Python's
    default filter shows a message from one line once per process, and a curriculum reads the same manifest in
    several stages (the paper's SMT and SRT stages), whose later ones then skipped rows without a word. No
    once-per-line registry is kept; a filter that ignores or raises it still does."""
    try:
        frame = sys._getframe(stacklevel)  # the line warnings.warn would name
    except ValueError:  # a call stack shallower than `stacklevel`
        frame = sys._getframe(1)
    warnings.warn_explicit(message, UserWarning, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__", "<string>"), registry=None)
    #   (no module_globals: for `python -c`, stdin or the REPL, CPython then asks __main__'s loader for the source
    #   line and raises ImportError instead of warning)
