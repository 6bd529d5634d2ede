import contextlib
import io
import os
import re
import socket
import warnings

import numpy as np
import pytest
import soundfile as sf

from llm_srt.audio import SAMPLE_RATE, load_audio
from llm_srt.audio_headers import W64_GUID
from llm_srt.errors import AudioError


@contextlib.contextmanager
def _warned():
    """The warnings given inside the block, each one (not once per line, as Python's default filter shows them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _messages(caught) -> list[str]:
    """The messages of load_audio's warnings among those `_warned` caught (a file kept in part), in order."""
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning) and w.filename.endswith("audio.py")]


def _tone(sr, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_any_rate_and_channels(tmp_path, sr, channels):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(sr, channels=channels), sr)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - SAMPLE_RATE) <= 2
    # the 440 Hz tone survives resampling: its spectral peak stays at 440 Hz
    peak = np.argmax(np.abs(np.fft.rfft(out))) * SAMPLE_RATE / out.size
    assert abs(peak - 440) < 3


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_24"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"),
                                         ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_formats(tmp_path, fmt, subtype):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, _tone(16000), 16000, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.size > 15000 and np.abs(out).max() > 0.1


def test_errors_are_one_line_and_name_the_file(tmp_path):
    cases = {}
    cases["missing.wav"] = None
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "text.wav").write_text("hello, I am not audio\n")
    (tmp_path / "adir").mkdir()
    for name in ["missing.wav", "empty.wav", "junk.wav", "text.wav", "adir"]:
        with pytest.raises(AudioError) as e:
            load_audio(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg


def test_nan_and_empty_arrays_rejected():
    with pytest.raises(AudioError, match="NaN"):
        load_audio(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros(0, dtype=np.float32))


def test_one_sample_is_padded_not_rejected():
    assert load_audio(np.zeros(1, dtype=np.float32)).size >= 160


def _fifo(folder):
    os.mkfifo(folder / "pipe.wav")  # opening it for reading would wait for a writer forever
    return folder / "pipe.wav"


def _socket(folder):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(folder / "sock.wav"))
    s.close()
    return folder / "sock.wav"


def _loop(folder):
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    return folder / "loop.wav"


def _dangling(folder):
    (folder / "gone.wav").symlink_to(folder / "deleted.wav")
    return folder / "gone.wav"


