"""Where the toolkit keeps converted models and caches, how it tells models apart by their weights, and how it writes
files and folders atomically."""

import contextlib
import errno
import gc
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import LLMSRTError

CACHE_ENV = "LLM_SRT_CACHE"  # overrides the cache folder
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # the Hugging Face libraries' offline switches
OFFLINE_SET_HERE: set[str] = set()  # those of them this process turned on itself (`default_offline`)


def default_offline() -> None:
    """Turn on the Hugging Face offline switches the user left unset (our runs use local folders only) and
    remember which, so that a child process that needs the hub (COMET's download) can turn ours off again."""
    for name in OFFLINE_VARS:
        if name not in os.environ:
            os.environ[name] = "1"
            OFFLINE_SET_HERE.add(name)


def cache_dir() -> Path:
    """The cache folder: $LLM_SRT_CACHE, else ~/.cache/llm-srt; absolute (a relative $LLM_SRT_CACHE from the
    current folder): run from another folder, "cache/models/whisper-base is not converted yet; run setup" looked
    like the cache's, and setup made a second copy there. As it is where the current folder was removed."""
    root = os.environ.get(CACHE_ENV)
    cache = Path(root).expanduser() if root else Path.home() / ".cache" / "llm-srt"
    try:
        return cache.absolute()  # (not resolve: a cache reached through a link keeps the name the user gave)
    except OSError:
        return cache


UNWRITABLE = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}  # a folder that cannot take files
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}  # fcntl.flock on a file system that takes
#   no locks (NFS without its lock daemon, Lustre mounted -o noflock, some FUSE)


def check_folder(cache: Path, todo: str = f"set {CACHE_ENV} to a writable folder") -> None:
    """A one-line error when `cache`, or the nearest of its parents that exists, is a file: the folders made under
    it would fail with NotADirectoryError or FileExistsError (LLM_SRT_CACHE set to a file, or to a path below one;
    a conversion's output folder below a file). `todo`: what the message asks for. So too where `cache` is not
    UTF-8 (a Latin-1 name): the tokenizers' writer takes UTF-8 paths only, and setup ended in a UnicodeEncodeError
    traceback once it had made its folders."""
    try:
        str(cache).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(cache).decode("utf-8", "backslashreplace")
        raise LLMSRTError(f"{shown}: not a UTF-8 path (the model libraries write UTF-8 file names only); {todo}, one "
                          "whose name is UTF-8") from None
    where = next((p for p in [cache, *cache.parents] if os.path.lexists(p)), None)
    if where is not None and not where.is_dir():
        raise LLMSRTError(f"{cache}: {'it' if where == cache else where} is not a folder (a file, or a broken "
                          f"link); {todo}")


def embedded_whisper_dir() -> Path:
    return cache_dir() / "models" / "whisper-base"


def embedded_llm_dir() -> Path:
    return cache_dir() / "models" / "gemma-3-270m"


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")  # a folder's weight files, by preference
SAMPLES, SAMPLE_BYTES = 16, 1 << 16  # evenly spaced blocks a weight file is sampled at, and their size
EMBEDDED = "embedded"  # the model name that stands for the converted embedded default in configs and checkpoints
# the records training writes (train/) and inference reads to learn what a model folder was trained for (model/)
TRAIN_CONFIG = "train_config.json"  # in a finished model folder (final/): the run's config
STATE_DIR, STATE_JSON = "trainer_state", "state.json"  # in a checkpoint folder: its trainer state (its "config" too)
FINAL = "final"  # a training run's finished model folder, inside its output_dir
STEP_FOLDER = re.compile(r"step-(\d{8,})")  # a run's checkpoints/ folders (train/checkpoint.py step_name); anything
#   else in checkpoints/ is not ours


def resolve_model(value: str, kind: str) -> str:
    """A model folder from a config value: "embedded" -> the converted embedded model of `kind` (encoder | llm). A
    value that is no path and a near miss of "embedded" (`meant_embedded`: "embeded", "Embedded") is refused naming
    it: it read as a folder, "no such folder"."""
    if value != EMBEDDED:
        if meant_embedded(value) and not os.path.lexists(os.path.expanduser(value)):
            raise LLMSRTError(f"{value}: no such folder (did you mean {EMBEDDED!r}, the embedded default "
                              f"{'encoder' if kind == 'encoder' else 'LLM'}?)")
        return value
    folder = embedded_whisper_dir() if kind == "encoder" else embedded_llm_dir()
    if not folder.is_dir():
        raise LLMSRTError(f"the embedded {kind} is not converted yet ({folder}); run `llm-srt setup` first")
    return str(folder)


def meant_embedded(value: str) -> bool:
    """Whether `value` is a near miss of EMBEDDED (`embeded`, `Embedded`, `embedd`), case aside."""
    import difflib

    return isinstance(value, str) and bool(difflib.get_close_matches(value.casefold(), [EMBEDDED], cutoff=0.8))


