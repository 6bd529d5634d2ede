"""Damaged clips as `prepare` measures them and as training loads them (load_audio): a clip one keeps, the other
decodes; a clip one refuses, the other would too."""

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from llm_srt.audio import SAMPLE_RATE, load_audio
from llm_srt.data.clips import _check
from llm_srt.errors import AudioError

pytestmark = pytest.mark.reliability("bad-input")


def _stereo(seconds: float, sr: int = 48_000) -> np.ndarray:
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)
    return np.stack([x, x], axis=1)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAVEX", "PCM_24")])
def test_an_unsized_clip_is_measured_as_training_decodes_it(tmp_path, fmt, subtype):
    """WAVEX is what 24-bit and multichannel recorders write; killed before writing its sizes, it decoded with
    load_audio, but prepare checked for "WAV" only and skipped it as "holds no audio (0 frames)"."""
    path = tmp_path / f"killed-{fmt}.wav"
    sf.write(path, _stereo(3.0), 48_000, format=fmt, subtype=subtype)
    data = bytearray(path.read_bytes())
    for field in (4, data.index(b"data") + 4):  # the RIFF and data sizes, never written
        struct.pack_into("<I", data, field, 0)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 0
    assert len(load_audio(path)) == 3 * SAMPLE_RATE
    assert _check(path, None, False) == (path, 3.0, None)


def test_a_flac_cut_short_is_refused_where_a_reference_goes_with_it_and_kept_when_translated(tmp_path):
    """prepare's train split reads the header only and keeps a FLAC missing its end (its length: the header's);
    test and dev decode it whole and find it cut short; training and evaluation (load_audio's default) refuse it
    naming the seconds that decode, as its transcript is the whole clip's; translating it (salvage) keeps every frame
    that decodes."""
    buf = io.BytesIO()
    sf.write(buf, _stereo(3.0), 48_000, format="FLAC", subtype="PCM_16")
    path = tmp_path / "cut.flac"
    path.write_bytes(buf.getvalue()[:-500])
    clip, seconds, reason = _check(Path(path), None, False)
    assert reason is None and seconds == 3.0
    for known in (None, 3.0):  # test and dev: decoded whole, a listed length or not
        _, kept, why = _check(Path(path), known, False, decode=True)
        assert kept == 0.0 and re.fullmatch(r"is cut short: only the first 2\.\d s of 3\.0 s decode .*", why)
    with pytest.raises(AudioError, match=r"cut.flac: only the first 2\.\d s of 3\.0 s decode .*damaged or cut short"):
        load_audio(path)
    assert 2.7 < len(load_audio(path, salvage=True)) / SAMPLE_RATE <= seconds


def test_a_clip_of_0_frames_that_nothing_decodes_is_still_counted_bad(tmp_path):
    """Any clip of 0 frames now gets load_audio's try (not only a "WAV"): one holding nothing stays bad."""
    path = tmp_path / "header-only.wav"
    sf.write(path, np.zeros((0, 1)), 16_000, format="WAV")
    assert _check(path, None, False) == (path, 0.0, "holds no audio (0 frames)")