@pytest.mark.parametrize("make,words", [
    (_fifo, "is a FIFO (named pipe), not a regular file"),
    (_socket, "is a socket, not a regular file"),
    (lambda _: "/dev/zero", "is a character device, not a regular file"),
    (_loop, "a symlink loop (the link leads back to itself)"),
    (_dangling, "no such file (a symlink to a missing file)"),
], ids=["fifo", "socket", "char-device", "symlink-loop", "dangling-symlink"])
def test_special_files_are_named_as_such_and_never_block(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == f"{path}: {words}" + ("; save the data to a file first" if "regular" in words else
                                                 "; fix or remove the link" if "loop" in words else "")


def test_float64_beyond_float32_range_is_out_of_range_not_nan():
    with pytest.raises(AudioError, match=r"<audio>: samples as large as 1e\+300 are out of range"):
        load_audio(np.array([0.0, 1e300, 0.1]))
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(np.array([0.0, np.inf]))


def test_duration_reads_the_header_and_names_what_it_cannot_read(tmp_path):
    from llm_srt.audio import duration

    sf.write(tmp_path / "a.flac", _tone(44100, seconds=2.5), 44100)
    assert duration(tmp_path / "a.flac") == pytest.approx(2.5)
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "junk.wav").write_bytes(b"junk" * 100)
    for name, words in (("pipe.wav", "is a FIFO (named pipe), not a regular file"),
                        ("junk.wav", "cannot read audio header (Format not recognised)"), ("gone.wav", "no such file")):
        with pytest.raises(AudioError) as e:
            duration(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {words}"), str(e.value)


def test_int16_scaled_float_audio_is_an_error_not_a_square_wave(tmp_path):
    """Float samples at int16 scale (int16.astype(float32), or a FLOAT wav written so) were clipped to +-1 without
    a word: 97% of a 0.3-amplitude sine at +-1. A hot float mix (peak 4) is still clipped as before."""
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    scaled = tone * 32767
    with pytest.raises(AudioError, match=r"<audio>: samples reach 9830, far outside \[-1, 1\]: integer-scaled "
                                         r"audio stored as float\? divide by 32768 \(int16\)"):
        load_audio(scaled)
    path = tmp_path / "scaled.wav"
    sf.write(path, scaled, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"scaled.wav: samples reach 9830"):
        load_audio(path)
    hot = load_audio(tone * 13)  # peak 3.9: a hot mix, clipped
    assert np.abs(hot).max() == 1.0


def test_a_channels_first_array_is_refused_and_told_to_be_transposed():
    """A (channels, samples) array, as torchaudio.load and librosa.load(mono=False) give, was read as (samples,
    channels): 3 s of stereo speech became 2 samples of 48000 channels, padded to 25 ms, and was "no speech"."""
    stereo = np.stack([_tone(16000, seconds=3.0)] * 2)  # (2, 48000)
    with pytest.raises(AudioError) as e:
        load_audio(stereo)
    assert str(e.value) == ("<audio>: an array of shape (2, 48000) is read as (samples, channels), which gives 48000 "
                            "channels of 2 samples; if it is (channels, samples) (torchaudio, librosa), pass array.T")
    for first in (stereo[:1], np.zeros((6, 40), np.float32)):  # mono; 5.1 under 65 samples: more channels than rows
        with pytest.raises(AudioError, match="is read as \\(samples, channels\\)"):
            load_audio(first)
    assert load_audio(stereo.T).size == 48000 and load_audio(np.zeros((8000, 64), np.float32)).size == 8000


def test_a_quiet_int16_recording_stored_as_float_is_refused_not_clipped(tmp_path):
    """MAX_PEAK was 256: a -44 dBFS int16 recording exported as float without scaling (peak 200) was clipped to a
    square wave (99.5% of its samples at +-1) without a word. A mix up to +12 dBFS is still clipped."""
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "quiet.wav", (200 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "quiet.wav")
    assert str(e.value) == (f"{tmp_path / 'quiet.wav'}: samples reach 200, far outside [-1, 1]: integer-scaled "
                            "audio stored as float? divide by 32768 (int16) or 2147483648 (int32), or re-export it; "
                            "a float mix above 0 dBFS: normalize it to peak at 1")
    with pytest.raises(AudioError, match="samples reach 4.5, far outside"):
        load_audio(np.array([0.0, 4.5, -1.0], np.float32))
    assert np.abs(load_audio(np.array([0.0, 4.0, -2.0], np.float32))).max() == 1.0


@pytest.mark.parametrize("sr,frames", [(44100, 1), (48000, 1), (96000, 2), (768000, 10)])
def test_a_file_shorter_than_one_sample_at_16_khz_is_padded_not_called_empty(tmp_path, sr, frames):
    """One frame at 44.1 kHz resamples to 0 samples, and was refused as "empty (0 samples); check the file was
    written completely"; one frame at 16 kHz was padded to 25 ms."""
    from llm_srt.audio import MIN_SAMPLES

    sf.write(tmp_path / "short.wav", np.full(frames, 0.1), sr)
    out = load_audio(tmp_path / "short.wav")
    assert out.size == MIN_SAMPLES and out.dtype == np.float32


def _flac(seconds, sr=48000, channels=2):
    buf = io.BytesIO()
    sf.write(buf, _tone(sr, seconds, channels), sr, format="FLAC", subtype="PCM_24")
    return buf.getvalue()


def _noise_flac(seconds, sr=SAMPLE_RATE, length_in_header=True):
    """A mono 16-bit FLAC of a tone in noise (frames of the usual 4096 samples), and its samples as decoded whole.
    `length_in_header=False`: STREAMINFO's total-samples field is 0, as a FLAC written to a pipe has it."""
    rng = np.random.default_rng(0)
    x = (0.3 * _tone(sr, seconds) + 0.01 * rng.standard_normal(int(sr * seconds))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if not length_in_header:
        data[8 + 13] &= 0xF0  # "fLaC", the block header (4 bytes); the count is byte 13's low 4 bits and bytes 14-17
        data[8 + 14:8 + 18] = bytes(4)
    return bytes(data), load_audio(buf.getvalue(), max_seconds=None)


@pytest.fixture
def small_blocks(monkeypatch):
    """Decode 16384 samples at a time, so that a clip of a few seconds spans several blocks."""
    from llm_srt import audio

    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 1 << 14)


def test_a_flac_cut_short_is_refused_unless_salvaged_then_kept_to_its_damage_with_one_warning(tmp_path, small_blocks):
    """Decoded in part, a clip would be trained or scored against the transcript of all of it: refused by default.
    Salvaged (translating it), a FLAC missing its end keeps every frame before the damage (it lost up to 0.17 s)."""
    path = tmp_path / "cut.flac"
    data, whole = _noise_flac(3.0)
    path.write_bytes(data[:int(len(data) * 0.99)])
    with pytest.raises(AudioError) as e:
        load_audio(path)
    kept = len(whole) // 4096 * 4096  # the FLAC frames before the cut one: the last, of 2944 samples
    assert str(e.value) == (f"{path}: only the first {kept / SAMPLE_RATE:.1f} s of 3.0 s decode (Error : flac decoder "
                            "lost sync): the file is damaged or cut short; re-export it, or copy it again")
    notes = []
    with _warned() as caught:
        out = load_audio(path, salvage=True, on_salvage=notes.append)
    assert out.size == kept and np.array_equal(out, whole[:kept])
    assert _messages(caught) == notes == [  # the warning reaches a server's client too
        f"{path}: only the first {kept / SAMPLE_RATE:.1f} s of 3.0 s decode (Error : flac decoder lost sync): the "
        "file is damaged or cut short; those are used (re-export it, or copy it again, for the rest)"]


def _wav(x, subtype="PCM_16", endian="FILE"):
    """A 16 kHz WAV of `x`, and where its data chunk's size field is."""
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="WAV", subtype=subtype, endian=endian)
    data = buf.getvalue()
    return data, data.index(b"data") + 4


