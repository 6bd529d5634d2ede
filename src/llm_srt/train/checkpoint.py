"""Checkpoints that survive `kill -9`: atomic folder writes, checksums, exact-resume trainer state.

Layout of a run folder:
    .lock                        held by the one training process writing this folder (run_lock.py)
    checkpoints/step-00000100/   model folder (config.json, adapter.safetensors, [lora.safetensors],
                                 [ctc_head.safetensors]) + trainer_state/ + checksums.json
    checkpoints/index.json       the steps on disk, the best step by dev loss
    final/                       the finished model (written last; its presence means the run is complete)
The model folder holds what `SpeechLLM.trainable_state` gives, whatever trains in this stage: the adapter's weights
even where they are frozen (trainable: [lora]), LoRA's (frozen or not) where the model has LoRA, the CTC head's while
the stage trains with it; never the frozen encoder's or LLM's (config.json names their folders).
A checkpoint is written under a temporary name and renamed into place, so a crash leaves either the old set or the
new one; each folder carries checksums.json, so a damaged one (disk full, partial copy) is detected and skipped.

Nothing is unpickled: trainer state (optimizer, schedule, data position, RNG, the run's settings) is JSON, its
tensors one safetensors file. A checkpoint of the older pickled format (trainer_state/state.pt) is refused with a
message, never loaded. Other names in checkpoints/ (step-*.bak copies, temporary folders) are ignored; those a
killed write left (.tmp-*, .old-*) are removed, or put back, only by the run holding the lock (`remove_leftovers`).
"""

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import LLMSRTError
from ..paths import STATE_DIR, STATE_JSON, STEP_FOLDER, fsync_dir, share_files, write_json

logger = logging.getLogger(__name__)

CHECKSUMS = "checksums.json"
# STATE_JSON (in STATE_DIR): trainer state without its tensors (they are references into STATE_TENSORS)
STATE_TENSORS = "tensors.safetensors"
DEV_SET = "dev_set"  # in STATE_JSON: what its dev_loss was measured on (`measured_on`)
LEGACY_STATE = "state.pt"  # the pickled trainer state of earlier versions: refused
INDEX = "index.json"
ABANDONED = "abandoned-"  # before a step folder's name: a checkpoint a resumed run passed over (`_set_aside`)


