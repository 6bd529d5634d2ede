"""The demo's two claims over several training seeds: each seed's `llm-srt demo --seed N --work DIR` run, its
systems' hypotheses pooled (`evaluate.significance.paired_bootstrap_runs`: BLEU of all seeds' hypotheses together,
resampling whole test sentences), next to each seed's own test.

    python results/demo-seeds-2026-12-02/pool.py runs/demo_seed0 runs/demo_seed1 runs/demo_seed2
"""
import json
import sys
from pathlib import Path

from llm_srt.evaluate.report import load_results
from llm_srt.evaluate.run import hyps_path
from llm_srt.evaluate.significance import paired_bootstrap, paired_bootstrap_runs

CLAIMS = [("curriculum beats plain instruction tuning (Table 3)", "LLM-SRT (this run)", "Baseline (this run)"),
          ("the SMT stage helps SRT (Table 8)", "LLM-SRT (this run)", "LLM-SRT w/o SMT (this run)")]
works = [Path(w) for w in sys.argv[1:]]
seeds = [json.loads((w / "report" / "claims.json").read_text())[0].get("seed", 0) for w in works]
out = []
for claim, a, b in CLAIMS:
    runs = {name: [load_results(hyps_path(w / "report", name)) for w in works] for name in (a, b)}
    print(claim)
    for seed, ra, rb in zip(seeds, runs[a], runs[b]):
        c = paired_bootstrap(ra, rb)
        print(f"  seed {seed}: {c.a:.1f} vs {c.b:.1f} BLEU, delta {c.delta:+.1f} [{c.low:+.1f}, {c.high:+.1f}], "
              f"p = {c.shown_p}: {c.verdict()}")
    c = paired_bootstrap_runs(runs[a], runs[b])
    print(f"  seeds {', '.join(map(str, seeds))} pooled: {c.a:.1f} vs {c.b:.1f} BLEU, delta {c.delta:+.1f} "
          f"[{c.low:+.1f}, {c.high:+.1f}], p = {c.shown_p}: {c.verdict()} ({c.sentences} test sentences x {len(works)} "
          "seeds)")
    out.append({"claim": claim, "system": a, "compared_with": b, "seeds": seeds, "bleu": round(c.a, 2),
                "bleu_compared": round(c.b, 2), "p": round(c.p, 5), "verdict": c.verdict(),
                "delta_ci95": [round(c.low, 2), round(c.high, 2)]})
print(json.dumps(out, indent=2))
