"""COMET's errors name where what failed came from: the COMET Python's source, the option that names the model."""

import json
import logging
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


def test_a_failed_download_names_the_option_that_takes_the_models_folder(tmp_path, monkeypatch):
    """A COMET model name that could not be downloaded said "download the model elsewhere ... and pass its folder",
    naming no option: it is evaluate's --comet, score's --comet-model, as the request the bridge gets says."""
    import subprocess
    import sys
    import types

    from llm_srt.evaluate import comet_bridge

    def unreachable(name):
        raise KeyError(f"Model '{name}' not supported by COMET.")

    monkeypatch.setitem(sys.modules, "comet", types.SimpleNamespace(download_model=unreachable))
    requests, silenced = [], logging.root.manager.disable

    def bridge(command, **kwargs):  # the COMET Python: the bridge's own main, here, on the request written
        requests.append(json.loads(open(command[-2], encoding="utf-8").read()))
        try:
            comet_bridge.main(command[-2], command[-1])
        except ValueError as e:
            return subprocess.CompletedProcess(command, 2, "", f"COMET: ValueError: {e}\n")
        finally:  # the bridge silences logging below WARNING for its own process: not for the later tests of this one
            logging.disable(silenced)
        raise AssertionError("the download did not fail")

    monkeypatch.setattr(comet.subprocess, "run", bridge)
    monkeypatch.setenv(comet.PYTHON_ENV, str(_unrunnable(tmp_path / "python")))
    for option in ("--comet", "--comet-model"):
        with pytest.raises(LLMSRTError) as caught:
            segment_scores(SAMPLES, CometOptions(model="Unbabel/none"), option=option)
        said = str(caught.value)
        assert said.startswith(f"{option} Unbabel/none: COMET: ValueError: Unbabel/none: cannot download it"), said
        assert re.search(f"and give its folder to {option} \\(ran ", said), said
    assert [r["option"] for r in requests] == ["--comet", "--comet-model"]
    assert "give its folder to --comet" in str(pytest.raises(ValueError, comet_bridge.checkpoint, "Unbabel/x").value)
