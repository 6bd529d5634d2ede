"""Audio in: anything libsndfile reads (wav, flac, ogg, mp3), any rate and channel count -> 16 kHz mono float32.

Decoding streams and stops: the header's length is checked against the limits before anything is read, and is
never trusted after that (the frames actually decoded are counted block by block); each block is mixed down and
resampled to 16 kHz as it comes (soxr's stream resampler), so memory is bounded by the output's length whatever
the file's own rate, channel count or compression ratio (a 2.6 MB FLAC can claim 4 hours at 768 kHz: 44 GB).
"""

import io
import math
import os
import struct
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr

from .audio_headers import RIFF_MAX, _mp3_counted, _mp3_walked, _read_at, _size, _wav_data, ogg_cut_short, sized_cut
from .errors import AudioError, AudioOverLimit, UndecodableAudio, open_regular, shown, warn_each_time

SAMPLE_RATE = 16000  # Whisper's rate
WINDOW_SECONDS = 30  # Whisper's fixed window: the longest clip its encoder takes
# part of the feature cache's key (data/features.py): bump when load_audio's samples for the same bytes change (2:
# MP3s without a Xing header, damaged or cut short, and cut-short AIFF/AU/W64, refused where they decoded in part;
# 3: a cut-short RF64 refused, where it loaded as a shorter whole file)
DECODER_VERSION = 3
MAX_PEAK = 4.0  # +12 dBFS: float samples beyond this are integer-scaled (int16 values in a float file: a -44 dBFS
#   recording peaks at 200), not a hot mix (those stay under ~2 and are clipped to [-1, 1], as before); at 256, such
#   a file was clipped to a square wave without a word
MAX_CHANNELS = 64  # an array with more columns than this (or than rows) is (channels, samples), not (samples, channels)
MIN_SAMPLES = 400  # 25 ms, one log-mel window: shorter clips are padded (the STFT's reflect padding needs > 200)
MAX_SECONDS_DEFAULT = 4 * 3600  # refuse to decode more than this into memory at once (921.6 MB at 16 kHz)
MAX_BYTES_DEFAULT = 16 << 30  # decoded samples (float32, every channel, the file's own rate) read from one input:
#                               4 h of 48 kHz 5.1 audio fits; 4 h claimed at 768 kHz (44 GB) does not
BYTES_PER_SAMPLE = 4  # what `max_bytes` counts per decoded sample (float32), whatever the file's sample format
MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: a header outside this range is damaged, not audio
DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OverflowError, MemoryError)
BLOCK_SAMPLES = 1 << 22  # decode 4M samples (16 MiB as float32) at a time, all channels together
UNKNOWN_FRAMES = 1 << 62  # libsndfile's frame count for a stream of unknown length is SF_COUNT_MAX (2**63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
MP3_BLOCK_FRAMES = 2 * 1152  # an MP3 is decoded this many frames (two MPEG-1 Layer III frames) at a time:
#   libsndfile's MP3 reader returns nothing for a read that meets damage, though it decoded up to it, so a read is
#   what damage loses (0.05 s at 44.1 kHz, 0.14 s at 16 kHz; a 4M-sample read lost up to 43.7 s of a 48 kHz stereo
#   file, or all of it); no slower than large reads
MP3_SLACK = 2 * 1152  # frames (two of MPEG-1 Layer III's) an MP3 may decode short of its Xing count and still be
#   whole: decoders differ on the encoder delay and padding that count leaves out

AudioInput = str | Path | bytes | np.ndarray  # or a torch.Tensor (read as its array)
ACCEPTED = ("a path, the bytes of a file, or a float array or torch tensor of shape (samples,) or "
            "(samples, channels)")  # what load_audio takes, for the line refusing anything else


