"""One process of a paired comparison of glibc heap settings for int8 CPU inference (2026-12-07, late): sets
M_MMAP_THRESHOLD / M_TRIM_THRESHOLD to the MiB given (0 0: glibc's own dynamic thresholds), then times the bench's
system (a fresh Q-Former on the embedded models, int8, EOS pinned, the bench's 16 utterances) through `run_batch` at
batch 16 and at batch 1 after a warm-up pass of each, and prints the seconds and the process's peak RSS.

    for s in "0 0" "16 64" "256 256"; do python results/cpu-2026-12-07b/heap_settings.py $s 32; done
"""
import ctypes, resource, sys, tempfile, time, warnings
from pathlib import Path
mmap_mib, trim_mib, tokens = (int(a) for a in sys.argv[1:4])
if mmap_mib:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, mmap_mib << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, trim_mib << 20)  # M_TRIM_THRESHOLD
import torch
from llm_srt import device as dev
from llm_srt.bench.common import pin_eos
from llm_srt.bench.embedded import BenchOptions, _int8_model, load_utterances
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model.protocol import Item
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.prompts import Task
warnings.simplefilter("ignore")
torch.set_num_threads(2)
options = BenchOptions(model=None)
with tempfile.TemporaryDirectory() as tmp:
    utts = load_utterances(options, Path(tmp))
torch.manual_seed(options.seed)
model = SpeechLLM(SpeechLLMConfig(encoder=options.encoder, llm=options.llm, adapter="qformer",
                                  adapter_kwargs=dict(options.adapter_kwargs)))
model = _int8_model((model.config.encoder, model.config.llm), model.adapter.state_dict(),
                    dev.resolve("cpu", "float32"), options)
pin_eos(model)
system = SpeechLLMSystem(model, "bench", dev.resolve("cpu", "int8"))
decoding = DecodingOptions(max_new_tokens=tokens)


def run(batch):
    start = time.perf_counter()
    for s in range(0, len(utts), batch):
        system.run_batch([Item(u.audio, "eng", "deu", Task.SRT) for u in utts[s:s + batch]], decoding)
    return time.perf_counter() - start


with torch.inference_mode():
    run(16), run(1)
    b16, b1 = run(16), run(1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"heap {mmap_mib} {trim_mib} MiB: batch 16 {b16:.3f} s, batch 1 {b1:.3f} s, 1/16 {b1 / b16:.2f}x, "
      f"peak RSS {peak:.0f} MiB", flush=True)
