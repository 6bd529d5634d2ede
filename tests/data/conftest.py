"""Helpers for the data tests: audio files and gettext catalogues written on the spot."""

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}


def write_audio(path: Path, seconds: float = 0.5, sr: int = 16000, fmt: str = "WAV", freq: float = 220.0) -> Path:
    """A tone of `seconds` at `sr` Hz in the container `fmt` (WAV, FLAC, MP3, OGG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format=fmt,
             subtype=SUBTYPES[fmt])
    return path


def write_mo(path: Path, messages: dict[str, str]) -> Path:
    """A GNU .mo catalogue (what msgfmt writes) holding `messages` (msgid -> translation), UTF-8."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(entries)
    ids = [k.encode("utf-8") for k in keys]
    strs = [entries[k].encode("utf-8") for k in keys]
    n = len(keys)
    orig_table, trans_table = 28, 28 + 8 * n
    offset = 28 + 16 * n
    blob, orig, trans = b"", [], []
    for data, table in [(s, orig) for s in ids] + [(s, trans) for s in strs]:
        table.append((len(data), offset + len(blob)))
        blob += data + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, orig_table, trans_table, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in orig + trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + blob)
    return path


@pytest.fixture(scope="session")
def mp3_format() -> str:
    """MP3 when this libsndfile can write it (soundfile >= 0.12 with libsndfile >= 1.1), else OGG Vorbis."""
    return "MP3" if "MP3" in sf.available_formats() else "OGG"


@pytest.fixture(scope="session")
def audio_file():
    return write_audio


@pytest.fixture(scope="session")
def mo_file():
    return write_mo
