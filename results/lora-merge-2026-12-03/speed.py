"""The shipped SRT model with its LoRA kept apart and merged (`SpeechLLM.from_pretrained(merge_lora=...)`), taking
turns on the first 16 held-out rows (greedy, at most 96 new tokens): seconds per pass and how many outputs agree.

    python results/lora-merge-2026-12-03/speed.py DTYPE BATCH PASSES [MANIFEST]
"""
import sys
import time

import torch

from llm_srt import device as dev
from llm_srt.audio import load_audio
from llm_srt.data.manifest import read_manifest
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.speech_llm import SpeechLLM
from llm_srt.model.protocol import Item
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.prompts import Task

dtype, batch, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = sys.argv[4] if len(sys.argv) > 4 else "data/mini_voices_p/heldout_srt120.jsonl"
torch.set_num_threads(2)
rows = read_manifest(manifest)[:16]
items = [Item(load_audio(r.audio), r.src_lang, r.tgt_lang, Task.SRT) for r in rows]
options = DecodingOptions(max_new_tokens=96)
systems = {name: SpeechLLMSystem(SpeechLLM.from_pretrained("checkpoints/embedded/srt", device="cpu", dtype=dtype,
                                                           merge_lora=name == "merged").eval(),
                                 name, dev.resolve("cpu", dtype))
           for name in ("apart", "merged")}


def run(system):
    start, outs = time.perf_counter(), []
    for i in range(0, len(items), batch):
        outs += system.run_batch(items[i:i + batch], options)
    return time.perf_counter() - start, [(o.transcript, o.translation) for o in outs]


for system in systems.values():
    run(system)  # warm-up (kernel timings)
seconds, outputs = {name: [] for name in systems}, {}
for turn in range(passes):
    for name in systems if turn % 2 == 0 else list(systems)[::-1]:
        s, outputs[name] = run(systems[name])
        seconds[name].append(round(s, 2))
median = {name: sorted(v)[len(v) // 2] for name, v in seconds.items()}
same = sum(a == b for a, b in zip(outputs["apart"], outputs["merged"]))
print(f"{dtype} batch {batch}: {seconds}; median apart {median['apart']} s, merged {median['merged']} s "
      f"({median['apart'] / median['merged']:.2f}x); the same outputs {same} of {len(items)}")