def load_audio(source: AudioInput, sr: int = SAMPLE_RATE, max_seconds: float | None = MAX_SECONDS_DEFAULT,
               name: str | None = None, max_bytes: int | None = MAX_BYTES_DEFAULT, salvage: bool = False,
               on_salvage: Callable[[str], None] | None = None, sample_rate: int | None = None) -> np.ndarray:
    """Read and validate audio. Returns float32 mono samples at `sr` Hz, shape (N,).

    `source` is a path, the bytes of a file, or an array of samples at `sample_rate` Hz (None: `sr`), resampled
    to `sr` with soxr as a file's are ((N,) or (N, channels); a (channels, N) array, as torchaudio and librosa give,
    is refused: pass its `.T`). A torch tensor (on any device) is read as its array; anything else is refused.
    `max_seconds` caps the duration; `max_bytes` caps the samples a file decodes to (counted as float32, every
    channel, at the file's own rate: a 768 kHz stereo second is 6.1 MB), so a small compressed file cannot make
    the decoder work through gigabytes. Either is checked against the header before reading and again as blocks
    come, so memory stays within the output's size. None: no limit.
    A file that decodes only in part (damaged, or cut short) raises AudioError, as its reference (a transcript, a
    translation) goes with the whole of it; `salvage` (no reference goes with the audio: translating it) keeps the
    part that decodes, with one warning, which `on_salvage` also gets (a server passes it on to its client, who
    never sees the server's log).
    Raises AudioError with a one-line message naming the input for anything unusable.
    """
    label = shown(name or (str(source) if isinstance(source, (str, Path)) else "<audio>"))
    if (torch := sys.modules.get("torch")) is not None and isinstance(source, torch.Tensor):  # no tensor without it
        source = source.detach().cpu()
        source = (source.float() if source.is_floating_point() else source).numpy()  # bfloat16 has no numpy dtype
    if isinstance(source, np.ndarray):
        samples = _from_array(source, label, sr, max_seconds, sr if sample_rate is None else sample_rate)
    elif not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        raise AudioError(f"{label}: got a {type(source).__name__}; give {ACCEPTED} (np.asarray(x, np.float32) "
                         "for a list of samples)")
    else:
        samples = _decode(source, label, sr, max_seconds, max_bytes, salvage, on_salvage)
    if samples.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples); check the file was written completely")
    if samples.size < MIN_SAMPLES:
        samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
    if (peak := float(np.abs(samples).max())) > MAX_PEAK:  # clipped, it would reach the model as a square wave
        raise AudioError(f"{label}: samples reach {peak:.4g}, far outside [-1, 1]: integer-scaled audio stored as "
                         "float? divide by 32768 (int16) or 2147483648 (int32), or re-export it; a float mix above "
                         "0 dBFS: normalize it to peak at 1")
    return np.clip(samples, -1.0, 1.0, out=samples)


def array_rate(rate, where: str = "") -> int:
    """`rate` (an array's sample rate, Hz) as an int, checked: AudioError outside MIN_RATE..MAX_RATE or not whole."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{where}sample_rate={rate!r}: give the array's rate in Hz, a whole number from {MIN_RATE} "
                         f"to {MAX_RATE} (16000 when it is already at Whisper's rate)")
    return int(rate)


def _from_array(source: np.ndarray, label: str, sr: int, max_seconds: float | None, rate: int) -> np.ndarray:
    """An array of samples at `rate` Hz, checked, mixed down and resampled -> (N,) float32 at `sr` Hz."""
    rate = array_rate(rate, f"{label}: ")
    samples = np.asarray(source)
    if samples.ndim not in (1, 2) or samples.ndim == 2 and samples.shape[1] == 0:
        raise AudioError(f"{label}: expected a 1-D or (samples, channels) array, got shape {samples.shape}")
    if samples.ndim == 2 and (samples.shape[1] > MAX_CHANNELS or 0 < samples.shape[0] < samples.shape[1]):
        # read as (samples, channels), a (2, 48000) stereo array was 2 samples of 48000 channels: "no speech"
        raise AudioError(f"{label}: an array of shape {samples.shape} is read as (samples, channels), which gives "
                         f"{samples.shape[1]} channels of {samples.shape[0]} samples; if it is (channels, samples) "
                         "(torchaudio, librosa), pass array.T")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"{label}: expected float samples in [-1, 1], got dtype {samples.dtype}")
    if max_seconds is not None and len(samples) / rate > max_seconds:
        raise AudioOverLimit(f"{label}: {_longer(len(samples) / rate, max_seconds)} s is longer than the "
                             f"{_seconds(max_seconds)} s limit; split the file first", limit="max_seconds")
    _check_values(samples, label)
    mono = _mono(samples)
    return mono if rate == sr else soxr.resample(mono, rate, sr, quality="HQ").astype(np.float32, copy=False)


def _mono(block: np.ndarray, copy: bool = True) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) float32; `copy`: a fresh array even where a view would do."""
    if block.ndim == 2 and block.shape[1] > 1:
        return block.mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.array(block.reshape(len(block)), dtype=np.float32, copy=copy or None)