@dataclass
class CheckpointInfo:
    path: Path
    step: int


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def seal(folder: Path) -> None:
    """Write checksums of every file in `folder` (fsynced), making it verifiable; its files readable as a plain
    open() leaves them (`paths.share_files`: the trainer state's safetensors was private)."""
    share_files(folder)
    sums = {}
    for p in _files(folder):
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        sums[str(p.relative_to(folder))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_json(folder / CHECKSUMS, sums, fsync=True)
    for d in sorted({p.parent for p in _files(folder)} | {folder}, key=lambda d: -len(d.parts)):
        fsync_dir(d)  # the files' names too (trainer_state/ is made after save_model's own fsync): a power loss
        #   after the older checkpoints are pruned must not leave this one without them


def verify(folder: Path) -> str | None:
    """None if `folder` is intact, else what is wrong."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError, RecursionError):
        return "checksums.json is missing or unreadable"
    if not isinstance(sums, dict) or not all(isinstance(v, dict) and isinstance(v.get("size"), int)
                                             and isinstance(v.get("sha256"), str) for v in sums.values()):
        return "checksums.json is malformed"
    for rel, expected in sums.items():
        p = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return f"checksums.json names {rel[:80]!r}, outside the checkpoint"
        try:
            if not p.is_file():
                return f"{rel[:80]} is missing"
            if p.stat().st_size != expected["size"]:
                return f"{rel} has {p.stat().st_size} bytes, expected {expected['size']} (truncated?)"
            if _sha256(p) != expected["sha256"]:
                return f"{rel} does not match its checksum"
        except OSError as e:  # a permission, an I/O error: this checkpoint cannot be read, as if damaged
            return f"{rel[:80]} unreadable ({e.strerror or type(e).__name__})"
    return None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one state per visible GPU
        state["cuda_device"] = torch.cuda.current_device()  # the one this process draws on (its LOCAL_RANK's)
    return state


def set_rng_state(state: dict, log: Callable[[str], None] | None = None) -> None:
    """Restore the RNG state `rng_state` saved. The CUDA states restore onto the GPUs this host has: one saved on
    8 GPUs resumes on 2 (their states restored, the other 6 logged as dropped) or on a CPU-only host. The GPU this
    process draws on gets the state of the one it drew on when saved, wherever that was: a rank that was GPU 5 of a
    node of 8 and is GPU 1 of a node of 4 now goes on with its own draws, not GPU 1's."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda") or []
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, generator in enumerate(saved[:have]):
        torch.cuda.set_rng_state(generator, index)
    own = state.get("cuda_device")
    if have and own is not None and own < len(saved):
        torch.cuda.set_rng_state(saved[own], torch.cuda.current_device())
    if len(saved) > have:
        (log or logger.warning)(f"checkpoint RNG: saved with {len(saved)} GPU generator state(s), this host has "
                                f"{have} GPU(s): restored {have}, dropped {len(saved) - have} (random draws on "
                                "those GPUs will differ from the original run)")


# torch.save's words (2.13) for a write that failed, which its writer raises as a RuntimeError: a folder gone ("Parent
#   directory X does not exist."), a file it cannot open ("open file failed with strerror: ..."), a short write (a full
#   disk: "unexpected pos N vs M"), and older releases' "PytorchStreamWriter failed writing ...: file write failed"
_WRITE_FAILED = re.compile(r"Parent directory .* does not exist|cannot be opened|open file failed|unexpected pos \d+ vs"
                           r" \d+|file write failed|PytorchStreamWriter failed")


def save(run_dir: Path, step: int, save_model: Callable[[Path], None], trainer_state: dict,
         keep_last: int = 2, dev_loss: float | None = None, log: Callable[[str], None] | None = None,
         resumed_from: int | None = None, dev_set: dict | None = None) -> Path:
    """Write checkpoint `step` atomically; keep the last `keep_last` and the best by dev loss. `trainer_state`
    holds tensors, numbers, strings, lists, tuples, dicts and numpy arrays (`write_trainer_state`). `resumed_from`:
    on a run's first save, the step it started from (0: from scratch), past which every step folder on disk is one
    it passed over (`_set_aside`). `dev_set`: what `dev_loss` was measured on (`final.dev_set`), stored with it;
    the best is then chosen among the checkpoints measured on that set (and older ones that did not say)."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / step_name(step)
    tmp = ckpt_root / f".tmp-{step_name(step)}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(tmp)
        write_trainer_state(tmp / STATE_DIR, {**trainer_state, "dev_loss": dev_loss,
                                              **({DEV_SET: dev_set} if dev_set is not None else {})})
        seal(tmp)
    except (OSError, SafetensorError, RuntimeError) as e:
        # disk full, quota, folder gone (torch.save and safetensors wrap the OSError in their own types): remove
        # the partial folder and any half-written one save_model left beside it, keep the previous checkpoints
        for partial in (ckpt_root.glob(f"*{tmp.name}*") if ckpt_root.is_dir() else ()):
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, RuntimeError) and not _WRITE_FAILED.search(str(e)):
            raise  # not about writing (a DataLoader worker killed by a signal): its own words, not the disk's
        intact = latest(run_dir, log=lambda _: None)
        resume = f"resume from {intact.path.name}" if intact else "start again"
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LLMSRTError(f"{final}: cannot write the checkpoint ({detail}); free space or fix the folder, then "
                          f"run the same command to {resume}") from None
    passed_over = resumed_from is not None  # on its first save, no step folder past its start is the run's own

    def abandoned(s: int) -> bool:  # a step past the run's start that is not this save's: between the two too (a
        #   best or signal save at another step than save_every's, damaged with the newer ones), not only past it
        return passed_over and s > resumed_from and s != step

    if passed_over and step > resumed_from and final.is_dir():  # (the others: after the index, below)
        _set_aside(final, log, "written over by this run's own save of that step")
    _replace(tmp, final)

    index = read_index(ckpt_root, log=log, saving=step)
    # steps past this one, and on a resumed run's first save those past its start, are a run this one abandoned (it
    # resumed from an older checkpoint, the newer ones damaged): they leave the index, and their folders go, so that
    # neither they nor their dev losses crowd this run's own checkpoints (the one it resumed from included) out of
    # keep_last and the best
    on_disk = {s for s, folder in _step_folders(ckpt_root) if (folder / CHECKSUMS).is_file()}  # sealed (a crash
    #   left one unnamed)
    index["steps"] = sorted({s for s in {*index["steps"], *on_disk} if s < step and not abandoned(s)} | {step})
    # a best that was abandoned, or is this step written again, or was measured on another dev set than this run's
    # (its loss is not comparable: it would never be beaten) is chosen again among the others
    best = index["best_step"]
    if best is not None and (best >= step or abandoned(best) or not measured_on(ckpt_root / step_name(best), dev_set)):
        index["best_step"], index["best_loss"] = _best(ckpt_root, index["steps"][:-1], dev_set)
    if _finite(dev_loss) and (index["best_loss"] is None or dev_loss < index["best_loss"]):
        index["best_step"], index["best_loss"] = step, dev_loss
    keep = set(index["steps"][-keep_last:]) | ({index["best_step"]} if index["best_step"] is not None else set())
    try:
        write_json(ckpt_root / INDEX, {**index, "steps": sorted(keep)}, fsync=True)
    except OSError as e:
        raise LLMSRTError(f"{ckpt_root / INDEX}: cannot write the checkpoint index ({e.strerror or e}); {final.name} "
                          "is saved: fix or remove the index, then run the same command to resume") from None
    pruned = "removed with the steps this run abandons"  # what befalls a passed-over folder that cannot be renamed
    for s, folder in _step_folders(ckpt_root):  # on disk, not only in the index: a crash between a checkpoint's
        if s not in keep and not (abandoned(s) and _set_aside(folder, log, pruned)):  # rename and its index line
            shutil.rmtree(folder, ignore_errors=True)  # left a folder no index named, kept for ever till now
    return final


def _set_aside(folder: Path, log: Callable[[str], None] | None, otherwise: str) -> bool:
    """A checkpoint past the step a run started from, which it passed over (damaged or unreadable then): the run's
    saves deleted or overwrote it without a word. It is kept under another name, no run's to resume from or prune
    (abandoned-step-N, -2, -3... beside an earlier one), and said: unreadable may have been a network file system's
    passing error, and a folder whose trainer state alone is damaged still holds good weights. False when it cannot
    be renamed (it is then pruned or replaced, as before, which `otherwise` says)."""
    aside = folder.with_name(ABANDONED + folder.name)
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = folder.with_name(f"{ABANDONED}{folder.name}-{n}")
    try:
        os.replace(folder, aside)
    except OSError as e:  # left where it is: pruned with the abandoned steps, as before
        if log is not None:
            log(f"checkpoint {folder}: passed over by this resumed run, and it cannot be set aside ({e.strerror or e})"
                f"; {otherwise}")
        return False
    if log is not None:
        log(f"checkpoint {folder}: passed over by this resumed run (damaged or unreadable when it started); kept as "
            f"{aside.name}: remove it once you no longer need it")
    return True


def _replace(tmp: Path, final: Path) -> None:
    """Rename the sealed `tmp` to `final`. A step written again (a resume from an older checkpoint) has its old
    folder renamed aside first and removed after: a kill between the two renames leaves it beside, put back by the
    next run (`remove_leftovers`), never no folder at all."""
    aside = final.with_name(f".old-{final.name}-{os.getpid()}")
    try:
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        elif final.exists() or final.is_symlink():  # a stray file or link under a checkpoint's name
            final.unlink()
        os.replace(tmp, final)
    except OSError as e:
        try:
            if aside.is_dir() and not final.exists() and not final.is_symlink():
                os.replace(aside, final)  # the old folder back under its name
        except OSError:
            pass  # left aside: the next run puts it back (`remove_leftovers`)
        shutil.rmtree(tmp, ignore_errors=True)
        raise LLMSRTError(f"{final}: cannot write the checkpoint ({e.strerror or e}); fix the folder, then run the "
                          "same command to resume from the newest intact checkpoint") from None
    fsync_dir(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


def read_index(ckpt_root: Path, log: Callable[[str], None] | None = None, saving: int | None = None) -> dict:
    """checkpoints/index.json; missing, malformed or naming folders that are not there, it is rebuilt from the
    sealed folders (each holds its own dev loss), with a message when it existed; a sealed folder it does not name
    joins it (`saving`: the step `save` has just renamed into place, which it adds itself)."""
    path = Path(ckpt_root) / INDEX
    try:
        index = json.loads(path.read_text())
        problem = _index_problem(index, ckpt_root)
    except FileNotFoundError:
        index, problem = None, ""
    except (OSError, ValueError, RecursionError) as e:
        index, problem = None, f"unreadable ({type(e).__name__})"
    if problem is None:
        # a crash between a checkpoint's rename and its index line leaves an intact folder the index does not name:
        # its step joins, and its dev loss the best (it was pruned by the next save, a better one than the best)
        unnamed = [step for step, folder in _step_folders(ckpt_root)  # sealed (a folder half pruned cannot win:
                   if step not in index["steps"] and step != index["best_step"] and step != saving  # it lost then)
                   and (folder / CHECKSUMS).is_file()]
        if unnamed:
            best_step, best_loss = _best(ckpt_root, unnamed)
            index = {**index, "steps": sorted(index["steps"] + unnamed)}
            if best_loss is not None and (index["best_loss"] is None or best_loss < index["best_loss"]):
                index["best_step"], index["best_loss"] = best_step, best_loss
        return index
    intact = [step for step, folder in _step_folders(ckpt_root)  # newest first; `saving`: sealed a moment ago
              if step == saving or verify(folder) is None]
    best_step, best_loss = _best(ckpt_root, intact)
    rebuilt = {"steps": sorted(intact), "best_step": best_step, "best_loss": best_loss}
    if problem:
        (log or logger.warning)(f"{path} is {problem}; rebuilt from the checkpoint folders "
                                f"(steps {rebuilt['steps']}, best {rebuilt['best_step']})")
    return rebuilt


def by_dev_loss(ckpt_root: Path, steps: list[int], dev_set: dict | None = None) -> list[tuple[int, float]]:
    """(step, dev loss) of the checkpoints of `steps` that hold a finite dev loss, lowest first (on a tie, in the
    order of `steps`); with `dev_set`, only those measured on it (`measured_on`). Not verified: the caller checks
    the one it takes."""
    states = [(step, _read_state_json(Path(ckpt_root) / step_name(step))) for step in steps]
    return sorted(((step, state.get("dev_loss")) for step, state in states
                   if _finite(state.get("dev_loss")) and _same_dev_set(state, dev_set)), key=lambda item: item[1])


def _best(ckpt_root: Path, steps: list[int], dev_set: dict | None = None) -> tuple[int | None, float | None]:
    """(step, dev loss) of the lowest finite dev loss the checkpoints of `steps` hold (the first of them on a tie;
    with `dev_set`, of those measured on it), or (None, None)."""
    return (by_dev_loss(ckpt_root, steps, dev_set) or [(None, None)])[0]


def measured_on(folder: Path, dev_set: dict | None) -> bool:
    """Whether checkpoint `folder`'s dev loss was measured on `dev_set` (what `save` stored with it): dev losses of
    two dev sets (data.dev edited, another data.dev_size) are not comparable, the old set's best never beaten. True
    when either side does not say (`dev_set` None; a checkpoint from before the record: counted as the current set's,
    as it was)."""
    return dev_set is None or _same_dev_set(_read_state_json(folder), dev_set)


def _same_dev_set(state: dict, dev_set: dict | None) -> bool:
    stored = state.get(DEV_SET)
    return dev_set is None or stored is None or stored == dev_set


def _index_problem(index: Any, ckpt_root: Path) -> str | None:
    if not isinstance(index, dict) or set(index) != {"steps", "best_step", "best_loss"}:
        return "not an index (expected the keys steps, best_step, best_loss)"
    steps, best, loss = index["steps"], index["best_step"], index["best_loss"]
    if not isinstance(steps, list) or not all(type(s) is int and s >= 0 for s in steps):
        return "malformed (steps must be a list of step numbers)"
    if (best is None) != (loss is None) or best is not None and (type(best) is not int or not _finite(loss)):
        return "malformed (best_step / best_loss)"
    missing = [s for s in steps + ([best] if best is not None else []) if not (ckpt_root / step_name(s)).is_dir()]
    if missing:
        return f"out of date (names step {missing[0]}, which is not there)"
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _step_folders(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the step-NNNNNNNN folders, newest first; other names (step-*.bak copies) are ignored."""
    found = []
    for p in Path(ckpt_root).iterdir() if Path(ckpt_root).is_dir() else ():
        m = STEP_FOLDER.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def remove_leftovers(run_dir: Path, log: Callable[[str], None] = print) -> None:
    """What a killed checkpoint write left in checkpoints/: its half-written .tmp-* folders go; an old step folder
    renamed aside (.old-step-N-pid, `_replace`) whose step has no folder now is put back, else it goes. Only with the
    run lock held: another run's .tmp-* is its checkpoint being written."""
    ckpt_root = Path(run_dir) / "checkpoints"
    for tmp in sorted(ckpt_root.glob(".tmp-*")) if ckpt_root.is_dir() else ():
        shutil.rmtree(tmp, ignore_errors=True)
    for aside in sorted(ckpt_root.glob(".old-step-*")) if ckpt_root.is_dir() else ():
        m = re.fullmatch(r"\.old-(step-\d{8,})-\d+", aside.name)
        final = ckpt_root / m.group(1) if m else None
        if final is not None and aside.is_dir() and not final.exists() and not final.is_symlink():
            os.replace(aside, final)
            fsync_dir(ckpt_root)
            log(f"checkpoint {final.name}: a killed run left it renamed aside ({aside.name}); put back")
        else:
            shutil.rmtree(aside, ignore_errors=True)


def latest(run_dir: Path, log: Callable[[str], None] = print) -> CheckpointInfo | None:
    """The newest intact checkpoint; damaged ones are reported and skipped. Nothing is removed (`remove_leftovers`
    is the locked run's): a run that has not taken the lock yet reads the folder beside one writing it."""
    ckpt_root = Path(run_dir) / "checkpoints"
    if not ckpt_root.is_dir():
        return None
    for step, folder in _step_folders(ckpt_root):
        problem = verify(folder)
        if problem is None:
            return CheckpointInfo(folder, step)
        log(f"checkpoint {folder} is damaged ({problem}); trying the previous one")
    return None


# ---- trainer state: JSON + safetensors, nothing that can run code -------------------------------------------------
def write_trainer_state(folder: Path, state: dict) -> None:
    """`state` as STATE_JSON with its tensors in STATE_TENSORS. Tuples, dicts with non-string keys and numpy
    arrays are tagged so that `load_trainer_state` gives them back as they were (an optimizer's integer keys, a
    RNG's tuples)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, set())
    save_file(tensors, str(folder / STATE_TENSORS))
    with open(folder / STATE_JSON, "w", encoding="utf-8") as f:
        json.dump(tree, f)


def load_trainer_state(folder: Path, required: tuple[str, ...] = ()) -> dict:
    """The trainer state `write_trainer_state` wrote in checkpoint `folder` (the keys `required` must be there)."""
    state_dir = Path(folder) / STATE_DIR
    if not (state_dir / STATE_JSON).is_file() and (state_dir / LEGACY_STATE).is_file():
        raise LLMSRTError(f"{folder}: trainer state in the old pickled format ({STATE_DIR}/{LEGACY_STATE}), which is "
                          "not loaded (unpickling can run code); to go on from its weights start a new output_dir "
                          f"with model.init_from={folder}, or move this checkpoint away to resume from another")
    try:
        tree = json.loads((state_dir / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(state_dir / STATE_TENSORS)) if (state_dir / STATE_TENSORS).is_file() else {}
        state = _decode(tree, tensors)
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"no {missing[0]!r} in {STATE_JSON}")
        return state
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, RecursionError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise LLMSRTError(f"{folder}: cannot read trainer state ({type(e).__name__}: {detail}); delete this "
                          "checkpoint to resume from the previous one") from None


def _read_state_json(folder: Path) -> dict:
    """The checkpoint's STATE_JSON as stored (tensor references left as they are); {} if unreadable."""
    try:
        tree = json.loads((Path(folder) / STATE_DIR / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return tree if isinstance(tree, dict) else {}


def stored_settings(folder: Path) -> dict | None:
    """The run settings saved with checkpoint `folder` (None when it has none)."""
    settings = _read_state_json(folder).get("settings")
    return settings if isinstance(settings, dict) else None


def stored_config(folder: Path) -> dict:
    """The whole config saved with checkpoint `folder`, nested as `config.to_dict` writes it ({} when it has none)."""
    config = _read_state_json(folder).get("config")
    return config if isinstance(config, dict) else {}


_TAGS = ("__tensor__", "__tuple__", "__ndarray__", "__items__")


def _encode(obj: Any, tensors: dict, seen: set) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.numel() and t.data_ptr() in seen:  # safetensors refuses tensors that share memory
            t = t.clone()
        seen.add(t.data_ptr())
        key = str(len(tensors))
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, seen)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, seen) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, seen) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, seen) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, seen), _encode(v, tensors, seen)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"trainer state: cannot store a {type(obj).__name__}")