@pytest.mark.parametrize("subtype,endian,width", [("PCM_16", "FILE", 2), ("FLOAT", "FILE", 4), ("PCM_16", "BIG", 2)])
def test_a_wav_cut_short_is_refused_unless_salvaged_then_kept_to_its_end_with_one_warning(tmp_path, subtype,
                                                                                           endian, width):
    """libsndfile trims a WAV's length to the bytes it holds, without an error: a 2.0 s WAV cut to half loaded 1.0 s
    as if whole (scored or trained against the transcript of 2.0 s). Its data chunk's size tells; treated as FLAC's."""
    data, size_at = _wav(_tone(SAMPLE_RATE, 3.0), subtype, endian)
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:len(data) // 2 + 1])  # mid-sample: the odd byte is dropped
    kept = (len(data) // 2 + 1 - size_at - 4) // width
    whole = load_audio(data)
    expected = f"only the first {kept / SAMPLE_RATE:.1f} s of 3.0 s decode (it ends before the length its header gives)"
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == _refused(path, expected)
    with pytest.raises(AudioError, match="^<audio>: only the first 1.5 s of 3.0 s decode"):  # bytes, as uploaded
        load_audio(data[:len(data) // 2])
    with _warned() as caught:
        out = load_audio(path, salvage=True)
    assert out.size == kept and np.array_equal(out, whole[:kept])
    assert _messages(caught) == [_salvaged(path, expected)]


def test_a_file_kept_in_part_is_warned_of_at_every_load_under_the_default_filter(tmp_path):
    """A UserWarning, which the CLI prints under the command's name (it was logged, printed bare), given at every
    file: Python's default filter shows a line's warning once per message, and a server gets the same upload cut
    short again."""
    data, _ = _wav(_tone(SAMPLE_RATE, 3.0))
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            load_audio(tmp_path / "cut.wav", salvage=True)
    assert [w.category for w in caught] == [UserWarning] * 2 and len(set(_messages(caught))) == 1
    assert _messages(caught)[0].startswith(f"{tmp_path / 'cut.wav'}: only the first 1.5 s of 3.0 s decode")


def _salvaged(path, expected: str) -> str:
    """The warning of a file cut short whose first part `load_audio(salvage=True)` keeps (`expected`: what decodes)."""
    return (f"{path}: {expected}: the file is damaged or cut short; those are used (re-export it, or copy it again, "
            "for the rest)")


def _refused(path, expected: str) -> str:
    """The error of a file cut short that `load_audio` refuses (`expected`: what decodes)."""
    return f"{path}: {expected}: the file is damaged or cut short; re-export it, or copy it again"


def _with_data_size(data, size_at, size):
    """`data` with its data chunk's size field, and the RIFF one after it, saying `size` (0: as a killed recorder
    leaves them; 0xFFFFFFFF or sox's 0x7FFFF000: as a stream written to a pipe has them)."""
    b = bytearray(data)
    b[size_at:size_at + 4] = size.to_bytes(4, "little")
    b[4:8] = (min(size + size_at - 4, 0xFFFFFFFF) if size else 0).to_bytes(4, "little")
    return bytes(b)


def _with_trailing_chunk(data, size_at):
    """`data` with a LIST chunk after its data chunk (as some editors write their tags)."""
    tail = b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    b = bytearray(data + tail)
    b[4:8] = (len(b) - 8).to_bytes(4, "little")
    return bytes(b)


def test_an_adpcm_wav_cut_inside_its_last_block_is_cut_short():
    """ADPCM's block align is a block of hundreds of samples, not a frame: a file short of its size by less than a
    block misses samples (libsndfile pads the block), so it is refused as cut, not taken as whole."""
    data, size_at = _wav(_tone(SAMPLE_RATE, 1.0), "IMA_ADPCM")
    held = len(data) - size_at - 4
    assert held % int.from_bytes(data[data.index(b"fmt ") + 20:][:2], "little") == 0  # whole blocks
    with pytest.raises(AudioError, match="it ends before the length its header gives"):
        load_audio(_with_data_size(data, size_at, held + 10))  # its last block cut: 10 of its bytes missing
    assert load_audio(data).size == pytest.approx(SAMPLE_RATE, abs=1024)  # whole: loads


@pytest.mark.parametrize("subtype,make", [
    ("PCM_16", lambda data, at: data),
    ("PCM_U8", lambda data, at: data),
    ("PCM_16", _with_trailing_chunk),
    ("PCM_U8", _with_trailing_chunk),
    ("PCM_16", lambda data, at: _with_data_size(data, at, 0)),
    ("PCM_16", lambda data, at: _with_data_size(data, at, 0xFFFFFFFF)),
    ("PCM_16", lambda data, at: _with_data_size(data, at, 0x7FFFF000)),
    ("PCM_16", lambda data, at: _with_data_size(data, at, 16001 * 2 + 1)),  # a writer's size a byte off
], ids=["whole", "odd-data-and-its-pad-byte", "a-chunk-after-data", "a-chunk-after-the-pad-byte", "unsized-0",
        "unsized-ffffffff", "unsized-sox-pipe", "short-by-part-of-a-frame"])
def test_a_whole_or_streamed_wav_still_loads_whole_without_a_warning(tmp_path, subtype, make):
    """Only a data chunk holding less than its size is cut short: not chunks after it, not a pad byte after an odd
    chunk (PCM_U8, 16001 samples), not a size that stands for "unknown" (streamed: no pad byte, as its writer did
    not know the size; one there would be read as a sample)."""
    data, size_at = _wav(_tone(SAMPLE_RATE, 1.1)[:16001], subtype)
    if subtype == "PCM_U8":  # the pad byte, written by libsndfile, that the data chunk's size leaves out
        assert len(data) == size_at + 4 + 16001 + 1
    path = tmp_path / "whole.wav"
    path.write_bytes(make(data, size_at))
    with _warned() as caught:
        out = load_audio(path)
    assert np.array_equal(out, sf.read(io.BytesIO(data), dtype="float32")[0]) and _messages(caught) == []


def test_a_flac_damaged_inside_keeps_all_before_the_damage_not_back_to_its_blocks_start(small_blocks):
    """libsndfile seeks no more after the damage: the block it was in was lost back to its start (a 300 s FLAC
    damaged at 150 s kept 87.4 s, its first block)."""
    data, whole = _noise_flac(6.0)
    damaged = bytearray(data)
    at = len(data) // 2
    damaged[at:at + 64] = bytes(64)
    with _warned() as caught:
        out = load_audio(bytes(damaged), salvage=True)
    assert 2.7 < out.size / SAMPLE_RATE < 3.0 and out.size % 4096 == 0  # the frames before the damaged one, all
    assert len(_messages(caught)) == 1
    assert np.array_equal(out, whole[:out.size])


@pytest.mark.parametrize("bytes_or_path", ["bytes", "path"])
def test_a_flac_whose_header_gives_no_length_decodes_whole_and_is_not_called_damaged(tmp_path, small_blocks,
                                                                                     bytes_or_path):
    """As `ffmpeg -f flac -` or `arecord | flac -` write it. libsndfile's reader fails a read reaching its end (it
    cannot seek such a stream): it was cut to its first block with a warning calling it damaged (100 s -> 87.4 s),
    and before that refused."""
    data, whole = _noise_flac(5.3, length_in_header=False)
    (tmp_path / "piped.flac").write_bytes(data)
    source = data if bytes_or_path == "bytes" else tmp_path / "piped.flac"
    with _warned() as caught:
        out = load_audio(source)
    assert np.array_equal(out, whole) and _messages(caught) == []
    with pytest.raises(AudioError) as e:  # cut short too: damaged, its length not given
        load_audio(data[:len(data) // 2])
    assert str(e.value).startswith("<audio>: only the first 2.") and " s decode (Error : flac decoder lost sync): " \
        "the file is damaged or cut short; re-export it, or copy it again" in str(e.value)


def test_a_flac_cut_before_its_first_frame_is_called_damaged_not_the_wrong_format(tmp_path):
    path = tmp_path / "stub.flac"
    path.write_bytes(_flac(3.0)[:300])  # the header and a piece of the first frame
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == (f"{path}: cannot decode audio (Error : flac decoder lost sync): the file is damaged or "
                            "cut short; re-export it, or copy it again")


def test_an_unsized_wav_over_4_gib_is_named_not_a_traceback(tmp_path):
    """A RIFF size field cannot hold its length (struct.error was a traceback); sparse, the file costs no disk."""
    path = tmp_path / "long.wav"
    sf.write(path, _tone(48000, 0.1, 2), 48000, subtype="PCM_16")
    with open(path, "r+b") as f:
        at = f.read(64).index(b"data")
        for field in (4, at + 4):  # the RIFF and data sizes, never written
            f.seek(field)
            f.write(bytes(4))
        f.truncate(5 << 30)
    with pytest.raises(AudioError) as e:
        load_audio(path, max_bytes=1 << 30)  # the old code read a file under `max_bytes` whole
    assert str(e.value) == (f"{path}: a WAV over 4 GiB whose header gives no sizes (a recorder stopped before writing "
                            "them): a WAV header cannot give its length; convert it with `sox --ignore-length` to "
                            "FLAC or RF64")


def _wandering(seconds=20.0, silent_start=0.0):
    """A 16 kHz tone whose pitch wanders (200-300 Hz), so that every MP3 frame has something to code; its first
    `silent_start` seconds silent."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    x = (0.2 * np.sin(2 * np.pi * (200 + 100 * np.sin(t)) * t)).astype(np.float32)
    x[:int(SAMPLE_RATE * silent_start)] = 0
    return x


def _encoded(x, fmt, subtype, **options):
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format=fmt, subtype=subtype, **options)
    return buf.getvalue()


def _id3(data):
    """`data` after an ID3v2.4 tag of 1 KiB (10-byte header, syncsafe size), as tagged MP3s begin."""
    return b"ID3\x04\x00\x00" + bytes([0, 0, 8, 0]) + bytes(1024) + data


@pytest.mark.parametrize("fmt,subtype,make", [
    ("MP3", "MPEG_LAYER_III", lambda data: data),
    ("MP3", "MPEG_LAYER_III", _id3),
    ("AIFF", "PCM_16", lambda data: data),
    ("AIFF", "FLOAT", lambda data: data),  # AIFC
    ("AU", "PCM_16", lambda data: data),
    ("W64", "PCM_16", lambda data: data),
], ids=["mp3-xing", "mp3-id3-xing", "aiff", "aifc-float", "au", "w64"])
def test_an_mp3_aiff_au_or_w64_cut_in_half_is_refused_unless_salvaged_then_kept_with_one_warning(tmp_path,
                                                                                                  fmt, subtype, make):
    """libsndfile trims an AIFF's, AU's or W64's length to the bytes it holds, and gives an MP3's from its Xing
    header while decoding only what is there, all without an error: each, cut in half, loaded as if whole (a Common
    Voice MP3 of 20 s loaded as 9.8 s, to be trained against the transcript of 20 s). Refused, as a WAV is."""
    data = make(_encoded(_wandering(), fmt, subtype))
    whole_path, path = tmp_path / f"whole.{fmt.lower()}", tmp_path / f"cut.{fmt.lower()}"
    whole_path.write_bytes(data)
    path.write_bytes(data[:len(data) // 2])
    with _warned() as caught:
        whole = load_audio(whole_path)
        assert whole.size == 20 * SAMPLE_RATE and _messages(caught) == []  # uncut: whole, without a word
        out = load_audio(path, salvage=True)
    assert 9 < out.size / SAMPLE_RATE < 10.1 and np.array_equal(out, whole[:out.size])  # the first half, less a tag
    kept = f"{out.size / SAMPLE_RATE:.1f}"
    expected = f"only the first {kept} s of 20.0 s decode (it ends before the length its header gives)"
    assert _messages(caught) == [_salvaged(path, expected)]
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == _refused(path, expected)
    with pytest.raises(AudioError) as e:  # bytes, as uploaded
        load_audio(data[:len(data) // 2])
    assert str(e.value).startswith(f"<audio>: {expected}: ")


def _without_header_frame(data):
    """An MP3 as libsndfile writes it (16 kHz mono: MPEG-2 Layer III) less its first frame, which holds only its
    Xing/Info header: a stream whose length is estimated from its size and first frame's bit rate, as any MP3's
    without that header."""
    assert data[:2] == b"\xff\xf3" and data[2] >> 2 & 3 == 2  # MPEG-2 Layer III without CRC, 16 kHz
    kbps = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[data[2] >> 4]
    size = 72000 * kbps // SAMPLE_RATE + (data[2] >> 1 & 1)  # a Layer III frame's bytes at MPEG-2's 576 samples
    assert (b"Xing" in data[:size] or b"Info" in data[:size]) and data[size:size + 2] == b"\xff\xf3"
    return data[size:]


@pytest.mark.parametrize("options", [{}, {"bitrate_mode": "CONSTANT", "compression_level": 0.5}], ids=["vbr", "cbr"])
def test_an_mp3_without_a_xing_header_is_never_called_cut(tmp_path, options):
    """Without a Xing/Info or VBRI header an MP3's length is an estimate: a VBR stream opening on silence (a low bit
    rate) is estimated at 21 s and decodes 20 s, whole. Never refused for falling short of it; cut in half, such a
    file cannot be told from a shorter whole one, and loads."""
    data = _without_header_frame(_encoded(_wandering(silent_start=2.0), "MP3", "MPEG_LAYER_III", **options))
    path = tmp_path / "plain.mp3"
    for part in (data, data[:len(data) // 2]):
        path.write_bytes(part)
        with _warned() as caught:
            out = load_audio(path)
        assert out.size / SAMPLE_RATE > (19.9 if part is data else 9.9) and _messages(caught) == []
        if part is data and not options:  # the estimate is 0.9 s over: a count compared as if exact would refuse it
            assert sf.info(path).frames - out.size > 2 * 1152


def test_a_vbr_mp3_without_a_xing_header_that_libsndfile_stops_short_is_refused_unless_salvaged():
    """libsndfile decodes an MP3 without a Xing/Info count only as far as the length it estimates from the first
    frame's bit rate: this 20 s VBR stream (noise, 44.1 kHz) stripped of that header decoded 6.5 s, without a word,
    and a clip so read trained against its whole transcript. Its frames' headers say 20 s: refused, or salvaged."""
    rate = 44100
    noise = (0.5 * np.random.default_rng(0).standard_normal(20 * rate)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise, rate, format="MP3", bitrate_mode="VARIABLE")
    data = buf.getvalue()
    assert data[:2] == b"\xff\xfb" and b"Xing" in data[:64]  # MPEG-1 Layer III, its first frame the Xing header
    kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[2] >> 4]
    stripped = data[144000 * kbps // rate + (data[2] >> 1 & 1):]
    assert sf.info(io.BytesIO(stripped)).frames < 10 * rate  # libsndfile's estimate: a third of it
    with pytest.raises(AudioError, match=r"libsndfile decodes only the first [\d.]+ s of the 20\.0 s this MP3's "
                                         r"frames hold .*convert it with another decoder"):
        load_audio(stripped, sr=rate)
    notes = []
    with _warned() as caught:
        kept = load_audio(stripped, sr=rate, salvage=True, on_salvage=notes.append)
    assert kept.size < 10 * rate and len(_messages(caught)) == 1 and "20.0 s this MP3" in _messages(caught)[0]
    assert notes == _messages(caught)
    assert load_audio(data, sr=rate).size > 19.9 * rate  # with its Xing header: whole, as before


def test_a_vbri_header_is_no_counted_length():
    """libsndfile does not read a VBRI header's frame count (its length of such a file is an estimate: 287,977
    frames where VBRI said 883,584), so a decoded count short of it must not be called cut."""
    from llm_srt.audio_headers import _mp3_counted

    frame = b"\xff\xfb\x90\x00" + bytes(32) + b"VBRI" + bytes(10) + (34_000).to_bytes(4, "big") + bytes(10)
    xing = b"\xff\xfb\x90\x00" + bytes(32) + b"Xing" + (1).to_bytes(4, "big") + (34_000).to_bytes(4, "big") + bytes(20)
    assert not _mp3_counted(frame) and _mp3_counted(xing)  # MPEG-1 stereo: Xing 36 bytes in, as VBRI


@pytest.mark.parametrize("xing", [True, False], ids=["xing", "no-xing"])
def test_an_mp3_damaged_inside_keeps_all_before_the_damage_not_back_to_its_reads_start(xing):
    """libsndfile's MP3 reader returns no frame of a read that meets damage, though it decoded those before it: a
    4M-sample read lost up to 43.7 s of a 48 kHz stereo file, and damage in the first read lost the whole file
    ("cannot decode audio", in translate too). Read a few MPEG frames at a time, it loses a fraction of a second."""
    from llm_srt.audio_headers import _mp3_counted, _mp3_walked

    rate = 44100
    noise = (0.3 * np.random.default_rng(0).standard_normal((4 * rate, 2))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise, rate, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5)  # CBR: its estimate holds
    data = buf.getvalue()
    if not xing:  # less its first frame, which holds only its Xing/Info header
        kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[2] >> 4]
        data = data[144000 * kbps // rate + (data[2] >> 1 & 1):]
    assert _mp3_counted(data) == xing
    damaged = bytearray(data)
    at = len(data) // 2
    damaged[at:at + 4096] = bytes(4096)
    before = _mp3_walked(bytes(damaged[:at]))  # the samples of the frames before the damage
    with _warned() as caught:
        out = load_audio(bytes(damaged), sr=rate, salvage=True)
    assert 0.95 * before <= out.size <= 1.05 * before
    assert _messages(caught) == [
        f"<audio>: only the first {out.size / rate:.1f} s of 4.{0 if xing else 1} s decode (Unspecified internal "
        "error): the file is damaged or cut short; those are used (re-export it, or copy it again, for the rest)"]
    assert np.array_equal(out, load_audio(data, sr=rate)[:out.size])


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_cut_short_is_refused_unless_salvaged_then_kept_with_one_warning(tmp_path, subtype):
    """libsndfile takes an Ogg's length from its last page: cut short, it loaded as a whole, shorter file, without an
    error or a warning (half a clip to be trained against the whole transcript). A whole Ogg ends on a page flagged
    end-of-stream: one without it is cut short, refused as a WAV is."""
    data = _encoded((0.3 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32), "OGG",
                    subtype)  # noise: a few pages
    whole_path, path = tmp_path / "whole.ogg", tmp_path / "cut.ogg"
    whole_path.write_bytes(data)
    path.write_bytes(data[:len(data) // 2])
    notes = []
    with _warned() as caught:
        whole = load_audio(whole_path)
        assert whole.size == 3 * SAMPLE_RATE and _messages(caught) == []  # uncut: whole, without a word
        out = load_audio(path, salvage=True, on_salvage=notes.append)
    assert 0 < out.size < 2 * SAMPLE_RATE and np.array_equal(out, whole[:out.size])
    expected = f"only the first {out.size / SAMPLE_RATE:.1f} s decode (it ends before its Ogg stream's last page)"
    assert _messages(caught) == notes == [_salvaged(path, expected)]
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == _refused(path, expected)
    with pytest.raises(AudioError, match=r"^<audio>: only the first .* decode \(it ends before its Ogg stream's"):
        load_audio(data[:len(data) * 9 // 10])  # bytes, as uploaded; cut inside its last page
    with pytest.raises(AudioError, match=r"^<audio>: only the first .* decode \(it ends before its Ogg stream's"):
        load_audio(data[:data.rindex(b"OggS")])  # cut between pages: whole pages, none the last


@pytest.mark.parametrize("fmt,patch", [
    ("AU", lambda b: b.__setitem__(slice(8, 12), b"\xff\xff\xff\xff")),  # its format's "length unknown"
    ("AIFF", lambda b: [b.__setitem__(slice(at, at + 4), n.to_bytes(4, "big")) for at, n in (  # sox's, to a pipe
        (b.index(b"COMM") + 10, 0x7F000000 // 2), (b.index(b"SSND") + 4, 0x7F000000 + 8))]),
    ("W64", lambda b: b.__setitem__(slice(b.index(b"data" + W64_GUID) + 16, b.index(b"data" + W64_GUID) + 24),
                                   (0x7FFFFFFFFFFFD907).to_bytes(8, "little"))),  # sox's, to a pipe (was refused)
], ids=["au-unknown-size", "aiff-sox-pipe", "w64-sox-pipe"])
def test_an_au_or_aiff_written_to_a_pipe_is_streamed_not_called_cut(tmp_path, fmt, patch):
    """A writer that cannot seek back leaves a placeholder for the length; the file holds less, and is whole."""
    data = bytearray(_encoded(_wandering(2.0), fmt, "PCM_16"))
    patch(data)
    (tmp_path / "piped").write_bytes(data)
    with _warned() as caught:
        out = load_audio(tmp_path / "piped")
    assert out.size == 2 * SAMPLE_RATE and _messages(caught) == []


APE_FOOTER = b"APETAGEX" + (2000).to_bytes(4, "little") + (32).to_bytes(4, "little") + bytes(16)  # APEv2, no items
TAILS = {"id3v1": b"TAG" + b"x" * 125, "ape-and-id3v1": APE_FOOTER + b"TAG" + b"x" * 125, "zeros-128": bytes(128),
         "zeros-4096": bytes(4096)}  # what taggers and padding leave after the last frame


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
def test_a_whole_flac_with_bytes_after_its_frames_loads_whole_without_a_warning(tmp_path, tail):
    """A tagger's ID3v1 or APE tag, or zero padding, after a FLAC's last frame makes libFLAC lose sync once every
    frame has decoded: "only the first 3.0 s of 3.0 s decode ...: the file is damaged or cut short" (evaluate failed
    the row, prepare dropped the clip, translate exited 3). Every frame its header counts decoded: whole. A FLAC cut
    short and then tagged is still refused."""
    data, whole = _noise_flac(3.0)
    (tmp_path / "tagged.flac").write_bytes(data + tail)
    with _warned() as caught:
        out = load_audio(tmp_path / "tagged.flac")
    assert np.array_equal(out, whole) and _messages(caught) == []
    with pytest.raises(AudioError, match=r"^<audio>: only the first 2\.\d s of 3\.0 s decode \(Error : flac decoder "
                                         r"lost sync\): the file is damaged or cut short"):
        load_audio(data[:int(len(data) * 0.9)] + tail)


@pytest.mark.parametrize("tail", [TAILS["id3v1"], TAILS["zeros-4096"]], ids=["id3v1", "zeros-4096"])
def test_a_whole_mp3_without_a_xing_header_with_bytes_after_its_frames_loads_without_a_warning(tail):
    """libmpg123 gives up on over 1 KiB of bytes after an MP3's last frame with an error: a whole CBR stream without
    a Xing header (its length an estimate) so padded was "only the first 3.0 s of 3.1 s decode". Its frames'
    headers count it (the walk goes past what is not a frame to the next two that are, so damage inside still hides
    nothing after it): within MP3_SLACK of them, it is whole, as an MP3 with a Xing count is. The read that met the
    error gives back nothing, so up to MP3_BLOCK_FRAMES of its end are left out."""
    from llm_srt.audio import MP3_SLACK, _mp3_walked

    data = _without_header_frame(_encoded(_wandering(3.0), "MP3", "MPEG_LAYER_III", bitrate_mode="CONSTANT",
                                          compression_level=0.5))
    clean = load_audio(data)
    assert _mp3_walked(data + tail) == _mp3_walked(data) == clean.size  # the tail holds no frame
    with _warned() as caught:
        out = load_audio(data + tail)
    assert out.size >= clean.size - MP3_SLACK and np.array_equal(out, clean[:out.size]) and _messages(caught) == []


def test_an_array_over_the_limit_is_said_to_be_over_it():
    """The error rounded both lengths to whole seconds: "30 s is longer than the 30 s limit" for 30 s and a sample,
    "3 s is longer than the 2 s limit" for 2.6 s over 2.5."""
    from llm_srt.errors import AudioOverLimit

    with pytest.raises(AudioOverLimit) as e:
        load_audio(np.zeros(30 * SAMPLE_RATE + 1, np.float32), max_seconds=30)
    assert str(e.value) == "<audio>: 30.000062 s is longer than the 30 s limit; split the file first"
    with pytest.raises(AudioOverLimit, match="^<audio>: 2.6 s is longer than the 2.5 s limit"):  # was "3 s ... 2 s"
        load_audio(np.zeros(int(2.6 * SAMPLE_RATE), np.float32), max_seconds=2.5)


@pytest.mark.parametrize("sr,shown", [(8000, "30.00025"), (16000, "30.000125"), (22050, "30.00009"),
                                      (44100, "30.000045")])
def test_no_clip_loads_past_whisper_s_window_under_max_seconds_30(tmp_path, sr, shown):
    """train and evaluate load with max_seconds=30 so that no clip reaches Whisper's encoder over its window: 30 s
    and a frame passed (the limit's frame of slack), resampled to 480001-480002 samples, and the encoder refused it
    in a training step, naming no file. Its last frame (a writer's off-by-one) is cut off now; two frames over are
    refused, saying by how much ("30 s ... longer than the 30 s limit", it said)."""
    from llm_srt.errors import AudioOverLimit

    path = tmp_path / "long.wav"
    sf.write(path, np.full(30 * sr + 1, 0.1, np.float32), sr)
    full = load_audio(path, max_seconds=None)
    out = load_audio(path, max_seconds=30)
    assert out.size == 30 * SAMPLE_RATE and np.array_equal(out, full[:out.size])
    sf.write(path, np.full(30 * sr + 2, 0.1, np.float32), sr)
    with pytest.raises(AudioOverLimit) as e:
        load_audio(path, max_seconds=30)
    assert str(e.value) == (f"{path}: the header claims {shown} s of audio, longer than the 30 s limit; split the "
                            "file first (or re-export it, if the header is wrong)")


def test_a_flac_without_its_length_stops_at_the_limit_as_it_decodes():
    """A FLAC whose header gives no length is checked as its frames decode: a frame over loaded 480001 samples."""
    from llm_srt.errors import AudioOverLimit

    one, whole = _noise_flac(30.0 + 1 / SAMPLE_RATE, length_in_header=False)
    two, _ = _noise_flac(30.0 + 2 / SAMPLE_RATE, length_in_header=False)
    assert np.array_equal(load_audio(one, max_seconds=30), whole[:30 * SAMPLE_RATE])
    with pytest.raises(AudioOverLimit) as e:
        load_audio(two, max_seconds=30)
    assert str(e.value) == "<audio>: the audio runs past the 30 s limit; split the file first"


def test_the_resampler_s_rounding_never_takes_a_clip_past_max_seconds(tmp_path):
    """44102 frames at 44.1 kHz (1.0000454 s) are within a limit of 1.0000562 s, and resample to 16000.7 samples at
    16 kHz, which soxr rounds up to 16001: one past the limit's 16000. The frames are within the limit, the extra
    sample is the rounding's: the output stops at the limit (and at the limit's own samples: 1.001 s at 16 kHz is
    16016, not int(1.001 * 16000), 16015)."""
    path = tmp_path / "a.wav"
    sf.write(path, _tone(44100, 44102 / 44100), 44100)
    full = load_audio(path, max_seconds=None)
    assert full.size == 16001
    out = load_audio(path, max_seconds=1 + 0.9 / SAMPLE_RATE)
    assert out.size == 16000 and np.array_equal(out, full[:16000])
    sf.write(path, np.full(16016, 0.1, np.float32), SAMPLE_RATE)
    assert load_audio(path, max_seconds=1.001).size == 16016


def _rf64(seconds):
    """A 16 kHz RF64 (libsndfile's: a ds64 chunk giving the sizes, the data chunk's 32-bit size 0xFFFFFFFF), and
    where its samples start."""
    data = _encoded(_wandering(seconds), "RF64", "PCM_16")
    at = data.index(b"data")
    assert data[:4] == b"RF64" and data[12:16] == b"ds64" and data[at + 4:at + 8] == b"\xff" * 4
    assert int.from_bytes(data[28:36], "little") == len(data) - at - 8 == int(seconds * SAMPLE_RATE) * 2  # dataSize
    return data, at + 8


def test_an_rf64_cut_short_is_refused_unless_salvaged_and_a_whole_one_loads_whole(tmp_path):
    """An RF64's data size is its ds64 chunk's, which the cut-short check did not read: cut to a third, a 3 s RF64
    loaded as a whole 1 s one without a word (translate exit 0, prepare kept the clip), where a WAV is refused."""
    data, start = _rf64(3.0)
    whole_path, path = tmp_path / "whole.wav", tmp_path / "cut.wav"
    whole_path.write_bytes(data)
    path.write_bytes(data[:start + 2 * SAMPLE_RATE])
    with _warned() as caught:
        whole = load_audio(whole_path)
        assert whole.size == 3 * SAMPLE_RATE and _messages(caught) == []
        out = load_audio(path, salvage=True)
    assert out.size == SAMPLE_RATE and np.array_equal(out, whole[:SAMPLE_RATE])
    expected = "only the first 1.0 s of 3.0 s decode (it ends before the length its header gives)"
    assert _messages(caught) == [_salvaged(path, expected)]
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == _refused(path, expected)
    with pytest.raises(AudioError, match=f"^<audio>: {re.escape(expected)}"):  # bytes, as uploaded
        load_audio(data[:start + 2 * SAMPLE_RATE])


def test_cut_overrun_cuts_a_frame_over_the_window_only():
    """Inference loads a whole clip without a limit and holds it to the window afterwards: 1 ms over (a frame,
    resampling's rounding) is cut as load_audio(max_seconds) cuts it, to the same sample count; more over is left for
    the caller to refuse or segment, and a shorter clip is untouched."""
    from llm_srt.audio import cut_overrun
    assert cut_overrun(np.zeros(16020, np.float32), 1.001).size == 16016  # 1.001 * 16000 is 16015.99...
    assert cut_overrun(np.zeros(480016, np.float32), 30.0).size == 480000
    assert cut_overrun(np.zeros(480017, np.float32), 30.0).size == 480017
    assert cut_overrun(np.zeros(479000, np.float32), 30.0).size == 479000


def test_a_file_cut_short_by_milliseconds_says_two_different_lengths(tmp_path):
    """A 4 s WAV missing its last 3 ms was "only the first 4.0 s of 4.0 s decode": both lengths rounded to a tenth,
    the warning (and serve's answer) read as if nothing was missing. They now show the decimals that tell them apart;
    a file cut by more keeps the one decimal."""
    data, _ = _wav(_tone(SAMPLE_RATE, 4.0))
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:-100])  # 50 samples: 3.125 ms
    expected = "only the first 3.997 s of 4.000 s decode (it ends before the length its header gives)"
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value) == _refused(path, expected)
    with _warned() as caught:
        out = load_audio(path, salvage=True)
    assert out.size == 4 * SAMPLE_RATE - 50 and _messages(caught) == [_salvaged(path, expected)]
    with pytest.raises(AudioError, match=r"^<audio>: only the first 2\.0 s of 4\.0 s decode \(it ends"):
        load_audio(data[:len(data) // 2])
