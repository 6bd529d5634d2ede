"""Reference-translation loss (SRT, nats/token) of checkpoints/embedded/srt against an older SRT model, every STEP-th
translation row of MANIFEST: python reference_loss.py MANIFEST STEP OLD_MODEL_FOLDER"""
import collections
import sys
from pathlib import Path
import numpy as np, torch
from llm_srt.data.manifest import read_manifest
from llm_srt.model.speech_llm import SpeechLLM
from llm_srt.evaluate.loss import reference_losses
torch.set_num_threads(2)
rows = [r for r in read_manifest(Path(sys.argv[1])) if r.tgt_lang]
step = int(sys.argv[2])
rows = rows[::step]
res = {}
for name, path in (("new", "checkpoints/embedded/srt"), ("old", sys.argv[3])):
    m = SpeechLLM.from_pretrained(path)
    measured = reference_losses(m, rows, "srt")
    if measured.unscored:  # the two models are compared row by row: every row must be scored
        sys.exit(measured.note())
    res[name] = np.array(measured.losses)
    del m
d = res["new"] - res["old"]
print(f"{sys.argv[1]}: {len(rows)} rows; mean ref loss new {res['new'].mean():.3f} old {res['old'].mean():.3f}; new lower in {(d < 0).mean():.0%}")
by = collections.defaultdict(list)
for r, a, b in zip(rows, res["new"], res["old"]):
    by[(r.src_lang, "eng" if r.tgt_lang == "eng" else "X")].append((a, b))
for k in sorted(by): print(k, len(by[k]), "new %.3f old %.3f" % tuple(np.mean(by[k], 0)))
rng = np.random.default_rng(0); boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(1000)]
print("delta new-old %.3f, 95%% [%.3f, %.3f]" % (d.mean(), *np.percentile(boot, [2.5, 97.5])))
