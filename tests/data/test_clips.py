"""check_clips and its _check, as `prepare` runs them: what a clip is called, kept or skipped for."""

import io
import os

import numpy as np
import pytest
import soundfile as sf

from llm_srt.audio import SAMPLE_RATE, load_audio
from llm_srt.data import clips
from llm_srt.data.clips import _check, check_clips
from llm_srt.errors import AudioError


def _tone(seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _encoded(seconds: float, fmt: str, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _tone(seconds), SAMPLE_RATE, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_an_rf64_cut_short_is_a_bad_clip_and_a_whole_one_is_kept_from_its_header(tmp_path, monkeypatch):
    """RF64 gives its data's size in its ds64 chunk: a clip cut to a third was kept as a whole 1 s one, in every
    split (its header read, or decoded whole), to be trained or scored against the transcript of 3 s. Its header
    tells, as a WAV's does: test's and dev's PCM RF64 clips are not decoded whole to find out (SIZED_FORMATS)."""
    data = _encoded(3.0, "RF64")
    (tmp_path / "whole.wav").write_bytes(data)
    (tmp_path / "cut.wav").write_bytes(data[:data.index(b"data") + 8 + 2 * SAMPLE_RATE])
    cut = "is cut short: only the first 1.0 s of 3.0 s decode (it ends before the length its header gives)"
    for decode in (False, True):  # train's clips have their header read; test's and dev's are decoded too
        assert _check(tmp_path / "whole.wav", None, False, decode) == (tmp_path / "whole.wav", 3.0, None)
        assert _check(tmp_path / "cut.wav", 3.0, True, decode) == (tmp_path / "cut.wav", 0.0, cut)
    monkeypatch.setattr(clips, "load_audio", lambda *a, **k: pytest.fail("a PCM RF64 was decoded whole"))
    assert _check(tmp_path / "whole.wav", None, False, True) == (tmp_path / "whole.wav", 3.0, None)


def test_a_tagged_flac_is_kept_whole_where_test_and_dev_decode_it(tmp_path):
    """An ID3v1 tag after a whole FLAC's last frame: load_audio called it "damaged or cut short", so test and dev
    (which decode their clips whole) dropped it; every frame decodes, and it is kept with its length."""
    path = tmp_path / "tagged.flac"
    path.write_bytes(_encoded(2.0, "FLAC") + b"TAG" + b"x" * 125)
    assert check_clips({path: "test.tsv:2"}, workers=1, decode=[path]) == ({path: 2.0}, [])
    assert len(load_audio(path)) == 2 * SAMPLE_RATE


def test_a_folder_or_fifo_named_as_a_clip_is_called_what_it_is(tmp_path):
    """A folder named x.wav was "cannot be decoded (Format not recognised)" (and, its length listed, kept), and a
    FIFO "is empty (0 bytes)", where load_audio names them; in the same words now, and a FIFO is never opened."""
    (tmp_path / "folder.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    clips = {tmp_path / "folder.wav": "train.tsv:2", tmp_path / "pipe.wav": "train.tsv:3"}
    for known in ({}, dict.fromkeys(clips, 2.0)):
        durations, bad = check_clips(clips, known, workers=1)
        assert durations == {} and [(b.where, b.reason) for b in bad] == [
            ("train.tsv:2", f"clip {tmp_path / 'folder.wav'} is a directory, not a file"),
            ("train.tsv:3", f"clip {tmp_path / 'pipe.wav'} is a FIFO (named pipe), not a regular file")]
    for clip, words in (("folder.wav", "is a directory, not a file"),
                        ("pipe.wav", "is a FIFO (named pipe), not a regular file")):
        with pytest.raises(AudioError) as e:
            load_audio(tmp_path / clip)
        assert str(e.value).startswith(f"{tmp_path / clip}: {words}")  # load_audio's words, which prepare now uses
