"""`llm-srt bench --paper-shape qwen2.5-3b|qwen2.5-7b`: paper Table 7 at the paper's shapes, random weights.

The models come from `model/presets.py` (Whisper-large-v3 encoder + Qwen2.5, built straight on the device from
config.json; no download) and run through the code users run: `SpeechLLMSystem.run_batch` (model/systems.py) for
decoding, `SpeechLLM.forward` + backward + AdamW for training steps. Two systems share the LLM shape:

- LLM-SRT: Whisper at the clip's length -> Q-Former (80 queries, the paper's) -> LLM;
- Qwen2-Audio style: Whisper on 30 s padded input -> 2x average pooling (750 speech tokens) -> the same LLM.

Every utterance is a 10 s clip and decodes exactly `new_tokens` tokens (EOS logit pinned to 0, see
`common.pin_eos`, and checked per generation), so the rows differ only in what the systems do. A row times
batch x `batches_per_row` utterances (at least `min_utterances`, in whole batches) after a warm-up batch of the same
shape (2 tokens) and reports seconds per 1,000 utterances; a row that runs out of memory is recorded as such
(`out_of_memory`, as Table 7 reports its peer at batch 8) and picked by no ratio or goal. Then each system's
largest batch that fits (doubling from `search_from` until it runs out of memory or `max_batch`), optionally under
a memory cap (`memory_gib`: the paper's RTX 4090 has 24 GiB), and the training step of the SRT stage at batch 16
with and without activation checkpointing. Peak memory is torch's allocator peak on CUDA, RSS on the CPU. What a
run has measured is handed on after each row, search and training row (`run_paper`'s `partial`: bench --json-out
writes it), so that a run stopped from outside (a time limit, a kill, the process out of memory) leaves its rows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import device as dev
from ..device import Placement, is_out_of_memory, release
from ..errors import LLMSRTError
from ..model import presets
from ..model.decoding import DecodingOptions
from ..model.static_steps import StaticSteps
from ..prompts import Task, build
from .common import (GPU_PEAK, RESERVED, RSS_PEAK, PeakMemory, decode_pass, memory_cell, noise_clips, pin_eos,
                     reserved_legend)
from .training import recipe_autocast

SYSTEMS = {  # system -> (SpeechLLMConfig fields, table name)
    "llm-srt": ({"adapter": "qformer", "pad_to_30s": False}, "LLM-SRT (Q-Former)"),
    "pooled-750": ({"adapter": "pooled", "pad_to_30s": True}, "Qwen2-Audio-style (2x pooled)"),
}
GOAL_SECONDS_PER_1000 = 19.0  # paper Table 7: LLM-SRT-7B greedy, 1,000 utterances at batch 64 on 4 RTX 4090s
GOAL_SPEEDUP = 3.0  # the Q-Former's utterances/s over the pooled projector's at equal memory
TRAIN_WIDE_HEAD_BLOCKS = 8  # the third training row's head_losses block, in multiples of the default


@dataclass(frozen=True)
class PaperOptions:
    shape: str = "qwen2.5-7b"  # a key of model.presets.PRESETS
    new_tokens: int = 64  # generated per utterance (transcript + tags + translation of ~10 s of speech)
    clip_seconds: float = 10.0
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)  # LLM-SRT greedy
    beam_size: int = 5
    beam_batch_sizes: tuple[int, ...] = (4, 8)  # LLM-SRT beam search
    pooled_batch_sizes: tuple[int, ...] = (8, 64)  # the pooled system at equal batch
    compiled_batch_sizes: tuple[int, ...] = ()  # LLM-SRT greedy with DecodingOptions.compile (a static cache, CUDA
    #  graphs on a GPU), beside the eager rows
    compiled_only: bool = False  # only those rows (no eager rows, pooled system, search or training rows)
    batches_per_row: int = 2  # utterances per row = batch x this (at least min_utterances, in whole batches)
    min_utterances: int = 4
    search_from: int = 128  # the largest-batch search doubles from here ...
    max_batch: int = 1024  # ... up to here (0: no search)
    memory_gib: float | None = None  # cap torch's CUDA allocator during the search (emulate a smaller GPU)
    train_batch: int = 16  # training-step rows (0: none)
    train_speech_frames: int = 500  # Whisper frames of a 10 s clip (cached features, as the recipe trains)
    train_target_tokens: int = 96  # SRT target: transcript + tags + translation, plus EOS
    train_steps: int = 3  # timed steps (after one warm-up step)
    adapter_kwargs: dict | None = None  # Q-Former options (None: the paper's); tests shrink it
    seed: int = 0

    def __post_init__(self):
        if self.new_tokens < 2 or self.batches_per_row < 1 or self.train_steps < 1:
            raise LLMSRTError("bench: new_tokens must be >= 2, batches_per_row and train_steps >= 1")
        if self.compiled_only and not self.compiled_batch_sizes:
            raise LLMSRTError(f"bench: --compiled-only times the --compile rows alone, and there are none: "
                              f"--paper-shape {self.shape} has no compiled batch of its own (tiny has batch 2): give "
                              "--compile-batches (e.g. 1,64)")
        presets.get(self.shape)


TINY = dict(  # --paper-shape tiny: the same path at test size (a small Q-Former, few and small batches)
    adapter_kwargs={"num_queries": 8, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64},
    new_tokens=4, batch_sizes=(1, 2), beam_size=2, beam_batch_sizes=(2,), pooled_batch_sizes=(2,), batches_per_row=1,
    compiled_batch_sizes=(2,),  # the compiled path too: here --compiled-only needs no --compile-batches (help, error)
    min_utterances=2, search_from=4, max_batch=4, train_batch=2, train_target_tokens=8, train_steps=1)


def run_paper(options: PaperOptions, placement: Placement, workdir: Path, log=lambda msg: None,
              partial: Callable[[dict], None] | None = None) -> dict:
    """Every row for one paper shape; returns the JSON-ready result (`finished` true). `partial`: called after each
    row, largest-batch search and training row with the result so far (`so_far`: `finished` false)."""
    started = time.perf_counter()
    if options.memory_gib is not None and placement.cuda and options.max_batch and not options.compiled_only:
        memory_cap(options.memory_gib, placement.device)  # a cap the device cannot give (what other processes on a
        #   shared GPU hold already): refused before any row, not after the Q-Former's rows, at its search
    if not placement.cuda:
        check_room(options, placement)
    torch.manual_seed(options.seed)
    folders = presets.write_folders(options.shape, workdir)
    clips = noise_clips(max(options.batch_sizes + options.pooled_batch_sizes + options.beam_batch_sizes),
                        options.clip_seconds, options.seed)
    rows, search, train = [], {}, []
    about = setting(options, placement) if partial else {}

    def measured() -> None:
        if partial:
            partial(so_far(about, rows, search, train, time.perf_counter() - started))

    for system_name in ["llm-srt"] if options.compiled_only else SYSTEMS:
        log(f"{system_name}: building {options.shape} (random weights) on {placement}")
        if system_name != "llm-srt":  # (beam, batch, compiled) of each row
            plan = [(1, b, False) for b in options.pooled_batch_sizes]
        else:
            plan = [] if options.compiled_only else (
                [(1, b, False) for b in options.batch_sizes]
                + [(options.beam_size, b, False) for b in options.beam_batch_sizes])
        try:
            model, system = build_system(system_name, folders, placement, options)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            if rows or train:  # the peer, after the Q-Former's rows: its rows are out of memory, the table kept
                log(f"{system_name}: out of memory while building it ({dev.out_of_memory_reason(e)}); each of its "
                    "rows is marked out of memory")
                rows.extend({"system": system_name, "beam": beam, "batch_size": batch, "compiled": False,
                             "out_of_memory": True} for beam, batch, _ in plan)
                measured()
                continue
            need, counted = weights_need(options, placement)
            raise LLMSRTError(f"out of memory building --paper-shape {options.shape}'s {system_name} system on "
                              f"{placement} ({dev.out_of_memory_reason(e)}; its weights alone take {dev.gib(need)}: "
                              f"{counted}): {room_advice(placement)}") from e
        greedy = DecodingOptions(max_new_tokens=options.new_tokens)
        compiled_plan = [(1, b, True) for b in options.compiled_batch_sizes] if system_name == "llm-srt" else []

        def run_rows(plan_rows) -> None:
            for beam, batch, compiled in plan_rows:
                log(f"{system_name}: {'greedy' if beam == 1 else f'beam {beam}'}{' compiled' if compiled else ''} "
                    f"batch {batch}")
                n = row_utterances(batch, options)
                decoding = replace(greedy, beam_size=beam, compile=compiled)
                StaticSteps.drop_caches()  # an earlier compiled row's KV buffers: live tensors, which release keeps
                release(placement.device)  # PeakMemory's reset leaves CUDA's reserved peak at what is reserved then:
                #   without this, an earlier row's or the training steps' cached blocks (31.7 GiB for 7B) were in
                #   this row's reserved_mib, and a compiled row after them never fit under --memory-gib (an earlier
                #   compiled row's CUDA graph pools stay: torch keeps them with its compiled function)
                # warm-up of this shape (compiled: at full length, the same static cache: compilation, then the
                # CUDA graph's warm-up and recording)
                warm = decoding if compiled else replace(decoding, max_new_tokens=2)
                try:  # running out of memory is a row's result (paper Table 7's peer at batch 8), not the bench's end
                    decode_pass(system, cycle(clips, batch), batch, warm)
                    done = (compiled_row(system_name, batch, system, cycle(clips, n), decoding, skips) if compiled
                            else row(system_name, beam, batch, decode_pass(system, cycle(clips, n), batch, decoding)))
                except Exception as e:
                    if not is_out_of_memory(e):
                        raise
                    done = {"system": system_name, "beam": beam, "batch_size": batch, "compiled": compiled,
                            "out_of_memory": True}
                if done["out_of_memory"]:
                    log(f"{system_name}: batch {batch} ran out of memory")
                    release(placement.device)  # outside the except block, whose traceback held the batch's tensors
                rows.append(done)
                measured()

        run_rows(plan)
        if options.max_batch and not options.compiled_only:
            search[system_name] = largest_batch(system, clips, greedy, options, placement.device, log)
            measured()
        if system_name == "llm-srt" and options.train_batch and not options.compiled_only:
            for measurement in training_rows(model, options, placement, log):
                train.append(measurement)
                measured()
        skips = cudagraph_skips()  # torch counts a skip where it compiles and records (a warm-up), once per
        #   function for some causes: a compiled row reports every skip since the first compiled warm-up began
        run_rows(compiled_plan)  # last: their static KV caches (and CUDA graphs) stay with the model, so before the
        #   search or the training rows they would be in every later peak and take room under --memory-gib
        del model, system
        release(placement.device)
    return summarize(options, placement, rows, search, train, time.perf_counter() - started)


def build_system(name: str, folders: presets.PresetFolders, placement: Placement, options: PaperOptions):
    """A random-weight SpeechLLM of the preset's shape straight on the device, behind its real system."""
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig
    from ..model.systems import SpeechLLMSystem

    fields, _ = SYSTEMS[name]
    kwargs = dict(options.adapter_kwargs or {}) if fields["adapter"] == "qformer" else {}
    config = SpeechLLMConfig(encoder=str(folders.encoder), llm=str(folders.llm), adapter_kwargs=kwargs,
                             dtype=placement.dtype_name, **fields)
    model = SpeechLLM(config, device=placement.device, weights=False).eval()
    model.quantize_adapter()  # --dtype int8 (CPU): the adapter int8 as in a loaded model
    pin_eos(model)
    model.encoder  # built now (it is lazy), so the first timed row does not pay for it
    return model, SpeechLLMSystem(model, name, placement)


