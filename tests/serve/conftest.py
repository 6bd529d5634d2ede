"""Fixtures for the server tests: a tiny random model folder, its translator, and a 1 s clip."""

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
