"""Minor page faults of a batch-16 int8 prefill of the embedded Gemma-3-270M (16 rows x 98 positions, random
embeddings) under glibc heap settings: M_MMAP_THRESHOLD / M_TRIM_THRESHOLD in MiB (0 0: glibc's own dynamic
thresholds), mean of 3 prefills after 3 untimed. The counts do not depend on how busy the machine is; the seconds do.

    for s in "0 0" "16 64" "64 128"; do python results/cpu-2026-12-07b/prefill_faults.py $s; done
"""
import ctypes, sys, time, warnings, resource, torch
warnings.simplefilter("ignore")
torch.set_num_threads(2)
libc = ctypes.CDLL("libc.so.6")
mm, tr = int(sys.argv[1]), int(sys.argv[2])
if mm:
    libc.mallopt(-3, mm << 20); libc.mallopt(-1, tr << 20)
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model.llm import causal_lm
m = SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype="int8")).eval()
lm = causal_lm(m.llm)
x = torch.randn(16, 98, 640) * 0.02
mask = torch.ones(16, 98, dtype=torch.long)
def flt(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    for _ in range(3): lm(inputs_embeds=x, attention_mask=mask, use_cache=True, logits_to_keep=1)
    f0, t0 = flt(), time.perf_counter()
    for _ in range(3): lm(inputs_embeds=x, attention_mask=mask, use_cache=True, logits_to_keep=1)
    f1, t1 = flt(), time.perf_counter()
print(f"mallopt {mm} {tr}: minor faults per prefill {(f1 - f0) / 3:.0f}, {(t1 - t0) / 3:.3f} s, maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
