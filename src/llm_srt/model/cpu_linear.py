"""Float32 linear layers for CPU inference, in torch alone (no transformers import, so the Whisper path can use
them): products on the fastest kernel for their size (`fast_linear`, `fast_cpu_linears`), timed on this machine
(`kernel_rule` turns the timing off). Int8 weights (`Int8Linear`, `quantize_int8`) are in `int8_linear.py`, which
shares this module's timing."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

DECODE_MAX_ROWS = 64  # inputs of at most this many rows (batch x beams in a decode step) may take (W @ x^T)^T
ONEDNN_SMALL_ROWS = 4  # `fast_linear`'s rule: 2 .. this many rows take (W @ x^T)^T, 1 and more rows oneDNN
# Decode-sized inference products (float32, no gradient, <= DECODE_MAX_ROWS rows) time the three kernels once per
# (shape, bias, row bucket) in a process and keep the fastest (`_tuned_kernel`): which one wins depends on the CPU
# (the rule above is the AMD EPYC's; on the Intel Xeon of 2026-12-02 MKL's x @ W^T was 1.3-2.3x faster at 1-8 rows).
# Another kernel replaces the rule's only when this much faster, so that close calls mostly keep the rule's (a
# kernel near the margin may still win in one process and not in another: outputs then differ in the last bits).
TUNE_MARGIN = 1.15
TUNE_REPEATS = 3  # timed calls per kernel (after one warm-up), best taken
KERNEL_TUNING_ENV = "LLM_SRT_KERNEL_TUNING"  # "0" / "off": the rule alone (no timing)
KERNEL_TUNING_OFF = ("0", "off")  # the values of KERNEL_TUNING_ENV that turn the timing off
KERNEL_TUNING = os.environ.get(KERNEL_TUNING_ENV, "1").strip().lower() not in KERNEL_TUNING_OFF
# the decode-sized inference kernels `_tuned_kernel` times (looked up at call time: tests may replace them), and this
# process's choices: (out, in, bias, row bucket, torch threads) -> kernel name
KERNELS: dict[str, Callable] = {"oneDNN": lambda *a: _onednn(*a), "MKL": lambda *a: _mkl(*a),
                                "(W @ x^T)^T": lambda *a: _transposed(*a)}
TUNED: dict[tuple, str] = {}
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                tune: bool = True) -> torch.Tensor:
    """F.linear(x, weight, bias) for (..., in) x (out, in) on the fastest CPU kernel for its size; same math, other
    summation orders (the greedy tokens of the embedded Gemma are unchanged: tests/model/test_cpu_linear.py).

    On this AMD EPYC torch's float32 products (MKL) run at ~230 GFLOP/s against ~480 for oneDNN's, whose kernel
    takes the plain weight as it is (no packed copy): so float32 inputs that need no gradient go to oneDNN
    (`torch.ops.mkldnn._linear_pointwise`, Inductor's CPU linear; the torch pin covers the private op) at one row
    and above ONEDNN_SMALL_ROWS rows: Gemma-3-270M's 126 body matrices at 1 / 16 / 1280 rows 7.9 / 21 / 1146 ms
    -> 5.8 / 17 / 533 ms, its 262k x 640 head 15 / 74 -> 11 / 32 ms, Whisper base's encoder matrices at 1500 rows
    2.2x faster (2 threads). A frozen layer (weight and bias need no gradient) whose input needs one (training's
    frozen LLM under the adapter) takes oneDNN both ways (`_FrozenOneDNN`: the input's gradient dY W reads W^T as a
    view; 2.3x MKL's at 1024 rows). At 2 to ONEDNN_SMALL_ROWS rows oneDNN is slower there, and so is MKL's own
    x @ W^T: the product is (W @ x^T)^T, a kernel that streams the weights at the memory's speed (also the form for
    trainable weights, up to DECODE_MAX_ROWS rows). Mixed dtypes, other devices and larger inputs to trainable
    weights keep F.linear; gradients flow as through F.linear.

    That rule is one CPU's: decode-sized inference products (float32, no gradient, at most DECODE_MAX_ROWS rows)
    take the kernel timed fastest on this machine instead (`_tuned_kernel`: oneDNN, MKL's x @ W^T or (W @ x^T)^T,
    once per shape and row bucket in a process) unless `tune` is False (a training loss computed without autograd),
    tuning is off (LLM_SRT_KERNEL_TUNING=0, `kernel_rule()`) or torch has no oneDNN: then the rule."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if x.device.type != "cpu" or not rows or x.dtype != weight.dtype or torch.compiler.is_compiling():
        return F.linear(x, weight, bias)  # compiled (a static-cache decode step): Inductor picks its own kernel
    grad = torch.is_grad_enabled()
    trainable = grad and (weight.requires_grad or (bias is not None and bias.requires_grad))
    flat = x.reshape(rows, x.shape[-1])
    onednn = (_ONEDNN and not trainable and x.dtype == torch.float32 and weight.is_contiguous()
              and (bias is None or bias.dtype == weight.dtype))
    if onednn and rows <= DECODE_MAX_ROWS and not (grad and x.requires_grad) and tune and KERNEL_TUNING:
        flat = flat.contiguous()
        kernel = _tuned_kernel(flat, weight, bias)
        return KERNELS[kernel](flat, weight, bias).reshape(*x.shape[:-1], weight.shape[0])
    if onednn and _rule(rows) == "oneDNN":
        product = _FrozenOneDNN.apply if grad and x.requires_grad else _onednn
        return product(flat.contiguous(), weight, bias).reshape(*x.shape[:-1], weight.shape[0])
    if rows > DECODE_MAX_ROWS:
        return F.linear(x, weight, bias)
    return _transposed(flat, weight, bias).reshape(*x.shape[:-1], weight.shape[0])


def _transposed(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(W @ x^T)^T for (rows, in) x (out, in): a GEMM that streams the weights (one row is doubled, so that the BLAS
    runs a GEMM and not its slower matrix-vector kernel)."""
    rows = flat.shape[0]
    if rows == 1:
        flat = torch.cat([flat, flat])
    out = (weight @ flat.T).T[:rows].contiguous()
    return out if bias is None else out + bias


@contextlib.contextmanager
def kernel_rule():
    """Within: every product takes the rule's kernel, none is timed (training: its results then depend on nothing
    measured, so a resumed run repeats the killed one bit for bit)."""
    global KERNEL_TUNING
    before, KERNEL_TUNING = KERNEL_TUNING, False
    try:
        yield
    finally:
        KERNEL_TUNING = before


def _rule(rows: int) -> str:
    """The kernel a float32 product with a frozen weight takes untimed (the AMD EPYC's measurements)."""
    return "oneDNN" if rows == 1 or rows > ONEDNN_SMALL_ROWS else "(W @ x^T)^T"


def _bucket(rows: int) -> int:
    """Row counts that share a timing: 1, 2, 3-4, 5-8, ... (the next power of two)."""
    return 1 << (rows - 1).bit_length()


def _tuned_kernel(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """The fastest kernel for this product's (shape, bias, row bucket, torch threads), timed on its first call here
    (each kernel once to warm up, then best of TUNE_REPEATS): the rule's choice unless another is TUNE_MARGIN x
    faster. Every kernel computes F.linear's values (other summation orders)."""
    key = (*weight.shape, bias is not None, _bucket(flat.shape[0]), torch.get_num_threads())
    kernel = TUNED.get(key)
    if kernel is None:
        seconds, _ = _best_times({name: lambda p=product: p(flat, weight, bias) for name, product in KERNELS.items()},
                                 TUNE_REPEATS)
        kernel = _rule(flat.shape[0])
        fastest = min(seconds, key=seconds.get)
        if seconds[fastest] * TUNE_MARGIN < seconds[kernel]:
            kernel = fastest
        TUNED[key] = kernel
    return kernel


def _best_times(products: dict[str, Callable[[], object]], repeats: int,
                keep_first: bool = False) -> tuple[dict[str, float], dict[str, object]]:
    """Each product's best wall time in seconds over `repeats` calls after one untimed warm-up call, and (with
    `keep_first`) what that warm-up call returned."""
    seconds, first = {}, {}
    for name, product in products.items():
        best = float("inf")
        for i in range(repeats + 1):
            start = time.perf_counter()
            out = product()
            if i:
                best = min(best, time.perf_counter() - start)
            elif keep_first:
                first[name] = out
            del out
        seconds[name] = best
    return seconds, first


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's float32 linear: (rows, in) x (out, in) -> (rows, out)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _mkl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear: torch's own CPU kernel (MKL's x @ W^T)."""
    return F.linear(x, weight, bias)


class _FrozenOneDNN(torch.autograd.Function):
    """oneDNN's linear with a frozen weight and bias: the input's gradient only (dY W, W^T read as a view)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return input_gradient(grad, weight), None, None


def input_gradient(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dY (rows, out) x W (out, in) -> dX (rows, in), a linear layer's input gradient: float32 on the CPU through
    oneDNN (W^T read as a view: 1.9x MKL's for 400 rows of Gemma's 262k x 640 head, 341 vs 634 ms), else torch.mm."""
    if _ONEDNN and grad.device.type == "cpu" and grad.dtype == weight.dtype == torch.float32 and \
            weight.is_contiguous():
        return _onednn(grad.contiguous(), weight.t(), None)
    return torch.mm(grad, weight)


class FastLinear(nn.Linear):
    """An nn.Linear whose product is `fast_linear`'s (`fast_cpu_linears` makes plain ones this class)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_linear(x, self.weight, self.bias)


def fast_cpu_linears(model: nn.Module) -> None:
    """Every plain nn.Linear of `model` (the output head included) computes with `fast_linear` (CPU inputs on the
    fastest kernel for their size; everything else as before). Each module becomes a `FastLinear` in place (same
    object, parameters, hooks and state dict keys): a forward bound to the module and stored on it would be a
    reference cycle, so a dropped model (1 GB of Gemma's weights) would wait for the garbage collector."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FastLinear


# oneDNN keeps up to this many compiled products (its default, 1024, held ~330 MB at the peak of the demo's SRT
# training, where every batch's new row count compiles new ones: 4,108 -> 3,777 MiB with 64, 69 s either way; an
# evaluation decoding batches of 16 that shrink as rows end: 31.3 -> 31.2 s, the same outputs). A value the user set
# wins; read by oneDNN when it first compiles one, so this module sets it on import.
ONEDNN_CACHE_PRIMITIVES = 64
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_PRIMITIVES))
