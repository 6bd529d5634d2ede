"""Shared fixtures. Every audio example is generated here (espeak-ng or numpy); nothing is downloaded."""

import os
import shutil
import subprocess
from pathlib import Path

import sys

import numpy as np
import pytest

from ordering import longest_first

sys.path.insert(0, str(Path(__file__).parent / "model"))  # tiny.py: tiny random models for any test

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each (and their
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses), as more threads than cores slow every product
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def espeak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speak `text` with espeak-ng; 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    from llm_srt.audio import load_audio

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    return load_audio(wav, name=f"espeak:{text[:20]}")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Every test that needs COMET's own environment (a ~2-minute install, then 10 s per `import comet`) is in the
    slow tier (`make test-slow`, which CI runs after `make test`): marked before `-m` selects. Of the tests selected,
    those marked `cuda` run only where torch sees a GPU (make gpu-check) and are skipped elsewhere; the longest run
    first (longest_first); COMET's environment is made beside them where they need it (start_comet_setup)."""
    import torch

    for item in items:
        if "comet_python" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    yield  # pytest's own `-m` and `-k` selection
    longest_first(items)
    start_comet_setup(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run make gpu-check on a GPU host)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


_comet_setup: subprocess.Popen | None = None


def start_comet_setup(items: list) -> None:
    """COMET's environment (`llm-srt setup --comet`: 1.5-2 minutes the first time on a 2-core machine) is made in the
    background from the start of a run that has tests needing it, beside the first tests, by one process (the first
    test worker). Their worker then finds it ready, instead of making it while the other worker waited at its lock
    (102 s idle in a cold make test of 2026-12-04). A later run finds it made (install_env is then a no-op)."""
    global _comet_setup
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0" or _comet_setup is not None:
        return
    if any("comet_python" in getattr(item, "fixturenames", ()) for item in items):
        code = "from llm_srt.evaluate import comet; comet.install_env()"
        _comet_setup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)


def pytest_unconfigure(config):
    if _comet_setup is not None:  # not left running after the tests (the comet tests' fixture reports its failure)
        _comet_setup.wait()


@pytest.fixture(scope="session")
def speak():
    return espeak


@pytest.fixture(scope="session")
def embedded():
    """Paths of the converted embedded models (runs `llm-srt setup` once; a no-op when already done)."""
    from llm_srt.embedded import ensure_embedded

    return ensure_embedded()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
