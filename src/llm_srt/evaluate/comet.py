"""COMET (the paper's second metric, wmt22-comet-da) for `llm-srt evaluate --comet`.

unbabel-comet pins numpy < 2 and transformers < 5, so it cannot live in our environment: it runs in a Python of its
own (`llm-srt setup --comet` makes one under the cache folder, pinned by comet_constraints.txt, torch at our
version), and `comet_bridge.py` (run by that Python) scores every system's rows in one call, the model loaded once.

A row is scored when it has a reference translation and a source sentence: COMET reads (source, hypothesis,
reference), and the source of a speech translation row is its reference transcript, as speech-translation papers
score it. A failed row is scored as the empty hypothesis, as in BLEU. A row without a source transcript (or an ASR
row) gets no COMET score; the report counts them. Scores are COMET's own (0-1 for wmt22-comet-da), shown x 100.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata, resources
from pathlib import Path

from .. import paths
from ..errors import LLMSRTError
from .comet_bridge import is_path
from .report import UtteranceResult

DEFAULT_MODEL = "Unbabel/wmt22-comet-da"  # the paper's COMET
COMET_VERSION = "2.2.7"
PYTHON_ENV = "LLM_SRT_COMET_PYTHON"  # a Python with unbabel-comet installed, instead of the setup's
CONSTRAINTS = "comet_constraints.txt"  # in this package: the exact versions of the COMET environment
STAMP = ".llm-srt-comet.json"  # inside the environment: what the setup installed
MULTI_GPU = ("COMET's multi-GPU scoring does not run here (its worker processes cannot return their scores under "
             "torch >= 2.6)")  # Lightning's DDP children re-run the bridge without -I, so `import comet` finds this
#   module; past that, COMET 2.2.7 unpickles their predictions with torch.load's weights_only default and fails
HAS_COMET = "import importlib.util, sys; sys.exit(importlib.util.find_spec('comet') is None)"  # run with -I, as the
#   bridge runs: exit status 0 where unbabel-comet imports (its import takes seconds; finding it, a blink)
CHECK_SECONDS = 120  # the most that check may take (a Python on a slow network file system starts slowly)
SETUP_HINT = ("run `llm-srt setup --comet` (a minute, from the package index), or point --comet-python (or "
              f"${PYTHON_ENV}) at a Python that has unbabel-comet")


@dataclass(frozen=True)
class CometOptions:
    model: str = DEFAULT_MODEL  # a COMET model name, folder or checkpoint file
    python: str | None = None  # the COMET Python (None: $LLM_SRT_COMET_PYTHON, else the setup's environment)
    batch_size: int = 16
    gpus: int | None = None  # None: 1 when the COMET Python sees CUDA, else 0; never more than 1 (MULTI_GPU)
    device: str | None = None  # "cuda:N": COMET runs on that GPU (Lightning's devices=1 is the first one it sees)

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise LLMSRTError("--comet needs a COMET model name, folder or checkpoint file")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LLMSRTError(f"--comet-batch-size {self.batch_size}: use a whole number >= 1")
        if self.gpus is not None and (not isinstance(self.gpus, int) or self.gpus < 0):
            raise LLMSRTError(f"--comet-gpus {self.gpus}: use 0 (CPU) or 1")
        if self.gpus is not None and self.gpus > 1:  # refused here, so before `evaluate` decodes anything
            raise LLMSRTError(f"--comet-gpus {self.gpus}: {MULTI_GPU}; use 0 (CPU) or 1")


def env_dir() -> Path:
    """Where `llm-srt setup --comet` puts the COMET environment."""
    return paths.cache_dir() / "comet-env"


def comet_python(explicit: str | None = None) -> Path:
    """The Python that runs COMET: `explicit`, else $LLM_SRT_COMET_PYTHON, else the setup's environment. A path
    given is made absolute, not resolved: Path("./python") prints as "python", which subprocess looks up on $PATH,
    and a venv's python is a link that must run as itself to find its packages."""
    for value, where in ((explicit, "--comet-python"), (os.environ.get(PYTHON_ENV), f"${PYTHON_ENV}")):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise LLMSRTError(f"{where} {value}: no such file; {SETUP_HINT}")
            return path.absolute()
    python = _python(env_dir())
    if not _stamp_ok(env_dir()):
        state = "is out of date" if (env_dir() / STAMP).exists() else "is not set up yet"
        raise LLMSRTError(f"COMET runs in its own Python environment (unbabel-comet needs numpy < 2 and "
                          f"transformers < 5), and the one at {env_dir()} {state}: {SETUP_HINT}")
    return python


