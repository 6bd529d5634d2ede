"""The null trials of results/significance-2026-12-03 where, as in FLEURS, each target language lacks some clips
(each clip's row in a target is missing with probability 0.1), so clips cover different sets of directions. Two
systems drawn from the same distribution: a sound test at 0.05 calls about 5% of trials significant. The test as
`evaluate` runs it (sentences drawn from one pool per group of joined directions, `direction_groups`) against the
strata before 2026-12-04 (the exact set of directions each sentence has rows in).

    python results/significance-2026-12-04/null_trials_missing.py 200     # trials (300 resamples each)
"""
import random
import sys

from llm_srt.evaluate import significance
from llm_srt.evaluate.report import UtteranceResult
from llm_srt.evaluate.significance import paired_bootstrap

WORDS = "the a cat dog sat on mat big small red blue house car runs quickly slowly".split()
TARGETS, CLIPS, SAMPLES, MISSING = ("deu", "fra", "spa", "por", "ita", "nld"), 60, 300, 0.1
GROUPS = {"one pool (now)": significance.direction_groups,
          "exact sets (before)": lambda covers: [frozenset(c) for c in covers]}


def garbled(text: str, share: float, rng: random.Random) -> str:
    return " ".join(w if rng.random() > share else rng.choice(WORDS) for w in text.split())


trials, significant, singles = int(sys.argv[1]), dict.fromkeys(GROUPS, 0), 0
for trial in range(trials):
    rng = random.Random(100 + trial)
    rows = {"a": [], "b": []}
    sets = set()
    for clip in range(CLIPS):
        hard = {s: rng.random() < 0.5 for s in rows}
        kept = tuple(t for t in TARGETS if rng.random() > MISSING) or TARGETS[:1]
        sets.add(kept)
        for tgt in kept:
            ref = " ".join(rng.choices(WORDS, k=12))
            for s in rows:
                rows[s].append(UtteranceResult(id=f"{clip}:{tgt}", src="eng", tgt=tgt, ref_translation=ref,
                                               sentence=str(clip),
                                               hyp_translation=garbled(ref, 0.6 if hard[s] else 0.15, rng)))
    singles += len(sets)
    for name, groups in GROUPS.items():
        significance.direction_groups = groups
        significant[name] += paired_bootstrap(rows["a"], rows["b"], samples=SAMPLES, seed=trial).p < 0.05
print(f"{trials} trials with no real difference ({CLIPS} clips, {len(TARGETS)} targets, each clip missing from a "
      f"target with p={MISSING}; {singles / trials:.1f} different sets of directions a trial), called significant "
      "at p < 0.05: " + ", ".join(f"{name} {n} ({n / trials:.0%})" for name, n in significant.items()))
