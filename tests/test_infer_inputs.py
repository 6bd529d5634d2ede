"""What `SpeechTranslator.translate` takes as an input (arrays at their own rate) and how it checks its call-wide
options before any work, on a stub system."""

import numpy as np
import pytest
import soxr

from llm_srt.audio import load_audio
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator
from test_infer import SR, Stub, recording


def test_an_array_at_another_rate_is_resampled_from_the_rate_given():
    """Before, a 44.1 kHz stereo array (sf.read's) was taken as 16 kHz: 3.26 s of audio came out as 8.98 s."""
    speech = recording(3.0, [(0.5, 2.5)])
    at_44k = soxr.resample(speech, SR, 44100)
    stereo = np.stack([at_44k, at_44k], axis=1)
    [r] = SpeechTranslator(Stub()).translate([stereo], "eng", "deu", sample_rate=44100)
    assert r.error is None and r.duration == pytest.approx(3.0, abs=1e-3)
    samples = load_audio(stereo, sample_rate=44100)
    assert samples.dtype == np.float32 and abs(samples.size - speech.size) <= 1
    [as_16k] = SpeechTranslator(Stub()).translate([speech], "eng", "deu")  # the default rate: as before
    assert as_16k.duration == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize("rate", [0, -16000, 44100.5, "44100", True])
def test_a_bad_sample_rate_is_refused_once_before_any_work(rate):
    stub = Stub()
    with pytest.raises(LLMSRTError, match=r"^sample_rate=.*whole number from 1000 to 768000"):
        SpeechTranslator(stub).translate([recording(1.0, [(0.2, 0.8)])], "eng", "deu", sample_rate=rate)
    assert stub.batches == []
