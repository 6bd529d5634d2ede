"""Paired decode-step timing of the embedded Gemma-3-270M (random prompt embeddings, batch x 90 positions, 32
greedy steps, in-place cache), one model, "before" and "after" alternating after a warm-up of each; medians in ms
per step, and whether the tokens are the same.

    python results/cpu-2026-12-02h/decode_steps.py attention int8 16 5     # change, dtype, batch, pairs

`attention`: HF's "sdpa" ("before") against `attention.decode_attention` ("after").
`norms`: HF's Gemma3RMSNorm forward ("before") against `llm.fast_cpu_norms`' F.rms_norm ("after").
"""
import torch, time, warnings, sys, statistics
warnings.simplefilter("ignore")
from llm_srt.model.llm import causal_lm
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model import attention, kv_cache, llm
from llm_srt.model.decoding import last_argmax
torch.set_num_threads(2)
change, dtype, B, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lm = causal_lm(SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype=dtype)).llm).eval()
P, S = 90, 32
norms = [m for m in lm.modules() if isinstance(m, llm._FastRMSNorm)]
fast = type(norms[0])
base = fast.__mro__[2]
assert base.__name__ == 'Gemma3RMSNorm'
torch.manual_seed(0)
embeds = torch.randn(B, P, lm.config.hidden_size) * 0.05
def run(kind):
    if change == "attention":
        lm.config._attn_implementation = attention.NAME if kind == "after" else "sdpa"
    else:
        for module in norms:
            module.__class__ = fast if kind == "after" else base
    cache = kv_cache.growing_cache(lm.config, S + 1)
    pos = torch.arange(P)[None].expand(B, P); m = torch.ones(B, P, dtype=torch.long)
    out = lm(inputs_embeds=embeds, attention_mask=m, position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=1)
    tok, p, toks = last_argmax(out.logits), pos[:, -1:] + 1, []
    t = time.perf_counter()
    for _ in range(S):
        m = torch.cat([m, m.new_ones(B, 1)], 1)
        out = lm(input_ids=tok[:, None], attention_mask=m, position_ids=p, past_key_values=cache, use_cache=True)
        p, tok = p + 1, last_argmax(out.logits); toks.append(tok)
    return (time.perf_counter() - t) / S * 1e3, torch.stack(toks)
with torch.inference_mode():
    run("before"); run("after")
    ms = {"before": [], "after": []}; toks = {}
    for i in range(pairs):
        for kind in (("before", "after") if i % 2 == 0 else ("after", "before")):
            t, toks[kind] = run(kind); ms[kind].append(t)
print(change, dtype, B, {k: (round(statistics.median(v), 1), [round(x, 1) for x in v]) for k, v in ms.items()}, "same tokens", torch.equal(toks["before"], toks["after"]))