def weights_need(options: PaperOptions, placement: Placement) -> tuple[int, str]:
    """The bytes of the Whisper encoder's and the LLM's weights in the placement's dtype, and what that counts: the
    presets' parameters (counted on the meta device: exact) x the dtype's bytes; the adapter, buffers, activations and
    KV caches come on top, so what building a system needs is at least this."""
    counts, size = presets.parameter_counts(options.shape), placement.dtype.itemsize
    return ((counts["llm"] + counts["encoder"]) * size,
            f"{millions(counts['llm'])} LLM + {millions(counts['encoder'])} encoder parameters x {size} bytes")


def room_advice(placement: Placement) -> str:
    smaller = ", --dtype bfloat16 (2 bytes a weight)" if placement.dtype.itemsize > 2 else ""
    return f"use a smaller --paper-shape (tiny: the same path at test size){smaller}, another --device or more memory"


def check_room(options: PaperOptions, placement: Placement) -> None:
    """On the CPU, a shape whose weights alone (`weights_need`) exceed what this process can still allocate
    (`device.available_memory_bytes`) is refused before anything is built: 7B in float32 (31 GiB) was built for
    minutes on a machine with less, to end killed or in a traceback."""
    room = dev.available_memory_bytes()
    need, counted = weights_need(options, placement)
    if room is not None and need > room[0]:
        raise LLMSRTError(f"--paper-shape {options.shape} on {placement}: its weights alone take {dev.gib(need)} "
                          f"({counted}), and this process can allocate {dev.gib(room[0])} ({room[1]}): "
                          f"{room_advice(placement)}")


