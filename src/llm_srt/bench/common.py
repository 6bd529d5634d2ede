"""What every bench measurement shares: fixed-length decoding through a system's real `run_batch`, timers that wait
for the device, peak memory (GPU: torch's allocator peak; CPU: process RSS) and how both benches' tables print it,
test clips, and the spies that record what a call ran (LLM generations, their rows per step, the encoder's inputs)
to time it again."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import device as dev
from ..audio import SAMPLE_RATE
from ..errors import LLMSRTError
from ..prompts import Task

RSS_INTERVAL = 0.01  # seconds between RSS samples on the CPU
RISE = "RSS rise MiB"  # a memory column on the CPU: what each row's pass added to the process's resident memory
RESERVED = "peak/rsvd MiB"  # on CUDA: the allocated peak / the reserved peak
GPU_PEAK = "GPU peak MiB"  # on CUDA where no row measured the reserved peak: the allocated peak alone
RSS_PEAK = "RSS peak MiB"  # on the CPU without a rise (the paper-shape table, older results): the process's peak


def noise_clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """`n` clips of exactly `seconds` (16 kHz, quiet noise plus a tone): random-weight models do not care what is
    said, only how long it is."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return [(0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            for i in range(n)]


def pin_eos(model) -> list[int]:
    """Make every EOS logit exactly 0 (the output head's EOS rows zeroed), so a random-weight LLM never ends an
    utterance early: among its ~150k random logits some are always larger, for greedy and beam search alike.
    Only for benchmarks of random or throw-away weights; returns the EOS ids. `LLMCalls` checks the lengths."""
    from ..model.int8_linear import Int8Linear
    from ..model.decoding import eos_ids
    from ..model.llm import causal_lm

    ids = eos_ids(model.llm, model.tokenizer)
    head = causal_lm(model.llm).get_output_embeddings()
    if isinstance(head, Int8Linear):
        head.zero_rows(ids)
        if head.bias is not None:
            head.bias[ids] = torch.finfo(head.bias.dtype).min
        return ids
    with torch.no_grad():
        head.weight[ids] = 0
        if getattr(head, "bias", None) is not None:
            head.bias[ids] = torch.finfo(head.bias.dtype).min
    return ids


class LLMCalls:
    """Forward hook on the causal LM: one entry per `generate` (its prefill batch and length) with its forward
    calls. A generation of N new tokens makes N calls (the prefill gives the first token). `keep_inputs`: also
    keep each prefill's inputs_embeds and attention mask (to replay them). Each entry's `decode_s` is the wall time
    from the prefill's end to the last step's end (after `device.synchronize`): the N - 1 decode steps with
    everything `generate` does between them."""

    def __init__(self, llm, keep_inputs: bool = False):
        from ..model.llm import causal_lm

        self.module = causal_lm(llm)
        self.keep_inputs = keep_inputs
        self.generations: list[dict] = []
        self.device = next(self.module.parameters()).device

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self._settle()

    def _settle(self) -> None:
        """The last generation's compiled decode steps (`DecodingOptions.compile`: they run without this hook)
        added to its calls, from `StaticSteps`' counter, and their time to its decode_s: up to the end of its last
        compiled step (`StaticSteps.last_step_at`; on a GPU taken after a synchronize at the generation's end)."""
        from ..model.static_steps import StaticSteps

        if self.generations and "static_at" in self.generations[-1]:
            entry = self.generations[-1]
            steps = StaticSteps.steps_taken - entry.pop("static_at")
            if steps:
                entry["calls"] += steps
                entry["decode_s"] += StaticSteps.last_step_at - entry["last"]

    def _hook(self, module, args, kwargs, output):
        from ..model.static_steps import StaticSteps

        dev.synchronize(self.device)
        now = time.perf_counter()
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:  # a prefill starts a new generate
            self._settle()
            entry = {"shape": tuple(embeds.shape[:2]), "calls": 0, "decode_s": 0.0, "last": now,
                     "static_at": StaticSteps.steps_taken, "context": cached_positions(kwargs, output, embeds)}
            if self.keep_inputs:
                entry |= {"embeds": embeds, "mask": kwargs.get("attention_mask"),  # None: no padding
                          "positions": kwargs.get("position_ids")}
            self.generations.append(entry)
        if self.generations:
            entry = self.generations[-1]
            entry["calls"] += 1
            entry["decode_s"] += now - entry["last"]
            entry["last"] = now


def cached_positions(kwargs: dict, output, embeds: torch.Tensor) -> int:
    """Positions in the KV cache once a prefill has run (beam search hands `generate` a prompt cache and the last
    position alone, so the inputs' length is not the context's): what each later step attends to, less its own."""
    cache = kwargs.get("past_key_values")
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    length = getattr(cache, "get_seq_length", None)
    return int(length()) if length is not None else int(embeds.shape[1])


class EncoderInputs:
    """Records the (mel, mask) of every batch the Whisper encoder computes features for, to replay them (a spy on
    this instance's `features`; `encode` calls `forward` directly, so a module hook would not see the calls)."""

    def __init__(self, whisper):
        self.whisper, self.calls = whisper, []

    def __enter__(self):
        original = self.whisper.features

        def features(audios):
            out = original(audios)
            self.calls.append(out)
            return out

        self.whisper.features = features  # an instance attribute shadows the method until __exit__
        return self

    def __exit__(self, *exc):
        del self.whisper.features


class StepRows(LLMCalls):
    """`LLMCalls` that also keeps each generation's rows per LLM call (`rows`: the prefill's batch, then each
    step's; greedy decoding drops a row from the batch once it has ended)."""

    def _hook(self, module, args, kwargs, output):
        super()._hook(module, args, kwargs, output)
        inputs = kwargs.get("inputs_embeds")
        inputs = kwargs.get("input_ids", args[0] if args else None) if inputs is None else inputs
        if self.generations and inputs is not None:
            self.generations[-1].setdefault("rows", []).append(inputs.shape[0])


