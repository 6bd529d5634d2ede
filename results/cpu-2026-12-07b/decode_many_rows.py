"""Paired timing of Int8Linear's kernel choice from 2 rows (2026-12-07, late) on the bench's system (a fresh Q-Former
on the embedded models, int8, EOS pinned, the bench's 16 utterances): "before" runs fbgemm untimed up to 16 rows (as
until then), "after" times fbgemm against oneDNN from 2 rows (`int8_linear.INT8_MANY_ROWS` 16 -> 1). One model, the
two settings alternating after a warm-up pass of each, at each batch size given; asserts that both write the same
texts (the two kernels' outputs are the same bit for bit).

    python results/cpu-2026-12-07b/decode_many_rows.py 32 3 1 16     # tokens, pairs, batch sizes...
"""
import statistics, sys
import torch
from llm_srt.model import int8_linear
from bench_system import int8_bench_system, timed_pass
tokens, pairs = int(sys.argv[1]), int(sys.argv[2])
batches = [int(b) for b in sys.argv[3:]]
system, model, utts = int8_bench_system()


def run(kind, batch):
    int8_linear.INT8_MANY_ROWS = 16 if kind == "before" else 1
    return timed_pass(system, utts, batch, tokens)


with torch.inference_mode():
    seconds = {(k, b): [] for b in batches for k in ("before", "after")}
    texts = {}
    for b in batches:
        run("before", b), run("after", b)
    for pair in range(pairs):
        for b in batches:
            for kind in ("before", "after") if pair % 2 == 0 else ("after", "before"):
                t, texts[kind, b] = run(kind, b)
                seconds[kind, b].append(t)
median = {key: statistics.median(v) for key, v in seconds.items()}
for b in batches:
    same = sum(x == y for x, y in zip(texts["before", b], texts["after", b]))
    print(f"int8, batch {b}, {tokens} tokens, seconds for {len(utts)} utterances, median of {pairs} (all): "
          + ", ".join(f"{k} {median[k, b]:.3f} {[round(x, 2) for x in seconds[k, b]]}" for k in ("before", "after"))
          + f"; the same texts for {same} of {len(utts)}", flush=True)
    assert same == len(utts), "the texts differ"
if 1 in batches:
    for b in batches:
        if b != 1:
            print(f"batch 1 / batch {b}: " + ", ".join(f"{k} {median[k, 1] / median[k, b]:.2f}x"
                                                     for k in ("before", "after")))
