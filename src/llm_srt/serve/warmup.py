"""`serve --compile`: the greedy decode steps compiled before the first request, so that none waits for one.

    await batcher.on_model_thread(warm_up, translator, options.batch)   # in the app's start-up (app.py)

For each batch size a batch of requests takes (1, 2, 4, ... up to --max-batch; StaticSteps fills a batch to a
power of two) one batch runs at the longest cache a request can need: a clip of the longest segment
(--max-segment-seconds, at most 30 s) translated with SRT between two languages of the widest script budget
(`widest_pair`), at the server's --max-new-tokens. Later requests of that batch size take
that shape (`StaticSteps.warming`: the shortest served length that holds them, the extra positions masked). Where
that length cannot be static (a sliding window shorter than it, as Gemma-3's), a 1 s clip's batch takes the
longest length that can, and later batch sizes warm that one only.
"""

import threading
import time
from dataclasses import replace

import numpy as np

from .. import languages
from ..audio import SAMPLE_RATE, WINDOW_SECONDS
from ..device import is_out_of_memory
from ..errors import LLMSRTError
from ..infer import SpeechTranslator, error_line, give_back_gpu_memory, item_budget, script_factor
from ..model.decoding import DecodingOptions
from ..model.static_steps import INT8_COMPILED_ROWS, StaticSteps
from ..model.kv_cache import STATIC_LENGTH_STEP
from ..model.llm import causal_lm
from ..model.protocol import Item
from ..model.systems import SpeechLLMSystem
from ..prompts import Task
from .batcher import BatchOptions


def widest_pair() -> tuple[str, str]:
    """The (source, target) of the largest SRT token budget per second: both texts in scripts of the widest factor
    (infer.script_factor: jpn -> kor, the first two of factor 2.5 in the registry; 1,824 tokens for 30 s at the
    default cap, where eng -> jpn has 1,284)."""
    wide = sorted(languages.LANGUAGES, key=lambda code: -script_factor(code))
    return wide[0], wide[1]


def warm_up(translator: SpeechTranslator, options: BatchOptions, log=print,
            stopping: threading.Event | None = None) -> float:
    """Compile the served shapes (see the module's docstring), the largest batch first (it is the likeliest to run
    out of memory, and the smallest ones' caches, the two kept, are the newest); seconds taken. A system without
    compiled steps, a server whose default decoding is beam search, a model that decodes eagerly here (an attention
    kind without a static cache, a step that failed to compile) or a batch that runs no compiled step ends it with
    one line; batch sizes that decode eagerly (int8 beyond INT8_COMPILED_ROWS) are one line and skipped; a batch
    that fails (out of memory) is one line, and the smaller ones go on. The server always starts. `stopping` set
    (the server is told to stop): it ends before its next batch."""
    start = time.perf_counter()
    system = translator.system
    if not isinstance(system, SpeechLLMSystem):
        log(f"--compile: {system.name} has no compiled decode steps to warm up")
        return 0.0
    if options.decoding.beam_size > 1:
        log(f"--compile: only greedy decoding is compiled, and this server decodes with --beam "
            f"{options.decoding.beam_size}: no warm-up")
        return 0.0
    lm = causal_lm(system.model.llm)
    if not StaticSteps.fits(lm, 1, STATIC_LENGTH_STEP):
        log("--compile: this model decodes eagerly here (an attention kind without a static cache, or its step did not "
            "compile): no warm-up")
        return 0.0
    sizes = [options.max_batch] + [1 << k for k in reversed(range(options.max_batch.bit_length()))
                                    if 1 << k < options.max_batch]
    eager = [n for n in sizes if not StaticSteps.fits(lm, n, STATIC_LENGTH_STEP)]
    if eager:
        log(f"--compile: batches of {', '.join(map(str, eager))} decode eagerly (int8 CPU steps compile at "
            f"{INT8_COMPILED_ROWS} row{'s' if INT8_COMPILED_ROWS > 1 else ''} at most: more were slower compiled)")
        sizes = [n for n in sizes if n not in eager]
    seconds = min(WINDOW_SECONDS, options.segment.max_seconds)  # the longest segment a request can have
    noise = np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32) * 0.01
    clips = [noise, noise[:SAMPLE_RATE]]  # the longest request; a short one where the longest cannot be static
    log(f"--compile: compiling the decode steps of batches of {', '.join(map(str, sizes))} before serving")
    with StaticSteps.warming():
        for size in sizes:
            if stopping is not None and stopping.is_set():
                log("--compile: the warm-up was stopped")
                break
            try:
                compiled = _compiled_batch(system, clips[0], size, options.decoding)
                if not compiled and len(clips) > 1:
                    clips = clips[1:]  # the longest cannot be static at any batch size: the short clip from now on
                    compiled = _compiled_batch(system, clips[0], size, options.decoding)
            except Exception as e:  # out of memory, say: the smaller batches may still fit
                error, oom = error_line(e), is_out_of_memory(e)
            else:
                error = None
            if error is not None:  # out of the except block: the traceback's tensors are gone before the release
                if oom:
                    give_back_gpu_memory()  # before the smaller batches run
                log(f"--compile: the warm-up batch of {size} failed ({error}); that batch size compiles when a "
                    "request needs it")
                continue
            if not compiled:
                log(f"--compile: the warm-up batch of {size} ran no compiled step (the model's step did not compile, "
                    "or its outputs ended at once); serving without the rest")
                break
    seconds = time.perf_counter() - start
    log(f"--compile: warmed up in {seconds:.1f} s")
    return seconds


def _compiled_batch(system: SpeechLLMSystem, clip: np.ndarray, size: int, decoding: DecodingOptions) -> bool:
    """Run `size` copies of `clip` as one greedy batch, as a request batch runs (its token budget); whether its
    decode steps ran compiled. A failed row raises."""
    item = Item(clip, *widest_pair(), Task.SRT)
    item = replace(item, max_new_tokens=item_budget(item, decoding.max_new_tokens))
    before = StaticSteps.steps_taken
    outputs = system.run_batch([item] * size, replace(decoding, beam_size=1, max_new_tokens=item.max_new_tokens))
    failed = next((o.error for o in outputs if o.error), None)
    if failed:
        raise LLMSRTError(failed)  # the row's own error line
    return StaticSteps.steps_taken > before
