"""How long a short request waits behind a long one in `serve`'s batcher, with the shipped model on this machine's
CPU, with the batches run inside a running batch (PREEMPT_DEPTH 3, the default) and without (0, as before).

    .venv/bin/python results/serve-preempt-2026-12-05/preempt.py 3 0

A 157 s espeak-ng recording (32 sentences, 8 speech segments at --max-batch 2: 4 model calls) is submitted; 2 s
later, a 1.2 s clip. Prints the short clip's wait, the long one's time and the short clip's translation."""
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from llm_srt.infer import SpeechTranslator
from llm_srt.prompts import Task
from llm_srt.serve import batcher
from llm_srt.serve.batcher import BatchOptions, Batcher

SENTENCES = ["The file could not be opened because it is in use by another program.",
             "Please restart the computer to finish installing the updates.",
             "The connection to the server was lost while the document was saving.",
             "Your password must contain at least eight characters and one number."]


def say(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True)
    x, sr = sf.read(path, dtype="float32")
    return soxr.resample(x, sr, 16000).astype(np.float32)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pause = np.zeros(int(1.2 * 16000), np.float32)
        long = np.concatenate([np.concatenate([say(s, Path(tmp) / f"l{i}.wav"), pause])
                               for i, s in enumerate(SENTENCES * 8)])
        short = say("Open the file.", Path(tmp) / "s.wav")
    print(f"long {long.size / 16000:.1f} s, short {short.size / 16000:.1f} s", flush=True)
    translator = SpeechTranslator.from_pretrained("checkpoints/embedded/srt", device="cpu")

    async def run() -> tuple:
        b = Batcher(translator, BatchOptions(max_batch=2, max_wait_ms=0))
        await b.start()
        t0 = time.perf_counter()
        first = asyncio.ensure_future(b.submit(long, "eng", "deu", Task.SRT))
        await asyncio.sleep(2.0)
        t1 = time.perf_counter()
        s = await b.submit(short, "eng", "deu", Task.SRT)
        t2 = time.perf_counter()
        r = await first
        t3 = time.perf_counter()
        await b.stop()
        return t2 - t1, t3 - t0, s.translation, len(r.segments)

    for depth in (int(a) for a in sys.argv[1:]):
        batcher.PREEMPT_DEPTH = depth
        wait, total, text, segments = asyncio.run(run())
        print(f"PREEMPT_DEPTH={depth}: short answered in {wait:.1f} s; long ({segments} segments) took {total:.1f} s; "
              f"short: {text!r}", flush=True)


if __name__ == "__main__":
    main()
