"""One process of a paired comparison of glibc heap settings for int8 CPU inference (2026-12-07, late): sets
M_MMAP_THRESHOLD / M_TRIM_THRESHOLD to the MiB given (0 0: glibc's own dynamic thresholds), then times the bench's
system (a fresh Q-Former on the embedded models, int8, EOS pinned, the bench's 16 utterances) through `run_batch` at
batch 16 and at batch 1 after a warm-up pass of each, and prints the seconds and the process's peak RSS.

    for s in "0 0" "16 64" "256 256"; do python results/cpu-2026-12-07b/heap_settings.py $s 32; done
"""
import ctypes, resource, sys
mmap_mib, trim_mib, tokens = (int(a) for a in sys.argv[1:4])
if mmap_mib:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, mmap_mib << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, trim_mib << 20)  # M_TRIM_THRESHOLD
import torch
from bench_system import int8_bench_system, timed_pass
system, model, utts = int8_bench_system()


def run(batch):
    return timed_pass(system, utts, batch, tokens)[0]


with torch.inference_mode():
    run(16), run(1)
    b16, b1 = run(16), run(1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"heap {mmap_mib} {trim_mib} MiB: batch 16 {b16:.3f} s, batch 1 {b1:.3f} s, 1/16 {b1 / b16:.2f}x, "
      f"peak RSS {peak:.0f} MiB", flush=True)
