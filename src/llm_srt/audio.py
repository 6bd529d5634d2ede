"""Audio in: anything libsndfile reads (wav, flac, ogg, mp3), any rate and channel count -> 16 kHz mono float32."""

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, UndecodableAudio

SAMPLE_RATE = 16000  # Whisper's rate
MIN_SAMPLES = 400  # 25 ms, one log-mel window: shorter clips are padded (the STFT's reflect padding needs > 200)
MAX_SECONDS_DEFAULT = 4 * 3600  # refuse to decode more than this into memory at once
MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: a header outside this range is damaged, not audio
DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OverflowError, MemoryError)
BLOCK_SAMPLES = 1 << 22  # decode 4M samples (16 MiB) at a time: a damaged header's frame count is never trusted

AudioInput = str | Path | bytes | np.ndarray


def load_audio(source: AudioInput, sr: int = SAMPLE_RATE, max_seconds: float | None = MAX_SECONDS_DEFAULT,
               name: str | None = None) -> np.ndarray:
    """Read and validate audio. Returns float32 mono samples at `sr` Hz, shape (N,).

    `source` is a path, the bytes of a file, or an array already at `sr` Hz ((N,) or (N, channels)).
    Raises AudioError with a one-line message naming the input for anything unusable.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<audio>")
    if isinstance(source, np.ndarray):
        samples, rate = source, sr
    else:
        samples, rate = _decode(source, label, max_seconds)
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or samples.ndim == 2 and samples.shape[1] == 0:
        raise AudioError(f"{label}: expected a 1-D or (samples, channels) array, got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"{label}: expected float samples in [-1, 1], got dtype {samples.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, caught below
        samples = (samples.mean(axis=1) if samples.ndim == 2 else samples).astype(np.float32, copy=False)
    if samples.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples); check the file was written completely")
    if not np.isfinite(samples).all():
        raise AudioError(f"{label}: the audio contains NaN or infinite samples; re-export it from the source")
    if max_seconds is not None and samples.size / rate > max_seconds:
        raise AudioError(f"{label}: {samples.size / rate:.0f} s is longer than the {max_seconds:.0f} s limit; "
                         "split the file first")
    if rate != sr:
        samples = soxr.resample(samples, rate, sr, quality="HQ").astype(np.float32, copy=False)
    if samples.size < MIN_SAMPLES:
        samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
    return np.clip(samples, -1.0, 1.0)


def _decode(source: str | Path | bytes, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode a file or its bytes to mono float32 (N,) at the file's own rate, block by block."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{label}: no such file")
        if path.is_dir():
            raise AudioError(f"{label}: is a directory, not an audio file")
        try:
            if path.stat().st_size == 0:
                raise AudioError(f"{label}: the file is empty (0 bytes)")
            with open(path, "rb"):
                pass
        except PermissionError:
            raise AudioError(f"{label}: permission denied; make the file readable") from None
        target = str(path)
    else:
        if len(source) == 0:
            raise AudioError(f"{label}: the upload is empty (0 bytes)")
        target = io.BytesIO(source)
    try:
        opened = sf.SoundFile(target)
    except DECODE_ERRORS as e:
        detail = _reason(e)
        raise UndecodableAudio(f"{label}: cannot decode audio ({detail}); use wav, flac, ogg or mp3", detail) from None
    try:
        with opened as f:
            rate = f.samplerate
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioError(f"{label}: the header gives a sample rate of {rate} Hz, outside "
                                 f"{MIN_RATE}-{MAX_RATE} Hz; the file is damaged, re-export it")
            limit = None if max_seconds is None else int(max_seconds * rate) + 1
            blocks, total = [], 0
            while True:
                block = f.read(max(1, BLOCK_SAMPLES // f.channels), dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0])
                total += len(block)
                if limit is not None and total > limit:
                    raise AudioError(f"{label}: longer than the {max_seconds:.0f} s limit; split the file first")
    except DECODE_ERRORS as e:
        raise AudioError(f"{label}: cannot decode audio ({_reason(e)}); use wav, flac, ogg or mp3") from None
    return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)), rate


def _reason(e: Exception) -> str:
    """libsndfile's own words for a decoding error, without the file name it prefixes."""
    return (getattr(e, "error_string", None) or (str(e).splitlines() or [type(e).__name__])[0]).rstrip(".")


def duration(path: str | Path) -> float:
    """Duration in seconds from the header, without decoding."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e}); use wav, flac, ogg or mp3") from None


def write_wav(path: str | Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    sf.write(str(path), samples, sr, subtype="PCM_16")
