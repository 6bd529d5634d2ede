"""Subtitle cue length (2026-12-03): a 73.6 s "talk" of 20 held-out English sentences (the flite:rms voice of
data/mini_voices_p/heldout.jsonl, README "Which system for real recordings today"), 0.3-0.8 s apart, through
`llm-srt translate --format srt/json` with the shipped model, into German, at the default --max-segment-seconds 30 and
at 7: the cues' lengths, the transcript's WER against the 20 transcripts joined, and the German's BLEU against the 20
references joined (one document).

    python results/cues-2026-12-03/cues.py OUT        # ~1 min; writes OUT/talk.wav and OUT/talk_S.{srt,json}
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
from sacrebleu.metrics import BLEU

from llm_srt.audio import load_audio, write_wav
from llm_srt.evaluate.metrics import normalize

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
root = Path("data/mini_voices_p")
rows = [json.loads(line) for line in open(root / "heldout.jsonl")]
eng = [r for r in rows if r["src_lang"] == "eng" and not r["tgt_lang"]][:20]
deu = {r["sentence_id"]: r["translation"] for r in rows if r["src_lang"] == "eng" and r["tgt_lang"] == "deu"}
rng = np.random.default_rng(0)
parts = []
for r in eng:
    parts += [load_audio(str(root / r["audio"])), np.zeros(int(16000 * rng.uniform(0.3, 0.8)), dtype=np.float32)]
talk = np.concatenate(parts)
write_wav(out / "talk.wav", talk)
print(f"{len(eng)} sentences, {len(talk) / 16000:.1f} s")


def seconds(h, m, s, ms):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


for limit in (30, 7):
    base = ["llm-srt", "translate", str(out / "talk.wav"), "--model", "checkpoints/embedded/srt", "--src", "eng",
            "--tgt", "deu", "--max-segment-seconds", str(limit)]
    start = time.perf_counter()
    srt = subprocess.run(base + ["--format", "srt"], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    (out / f"talk_{limit}.srt").write_text(srt)
    [result] = json.loads(subprocess.run(base + ["--format", "json"], capture_output=True, text=True,
                                         check=True).stdout)
    (out / f"talk_{limit}.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    spans = re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)", srt)
    lengths = [seconds(*s[4:]) - seconds(*s[:4]) for s in spans]
    wer = 100 * jiwer.wer(normalize(" ".join(r["transcript"] for r in eng), "eng"),
                          normalize(result["transcript"], "eng"))
    bleu = BLEU().corpus_score([result["translation"]], [[" ".join(deu[r["sentence_id"]] for r in eng)]]).score
    print(f"--max-segment-seconds {limit}: {len(lengths)} cues, {min(lengths):.1f}-{max(lengths):.1f} s long (mean "
          f"{sum(lengths) / len(lengths):.1f}); transcript WER {wer:.1f}; German BLEU (one document) {bleu:.1f}; "
          f"the srt run {wall:.1f} s")
