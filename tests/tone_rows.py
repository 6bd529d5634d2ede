"""A small test manifest of tone clips: n rows eng -> deu, each clip a sine of its own pitch and length (0.5 s, 0.6 s,
...), so that a stub system's output can tell the rows apart."""

from pathlib import Path

import numpy as np

from llm_srt.audio import SAMPLE_RATE, write_wav
from llm_srt.data.manifest import Row, write_manifest


def tone_rows(folder: Path, n: int) -> list[Row]:
    """Clips c0.wav ... c{n-1}.wav written into `folder`, and their rows (ids "0", "1", ...; split test)."""
    rows = []
    for i in range(n):
        path = folder / f"c{i}.wav"
        t = np.arange(int((0.5 + 0.1 * i) * SAMPLE_RATE)) / SAMPLE_RATE
        write_wav(path, (0.4 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32))
        rows.append(Row(id=f"{i}", audio=str(path), duration=t.size / SAMPLE_RATE, src_lang="eng",
                        transcript="a cat sat", tgt_lang="deu", translation="die Katze", split="test", corpus="t",
                        sentence_id=str(i)))
    return rows


def tone_manifest(folder: Path, n: int) -> Path:
    """`tone_rows` written as folder/test.jsonl."""
    write_manifest(folder / "test.jsonl", tone_rows(folder, n))
    return folder / "test.jsonl"
