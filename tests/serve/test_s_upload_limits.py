"""Each of serve's two limits on an upload's audio names its own limit in the 413: the duration limit
--max-audio-seconds, and the limit on decoded audio (--max-audio-seconds at 48 kHz stereo) that a file at a higher
rate or with more channels reaches first. A 601 s, 8 kHz mono WAV was told "that long at 48 kHz, 2 channels"."""

import numpy as np
import pytest
from serve_helpers import flac_bomb, wav_bytes

from llm_srt.serve import uploads


def refused(data: bytes, name: str, max_seconds: float) -> str:
    with pytest.raises(uploads.UploadError) as e:
        uploads.decode_audio(data, name, max_seconds=max_seconds)
    assert e.value.status == 413
    return e.value.message


def test_a_header_over_the_duration_limit_names_max_audio_seconds_alone():
    message = refused(wav_bytes(np.zeros(601 * 8000, np.float32), sr=8000), "long.wav", 600)
    assert message.startswith("long.wav: the header claims 601 s of audio, longer than the 600 s limit; split the file")
    assert message.endswith("(llm-srt serve --max-audio-seconds 600)")
    assert "kHz" not in message and "channels" not in message


def test_audio_running_past_the_duration_limit_names_max_audio_seconds_alone():
    """A FLAC whose header gives no length: stopped while decoding, at the duration limit."""
    message = refused(flac_bomb(601, rate=8000, say_length=False), "stream.flac", 600)
    assert message == ("stream.flac: the audio runs past the 600 s limit; split the file first "
                       "(llm-srt serve --max-audio-seconds 600)")


@pytest.mark.parametrize("name", ["hi.flac", "decodes to more.flac"])
def test_the_limit_on_decoded_audio_names_its_rate_and_channels(name):
    """15 s of 192 kHz mono is within a 20 s cap, but decodes to more than 20 s of 48 kHz stereo. A file name that
    reads like load_audio's words changes neither answer."""
    message = refused(flac_bomb(15, rate=192_000), name, 20)
    assert message.startswith(f"{name}: decodes to ")
    assert "limit on decoded audio; resample it to 16 kHz mono" in message
    assert message.endswith("(llm-srt serve --max-audio-seconds 20: the limit on decoded audio is 20 s at 48 kHz, "
                            "2 channels)")
    if name != "hi.flac":
        assert refused(flac_bomb(21, rate=8000), name, 20).endswith("(llm-srt serve --max-audio-seconds 20)")


class _Reworded(uploads.AudioOverLimit):
    """load_audio's AudioOverLimit, with its messages reworded ("decodes to" is "would decode to")."""

    def __init__(self, message: str, *args, **kwargs):
        super().__init__(message.replace(": decodes to ", ": would decode to "), *args, **kwargs)


def test_each_limit_is_named_by_the_error_s_field_not_its_words(monkeypatch):
    """serve told the limit on decoded audio by load_audio's words ("decodes to"): reworded, a 192 kHz file's 413
    named --max-audio-seconds alone, as if 15 s were over a 20 s limit. It reads AudioOverLimit.limit now."""
    from llm_srt import audio

    monkeypatch.setattr(audio, "AudioOverLimit", _Reworded)
    message = refused(flac_bomb(15, rate=192_000), "hi.flac", 20)
    assert message.startswith("hi.flac: would decode to ")
    assert message.endswith("(llm-srt serve --max-audio-seconds 20: the limit on decoded audio is 20 s at 48 kHz, "
                            "2 channels)")
    assert refused(flac_bomb(21, rate=8000), "long.flac", 20).endswith("(llm-srt serve --max-audio-seconds 20)")