def _decode(tree: Any, tensors: dict) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    tag = next((t for t in _TAGS if t in tree), None)
    if tag == "__tensor__":
        return tensors[tree["__tensor__"]]
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    if tag == "__ndarray__":
        dtype = np.dtype(str(tree["dtype"]))
        if dtype.kind not in "biuf":  # numbers only (a RNG's key): no object arrays
            raise ValueError(f"an array of {dtype} in {STATE_JSON}")
        return np.asarray(tree["__ndarray__"], dtype=dtype)
    if tag == "__items__":
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in tree["__items__"]}
    return {k: _decode(v, tensors) for k, v in tree.items()}


def _hashable(key: Any) -> Any:
    hash(key)  # a TypeError for a list or dict key: the file was not written by write_trainer_state
    return key


# ---- one run per output folder --------------------------------------------------------------------------------------
# What a run writes beside a checkpoint's tensors (weights and AdamW's moments), measured on a 2.5M-parameter
#   adapter's checkpoint (29.2 MiB on disk, its tensors 29.1 MiB) and logs, each with room to spare:
STATE_FILES = 64 << 10  # config.json, checksums.json, index.json, state.json's settings, file-system blocks (~20 KiB)
STATE_PER_RANK = 32 << 10  # each rank's RNG states in the trainer state, JSON and tensors (~20 KiB)
STATE_PER_TENSOR = 512  # each trainable tensor's AdamW step and its safetensors header entries (~350 B)
LOG_PER_STEP = 2 << 10  # a logged step's train_log.jsonl line and TensorBoard events (~1.3 KiB)
LOG_ROOM = 1 << 20  # asked for the logs before the first checkpoint (at least), and before the model is built
ADAM_MOMENTS = 2  # AdamW's exp_avg and exp_avg_sq: a float32 tensor each per trainable weight