def _check_values(block: np.ndarray, label: str) -> None:
    if not np.isfinite(block).all():
        raise AudioError(f"{label}: the audio contains NaN or infinite samples; re-export it from the source")
    if block.dtype.itemsize > 4 and block.size and (peak := float(np.abs(block).max())) > FLOAT32_MAX:
        raise AudioError(f"{label}: samples as large as {peak:.3g} are out of range (audio is in [-1, 1]); "
                         "rescale or re-export it")


def _decode(source: str | Path | bytes, label: str, sr: int, max_seconds: float | None,
            max_bytes: int | None, salvage: bool, on_salvage: Callable[[str], None] | None = None) -> np.ndarray:
    """Decode a file or its bytes to mono float32 (N,) at `sr` Hz, block by block, within the limits."""
    target = _open(source, label)
    try:
        held = target if isinstance(target, int) else source  # the bytes, not their BytesIO: its buffer is copied
        counted = _mp3_counted(held)
        samples = _stream(target, label, sr, max_seconds, max_bytes, salvage, sized_cut(held), counted,
                          None if counted else _mp3_walked(held), on_salvage, ogg_cut_short(held))
        if samples.size == 0 and (repaired := _unsized_wav(held, label)) is not None:  # whole when asked for
            samples = _stream(repaired, label, sr, max_seconds, max_bytes, salvage, on_salvage=on_salvage)
        # cut to the limit: the frame _Caps lets past it, and the resampler's rounding half up (44102 frames at
        # 44.1 kHz, 16000.7 samples at 16 kHz, gave 16001 under a limit of 16000.9), made 480001-480002 samples of a
        # clip under max_seconds=30, which Whisper's encoder refused in a training step, naming no file (train and
        # evaluate rely on this limit to keep every clip within its window)
        return samples if max_seconds is None else samples[:_most_samples(max_seconds, sr)]
    finally:
        if isinstance(target, int):
            os.close(target)