def absolute_model(value: str) -> str:
    """A config's encoder / LLM folder as a trained model records it: absolute ("embedded" as it is), so that the
    model loads from any folder (a relative path is read from the current directory, where training ran)."""
    return value if value == EMBEDDED else os.path.abspath(os.path.expanduser(value))


def weights_identity(value: str | None, kind: str) -> str | None:
    """A frozen model (a folder of weight files, or one file, e.g. GGUF) by its weights, cheaply: every weight file's
    name, size and blake2b over SAMPLES evenly spaced blocks plus its first and last block (about 1 MiB a file, so
    a 32B model's 17 shards cost ~20 MiB of reading, not 64 GB). A fine-tuned or other model of the same shape
    differs in nearly every block; a byte-for-byte copy on another host matches. None when there is nothing to read
    (the model's loading says why)."""
    from .errors import LLMSRTError

    if not value:
        return None
    try:
        path = Path(resolve_model(value, kind)).expanduser()
    except LLMSRTError:
        return None
    h = hashlib.blake2b(digest_size=16)
    try:
        files = [path] if path.is_file() else weight_files(path) if path.is_dir() else []
        for f in files:
            size = f.stat().st_size
            h.update(f"{f.relative_to(path) if f != path else ''}:{size}\n".encode())  # a renamed file: the same
            with open(f, "rb") as stream:
                for i in range(SAMPLES + 2):
                    stream.seek(min(i * max(size - SAMPLE_BYTES, 0) // (SAMPLES + 1), size))
                    h.update(stream.read(SAMPLE_BYTES))
    except OSError:
        return None
    return h.hexdigest() if files else None


def weight_files(folder: Path) -> list[Path]:
    """The weight files a loader reads from a model folder: its top-level files of the first kind in WEIGHT_SUFFIXES
    that it has (safetensors before a pytorch_model.bin or a CTranslate2 model.bin beside them; never a subfolder's,
    as Llama downloads' original/*.pth, nor a Trainer's checkpoint-*/ or training_args.bin beside safetensors)."""
    present = sorted(f for f in folder.iterdir() if f.is_file())
    for suffix in WEIGHT_SUFFIXES:
        chosen = [f for f in present if f.name.endswith(suffix) and f.name != "training_args.bin"]
        if chosen:
            return chosen
    return []


def cwd_note(path: Path) -> str:
    """What an error naming a missing `path` adds where the path is relative (from another folder, a mistyped one
    looks fine): " (a relative path starts at CWD)"; "" for an absolute one."""
    return "" if path.is_absolute() else f" (a relative path starts at {Path.cwd()})"


def checkpoint_relative(directory: str | Path, path: str) -> str:
    """A model path in a checkpoint's config.json: a relative one is taken relative to the checkpoint when it
    exists there."""
    p = Path(path).expanduser()
    return str(Path(directory) / p) if not p.is_absolute() and (Path(directory) / p).exists() else str(p)


def umask() -> int:
    """This process's umask, read where Linux shows it (/proc/self/status); elsewhere os.umask, which reads only by
    setting it (and another thread's file made in between would get the stand-in)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


SHORT_NAME_BYTES = 200  # the longest name a temporary or backup name holds whole (they add up to 14 bytes; 255 max)


def short_name(name: str) -> str:
    """`name`, or where it is over SHORT_NAME_BYTES (in the file system's bytes) its start cut at a character's
    boundary plus a hash of the whole, unique still: `.NAME.XXXXXXXX.tmp` beside a valid name of 242-255 bytes
    was over the file system's limit, and the write failed (ENAMETOOLONG)."""
    raw = os.fsencode(name)
    if len(raw) <= SHORT_NAME_BYTES:
        return name
    cut = SHORT_NAME_BYTES - 9  # room for "~" and 8 hex digits
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: its character begins before the cut
        cut -= 1
    return os.fsdecode(raw[:cut]) + "~" + hashlib.blake2b(raw, digest_size=4).hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", fsync: bool = False,
                staged: list[tuple[Path, Path]] | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` to write into; on success it replaces `path` (one rename), on any error
    it is removed. It gets the permissions a plain open() would give: those of the file it replaces, else 0o666
    less the umask (mkstemp's 0o600 would hide manifests and checkpoints from the group). `fsync`: flush it to disk
    before the rename (files a crash must not leave empty). `staged`: on success (temporary file, `path`) is
    appended to it instead of the rename, for `replace_all` to rename several files together (or the caller to
    remove the temporary file). A link's target is replaced, the link kept, as a plain open() writes and as
    `atomic_dir` does (the link itself was replaced by a file, its target left with the old text)."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        permissions = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        permissions = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{short_name(path.name)}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        except BaseException:
            os.close(fd)  # fdopen took no hold of it (a wrong mode)
            raise
        with f:
            with contextlib.suppress(OSError):  # a file system without permissions (vfat): as `share_files`
                os.fchmod(f.fileno(), permissions)
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((Path(tmp), path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value, fsync: bool = False) -> None:
    """`value` as indented JSON in `path`, whole or not at all (`atomic_file`; `fsync` as there): written in place,
    a full disk or a kill mid-write left an earlier good file cut short."""
    with atomic_file(path, fsync=fsync) as f:
        f.write(json.dumps(value, indent=2) + "\n")


def replace_all(moves: Iterable[tuple[Path, Path]]) -> None:
    """Rename each (source, destination) in turn, replacing the destination, all or none: a destination's earlier
    file is kept under a backup name (a hard link, else renamed aside) until every rename is done. On an OSError the
    renames done are undone in reverse (each source back, each destination's earlier file back) and the OSError is
    raised with the destination that failed as its `filename`. For the files one run writes (`atomic_file`'s
    `staged`): renamed one by one, a rename that failed left the files before it, of the new run, beside the
    earlier run's after it."""
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for source, destination in moves:
            backup = _backup(destination)
            try:
                os.replace(source, destination)
            except OSError as e:
                if backup is not None:
                    _restore(backup, destination)
                raise OSError(e.errno, e.strerror or str(e), str(destination)) from e
            done.append((source, destination, backup))
    except OSError:
        for source, destination, backup in reversed(done):
            with contextlib.suppress(OSError):  # a second error must not hide the first
                os.replace(destination, source)
                if backup is not None:
                    _restore(backup, destination)
        raise
    for _, _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)


def _backup(path: Path) -> Path | None:
    """A second name for `path`'s file (None when there is none, or it is a folder: its rename fails anyway)."""
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return None
    backup = path.with_name(f".{short_name(path.name)}.{os.getpid()}.old")
    backup.unlink(missing_ok=True)
    try:
        os.link(path, backup, follow_symlinks=False)  # `path` stays in place: no moment without it
    except OSError:  # a file system without hard links
        os.replace(path, backup)
    return backup


def _restore(backup: Path, path: Path) -> None:
    os.replace(backup, path)
    backup.unlink(missing_ok=True)  # still there where both were links to one file (rename does nothing then)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path` to write into; on success it replaces `path` (the old folder is
    renamed away first, so the gap is two renames), on any error it is removed. A link's target is replaced, the
    link kept (renamed away, the link itself was left beside a new real folder). The current folder, or one holding
    it, is refused (LLMSRTError): replaced, it would be removed under the process (and its shell)."""
    path = Path(os.path.realpath(path))  # ("." has no name to put beside: Path(".").with_name raised ValueError)
    if holds_cwd(path):
        from .errors import LLMSRTError

        raise LLMSRTError(f"{path}: is or holds the current folder, and it would be replaced whole (removed under this "
                          "process); write to another folder, or run from another one")
    tmp = path.with_name(f"{short_name(path.name)}.tmp-{os.getpid()}")  # (a name near 255 bytes fits too)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f"{short_name(path.name)}.old-{os.getpid()}")
    moved = False
    try:
        share_files(tmp)
        # on disk before it takes the name: after a power loss `path` is whole, or the old one, never a folder of
        fsync_tree(tmp)  # empty files (a finished run's final/)
        if path.exists():
            _remove(old)
            path.rename(old)
            moved = True
        tmp.rename(path)
    except BaseException:  # the old folder back under its name: a failed write must not lose it
        if moved:
            with contextlib.suppress(OSError):  # a second error must not hide the first
                old.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    _remove(old)


def _remove(path: Path) -> None:
    """`path` gone, a folder or a file (a regular file that `atomic_dir` replaced: rmtree leaves it, not a folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def atomic_dir_leftovers(path: str | Path) -> list[Path]:
    """The folders `atomic_dir(path)` left beside `path` in a process that no longer runs: `<name>.tmp-<pid>`, or
    `<name>.old-<pid>` when it died between its two renames. A SIGKILL (or power loss) runs no `except`, and nothing
    else would ever remove them (a model's worth each). Those of a running process are its write in progress."""
    path = Path(os.path.realpath(path))  # where `atomic_dir` writes
    pattern = re.compile(re.escape(short_name(path.name)) + r"\.(?:tmp|old)-(\d+)")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if (m := pattern.fullmatch(p.name)) and not pid_running(int(m.group(1))))


def holds_cwd(path: str | Path) -> bool:
    """Whether `path` (links followed) is the process's current folder or holds it: a folder that, replaced whole,
    would be removed under the process (and its shell). False where the current folder itself was removed (a
    scratch folder a job started in): it is not the one written."""
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:
        return False
    path = Path(os.path.realpath(path))
    return path == cwd or path in cwd.parents


def disk_size(folders: Iterable[Path]) -> str:
    """The disk space the files under `folders` take, as "1.2 GB" or "70.0 MB" (blocks: a killed write's weight
    files may be sparse, ~1.1 GB long with 70 MB written)."""
    total = 0
    for f in (f for p in folders for f in p.rglob("*")):
        with contextlib.suppress(OSError):
            total += f.lstat().st_blocks * 512 if f.is_file() else 0
    return f"{total / 1e9:.1f} GB" if total >= 1e9 else f"{total / 1e6:.1f} MB"


def free_space(path: str | Path) -> str:
    """"N.NN GB free there" for the nearest folder that exists at or above `path`, for an error about a write."""
    existing = next((p for p in [Path(path), *Path(path).parents] if p.is_dir()), Path("/"))
    try:
        return f"{shutil.disk_usage(existing).free / 1e9:.2f} GB free there"
    except OSError:
        return "its free space unknown"


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}  # errors only a write gives
WRITE_HINTS = {errno.ENOSPC: "free space there", errno.EDQUOT: "free space there (your disk quota is full)",
               errno.EFBIG: "raise the file size limit (ulimit -f)"}  # what helps, besides another folder
OS_ERROR = re.compile(r"\(os error (\d+)\)")  # the OS's error in safetensors' messages (SafetensorError has no errno)


class WriteFailed(LLMSRTError):
    """`folder_write_errors`' error, with the OS's `errno` and `reason`: a caller that knows better what to do (setup,
    whose user chose no output folder) can say its own line instead."""

    def __init__(self, message: str, number: int | None = None, reason: str = ""):
        super().__init__(message)
        self.errno, self.reason = number, reason


@contextlib.contextmanager
def folder_write_errors(folder: str | Path, what: str, todo: str) -> Iterator[None]:
    """A failed write of `folder` (through `atomic_dir`: its `.tmp-<pid>` and `.old-<pid>` beside it count) as a
    one-line LLMSRTError naming the folder, the reason and the free space there, and `todo`: the OSError of a full,
    read-only or quota-bound disk, a file size limit, a path below a file, or safetensors' own error with the OS's
    inside (disk full while writing the weights was a SafetensorError traceback). Other errors pass unchanged: an
    OSError of another file (an input's) or without one but of a kind a read can give too."""
    from safetensors import SafetensorError

    base = os.path.realpath(folder)
    try:
        yield
        return
    except OSError as e:
        written = isinstance(e.filename, (str, bytes, os.PathLike)) and _under(os.fsdecode(e.filename), base)
        if not written and (e.filename is not None or e.errno not in WRITE_ERRNOS):
            raise
        why, number = e.strerror or str(e), e.errno
    except SafetensorError as e:
        m = OS_ERROR.search(str(e))
        if not m or int(m.group(1)) not in WRITE_ERRNOS:
            raise
        why, number = os.strerror(int(m.group(1))), int(m.group(1))
    gc.collect()  # the failed write's files, removed but still open in its frames, hold their space until freed
    hint = f"{WRITE_HINTS[number]} or " if number in WRITE_HINTS else ""
    raise WriteFailed(f"{folder}: cannot write {what} there ({why}; {free_space(base)}); {hint}{todo}", number,
                      why) from None


def _under(name: str, base: str) -> bool:
    """Whether file `name` is `base`, inside it, or inside or one of `atomic_dir`'s folders beside it."""
    parent, stem = os.path.split(base)
    sibling = re.compile(re.escape(os.path.join(parent, short_name(stem))) + r"\.(?:tmp|old)-\d+")
    name = os.path.realpath(name)
    return any(p == base or sibling.fullmatch(p) for p in [name, *map(str, Path(name).parents)])


def pid_running(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one of another user counts; 0 and negative ids name no process
    but a group to os.kill)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def share_files(folder: Path) -> None:
    """Give the files under `folder` written private (0o600: safetensors' save_file, which transformers' writers use
    too) the permissions a plain open() gives, 0o666 less the umask, as `atomic_file` does: a model folder or
    checkpoint shared with a group, or served by another user, could not be read. A file that cannot be changed (a
    file system without permissions) is left as it is."""
    wanted = 0o666 & ~umask()
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o777 == 0o600 != wanted:
                p.chmod(wanted)
        except OSError:
            pass


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then its folders, deepest first, and `folder` itself; a file system that
    cannot (some network mounts) is left as it is."""
    entries = sorted(folder.rglob("*"), key=lambda p: -len(p.parts))
    for p in entries:
        if not p.is_dir() or p.is_symlink():
            try:
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
    for d in [p for p in entries if p.is_dir() and not p.is_symlink()] + [folder]:
        fsync_dir(d)


def fsync_dir(path: Path) -> None:
    """fsync a folder (its entries: a rename into it is on disk); a file system that cannot is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
