"""Fixtures for the server tests: a tiny random model folder, its translator, and a 1 s clip."""

import logging

import pytest

import tiny
from llm_srt.infer import SpeechTranslator
from serve_helpers import wav_bytes


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny.speech_llm_folder(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="session")
def translator(model_dir):
    return SpeechTranslator.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def clip():
    """(samples, wav bytes) of a 1 s test clip."""
    samples = tiny.tone(1.0, 440, seed=1)
    return samples, wav_bytes(samples)


@pytest.fixture(autouse=True)
def server_log_let_go():
    """`serve`'s main turns the server's INFO lines on (serve_app.show_server_log): in a test process that would
    outlive the test and add lines to later tests' stderr; each test ends with the logger as it found it."""
    logger = logging.getLogger("llm_srt")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
    logger.setLevel(level)
