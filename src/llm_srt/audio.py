"""Audio in: anything libsndfile reads (wav, flac, ogg, mp3), any rate and channel count -> 16 kHz mono float32."""

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

SAMPLE_RATE = 16000  # Whisper's rate
MIN_SAMPLES = 160  # 10 ms: anything shorter carries no speech and breaks the log-mel frame count
MAX_SECONDS_DEFAULT = 4 * 3600  # refuse to decode more than this into memory at once

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
        samples, rate = _decode(source, label)
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    elif samples.ndim != 1:
        raise AudioError(f"{label}: expected a 1-D or (samples, channels) array, got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"{label}: expected float samples in [-1, 1], got dtype {samples.dtype}")
    samples = samples.astype(np.float32, copy=False)
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


def _decode(source: str | Path | bytes, label: str) -> tuple[np.ndarray, int]:
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
        samples, rate = sf.read(target, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{label}: cannot decode audio ({detail}); use wav, flac, ogg or mp3") from None
    return samples, rate


def duration(path: str | Path) -> float:
    """Duration in seconds from the header, without decoding."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e}); use wav, flac, ogg or mp3") from None


def write_wav(path: str | Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    sf.write(str(path), samples, sr, subtype="PCM_16")
