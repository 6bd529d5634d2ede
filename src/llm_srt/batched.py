"""Run a system on work items in batches: each item's output-length budget (its duration and scripts, or its text's
length), batches formed longest first, and a failed batch retried in halves down to single rows (an out-of-memory
error remembered per system, so a too-large batch size is paid for once). infer.py's `SpeechTranslator` hands its
speech segments here; evaluate and serve call `run_items` and the budgets too (through infer, which re-exports them).
"""

import weakref
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from . import device as placement_of
from .audio import SAMPLE_RATE, WINDOW_SECONDS
from .errors import DeviceFailed, LLMSRTError, warn_each_time
from .languages import get as language
from .model.decoding import DecodingOptions
from .model.protocol import CANNOT_RUN, Item, Output, System, cap, check_item
from .model.static_steps import StaticSteps
from .prompts import Task


NOT_RUN = "not run: its caller stopped waiting for it"  # an item or input `skip` / `cancelled` left out
ALONE_OUT_OF_MEMORY = ("; out of GPU memory as a batch of one: free the GPU of other processes, or lower "
                       "--max-new-tokens or the audio's length")  # added to such a row's error
TOKENS_PER_SECOND = 12.0  # generous upper bound on text tokens per second of Latin-script speech, per text part
SCRIPT_TOKEN_FACTOR = {"Latn": 1.0, "Cyrl": 1.5}  # tokens per Latin token for the same speech; other scripts:
OTHER_SCRIPT_FACTOR = 2.5  # char-tokenized / byte-heavy scripts (Jpan, Hans, Hant, Kore, Thai) need far more
TEXT_TOKENS_PER_CHAR = 1.0  # text-only (MT) items: generous cap per character of the given transcript, per factor
MIN_NEW_TOKENS = 24
# the largest budget any segment can have (a full window, SRT, both texts in a wide script): the commands' default
# --max-new-tokens, so that each segment's own budget decides (a default of 256 cut the translation of a 30 s SRT
# segment into Japanese, whose budget is 1,284, without a word)
MAX_NEW_TOKENS = int(MIN_NEW_TOKENS + 2 * OTHER_SCRIPT_FACTOR * TOKENS_PER_SECOND * WINDOW_SECONDS)
MAX_NEW_TOKENS_HELP = ("the most tokens a segment may generate; each segment's own budget (its duration and "
                       "scripts) decides below it (default %(default)s: the largest budget, a 30 s segment "
                       "transcribed and translated in wide scripts)")


@dataclass
class _Batches:
    """What `run_items` knows of one system's batches over its calls (evaluate's groups, translate's pending
    audio): how many it ran, and the most rows one may hold (None: the batch size asked for)."""
    run: int = 0
    most: int | None = None  # the largest batch that ran after a larger one ran out of memory


_batches: "weakref.WeakKeyDictionary[System, _Batches]" = weakref.WeakKeyDictionary()  # a dropped system forgets

def script_factor(code: str | None) -> float:
    """How many more tokens than Latin-script text the same speech takes in language `code`'s script."""
    return SCRIPT_TOKEN_FACTOR.get(language(code).script, OTHER_SCRIPT_FACTOR) if code else 1.0


def max_new_tokens(seconds: float, task: Task, cap: int, src: str | None = None, tgt: str | None = None) -> int:
    """Output-length cap for `seconds` of speech: a part per text the task writes, each scaled by its script."""
    task = Task(task)
    factor = (script_factor(src) if task in (Task.ASR, Task.SRT) else 0.0) + \
        (script_factor(tgt) if task.needs_translation else 0.0)
    if task is Task.ASR_SMT:  # each of its two passes writes one of the texts
        factor = max(script_factor(src), script_factor(tgt))
    return int(min(cap, MIN_NEW_TOKENS + factor * TOKENS_PER_SECOND * seconds))


def item_budget(item: Item, limit: int) -> int:
    """The output-length cap of one work item (speech: by duration; text only: by the given text's length)."""
    if item.audio is None:
        return int(min(limit, MIN_NEW_TOKENS + script_factor(item.tgt) * TEXT_TOKENS_PER_CHAR * len(item.transcript)))
    return max_new_tokens(item.audio.size / SAMPLE_RATE, item.task, limit, item.src, item.tgt)



def give_back_gpu_memory() -> None:
    """After an allocation failure (a GPU's): the kept static KV caches (`--compile`) but the served shapes' (whose
    recorded CUDA graphs hold them; see `StaticSteps.drop_caches`) and the cached blocks back to the driver, before
    smaller batches run (a no-op where no GPU is used). Call it out of the except block, once the traceback (and the
    tensors its frames hold) is gone."""
    StaticSteps.drop_caches()
    placement_of.release(torch.device("cuda"))


def error_line(e: BaseException) -> str:
    """One line for a failed batch: an LLMSRTError's own message with its lines joined (it may quote another error of
    several lines), else the exception type and first line."""
    if isinstance(e, LLMSRTError):
        return " ".join(filter(None, (line.strip() for line in str(e).splitlines())))
    return f"{type(e).__name__}: {e}".splitlines()[0]


