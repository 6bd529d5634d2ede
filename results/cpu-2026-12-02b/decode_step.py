"""Paired timing of greedy decode steps of the embedded Gemma-3-270M: HF's DynamicCache + torch's argmax ("old")
against the in-place cache + blocked argmax that `greedy_ids` uses since 2026-12-02 ("new"), alternating in one
process, same random prompt embeddings (batch x 130 positions), 24 steps each; asserts the tokens are identical.

    python results/cpu-2026-12-02b/decode_step.py int8 16 8      # dtype, batch, pairs
"""
import statistics
import sys
import time
import warnings

import torch
from transformers.cache_utils import DynamicCache

from llm_srt.model import kv_cache
from llm_srt.model.decoding import last_argmax
from llm_srt.model.llm import causal_lm
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

warnings.simplefilter("ignore")
torch.set_num_threads(2)
dtype, batch, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = causal_lm(SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype=dtype)).llm).eval()
PROMPT, STEPS = 130, 24
embeds = torch.randn(batch, PROMPT, lm.config.hidden_size) * 0.02
if dtype != "int8":
    embeds = embeds.to(next(lm.parameters()).dtype)
mask = torch.ones(batch, PROMPT, dtype=torch.long)


def run(kind: str):
    new = kind == "new"
    cache = kv_cache.growing_cache(lm.config, STEPS + 1) if new else DynamicCache(config=lm.config)
    argmax = last_argmax if new else (lambda logits: logits[:, -1].argmax(-1))
    positions = torch.arange(PROMPT)[None].expand(batch, PROMPT)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
             logits_to_keep=1)
    token, m, position, tokens = argmax(out.logits), mask, positions[:, -1:] + 1, []
    start = time.perf_counter()
    for _ in range(STEPS):
        m = torch.cat([m, m.new_ones(batch, 1)], 1)
        out = lm(input_ids=token[:, None], attention_mask=m, position_ids=position, past_key_values=cache,
                 use_cache=True)
        position, token = position + 1, argmax(out.logits)
        tokens.append(token)
    return (time.perf_counter() - start) / STEPS * 1000, torch.stack(tokens)


with torch.inference_mode():
    run("old"), run("new")  # warm-up
    ms, tokens = {"old": [], "new": []}, {}
    for pair in range(pairs):
        for kind in ("old", "new") if pair % 2 == 0 else ("new", "old"):
            t, tokens[kind] = run(kind)
            ms[kind].append(t)
    assert torch.equal(tokens["old"], tokens["new"]), "the tokens differ"
    print(f"{dtype} batch {batch}, ms per step, median of {pairs} (all): "
          + "; ".join(f"{k} {statistics.median(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})" for k, v in ms.items())
          + "; tokens identical")
