"""Where a greedy decode step of the embedded Gemma-3-270M goes: torch.profiler over STEPS steps after a prompt of
130 random embeddings (the in-place cache and blocked argmax `greedy_ids` uses), self CPU time per step grouped into
the linear products, attention and everything else (norms, rotary, residual adds, casts: the layers' small ops), and
what the ops leave of the step's wall time.

    python results/cpu-2026-12-03c/profile_step.py int8 1      # dtype (float32 | bfloat16 | int8), batch
"""
import sys
import time
import warnings
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from llm_srt.model import kv_cache
from llm_srt.model.decoding import last_argmax
from llm_srt.model.llm import causal_lm
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

warnings.simplefilter("ignore")
torch.set_num_threads(2)
dtype, batch = sys.argv[1], int(sys.argv[2])
lm = causal_lm(SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype=dtype)).llm).eval()
PROMPT, STEPS = 130, 24
embeds = torch.randn(batch, PROMPT, lm.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
if dtype != "int8":
    embeds = embeds.to(next(lm.parameters()).dtype)
mask = torch.ones(batch, PROMPT, dtype=torch.long)
GROUPS = (("linear products", ("quantized::", "onednn::", "mkldnn::_linear", "aten::addmm", "aten::mm",
                               "aten::linear", "aten::matmul", "aten::bmm")),
          ("attention", ("scaled_dot_product",)))


def prompt():
    cache = kv_cache.growing_cache(lm.config, STEPS + 1)
    positions = torch.arange(PROMPT)[None].expand(batch, PROMPT)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
             use_cache=True, logits_to_keep=1)
    return cache, last_argmax(out.logits), positions[:, -1:] + 1


def steps(cache, token, position):
    m = torch.cat([mask, mask.new_ones(batch, STEPS)], 1)
    for i in range(STEPS):
        out = lm(input_ids=token[:, None], attention_mask=m[:, :PROMPT + i + 1], position_ids=position,
                 past_key_values=cache, use_cache=True)
        position, token = position + 1, last_argmax(out.logits)


with torch.inference_mode():
    walls = []
    for _ in range(3):
        state = prompt()
        start = time.perf_counter()
        steps(*state)
        walls.append((time.perf_counter() - start) / STEPS * 1000)
    state = prompt()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        steps(*state)
    ms = defaultdict(float)
    for event in p.key_averages():
        group = next((g for g, keys in GROUPS if any(k in event.key for k in keys)), "everything else")
        ms[group] += event.self_cpu_time_total / 1000 / STEPS
    total, wall = sum(ms.values()), min(walls)
    print(f"{dtype} batch {batch}: {', '.join(f'{w:.1f}' for w in walls)} ms a step (3 runs of {STEPS} steps, "
          f"unprofiled); profiled, self CPU ms a step: " + ", ".join(f"{g} {v:.1f}"
                                                                     for g, v in sorted(ms.items(), key=lambda x: -x[1]))
          + f"; ops {total:.1f} in all; the fastest unprofiled step less them: {wall - total:.1f} (Python and HF's "
          "layer code between the ops, less the profiler's own overhead on them)")
