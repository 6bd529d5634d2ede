"""Helpers for the data tests: audio files, gettext catalogues and corpus tables written on the spot.

The corpus tables are written as the releases lay them out, each builder naming the official file or script that
defines its layout, so a converter that assumes another layout fails here (not only on a real release).
"""

import csv
import sys
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

_THIS = sys.modules[__name__]  # taken now: every conftest.py is named "conftest", and a later one replaces this entry

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


def write_bytes(path: Path, data: bytes = b"") -> Path:
    """An empty clip (Common Voice 3/4 ship hundreds) or, with `data`, one no decoder opens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- Common Voice ---------------------------------------------------------------------------------------------
# Source: Common Voice's dataset changelog (cv-dataset repository, datasets/scripted-speech/CHANGELOG.md).
# Corpus 1 to 4 (CoVoST 2 is built on Corpus 4): "columns: client_id, path, sentence, up_votes, down_votes, age,
# gender, accent"; each table has this header line, tab-separated, fields written as they are (a bare " is text).
CV4_HEADER = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent")
# Corpus 17.0+ (17.0 added sentence_id and sentence_domain, 13.0 variant, 5.0 locale and segment): the header of a
# Corpus 18.0 validated.tsv.
CV17_HEADER = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
               "gender", "accents", "variant", "locale", "segment")


def write_cv_table(path: Path, header: tuple[str, ...], rows: list[dict[str, str]]) -> Path:
    """A Common Voice train/dev/test/validated.tsv: `header`, then each row's fields (absent ones empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(row.get(col, "")) for col in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_clip_durations(locale_dir: Path, ms: dict[str, int]) -> Path:
    """clip_durations.tsv (changelog, Corpus 16.1: "two columns: clip and duration[ms]", with that header)."""
    return write_cv_table(locale_dir / "clip_durations.tsv", ("clip", "duration[ms]"),
                          [{"clip": k, "duration[ms]": v} for k, v in ms.items()])


def write_times_txt(locale_dir: Path, ms: dict[str, int]) -> Path:
    """times.txt (changelog, Corpus 14.0: "mp3 filename and duration in ms"), as Common Voice's
    mp3-duration-reporter (src/main.rs) writes it: one "`<clips dir>/<file>` = <ms>" line per clip, no header."""
    path = locale_dir / "times.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"`{locale_dir.name}/clips/{k}` = {v}\n" for k, v in ms.items()), encoding="utf-8")
    return path


# --- CoVoST 2 -------------------------------------------------------------------------------------------------
# Source: the CoVoST repository (facebookresearch/covost). README: covost_v2.<src>_<tgt>.tsv "matches the rows in
# validated.tsv from Common Voice" (version 4); get_covost_splits.py takes path, translation and split from it and
# joins sentence and client_id from validated.tsv on path. Its tables are read and written by pandas with
# sep="\t", quoting=csv.QUOTE_NONE, escapechar="\\" (a " in a field is written \", a backslash \\).
COVOST_RELEASE_HEADER = ("path", "translation", "split")  # split: train, train_covost, dev, test
# get_covost_splits.py's output covost_v2.<src>_<tgt>.<train|dev|test>.tsv (train = train + train_covost):
COVOST_SPLIT_HEADER = ("path", "sentence", "translation", "client_id")


def write_covost_table(path: Path, header: tuple[str, ...], rows: list[dict[str, str]]) -> Path:
    """A CoVoST 2 table written with the official writer's settings (see above)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerow(header)
        writer.writerows([row.get(col, "") for col in header] for row in rows)
    return path


# --- FLEURS ---------------------------------------------------------------------------------------------------
# Source: the FLEURS loading script (google/fleurs on the Hugging Face hub, fleurs.py) and FLEURS' README: per
# locale folder, train.tsv / dev.tsv / test.tsv with no header and seven tab-separated columns (id, file name, raw
# transcription, normalized transcription, space-separated characters, number of 16 kHz samples, gender), and the
# wavs under audio/<split>/.
def write_fleurs_table(path: Path, rows: list[tuple[str, str, str, int]]) -> Path:
    """rows: (sentence id, file name, raw transcription, number of samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join([sid, name, raw, raw.lower(), " ".join(raw.lower().replace(" ", "|")), str(samples),
                        "FEMALE"]) for sid, name, raw, samples in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def layouts():
    """This module: the release-layout builders and headers above (layouts.write_cv_table(...), ...)."""
    return _THIS
