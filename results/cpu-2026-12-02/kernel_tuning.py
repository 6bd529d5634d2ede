"""Paired: float32 greedy decode of the embedded Gemma with fast_linear's kernel tuning off (the rule) and on, in one
process, alternating (off, on, off, on), at batch 1 / 4 / 16 (100-token random prompts, 33 steps after 8 to warm
up); prints ms per decode step and whether both give the same tokens.

    python results/cpu-2026-12-02/kernel_tuning.py
"""
import json
import time

import torch

from llm_srt.model import cpu_linear
from llm_srt.model.decoding import greedy_ids
from llm_srt.model.llm import causal_lm, load_llm
from llm_srt.paths import embedded_llm_dir

torch.set_num_threads(2)
model, _ = load_llm(embedded_llm_dir(), dtype="float32")
lm = causal_lm(model)
tokens, times = {}, {}
for rnd, tuning in enumerate((False, True, False, True)):
    cpu_linear.KERNEL_TUNING = tuning
    for b in (1, 4, 16):
        torch.manual_seed(b)
        ids = torch.randint(10, 5000, (b, 100))
        with torch.inference_mode():
            emb = lm.get_input_embeddings()(ids)
            mask = torch.ones(b, 100, dtype=torch.long)
            greedy_ids(model, emb, mask, 8, eos=[-1])  # warm-up (and, tuning on, the first call's timings)
            start = time.perf_counter()
            out = greedy_ids(model, emb, mask, 33, eos=[-1])
            times.setdefault((tuning, b), []).append(round((time.perf_counter() - start) * 1e3 / 33, 1))
        tokens.setdefault(b, []).append(out)
for b in (1, 4, 16):
    print(f"batch {b:2d}: rule {times[(False, b)]} ms/step, tuned {times[(True, b)]} ms/step; "
          f"same tokens: {all(t == tokens[b][0] for t in tokens[b])}")
print("tuned kernels:", json.dumps({str(k): v for k, v in sorted(cpu_linear.TUNED.items())}))
