"""The bench's physical yardstick: this machine's memory bandwidth and matmul peak, measured in the same run, and
what one decode step of the loaded LLM must at least cost on it (a roofline).

A decode step reads every weight of the LLM once (the output head included; the input embedding table only for the
rows it looks up), whatever the batch, and does 2 x in x out FLOPs per linear layer per row; each row's attention
also reads its KV cache (keys and values of every cached position, per layer; a sliding-window layer's last window
only) and does 4 x heads x head_dim FLOPs per position per layer. So a step of `rows` rows (batch x beams) at
`positions` cached positions cannot take less than max((weight bytes + KV bytes) / bandwidth, linear FLOPs / peak +
attention FLOPs / float peak): batch 1 is bound by the bandwidth, large batches by the arithmetic. The attention
terms are small beside the weights for the Q-Former's ~100-130 positions (Gemma-3-270M: 2% of the FLOPs), not for
the pooled peer's ~800 (7.8%) or for many rows over an int8 model (beam 5 x batch 8 reads 221 MB of KV cache a step
against 270 MB of int8 weights).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from .. import device as dev
from ..model import cpu_linear
from ..model.int8_linear import Int8Linear
from ..model.llm import causal_lm

COPY_BYTES = 1 << 30  # the bandwidth probes copy and read 1 GiB
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}  # square fp32 GEMM of the matmul probe, by device type
INT8_GEMM = (2048, 4096, 4096)  # (rows, in, out) of the int8 probe: what an int8 model's large batches run
RATES = ("bandwidth_gb_s", "copy_gb_s", "read_gb_s", "matmul_gflop_s", "int8_matmul_gop_s")  # what a bound divides by
YARDSTICK_MOVED = 1.2  # a rate whose two measurements differ by more than this factor is reported (a busy machine)


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
                    gemm_size: int | None = None, dtype: torch.dtype = torch.float32, int8: bool = False,
                    int8_gemm: tuple[int, int, int] = INT8_GEMM) -> dict:
    """Best-of-`repeats` memory bandwidth and matmul peak (a square GEMM in `dtype`: float32 on the CPU, the models'
    dtype on a GPU, on the fastest of `gemm_kernels`, named in `matmul_kernel`); with `int8`, also the int8 GEMM peak of
    `Int8Linear` over `int8_gemm` (rows, in, out; CPU, on the kernel it times faster). The bandwidth is the faster of
    two probes over `copy_bytes`: a copy into a second tensor (bytes read + written per second) and a read-only sum (a
    decode step's own pattern: weights are only read); each is also reported."""
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
        rows, k, m = int8_gemm
        layer = Int8Linear(torch.randn(m, k))
        x = torch.randn(rows, k)
        with torch.inference_mode():
            int8_s = _best(lambda: layer(x), repeats, device)
        out["int8_matmul_gop_s"], out["int8_gemm"] = round(2 * rows * k * m / int8_s / 1e9, 1), list(int8_gemm)
    return out


def higher_of(before: dict, after: dict) -> dict:
    """The yardstick the bounds use, from `measure_machine` before and after the rows: each rate the higher of its two
    measurements (a busy moment at one probe would lower the bounds, and rows could beat them: a shared machine's
    GEMM probe read 66.0 then 33.3 GFLOP/s a minute apart), both measurements kept (`yardstick_before`,
    `yardstick_after`), and the rates that moved by more than YARDSTICK_MOVED in `yardstick_moved` (rate -> [before,
    after])."""
    out = dict(before)
    for key in RATES:
        if key in before and key in after:
            out[key] = max(before[key], after[key])
    kernels = {name: max(rate, after["matmul_kernels_gflop_s"].get(name, 0.0))
               for name, rate in before["matmul_kernels_gflop_s"].items()}
    out["matmul_kernels_gflop_s"], out["matmul_kernel"] = kernels, max(kernels, key=kernels.get)
    out["matmul_gflop_s"] = kernels[out["matmul_kernel"]]  # a kernel may be the fastest in one measurement only
    out["yardstick_before"], out["yardstick_after"] = before, after
    out["yardstick_moved"] = {key: [before[key], after[key]] for key in RATES if key in before and key in after
                              and max(before[key], after[key]) > YARDSTICK_MOVED * min(before[key], after[key])}
    return out


def decode_cost(llm: nn.Module) -> dict:
    """What one decode step of `llm` reads and computes per row: the bytes of every weight (each tensor once: a head
    tied to the embedding counts once, as the head), and 2 x in x out FLOPs per linear layer, the head included;
    per cached position and attention layer, the KV cache's bytes (keys and values, in the hidden states' dtype, the
    embedding table's) and the attention's FLOPs; which layers attend to all positions and which to a sliding window
    (any other kind of layer is left out: the bound stays a lower one)."""
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
    text = lm.config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kinds = list(getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)
    window = getattr(text, "sliding_window", None)
    return {"weight_bytes_per_step": weight_bytes, "flops_per_row": flops, "int8": int8,
            "kv_bytes_per_position": 2 * (getattr(text, "num_key_value_heads", None) or heads) * head_dim
            * embedding.element_size(),  # per layer and row: one position's key and value
            "attention_flops_per_position": 4 * heads * head_dim,  # per layer and row: q.k, then p x v
            "full_attention_layers": kinds.count("full_attention"),
            "sliding_attention_layers": kinds.count("sliding_attention") if window else 0, "sliding_window": window}


def step_bound(cost: dict, machine: dict, rows: int, positions: int = 0) -> dict:
    """The least seconds one decode step of `rows` rows can take here, each row attending to `positions` positions
    (its cached ones and its new token), and which limit sets it. Attention's products run in the float dtype even
    in an int8 model: its FLOPs go at the float peak."""
    attended = cost.get("full_attention_layers", 0) * positions  # (layer, position) pairs a row reads; a cost
    if cost.get("sliding_window"):  # without these keys (an older result's) counts the weights alone
        attended += cost["sliding_attention_layers"] * min(positions, cost["sliding_window"])
    kv_bytes = rows * attended * cost.get("kv_bytes_per_position", 0)
    attention_flops = rows * attended * cost.get("attention_flops_per_position", 0)
    memory_s = (cost["weight_bytes_per_step"] + kv_bytes) / (machine["bandwidth_gb_s"] * 1e9)
    peak = machine["int8_matmul_gop_s"] if cost["int8"] and "int8_matmul_gop_s" in machine \
        else machine["matmul_gflop_s"]
    compute_s = cost["flops_per_row"] * rows / (peak * 1e9) + attention_flops / (machine["matmul_gflop_s"] * 1e9)
    return {"bound_s": max(memory_s, compute_s), "bound": "bandwidth" if memory_s >= compute_s else "compute",
            "bandwidth_bound_s": memory_s, "compute_bound_s": compute_s, "kv_bytes": kv_bytes,
            "attention_flops": attention_flops}
