"""Gemma-3-270M's text MT on the demo's dev sentences, alone and with the shipped ASR stage's LoRA in it.

Run from the repository root after `make demo` (it reads data/mini/dev.jsonl): python
results/lora-mt-2026-12-01/lora_text_mt.py 30 [FOLDER]   (the first 30 dev sentences of each of the 6 demo
directions; FOLDER: a speech LLM whose LoRA to measure, default checkpoints/embedded/asr)."""
import sys
from pathlib import Path

import sacrebleu

from llm_srt import device
from llm_srt.data.manifest import read_manifest
from llm_srt.demo import DEMO_DIRECTIONS
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.systems import TextMTSystem
from llm_srt.model.speech_llm import SpeechLLM

rows = [r for r in read_manifest(Path("data/mini/dev.jsonl")) if (r.src_lang, r.tgt_lang) in set(DEMO_DIRECTIONS)]
ids = sorted({r.sentence_id for r in rows})[:int(sys.argv[1]) if len(sys.argv) > 1 else 8]
rows = [r for r in rows if r.sentence_id in ids]
mt = TextMTSystem(None, device.resolve("cpu", "float32"))
plain = mt.model
folder = sys.argv[2] if len(sys.argv) > 2 else "checkpoints/embedded/asr"
asr = SpeechLLM.from_pretrained(folder).eval()  # no LoRA dropout
for name, model in (("plain Gemma", plain), (f"Gemma + the LoRA of {folder}", asr.llm)):
    mt.model = model
    hyps = mt.translate([r.transcript for r in rows], [r.src_lang for r in rows], [r.tgt_lang for r in rows],
                        DecodingOptions())
    line = []
    for s, t in DEMO_DIRECTIONS:
        sel = [(h, r) for h, r in zip(hyps, rows) if (r.src_lang, r.tgt_lang) == (s, t)]
        bleu = sacrebleu.corpus_bleu([h for h, _ in sel], [[r.translation for _, r in sel]]).score
        copies = sum(h.strip().lower() == r.transcript.strip().lower() for h, r in sel)
        line.append(f"{s}->{t} {bleu:.1f} (copies {copies}/{len(sel)})")
    allb = sacrebleu.corpus_bleu(hyps, [[r.translation for r in rows]]).score
    print(f"{name}: all {allb:.1f}; " + ", ".join(line), flush=True)
    for h, r in [(h, r) for h, r in zip(hyps, rows) if (r.src_lang, r.tgt_lang) == ("deu", "eng")][:3]:
        print(f"  {r.transcript!r} -> {h!r} (reference {r.translation!r})", flush=True)
