"""Time nn.Linear against `fast_linear` over every linear layer of an LLM's decoder, each matrix read once (as in
one decode step), at a few row counts. Random matrices of the model's shapes, so no weights are needed:

    python scripts/linear_kernels.py [--shapes 1024x640,256x640,256x640,640x1024,2048x640,2048x640,640x2048]
                                     [--layers 18] [--rows 1,2,4,16] [--repeats 5]

The default shapes are one Gemma-3-270M layer (q, k, v, o, gate, up, down)."""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from llm_srt.model.cpu_linear import fast_linear

GEMMA3_270M_LAYER = "1024x640,256x640,256x640,640x1024,2048x640,2048x640,640x2048"


def time_pass(fn, weights: list[torch.Tensor], rows: int, repeats: int) -> float:
    """Seconds for one pass of `fn(x, w)` over `weights` (best of `repeats`, after one warm-up pass)."""
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        for w in weights:
            fn(inputs[w.shape[1]], w)
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=GEMMA3_270M_LAYER, help="one layer's matrices, OUTxIN, comma-separated")
    p.add_argument("--layers", type=int, default=18)
    p.add_argument("--rows", default="1,2,4,16")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    shapes = [tuple(int(n) for n in s.split("x")) for s in a.shapes.split(",")] * a.layers
    weights = [torch.randn(o, i) for o, i in shapes]
    mb = sum(w.numel() * w.element_size() for w in weights) / 1e6
    rows_out = []
    for rows in (int(r) for r in a.rows.split(",")):
        linear = time_pass(F.linear, weights, rows, a.repeats)
        decode = time_pass(fast_linear, weights, rows, a.repeats)
        rows_out.append({"rows": rows, "linear_ms": linear * 1e3, "fast_linear_ms": decode * 1e3})
        print(f"{len(weights)} matrices, {mb:.0f} MB, {rows:3d} rows: nn.Linear {linear * 1e3:7.2f} ms "
              f"({mb / 1e3 / linear:5.1f} GB/s)   fast_linear {decode * 1e3:7.2f} ms ({mb / 1e3 / decode:5.1f} GB/s)")
    return rows_out


if __name__ == "__main__":
    main()
