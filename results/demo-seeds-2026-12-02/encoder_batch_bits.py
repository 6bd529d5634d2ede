"""Does a clip's encoder output depend on its batch? The embedded Whisper encoder (as the demo loads it) on the 40
first training rows of data/mini (the 16 longest of them), each of clips 0, 5, 10, 15 encoded alone against inside the
batch of 16, and clip 5 inside two different batches of 16.

    python results/demo-seeds-2026-12-02/encoder_batch_bits.py
"""
import json
import warnings

import torch

from llm_srt.audio import load_audio
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

warnings.simplefilter("ignore")
torch.set_num_threads(2)
rows = [json.loads(line) for line in open("data/mini/train.jsonl")][:40]
audios = sorted((load_audio("data/mini/" + r["audio"]) for r in rows), key=lambda a: -a.size)
for dtype in ("float32", "bfloat16"):
    model = SpeechLLM(SpeechLLMConfig(encoder="embedded", llm="embedded", adapter="linear", dtype=dtype))
    with torch.inference_mode():
        batch, mask = model.encoder.encode(audios[:16])
        other, other_mask = model.encoder.encode(audios[5:21])
        for i in range(0, 16, 5):
            alone = model.encoder.encode([audios[i]])[0][0]
            n = int(mask[i].sum())
            diff = float((alone[:n].float() - batch[i][:n].float()).abs().max())
            print(f"{dtype} clip {i}: alone == in the batch: {torch.equal(alone[:n], batch[i][:n])}, max |diff| {diff:.3g}")
    n = int(mask[5].sum())
    print(f"{dtype} clip 5 in two batches: equal {torch.equal(batch[5][:n], other[0][:n])}")