def check_python(explicit: str | None = None) -> Path:
    """`comet_python`, and where it is one given (`explicit`, $LLM_SRT_COMET_PYTHON) rather than the setup's (whose
    stamp says what it holds), a one-line error unless it has unbabel-comet: checked before a long decoding, it failed
    after it (`ModuleNotFoundError: No module named 'comet'`)."""
    python = comet_python(explicit)
    given = explicit or os.environ.get(PYTHON_ENV)
    if not given:
        return python
    where = python_source(explicit)
    try:
        done = subprocess.run([str(python), "-I", "-c", HAS_COMET], capture_output=True, timeout=CHECK_SECONDS,
                              env=_bridge_env())
    except subprocess.TimeoutExpired:
        raise LLMSRTError(f"{where} {given}: cannot run it (no answer in {CHECK_SECONDS} s); {SETUP_HINT}") from None
    except OSError as e:
        raise LLMSRTError(f"{where} {given}: cannot run it ({e.strerror or e}); {SETUP_HINT}") from None
    said = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    if done.returncode != 0:
        problem = f"cannot run it ({said[-1].strip()})" if said else "it has no unbabel-comet (no module named comet)"
        raise LLMSRTError(f"{where} {given}: {problem}; {SETUP_HINT}")
    return python


def python_source(explicit: str | None = None) -> str:
    """Where `comet_python(explicit)` took the COMET Python from, as an error names it: the option, the variable, or
    the setup's environment (whose fix is to make it again)."""
    if explicit:
        return "--comet-python"
    if os.environ.get(PYTHON_ENV):
        return f"${PYTHON_ENV}"
    return "the COMET environment's Python"


def check_model(model: str, option: str = "--comet") -> None:
    """A one-line error for a COMET model path that is not there, or a folder without its checkpoint (checked before a
    long decoding, as the bridge would find it: `comet_bridge.checkpoint`); `option`: the option that named it."""
    path = Path(model).expanduser()
    if is_path(model) and not path.exists():
        raise LLMSRTError(f"{option} {model}: no such COMET checkpoint or folder (a model name to download reads "
                          "org/name, e.g. Unbabel/wmt22-comet-da)")
    if path.is_dir() and not (path / "checkpoints" / "model.ckpt").is_file():
        raise LLMSRTError(f"{option} {model}: no checkpoints/model.ckpt in this folder (a COMET model folder holds "
                          "hparams.yaml and checkpoints/model.ckpt); give the folder that holds it, or the .ckpt file")


def sample(r: UtteranceResult) -> dict[str, str] | None:
    """The (source, hypothesis, reference) COMET scores for a row, or None when it cannot be scored."""
    if r.ref_translation is None or not r.ref_transcript or r.task == "asr":
        return None
    return {"src": r.ref_transcript, "mt": "" if r.failed else r.hyp_translation, "ref": r.ref_translation}


