"""Paired bootstrap of the transcript WER (the report's normalization, jiwer) between two systems decoded by
`llm-srt evaluate` on the same rows, resampling source sentences (1,000 resamples, seed 0); the p-value and interval
are evaluate/significance.py's (`_compare`: the test `llm-srt evaluate --significance` applies to BLEU):

    python results/shipped-rehearse-2026-12-02/wer_bootstrap.py NEW_HYPS.jsonl OLD_HYPS.jsonl
"""
import json, sys
import jiwer, numpy as np
from llm_srt.evaluate.metrics import normalize
from llm_srt.evaluate.significance import _compare

a, b = ([json.loads(line) for line in open(p)] for p in sys.argv[1:3])
assert [r["id"] for r in a] == [r["id"] for r in b]
sentences = sorted({r["id"].rsplit(":", 1)[0] for r in a})
index = {s: i for i, s in enumerate(sentences)}


def counts(rows):  # per sentence: (word errors, reference words), summed over its rows
    out = np.zeros((len(sentences), 2))
    for r in rows:
        ref, hyp = normalize(r["ref_transcript"], r["src"]), normalize(r["hyp_transcript"] or "", r["src"])
        o = jiwer.process_words(ref, hyp)
        out[index[r["id"].rsplit(":", 1)[0]]] += (o.substitutions + o.deletions + o.insertions, len(ref.split()))
    return out


ca, cb = counts(a), counts(b)
wer = lambda c: 100 * c[:, 0].sum() / c[:, 1].sum()
rng = np.random.default_rng(0)
deltas = []
for _ in range(1000):
    k = rng.integers(0, len(sentences), len(sentences))
    deltas.append(wer(ca[k]) - wer(cb[k]))
c = _compare(wer(ca), wer(cb), np.array(deltas), len(sentences))
print(f"WER {c.a:.1f} vs {c.b:.1f} over {len(sentences)} sentences: delta {c.delta:+.1f}, 95% interval "
      f"[{c.low:+.1f}, {c.high:+.1f}], p = {c.p:.3f}")
