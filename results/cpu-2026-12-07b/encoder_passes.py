"""Paired timing of the CPU encoder's passes (2026-12-07, late): "before" runs a batch in passes of as many clips,
in the batch's order, as fit CPU_ENCODER_FRAMES at the batch's longest clip (as until then); "after" takes the clips
longest first and cuts each pass to its own longest (`WhisperEncoder.cpu_passes`). On the bench's system (a fresh
Q-Former on the embedded models, EOS pinned, the bench's 16 utterances of 1.3-5.5 s), the two settings alternating
after a warm-up pass of each: the encoder alone on the 16 clips, and int8 `run_batch` at each batch size given.

    python results/cpu-2026-12-07b/encoder_passes.py 32 3 1 16     # tokens, pairs, batch sizes...
"""
import statistics, sys, time
import torch
from llm_srt.model import encoder as encoder_module
from bench_system import int8_bench_system, timed_pass
tokens, pairs = int(sys.argv[1]), int(sys.argv[2])
batches = [int(b) for b in sys.argv[3:]]
system, model, utts = int8_bench_system()
after = encoder_module.WhisperEncoder.cpu_passes


def before(self, mel, mel_mask):
    take = max(1, encoder_module.CPU_ENCODER_FRAMES // max(1, (mel.shape[-1] + 1) // 2))
    return [(torch.arange(len(mel))[s:s + take], mel.shape[-1]) for s in range(0, len(mel), take)]


def use(kind):
    encoder_module.WhisperEncoder.cpu_passes = before if kind == "before" else after


def run(kind, batch):
    use(kind)
    if batch == 0:  # the encoder alone, all clips in one call
        start = time.perf_counter()
        model.encoder.encode([u.audio for u in utts])
        return time.perf_counter() - start, None
    return timed_pass(system, utts, batch, tokens)


with torch.inference_mode():
    runs = [0] + batches
    seconds = {(k, b): [] for b in runs for k in ("before", "after")}
    texts = {}
    for b in runs:
        run("before", b), run("after", b)
    for pair in range(pairs):
        for b in runs:
            for kind in ("before", "after") if pair % 2 == 0 else ("after", "before"):
                t, texts[kind, b] = run(kind, b)
                seconds[kind, b].append(t)
median = {key: statistics.median(v) for key, v in seconds.items()}
for b in runs:
    what = "the encoder alone, 16 clips in one call" if b == 0 else f"int8 run_batch, batch {b}, {tokens} tokens"
    same = "" if b == 0 else "; the same texts for %d of %d" % (
        sum(x == y for x, y in zip(texts["before", b], texts["after", b])), len(utts))
    print(f"{what}, seconds, median of {pairs} (all): "
          + ", ".join(f"{k} {median[k, b]:.3f} {[round(x, 3) for x in seconds[k, b]]}" for k in ("before", "after"))
          + same, flush=True)
if 1 in batches:
    for b in batches:
        if b != 1:
            print(f"batch 1 / batch {b}: " + ", ".join(f"{k} {median[k, 1] / median[k, b]:.2f}x"
                                                     for k in ("before", "after")))
