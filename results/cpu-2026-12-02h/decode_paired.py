"""Paired timing of two decode-path changes of 2026-12-02 (evening) on the bench's system (fresh Q-Former on the
embedded models, EOS pinned, the bench's 16 utterances), one model, the two settings alternating after a warm-up
pass of each; asserts that both write the same texts.

    python results/cpu-2026-12-02h/decode_paired.py attention int8 16 32 6     # change, dtype, batch, tokens, pairs
    python results/cpu-2026-12-02h/decode_paired.py int8rows int8 8 32 4 5      # ... beam size

`attention`: HF's "sdpa" ("before") against `attention.decode_attention` ("after"), set on the same model.
`int8rows`: Int8Linear's oneDNN timing from more than 256 rows ("before") against from more than 16 ("after").
"""
import statistics, sys, tempfile, time, warnings
from pathlib import Path
import torch
from llm_srt import device as dev
from llm_srt.bench.common import pin_eos
from llm_srt.bench.embedded import BenchOptions, _int8_model, load_utterances
from llm_srt.model import attention, int8_linear
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model.protocol import Item
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.prompts import Task
warnings.simplefilter("ignore")
torch.set_num_threads(2)
change, dtype = sys.argv[1], sys.argv[2]
batch, tokens, pairs = (int(a) for a in sys.argv[3:6])
beams = int(sys.argv[6]) if len(sys.argv) > 6 else 1
options = BenchOptions(model=None)
with tempfile.TemporaryDirectory() as tmp:
    utts = sorted(load_utterances(options, Path(tmp)), key=lambda u: -u.audio.size)
torch.manual_seed(options.seed)
model = SpeechLLM(SpeechLLMConfig(encoder=options.encoder, llm=options.llm, adapter="qformer",
                                  adapter_kwargs=dict(options.adapter_kwargs)))
if dtype == "int8":
    model = _int8_model((model.config.encoder, model.config.llm), model.adapter.state_dict(),
                        dev.resolve("cpu", "float32"), options)
pin_eos(model)
system = SpeechLLMSystem(model, "bench", dev.resolve("cpu", dtype))
config = model.llm.config if hasattr(model.llm, "config") else model.llm.base_model.config


def setting(kind):
    if change == "attention":
        config._attn_implementation = attention.NAME if kind == "after" else "sdpa"
    else:
        int8_linear.INT8_MANY_ROWS = 16 if kind == "after" else 256


decoding = DecodingOptions(max_new_tokens=tokens, beam_size=beams)


def run(kind):
    setting(kind)
    texts, start = [], time.perf_counter()
    for s in range(0, len(utts), batch):
        outputs = system.run_batch([Item(u.audio, "eng", "deu", Task.SRT) for u in utts[s:s + batch]], decoding)
        texts += [(o.transcript, o.translation) for o in outputs]
    return time.perf_counter() - start, texts


with torch.inference_mode():
    run("before"), run("after")
    seconds, texts = {"before": [], "after": []}, {}
    for pair in range(pairs):
        for kind in ("before", "after") if pair % 2 == 0 else ("after", "before"):
            t, texts[kind] = run(kind)
            seconds[kind].append(t)
if __name__ != "__main__":  # imported for a profile: see PROFILE below
    from torch.profiler import profile
    with torch.inference_mode():
        for kind in ("before", "after", "before", "after"):
            with profile() as prof:
                t, _ = run(kind)
            print(kind, round(t, 3))
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    raise SystemExit
same = sum(a == b for a, b in zip(texts["before"], texts["after"]))
print(f"{change}, {dtype}, batch {batch}, beam {beams}, {tokens} tokens, seconds for 16 utterances, median of "
      f"{pairs} (all):", {k: (round(statistics.median(v), 3), [round(x, 2) for x in v]) for k, v in seconds.items()},
      f"the same texts for {same} of {len(utts)} utterances", flush=True)
assert dtype == "int8" or same == len(utts), "float32 texts differ"
