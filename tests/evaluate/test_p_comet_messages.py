"""COMET's errors name where what failed came from: the COMET Python's source, the option that names the model."""

import json
import re

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import comet
from llm_srt.evaluate.comet import CometOptions, segment_scores

SAMPLES = [{"src": "a cat", "mt": "eine Katze", "ref": "eine Katze"}]


def _unrunnable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a program\n")
    path.chmod(0o644)  # a file, so it is taken; without an x bit, it cannot start (root included)
    return path


def test_a_comet_python_that_cannot_start_is_named_by_where_it_came_from(tmp_path, monkeypatch):
    """A COMET Python from $LLM_SRT_COMET_PYTHON, or the setup's environment, that could not be started was
    "--comet-python PATH: cannot run it", an option the user had not given; the error names the variable, or the
    setup's environment with the command that makes it again."""
    monkeypatch.delenv(comet.PYTHON_ENV, raising=False)
    python = _unrunnable(tmp_path / "given" / "python")
    with pytest.raises(LLMSRTError, match="^" + re.escape(f"--comet-python {python}: cannot run it")):
        segment_scores(SAMPLES, CometOptions(python=str(python)))
    monkeypatch.setenv(comet.PYTHON_ENV, str(python))
    with pytest.raises(LLMSRTError, match="^" + re.escape(f"${comet.PYTHON_ENV} {python}: cannot run it")):
        segment_scores(SAMPLES, CometOptions())
    monkeypatch.delenv(comet.PYTHON_ENV)
    env = tmp_path / "comet-env"
    monkeypatch.setattr(comet, "env_dir", lambda: env)
    setup_python = _unrunnable(comet._python(env))
    (env / comet.STAMP).write_text(json.dumps(comet._expected_stamp()))
    with pytest.raises(LLMSRTError) as caught:
        segment_scores(SAMPLES, CometOptions())
    said = str(caught.value)
    assert said.startswith(f"the COMET environment's Python {setup_python}: cannot run it"), said
    assert "llm-srt setup --comet --force" in said

