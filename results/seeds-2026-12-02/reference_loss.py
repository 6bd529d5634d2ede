"""Teacher-forced loss of the reference translations (SRT, nats/token; evaluate/loss.py) of several SRT models on
every STEP-th translation row of MANIFEST; one line per model, per-row losses to OUT.json:
    python results/seeds-2026-12-02/reference_loss.py MANIFEST STEP OUT.json NAME=FOLDER [NAME=FOLDER ...]"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llm_srt.data.manifest import read_manifest
from llm_srt.evaluate.loss import reference_losses
from llm_srt.model.speech_llm import SpeechLLM

torch.set_num_threads(2)
manifest, step, out, *models = sys.argv[1:]
rows = [r for r in read_manifest(Path(manifest)) if r.tgt_lang][::int(step)]
losses = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
for spec in models:
    name, path = spec.split("=", 1)
    if name not in losses:
        start = time.perf_counter()
        m = SpeechLLM.from_pretrained(path)
        measured = reference_losses(m, rows, "srt")
        if measured.unscored:  # the rows are compared across models by position: every one must be scored
            sys.exit(measured.note())
        losses[name] = [float(x) for x in measured.losses]
        del m
        Path(out).write_text(json.dumps({"ids": [r.id for r in rows], **losses}) + "\n")
        print(f"{name}: {len(rows)} rows, {time.perf_counter() - start:.0f} s", flush=True)
    if name != "ids":
        print(f"{name}: mean reference loss {np.mean(losses[name]):.3f}", flush=True)
