"""The two ASR shares' teacher-forced reference losses, paired by seed and by test row: per seed, and over the
mean of seeds 1-4 (evaluate/significance.paired_mean, 1,000 resamples of the 600 rows):
    python results/seeds-2026-12-02/shares_paired.py results/seeds-2026-12-02/reference_loss.json"""
import json
import sys

import numpy as np

from llm_srt.evaluate.significance import paired_mean

losses = json.load(open(sys.argv[1]))


def line(name: str, c) -> str:
    return (f"{name}: 25% ASR {c.a:.3f}, 40% ASR {c.b:.3f}, delta {c.a - c.b:+.3f} [{c.low:+.3f}, {c.high:+.3f}], "
            f"p={c.p:.3f}")


seeds = sorted({k.split("_")[0] for k in losses if k.endswith("_asr25")})
for s in seeds:
    print(line(s, paired_mean(losses[f"{s}_asr25"], losses[f"{s}_asr40"])))
low, high = (np.mean([losses[f"{s}_asr{k}"] for s in seeds], axis=0) for k in (25, 40))
print(line(f"mean of {', '.join(seeds)}", paired_mean(list(low), list(high))))
