"""The bench's utterances (bench/embedded.py): translation pairs read from a manifest (the embedded mini corpus's
test set by default), else espeak-ng clips of a few built-in sentences; and the long clips of the encoder comparison.
Only the default manifest gives way to espeak-ng clips: one given that is missing or holds no translation rows is an
error (it was replaced without a word, and the table showed other audio than asked for)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import languages
from ..audio import SAMPLE_RATE, load_audio
from ..data.prepare import MINI_FOLDER
from ..errors import LLMSRTError

if TYPE_CHECKING:
    from .embedded import BenchOptions

DEFAULT_MANIFEST = str(MINI_FOLDER / "test.jsonl")  # the embedded mini corpus; espeak-ng clips when it is absent
SILENCE_SECONDS = 0.3  # gap between clips concatenated into a long clip
ESPEAK_SENTENCES = (  # fallback utterances (eng -> deu) when no manifest is available
    ("Will it rain tomorrow?", "Regnet es morgen?"),
    ("The file could not be opened because it does not exist.", "Die Datei existiert nicht."),
    ("Please enter your password again.", "Bitte geben Sie Ihr Passwort erneut ein."),
    ("Sets the number of digits displayed for floating point values.", "Setzt die Anzahl der Ziffern."),
    ("The connection to the server was lost.", "Die Verbindung zum Server wurde getrennt."),
    ("Do you want to save the changes before closing?", "Wollen Sie die Änderungen speichern?"),
    ("Select the language you would like to use.", "Wählen Sie die Sprache aus."),
    ("No printer is installed on this computer.", "Auf diesem Computer ist kein Drucker installiert."),
)
ESPEAK_SPEEDS = (120, 150, 175)  # words per minute, cycled: gives clips of about 2 to 6 s


@dataclass
class Utterance:
    path: str  # audio file (the training comparison reads it, as the recipe does)
    audio: np.ndarray  # 16 kHz float32
    src: str
    tgt: str
    transcript: str
    translation: str
    origin: str | None = None  # the manifest it came from, or "espeak-ng clips" (None: not said)

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def load_utterances(options: BenchOptions, workdir: Path) -> list[Utterance]:
    """`n` translation utterances (one per audio file) from the manifest, else (no manifest, or the default one
    missing or without translation rows) espeak-ng clips written to workdir."""
    check_manifest(options)
    if options.manifest and Path(options.manifest).is_file():
        from ..data.manifest import read_manifest

        seen, utts = set(), []
        for row in read_manifest(options.manifest):
            if not row.tgt_lang or row.audio in seen:
                continue
            seen.add(row.audio)
            utts.append(Utterance(row.audio, load_audio(row.audio), row.src_lang, row.tgt_lang, row.transcript,
                                  row.translation, options.manifest))
            if len(utts) == options.n:
                return utts
        if utts:  # (a given manifest has some: check_manifest)
            return utts
    return espeak_utterances(options.n, workdir)


def check_manifest(options: BenchOptions) -> None:
    """A manifest given (not the default) that is not a file, or holds no translation row (or a bad row): an error,
    cheap enough for run_bench to check before the yardstick and any model (its rows read, not their audio)."""
    from ..data.manifest import read_manifest

    if options.manifest in (None, DEFAULT_MANIFEST):
        return
    if not Path(options.manifest).is_file():
        raise LLMSRTError(f"bench: --manifest {options.manifest}: no such file; give a manifest that exists, or leave "
                          "--manifest out")
    if not any(row.tgt_lang for row in read_manifest(options.manifest, check_audio=False)):
        raise LLMSRTError(f"bench: --manifest {options.manifest} has no translation rows (tgt_lang): give one that "
                          "has, or leave --manifest out")


def espeak_utterances(n: int, workdir: Path) -> list[Utterance]:
    from ..audio import write_wav

    if shutil.which("espeak-ng") is None:
        raise LLMSRTError(f"bench: no manifest ({DEFAULT_MANIFEST}) and espeak-ng is not installed; run "
                          "`llm-srt prepare mini` or install espeak-ng")
    voice = languages.get("eng").espeak
    utts = []
    for i in range(n):
        text, translation = ESPEAK_SENTENCES[i % len(ESPEAK_SENTENCES)]
        speed = ESPEAK_SPEEDS[i % len(ESPEAK_SPEEDS)]
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                             capture_output=True).stdout
        audio = load_audio(wav, name=f"espeak clip {i}")
        path = workdir / f"clip{i:03d}.wav"
        write_wav(path, audio)
        utts.append(Utterance(str(path), audio, "eng", "deu", text, translation, "espeak-ng clips"))
    return utts


def long_clips(utts: list[Utterance], count: int, seconds: float) -> list[np.ndarray]:
    """`count` clips of exactly `seconds`, each utterances joined by short silences (cycling through them)."""
    gap = np.zeros(int(SILENCE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    target, k, clips = int(seconds * SAMPLE_RATE), 0, []
    for _ in range(count):
        parts, size = [], 0
        while size < target:
            parts += [utts[k % len(utts)].audio, gap]
            size += parts[-2].size + gap.size
            k += 1
        clips.append(np.concatenate(parts)[:target])
    return clips
