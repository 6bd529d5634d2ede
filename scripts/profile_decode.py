#!/usr/bin/env python3
"""Where a paper-shape LLM-SRT greedy decode spends its time: torch.profiler over `SpeechLLMSystem.run_batch` (the
code `translate`, `evaluate` and `serve` run), random weights built from config (`model/presets.py`).

    python3 scripts/profile_decode.py --shape qwen2.5-7b --batches 1,64,256 --tokens 64 --out profile.txt

For each batch: the wall time of 2 and of `--tokens` generated tokens (after a warm-up), then the profiler's top
operators by self device time (CUDA) or self CPU time, and the totals: self CPU time against self GPU time tells
whether the decode is bound by the host (Python and kernel launches) or by the GPU. Diagnostic only; the goals are
judged by `llm-srt bench`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from llm_srt import device as dev  # noqa: E402
from llm_srt.bench.common import decode_pass, noise_clips  # noqa: E402
from llm_srt.bench.paper import TINY, PaperOptions, build_system  # noqa: E402
from llm_srt.model import presets  # noqa: E402
from llm_srt.model.decoding import DecodingOptions  # noqa: E402


def timed(system, clips, batch: int, options: DecodingOptions, device) -> float:
    dev.synchronize(device)
    t0 = time.perf_counter()
    decode_pass(system, clips[:batch], batch, options)
    dev.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="qwen2.5-7b", choices=sorted(presets.PRESETS))
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per utterance")
    parser.add_argument("--rows", type=int, default=22, help="operators listed per batch")
    parser.add_argument("--out", required=True, help="the report (text)")
    dev.add_arguments(parser)
    args = parser.parse_args(argv)
    placement = dev.from_args(args)
    cuda = placement.device.type == "cuda"
    batches = [int(b) for b in args.batches.split(",")]
    options = PaperOptions(shape=args.shape)
    options = replace(options, **TINY) if args.shape == "tiny" else options
    greedy = DecodingOptions(max_new_tokens=args.tokens)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    with tempfile.TemporaryDirectory(prefix="llm-srt-profile-") as tmp, open(args.out, "w") as out:
        _, system = build_system("llm-srt", presets.write_folders(args.shape, Path(tmp)), placement, options)
        clips = noise_clips(max(batches), options.clip_seconds, options.seed)
        for batch in batches:
            timed(system, clips, batch, replace(greedy, max_new_tokens=2), placement.device)  # warm-up
            short, full = (timed(system, clips, batch, replace(greedy, max_new_tokens=n), placement.device)
                           for n in (2, args.tokens))
            print(f"batch {batch}: {short:.3f} s for 2 tokens, {full:.3f} s for {args.tokens} "
                  f"({(full - short) / (args.tokens - 2) * 1e3:.1f} ms per decode step)", file=out, flush=True)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                decode_pass(system, clips[:batch], batch, greedy)
                dev.synchronize(placement.device)
            events = prof.key_averages()
            print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60), file=out)
            cpu = sum(e.self_cpu_time_total for e in events) / 1e3
            gpu = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e3
            print(f"batch {batch} under the profiler: self CPU {cpu:.0f} ms, self GPU {gpu:.0f} ms\n", file=out,
                  flush=True)
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
