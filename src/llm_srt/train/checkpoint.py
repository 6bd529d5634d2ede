"""Checkpoints that survive `kill -9`: atomic folder writes, checksums, exact-resume trainer state.

Layout of a run folder:
    checkpoints/step-00000100/   model folder (config.json, adapter.safetensors, [lora]) + trainer_state/
    checkpoints/index.json       the steps on disk, the best step by dev loss
    final/                       the finished model (written last; its presence means the run is complete)
A checkpoint is written under a temporary name and renamed into place, so a crash leaves either the old set or the
new one; each folder carries checksums.json, so a damaged one (disk full, partial copy) is detected and skipped.
"""

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError

from ..errors import LLMSRTError
from ..paths import atomic_file

logger = logging.getLogger(__name__)

CHECKSUMS = "checksums.json"
STATE_DIR = "trainer_state"
INDEX = "index.json"


@dataclass
class CheckpointInfo:
    path: Path
    step: int


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path, fsync=True) as f:
        json.dump(data, f, indent=2)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def seal(folder: Path) -> None:
    """Write checksums of every file in `folder` (fsynced), making it verifiable."""
    sums = {}
    for p in _files(folder):
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        sums[str(p.relative_to(folder))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_json_atomic(folder / CHECKSUMS, sums)


def verify(folder: Path) -> str | None:
    """None if `folder` is intact, else what is wrong."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError):
        return "checksums.json is missing or unreadable"
    for rel, expected in sums.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != expected["size"]:
            return f"{rel} has {p.stat().st_size} bytes, expected {expected['size']} (truncated?)"
        if _sha256(p) != expected["sha256"]:
            return f"{rel} does not match its checksum"
    return None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one state per visible GPU
    return state


def set_rng_state(state: dict, log: Callable[[str], None] | None = None) -> None:
    """Restore the RNG state `rng_state` saved. The CUDA states restore onto the GPUs this host has: one saved on
    8 GPUs resumes on 2 (their states restored, the other 6 logged as dropped) or on a CPU-only host."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda") or []
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, generator in enumerate(saved[:have]):
        torch.cuda.set_rng_state(generator, index)
    if len(saved) > have:
        (log or logger.warning)(f"checkpoint RNG: saved with {len(saved)} GPU generator state(s), this host has "
                                f"{have} GPU(s): restored {have}, dropped {len(saved) - have} (random draws on "
                                "those GPUs will differ from the original run)")


def save(run_dir: Path, step: int, save_model: Callable[[Path], None], trainer_state: dict,
         keep_last: int = 2, dev_loss: float | None = None) -> Path:
    """Write checkpoint `step` atomically; keep the last `keep_last` and the best by dev loss."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / step_name(step)
    tmp = ckpt_root / f".tmp-{step_name(step)}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(tmp)
        (tmp / STATE_DIR).mkdir(parents=True, exist_ok=True)
        torch.save(trainer_state, tmp / STATE_DIR / "state.pt")
        seal(tmp)
    except (OSError, SafetensorError, RuntimeError) as e:
        # disk full, quota, folder gone (torch.save and safetensors wrap the OSError in their own types): remove
        # the partial folder and any half-written one save_model left beside it, keep the previous checkpoints
        for partial in (ckpt_root.glob(f"*{tmp.name}*") if ckpt_root.is_dir() else ()):
            shutil.rmtree(partial, ignore_errors=True)
        intact = latest(run_dir, log=lambda _: None)
        resume = f"resume from {intact.path.name}" if intact else "start again"
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LLMSRTError(f"{final}: cannot write the checkpoint ({detail}); free space or fix the folder, then "
                          f"run the same command to {resume}") from None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)

    index = read_index(ckpt_root)
    index["steps"] = sorted(set(index["steps"]) | {step})
    if dev_loss is not None and (index["best_loss"] is None or dev_loss < index["best_loss"]):
        index["best_step"], index["best_loss"] = step, dev_loss
    keep = set(index["steps"][-keep_last:]) | ({index["best_step"]} if index["best_step"] is not None else set())
    write_json_atomic(ckpt_root / INDEX, {**index, "steps": sorted(keep)})
    for s in index["steps"]:
        if s not in keep:
            shutil.rmtree(ckpt_root / step_name(s), ignore_errors=True)
    return final


def read_index(ckpt_root: Path) -> dict:
    try:
        return json.loads((ckpt_root / INDEX).read_text())
    except (OSError, ValueError):
        return {"steps": [], "best_step": None, "best_loss": None}


def latest(run_dir: Path, log: Callable[[str], None] = print) -> CheckpointInfo | None:
    """The newest intact checkpoint; damaged ones are reported and skipped."""
    ckpt_root = Path(run_dir) / "checkpoints"
    if not ckpt_root.is_dir():
        return None
    for tmp in ckpt_root.glob(".tmp-*"):  # left by a crash mid-write
        shutil.rmtree(tmp, ignore_errors=True)
    folders = sorted((p for p in ckpt_root.glob("step-*") if p.is_dir()), reverse=True)
    for folder in folders:
        problem = verify(folder)
        if problem is None:
            return CheckpointInfo(folder, int(folder.name.split("-")[1]))
        log(f"checkpoint {folder} is damaged ({problem}); trying the previous one")
    return None


def load_trainer_state(folder: Path) -> dict:
    try:
        return torch.load(folder / STATE_DIR / "state.pt", weights_only=False, map_location="cpu")
    except Exception as e:  # a sealed folder whose state cannot be unpickled is a real corruption
        raise LLMSRTError(f"{folder}: cannot read trainer state ({e}); delete this checkpoint to resume "
                          "from the previous one") from None


def check_writable(folder: Path, need_bytes: int = 0) -> None:
    """Fail before training if `folder` cannot take a checkpoint."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as e:
        raise LLMSRTError(f"{folder}: output folder is not writable ({e.strerror}); choose another output_dir") \
            from None
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise LLMSRTError(f"{folder}: only {free / 2**20:.0f} MiB free, a checkpoint needs about "
                          f"{need_bytes / 2**20:.0f} MiB; free space or choose another output_dir")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
