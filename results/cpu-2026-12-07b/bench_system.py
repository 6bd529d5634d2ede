"""The system this folder's scripts time, as `llm-srt bench` builds its int8 rows: a fresh Q-Former (the bench's seed)
on the embedded models, every linear layer int8, EOS pinned (every utterance runs its whole token budget), and the
bench's 16 utterances; 2 torch threads. Imported by decode_many_rows.py, encoder_passes.py and heap_settings.py
(run from the repository root: `python results/cpu-2026-12-07b/NAME.py ...` puts this folder on sys.path)."""
import tempfile
import time
import warnings
from pathlib import Path

import torch

from llm_srt import device as dev
from llm_srt.bench.common import pin_eos
from llm_srt.bench.embedded import BenchOptions, _int8_model, load_utterances
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Item
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.prompts import Task


def int8_bench_system():
    """(system, its model, the utterances)."""
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
    return SpeechLLMSystem(model, "bench", dev.resolve("cpu", "int8")), model, utts


def timed_pass(system, utts, batch: int, tokens: int) -> tuple[float, list[tuple[str, str]]]:
    """Seconds to run every utterance through `run_batch` (SRT, eng -> deu) in batches of `batch`, and the texts."""
    decoding = DecodingOptions(max_new_tokens=tokens)
    texts, start = [], time.perf_counter()
    for s in range(0, len(utts), batch):
        outputs = system.run_batch([Item(u.audio, "eng", "deu", Task.SRT) for u in utts[s:s + batch]], decoding)
        texts += [(o.transcript, o.translation) for o in outputs]
    return time.perf_counter() - start, texts
