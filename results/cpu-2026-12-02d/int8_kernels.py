"""Paired timing of the bench's int8 system (fresh Q-Former on the embedded models, EOS pinned, the bench's 16
utterances) with fbgemm alone ("fbgemm") against oneDNN's int8 product for inputs of more than INT8_MANY_ROWS rows
where timed faster ("tuned", the default since 2026-12-02), alternating in one process after a warm-up pass of each;
asserts that both write the same texts.

    python results/cpu-2026-12-02d/int8_kernels.py 16 32 4     # batch, new tokens (1: encoder, adapter, prefill), pairs
"""
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from llm_srt import device as dev
from llm_srt.bench.common import pin_eos
from llm_srt.bench.embedded import BenchOptions, _int8_model, load_utterances
from llm_srt.model import int8_linear
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model.protocol import Item
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.prompts import Task

warnings.simplefilter("ignore")
torch.set_num_threads(2)
batch, tokens, pairs = (int(a) for a in sys.argv[1:4])
options = BenchOptions(model=None)
with tempfile.TemporaryDirectory() as tmp:
    utts = sorted(load_utterances(options, Path(tmp)), key=lambda u: -u.audio.size)
torch.manual_seed(options.seed)
fresh = SpeechLLM(SpeechLLMConfig(encoder=options.encoder, llm=options.llm, adapter="qformer",
                                  adapter_kwargs=dict(options.adapter_kwargs)))
model = _int8_model((fresh.config.encoder, fresh.config.llm), fresh.adapter.state_dict(), dev.resolve("cpu", "float32"),
                    options)
del fresh
pin_eos(model)
system = SpeechLLMSystem(model, "llm-srt-int8", dev.resolve("cpu", "int8"))
decoding = DecodingOptions(max_new_tokens=tokens)


def run(mode: str):
    int8_linear._ONEDNN_INT8 = mode == "tuned"
    texts, start = [], time.perf_counter()
    for s in range(0, len(utts), batch):
        outputs = system.run_batch([Item(u.audio, "eng", "deu", Task.SRT) for u in utts[s:s + batch]], decoding)
        assert not any(o.error for o in outputs), [o.error for o in outputs]
        texts += [(o.transcript, o.translation) for o in outputs]
    return time.perf_counter() - start, texts


available = int8_linear._ONEDNN_INT8
assert available, "this torch has no oneDNN int8 product"
with torch.inference_mode():
    run("fbgemm"), run("tuned")  # warm-up (and the kernel timings)
    seconds, texts = {"fbgemm": [], "tuned": []}, {}
    for pair in range(pairs):
        for mode in ("fbgemm", "tuned") if pair % 2 == 0 else ("tuned", "fbgemm"):
            t, texts[mode] = run(mode)
            seconds[mode].append(t)
assert texts["fbgemm"] == texts["tuned"], "the texts differ"
chosen = sorted({k[2] for k, v in int8_linear.TUNED_INT8.items() if v == "oneDNN"})
print(f"batch {batch}, {tokens} tokens, seconds per pass of {len(utts)} utterances, median of {pairs} (all): "
      + "; ".join(f"{k} {statistics.median(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})" for k, v in seconds.items())
      + f"; texts identical; oneDNN chosen for {sum(v == 'oneDNN' for v in int8_linear.TUNED_INT8.values())} of "
      f"{len(int8_linear.TUNED_INT8)} (shape, bucket) timings, buckets {chosen}")