def row_utterances(batch: int, options: PaperOptions) -> int:
    """A row's utterances: batch x `batches_per_row`, at least `min_utterances`, rounded up to whole batches (a
    last, smaller batch would be a shape the row never warmed up: compiled, it would compile inside the timer)."""
    n = max(batch * options.batches_per_row, options.min_utterances)
    return -(-n // batch) * batch


def compiled_row(system_name: str, batch: int, system, clips: list[np.ndarray], decoding: DecodingOptions,
                 skips_since: int = 0) -> dict:
    """A --compile row: timed as any other, and proved compiled (its steps counted by `StaticSteps`; on a GPU
    `cudagraph_skips`, the CUDA-graph skips torch counted from `skips_since` (the compiled rows' start: warm-ups
    included) to the end of this row's timed pass, which must be none for the row to measure graphs)."""
    steps = StaticSteps.steps_taken
    out = row(system_name, 1, batch, decode_pass(system, clips, batch, decoding), compiled=True)
    if StaticSteps.steps_taken == steps:
        raise LLMSRTError(f"bench: --compile did not apply to {system_name} at batch {batch} (see the warning above)")
    skips = cudagraph_skips() - skips_since  # read after the timed pass: a skip there (a recompile) counts too
    return out | {"cudagraph_skips": skips if system.model.device.type == "cuda" else None}


def cudagraph_skips() -> int:
    """The CUDA-graph skips torch has counted in this process (a function it compiled but could not record)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def cycle(clips: list[np.ndarray], n: int) -> list[np.ndarray]:
    return [clips[i % len(clips)] for i in range(n)]


def row(system: str, beam: int, batch: int, run, compiled: bool = False) -> dict:
    return {"system": system, "beam": beam, "batch_size": batch, "compiled": compiled, "utterances": run.utterances,
            "seconds": run.seconds, "seconds_per_1000": round(run.seconds / run.utterances * 1000, 2),
            "utterances_per_s": round(run.utterances / run.seconds, 2), "new_tokens": run.new_tokens,
            "speech_tokens": run.speech_tokens, "peak_mib": run.peak_mib, "rss_start_mib": run.rss_start_mib,
            "peak_rise_mib": run.peak_rise_mib, "reserved_mib": run.reserved_mib,
            "memory": run.memory, "out_of_memory": False}


def largest_batch(system, clips, greedy: DecodingOptions, options: PaperOptions, device: torch.device, log) -> dict:
    """The largest batch that fits: one timed batch per probe, doubling from `search_from` until CUDA runs out of
    memory or `max_batch` is reached (halving instead when `search_from` itself does not fit). Under `memory_gib`
    torch's CUDA allocator is capped to that much (weights included) less what the device holds outside it (the
    CUDA context, library handles: a real card of that size holds them too), for the search only."""
    capped = options.memory_gib is not None and device.type == "cuda"
    if options.memory_gib is not None and not capped:  # the CLI refuses it there but for --paper-shape tiny
        log(f"{system.name}: largest batch: --memory-gib {options.memory_gib:g} caps CUDA's allocator; on {device} "
            "the search runs uncapped")
    outside = None
    if capped:
        release(device)  # cached free blocks would be reused past the cap: the cap counts memory reserved from CUDA
        fraction, outside = memory_cap(options.memory_gib, device)
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    # from `search_from`, or from `max_batch` when that is smaller (--max-batch 64: before, no probe ran at all and
    # the result said the search had reached its end)
    probes, oom_at, batch, upwards = [], None, min(options.search_from, options.max_batch), True
    try:
        while 1 <= batch <= options.max_batch:
            log(f"{system.name}: largest batch: trying {batch}")
            run = probe(system, cycle(clips, batch), batch, greedy, device)
            if run is not None:
                probes.append(row(system.name, 1, batch, run))
                if not upwards:
                    break  # searching downwards: the first batch that fits is the largest
                batch *= 2
                continue
            oom_at = batch  # the smallest batch seen not to fit
            if probes:
                break
            upwards, batch = False, batch // 2  # search_from itself does not fit: halve until one does
    finally:
        if capped:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        release(device)
    return {"probes": probes, "largest_fit": max((p["batch_size"] for p in probes), default=None),
            "out_of_memory_at": oom_at, "capped_at_max_batch": oom_at is None,
            "memory_gib": options.memory_gib if capped else None,
            "outside_allocator_mib": None if outside is None else round(outside / 2**20)}


def memory_cap(memory_gib: float, device: torch.device) -> tuple[float, int]:
    """(the fraction of the device's memory torch's allocator may reserve so that the device holds at most
    `memory_gib` GiB in all, the bytes the device holds outside the allocator now): the CUDA context and library
    handles (~0.5 GiB) sit on a 24 GiB card beside what torch reserves, and `set_per_process_memory_fraction` caps
    only the latter."""
    free, total = torch.cuda.mem_get_info(device)
    outside = max(0, total - free - torch.cuda.memory_reserved(device))  # other processes' memory too, if any
    if outside >= memory_gib * 2**30:
        raise LLMSRTError(f"bench --memory-gib {memory_gib:g}: the device holds {outside / 2**30:.2f} GiB outside "
                          "this process's allocator already (its CUDA context; other processes on a shared GPU): "
                          "give a larger cap, or run on a GPU of its own")
    return min(1.0, (memory_gib * 2**30 - outside) / total), outside


def probe(system, audios, batch: int, greedy: DecodingOptions, device: torch.device):
    """decode_pass after a warm-up at this batch size (as every row has: a probe's time is compared with the rows'),
    or None when it ran out of memory (the memory is released outside the except block, where the traceback no
    longer holds the failed batch's tensors)."""
    try:
        decode_pass(system, audios, batch, replace(greedy, max_new_tokens=2))
        return decode_pass(system, audios, batch, greedy)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
    release(device)
    return None


def training_rows(model, options: PaperOptions, placement: Placement, log) -> Iterator[dict]:
    """Yields, each as it is measured, the seconds per step and peak memory of the SRT stage's step at
    `train_batch`: SpeechLLM.forward on cached encoder features (the recipe's input) + backward to the Q-Former +
    AdamW, under the recipe's bf16 autocast on CUDA (configs/paper's precision: whatever the weights' dtype);
    first without, then with
    `train.parallel.apply_activation_checkpointing` (it cannot be undone), then with checkpointing and `head_losses`
    in blocks of TRAIN_WIDE_HEAD_BLOCKS times its default (fewer, larger head products: whether the default block
    suits a GPU is measured there). The trained weights are restored after the rows, as the embedded bench's
    training comparison does (the compiled rows decode after them); their copy waits on the CPU, outside the peaks."""
    from ..model import llm
    from ..train.parallel import apply_activation_checkpointing

    device = placement.device
    batch = training_batch(model, options)
    params = model.trainable_parameters()
    saved = [p.detach().to("cpu", copy=True) for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = recipe_autocast(device, "bf16")  # configs/paper's precision: bf16 on any GPU, whatever the weights
    model.train()
    default_block, layers = llm.HEAD_BLOCK_LOGITS, None  # layers: None until checkpointing is applied (once)
    try:  # the weights restored however the rows end (an error, a caller that stops reading them)
        for checkpointing, block in ((False, default_block), (True, default_block),
                                     (True, TRAIN_WIDE_HEAD_BLOCKS * default_block)):
            if checkpointing and layers is None:
                layers = apply_activation_checkpointing(model)
            log(f"llm-srt: training step, batch {options.train_batch}, activation checkpointing "
                f"{'on (' + str(layers) + ' layers)' if checkpointing else 'off'}, head loss in blocks of {block} "
                "logits")
            times, loss, oom = [], None, False
            llm.HEAD_BLOCK_LOGITS = block
            release(device)  # PeakMemory's reset leaves CUDA's reserved peak at what is reserved then: the row before's
            #   cached blocks (or the decode rows') would be this row's reserve
            try:
                with PeakMemory(device) as memory:
                    for step in range(options.train_steps + 1):  # step 0 warms up
                        dev.synchronize(device)
                        t0 = time.perf_counter()
                        optimizer.zero_grad(set_to_none=True)
                        with autocast:
                            loss = model(batch)["loss"]
                        loss.backward()
                        optimizer.step()
                        dev.synchronize(device)
                        if step:
                            times.append(time.perf_counter() - t0)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                oom = True
            finally:
                llm.HEAD_BLOCK_LOGITS = default_block
            if oom:
                loss = None
                optimizer.zero_grad(set_to_none=True)
                release(device)
                yield {"activation_checkpointing": checkpointing, "batch_size": options.train_batch,
                       "head_block_logits": block, "out_of_memory": True}
                continue
            if not torch.isfinite(loss):
                raise LLMSRTError(f"bench: training step loss is {loss.item()}")
            yield {"activation_checkpointing": checkpointing, "layers_recomputed": layers if checkpointing else 0,
                   "head_block_logits": block, "batch_size": options.train_batch,
                   "s_per_step": round(float(np.median(times)), 4),
                   "steps": options.train_steps, "peak_mib": memory.mib, "reserved_mib": memory.reserved_mib,
                   "rss_start_mib": memory.start_mib, "peak_rise_mib": memory.rise_mib, "memory": memory.kind,
                   "target_tokens": options.train_target_tokens, "out_of_memory": False}
    finally:
        model.eval()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


def training_batch(model, options: PaperOptions) -> dict:
    """An SRT batch as the recipe feeds it: cached encoder features (B, frames, d) with their mask, the prompt
    `<|eng|><|deu|>` and `train_target_tokens` target ids ending with EOS (pre-tokenized)."""
    g = torch.Generator().manual_seed(options.seed)
    b, frames = options.train_batch, options.train_speech_frames
    features = torch.randn(b, frames, model.encoder_dim, generator=g).to(model.device)
    prompt = model.tokenizer(build(Task.SRT, "eng", "deu")[0], add_special_tokens=False)["input_ids"]
    vocab = len(model.tokenizer)
    targets = torch.randint(0, vocab, (b, options.train_target_tokens - 1), generator=g).tolist()
    eos = model.tokenizer.eos_token_id
    return {"features": features, "feature_mask": torch.ones(b, frames, dtype=torch.bool, device=model.device),
            "prompt_ids": [list(prompt)] * b, "target_ids": [t + [eos] for t in targets]}


def summarize(options: PaperOptions, placement: Placement, rows: list[dict], search: dict, train: list[dict],
              seconds: float) -> dict:
    ran = [r for r in rows if not r.get("out_of_memory")]  # what the ratios, best batch and goals may pick from

    def find(system, beam, batch):
        return next((r for r in ran if (r["system"], r["beam"], r["batch_size"]) == (system, beam, batch)
                     and not r.get("compiled")), None)

    equal = {}
    for batch in options.pooled_batch_sizes:
        a, b = find("llm-srt", 1, batch), find("pooled-750", 1, batch)
        if a and b:
            equal[str(batch)] = round(rate(a) / rate(b), 2)
    # the 19 s goal: --compile rows count; under a capped search only what fitted the cap (a compiled row runs
    # after the search, uncapped, so a batch the cap would not hold could set the goal)
    greedy = within_cap([r for r in ran if r["system"] == "llm-srt" and r["beam"] == 1]
                        + search.get("llm-srt", {}).get("probes", []), search.get("llm-srt", {}))
    best = min(greedy, key=lambda r: r["seconds_per_1000"]) if greedy else None

    def best_of(system):
        """The fastest eager greedy run of `system` that stayed within the search's memory cap (if any): the pooled
        peer has no compiled rows, so CUDA graphs must not be credited to the Q-Former in their ratio."""
        found = search.get(system, {})
        candidates = within_cap([r for r in ran if r["system"] == system and r["beam"] == 1 and not r.get("compiled")]
                                + found.get("probes", []), found)
        return max(candidates, key=rate) if candidates else None

    fit = {s: best_of(s) for s in SYSTEMS}
    searched = any(s.get("probes") for s in search.values())  # a search that ran no probe measured no largest batch
    at_largest = (round(rate(fit["llm-srt"]) / rate(fit["pooled-750"]), 2)
                  if all(fit.values()) and searched else None)
    bound = ratio_bound(search) if at_largest is not None else None
    return {
        **setting(options, placement), "decode": rows, "largest_batch": search, "train": train,
        "best_greedy": {k: best.get(k, False) for k in ("batch_size", "seconds_per_1000", "utterances_per_s",
                                                         "compiled")} if best else None,
        "qformer_vs_pooled_at_equal_batch": equal,
        "qformer_vs_pooled_at_largest_batch": at_largest,
        "qformer_vs_pooled_at_largest_batch_bound": bound,
        "goals": goals(options.shape, placement, best and best["seconds_per_1000"], at_largest, bound),
        "bench_seconds": round(seconds, 1), "finished": True,
    }


def rate(row: dict) -> float:
    """A row's utterances per second unrounded, for the ratios: its `utterances_per_s` is rounded to 2 decimals, so
    a 7B shape on the CPU (0.01 utt/s) made the ratio coarse, or one of 0.00 a ZeroDivisionError at the bench's end."""
    return row["utterances"] / row["seconds"]


def setting(options: PaperOptions, placement: Placement) -> dict:
    """What a result says of its run before the rows: shape, device, parameter counts, options."""
    return {"shape": options.shape, "device": str(placement.device), "dtype": placement.dtype_name,
            "gpu": torch.cuda.get_device_name(placement.device) if placement.cuda else None,
            "torch": torch.__version__, "parameters": presets.parameter_counts(options.shape),
            "options": asdict(options)}


def so_far(about: dict, rows: list[dict], search: dict, train: list[dict], seconds: float) -> dict:
    """A run's result before its end: `setting`'s keys and the measurements (copies: the run goes on adding to its
    own), `finished` false, and none of the ratios, best batch or goals, which are drawn from every row (a ratio
    over the pooled system's rows before its search would pass for the equal-memory one)."""
    return {**about, "decode": list(rows), "largest_batch": dict(search), "train": list(train),
            "bench_seconds": round(seconds, 1), "finished": False}


def within_cap(runs: list[dict], found: dict) -> list[dict]:
    """The runs a capped search (`found`, one system's `largest_batch`) lets count: within what it let the allocator
    have (the cap less what the device held outside it; a row's reserved peak where it has one: the cap limits what
    the allocator reserves, cached blocks and CUDA graphs' pools included, not only what it hands out) and below any
    batch it saw run out of it; all of them when the search was not capped."""
    cap, oom = found.get("memory_gib"), found.get("out_of_memory_at")
    if cap is None:
        return runs
    room = cap * 1024 - (found.get("outside_allocator_mib") or 0)
    return [r for r in runs if (r.get("reserved_mib") or r["peak_mib"]) <= room
            and (oom is None or r["batch_size"] < oom)]


BOUND_NOTES = {  # what the ratio at the largest batch is when a search stopped at --max-batch, not out of memory
    "lower": "a lower bound: the Q-Former's search stopped at --max-batch, not at out-of-memory",
    "upper": "an upper bound: the pooled system's search stopped at --max-batch, not at out-of-memory",
    "none": "both searches stopped at --max-batch, not at out-of-memory: a ratio at equal batch, not equal memory",
}


def ratio_bound(search: dict) -> str:
    """What the ratio at each one's largest batch is: "exact" when both searches ended at out-of-memory; else on
    which side of the equal-memory ratio it lies, a search that stopped at --max-batch having perhaps had room for a
    larger, faster batch ("lower": the Q-Former's, so the true ratio is higher; "upper": the pooled system's;
    "none": both, a ratio at equal batch)."""
    stopped = {s: search.get(s, {}).get("capped_at_max_batch", False) for s in SYSTEMS}
    return {(False, False): "exact", (True, False): "lower", (False, True): "upper", (True, True): "none"}[
        stopped["llm-srt"], stopped["pooled-750"]]


def goals(shape: str, placement: Placement, seconds_per_1000: float | None, speedup: float | None,
          bound: str | None = "exact") -> dict:
    """Issue goals, judged only where they apply and were measured: the 19 s goal is LLM-SRT-7B's on one GPU, the 3x
    ratio any paper shape's on a GPU (`met` is None elsewhere: a tiny or CPU run proves the path, not the speed; and
    a run without the search, --compiled-only or --max-batch 0, measures no ratio). A ratio that is only a bound
    (`ratio_bound`) is judged only where the bound decides: a lower bound at or above the target is met, an upper
    one below it missed; else, and always when both searches stopped at --max-batch, not judged (`note` says why)."""
    on_gpu = placement.cuda and shape != "tiny"
    met = None
    if on_gpu and speedup is not None:
        reached = speedup >= GOAL_SPEEDUP
        met = {"exact": reached, "lower": True if reached else None, "upper": None if reached else False}.get(
            bound or "exact")
    return {"seconds_per_1000_at_best_batch": {
                "target": GOAL_SECONDS_PER_1000, "value": seconds_per_1000, "applies_to": "qwen2.5-7b on a GPU",
                "met": seconds_per_1000 <= GOAL_SECONDS_PER_1000
                if on_gpu and shape == "qwen2.5-7b" and seconds_per_1000 is not None else None},
            "qformer_vs_pooled_at_equal_memory": {
                "target": GOAL_SPEEDUP, "value": speedup, "applies_to": "a paper shape on a GPU", "met": met,
                "bound": bound, "note": BOUND_NOTES.get(bound) if speedup is not None else None}}


def millions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def format_paper(result: dict) -> str:
    """Paper Table 7's shape: seconds per 1,000 utterances by system, search and batch; then the search, the
    training steps and the goals."""
    o = result["options"]
    probes = [p for s in result["largest_batch"].values() for p in s["probes"]]
    # on CUDA the reserved peak beside the allocated one where the rows have it: what a card must hold
    reserved = any(r.get("reserved_mib") is not None for r in result["decode"] + probes)
    mem = (RESERVED if reserved else GPU_PEAK) if result["device"].startswith("cuda") else RSS_PEAK
    lines = [f"Paper shape {result['shape']} (LLM {millions(result['parameters']['llm'])}, Whisper encoder "
             f"{millions(result['parameters']['encoder'])}; random weights) on {result['gpu'] or result['device']} "
             f"{result['dtype']}: {o['clip_seconds']:g} s clips, exactly {o['new_tokens']} generated tokens each",
             "",
             f"{'system':38} {'search':8} {'batch':>5} {'s/1000 utt':>11} {'utt/s':>8} {'speech tok':>10} "
             f"{mem:>13}"]
    for r in result["decode"] + probes:
        search = ("compiled" if r.get("compiled") else "greedy") if r["beam"] == 1 else f"beam {r['beam']}"
        head = f"{SYSTEMS[r['system']][1]:38} {search:8} {r['batch_size']:>5}"
        lines.append(f"{head} {'out of memory':>11}" if r.get("out_of_memory") else
                     f"{head} {r['seconds_per_1000']:>11.1f} {r['utterances_per_s']:>8.2f} {r['speech_tokens']:>10} "
                     f"{memory_cell(r, mem):>13}")
    if mem == RESERVED:
        lines.append(reserved_legend("what --memory-gib caps"))
    lines.append("")
    for system, s in result["largest_batch"].items():
        cap = f" under a {s['memory_gib']:g} GiB cap" if s["memory_gib"] else ""
        if s["memory_gib"] and s.get("outside_allocator_mib") is not None:
            cap += f" ({s['outside_allocator_mib']:,} MiB of it held outside torch's allocator)"
        tried = max((p["batch_size"] for p in s["probes"]), default=None)  # doubling may stop below --max-batch
        end = (f"out of memory at {s['out_of_memory_at']}" if s["out_of_memory_at"] else
               f"no out-of-memory up to {tried}, the largest batch tried (--max-batch {o['max_batch']})")
        fit = s["largest_fit"] if s["largest_fit"] is not None else "no batch fits, not even 1"
        lines.append(f"largest batch{cap}, {SYSTEMS[system][1]}: {fit} ({end})")
    for t in result["train"]:
        ckpt = "with" if t["activation_checkpointing"] else "without"
        lines.append(f"training step (SRT stage, batch {t['batch_size']}) {ckpt} activation checkpointing, head "
                     f"loss in blocks of {t['head_block_logits'] / 2**20:g}M logits: " +
                     ("out of memory" if t["out_of_memory"] else f"{t['s_per_step']:.3f} s/step, peak "
                      f"{t['peak_mib']:.0f} MiB" + (f", {t['reserved_mib']:.0f} MiB reserved by torch's allocator"
                                                   if t.get("reserved_mib") is not None else "")))
    note = BOUND_NOTES.get(result.get("qformer_vs_pooled_at_largest_batch_bound"))  # (older results: none)
    lines.append(f"Q-Former / pooled utterances/s at equal batch: {result['qformer_vs_pooled_at_equal_batch']}; "
                 f"at each one's largest batch: {result['qformer_vs_pooled_at_largest_batch']}"
                 + (f" ({note})" if note else ""))
    on_gpu = result["device"].startswith("cuda") and result["shape"] != "tiny"
    for key, goal in result["goals"].items():
        note = goal.get("note") if on_gpu else None  # elsewhere the goal does not apply, bound or not
        verdict = ("not measured in this run" if goal["value"] is None else
                   f"not judged ({note})" if goal["met"] is None and note else
                   f"not judged (the goal is for {goal['applies_to']})" if goal["met"] is None else
                   ("met" if goal["met"] else "MISSED") + (f" ({note})" if note else ""))
        lines.append(f"goal {key}: {goal['value']} (target {goal['target']}) {verdict}")
    lines.append(f"(bench took {result['bench_seconds']:.0f} s)")
    return "\n".join(lines)
