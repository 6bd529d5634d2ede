"""The GPU check's environment (scripts/gpu_check.py): where the repository is, what the GPU machine's image lacks
(the wheels `make fetch-wheels` brings), and the env step that says what this Python can import."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_check_runner import Check

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

# Our dependencies that the GPU machine's image lacks (or has in another version than constraints.txt pins),
# fetched as wheels for CPython 3.12 x86-64; versions come from constraints.txt. The image's torch, accelerate,
# sacrebleu, numpy, tokenizers, safetensors, huggingface-hub, pyyaml, tqdm, matplotlib, tensorboard and pytest
# are used as they are; what a wheel requires beyond them is a wheel too (annotated-doc, which fastapi imports with
# itself, anyio, idna, click, h11: the web stack of the image's huggingface-hub changes with its releases).
GPU_WHEELS = ("transformers", "peft", "gguf", "soundfile", "cffi", "pycparser", "soxr", "jiwer", "RapidFuzz",
              "whisper_normalizer", "indic_numtowords", "more-itertools", "text2num", "fastapi", "starlette",
              "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions",
              "opentelemetry-api", "uvicorn", "python-multipart", "annotated-doc", "anyio", "idna", "click", "h11")
WHEELS_MIB = 22.4  # what `make fetch-wheels` downloads (28 wheels, 2026-12-06): .whl/ travels with the tracked
#   tree, within a device call's 64 MiB (a test adds them up)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                   "manylinux1_x86_64")
VERSIONS = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "sacrebleu", "numpy",
            "soundfile", "jiwer")
IMPORTS = ("transformers", "peft", "accelerate", "soundfile", "soxr")  # what every step after env imports (the
#   model, the audio): one missing, all of them fail, so on a GPU the check stops at env instead of spending its time
IMAGE_IMPORTS = ("yaml",)  # what every step after env imports from the GPU image, not from .whl/ (every config, the
#   bench's too): as IMPORTS. On an image without one, env passed and every later step failed on its import, e2e's
#   report blaming the product ("the killed run sealed fewer than two checkpoints")
STEP_IMPORTS = {"cuda-tests": ("pytest",), "e2e": ("tensorboard",)}  # what one step alone imports from the GPU
#   image (the recipe's TensorBoard log): one missing fails env, naming it, and that step, not run; the check goes
#   on (without pytest or tensorboard the whole session stopped at env, its benches with it)
OPTIONAL_IMPORTS = {"jiwer": ("tests/evaluate",), "whisper_normalizer": ("tests/evaluate",), "gguf": (),
                    "matplotlib": ("tests/evaluate",), "fastapi": ("tests/serve",), "uvicorn": ("tests/serve",),
                    "python_multipart": ("tests/serve",), "starlette.testclient": ("tests/serve",)}
#   what else .whl/ brings (matplotlib: the image, for evaluate's plots), and the cuda test folders that import it:
#   one missing fails env, naming it, and the check goes on without those folders (and with e2e's evaluate failing,
#   for jiwer, whisper_normalizer or matplotlib): one bad wheel does not cost the session its benches.
#   starlette.testclient (fastapi's TestClient, which tests/serve's conftest imports) raises a RuntimeError without
#   httpx, which the image's huggingface-hub brings in some releases only: all 22 cuda tests went with that conftest
NOT_INSTALLED = "wheels-not-installed.txt"  # in OUT: the wheels gpu-check.sh's one-by-one install could not install


def env_step(check: Check) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    index = None  # the GPU the check runs on: --device cuda:N's, else the current one
    if torch.cuda.is_available() and check.device != "cpu":
        index = torch.device(check.device).index if check.device.startswith("cuda:") else torch.cuda.current_device()
    gpu = torch.cuda.get_device_name(index) if index is not None else None
    problems = {name: why for name in IMPORTS if (why := unimportable(name)) is not None}
    missing = [name for name, why in problems.items() if why == "missing"]
    broken = [f"{name} ({why})" for name, why in problems.items() if why != "missing"]
    optional = {name: why for name in OPTIONAL_IMPORTS if (why := unimportable(name)) is not None}
    image = (*IMAGE_IMPORTS, *(name for names in STEP_IMPORTS.values() for name in names))
    lacking = {name: why for name in image if (why := unimportable(name)) is not None}
    try:
        pins = dict(p.split("==") for p in pinned(("torch", "transformers", "peft"), ROOT / "constraints.txt"))
    except SystemExit as e:  # a report, not the end of the check
        pins, missing = {}, [*missing, str(e)]
    other = [f"{n} {versions.get(n)} (constraints.txt: {v})" for n, v in pins.items()
             if (versions.get(n) or "").split("+")[0] != v]  # a local build tag (2.13.0+cu128) is the pinned release
    # auto found no GPU where nvidia-smi is installed: torch cannot see this machine's GPU, and the CPU plan would
    #   spend the GPU session reporting "passed"
    blind = check.asked == "auto" and check.device == "cpu" and shutil.which("nvidia-smi")
    error = ("no CUDA GPU visible to torch" if check.device != "cpu" and gpu is None else
             f"no CUDA GPU visible to torch {versions['torch']} (CUDA {torch.version.cuda}), yet nvidia-smi is on "
             f"PATH ({blind}): a GPU machine whose torch sees none; --device cpu (DEVICE=cpu) for a CPU rehearsal"
             if blind else
             f"missing {', '.join(missing)}: carry .whl/ (make fetch-wheels here first) or install them" if missing
             else f"cannot import {'; '.join(broken)}: carry .whl/ built for this machine's Python (make fetch-wheels "
                  "here first) or install them" if broken else None)
    fatal = error is not None or not lacking.keys().isdisjoint(IMAGE_IMPORTS)  # the steps after env cannot run:
    #   on a GPU the check stops here
    if lacking:  # a step that needs one alone fails as not run (Check.step), and the check goes on
        steps = [step for step, names in STEP_IMPORTS.items() if not lacking.keys().isdisjoint(names)]
        said = (f"the GPU image lacks {'; '.join(f'{n} ({why})' for n, why in lacking.items())}, which .whl/ does "
                "not bring (GPU_WHEELS counts on the image for it): install it, or add its wheels to GPU_WHEELS"
                + (f"; the check goes on without {', '.join(steps)}" if steps and not fatal else ""))
        error = f"{error}; {said}" if error else said
    if optional:
        needs = sorted({folder for name in optional for folder in OPTIONAL_IMPORTS[name]})
        said = (f"cannot import {'; '.join(f'{n} ({why})' for n, why in optional.items())}"
                + ("" if fatal else " (the check goes on)")
                + (f"; left out of cuda-tests: {', '.join(needs)}" if needs else "")
                # llm_srt.evaluate.metrics imports them as the evaluate verb starts
                + ("; e2e's evaluate will fail" if {"jiwer", "whisper_normalizer", "matplotlib"} & optional.keys()
                   else ""))
        error = f"{error}; {said}" if error else said
    # wheels pip could not install one by one (gpu-check.sh): the image's own copy, if any, runs in their place
    unlisted = (check.out / NOT_INSTALLED).read_text().split() if (check.out / NOT_INSTALLED).is_file() else []
    if unlisted:
        said = f"not installed from .whl/ (pip-install.log): {', '.join(unlisted)}"
        error = f"{error}; {said}" if error else said
    return {"ok": error is None, "fatal": fatal, **({"wheels_not_installed": unlisted} if unlisted else {}),
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "gpu": gpu,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1) if gpu else None,
            "versions": versions, **({"other_versions": other} if other else {}),
            **({"unimportable": sorted(optional)} if optional else {}), **({"error": error} if error else {})}


def unimportable(name: str) -> str | None:
    """Why module `name` cannot be imported here ("missing" when it is not installed), or None. An import, not only
    a look for it: a wheel built for another Python or lacking its shared library is found, then every step that
    imports it fails after spending its time."""
    try:  # a finder may refuse a module by raising (ModuleNotFoundError), not only by finding none
        if importlib.util.find_spec(name) is None:
            return "missing"
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        return "missing" if e.name == name else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    except Exception as e:  # noqa: BLE001 - any failure to import is the report
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    return None



def pinned(names: tuple[str, ...], constraints: Path) -> list[str]:
    """name==version for each name, from constraints.txt (names compared case- and -/_-insensitively)."""
    def norm(n: str) -> str:
        return n.lower().replace("_", "-")

    pins = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[norm(name.strip())] = version.strip()
    missing = [n for n in names if norm(n) not in pins]
    if missing:
        raise SystemExit(f"gpu_check: {constraints} pins no version of {', '.join(missing)}")
    return [f"{n}=={pins[norm(n)]}" for n in names]


def fetch_wheels(args) -> int:
    """Download GPU_WHEELS (CPython 3.12, x86-64 manylinux, no dependencies: the list is complete) into `dest`."""
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".fetch-*"):  # an interrupted fetch's: .whl/ travels to the GPU machine whole
        shutil.rmtree(stale, ignore_errors=True)
    # the old set stays until the new one is whole; the download goes inside dest (.whl/, git-ignored), not beside
    #   it in the repository's root, where an interrupted fetch left it to travel with the tree (gpu-check.sh
    #   installs dest/*.whl only)
    fresh = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
            "3.12", "--implementation", "cp", *platforms, "-d", str(fresh),
            *pinned(GPU_WHEELS, ROOT / "constraints.txt")]
    done = subprocess.run(argv)
    if done.returncode == 0:  # an earlier pin's wheel beside the new one: pip refuses the pair at install
        for old in dest.glob("*.whl"):
            old.unlink()
        for new in fresh.glob("*.whl"):
            new.replace(dest / new.name)
    shutil.rmtree(fresh, ignore_errors=True)
    if done.returncode == 0:
        size = sum(f.stat().st_size for f in dest.glob("*.whl"))
        print(f"{len(list(dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {dest}")
    return done.returncode
