"""How often the paired BLEU test calls a difference significant when there is none: two systems drawn from the
same distribution, 60 English clips each translated into 6 targets, each clip's difficulty (how garbled its
hypotheses are) shared by its 6 rows and drawn apart for the two systems. A sound test at 0.05 says "significant"
in about 5% of trials. The test as `evaluate` runs it (rows with their sentence id: a clip is one unit) against the
same rows with no sentence and no transcript, each row its own unit (what resampling the rows apart amounts to).

    python results/significance-2026-12-03/null_trials.py 200     # trials (300 resamples each)
"""
import random
import sys

from llm_srt.evaluate.report import UtteranceResult
from llm_srt.evaluate.significance import paired_bootstrap

WORDS = "the a cat dog sat on mat big small red blue house car runs quickly slowly".split()
TARGETS, CLIPS, SAMPLES = ("deu", "fra", "spa", "por", "ita", "nld"), 60, 300


def garbled(text: str, share: float, rng: random.Random) -> str:
    return " ".join(w if rng.random() > share else rng.choice(WORDS) for w in text.split())


trials, significant = int(sys.argv[1]), {"sentence": 0, "rows apart": 0}
for trial in range(trials):
    rng = random.Random(100 + trial)
    rows = {"a": [], "b": []}
    for clip in range(CLIPS):
        hard = {s: rng.random() < 0.5 for s in rows}
        for tgt in TARGETS:
            ref = " ".join(rng.choices(WORDS, k=12))
            for s in rows:
                rows[s].append(dict(id=f"{clip}:{tgt}", src="eng", tgt=tgt, ref_translation=ref, sentence=str(clip),
                                    hyp_translation=garbled(ref, 0.6 if hard[s] else 0.15, rng)))
    for unit in significant:
        a, b = ([UtteranceResult(**{**r, "sentence": r["sentence"] if unit == "sentence" else None}) for r in rows[s]]
                for s in ("a", "b"))
        significant[unit] += paired_bootstrap(a, b, samples=SAMPLES, seed=trial).p < 0.05
print(f"{trials} trials with no real difference, called significant at p < 0.05: "
      + ", ".join(f"{unit} as the unit {n} ({n / trials:.0%})" for unit, n in significant.items()))
