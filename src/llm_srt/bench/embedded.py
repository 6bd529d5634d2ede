"""`llm-srt bench` on the embedded models (the CPU default): paper Table 7's shape plus the toolkit's speed levers.

    llm-srt bench [--model DIR] [--n 16] [--quick] [--json] [--device D --dtype T]

Everything is measured side by side in one process, on the same utterances, and reported as ratios:
  (a) LLM-SRT: Whisper at variable length -> Q-Former (80 queries) -> LLM; greedy and beam, by batch size; on a
      float32 CPU run also greedy and beam with every linear layer in int8 (`--dtype int8`: encoder, adapter and
      LLM; same adapter weights);
  (b) the Qwen2-Audio-style peer: Whisper on 30 s padded input -> 2x average pooling (750 speech tokens) -> the same
      LLM (a fresh pooled adapter over the same Whisper and LLM folders);
  (c) the cascade: Whisper's own ASR decoding, then the LLM translating the transcript (model/systems.py);
  training steps with and without the encoder-feature cache, on the same batch; the encoder at variable length vs
  30 s padding on ~10 s clips; and the full `SpeechTranslator.translate()` path against the forward passes its
  output strictly needs (encoder, adapter, LLM prefill, one KV-cached LLM step per further token), each replayed
  alone on the very inputs translate() gave them and each step at the rows it ran at (recorded by hooks).

The yardstick (bench/roofline.py): this machine's memory bandwidth and matmul peak (the fastest of the kernels the
model's float32 products may take), measured in the same run before and after the rows, each the higher of the two
(a warning when they differ by more than 20%); each decode row's step time (prefill end to last step end, so
`generate`'s own work between steps counts) is reported against the least a step of the loaded LLM can cost here,
max((weight + KV cache bytes) / bandwidth, linear FLOPs x rows / peak + attention FLOPs / float peak): batch 1
against the bandwidth, large batches against the arithmetic.

Decode length. (a) and (b) run through the systems' own `run_batch` and generate exactly `new_tokens` tokens per
utterance (the LLM's EOS logit pinned to 0 by `common.pin_eos`, after translate()'s natural-length measurement;
checked per generation), so an untrained adapter's early EOS favours neither system. The cascade (its own Whisper
and LLM, run last, with no speech LLM loaded) and translate() decode naturally (EOS stops them, `new_tokens` caps
them); the tokens they produced are reported next to their times. Times are wall-clock seconds of one pass after an
untimed warm-up (a decode row's: 2 tokens of its longest batch and of the last, smaller one where --n is no
multiple of the batch, so once-per-process costs such as the kernel timing of `model.cpu_linear` stay out of it, as
in the paper-shape rows; a compiled row's: its whole pass; translate()'s and the cascade's: the same pass whole, as
its batches shrink while rows end), timed after `device.synchronize`; peak memory is torch's allocator peak on CUDA,
where every timed section also gives `reserved_mib` (`{way}_reserved_mib` for the encoder), the allocator's reserved
peak, as the paper-shape rows do; on the CPU it is the process RSS (sampled every few milliseconds), and every timed
section (decode rows, encoder, training, translate(), cascade) also gives `rss_start_mib` and `peak_rise_mib`: what
its own pass added.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import device as dev
from ..device import Placement, release
from ..errors import LLMSRTError
from ..model.int8_linear import INT8_ENGINES
from ..prompts import Task
from .common import EncoderInputs, PeakMemory, StepRows, decode_pass, pin_eos
from .encoder import time_encoder
from .roofline import COPY_BYTES, INT8_GEMM, decode_cost, higher_of, measure_machine, step_bound
from .training import time_training
from .utterances import DEFAULT_MANIFEST, Utterance, check_manifest, load_utterances, long_clips

DEFAULT_TRAINED = "checkpoints/embedded/srt"  # the CLI benchmarks this trained adapter when it is a Q-Former
BATCH_SIZES = (1, 4, 8, 16)  # Q-Former greedy
BEAM_BATCH_SIZES = (4, 8)  # Q-Former beam search (paper: 4/8/12)
POOLED_BATCH_SIZES = (4, 8)  # the 750-token peer, greedy (paper: batch 4, out of memory at 8)
HEADLINE_BATCH = 8  # adapter_vs_pooled_speedup, the cascade and translate() run at this batch size
LONG_SECONDS = 10.0  # clip length for the variable-length vs 30 s padding comparison
GOALS = {  # ratio -> target on the 2-core CPU with the embedded models ("min": at least, "max": at most)
    "adapter_vs_pooled_speedup": (3.0, "min"),
    "cached_step_vs_audio_step_less_encoder": (1.05, "max"),  # the cache removes the encoder's cost, no more
    "variable_length_speedup": (2.5, "min"),
    "batch16_vs_batch1": (6.0, "min"),  # throughput, of the fastest decode that ran at both (JUDGED)
    "batch1_step_vs_bandwidth_bound": (1.3, "max"),  # greedy decode step at batch 1 / (weight bytes / bandwidth)
    "overhead_vs_lower_bound": (1.25, "max"),
}
# the decodes the two decode goals choose from (each among those that ran): batch16_vs_batch1 judges the fastest at
# the top batch (seconds), batch1_step_vs_bandwidth_bound the one nearest its bound at batch 1 (lowest step_vs_bound)
JUDGED = ("llm-srt", "llm-srt-int8", "llm-srt-int8-compiled")
INT8_BATCH_SIZES = (1, 16)  # greedy rows repeated with int8 linear layers (CPU, float32 placements)
INT8_BEAM_BATCH_SIZES = (8,)  # beam rows likewise (beam 5 x 8 = 40 rows a step: oneDNN's int8 product may run)
INT8_COMPILED_BATCH_SIZES = (1,)  # int8 greedy rows again with --compile, taking turns with the int8 rows (int8
# steps compile at one row only: `static_steps.INT8_COMPILED_ROWS`)


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark and how much of it."""

    model: str | None = None  # trained model folder whose adapter (a) uses; None = a fresh Q-Former adapter
    encoder: str = "embedded"  # Whisper folder (for a fresh adapter and the cascade)
    llm: str = "embedded"  # LLM folder (for a fresh adapter and the cascade)
    adapter_kwargs: dict = field(default_factory=dict)  # fresh Q-Former options (tests shrink it)
    manifest: str | None = DEFAULT_MANIFEST  # utterances come from here; None (or this one missing): espeak-ng clips
    n: int = 16  # utterances per configuration
    new_tokens: int = 32  # generated tokens per utterance ((a), (b)); the cap for the cascade and translate()
    batch_sizes: tuple[int, ...] = BATCH_SIZES  # (a) greedy
    beam_size: int = 5  # (a) beam search width
    beam_batch_sizes: tuple[int, ...] = BEAM_BATCH_SIZES  # (a) beam search
    pooled_batch_sizes: tuple[int, ...] = POOLED_BATCH_SIZES  # (b) greedy
    headline_batch: int = HEADLINE_BATCH  # batch of the (a)/(b) headline ratio, the cascade and translate()
    cascade: bool = True  # run (c) (needs a full Whisper folder with its tokenizer)
    train_batch: int = 8  # examples per training step
    train_steps: int = 3  # timed training steps each way (after one warm-up step each)
    long_clips: int = 4  # ~10 s clips in the encoder comparison (one batch)
    long_seconds: float = LONG_SECONDS
    encoder_repeats: int = 2  # best of this many passes for the encoder comparison
    int8_batch_sizes: tuple[int, ...] = INT8_BATCH_SIZES  # greedy again with --dtype int8 (CPU float32 runs only)
    int8_passes: int = 3  # passes of the int8 greedy rows, taking turns; each reports its median (`decode_rows`)
    int8_beam_batch_sizes: tuple[int, ...] = INT8_BEAM_BATCH_SIZES  # beam search again with --dtype int8, one pass
    int8_compiled_batch_sizes: tuple[int, ...] = INT8_COMPILED_BATCH_SIZES  # int8 greedy with --compile (each
    #   batch size compiles its step first, ~30 s here), in the int8 rows' turns
    yardstick_bytes: int = COPY_BYTES  # the bandwidth probes' size (tests shrink it)
    yardstick_gemm: int | None = None  # the matmul probe's size (None: by device; tests shrink it)
    yardstick_int8_gemm: tuple[int, int, int] = INT8_GEMM  # (rows, in, out) of the int8 probe (tests shrink it)
    seed: int = 0  # fresh adapter weights

    def __post_init__(self):
        if self.n < 1 or self.new_tokens < 2 or self.train_batch < 1 or self.train_steps < 1 or self.int8_passes < 1:
            raise LLMSRTError("bench: n, train_batch, train_steps and int8_passes must be >= 1 and new_tokens >= 2")
        if 1 not in self.batch_sizes or self.headline_batch not in self.batch_sizes \
                or self.headline_batch not in self.pooled_batch_sizes:
            raise LLMSRTError(f"bench: batch sizes must include 1 and the headline batch {self.headline_batch}")
        if self.n < self.largest_batch:  # decode_pass cuts n utterances into batches: a row would run fewer rows
            raise LLMSRTError(f"bench: --n {self.n} is below the largest batch size timed, {self.largest_batch}: its "
                              f"rows would run batches of {self.n}; give --n {self.largest_batch} or more")

    @property
    def largest_batch(self) -> int:
        """The largest batch any decode row times (the int8 ones included, though only a CPU float32 run has them)."""
        return max(self.batch_sizes + self.beam_batch_sizes + self.pooled_batch_sizes + self.int8_batch_sizes
                   + self.int8_beam_batch_sizes + self.int8_compiled_batch_sizes)


