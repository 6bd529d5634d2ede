"""The bench's physical yardstick: this machine's memory bandwidth and matmul peak, measured in the same run, and
what one decode step of the loaded LLM must at least cost on it (a roofline).

A decode step reads every weight of the LLM once (the output head included; the input embedding table only for the
rows it looks up), whatever the batch, and does 2 x in x out FLOPs per linear layer per row. So a step of `rows`
rows (batch x beams) cannot take less than max(weight bytes / bandwidth, FLOPs per row x rows / peak): batch 1 is
bound by the bandwidth, large batches by the arithmetic. Attention over the (short) context is left out: under 3%
of a step's FLOPs for 100-200 cached positions.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from .. import device as dev
from ..model import cpu_linear
from ..model.cpu_linear import Int8Linear
from ..model.llm import causal_lm

COPY_BYTES = 1 << 30  # the bandwidth probes copy and read 1 GiB
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}  # square fp32 GEMM of the matmul probe, by device type
INT8_GEMM = (2048, 4096, 4096)  # (rows, in, out) of the int8 probe: what an int8 model's large batches run


def _best(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (page faults, kernel selection)
    times = []
    for _ in range(repeats):
        dev.synchronize(device)
        t0 = time.perf_counter()
        fn()
        dev.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_kernels(device: torch.device, dtype: torch.dtype) -> dict[str, Callable]:
    """The square products the matmul peak is the best of. On the CPU every kernel the model's products may take
    (`cpu_linear.KERNELS`, looked up now; oneDNN's in float32 only): `fast_linear` runs oneDNN's (~2x MKL's on the
    AMD EPYC) or whichever it timed fastest, and a probe of MKL's alone let such steps beat their own bound. On a
    GPU the products are torch's own, a @ b."""
    if device.type == "cpu":
        return {name: lambda x, w, k=kernel: k(x, w, None) for name, kernel in cpu_linear.KERNELS.items()
                if name != "oneDNN" or (cpu_linear._ONEDNN and dtype == torch.float32)}
    return {"a @ b": lambda x, w: x @ w}


def measure_machine(device: torch.device, repeats: int = 3, copy_bytes: int = COPY_BYTES,
                    gemm_size: int | None = None, dtype: torch.dtype = torch.float32, int8: bool = False) -> dict:
    """Best-of-`repeats` memory bandwidth and matmul peak (a square GEMM in `dtype`: float32 on the CPU, the models'
    dtype on a GPU, on the fastest of `gemm_kernels`, named in `matmul_kernel`); with `int8`, also the int8 GEMM
    peak of `Int8Linear` (CPU, on the kernel it times faster). The bandwidth is the faster of two probes over
    `copy_bytes`: a copy into a second tensor (bytes read + written per second) and a read-only sum (a decode step's
    own pattern: weights are only read); each is also reported."""
    n = copy_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_s = _best(lambda: dst.copy_(src), repeats, device)
    del dst
    read_s = _best(lambda: src.sum(), repeats, device)
    del src
    copy_gb_s, read_gb_s = 2 * copy_bytes / copy_s / 1e9, copy_bytes / read_s / 1e9
    size = gemm_size or GEMM_SIZE.get(device.type, 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    with torch.inference_mode():  # as the model's products run (frozen weights, no gradient)
        rates = {name: 2 * size ** 3 / _best(lambda k=kernel: k(a, b), repeats, device) / 1e9
                 for name, kernel in gemm_kernels(device, dtype).items()}
    del a, b
    kernel = max(rates, key=rates.get)
    out = {"bandwidth_gb_s": round(max(copy_gb_s, read_gb_s), 2), "copy_gb_s": round(copy_gb_s, 2),
           "read_gb_s": round(read_gb_s, 2), "copy_bytes": copy_bytes,
           "matmul_gflop_s": round(rates[kernel], 1), "matmul_kernel": kernel,
           "matmul_kernels_gflop_s": {name: round(rate, 1) for name, rate in rates.items()}, "gemm_size": size,
           "matmul_dtype": str(dtype).removeprefix("torch."), "repeats": repeats}
    if int8:
        rows, k, m = INT8_GEMM
        layer = Int8Linear(torch.randn(m, k))
        x = torch.randn(rows, k)
        with torch.inference_mode():
            int8_s = _best(lambda: layer(x), repeats, device)
        out["int8_matmul_gop_s"] = round(2 * rows * k * m / int8_s / 1e9, 1)
    return out


def decode_cost(llm: nn.Module) -> dict:
    """What one decode step of `llm` reads and computes per row: the bytes of every weight (each tensor once: a head
    tied to the embedding counts once, as the head), and 2 x in x out FLOPs per linear layer, the head included."""
    lm = causal_lm(llm)
    embedding = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings()
    tied = isinstance(head, nn.Linear) and head.weight is embedding
    weight_bytes = flops = 0
    int8 = False
    for module in lm.modules():
        if isinstance(module, (nn.Linear, Int8Linear)):
            flops += 2 * module.in_features * module.out_features
        if isinstance(module, Int8Linear):  # its int8 weights are not parameters
            int8 = True
            weight_bytes += module.weight_bytes
    for p in lm.parameters():  # float weights (tied ones once): linear layers, norms; the table only as the head
        if p is not embedding or tied:
            weight_bytes += p.numel() * p.element_size()
    return {"weight_bytes_per_step": weight_bytes, "flops_per_row": flops, "int8": int8}


def step_bound(cost: dict, machine: dict, rows: int) -> dict:
    """The least seconds one decode step of `rows` rows can take here, and which limit sets it."""
    memory_s = cost["weight_bytes_per_step"] / (machine["bandwidth_gb_s"] * 1e9)
    peak = machine["int8_matmul_gop_s"] if cost["int8"] and "int8_matmul_gop_s" in machine \
        else machine["matmul_gflop_s"]
    compute_s = cost["flops_per_row"] * rows / (peak * 1e9)
    return {"bound_s": max(memory_s, compute_s), "bound": "bandwidth" if memory_s >= compute_s else "compute",
            "bandwidth_bound_s": memory_s, "compute_bound_s": compute_s}