def score_systems(systems: Mapping[str, Sequence[UtteranceResult]], options: CometOptions,
                  log=print) -> dict[str, list[UtteranceResult]]:
    """Every system's rows with their COMET score (`UtteranceResult.comet`; None for a row that cannot be scored),
    all systems in one call of the COMET Python; a (source, hypothesis, reference) met twice is scored once."""
    keys = {name: [None if (s := sample(r)) is None else (s["src"], s["mt"], s["ref"]) for r in rows]
            for name, rows in systems.items()}
    unique = list(dict.fromkeys(k for ks in keys.values() for k in ks if k is not None))  # first-seen order
    started = time.perf_counter()
    scores = dict(zip(unique, segment_scores([{"src": a, "mt": b, "ref": c} for a, b, c in unique], options)))
    log(f"COMET ({options.model}): {len(unique)} segments scored in {time.perf_counter() - started:.0f} s")
    return {name: [replace(r, comet=None if k is None else scores[k]) for r, k in zip(rows, keys[name])]
            for name, rows in systems.items()}


def segment_scores(samples: list[dict[str, str]], options: CometOptions, option: str = "--comet") -> list[float]:
    """COMET's score of each {"src", "mt", "ref"}, in order, from the COMET Python (`comet_bridge.py`); `option`: the
    one that named the model, in its errors (`score`'s --comet-model)."""
    if not samples:
        return []
    python = comet_python(options.python)
    bridge = Path(__file__).with_name("comet_bridge.py")
    with tempfile.TemporaryDirectory(prefix="llm-srt-comet-") as tmp:
        request, response = Path(tmp) / "request.json", Path(tmp) / "response.json"
        request.write_text(json.dumps({"model": options.model, "samples": samples, "batch_size": options.batch_size,
                                       "gpus": options.gpus, "option": option}, ensure_ascii=False),
                           encoding="utf-8")
        try:
            done = subprocess.run([str(python), "-I", str(bridge), str(request), str(response)],
                                  capture_output=True, text=True, env=_bridge_env(options.device))
        except OSError as e:  # named where it came from: "--comet-python" where the user gave none misled
            where = python_source(options.python)
            hint = SETUP_HINT if options.python or os.environ.get(PYTHON_ENV) else (
                "make it again with `llm-srt setup --comet --force`, or point --comet-python (or "
                f"${PYTHON_ENV}) at a Python that has unbabel-comet")
            raise LLMSRTError(f"{where} {python}: cannot run it ({e.strerror or e}); {hint}") from None
        if done.returncode < 0:  # killed: its last line on stderr is whatever it logged before, not why
            raise LLMSRTError(f"{option} {options.model}: {killed_by(-done.returncode, option)} (ran {python})")
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            said = next((line for line in reversed(lines) if line.startswith("COMET:")), lines[-1] if lines else "")
            raise LLMSRTError(f"{option} {options.model}: {said or f'exit status {done.returncode}'} (ran {python})")
        scores = json.loads(response.read_text(encoding="utf-8"))["scores"]
    if len(scores) != len(samples):
        raise LLMSRTError(f"{option} {options.model}: {len(scores)} scores came back for {len(samples)} segments")
    return [float(s) for s in scores]