QUICK = dict(n=16, new_tokens=16, batch_sizes=(1, 8, 16), beam_batch_sizes=(8,), pooled_batch_sizes=(8,),
             train_steps=2, encoder_repeats=1)  # --quick: the JSON keys with fewer configurations


# ---- the run ------------------------------------------------------------------------------------------------------
def run_bench(options: BenchOptions = BenchOptions(), placement: Placement | None = None,
              log=lambda msg: None, partial: Callable[[dict], None] | None = None) -> dict:
    """Run every measurement; returns the JSON-ready result (ratios, goals and the raw times; `finished` true).
    `partial`: called after each measurement (yardstick, encoder, training, translate(), each decode row, cascade)
    with the sections measured so far, `finished` false: no ratios or goals (they need every row), the decode rows
    bounded on the first yardstick only; so that a run stopped from outside leaves them (bench --json-out)."""
    from ..model.encoder import WhisperEncoder
    from ..model.systems import SpeechLLMSystem
    from ..model.whisper_system import release_models

    placement = placement or dev.resolve("cpu", "float32")
    check_manifest(options)  # a --manifest given that is missing: before the yardstick's probes
    check_model(options)  # so is a --model that (a) cannot time
    started, load = time.perf_counter(), os.getloadavg()[0]
    # Int8Linear runs fbgemm's products: on a CPU without them (ARM's qnnpack) the int8 probe and rows are skipped,
    #   said why (the yardstick's probe raised "use --dtype float32 here" at a float32 run, which then could not run)
    engine = torch.backends.quantized.engine
    int8_engine = placement.device.type == "cpu" and engine in INT8_ENGINES
    int8_skipped = ("no int8 batch sizes asked for" if not options.int8_batch_sizes else
                    f"--dtype int8 is CPU float32 inference only, not {placement}"
                    if placement.device.type != "cpu" or placement.dtype != torch.float32 else
                    None if int8_engine else
                    f"--dtype int8 runs fbgemm's int8 products (x86 CPUs); this torch's quantized engine is {engine!r}")
    int8_rows = int8_skipped is None
    if int8_skipped:  # said, and in the JSON: the judged system (JUDGED) is then chosen among the float rows alone
        log(f"int8 rows skipped: {int8_skipped}")
    log("yardstick: memory bandwidth and matmul peak")

    def yardstick() -> dict:
        return measure_machine(placement.device, copy_bytes=options.yardstick_bytes, gemm_size=options.yardstick_gemm,
                               dtype=placement.compute_dtype, int8=int8_engine,
                               int8_gemm=options.yardstick_int8_gemm)

    sections: dict = {}  # what `partial` is given: the result's keys measured so far

    def measured(**more) -> None:
        sections.update(more)
        if partial:
            partial({**sections, "setup": {"device": str(placement), "load_average_at_start": round(load, 2),
                                           "bench_seconds": round(time.perf_counter() - started, 1)},
                     "finished": False})
    machine = yardstick()
    measured(machine=machine)
    with tempfile.TemporaryDirectory(prefix="llm-srt-bench-") as tmp:
        utts = load_utterances(options, Path(tmp))
        if len(utts) < options.largest_batch:  # a manifest with fewer utterances than n
            raise LLMSRTError(f"bench: {options.manifest} gave {len(utts)} utterances, below the largest batch size "
                              f"timed, {options.largest_batch}: its rows would run batches of {len(utts)}; give a "
                              "manifest with more, or none (espeak-ng clips)")
        utts.sort(key=lambda u: -u.audio.size)  # longest first: batches of similar lengths
        model, model_name = _load_model(options, placement)
        whisper = model.encoder
        variable = WhisperEncoder(whisper.encoder, whisper.feature_extractor, pad_to_30s=False, name=whisper.name)
        padded = WhisperEncoder(whisper.encoder, whisper.feature_extractor, pad_to_30s=True, name=whisper.name)
        log("encoder: variable length vs 30 s padding")
        encoder = time_encoder(variable, padded, long_clips(utts, options.long_clips, options.long_seconds),
                               options.encoder_repeats, placement.device)
        measured(encoder=encoder)
        del whisper, variable, padded
        log("training steps with and without the feature cache")
        train = time_training(model, utts, options.train_batch, options.train_steps, Path(tmp))
        measured(train=train)
        if _merges_lora(model, options, placement):  # decoded as translate loads it: the folder's LoRA merged
            del model
            release(placement.device)
            model, _ = _load_model(options, placement, merge_lora=True)
        log("translate() vs its lower bound")
        overhead = time_overhead(model, utts, options.headline_batch, options.new_tokens)
        measured(overhead=overhead)
        rows = []
        each = lambda done: measured(decode=rows + done)  # noqa: E731  (decode_rows' on_row: after every row)
        pin_eos(model)  # from here on every utterance decodes exactly new_tokens tokens
        plan = ([("llm-srt", 1, b) for b in options.batch_sizes]
                + [("llm-srt", options.beam_size, b) for b in options.beam_batch_sizes])
        rows += decode_rows(SpeechLLMSystem(model, "llm-srt", placement), utts, plan, options, log, machine,
                            on_row=each)
        costs = {"llm-srt": decode_cost(model.llm)}  # each system's, to bound its rows again after the last
        folders = (model.config.encoder, model.config.llm)
        adapter_state = model.adapter.state_dict()
        del model
        release(placement.device)
        if int8_rows:  # the same adapter weights, every linear layer int8
            int8 = SpeechLLMSystem(_int8_model(folders, adapter_state, placement, options), "llm-srt-int8",
                                   dev.resolve("cpu", "int8"))
            plan = ([("llm-srt-int8", 1, b) for b in options.int8_batch_sizes]
                    + [("llm-srt-int8-compiled", 1, b, True) for b in options.int8_compiled_batch_sizes])
            rows += decode_rows(int8, utts, plan, options, log, machine, passes=options.int8_passes, on_row=each)
            plan = [("llm-srt-int8", options.beam_size, b) for b in options.int8_beam_batch_sizes]
            rows += decode_rows(int8, utts, plan, options, log, machine, on_row=each)
            costs["llm-srt-int8"] = costs["llm-srt-int8-compiled"] = decode_cost(int8.model.llm)
            del int8
            release(placement.device)
        torch.manual_seed(options.seed)
        pooled = _pooled_model(folders, placement)
        rows += decode_rows(SpeechLLMSystem(pooled, "pooled-750", placement), utts,
                            [("pooled-750", 1, b) for b in options.pooled_batch_sizes], options, log, machine,
                            on_row=each)
        costs["pooled-750"] = decode_cost(pooled.llm)
        del pooled, adapter_state
        release(placement.device)  # the second yardstick's 2 GiB of probes need the room
        cascade = None
        if options.cascade:  # last, once every speech LLM is freed: its peak is its own models', not theirs too
            log("cascade")
            try:
                cascade = time_cascade(folders, placement, utts, options.headline_batch, options.new_tokens)
            except Exception as e:  # the row's failure, not the bench's: any error here (a Whisper folder without
                #   the tokenizer it decodes with, a row that failed) raised past every row measured, and the table
                #   of minutes of rows was lost (bench.main exits 1 on it, as on the Whisper row's)
                cascade = {"failed": str(e) if isinstance(e, LLMSRTError) else f"{type(e).__name__}: {e}"}
                log(f"cascade failed: {cascade['failed']}")
            measured(cascade=cascade)
            release_models(placement.device)  # its Whisper stays in systems' cache else (the yardstick's room)
    log("yardstick again, after the rows")
    machine = higher_of(machine, yardstick())
    for key, (before, after) in machine["yardstick_moved"].items():
        log(f"WARNING: the yardstick's {key} moved from {before} to {after} during the run (a busy machine); the "
            "bounds use the higher")
    rows = [row | bound_columns(costs[row["system"]], machine, row) for row in rows]
    setup = {"model": model_name, "load_average_at_start": round(load, 2), "device": str(placement),
             "int8_rows_skipped": int8_skipped, "utterances_from": utts[0].origin,
             "bench_seconds": round(time.perf_counter() - started, 1)}
    return summarize(options, setup, utts, rows, encoder, overhead, train, cascade, machine)


