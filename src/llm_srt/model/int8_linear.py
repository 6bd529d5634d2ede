"""Int8 linear layers for CPU inference, in torch alone (no transformers import, so the Whisper path can use them):
`Int8Linear` (int8 weights packed for fbgemm, activations quantized per row, oneDNN's int8 product for larger
inputs where timed faster), `quantize_int8` (a model's nn.Linear layers -> Int8Linear) and `fuse_int8_projections`
(sibling projections of one input as one product). The float32 kernels and their timing are `cpu_linear.py`'s."""

from __future__ import annotations

import itertools
import warnings
import weakref
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import LLMSRTError
from . import cpu_linear  # KERNEL_TUNING and _best_times are looked up there at call time (`kernel_rule`, tests)
from .cpu_linear import DECODE_MAX_ROWS, TUNE_MARGIN, _ONEDNN, _bucket

QUANTIZE_CHUNK_ROWS = 8192  # rows quantized at a time (`quantize_rows`)
PACK_IN_PLACE_ELEMENTS = 16 << 20  # Int8Linear: weights this large are packed with no int8 copy (`_packed_rows`);
# smaller ones through an int8 tensor: the Whisper base encoder's peak above its start was +41-117 MiB (median 93,
# 12 processes) with all of its layers packed in place, +46-78 (median 66) this way: a heap layout question


def _has_vnni() -> bool:
    """Whether this x86 CPU has AVX-512 VNNI, whose u8 x s8 dot products fbgemm uses without 16-bit saturation:
    then activations may use all 8 bits; else they are kept in 7 (`reduce_range`): fbgemm's AVX2 kernels sum pairs
    of products in 16 bits with saturation (up to 2 x 255 x 127), and whether a CPU with AVX-VNNI alone is spared
    them is not checked here, so it gets 7 bits too. (On an AVX2-only AMD EPYC, 2026-12-03, 8-bit activations
    put fbgemm's products off by up to 6% of their largest: tests/model/test_loading.py skips them there.)"""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags


