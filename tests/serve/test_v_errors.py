"""A request whose model call failed outside any row is a 500 whose message is one line, as a row's error is."""

import pytest
from serve_helpers import DECODING, bursts, local_client, wav_bytes

from llm_srt.errors import LLMSRTError
from llm_srt.serve import BatchOptions, ServeOptions, create_app


class Raises:
    """A translator whose translate() raises `error` (the batch failed outside any row)."""

    name, system = "stub", None

    def __init__(self, error: Exception):
        self.error = error

    def translate(self, *args, **kw):
        raise self.error


@pytest.mark.parametrize("error, message", [
    (RuntimeError("CUDA error: an illegal memory access\nCUDA kernel errors might be reported later"),
     "the model failed: RuntimeError: CUDA error: an illegal memory access"),
    (LLMSRTError("shard 2: shape mismatch:\n  conv1 is (2, 3)\ngive its folder"),
     "the model failed: LLMSRTError: shard 2: shape mismatch: conv1 is (2, 3) give its folder"),
])
def test_a_failed_model_call_is_a_500_of_one_line(error, message):
    """The 500 gave the exception's whole text: one of several lines (a CUDA error's, a wrapped shape mismatch's)
    reached the client as a message of several lines."""
    options = ServeOptions(batch=BatchOptions(max_batch=1, max_wait_ms=0, decoding=DECODING))
    with local_client(create_app(Raises(error), options)) as c:
        r = c.post("/v1/audio/translations", files={"file": ("clip.wav", wav_bytes(bursts(1.0)), "audio/wav")},
                   data={"source_language": "eng", "target_language": "deu"})
    assert r.status_code == 500 and r.json()["error"]["message"] == message, r.text