@dataclass(frozen=True)
class CheckpointSize:
    """What one checkpoint of a run writes (`checkpoint_size`), in bytes."""
    weights: int  # the weights it saves: the whole adapter, LoRA and CTC head, frozen or not
    moments: int  # AdamW's moments of the trainable ones
    trainable: int  # trainable parameters (a count)
    frozen: int  # of `weights`, those that do not train (a frozen adapter under trainable: [lora])
    state: int = 0  # the rest of its trainer state and small files (STATE_*)

    @property
    def total(self) -> int:
        return self.weights + self.moments + self.state


def checkpoint_size(params: list[torch.nn.Parameter], saved: dict | None = None, ranks: int = 1) -> CheckpointSize:
    """The size of one checkpoint of trainable `params` whose model saves `saved` (in `SpeechLLM.trainable_state`'s
    form; default: `params` alone) on `ranks` ranks: a frozen adapter is saved whole beside the LoRA that trains."""
    own = sum(p.numel() * p.element_size() for p in params)
    weights = own if saved is None else sum(t.numel() * t.element_size() for group in saved.values()
                                            for t in (group or {}).values())
    return CheckpointSize(weights=weights, moments=ADAM_MOMENTS * own,  # in each parameter's own dtype
                          trainable=sum(p.numel() for p in params), frozen=max(0, weights - own),
                          state=STATE_FILES + STATE_PER_RANK * ranks + STATE_PER_TENSOR * len(params))


