"""`llm-srt bench`: speed and memory in the shape of paper Table 7.

    llm-srt bench [--model DIR] [--quick] [--json]                       # embedded models (bench/embedded.py),
                                                                         # + Whisper vs faster-whisper (whisper.py)
    llm-srt bench --device cuda --paper-shape qwen2.5-7b [--json-out F]  # paper shapes, random weights (paper.py)

Both time the code users run (the systems' `run_batch`, `SpeechTranslator.translate`, `SpeechLLM.forward`), with
timers read after `device.synchronize` and peak memory from `device.peak_memory_bytes` on CUDA (RSS on the CPU).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from .. import device as dev
from ..errors import LLMSRTError
from ..model.presets import PRESETS
from .embedded import DEFAULT_MANIFEST, DEFAULT_TRAINED, QUICK, BenchOptions, _is_qformer_model, format_table, \
    run_bench
from .paper import TINY, PaperOptions, format_paper, run_paper

__all__ = ["BenchOptions", "PaperOptions", "run_bench", "run_paper", "format_table", "format_paper", "main",
           "add_arguments"]


def add_arguments(parser) -> None:
    dev.add_arguments(parser)
    parser.add_argument("--paper-shape", choices=sorted(PRESETS), default=None,
                        help="benchmark Whisper-large-v3 + this Qwen2.5 shape with random weights (no download) "
                             "instead of the embedded models; 'tiny' runs the same path at test size")
    parser.add_argument("--model", default=None, help="trained model folder whose Q-Former adapter is timed "
                        f"(default: {DEFAULT_TRAINED} if it has one, else a fresh Q-Former on the embedded models)")
    parser.add_argument("--n", type=int, default=None, help=f"utterances per configuration (default {BenchOptions.n})")
    parser.add_argument("--new-tokens", type=int, default=None, help="generated tokens per utterance (default: "
                        f"{BenchOptions.new_tokens}; with --paper-shape {PaperOptions.new_tokens})")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="utterances from this manifest "
                        "(default: the embedded mini test set; espeak-ng clips if it is missing)")
    parser.add_argument("--quick", action="store_true", help="fewer configurations (same JSON keys)")
    parser.add_argument("--no-cascade", action="store_true", help="skip the cascade (c)")
    parser.add_argument("--no-whisper", action="store_true", help="skip the paired `translate --model whisper` vs "
                        "faster-whisper row (it runs when faster-whisper is installed)")
    parser.add_argument("--max-batch", type=int, default=None, help="--paper-shape: the largest-batch search stops "
                        f"here (default {PaperOptions.max_batch}; 0 = no search)")
    parser.add_argument("--memory-gib", type=float, default=None, help="--paper-shape: cap the GPU memory the "
                        "largest-batch search may use (e.g. 24 for the paper's RTX 4090)")
    parser.add_argument("--compile-batches", default=None, metavar="B,B",
                        help="--paper-shape: also time LLM-SRT greedy with --compile (static KV cache; CUDA graphs on "
                             "a GPU) at these batch sizes, e.g. 1,64")
    parser.add_argument("--compiled-only", action="store_true",
                        help="--paper-shape with --compile-batches: only the compiled rows")
    parser.add_argument("--no-train", action="store_true", help="--paper-shape: skip the training-step rows")
    parser.add_argument("--batches-per-row", type=int, default=None, help="--paper-shape: batches timed per row "
                        f"(default {PaperOptions.batches_per_row})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file")


def paper_options(args) -> PaperOptions:
    o = PaperOptions(shape=args.paper_shape, memory_gib=args.memory_gib)
    if args.paper_shape == "tiny":  # the test-size path: a small Q-Former, few and small batches
        o = replace(o, **TINY)
    return replace(o, new_tokens=args.new_tokens or o.new_tokens,
                   max_batch=o.max_batch if args.max_batch is None else args.max_batch,
                   batches_per_row=args.batches_per_row or o.batches_per_row,
                   train_batch=0 if args.no_train else o.train_batch,
                   compiled_batch_sizes=batch_list(args.compile_batches) if args.compile_batches
                   else o.compiled_batch_sizes, compiled_only=args.compiled_only)


def batch_list(text: str) -> tuple[int, ...]:
    """'1,64' -> (1, 64); a one-line error for anything but positive whole numbers."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise LLMSRTError(f"--compile-batches {text!r}: use batch sizes >= 1 separated by commas, e.g. 1,64")
    return sizes


COUNTS = {"n": "--n", "new_tokens": "--new-tokens", "batches_per_row": "--batches-per-row"}  # >= 1 when given


def check_arguments(args) -> None:
    """One-line errors for values that meant nothing: a count of 0 (`--n 0`: the default, silently), a negative
    --max-batch (no search, silently) or --threads (torch's RuntimeError traceback), a --memory-gib <= 0 (checked on
    CUDA only, after the models had loaded)."""
    if args.threads < 0:  # torch.set_num_threads(-1): a RuntimeError traceback
        raise LLMSRTError(f"--threads {args.threads}: give a number of CPU threads >= 1, or 0 for torch's default")
    for name, flag in COUNTS.items():
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LLMSRTError(f"{flag} {getattr(args, name)}: give a number >= 1, or leave it out for the default")
    if args.max_batch is not None and args.max_batch < 0:
        raise LLMSRTError(f"--max-batch {args.max_batch}: give the largest batch to search, or 0 for no search")
    if args.memory_gib is not None and not args.memory_gib > 0:
        raise LLMSRTError(f"--memory-gib {args.memory_gib:g}: give the GiB the search may use, > 0")


def main(args) -> int:
    check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    placement = dev.from_args(args)
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.paper_shape:
        with tempfile.TemporaryDirectory(prefix="llm-srt-bench-") as tmp:
            result = run_paper(paper_options(args), placement, Path(tmp), log=log)
        table = format_paper(result)
    else:
        model = args.model or (DEFAULT_TRAINED if _is_qformer_model(Path(DEFAULT_TRAINED)) else None)
        options = BenchOptions(model=model, manifest=args.manifest, cascade=not args.no_cascade)
        if args.quick:
            options = replace(options, **QUICK)
        options = replace(options, n=args.n or options.n, new_tokens=args.new_tokens or options.new_tokens)
        result = run_bench(options, placement, log=log)
        table = format_table(result)
        if not args.no_whisper:
            from .whisper import WhisperBenchOptions, format_whisper, run_whisper_bench

            log("whisper: translate --model whisper vs faster-whisper, alternating whole processes")
            try:
                result["whisper"] = run_whisper_bench(WhisperBenchOptions(threads=args.threads), placement, log=log)
            except LLMSRTError as e:  # the rows measured before it are still printed and written
                log(f"whisper row failed: {e}")
                result["whisper"] = {"failed": str(e)}
            table += "\n" + format_whisper(result["whisper"])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else table)
    return 1 if "failed" in result.get("whisper", {}) else 0
