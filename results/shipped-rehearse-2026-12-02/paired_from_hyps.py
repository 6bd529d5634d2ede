"""Paired bootstrap (evaluate/significance.py, 1,000 resamples) between systems already decoded by `llm-srt
evaluate` on the same manifest, read from their hyps.<name>.jsonl files, each against the first one named.

    R=results/shipped-rehearse-2026-12-02
    python $R/paired_from_hyps.py $R/heldout_paired7/hyps.rehearse7.jsonl $R/heldout_paired/hyps.rehearse4.jsonl \
        $R/heldout_paired/hyps.shipped.jsonl $R/heldout_paired/hyps.Cascade.jsonl
"""
import json, sys
from pathlib import Path
from llm_srt.evaluate.significance import paired_bootstrap

name = lambda path: Path(path).name.removeprefix("hyps.").removesuffix(".jsonl")
first, *others = sys.argv[1:]
rows = {path: [json.loads(line) for line in open(path)] for path in [first, *others]}
for path in others:
    c = paired_bootstrap(rows[path], rows[first], samples=1000)
    print(f"{name(path)} vs {name(first)}: delta {c.delta:+.1f} BLEU, 95% interval [{c.low:+.1f}, {c.high:+.1f}], "
          f"p = {c.p:.3f}, {c.verdict()}")
