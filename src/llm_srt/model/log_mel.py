"""Whisper's log-mel spectrogram in plain torch (model/whisper_torch.py's features): the numbers of HF's
WhisperFeatureExtractor (tests/model/test_whisper_torch.py compares them), without importing transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import LLMSRTError
from ..paths import embedded_whisper_dir

SAMPLE_RATE = 16000
FEATURE_DEFAULTS = {"feature_size": 80, "sampling_rate": SAMPLE_RATE, "hop_length": 160, "chunk_length": 30,
                    "n_fft": 400, "dither": 0.0}  # WhisperFeatureExtractor's defaults


def read_json(path: Path) -> dict:
    """A Whisper folder's JSON object (generation, feature extractor settings, shard index); one that cannot be read
    or is no object (a list: it was an AttributeError traceback where its settings were read) is an error naming it,
    with what to do: `llm-srt setup` for the embedded Whisper alone (a user's downloaded folder was told so too)."""
    def redo() -> str:
        return ("re-run `llm-srt setup`" if path.parent == embedded_whisper_dir() else
                "copy or download the model again (or convert it again, `llm-srt convert whisper-ct2`)")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{path}: cannot read it ({str(e).splitlines()[0]}); {redo()}") from None
    if not isinstance(raw, dict):
        raise LLMSRTError(f"{path}: not a JSON object ({type(raw).__name__}); {redo()}")
    return raw


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mels = 3.0 * freq / 200.0
    log = freq >= 1000.0
    mels[log] = 15.0 + np.log(freq[log] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freq = 200.0 * mels / 3.0
    log = mels >= 15.0
    freq[log] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log] - 15.0))
    return freq


def mel_filters(n_fft: int, n_mels: int, sampling_rate: int) -> np.ndarray:
    """(1 + n_fft // 2, n_mels) Slaney-scale, Slaney-normalized triangular filters over 0 .. 8 kHz, float64 (as
    WhisperFeatureExtractor's `mel_filter_bank(..., norm="slaney", mel_scale="slaney")`)."""
    hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], n_mels + 2))
    fft = np.linspace(0, sampling_rate // 2, 1 + n_fft // 2)
    slopes = hz[None, :] - fft[:, None]
    down, up = -slopes[:, :-2] / np.diff(hz)[:-1], slopes[:, 2:] / np.diff(hz)[1:]
    return np.maximum(0.0, np.minimum(down, up)) * (2.0 / (hz[2:] - hz[:-2]))[None, :]


class LogMel:
    """Clips -> Whisper's log-mel (B, n_mels, frames) of each clip padded (or cut) to `chunk_length` seconds: STFT
    with a Hann window, power, mel, log10 floored 8 below each clip's maximum, (x + 4) / 4."""

    def __init__(self, feature_size: int, sampling_rate: int, hop_length: int, chunk_length: int, n_fft: int):
        self.n_fft, self.hop, self.samples = n_fft, hop_length, chunk_length * sampling_rate
        self.filters = torch.from_numpy(mel_filters(n_fft, feature_size, sampling_rate).T.astype(np.float32))

    @classmethod
    def from_folder(cls, folder: Path, n_mels: int | None = None) -> "LogMel":
        """The folder's feature extractor settings as transformers (and the speech LLM's encoder) reads them:
        processor_config.json's "feature_extractor" (or "audio_processor"), else preprocessor_config.json, else
        WhisperFeatureExtractor's defaults (preprocessor_config.json was read first: beside a processor_config.json of
        other settings, language ID and the baselines took other features than transformers). `n_mels`, the model's
        mel bins (config.json's num_mel_bins), is then the default feature_size and the only one accepted: a 128-bin
        Whisper (large-v3) without a preprocessor config would otherwise get 80-bin features and fail at its first
        encode."""
        pre, proc = folder / "preprocessor_config.json", folder / "processor_config.json"
        nested = read_json(proc) if proc.is_file() else {}
        settings, file = nested.get("feature_extractor", nested.get("audio_processor")), proc
        if settings is None:
            settings, file = (read_json(pre), pre) if pre.is_file() else ({}, proc)
        if not isinstance(settings, dict):
            raise LLMSRTError(f"{file}: \"feature_extractor\" is not a JSON object of settings; fix it or copy the "
                              "model again")
        defaults = FEATURE_DEFAULTS if n_mels is None else {**FEATURE_DEFAULTS, "feature_size": n_mels}
        s = {k: settings.get(k, v) for k, v in defaults.items()}
        if bad := [k for k, v in s.items() if k != "dither" and (type(v) is not int or v <= 0)]:  # (a TypeError or
            raise LLMSRTError(f"{file}: {bad[0]} is {s[bad[0]]!r}, not a positive whole number; fix it or copy the "
                              "model again")  # a ZeroDivisionError traceback from the filters or the STFT)
        if n_mels is not None and s["feature_size"] != n_mels:
            raise LLMSRTError(f"{file}: feature_size is {s['feature_size']} mel bins but "
                              f"config.json's num_mel_bins is {n_mels}; set feature_size to {n_mels}")
        del s["dither"]  # a training augmentation (noise): left out, as the speech LLM's encoder does, so the
        #   same folder decodes the same audio to the same text every time
        return cls(**s)

    def __call__(self, audios: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """On the CPU one clip at a time: the same values, but the temporaries of one clip's STFT and power (~17 MB
        for 30 s) instead of the whole batch's (16 clips, 8 a batch: peak RSS 530 -> 457 MiB int8, 730 -> 632 MiB
        float32, the same wall time); on a GPU the whole batch at once."""
        if torch.device(device).type != "cpu" or len(audios) <= 1:
            return self._log_mel(audios, device)
        return torch.cat([self._log_mel([a], device) for a in audios])

    def _log_mel(self, audios: list[np.ndarray], device: torch.device) -> torch.Tensor:
        wave = torch.zeros(len(audios), self.samples)
        for i, a in enumerate(audios):
            a = torch.as_tensor(np.asarray(a, dtype=np.float32)[:self.samples])
            wave[i, :len(a)] = a
        wave = wave.to(device)
        stft = torch.stft(wave, self.n_fft, self.hop, window=torch.hann_window(self.n_fft, device=device),
                          return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        del stft
        log = torch.clamp(self.filters.to(device) @ power, min=1e-10).log10()
        log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log + 4.0) / 4.0
