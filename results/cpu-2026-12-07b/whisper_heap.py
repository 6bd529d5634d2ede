"""Paired: `translate --model whisper --task asr` on the Whisper row's 5 espeak-ng clips as a whole process, with
`whisper_torch.return_freed_memory` as shipped ("settings": glibc's mmap threshold 16 MiB, trim threshold 64 MiB)
and without it ("glibc": its own dynamic thresholds; `trim_heap` still runs where a stage ends), alternating, the
bench's own process runner (wall seconds, VmHWM). Then the same for faster-whisper once, for scale.

    python results/cpu-2026-12-07b/whisper_heap.py 4 float32     # pairs, precision (float32 | int8)
"""
import os, statistics, sys, tempfile
from pathlib import Path
from llm_srt import device as dev
from llm_srt.bench.whisper import WhisperBenchOptions, _embedded_ct2, commands, make_clips, run_process, threads

PATCH = ("import sys, llm_srt.model.whisper_torch as w\nw.return_freed_memory = lambda: None\n"
         "from llm_srt.cli import main\nsys.exit(main(sys.argv[1:]))")
pairs = int(sys.argv[1])
options, placement = WhisperBenchOptions(), dev.resolve("cpu", sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    clips = make_clips(tmp, options.clips)
    argv = commands(options, placement, clips, _embedded_ct2(tmp / "ct2"))
    ours = argv["llm_srt"]
    sides = {"settings": ours, "glibc": ["-c", PATCH, *ours[2:]], "faster-whisper": argv["faster_whisper"]}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads(options)), PYTHONPATH=os.pathsep.join(sys.path))
    runs = {k: [] for k in sides}
    for p in range(pairs):
        for side in ("settings", "glibc") if p % 2 == 0 else ("glibc", "settings"):
            runs[side].append(run_process(side, sides[side], env, tmp))
    runs["faster-whisper"].append(run_process("faster-whisper", sides["faster-whisper"], env, tmp))
    same = runs["settings"][-1]["stdout"] == runs["glibc"][-1]["stdout"]
for side, done in runs.items():
    print(f"{side}: wall median {statistics.median(r['seconds'] for r in done):.2f} s "
          f"{[r['seconds'] for r in done]}, peak median {statistics.median(r['peak_mib'] for r in done):.0f} MiB "
          f"{[r['peak_mib'] for r in done]}")
print("the same output (json) both ways:", same)