def _stream(target: int | io.IOBase, label: str, sr: int, max_seconds: float | None,
            max_bytes: int | None, salvage: bool, header_cut: tuple[int, int] | None = None,
            mp3_counted: bool = False, mp3_walked: int | None = None,
            on_salvage: Callable[[str], None] | None = None, ogg_cut: bool = False) -> np.ndarray:
    """`header_cut`: sized_cut's (bytes held, bytes claimed) for a WAV, AIFF, AU or W64 cut short, whose length
    libsndfile trims to what it holds, so that only its header tells it is cut short. `mp3_counted`: an MP3 whose
    Xing/Info header counts its frames (_mp3_counted), which libsndfile gives as its length, cut short or not.
    `mp3_walked`: the samples an MP3 without that count holds by its frames' headers (_mp3_walked). `ogg_cut`: an
    Ogg file without its stream's last page (ogg_cut_short), whose length libsndfile takes from the last page there."""
    try:
        opened = sf.SoundFile(target, closefd=False)
    except DECODE_ERRORS as e:
        detail = _reason(e)
        raise UndecodableAudio(f"{label}: cannot decode audio ({detail}); use wav, flac, ogg or mp3", detail) from None
    try:
        with opened as f:
            rate, channels, unknown_length = f.samplerate, f.channels, opened.frames >= UNKNOWN_FRAMES
            claimed_frames = f.frames if header_cut is None else f.frames * header_cut[1] / header_cut[0]
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioError(f"{label}: the header gives a sample rate of {rate} Hz, outside "
                                 f"{MIN_RATE}-{MAX_RATE} Hz; the file is damaged, re-export it")
            caps = _Caps(label, rate, channels, max_seconds, max_bytes)
            if not unknown_length:
                caps.check(f.frames, claimed=True)
            samples, frames, cut = _read_blocks(f, label, sr, caps)
            stopped = False
            if ogg_cut:  # libsndfile's length is the cut file's own (its last page's): the whole one's is not known
                unknown_length = True
            counted = f.format == "FLAC" or f.format == "MP3" and mp3_counted  # an exact length, not an estimate
            stated = f.frames if counted and not unknown_length else mp3_walked if f.format == "MP3" else None
            if cut is not None and stated is not None and frames >= stated - MP3_SLACK * (f.format == "MP3"):
                cut = None  # every frame the file states decoded: the error is at bytes after them (an ID3v1 or APE
                #   tag, zero padding), where a whole FLAC with a 128-byte tag was refused as "damaged or cut short"
            if cut is None and counted and not unknown_length and frames < f.frames - MP3_SLACK * (f.format == "MP3"):
                cut = "it ends before the length its header gives"  # cut at a frame's end: no decoder error
            elif cut is None and header_cut is not None and frames:  # none decoded: called empty, as a header alone is
                cut = "it ends before the length its header gives"
            elif cut is None and ogg_cut and frames:
                cut = "it ends before its Ogg stream's last page"
            elif cut is None and f.format == "MP3" and mp3_walked is not None and frames < mp3_walked - MP3_SLACK:
                claimed_frames, stopped = mp3_walked, True  # whole, but libsndfile stopped at its estimate
    except DECODE_ERRORS as e:
        raise AudioError(f"{label}: cannot decode audio ({_reason(e)}): the file is damaged or cut short; re-export "
                         "it, or copy it again") from None
    # what decoded and what the file holds, told apart: a file 3 ms short was "the first 4.0 s of 4.0 s"
    kept, whole = _told_apart(frames / rate, claimed_frames / rate if stopped or not unknown_length else 0.0)
    if stopped:
        message = (f"{label}: libsndfile decodes only the first {kept} s of the {whole} s this MP3's frames hold (a "
                   "VBR stream without a Xing header, whose length it estimates); convert it with another decoder "
                   "first (ffmpeg -i FILE FILE.flac)")
        if not salvage:
            raise AudioError(message)
        _salvaged(f"{message}; the first {kept} s are used", on_salvage)
    if cut is not None:  # decoded in part
        claimed = "" if unknown_length else f" of {whole} s"
        if not salvage:
            raise AudioError(f"{label}: only the first {kept} s{claimed} decode ({cut}): the file is "
                             "damaged or cut short; re-export it, or copy it again")
        _salvaged(f"{label}: only the first {kept} s{claimed} decode ({cut}): the file is damaged or "
                  "cut short; those are used (re-export it, or copy it again, for the rest)", on_salvage)
    if frames and not samples.size:  # under half a sample at `sr` (1 frame at 44.1 kHz): short, not empty
        return np.zeros(1, np.float32)  # padded by load_audio as a short clip at `sr` is
    return samples


def _salvaged(message: str, on_salvage: Callable[[str], None] | None) -> None:
    """A file decoded in part and kept (`salvage`): its one warning, to `on_salvage` and as a UserWarning, which the
    CLI prints as the toolkit's other warnings, one line under the command's name (`cli.one_line_warnings`; it was
    logged, and printed bare). Shown for every such file (`warn_each_time`), not once per process, as Python's
    default filter shows a line's warning (a server's uploads cut short alike)."""
    warn_each_time(message)
    if on_salvage is not None:
        on_salvage(message)


