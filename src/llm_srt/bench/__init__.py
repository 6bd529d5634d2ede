"""`llm-srt bench`: speed and memory in the shape of paper Table 7.

    llm-srt bench [--model DIR] [--quick] [--json]                       # embedded models (bench/embedded.py),
                                                                         # + Whisper vs faster-whisper (whisper.py)
    llm-srt bench --device cuda --paper-shape qwen2.5-7b [--json-out F]  # paper shapes, random weights (paper.py)

Both time the code users run (the systems' `run_batch`, `SpeechTranslator.translate`, `SpeechLLM.forward`), with
timers read after `device.synchronize` and peak memory from `device.peak_memory_bytes` on CUDA (RSS on the CPU).
--json-out is rewritten (whole, by a rename) after each measurement with what the run has so far, `finished` false,
and at the end with the result, `finished` true: a bench stopped from outside leaves every row it finished. A file
that cannot be written is refused before anything runs; one that fails later (a full disk) is said once, and the
table is still printed, before the last write.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from .. import device as dev
from .. import paths
from ..errors import LLMSRTError
from ..model.presets import PRESETS
from ..paths import WRITE_ERRNOS, WRITE_HINTS, atomic_file, free_space
from .embedded import DEFAULT_MANIFEST, DEFAULT_TRAINED, QUICK, BenchOptions, _is_qformer_model, run_bench
from .paper import TINY, PaperOptions, format_paper, run_paper
from .table import format_table

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
    parser.add_argument("--manifest", default=None, help="utterances from this manifest (default: the embedded mini "
                        f"test set, {DEFAULT_MANIFEST}; espeak-ng clips if it is missing)")
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
                        help="--paper-shape: only the compiled rows (--compile-batches'; tiny has batch 2 of its "
                             "own, the paper shapes none)")
    parser.add_argument("--no-train", action="store_true", help="--paper-shape: skip the training-step rows")
    parser.add_argument("--batches-per-row", type=int, default=None, help="--paper-shape: batches timed per row "
                        f"(default {PaperOptions.batches_per_row})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file (rewritten as "
                        "each row is measured, with \"finished\": false until the end)")


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
PAPER_FLAGS = {  # flags only --paper-shape uses: what each is for there
    "max_batch": ("--max-batch", "where its largest-batch search stops"),
    "memory_gib": ("--memory-gib", "its largest-batch search's memory cap"),
    "compile_batches": ("--compile-batches", "its compiled greedy rows"),
    "compiled_only": ("--compiled-only", "its compiled rows alone"),
    "no_train": ("--no-train", "skips its training-step rows"),
    "batches_per_row": ("--batches-per-row", "batches timed per row"),
}
EMBEDDED_FLAGS = {  # flags only the embedded-model bench uses
    "model": ("--model", "the trained model whose adapter it times; --paper-shape builds random weights"),
    "n": ("--n", "utterances per configuration; a --paper-shape row times batch x --batches-per-row"),
    "manifest": ("--manifest", "where its utterances come from; --paper-shape times noise clips"),
    "quick": ("--quick", "fewer configurations"),
    "no_cascade": ("--no-cascade", "skips the cascade, which --paper-shape does not run"),
    "no_whisper": ("--no-whisper", "skips the Whisper row, which --paper-shape does not run"),
}
SEARCH_FLAGS = ("max_batch", "memory_gib", "no_train")  # what --compiled-only leaves nothing for


def given(args, name: str) -> bool:
    value = getattr(args, name, None)
    return value is not None and value is not False  # not `in (None, False)`: 0 == False, and --max-batch 0 is given


def check_arguments(args) -> None:
    """One-line errors for values that meant nothing: --dtype int8 (it failed at the training rows, on either path,
    after a minute of rows; the embedded bench times int8 in rows of its own in a CPU float32 run), a count of 0
    (`--n 0`: the default, silently), a negative --max-batch (no search, silently) or --threads (torch's
    RuntimeError traceback), a --memory-gib <= 0 (checked on CUDA only, after the models had loaded); then for
    flags the chosen path would drop without a word (the embedded bench took --max-batch, --memory-gib, ... and
    --paper-shape took --n, --model, ...). A value is checked before its path, on either path."""
    if dev.is_int8(args.dtype):
        raise LLMSRTError("--dtype int8: the bench times int8 in rows of its own in a CPU float32 run, and int8 "
                          "layers cannot run its training rows: run `llm-srt bench --device cpu --dtype float32`")
    if args.threads < 0:  # torch.set_num_threads(-1): a RuntimeError traceback
        raise LLMSRTError(f"--threads {args.threads}: give a number of CPU threads >= 1, or 0 for torch's default")
    for name, flag in COUNTS.items():
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LLMSRTError(f"{flag} {getattr(args, name)}: give a number >= 1, or leave it out for the default")
    if args.max_batch is not None and args.max_batch < 0:
        raise LLMSRTError(f"--max-batch {args.max_batch}: give the largest batch to search, or 0 for no search")
    if args.memory_gib is not None and not args.memory_gib > 0:
        raise LLMSRTError(f"--memory-gib {args.memory_gib:g}: give the GiB the search may use, > 0")
    if not args.paper_shape:
        for name, (flag, what) in PAPER_FLAGS.items():
            if given(args, name):
                raise LLMSRTError(f"{flag}: a --paper-shape flag ({what}); the embedded-model bench does not use it: "
                                  "leave it out, or add --paper-shape")
        return
    for name, (flag, what) in EMBEDDED_FLAGS.items():
        if given(args, name):
            raise LLMSRTError(f"{flag}: a flag of the embedded-model bench ({what}); --paper-shape does not use "
                              "it: leave it out")
    for name in SEARCH_FLAGS if args.compiled_only else ():
        if given(args, name) and not (name == "max_batch" and args.max_batch == 0):  # 0: no search, as it says
            raise LLMSRTError(f"{PAPER_FLAGS[name][0]}: --compiled-only runs no largest-batch search and no training "
                              "rows, so it would be dropped: leave one of the two out")
    if args.max_batch == 0 and args.memory_gib is not None:
        raise LLMSRTError("--memory-gib caps the largest-batch search, which --max-batch 0 turns off: leave one of "
                          "the two out")


def check_placement(args, placement: dev.Placement) -> None:
    """--memory-gib caps CUDA's allocator: elsewhere nothing would cap the search. `--paper-shape tiny` keeps it (a
    rehearsal of a GPU command line: `make gpu-check DEVICE=cpu` passes --memory-gib 24), and the search logs that
    it runs uncapped."""
    if args.paper_shape not in (None, "tiny") and args.memory_gib is not None and not placement.cuda:
        raise LLMSRTError(f"--memory-gib {args.memory_gib:g}: it caps CUDA's allocator during the largest-batch "
                          f"search, and this run is on {placement.device}: run on a GPU (--device cuda), or leave it "
                          "out")


def write_json(path: str | Path, result: dict) -> None:
    """`result` into `path` whole: a temporary file beside it, renamed over it, so that a bench killed while writing
    leaves the last whole result, never half of one. An OSError is a one-line LLMSRTError naming --json-out."""
    try:
        paths.write_json(path, result)
    except OSError as e:
        raise json_out_error(path, e) from None


def json_out_error(path: str | Path, e: OSError) -> LLMSRTError:
    if isinstance(e, FileExistsError):  # (mkdir of a folder on its path)
        why = f"{e.filename} is a file, not a folder"
    else:
        why = f"{e.strerror or e}" + (f": {e.filename}" if e.filename is not None else "")
    if e.errno in WRITE_ERRNOS:  # a full, quota-bound or read-only disk
        why += f"; {free_space(Path(path).parent)}"
    hint = f"{WRITE_HINTS[e.errno]} or " if e.errno in WRITE_HINTS else ""
    return LLMSRTError(f"--json-out {path}: cannot write it ({why}); {hint}give a file in a folder you can write")


def check_json_out(path: str) -> None:
    """--json-out tried before anything is measured (it failed with a traceback at the first row, after the models
    were built): a temporary file written beside it, then removed; the file itself is left as it is until the
    first row, so a run refused before then keeps an earlier result."""
    if Path(path).is_dir():
        raise LLMSRTError(f"--json-out {path}: a folder; give a file to write, e.g. {Path(path) / 'bench.json'}")
    staged: list[tuple[Path, Path]] = []
    try:
        with atomic_file(path, staged=staged) as f:
            f.write("{}\n")
    except OSError as e:
        raise json_out_error(path, e) from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def progress_writer(path: str, log):
    """`partial` for the runs: the result so far into --json-out. A write that fails (a disk filled during the run)
    is said once and the bench goes on to print its table; each later row tries again (it was a traceback, no
    table, after minutes of rows)."""
    failed: list[LLMSRTError] = []

    def partial(so_far: dict) -> None:
        try:
            write_json(path, so_far)
        except LLMSRTError as e:
            if not failed:
                log(f"WARNING: {e}; the bench goes on, prints its table at the end and tries the file after each row")
            failed.append(e)

    return partial


def main(args) -> int:
    check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    placement = dev.from_args(args)
    check_placement(args, placement)
    if args.json_out:
        check_json_out(args.json_out)
    dev.make_current(placement)  # --device cuda:N: its CUDA graphs and library handles there too, not on cuda:0
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    # the result so far into --json-out after each measurement: what a bench stopped from outside (a time limit, a
    #   kill, the process out of memory) measured is not lost with it
    progress = {"partial": progress_writer(args.json_out, log)} if args.json_out else {}
    if args.paper_shape:
        with tempfile.TemporaryDirectory(prefix="llm-srt-bench-") as tmp:
            result = run_paper(paper_options(args), placement, Path(tmp), log=log, **progress)
        table = format_paper(result)
    else:
        model = args.model or (DEFAULT_TRAINED if _is_qformer_model(Path(DEFAULT_TRAINED)) else None)
        options = BenchOptions(model=model, manifest=DEFAULT_MANIFEST if args.manifest is None else args.manifest,
                               cascade=not args.no_cascade)
        if args.quick:
            options = replace(options, **QUICK)
        options = replace(options, n=args.n or options.n, new_tokens=args.new_tokens or options.new_tokens)
        result = run_bench(options, placement, log=log, **progress)
        table = format_table(result)
        if not args.no_whisper:
            if args.json_out:  # the rows so far, before the Whisper row's half a minute
                progress["partial"]({**result, "finished": False})
            from .whisper import WhisperBenchOptions, format_whisper, run_whisper_bench

            log("whisper: translate --model whisper vs faster-whisper, alternating whole processes")
            try:
                result["whisper"] = run_whisper_bench(WhisperBenchOptions(threads=args.threads), placement, log=log)
            except Exception as e:  # the rows measured before it are still printed and written: any error (an
                #   import of ctranslate2 in this process, espeak-ng's, a child's output unreadable) lost them all
                if getattr(args, "debug", False):  # (set by the CLI)
                    traceback.print_exc()
                failed = str(e) if isinstance(e, LLMSRTError) else f"{type(e).__name__}: {e}"
                log(f"whisper row failed: {failed}")
                result["whisper"] = {"failed": failed}
            table += "\n" + format_whisper(result["whisper"])
    print(json.dumps(result, indent=2) if args.json else table, flush=True)
    if args.json_out:  # after the table: a write that fails (one line, exit 2) loses none of it
        try:
            write_json(args.json_out, result)
        except LLMSRTError as e:
            raise LLMSRTError(f"{e} (the {'JSON' if args.json else 'table'} above is the whole result)") from None
    return 1 if any("failed" in (result.get(row) or {}) for row in ("cascade", "whisper")) else 0