def run_items(system: System, items: Sequence[Item], options: DecodingOptions = DecodingOptions(),
              batch_size: int = 8, progress: Callable[[int], object] | None = None,
              on_output: Callable[[int, Output], object] | None = None,
              first: Sequence[float] | None = None, skip: Callable[[int], bool] | None = None,
              remember_out_of_memory: bool = True, between: Callable[[float], object] | None = None) -> list[Output]:
    """One Output per item, in order, however mixed the languages and tasks. Items run longest first in batches of
    `batch_size` (similar lengths together; the first batch shows the peak memory), or, with `first` (a key per item),
    lowest key first and longest first within a key; each item's output is capped by its own budget (item_budget:
    duration and scripts, or the given text's length). A batch that fails (a CUDA out-of-memory, any error) is retried
    in halves, down to single rows (at most 2n - 1 calls for n rows), so only the rows that fail alone fail (but for an
    error that says it holds for every row: an LLM's NaN scores, `decoding.refuse_broken_scores`); a CUDA
    error that breaks the GPU for the process (`device.is_device_failure`) stops the call; after an out-of-memory error,
    later batches of this system (in this call and later ones) hold at most as many rows as the largest half that then
    ran, so a too-large batch size is paid for once, not on every batch (`remember_out_of_memory` False: in this call
    only; a server, whose one long request must not shrink every later batch). A failed row has `error` set, as has an
    item no system can run (model.protocol.check_item), which never reaches the system, and an item for which `skip(k)`
    is true when its batch is formed (its caller gone: NOT_RUN). `progress(n)` is called as n more items are done
    (failed ones included); `on_output(k, output)` as item k's output is ready (in the order the items run);
    `between(left)` between two batches, before the later is formed, with the share of this call's work (its items'
    samples, or characters) not yet run (a server runs the shorter requests that arrived meanwhile there, so they do not
    wait for every batch of this call)."""
    if batch_size < 1:
        raise LLMSRTError(f"batch size must be at least 1, got {batch_size} (--batch-size)")
    outputs: list[Output | None] = [None] * len(items)
    items = list(items)
    for k, it in enumerate(items):
        try:
            check_item(it)
        except LLMSRTError as e:
            outputs[k] = Output(error=CANNOT_RUN + str(e))
            if on_output is not None:
                on_output(k, outputs[k])
            continue
        items[k] = replace(it, max_new_tokens=item_budget(it, cap(it, options)))
    size = [it.audio.size if it.audio is not None else len(it.transcript) for it in items]
    order = deque(sorted((k for k in range(len(items)) if outputs[k] is None),
                         key=lambda k: (items[k].audio is None, first[k] if first else 0, -size[k])))
    if progress is not None and len(order) < len(items):
        progress(len(items) - len(order))
    try:
        seen = _batches.setdefault(system, _Batches()) if remember_out_of_memory else _Batches()
    except TypeError:  # a system that cannot be hashed or weakly referenced (a dataclass): this call's cap only
        seen = _Batches()
    ran_before = seen.run
    total = sum(size[k] for k in order) or 1
    while order:
        if between is not None and seen.run > ran_before:  # not before this call's first batch
            between(sum(size[k] for k in order) / total)
        chunk: list[int] = []
        while order and len(chunk) < min(batch_size, seen.most or batch_size):
            k = order.popleft()
            if skip is not None and skip(k):
                outputs[k] = Output(error=NOT_RUN)
                if on_output is not None:
                    on_output(k, outputs[k])
                if progress is not None:
                    progress(1)
            else:
                chunk.append(k)
        if not chunk:
            break
        seen.run += 1
        fits: list[int] = []
        for k, out in zip(chunk, _run_chunk(system, [items[k] for k in chunk], options, fits)):
            outputs[k] = out
            if on_output is not None:
                on_output(k, out)
        if fits:  # each smaller than this batch, which ran out of memory
            seen.most = max(fits)
            warn_each_time(f"out of memory at batch {seen.run}: later batches use at most {seen.most} rows")
        if progress is not None:
            progress(len(chunk))
    return outputs


def _run_chunk(system: System, chunk: list[Item], options: DecodingOptions, fits: list[int],
               after_oom: bool = False) -> list[Output]:
    """`chunk`'s outputs, a failed batch retried in halves; `fits` gets the size of every batch that ran in place of
    one that ran out of memory (`after_oom`: this one's, or a larger one's it is part of). An error that says it
    holds for each of the batch's rows (`every_row_of`: an LLM's NaN scores for every row, `refuse_broken_scores`)
    is every row's at once: its halves would fail alike, up to 2n - 1 prefills for n rows."""
    opts = replace(options, max_new_tokens=max(it.max_new_tokens for it in chunk))
    try:
        outs = system.run_batch(chunk, opts)
        if len(outs) != len(chunk):
            raise LLMSRTError(f"system {system.name} returned {len(outs)} outputs for {len(chunk)} items")
        if after_oom:
            fits.append(len(chunk))
        return outs
    except Exception as e:  # one bad batch never loses the others
        error, oom = error_line(e), placement_of.is_out_of_memory(e)
        alike = not oom and getattr(e, "every_row_of", None) == len(chunk)  # a count: a part of the batch (its
        #   speech rows, its rows with transcripts) that fails whole is not the whole
        if placement_of.is_device_failure(e):  # not this batch's fault: its halves, and every later batch, fail too
            raise DeviceFailed(f"{system.name}: the GPU failed on a batch of {len(chunk)} ({error}); CUDA keeps that "
                               "error for the rest of the process, so the run stops here: run it again (with "
                               "CUDA_LAUNCH_BLOCKING=1 the error names the failing kernel)") from e
    # out of the except block: the traceback (and the tensors its frames hold) is gone before the cache is freed
    if oom:
        give_back_gpu_memory()  # before the halves run
    if len(chunk) == 1 or alike:
        return [Output(error=error + ALONE_OUT_OF_MEMORY if oom else error) for _ in chunk]
    warn_each_time(f"a batch of {len(chunk)} failed ({error}); retrying it as two halves")
    half = (len(chunk) + 1) // 2
    after_oom = after_oom or oom
    return (_run_chunk(system, chunk[:half], options, fits, after_oom)
            + _run_chunk(system, chunk[half:], options, fits, after_oom))
