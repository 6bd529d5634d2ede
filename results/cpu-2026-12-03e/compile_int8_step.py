"""Where a compiled int8 decode step's time goes (`--dtype int8 --compile`, 2026-12-03): the embedded Gemma-3-270M
with int8 layers decoding greedily after a prompt of 100 random embeddings, on the static cache compiled
(`decoding.StaticSteps`) against the growing cache eager (`decoding.GrowingSteps`, what greedy decoding runs without
--compile), taking turns, then a torch.profiler pass over 10 compiled steps with Inductor's kernels named.

    python results/cpu-2026-12-03e/compile_int8_step.py 1      # batch; ~1 min (the compile takes ~30 s)
"""
import sys
import time
import warnings

import torch
import torch._inductor.config as inductor_config
from torch.profiler import ProfilerActivity, profile

from llm_srt.model.decoding import GrowingSteps, StaticSteps, last_argmax
from llm_srt.model.llm import causal_lm
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

warnings.simplefilter("ignore")
torch.set_num_threads(2)
inductor_config.cpp.enable_kernel_profile = True  # the compiled kernels by name in the profile
BATCH, PROMPT, STEPS = int(sys.argv[1]), 100, 30
lm = causal_lm(SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype="int8")).llm)
lm.eval()
embeds = torch.randn(BATCH, PROMPT, lm.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
mask = torch.ones(BATCH, PROMPT, dtype=torch.long)


def decode(make) -> tuple[float, list[int]]:
    steps = make(lm, embeds, mask, STEPS + 8)
    token, tokens = last_argmax(steps.logits), []
    start = time.perf_counter()
    for _ in range(STEPS):
        token = last_argmax(steps.step(token))
        tokens.append(int(token[0]))
    ms = (time.perf_counter() - start) / STEPS * 1000
    if make is StaticSteps:
        steps.close()
    return ms, tokens


with torch.inference_mode():
    start = time.perf_counter()
    decode(StaticSteps)
    print(f"batch {BATCH}: the first compiled generation (its compile) {time.perf_counter() - start:.1f} s")
    for turn in range(3):
        (compiled, a), (eager, b) = decode(StaticSteps), decode(GrowingSteps)
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        print(f"turn {turn + 1}: compiled {compiled:.1f} ms a step, eager {eager:.1f}; row 0's first {same} of {STEPS} "
              "tokens the same")
    steps = StaticSteps(lm, embeds, mask, STEPS + 8)
    token = last_argmax(steps.logits)
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(10):
            token = last_argmax(steps.step(token))
    steps.close()
    def group(key: str) -> str:
        if key.startswith("quantized::"):
            return "int8 products (fbgemm)"
        if key.startswith("graph_"):
            return "compiled kernels (Inductor)"
        if "scaled_dot_product" in key:
            return "attention (torch's SDPA)"
        return "dynamo's guards" if key == "TorchDynamo Cache Lookup" else "the rest"

    ms: dict[str, float] = {}
    for event in p.key_averages():
        ms[group(event.key)] = ms.get(group(event.key), 0.0) + event.self_cpu_time_total / 10 / 1000
    print("compiled step, profiled (self CPU ms a step): " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
          + f"; {sum(ms.values()):.1f} in all")