def killed_by(number: int, option: str = "--comet") -> str:
    """What a COMET Python killed by signal `number` is said to have met: SIGKILL, unasked, is most often the
    out-of-memory killer (COMET's XLM-R large model loading beside what the machine already holds)."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number != signal.SIGKILL:
        return f"the COMET Python was stopped by {name}"
    smaller = " or a smaller --comet-batch-size" if option == "--comet" else ""
    return (f"the COMET Python was killed by {name}, most often the out-of-memory killer: the machine ran out of "
            f"memory as COMET scored; run it again with more memory free{smaller}")


LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                 "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")  # and TORCHELASTIC_*


def _bridge_env(device: str | None = None) -> dict[str, str]:
    """The COMET Python's environment: ours without the offline switches our CLI turned on for its own runs (a
    user's own stay): COMET downloads a model given by name, and its encoder reads xlm-roberta-large's config and
    tokenizer from the Hugging Face hub or its cache, even for a model on disk. Nor torchrun's variables (rank 0 of
    an `evaluate` under torchrun scores COMET alone): Lightning takes RANK, LOCAL_RANK, ... for a launch of its own
    and would wait for the other ranks at MASTER_ADDR. `device` "cuda:N": that GPU alone is visible to it (N counts
    the GPUs this process sees, so through its CUDA_VISIBLE_DEVICES), as Lightning runs on the first one it sees."""
    env = {k: v for k, v in os.environ.items() if k not in paths.OFFLINE_SET_HERE and k not in LAUNCHER_VARS
           and not k.startswith("TORCHELASTIC_")}
    if device is not None and device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        seen = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = seen[index] if index < len(seen) else str(index)
    return env


def install_env(target: Path | None = None, force: bool = False, log=print) -> Path:
    """Create (or keep, when its stamp matches) the COMET environment: a venv with unbabel-comet and its exact
    dependencies (comet_constraints.txt), torch at our version. Returns its Python."""
    target = target or env_dir()
    if not force and _stamp_ok(target):  # before the lock: a read-only cache set up already needs no writing
        log(f"COMET environment: {target} (already set up)")
        return _python(target)
    with _lock(target):
        if not force and _stamp_ok(target):  # another process may have finished it meanwhile
            log(f"COMET environment: {target} (already set up)")
            return _python(target)
        started = time.perf_counter()
        log(f"COMET environment: creating {target} (unbabel-comet {COMET_VERSION}, torch {_torch_version()})")
        _run([sys.executable, "-m", "venv", "--clear", str(target)], "create the COMET environment")
        constraints = resources.files("llm_srt.evaluate").joinpath(CONSTRAINTS)
        with resources.as_file(constraints) as file:
            _run([str(_python(target)), "-m", "pip", "install", "-q", "-c", str(file), f"torch=={_torch_version()}",
                  f"unbabel-comet=={COMET_VERSION}", "setuptools"], "install unbabel-comet")
        _run([str(_python(target)), "-c", "import comet"], "import comet in the new environment")
        (target / STAMP).write_text(json.dumps(_expected_stamp(), indent=1) + "\n", encoding="utf-8")
        log(f"COMET environment: ready in {time.perf_counter() - started:.0f} s")
        return _python(target)


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _torch_version() -> str:
    return metadata.version("torch").split("+")[0]


def _expected_stamp() -> dict:
    text = resources.files("llm_srt.evaluate").joinpath(CONSTRAINTS).read_bytes()
    return {"unbabel-comet": COMET_VERSION, "torch": _torch_version(),
            "constraints_sha256": hashlib.sha256(text).hexdigest()}


def _stamp_ok(env: Path) -> bool:
    try:
        return json.loads((env / STAMP).read_text()) == _expected_stamp() and _python(env).is_file()
    except (OSError, ValueError):
        return False


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(line.strip() for line in done.stderr.splitlines()[-3:] if line.strip())
        raise LLMSRTError(f"cannot {what} (exit status {done.returncode}): {tail or 'no output'}")


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """One setup of an environment at a time on this machine (parallel test workers, two shells). A cache folder
    that cannot take it (read-only, full, a file) is a one-line error saying what to do (it was a traceback). A
    file system that takes no locks (paths.NO_LOCKS) is said on stderr, and the setup goes on unlocked."""
    paths.check_folder(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        f = open(target.parent / f".{target.name}.lock", "a")
    except OSError as e:
        if e.errno not in paths.UNWRITABLE | {errno.ENOTDIR, errno.EEXIST}:
            raise
        raise LLMSRTError(f"{target.parent}: cannot write the COMET environment there ({e.strerror or e}); set "
                          f"{paths.CACHE_ENV}=/a/writable/dir, or for `evaluate --comet` point ${PYTHON_ENV} at a "
                          "Python that has unbabel-comet") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            locked = True
        except OSError as e:
            if e.errno not in paths.NO_LOCKS:
                raise
            print(f"{f.name}: this file system takes no locks ({e.strerror or e}); run one llm-srt setup --comet at a "
                  "time on this cache", file=sys.stderr, flush=True)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)