class Int8Linear(nn.Module):
    """A frozen nn.Linear with int8 weights, for CPU inference: (..., in) -> (..., out) in the input's dtype.

    Weights are symmetric int8 with one scale per output row, packed once for fbgemm's int8 GEMM (4x fewer bytes
    to read per decode step than float32, and VNNI int8 arithmetic). Activations are symmetric int8 per row, as
    CTranslate2 quantizes them: each row is scaled to max |x| = 1, quantized on the fixed grid k / 127 (k / 63
    without VNNI), and its products scaled back. So a row's result depends on that row alone, never on the other
    rows of its batch (fbgemm's dynamic product takes one range from the whole input: a row's zero point moved
    with its neighbours' signs, and the Whisper encoder's states differed by 5% between a clip alone and in a
    batch), a large activation in one row does not coarsen its neighbours, a row spanning less than 0.0156 keeps
    its precision (fbgemm's dynamic range is floored at 2^-14), and fbgemm's own min/max pass over the whole input
    is gone. It needs torch's x86 (fbgemm) quantized engine and says so in one line on another.

    Inputs of more than INT8_MANY_ROWS rows (a batch's prefills and decode steps, encoder frames, Q-Former queries)
    may take oneDNN's int8 product instead, on a second packed copy of the same int8 weights (`_int8_kernel`: timed
    once per shape and row bucket in a process, kept only where it is faster). Both sum the same int8 products
    in int32 and scale them by the same float32 factors, so its results are fbgemm's bit for bit
    (tests/model/test_cpu_linear.py; and the timing checks it on each CPU): which kernel ran never changes an output.

    Under torch.compile (`--compile`'s decode steps) the product, its scaling back and the bias are the op
    `llm_srt::int8_product`, which the compiler keeps as one call (it cannot trace the packed weights); the rows'
    scaling before it compiles with the rest of the step."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 rows: Callable[[int, int], torch.Tensor] | None = None):
        """`weight` (out, in) in floats; or already int8 with its row `scale`s (`quantize_rows`' pair); or `rows`
        (start, stop) -> those float rows, read a chunk at a time, `weight` then giving the shape alone (meta)."""
        super().__init__()
        engine = torch.backends.quantized.engine
        if engine not in INT8_ENGINES:
            raise LLMSRTError(f"--dtype int8 runs fbgemm's int8 products (x86 CPUs); this torch's quantized engine is "
                              f"{engine!r}: use --dtype float32 here")
        self.out_features, self.in_features = weight.shape
        self._onednn = None  # oneDNN's packed copy (weights, row scales, zero points), built by `_int8_kernel`
        self._onednn_used = False  # whether some row bucket of this layer runs on it (else a timing's copy is let go)
        if rows is not None:
            self._packed = _packed_rows(tuple(weight.shape), rows)
        elif scale is not None:
            self._pack(weight, scale)
        elif weight.numel() >= PACK_IN_PLACE_ELEMENTS:
            w = weight.detach()
            self._packed = _packed_rows(tuple(w.shape), lambda start, stop: w[start:stop])
        else:
            self._pack(*quantize_rows(weight))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.reduce_range = not _VNNI
        self._register()

    def _register(self) -> None:
        self.number = next(_NUMBERS)  # how `int8_product` finds this layer's packed weights
        _LAYERS[self.number] = self

    def __getstate__(self) -> dict:
        """What a copy (copy.deepcopy, pickle) takes: all but oneDNN's packed copy, an opaque tensor neither can
        read (the copy packs its own when a timing picks oneDNN, from the fbgemm weights it does take)."""
        return {**super().__getstate__(), "_onednn": None, "_onednn_used": False}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A state dict holds an Int8Linear's bias alone: its weights are fbgemm's packed matrix, no tensor a state
        dict carries (unpacking Gemma-3-270M's head takes 1.5 s, too dear for every `state_dict()`, which LoRA's
        loading calls). Weights given for it are refused in one line, not ignored (`load_state_dict` said every key
        matched, the layer kept its old weights); load them into the float model, then quantize."""
        if prefix + "weight" in state_dict:
            raise LLMSRTError(f"{prefix}weight: an int8 layer's weights are packed (dtype int8, for inference) and "
                              "cannot be loaded from a state dict; load the weights into the float model, then "
                              "quantize it (quantize_int8)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def __setstate__(self, state: dict) -> None:
        """A copy (copy.deepcopy, pickle) is a layer of its own: its own number, so that the compiled op reads its
        weights, not those of the layer it was copied from (which may change or be gone); and its activation grid
        is this CPU's (`reduce_range`: a layer pickled without VNNI takes all 8 bits where it is loaded with it, one
        pickled with VNNI 7 bits without: 8 would saturate fbgemm's AVX2 sums)."""
        super().__setstate__(state)
        self.reduce_range = not _VNNI
        self._register()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)

    @classmethod
    def from_file(cls, path: str | Path, key: str, shape: tuple[int, int]) -> "Int8Linear":
        """The float matrix `key` of a safetensors file as an Int8Linear without bias, read QUANTIZE_CHUNK_ROWS rows
        a mapping of its own, so each chunk's pages leave memory with its mapping (a large table read through one
        mapping keeps every page resident while that mapping lives: Gemma-3-270M's 671 MB). `shape` is the one the
        model expects; a file's of another shape, or no such matrix, is a ValueError naming it."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as f:
                found = tuple(f.get_slice(key).get_shape())
        except SafetensorError as e:
            raise ValueError(f"{path} holds no {key} ({e})") from None
        if found != tuple(shape):
            raise ValueError(f"{key} is {found} in {path}, the model expects {tuple(shape)}")

        def rows(start: int, stop: int) -> torch.Tensor:
            with safe_open(path, framework="pt") as f:
                return f.get_slice(key)[start:stop]

        return cls(torch.empty(shape, device="meta"), rows=rows)

    def _pack(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned here
            warnings.simplefilter("ignore")  # (and _make_per_channel_quantized_tensor is private: the pin covers it)
            qt = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            self._packed = torch.ops.quantized.linear_prepack(qt, None)
        self._onednn, self._onednn_used = None, False  # new weights: a oneDNN copy is packed again when needed

    @property
    def weight_bytes(self) -> int:
        """Bytes a product reads: the int8 weights plus their float32 row scales (and the bias)."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.out_features * (self.in_features + 4) + bias

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: the weights the product really uses."""
        q, _ = torch.ops.quantized.linear_unpack(self._packed)
        return q.dequantize()

    def quantized_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 (out, in), float32 scales (out,)): the packed weights as `quantize_rows` gives them (so
        `Int8Linear(*quantized_rows())` packs the same weights again)."""
        q, _ = torch.ops.quantized.linear_unpack(self._packed)
        return q.int_repr(), q.q_per_channel_scales().float()

    def zero_rows(self, rows: list[int]) -> None:
        """Set output rows' weights to exactly 0 (benchmarks pin a logit with it)."""
        weight = self.dequantized_weight()
        weight[rows] = 0
        self._pack(*quantize_rows(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        scale = row_ranges(flat)
        if torch.compiler.is_compiling():  # the row scaling compiles (exact: a max and a division); the rest is one op
            y = torch.ops.llm_srt.int8_product(flat / scale, scale, self.number)
        else:
            y = self._product(flat / scale, scale)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _product(self, unit: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(rows, in) activations scaled to max |x| = 1 and their (rows, 1) scales -> (rows, out) float32: the int8
        product, scaled back, plus the bias."""
        step, zero = ACTIVATION_GRID[self.reduce_range]
        if (len(unit) > INT8_MANY_ROWS and _ONEDNN_INT8 and cpu_linear.KERNEL_TUNING
                and self._int8_kernel(unit) == "oneDNN"):
            self._onednn_used = True
            y = self._onednn_product(unit)
        else:
            y = _QDQ_LINEAR(unit, step, zero, self._packed)
        return y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale, out=y)  # one pass, in place

    def _onednn_product(self, unit: torch.Tensor) -> torch.Tensor:
        """oneDNN's int8 product of rows already scaled to max |x| = 1: quantized on ACTIVATION_GRID as fbgemm's
        product quantizes them (torch's own per-tensor quantization), int32 sums, then one float32 multiply by
        fbgemm's own factor, step x row scale. oneDNN is given that product as the row scales and 1 as the input's
        scale: given the two (the AMD EPYC of 2026-12-03), it computed (sum x step) x scale, 1 ulp off fbgemm's
        sum x (step x scale) in a third of the outputs; x 1 is exact whatever order it multiplies in."""
        if self._onednn is None:
            q, scale = self.quantized_rows()
            factors = {reduce: scale * torch.tensor(step, dtype=torch.float32)
                       for reduce, (step, _) in ACTIVATION_GRID.items()}
            self._onednn = (torch.ops.onednn.qlinear_prepack(q, None), factors,
                            torch.zeros(self.out_features, dtype=torch.long))
        weights, factors, zeros = self._onednn
        step, zero = ACTIVATION_GRID[self.reduce_range]
        with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned here
            warnings.simplefilter("ignore")
            qx = torch.quantize_per_tensor(unit, step, zero, torch.quint8).int_repr()
        return torch.ops.onednn.qlinear_pointwise(qx, 1.0, zero, weights, factors[self.reduce_range], zeros, None, 1.0,
                                                  0, torch.float32, "none", [], "")

    def _int8_kernel(self, unit: torch.Tensor) -> str:
        """fbgemm or oneDNN for this many rows of this shape (and torch threads), timed on the first such call in
        this process (each once to warm up, then best of `int8_tune_repeats`): oneDNN only when TUNE_MARGIN x faster.
        The results are the same either way; only the time differs (a oneDNN copy kept for nothing is let go). So
        that this holds on any CPU, oneDNN is kept only if its first INT8_CHECKED_ROWS output rows for the timed
        input are also fbgemm's bit for bit (a CPU whose oneDNN rounds otherwise runs fbgemm alone)."""
        key = (self.out_features, self.in_features, min(_bucket(len(unit)), INT8_TOP_BUCKET), torch.get_num_threads())
        kernel = TUNED_INT8.get(key)
        if kernel is None:
            step, zero = ACTIVATION_GRID[self.reduce_range]
            rows = slice(0, INT8_CHECKED_ROWS)
            seconds, first = cpu_linear._best_times(
                {"fbgemm": lambda: _QDQ_LINEAR(unit, step, zero, self._packed)[rows].clone(),
                 "oneDNN": lambda: self._onednn_product(unit)[rows].clone()},
                int8_tune_repeats(len(unit)), keep_first=True)
            same = torch.equal(first["fbgemm"], first["oneDNN"])
            kernel = "oneDNN" if same and seconds["oneDNN"] * TUNE_MARGIN < seconds["fbgemm"] else "fbgemm"
            TUNED_INT8[key] = kernel
        if kernel == "fbgemm" and not self._onednn_used:
            self._onednn = None
        return kernel

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


_VNNI = _has_vnni()
# Activations, each row scaled to max |x| = 1, quantized as unsigned 8 bits: (step, zero point) of a symmetric grid,
# -1 -> zero - 1/step, 0 -> zero, 1 -> zero + 1/step: all 8 bits with VNNI, 7 without (fbgemm's reduce_range).
ACTIVATION_GRID = {False: (1 / 127, 128), True: (1 / 63, 64)}
_QDQ_LINEAR = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32  # fbgemm: fixed input qparams
INT8_ENGINES = ("x86", "fbgemm")  # torch quantized engines whose packed weights run that product
# oneDNN's int8 product (Inductor's x86 quantized linear), for Int8Linear inputs of more than INT8_MANY_ROWS rows:
# on the Intel Xeon with AMX of 2026-12-02, 1.5-2.5x fbgemm's at 1024-2048 rows of most of Gemma's and Whisper's
# matrices (not Gemma's 640 x 2048 down-projection), and 1.4-2.1x for Gemma's 262k x 640 head at 32-256 rows (a beam
# search's or a large batch's decode step: 42.7 / 81.2 / 341.6 ms against 30.5 / 46.1 / 166.5 at 32 / 64 / 256 rows),
# while at 1-16 rows fbgemm was as fast or faster for every matrix of Gemma's there (the head at 16 rows 14.9 against
# 16.3 ms). On the Intel Xeon with AMX of 2026-12-07 (CPU model 207, 300 MB L3) oneDNN took the head at 4 / 8 / 16
# rows in 2.8 / 2.9 / 3.3 ms against fbgemm's 3.5 / 4.3 / 7.0 (1 row: 2.85 against 2.82), and an int8 greedy decode
# step at batch 16 went from 39 to 31-33 ms: which kernel is faster at few rows depends on the CPU, so from 2 rows
# the choice is timed; a one-row input (a batch-1 greedy step) runs fbgemm untimed
INT8_MANY_ROWS = 1
_ONEDNN_INT8 = _ONEDNN and all(hasattr(torch.ops.onednn, op) for op in ("qlinear_prepack", "qlinear_pointwise"))
TUNED_INT8: dict[tuple, str] = {}  # Int8Linear's choices: (out, in, row bucket, torch threads) -> "fbgemm" / "oneDNN"
_NUMBERS = itertools.count()  # Int8Linear numbers
_LAYERS: "weakref.WeakValueDictionary[int, Int8Linear]" = weakref.WeakValueDictionary()  # number -> live layer


@torch.library.custom_op("llm_srt::int8_product", mutates_args=())
def int8_product(unit: torch.Tensor, scale: torch.Tensor, layer: int) -> torch.Tensor:
    """Int8Linear number `layer`'s product of (rows, in) activations scaled to max |x| = 1, with their (rows, 1)
    scales -> (rows, out): what a compiled step calls, as torch.compile cannot trace the packed weights (an opaque
    op, ~4 us of Python a call); the scaling back and the bias inside it, as the eager layer computes them."""
    return _LAYERS[layer]._product(unit, scale)


@int8_product.register_fake
def _int8_product_shape(unit: torch.Tensor, scale: torch.Tensor, layer: int) -> torch.Tensor:
    return unit.new_empty(unit.shape[0], _LAYERS[layer].out_features)
# timed calls per int8 kernel after its warm-up: two above INT8_FEW_TIMED_ROWS rows (each lasts >= 0.3 ms; with one,
# a 1392-row prefill once kept fbgemm for Gemma's 640 -> 4096 product, 6.0 ms a call against oneDNN's 1.9), else
# INT8_TUNE_REPEATS_FEW (a product of 32 rows of a small matrix takes ~0.1 ms, within one call's noise)
INT8_TUNE_REPEATS, INT8_TUNE_REPEATS_FEW, INT8_FEW_TIMED_ROWS = 2, 5, 256
INT8_TOP_BUCKET = 1024  # inputs of more rows than half this share one timing (a batch's prefills of any length)
INT8_CHECKED_ROWS = 16  # output rows of a timing's input compared between fbgemm and oneDNN (copied in each call)


def int8_tune_repeats(rows: int) -> int:
    """Timed calls of each int8 kernel when choosing one for inputs of `rows` rows."""
    return INT8_TUNE_REPEATS if rows > INT8_FEW_TIMED_ROWS else INT8_TUNE_REPEATS_FEW


def row_ranges(flat: torch.Tensor) -> torch.Tensor:
    """(rows, n) -> (rows, 1): each row's max |x|, at least 1e-30. Up to DECODE_MAX_ROWS rows as abs().amax()
    (torch's inf-norm costs 7x more at 16 rows, 33 vs 4.7 us); more rows as max(amax, -amin), two reads and no
    temporary as large as the input (1500 x 2048: 137 vs 225 us)."""
    if len(flat) <= DECODE_MAX_ROWS:
        return flat.abs().amax(1, keepdim=True).clamp_(min=1e-30)
    return torch.maximum(flat.amax(1, keepdim=True), flat.amin(1, keepdim=True).neg_()).clamp_(min=1e-30)


def _packed_rows(shape: tuple[int, int], chunk: Callable[[int, int], torch.Tensor]):
    """fbgemm's packed int8 matrix of the float rows `chunk(start, stop)` gives, QUANTIZE_CHUNK_ROWS at a time,
    with `quantize_rows`' numbers (each row symmetric on its own scale): a first pass takes the rows' scales, a
    second writes their int8 values straight into the quantized tensor that is packed. So no int8 copy besides:
    the peak holds that tensor and the packed one (Gemma-3-270M's 262k-row head: 2 x 168 MB, where quantizing to
    an int8 tensor first held 3 x)."""
    out, step = shape[0], QUANTIZE_CHUNK_ROWS
    scale = torch.empty(out)
    for start in range(0, out, step):
        rows = chunk(start, min(out, start + step)).float()
        scale[start:start + len(rows)] = _row_scales(rows)
    with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned here
        warnings.simplefilter("ignore")
        qt = torch._empty_per_channel_affine_quantized(shape, scales=scale.double(),
                                                       zero_points=torch.zeros(out, dtype=torch.long), axis=0,
                                                       dtype=torch.qint8)
    values = torch.empty(0, dtype=torch.int8).set_(qt.untyped_storage(), 0, shape, (shape[1], 1))  # qt's bytes
    for start in range(0, out, step):
        rows = chunk(start, min(out, start + step)).float()
        values[start:start + len(rows)] = _int8_values(rows, scale[start:start + len(rows)])
    del values
    return torch.ops.quantized.linear_prepack(qt, None)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) floats -> (int8 (out, in), float32 scales (out,)): symmetric, each row on its own range (its
    max |w| becomes 127). One min/max pass and one rounding pass (2.2x faster than torch.quantize_per_channel with
    an inf-norm for the scales: Whisper base's int8 load spent 0.37 of 0.9 s there), QUANTIZE_CHUNK_ROWS rows at a
    time, so the float temporaries stay small (Gemma-3-270M's 262k x 640 head: 21 MB, not 2 x 671 MB)."""
    w = weight.detach()
    q, scale = torch.empty(w.shape, dtype=torch.int8, device=w.device), torch.empty(w.shape[0], device=w.device)
    for start in range(0, w.shape[0], QUANTIZE_CHUNK_ROWS):
        rows = w[start:start + QUANTIZE_CHUNK_ROWS].float()
        s = _row_scales(rows)
        q[start:start + len(rows)] = _int8_values(rows, s)
        scale[start:start + len(rows)] = s
    return q, scale


def _row_scales(rows: torch.Tensor) -> torch.Tensor:
    """(n, in) floats -> (n,): each row's symmetric int8 scale, its max |w| / 127 (at least 1e-12 / 127)."""
    lo, hi = torch.aminmax(rows, dim=1)
    return torch.maximum(hi, -lo).clamp_(min=1e-12) / 127


def _int8_values(rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(n, in) floats on their row scales (n,) -> their int8 values, -127 .. 127 (as floats)."""
    return torch.round(rows / scale[:, None]).clamp_(-127, 127)


def quantize_int8(model: nn.Module, done: Callable[[nn.Linear], None] | None = None) -> nn.Module:
    """Replace every nn.Linear of `model` in place by an `Int8Linear` (CPU inference), the output head included:
    a head tied to the input embedding is quantized as a copy (the embedding table stays float32 for lookups).
    LoRA's own matrices (`lora_A`/`lora_B`) stay float32; the frozen layers under them are quantized. `done` is
    called with each float layer once its int8 replacement is in place (a loader lets its weights' pages go)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and "lora_" not in f"{name}.{child_name}":
                setattr(module, child_name, Int8Linear.from_linear(child))
                if done is not None:
                    done(child)
    return model


# Sibling projections of one input: self-attention's queries, keys and values (Llama, Qwen2, Gemma, Whisper's
# encoder; BLIP-2's Q-Former, whose cross-attention shares only keys and values) and a gated MLP's two halves. Each
# group, when all of it is int8 with one input size, runs as one product (`fuse_int8_projections`)
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"), ("key", "value"))


class _SharedProduct:
    """One fused Int8Linear's latest output and the input it was computed from, for the parts that read it."""

    def __init__(self, linear: Int8Linear, parts: int):
        self.linear: Int8Linear | None = linear
        self.parts = parts
        self.members: list[weakref.ref] = []  # the Int8Parts (weak: a dropped model is freed without a collection)
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self.readers: set[int] = set()  # the parts (by first column) that read `output`; all have: it is let go
        self.products = 0  # fused products computed (tests: one per group call)
        self.traced: tuple | None = None  # in a step being compiled: (input, product, parts yet to read it)

    def __getstate__(self) -> dict:
        """What a copy of the model (copy.deepcopy, pickle) takes: the fused layer and the counts, no product in
        flight, and no members: weak references are neither copied (a deep copy's would be the original's parts,
        and its split would rewire them) nor pickled. Each copied part joins its copied group (`Int8Part`)."""
        return {**self.__dict__, "members": [], "input": None, "output": None, "readers": set(), "traced": None}

    def read(self, x: torch.Tensor, part: "Int8Part") -> torch.Tensor:
        """The part's columns of the fused product of `x`: computed by the first part called with `x`, read by the
        others. A part called with another input while its siblings have yet to read theirs (a cross-attention's
        keys and values read the encoder's states, its queries the decoder's) splits the group back into its
        layers for good: their products then, the same values."""
        if x is not self.input or part.start in self.readers:  # a new input, or a part's second call on one
            if len(self.readers) < self.parts and x is not self.input and self.input is not None:
                self._split()
                return part(x)
            self.input, self.output, self.readers = x, self.linear(x), set()
            self.products += 1
        self.readers.add(part.start)
        out = self.output[..., part.start:part.stop]  # a view: no part reads another's columns, nor one its own twice
        if len(self.readers) == self.parts:
            self.input = self.output = None
        return out

    def read_traced(self, x: torch.Tensor, part: "Int8Part") -> torch.Tensor:
        """`read` while torch.compile traces a step: the first part computes the group's product, the others read
        it, and the last sets `traced` back to None, so the compiled step leaves this object as it found it (the
        counters and sets `read` keeps would change with every step and make torch compile it again). A part
        called with another input while its siblings have yet to read theirs takes a product of its own (eager
        steps split such a group for good in the prefill, before any step compiles); each part's call counts, so the
        group is let go after its parts' calls whatever their inputs (each part is called once a layer call)."""
        traced = self.traced or (x, self.linear(x), self.parts)
        self.traced = None if traced[2] == 1 else (traced[0], traced[1], traced[2] - 1)
        y = traced[1] if traced[0] is x else self.linear(x)
        return y[..., part.start:part.stop]

    def _split(self) -> None:
        """Give each part its own Int8Linear of its rows of the fused int8 weights (and its bias), drop the fused."""
        (rows, scale), bias = self.linear.quantized_rows(), self.linear.bias
        for member in self.members:
            part = member()
            if part is None:
                continue
            span = slice(part.start, part.stop)
            part.own = Int8Linear(rows[span].contiguous(), bias[span] if part.has_bias else None,
                                  scale=scale[span].contiguous())
            part.own.reduce_range = self.linear.reduce_range
            if "fused" in part._modules:
                del part.fused
        self.linear = self.input = self.output = None


class Int8Part(nn.Module):
    """Output columns start:stop of a fused int8 product (`fuse_int8_projections`): exactly what the Int8Linear it
    replaces computed, since int8 products are summed in int32 and each output column has its own weight scale.
    The first part of a group holds the fused layer as its submodule `fused` (so `modules()` counts its weights
    once); the others reach it through the shared product. A split group's parts each hold their own (`own`)."""

    def __init__(self, shared: _SharedProduct, start: int, stop: int, has_bias: bool, owner: bool):
        super().__init__()
        self._shared, self.start, self.stop, self.has_bias = shared, start, stop, has_bias
        self.in_features, self.out_features = shared.linear.in_features, stop - start
        self.own: Int8Linear | None = None
        if owner:
            self.fused = shared.linear
        shared.members.append(weakref.ref(self))

    def __setstate__(self, state: dict) -> None:
        """A copy (copy.deepcopy, pickle) is a member of its copied group, which takes no members along
        (`_SharedProduct.__getstate__`; its state holds no part, so it is whole before any part's)."""
        super().__setstate__(state)
        self._shared.members.append(weakref.ref(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.own is not None:
            return self.own(x)
        return self._shared.read_traced(x, self) if torch.compiler.is_compiling() else self._shared.read(x, self)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, columns={self.start}:{self.stop}"


def fuse_int8_projections(model: nn.Module) -> int:
    """Each FUSED_GROUPS group of int8 siblings (children of one module; under a LoRA wrapper its `base_layer`)
    becomes one Int8Linear over their stacked int8 rows and scales, each sibling an `Int8Part` reading its columns:
    one product (and one activation quantization) per group call instead of one per projection, the same values.
    A group with a float member, or members of different input sizes or activation grids, is left as it is; one
    whose members turn out to read different inputs is split back on its first call (`_SharedProduct.read`).
    Returns the number of groups fused."""
    fused = 0
    for module in list(model.modules()):
        for names in FUSED_GROUPS:
            holders = [_int8_holder(module, name) for name in names]
            if any(h is None for h in holders):
                continue
            layers = [getattr(holder, attr) for holder, attr in holders]
            if len({(m.in_features, m.reduce_range) for m in layers}) != 1:
                continue
            q, scale = (torch.cat(pieces) for pieces in zip(*(m.quantized_rows() for m in layers)))
            bias = None if all(m.bias is None for m in layers) else torch.cat(
                [m.bias if m.bias is not None else torch.zeros(m.out_features) for m in layers])
            linear = Int8Linear(q, bias, scale=scale)
            linear.reduce_range = layers[0].reduce_range
            shared, start = _SharedProduct(linear, len(layers)), 0
            for i, ((holder, attr), m) in enumerate(zip(holders, layers)):
                setattr(holder, attr, Int8Part(shared, start, start + m.out_features, m.bias is not None, i == 0))
                start += m.out_features
            fused += 1
    return fused


def _int8_holder(module: nn.Module, name: str) -> tuple[nn.Module, str] | None:
    """(the module holding it, its attribute) for child `name` of `module` when it is an Int8Linear, directly or as
    the `base_layer` of a LoRA wrapper; else None."""
    child = getattr(module, name, None)
    if isinstance(child, Int8Linear):
        return module, name
    base = getattr(child, "base_layer", None) if isinstance(child, nn.Module) else None
    return (child, "base_layer") if isinstance(base, Int8Linear) else None


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())
