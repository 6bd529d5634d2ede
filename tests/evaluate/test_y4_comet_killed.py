"""A COMET Python killed by a signal (the out-of-memory killer's SIGKILL) is said to be, not shown as its last log
line or as "exit status -9"."""

import re

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import comet
from llm_srt.evaluate.comet import CometOptions, segment_scores

SAMPLES = [{"src": "a cat", "mt": "eine Katze", "ref": "eine Katze"}]


def _python_killed_by(tmp_path, signal_name):
    """A stand-in COMET Python that logs a line and is then killed by `signal_name`, as the kernel kills one."""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho 'Encoder model frozen.' >&2\nkill -{signal_name} $$\n")
    python.chmod(0o755)
    return python


@pytest.mark.parametrize("option", ["--comet", "--comet-model"])
def test_a_comet_python_killed_by_the_out_of_memory_killer_says_so(tmp_path, monkeypatch, option):
    monkeypatch.delenv(comet.PYTHON_ENV, raising=False)
    python = _python_killed_by(tmp_path, "KILL")
    with pytest.raises(LLMSRTError) as caught:
        segment_scores(SAMPLES, CometOptions(python=str(python)), option=option)
    said = str(caught.value)
    assert said.startswith(f"{option} {comet.DEFAULT_MODEL}: the COMET Python was killed by SIGKILL, most often "
                           "the out-of-memory killer"), said
    assert "Encoder model frozen" not in said and "exit status" not in said and "\n" not in said
    assert said.endswith(f"(ran {python})")
    assert ("--comet-batch-size" in said) == (option == "--comet")  # score has no such option


def test_a_comet_python_stopped_by_another_signal_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv(comet.PYTHON_ENV, raising=False)
    python = _python_killed_by(tmp_path, "TERM")
    with pytest.raises(LLMSRTError, match=re.escape("the COMET Python was stopped by SIGTERM (ran ")):
        segment_scores(SAMPLES, CometOptions(python=str(python)))
    assert comet.killed_by(200) == "the COMET Python was stopped by signal 200"
