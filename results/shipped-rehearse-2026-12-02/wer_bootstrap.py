"""Paired bootstrap of the transcript WER (the report's English normalization, jiwer) between two systems decoded by
`llm-srt evaluate` on the same rows, resampling source sentences (1,000 resamples, seed 0):

    python results/shipped-rehearse-2026-12-02/wer_bootstrap.py NEW_HYPS.jsonl OLD_HYPS.jsonl
"""
import json, sys
import jiwer, numpy as np
from llm_srt.evaluate.metrics import normalize

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
deltas = np.array(deltas)
p = min(1.0, 2 * min((deltas >= 0).mean(), (deltas <= 0).mean()))
print(f"WER {wer(ca):.1f} vs {wer(cb):.1f} over {len(sentences)} sentences: delta {wer(ca) - wer(cb):+.1f}, 95% interval "
      f"[{np.percentile(deltas, 2.5):+.1f}, {np.percentile(deltas, 97.5):+.1f}], p = {p:.3f}")