def _read_blocks(f: sf.SoundFile, label: str, sr: int, caps: "_Caps") -> tuple[np.ndarray, int, str | None]:
    """Every frame `f` decodes, mixed down and resampled to `sr`: (samples, frames decoded, None), or with the
    decoder's error in place of None where it stopped at one after decoding some. An error before any frame is
    raised."""
    channels, rate = f.channels, f.samplerate
    dtype = np.float64 if f.subtype == "DOUBLE" else np.float32  # a double may lie beyond float32's range
    stream = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ") if rate != sr else None
    out, frames, size = [], 0, max(1, BLOCK_SAMPLES // channels)
    if f.format == "MP3":  # a read that meets damage gives back none of the frames it decoded: small reads
        size = min(size, MP3_BLOCK_FRAMES)
    while True:
        block = np.empty((size, channels), dtype)
        n, error = _read_into(f, block)
        if error is not None and not frames + n:
            raise error
        if n:
            frames += n
            caps.check(frames, claimed=False)
            _check_values(block[:n], label)
        last = n == 0 or error is not None  # a short read is not the end: only an empty one is
        mono = _mono(block[:n], copy=n < size)  # a short block copied: a view would hold the whole buffer
        out.append(stream.resample_chunk(mono, last=last) if stream is not None else mono)
        if last:
            return np.concatenate(out), frames, None if error is None else _reason(error)


def _read_into(f: sf.SoundFile, block: np.ndarray) -> tuple[int, sf.LibsndfileError | None]:
    """The frames libsndfile decodes into `block` ((frames, channels) float32 or float64, C order), and its error if
    it stopped at one. libsndfile's own read, not SoundFile.read, which raises on an error and so drops the frames
    this read decoded before it (a FLAC damaged at 150 s kept only its first block, 87 s), and seeks after every
    read, which fails at the end of a FLAC whose header gives no length (one written to a pipe). These are
    soundfile's internals: its version is pinned in pyproject.toml."""
    double = block.dtype == np.float64
    read = sf._snd.sf_readf_double if double else sf._snd.sf_readf_float
    n = read(f._file, sf._ffi.cast("double *" if double else "float *", block.ctypes.data), len(block))
    code = sf._snd.sf_error(f._file)  # reset by each read: this one's
    return n, sf.LibsndfileError(code) if code else None


class _Caps:
    """The most frames one file may decode to, from the duration and decoded-bytes limits."""

    def __init__(self, label: str, rate: int, channels: int, max_seconds: float | None, max_bytes: int | None):
        self.label, self.rate, self.channels = label, rate, channels
        self.max_seconds, self.max_bytes = max_seconds, max_bytes

    def check(self, frames: int, claimed: bool) -> None:
        """Raise AudioOverLimit if `frames` (the header's claim, or the count decoded so far) is over a limit. One
        frame over is let through (a writer's off-by-one, 1 ms at most: a 1 kHz frame), and _decode cuts its samples
        off, as it does the resampler's rounding: the output is never longer than the limit."""
        label, seconds = self.label, self.max_seconds
        if seconds is not None and frames > seconds * self.rate + 1:
            if claimed:
                raise AudioOverLimit(f"{label}: the header claims {_longer(frames / self.rate, seconds)} s of audio, "
                                     f"longer than the {_seconds(seconds)} s limit; split the file first (or "
                                     "re-export it, if the header is wrong)", limit="max_seconds")
            raise AudioOverLimit(f"{label}: the audio runs past the {_seconds(seconds)} s limit; split the file "
                                 "first", limit="max_seconds")
        decoded = frames * self.channels * BYTES_PER_SAMPLE
        if self.max_bytes is not None and decoded > self.max_bytes:
            size = f"{format_bytes(decoded)}" if claimed else f"more than {format_bytes(self.max_bytes)}"
            raise AudioOverLimit(f"{label}: decodes to {size} of samples ({self.rate} Hz x {self.channels} "
                                 f"channel(s)), over the {format_bytes(self.max_bytes)} limit on decoded audio; "
                                 "resample it to 16 kHz mono or split it first", limit="max_bytes")


def cut_overrun(samples: np.ndarray, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """`samples` cut to `seconds` where they run over it by 1 ms at most (a writer's off-by-one frame, resampling's
    rounding), as load_audio(max_seconds) cuts them; unchanged otherwise (shorter, or over by more: the caller's
    limit to enforce). For audio loaded without that limit and then held to a window (inference's whole clips)."""
    most = _most_samples(seconds, sr)
    return samples[:most] if 0 < samples.shape[-1] - most <= sr // 1000 else samples


def _most_samples(max_seconds: float, sr: int) -> int:
    """The most samples at `sr` Hz within `max_seconds` (n / sr <= max_seconds: 1.001 s at 16 kHz is 16016 samples,
    though 1.001 * 16000 is 16015.99...)."""
    n = int(max_seconds * sr)
    return n + 1 if (n + 1) / sr <= max_seconds else n


def _longer(seconds: float, limit: float) -> str:
    """`seconds` (over `limit`) cut to the fewest decimals that show it over: "30.000062", not "30" (30 s and a
    frame at 16 kHz was "30 s ... longer than the 30 s limit"); cut, not rounded: 2.6 s over 2.5 is not "3"."""
    for digits in (0, 1, 3, 6, 9):
        if (cut := math.floor(seconds * 10 ** digits) / 10 ** digits) > limit:
            text = f"{cut:.{digits}f}"
            return text.rstrip("0") if digits > 1 else text  # 30.00025, not 30.000250
    return repr(seconds)


def _told_apart(part: float, whole: float) -> tuple[str, str]:
    """Seconds decoded and seconds the file holds (0: not known; then `part` is told apart from nothing) with the
    fewest decimals, one at least, that show them different: ("3.997", "4.000"), not ("4.0", "4.0")."""
    for digits in (1, 3, 6, 9):
        if (texts := (f"{part:.{digits}f}", f"{whole:.{digits}f}"))[0] != texts[1]:
            return texts
    return repr(part), repr(whole)


def _seconds(limit: float) -> str:
    """A limit in seconds as given: "30", "2.5" (not "2", as :.0f rounded it)."""
    return f"{limit:.6f}".rstrip("0").rstrip(".")


def format_bytes(n: float) -> str:
    """'1.5 GiB', or '12.0 MiB' below a GiB."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _open(source: str | Path | bytes, label: str) -> int | io.BytesIO:
    """An open file descriptor of a regular file (never blocks on a FIFO), or the bytes as a file."""
    if not isinstance(source, (str, Path)):
        if len(source) == 0:
            raise AudioError(f"{label}: the upload is empty (0 bytes)")
        return io.BytesIO(source)
    fd = open_regular(source, label, AudioError)
    if os.fstat(fd).st_size == 0:
        os.close(fd)
        raise AudioError(f"{label}: the file is empty (0 bytes)")
    return fd


def _unsized_wav(target: int | bytes, label: str) -> io.RawIOBase | None:
    """A WAV whose header says its data chunk is empty while samples follow it (a recorder killed before it wrote
    the sizes; a stream written to a pipe): the file as read through a _Patched view, its data chunk's size set to
    what the file holds, so the samples decode. None for anything else (an RF64, whose sizes are its ds64 chunk's:
    one with none is refused as empty, as before)."""
    if (found := _wav_data(target)) is None or found[1][:4] == b"RF64":
        return None
    order, head, size, _ = found
    total = _size(target)
    held = total - len(head)
    if size != 0 or held <= 0:
        return None
    if total - 8 > RIFF_MAX:
        raise AudioError(f"{label}: a WAV over 4 GiB whose header gives no sizes (a recorder stopped before "
                         "writing them): a WAV header cannot give its length; convert it with "
                         "`sox --ignore-length` to FLAC or RF64")
    patched = bytearray(head)
    struct.pack_into(order + "I", patched, len(head) - 4, held)
    struct.pack_into(order + "I", patched, 4, total - 8)
    return _Patched(target, bytes(patched), total)


class _Patched(io.RawIOBase):
    """A file as libsndfile reads it (seek, tell, readinto) with its first bytes replaced by `head`: the rest is
    read from the file where asked, never copied whole (a 4 h 48 kHz stereo WAV is 2.6 GB)."""

    def __init__(self, target: int | bytes, head: bytes, size: int):
        super().__init__()
        self.target, self.head, self.size, self.at = target, head, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.at = max(0, offset + (0, self.at, self.size)[whence])
        return self.at

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self.at))
        from_head = max(0, min(n, len(self.head) - self.at))
        view[:from_head] = self.head[self.at:self.at + from_head]
        rest = _read_at(self.target, self.at + from_head, n - from_head)
        view[from_head:from_head + len(rest)] = rest
        self.at += from_head + len(rest)
        return from_head + len(rest)


def _reason(e: Exception) -> str:
    """libsndfile's own words for a decoding error, without the file name it prefixes (or clearer ones where its
    words mislead: an MPEG stream with no decodable frame is reported as a missing file)."""
    words = (getattr(e, "error_string", None) or (str(e).splitlines() or [type(e).__name__])[0]).rstrip(".")
    return REASONS.get(words, shown(words))


REASONS = {"File does not exist or is not a regular file (possibly a pipe?)": "no decodable audio frames"}


def duration(path: str | Path) -> float:
    """Duration in seconds from the header, without decoding (a FIFO or device is refused, never waited on)."""
    label = shown(str(path))
    fd = open_regular(path, label, AudioError)
    try:
        with sf.SoundFile(fd, closefd=False) as f:
            if f.frames >= UNKNOWN_FRAMES or f.samplerate <= 0:
                raise AudioError(f"{label}: the header gives no length; re-encode the file (e.g. to 16 kHz flac)")
            return f.frames / f.samplerate
    except DECODE_ERRORS as e:
        raise AudioError(f"{label}: cannot read audio header ({_reason(e)}); use wav, flac, ogg or mp3") from None
    finally:
        os.close(fd)


def write_wav(path: str | Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    sf.write(str(path), samples, sr, subtype="PCM_16")
