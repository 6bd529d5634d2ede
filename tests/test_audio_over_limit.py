"""AudioOverLimit says which of load_audio's limits a file is over (`limit`), at each place it is raised, so that a
caller naming its own option for each (serve's 413) need not read the message's words."""

import io
import pickle

import numpy as np
import pytest
import soundfile as sf

from llm_srt.audio import SAMPLE_RATE, load_audio
from llm_srt.errors import AudioOverLimit


def _flac(seconds: float, rate: int, length_in_header: bool = True) -> bytes:
    """A mono FLAC of silence; `length_in_header=False`: STREAMINFO's total-samples field is 0 (a FLAC written to a
    pipe), so only counting while decoding finds its length."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), np.float32), rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if not length_in_header:
        data[8 + 13] &= 0xF0  # "fLaC", the block header (4 bytes); the count is byte 13's low 4 bits and bytes 14-17
        data[8 + 14:8 + 18] = bytes(4)
    return bytes(data)


def _over(source, **limits) -> AudioOverLimit:
    with pytest.raises(AudioOverLimit) as e:
        load_audio(source, **limits)
    return e.value


def test_an_array_over_max_seconds_says_so():
    assert _over(np.zeros(3 * SAMPLE_RATE, np.float32), max_seconds=2).limit == "max_seconds"


def test_a_header_over_max_seconds_says_so():
    e = _over(_flac(3, 8000), max_seconds=2)
    assert "the header claims" in str(e) and e.limit == "max_seconds"


def test_audio_running_past_max_seconds_says_so():
    e = _over(_flac(3, 8000, length_in_header=False), max_seconds=2)
    assert "runs past" in str(e) and e.limit == "max_seconds"


@pytest.mark.parametrize("length_in_header", [True, False])
def test_audio_decoding_past_max_bytes_says_so(length_in_header):
    """Over max_bytes by the header's claim, or as it decodes (a header giving no length), within max_seconds."""
    e = _over(_flac(3, 96_000, length_in_header), max_seconds=10, max_bytes=256 << 10)
    assert "decodes to" in str(e) and e.limit == "max_bytes"


def test_the_limit_travels_with_the_error():
    """Pickled to another process (LLMSRTError.__reduce__), or made from its message alone (another rank's)."""
    e = pickle.loads(pickle.dumps(AudioOverLimit("x.flac: decodes to more", limit="max_bytes")))
    assert str(e) == "x.flac: decodes to more" and e.limit == "max_bytes"
    assert AudioOverLimit("x.flac: too long").limit == "max_seconds"