def decode_rows(system, utts: list["Utterance"], plan, options: "BenchOptions", log, machine: dict,
                passes: int = 1, on_row: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    """(a) or (b): every (name, beam, batch[, compiled]) of `plan` over all utterances through `system.run_batch`,
    fixed length; each row's decode steps (prefill end to last step end, per generation) against the roofline
    bound of its rows. `compiled` (greedy): the steps compiled (`DecodingOptions.compile`), warmed up by a whole
    pass (every batch shape it compiles, a last smaller batch's too), and checked to have run compiled. With
    `passes` > 1 the rows take turns, the plan's order then its reverse (ABBA: a drift of the machine hits every
    row alike), and each row reports its median pass (by seconds; the upper one of an even count). `on_row`: given
    the rows finished so far (plan order) as each row's last pass ends (--json-out; it was after a system's rows)."""
    from ..model.decoding import DecodingOptions
    from ..model.static_steps import StaticSteps

    cost = decode_cost(system.model.llm)
    audios = [u.audio for u in utts]
    plan = [(*entry, False)[:4] for entry in plan]
    decoding = {entry: DecodingOptions(max_new_tokens=options.new_tokens, beam_size=entry[1], compile=entry[3])
                for entry in plan}
    for entry in plan:
        name, beam, batch, compiled = entry
        log(f"decode {name} beam {beam} batch {batch}: warm-up" + (" (compiling its step)" if compiled else ""))
        with torch.inference_mode():  # warm-up at this row's shapes (its longest batch, and a last smaller one
            #   where --n is no multiple of the batch: its rows' kernel timings, `model.cpu_linear`'s, would be made
            #   inside the timer, 3 s for Gemma's head at a new row count): what a process does once
            if compiled:
                decode_pass(system, audios, batch, decoding[entry])
            else:
                last = audios[len(audios) - len(audios) % batch:]  # (none where the batch divides --n)
                decode_pass(system, audios[:batch] + last, batch, replace(decoding[entry], max_new_tokens=2))
    runs: dict[tuple, list] = {entry: [] for entry in plan}
    rows: dict[tuple, dict] = {}
    for turn in range(passes):
        for entry in plan if turn % 2 == 0 else plan[::-1]:
            name, beam, batch, compiled = entry
            log(f"decode {name} beam {beam} batch {batch}" + (f" (pass {turn + 1} of {passes})" if passes > 1 else ""))
            before = StaticSteps.steps_taken
            runs[entry].append(decode_pass(system, audios, batch, decoding[entry]))
            if compiled and StaticSteps.steps_taken - before < -(-len(audios) // batch) * (options.new_tokens - 1):
                raise LLMSRTError(f"bench: --compile did not apply to {name} at batch {batch} (see the warning above)")
            if turn == passes - 1:
                rows[entry] = decode_row(system, entry, runs[entry], cost, machine)
                on_row([rows[e] for e in plan if e in rows])
    return [rows[e] for e in plan]


def decode_row(system, entry: tuple, done: list, cost: dict, machine: dict) -> dict:
    """`decode_rows`' row of `entry` from its passes `done`: the median pass, bounded on `machine`."""
    name, beam, batch, compiled = entry
    run = sorted(done, key=lambda r: r.seconds)[len(done) // 2]
    contexts = run.contexts or (None,) * len(run.steps)
    row = {"system": name, "beam": beam, "batch_size": batch, "seconds": run.seconds,
           "utterances_per_s": round(run.utterances / run.seconds, 3), "speech_tokens": run.speech_tokens,
           "new_tokens": run.new_tokens, "peak_mib": run.peak_mib, "rss_start_mib": run.rss_start_mib,
           "peak_rise_mib": run.peak_rise_mib, "reserved_mib": run.reserved_mib, "memory": run.memory,
           "weights": "int8" if cost["int8"] else dev.DTYPE_NAMES[system.model.llm_dtype],
           "decode_seconds": round(sum(s for _, _, s in run.steps), 4),
           "generations": [[r, n, round(s, 6), c] for (r, n, s), c in zip(run.steps, contexts)],
           "pass_seconds": [r.seconds for r in done], "compiled": compiled}
    return row | bound_columns(cost, machine, row)


def bound_columns(cost: dict, machine: dict, row: dict) -> dict:
    """A decode row's step time against its bound on `machine`, from its `generations` ([rows, decode steps, their
    seconds, positions cached by the prefill], each step attending to one more position than the last): so
    `run_bench` can bound every row again on the yardstick measured after them. `bound` names the limit at the
    row's first step; `step_vs_bound` is unrounded: summarize rounds batch 1's once, to 2 decimals, for its goal (to 3
    first, 1.30503 read 1.305, then 1.3, not 1.31), and the table prints every row's to 2."""
    def step(rows: int, positions: int | None) -> dict:  # positions None: not recorded, the weights alone
        return step_bound(cost, machine, rows) if positions is None else step_bound(cost, machine, rows, positions)

    generations = row["generations"]
    steps = sum(n for _, n, _, _ in generations)
    step_s = sum(s for _, _, s, _ in generations) / steps
    bound_s = sum(step(r, None if c is None else c + i)["bound_s"]
                  for r, n, _, c in generations for i in range(1, n + 1)) / steps
    first = generations[0][3]
    return {"decode_step_ms": float(f"{step_s * 1000:.4g}"), "bound_step_ms": float(f"{bound_s * 1000:.4g}"),
            "bound": step(row["batch_size"] * row["beam"], None if first is None else first + 1)["bound"],
            "step_vs_bound": step_s / bound_s}


def summarize(options: BenchOptions, setup: dict, utts, rows, encoder, overhead, train, cascade,
              machine: dict) -> dict:
    def row(system: str, beam: int, batch: int) -> dict:
        return next(r for r in rows if (r["system"], r["beam"], r["batch_size"]) == (system, beam, batch))

    def seconds(system: str, beam: int, batch: int) -> float:
        return row(system, beam, batch)["seconds"]

    head, top = options.headline_batch, max(options.batch_sizes)
    # the fastest decode at `top` of those that ran (JUDGED) is judged; its name goes in the JSON
    have = {(r["system"], r["batch_size"]) for r in rows if r["beam"] == 1}
    fast = min((v for v in JUDGED if {(v, 1), (v, top)} <= have), key=lambda v: seconds(v, 1, top))
    fast1 = min((v for v in JUDGED if (v, 1) in have), key=lambda v: row(v, 1, 1)["step_vs_bound"])
    ratios = {
        "adapter_vs_pooled_speedup": seconds("pooled-750", 1, head) / seconds("llm-srt", 1, head),
        "cached_step_vs_audio_step_less_encoder": train["cached_vs_audio_less_encoder"],  # unrounded; or None
        "variable_length_speedup": encoder["padded_s"] / encoder["variable_s"],
        "batch16_vs_batch1": seconds(fast, 1, 1) / seconds(fast, 1, top),
        "batch1_step_vs_bandwidth_bound": row(fast1, 1, 1)["step_vs_bound"],
        "overhead_vs_lower_bound": overhead["translate_vs_lower_bound"],  # of the unrounded times (time_overhead)
    }
    on_cpu = setup["device"].startswith("cpu")  # the goals are the 2-core CPU's: elsewhere shown, not judged
    # judged, stored and printed alike (1.0551: 1.06, MISSED); None: not measured (time_training says when)
    shown = {k: None if v is None else round(v, 2) for k, v in ratios.items()}
    goals = {k: {"target": t, "met": bool(shown[k] >= t if how == "min" else shown[k] <= t)
                 if on_cpu and shown[k] is not None else None} for k, (t, how) in GOALS.items()}
    one, many = row(fast, 1, 1), row(fast, 1, top)
    outside = {1: one["seconds"] - one["decode_seconds"], top: many["seconds"] - many["decode_seconds"]}
    batch_parts = {  # where batch16_vs_batch1 comes from: what batching speeds up, and what it cannot
        "system": fast,
        "decode_steps_ratio": round(one["decode_seconds"] / many["decode_seconds"], 3),
        "outside_decode_s": {str(b): round(v, 3) for b, v in outside.items()},  # encoder, adapter, prefill, rest
        "ceiling": round(one["seconds"] / outside[top], 3) if outside[top] > 0 else None,
    }
    return {
        **shown,
        "goals": goals,
        "setup": {**setup, "utterances": len(utts), "audio_seconds": round(sum(u.seconds for u in utts), 2),
                  "new_tokens": options.new_tokens, "batch16_vs_batch1_batches": [top, 1],
                  "batch16_vs_batch1_system": fast, "batch1_step_vs_bandwidth_bound_system": fast1,
                  "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "batch16_vs_batch1_parts": batch_parts,
        "machine": machine, "decode": rows, "encoder": encoder, "overhead": overhead, "train": train,
        "cascade": cascade, "finished": True,
    }


def _merges_lora(model, options: BenchOptions, placement: Placement) -> bool:
    """Whether `translate` loads this --model folder otherwise than its training rows: with its LoRA merged into
    the LLM (float32; `SpeechLLM.from_pretrained(merge_lora=True)`), so the decode rows load it again that way."""
    return bool(options.model) and model.config.lora is not None and placement.dtype == torch.float32


def _load_model(options: BenchOptions, placement: Placement, merge_lora: bool = False):
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(options.seed)
    if options.model:
        model = SpeechLLM.from_pretrained(options.model, device=placement.device, dtype=placement.dtype_name,
                                          merge_lora=merge_lora)
        name = options.model
    else:
        config = SpeechLLMConfig(encoder=options.encoder, llm=options.llm, adapter="qformer",
                                 adapter_kwargs=dict(options.adapter_kwargs), dtype=placement.dtype_name)
        model, name = SpeechLLM(config, device=placement.device), "fresh qformer adapter"
        model.quantize_adapter()  # --dtype int8: a fresh adapter's weights are all it has
    return model.eval(), name  # (a --model without a Q-Former adapter: refused by check_model, before this)


def check_model(options: BenchOptions) -> None:
    """A --model (a) cannot time (no model folder, no Q-Former): one line before the yardstick's ~20 s of probes."""
    from ..model.speech_llm import read_config

    adapter = read_config(Path(options.model))["adapter"] if options.model else "qformer"
    if adapter != "qformer":
        raise LLMSRTError(f"bench: {options.model} has a {adapter!r} adapter; (a) benchmarks the Q-Former (paper) — "
                          "give a Q-Former model folder or none")


def _int8_model(folders: tuple[str, str], adapter_state: dict, placement: Placement, options: BenchOptions):
    """(a) again with int8 linear layers (`--dtype int8`: encoder, adapter and LLM), the same adapter weights, EOS
    pinned."""
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig

    config = SpeechLLMConfig(encoder=folders[0], llm=folders[1], adapter="qformer",
                             adapter_kwargs=dict(options.adapter_kwargs), dtype="int8")
    if options.model:
        model = SpeechLLM.from_pretrained(options.model, device=placement.device, dtype="int8")
    else:
        model = SpeechLLM(config, device=placement.device)
        model.adapter.load_state_dict(adapter_state)
        model.quantize_adapter()  # as from_pretrained does once the weights are in
    pin_eos(model)
    return model.eval()


def _pooled_model(folders: tuple[str, str], placement: Placement):
    """(b): a fresh pooled adapter (750 tokens per 30 s) over the same Whisper and LLM folders as (a)."""
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig

    config = SpeechLLMConfig(encoder=folders[0], llm=folders[1], adapter="pooled", pad_to_30s=True,
                             dtype=placement.dtype_name)
    model = SpeechLLM(config, device=placement.device).eval()
    model.quantize_adapter()
    pin_eos(model)
    return model


# ---- translate() vs the forward passes it needs -------------------------------------------------------------------
def time_overhead(model, utts: list[Utterance], batch: int, new_tokens: int) -> dict:
    """translate() on every utterance vs the sum of the encoder, adapter, LLM prefill and KV-cached LLM steps its
    output needed, each replayed alone on the inputs translate() gave them (hooks record the encoder's mel and each
    generation's prefill, step count and rows a step), so nothing of translate()'s batching is re-implemented here.
    `translate_vs_lower_bound` (summarize's `overhead_vs_lower_bound`) is their ratio of the unrounded times, itself
    unrounded: summarize rounds it once, to 2 decimals (rounded to 4 first, 1.25503 read 1.255, then 1.25, not 1.26).

    The warm-up is the timed call itself, untimed: the kernel timings of `model.cpu_linear` are made once per
    (shape, row bucket) in a process, and a shorter warm-up (it was one clip for 2 tokens) leaves the timed call to
    make those of its batch, of each smaller batch its ended rows leave and of its encoder's frames (Gemma-3's
    262k x 640 head at 8 rows: 3.1 s on its first call, 0.17 s after)."""
    from ..infer import SpeechTranslator
    from ..model.decoding import DecodingOptions
    from ..model.systems import SpeechLLMSystem

    translator = SpeechTranslator(SpeechLLMSystem(model, "bench"))
    audios = [u.audio for u in utts]
    src, tgt = utts[0].src, utts[0].tgt  # one call, one language pair: the prompt tags do not change the cost
    options = DecodingOptions(max_new_tokens=new_tokens)
    translator.translate(audios, src, tgt, Task.SRT, options, batch_size=batch)  # warm-up: the timed call
    device = model.device
    with StepRows(model.llm, keep_inputs=True) as calls, EncoderInputs(model.encoder) as mels, \
            PeakMemory(device) as memory:
        dev.synchronize(device)
        t0 = time.perf_counter()
        results = translator.translate(audios, src, tgt, Task.SRT, options, batch_size=batch)
        dev.synchronize(device)
        translate_s = time.perf_counter() - t0
    errors = [r.error for r in results if r.error]
    if errors:
        raise LLMSRTError(f"bench: translate() failed: {errors[0]}")
    if len(mels.calls) != len(calls.generations):
        raise LLMSRTError(f"bench: translate() ran the encoder {len(mels.calls)} times for "
                          f"{len(calls.generations)} generations")
    parts = {"encoder_s": 0.0, "adapter_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0}
    with torch.inference_mode():
        for (mel, mel_mask), gen in zip(mels.calls, calls.generations):
            for key, seconds in lower_bound(model, mel, mel_mask, gen).items():
                parts[key] += seconds
    lower = sum(parts.values())  # (a tiny model's bound, under 0.5 ms, is 0.0 rounded: the ratio divided by it)
    return {"translate_s": round(translate_s, 3), "lower_bound_s": round(lower, 3),
            "translate_vs_lower_bound": translate_s / lower,
            **{k: round(v, 3) for k, v in parts.items()}, "batch_size": batch, "generations": len(mels.calls),
            "llm_forward_calls": sum(g["calls"] for g in calls.generations), "peak_mib": memory.mib,
            "rss_start_mib": memory.start_mib, "peak_rise_mib": memory.rise_mib, "reserved_mib": memory.reserved_mib}


def lower_bound(model, mel: torch.Tensor, mel_mask: torch.Tensor, generation: dict) -> dict[str, float]:
    """Time each needed forward pass alone: the encoder on the recorded mel, the adapter, the LLM prefill on the
    recorded inputs_embeds, then `calls - 1` KV-cached single-token steps (greedy decoding's in-place cache and
    argmax), each at the rows translate() ran it at (`rows`, `StepRows`; all of the batch where none are recorded):
    where rows had ended, the first rows go on (a row's cost does not depend on which it is, the cache being one
    length for all), so the bound does no more work than translate() did."""
    from ..model.decoding import last_argmax
    from ..model.kv_cache import growing_cache
    from ..model.llm import causal_lm

    whisper, llm, device = model.encoder, model.llm, model.device
    adapter_dtype = model.adapter_dtype
    times = []

    def tick():
        dev.synchronize(device)
        times.append(time.perf_counter())

    tick()
    h, mask = whisper(mel, mel_mask)
    tick()
    model.adapter(h.to(adapter_dtype), mask)
    tick()
    attention, positions = generation["mask"], generation["positions"]  # as generate passed them
    if positions is None:
        positions = torch.arange(generation["shape"][1], device=device).expand(generation["shape"][0], -1)
    tick()
    cache = growing_cache(causal_lm(llm).config, generation["calls"])  # greedy decoding's cache and argmax
    out = llm(inputs_embeds=generation["embeds"], attention_mask=attention, position_ids=positions, use_cache=True,
              logits_to_keep=1, past_key_values=cache)
    token = last_argmax(out.logits)[:, None]
    tick()
    rows = generation.get("rows") or [generation["shape"][0]] * generation["calls"]
    for step in range(1, generation["calls"]):
        if rows[step] < len(token):  # rows ended: the batch shrinks, as greedy decoding's does
            cache.batch_select_indices(torch.arange(rows[step], device=device))
            token, positions = token[:rows[step]], positions[:rows[step]]
            attention = None if attention is None else attention[:rows[step]]
        if attention is not None:
            attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = llm(input_ids=token, attention_mask=attention, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
        token = last_argmax(out.logits)[:, None]
    tick()
    return {"encoder_s": times[1] - times[0], "adapter_s": times[2] - times[1], "prefill_s": times[4] - times[3],
            "decode_s": times[5] - times[4]}


# ---- (c) the cascade ----------------------------------------------------------------------------------------------
def time_cascade(folders: tuple[str, str], placement: Placement, utts: list[Utterance], batch: int,
                 new_tokens: int) -> dict:
    """Whisper ASR decoding then LLM text MT (natural lengths, capped at new_tokens), same utterances and batch,
    through the cascade system's own run_batch; `folders`: (Whisper, LLM). Its warm-up is the timed pass, untimed,
    as `time_overhead`'s: one clip left the batch's kernel timings of `model.cpu_linear` inside the timer."""
    from ..model.decoding import DecodingOptions
    from ..model.protocol import Item
    from ..model.systems import load_system

    cascade = load_system("cascade", placement, whisper=folders[0], llm=folders[1])
    decoding = DecodingOptions(max_new_tokens=new_tokens)
    chunks = [utts[s:s + batch] for s in range(0, len(utts), batch)]

    def run(chunk):
        return cascade.run_batch([Item(u.audio, u.src, u.tgt, Task.SRT) for u in chunk], decoding)

    for chunk in chunks:  # warm-up: every batch of the timed pass (natural lengths: its shapes are known only then)
        run(chunk)
    with PeakMemory(placement.device) as memory:
        dev.synchronize(placement.device)
        t0 = time.perf_counter()
        outputs = [out for chunk in chunks for out in run(chunk)]
        dev.synchronize(placement.device)
        seconds = time.perf_counter() - t0
    failed = [o.error for o in outputs if o.error]
    if failed:
        raise LLMSRTError(f"bench: the cascade failed: {failed[0]}")
    asr_tok, mt_tok = cascade.asr.tokenizer, cascade.mt.tokenizer
    return {"batch_size": batch, "seconds": round(seconds, 3), "utterances_per_s": round(len(utts) / seconds, 3),
            "asr_tokens_mean": round(float(np.mean([len(asr_tok(o.transcript, add_special_tokens=False)["input_ids"])
                                                    for o in outputs])), 1),
            "mt_tokens_mean": round(float(np.mean([len(mt_tok(o.translation, add_special_tokens=False)["input_ids"])
                                                   for o in outputs])), 1),
            "peak_mib": memory.mib, "rss_start_mib": memory.start_mib, "peak_rise_mib": memory.rise_mib,
            "reserved_mib": memory.reserved_mib}


def _is_qformer_model(folder: Path) -> bool:
    """Whether `folder` is a model folder with a Q-Former adapter, the only kind (a) times."""
    from ..model.speech_llm import read_config

    try:
        return read_config(folder)["adapter"] == "qformer"
    except LLMSRTError:
        return False