class PeakMemory:
    """Peak memory while the block runs: on CUDA torch's allocator peak (`device.peak_memory_bytes`), on the CPU
    the process RSS sampled by a background thread. `.mib` after the block; on CUDA `.reserved_mib` too, the
    allocator's reserved peak (cached blocks, graph pools: what a memory cap limits), else None. The CPU's peak is
    the whole process's (the models, what earlier sections left resident: each float decode row read ~4967 MiB),
    so there `.start_mib` (the RSS as the block starts) and `.rise_mib` (how far the peak rose above it: what the
    block added) say what the block itself took; on CUDA, whose peak is reset for the block, both are None."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            dev.synchronize(self.device)
            dev.reset_peak_memory(self.device)
            return self
        import psutil

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(RSS_INTERVAL):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self.reserved_mib = self.start_mib = self.rise_mib = None
        if self.device.type == "cuda":
            dev.synchronize(self.device)
            self.bytes = dev.peak_memory_bytes(self.device)
            self.reserved_mib = round(dev.peak_reserved_bytes(self.device) / 2**20, 1)
        else:
            self._stop.set()
            self._thread.join()
            self.bytes = max(self._peak, self._process.memory_info().rss)
            self.start_mib = round(self._start / 2**20, 1)
            self.rise_mib = round((self.bytes - self._start) / 2**20, 1)
        self.mib = round(self.bytes / 2**20, 1)
        self.kind = "gpu" if self.device.type == "cuda" else "rss"


def memory_cell(row: dict, column: str) -> str:
    """A row's `PeakMemory` reading under a table's memory `column`: peak/reserved under `RESERVED` ("-" where the
    row has no reserved peak), the rise with its sign under `RISE` ("-" where none was measured), else the peak."""
    if column == RESERVED:
        reserved = row.get("reserved_mib")
        return f"{row['peak_mib']:.0f}/" + ("-" if reserved is None else f"{reserved:.0f}")
    if column != RISE:
        return f"{row['peak_mib']:.0f}"
    return "-" if row.get("peak_rise_mib") is None else f"+{row['peak_rise_mib']:.0f}"


def reserved_legend(cap: str) -> str:
    """The line under a table whose memory column is `RESERVED`; `cap`: what limits the reserved peak there."""
    return (f"  {RESERVED}: the CUDA allocator's peak (what tensors held) / its reserved peak (cached blocks, graph "
            f"pools too: what a card must hold, {cap})")


@dataclass(frozen=True)
class DecodeRun:
    """One timed pass of a system over utterances at one batch size."""

    seconds: float
    utterances: int
    new_tokens: int  # generated per utterance (checked: every generation ran exactly this many LLM steps)
    speech_tokens: int  # speech embeddings per utterance (the longest in the pass)
    peak_mib: float
    memory: str  # "gpu" (allocator peak) or "rss"
    steps: tuple[tuple[int, int, float], ...] = ()  # per generation: (rows, decode steps, their seconds)
    contexts: tuple[int, ...] = ()  # per generation: positions in its KV cache after the prefill (none: not known)
    reserved_mib: float | None = None  # on CUDA, the allocator's reserved peak (PeakMemory.reserved_mib)
    rss_start_mib: float | None = None  # on the CPU, the process RSS as the pass starts (PeakMemory.start_mib)
    peak_rise_mib: float | None = None  # on the CPU, `peak_mib` less `rss_start_mib`: what the pass added


def decode_pass(system, audios: list[np.ndarray], batch: int, options, src: str = "eng", tgt: str = "deu",
                task: Task = Task.SRT, exact_tokens: bool = True) -> DecodeRun:
    """All `audios` through `system.run_batch` (the code `translate`, `evaluate` and `serve` run) in batches of
    `batch`, timed after `device.synchronize`. With `exact_tokens`, every generation must run exactly
    `options.max_new_tokens` LLM steps (random weights with `pin_eos`): else a clear error, never a short row.
    Any item error (an out-of-memory included) is raised, so a row is either whole or absent."""
    from ..model.protocol import Item

    model = system.model
    device = model.device
    chunks = [audios[s:s + batch] for s in range(0, len(audios), batch)]
    speech: list[int] = []  # speech embeddings per utterance, as the adapter made them
    hook = model.adapter.register_forward_hook(lambda m, a, out: speech.append(int(out[1].sum(1).max())))
    try:
        with LLMCalls(model.llm) as calls, PeakMemory(device) as memory:
            dev.synchronize(device)
            t0 = time.perf_counter()
            for chunk in chunks:
                outputs = system.run_batch([Item(a, src, tgt, task) for a in chunk], options)
                failed = [o.error for o in outputs if o.error]
                if failed:
                    raise LLMSRTError(f"bench: {system.name}: {failed[0]}")
            dev.synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        hook.remove()
    steps = {g["calls"] for g in calls.generations}
    if len(calls.generations) != len(chunks):
        raise LLMSRTError(f"bench: {len(chunks)} batches ran {len(calls.generations)} generations")
    if exact_tokens and steps != {options.max_new_tokens}:
        raise LLMSRTError(f"bench: generations ran {sorted(steps)} LLM steps, not exactly {options.max_new_tokens}; "
                          "an utterance ended early, so rows would not be comparable")
    return DecodeRun(round(seconds, 4), len(audios), max(steps), max(speech), memory.mib, memory.kind,
                     tuple((g["shape"][0], g["calls"] - 1, g["decode_s"]) for g in calls.generations),
                     tuple(g["context"] for g in calls.generations), memory.reserved_mib, memory.start_mib,
                     memory.rise_mib)


