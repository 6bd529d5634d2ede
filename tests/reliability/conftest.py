"""The reliability suite: bad inputs, faults and fuzzing, counted.

Every test here carries `@pytest.mark.reliability(KIND)`; the parametrized tables in the test modules are the
registry of cases. At the end of a run one line sums them up:

    .venv/bin/pytest tests/reliability -q
    ...
    reliability: bad inputs tried 233 / handled 233; batch checks 6 / passed 6; fault tests 6 / passed 6; fuzz
    properties 9 / passed 9

A bad input counts as handled when its test passes (it just works, or it gets a one-line error naming the input and
what to do, and the other inputs of the batch still get their results). An xfail is a known gap waiting for a fix
outside this folder (its reason says which) and counts as tried, not handled.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
import tiny  # noqa: E402

from llm_srt.audio import write_wav  # noqa: E402

KINDS = {"bad-input": "bad inputs", "batch": "batch checks", "fault": "fault tests", "fuzz": "fuzz properties"}
TINY_ADAPTER = {"num_queries": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}

_kind_of: dict[str, str] = {}  # test node id -> kind
_outcome: dict[str, str] = {}  # test node id -> passed | failed | skipped | xfailed | xpassed


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability(kind): counted in the reliability summary "
                                       "(bad-input | batch | fault | fuzz)")


def pytest_collection_modifyitems(items):
    for item in items:
        marker = item.get_closest_marker("reliability")
        if marker is not None:
            assert marker.args and marker.args[0] in KINDS, f"{item.nodeid}: reliability kind must be one of {KINDS}"
            _kind_of[item.nodeid] = marker.args[0]


def pytest_runtest_logreport(report):
    if report.nodeid not in _kind_of:
        return
    if hasattr(report, "wasxfail"):
        _outcome[report.nodeid] = "xpassed" if report.passed else "xfailed"
    elif report.failed:
        _outcome[report.nodeid] = "failed"
    elif report.skipped:
        _outcome[report.nodeid] = "skipped"
    elif report.when == "call" and _outcome.get(report.nodeid) is None:
        _outcome[report.nodeid] = "passed"


def summary() -> str:
    """'reliability: bad inputs tried N / handled N; fault tests M / passed M; ...' for the tests that ran."""
    parts = []
    for kind, label in KINDS.items():
        ran = [o for node, o in _outcome.items() if _kind_of[node] == kind and o != "skipped"]
        if not ran:
            continue
        ok = sum(o == "passed" for o in ran)
        verb = ("tried", "handled") if kind == "bad-input" else ("", "passed")
        text = f"{label} {verb[0] + ' ' if verb[0] else ''}{len(ran)} / {verb[1]} {ok}"
        gaps = sum(o == "xfailed" for o in ran)
        if gaps:
            text += f" ({gaps} known gap{'s' * (gaps > 1)}, xfail)"
        parts.append(text)
    skipped = sum(o == "skipped" for o in _outcome.values())
    return "reliability: " + "; ".join(parts) + (f"; {skipped} skipped" if skipped else "")


def pytest_terminal_summary(terminalreporter):
    if _outcome:
        terminalreporter.write_line(summary())


# ---- shared fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _quiet_hf():
    """No Hugging Face progress bars on stderr, so the tests can hold stderr to our one-line errors."""
    from transformers.utils import logging

    logging.disable_progress_bar()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random SpeechLLM folder (Whisper d32 + Qwen2 d48 + a 1-layer Q-Former)."""
    root = tmp_path_factory.mktemp("reliability-model")
    torch.manual_seed(0)
    return tiny.speech_llm(root, adapter_kwargs=TINY_ADAPTER, init_std=0.3).save_pretrained(root / "model")


@pytest.fixture(scope="session")
def good_clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("reliability-clip") / "good.wav"
    write_wav(path, tiny.tone(1.2, 440))
    return str(path)