def log_room(save_every: int, log_every: int) -> int:
    """The room the logs take until a checkpoint is written: a line and TensorBoard's events per logged step."""
    return max(LOG_ROOM, LOG_PER_STEP * (save_every // max(1, log_every) + 1))


def check_room(folder: Path, size: CheckpointSize, keep_last: int, when: str = "", margin: int = LOG_ROOM) -> None:
    """Fail before the first step if `folder` has no room for one checkpoint of `size` (the paper's 3B adapter,
    73.7M, with AdamW's moments: ~843 MiB) and `margin` beside it (`log_room`: the logs written until it is): the
    64 MiB asked before the model was built let a nearly full disk through, and training died at the first save,
    save_every steps in, with nothing to resume from. `when`: what the free space is measured after (the feature
    cache's fill, on the same disk maybe). One checkpoint, not keep_last + 1: the checkpoints on disk already hold
    their room (a save writes one more, then removes the oldest past keep_last), a later save that finds no room
    keeps the ones before it (`save`), and the run resumes from them once space is freed."""
    free = shutil.disk_usage(folder).free
    if free < size.total + margin:
        held = (keep_last + 1) * size.total
        beside = f", and {size.frozen / 2**20:.0f} MiB of frozen weights saved with them" if size.frozen >= 1 << 20 \
            else ""
        raise LLMSRTError(f"{folder}: {free / 2**20:.0f} MiB free{when}, and one checkpoint of this run needs about "
                          f"{size.total / 2**20:.0f} MiB ({size.trainable / 1e6:.1f}M trainable parameters with "
                          f"AdamW's {ADAM_MOMENTS} moments{beside}) and its logs about {margin / 2**20:.0f} MiB until "
                          f"then; free space or choose another output_dir (keep_last {keep_last} holds about "
                          f"{held / 2**20:.0f} MiB of checkpoints while the next one is written)")


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
        raise LLMSRTError(f"{folder}: only {free / 2**20:.0f} MiB free, less than the {need_bytes / 2**20:.0f} MiB "
                          "a run's logs take before its first checkpoint (whose own size is checked once the model "
                          "is built); free space or choose another output_dir")
