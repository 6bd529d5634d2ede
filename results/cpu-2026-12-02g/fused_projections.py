"""Paired timing of the bench's int8 system (fresh Q-Former on the embedded models, EOS pinned, the bench's 16
utterances) with its sibling projections fused ("fused", `int8_linear.fuse_int8_projections`, the default since
2026-12-02 10:30) against the separate int8 layers ("separate"), two models in one process, alternating after a
warm-up pass of each; asserts that both write the same texts.

    python results/cpu-2026-12-02g/fused_projections.py 16 32 8     # batch, new tokens, pairs
"""
import statistics, sys, tempfile, time, warnings
from pathlib import Path
import torch
from llm_srt import device as dev
from llm_srt.bench.common import pin_eos
from llm_srt.bench.embedded import BenchOptions, _int8_model, load_utterances
from llm_srt.model import int8_linear, llm as llm_mod, speech_llm as sl_mod
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
state = fresh.adapter.state_dict()
folders = (fresh.config.encoder, fresh.config.llm)
del fresh
systems = {}
real = llm_mod.fuse_int8_projections
for mode in ("separate", "fused"):
    llm_mod.fuse_int8_projections = sl_mod.fuse_int8_projections = real if mode == "fused" else (lambda m: 0)
    model = _int8_model(folders, state, dev.resolve("cpu", "float32"), options)
    pin_eos(model)
    model.encoder
    systems[mode] = SpeechLLMSystem(model, mode, dev.resolve("cpu", "int8"))
print({k: sum(isinstance(m, int8_linear.Int8Part) for m in s.model.modules()) for k, s in systems.items()})
decoding = DecodingOptions(max_new_tokens=tokens)
def run(mode):
    texts, start = [], time.perf_counter()
    for s in range(0, len(utts), batch):
        outputs = systems[mode].run_batch([Item(u.audio, "eng", "deu", Task.SRT) for u in utts[s:s + batch]], decoding)
        texts += [(o.transcript, o.translation) for o in outputs]
    return time.perf_counter() - start, texts
with torch.inference_mode():
    run("separate"), run("fused")
    seconds, texts = {"separate": [], "fused": []}, {}
    for pair in range(pairs):
        for mode in ("separate", "fused") if pair % 2 == 0 else ("fused", "separate"):
            t, texts[mode] = run(mode); seconds[mode].append(t)
assert texts["separate"] == texts["fused"], "texts differ"
print(f"batch {batch}, {tokens} tokens:", {k: (round(statistics.median(v), 3), [round(x, 2) for x in v]) for k, v in seconds.items()}, "texts identical")
