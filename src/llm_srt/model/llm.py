"""The causal LLM: any Hugging Face causal-LM folder, frozen, with optional LoRA (peft)."""

from __future__ import annotations

import json
import types
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast)

from ..device import DTYPES, compute_dtype, is_int8
from ..errors import LLMSRTError

GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


@dataclass(frozen=True)
class LoraOptions:
    """LoRA on the frozen LLM (paper defaults: ~1.8M parameters on Qwen2.5-3B)."""

    r: int = 8  # rank of the update matrices
    alpha: int = 32  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the LoRA branch input
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # linear layers that get an update, by name
    bias: str = "none"  # peft bias mode: "none", "all" or "lora_only"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "LoraOptions | None":
        if d is None:
            return None
        d = dict(d)
        d["target_modules"] = tuple(d.get("target_modules", cls.target_modules))
        return cls(**d)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LLMSRTError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_llm(path: str | Path, dtype: str | torch.dtype = torch.float32, lora: LoraOptions | None = None,
             device: str | torch.device | None = None, weights: bool = True
             ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """(model, tokenizer) of an HF causal-LM folder. Every base weight is frozen; LoRA weights (if any) are not.

    The weights load straight onto `device` in `dtype` (never a whole float32 copy on the host first). `int8` (CPU
    inference only): loaded in float32, then every linear layer, the output head included, becomes an `Int8Linear`
    (`quantize_int8`; LoRA's own small matrices stay float32).
    `weights=False` builds the LLM from its config.json with random weights directly on `device` (paper-shaped
    benchmarks need no download); `device="meta"` builds a weightless skeleton whose parameters live on the meta
    device (buffers stay real, on the CPU): FSDP fills in each rank's shards later."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise LLMSRTError(f"{path}: not a Hugging Face model folder (no config.json); run `llm-srt setup` or point "
                          "the config's llm at a folder holding a causal LM")
    int8 = is_int8(dtype)
    torch_dtype = compute_dtype(resolve_dtype(dtype))
    target = torch.device(device) if device is not None else torch.device("cpu")
    if int8 and target.type != "cpu":
        raise LLMSRTError(f"{path}: int8 linear layers run on the CPU only, not on {target}; use bfloat16 there")
    try:
        tokenizer = load_tokenizer(path)
        if target.type == "meta" or not weights:
            model = _from_config(path, torch_dtype, target)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=target)
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{path}: cannot load the LLM or its tokenizer ({str(e).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    fast_cpu_head(model)
    if lora is not None:
        model = apply_lora(model, lora)
    if int8:
        quantize_int8(model)
    return model, tokenizer


def _from_config(path: Path, dtype: torch.dtype, device: torch.device) -> PreTrainedModel:
    """The LLM of `path`'s config.json without reading weights: random on `device`, or a meta skeleton."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if device.type == "meta":
        from accelerate import init_empty_weights  # peft depends on accelerate

        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # from_config under a device context leaves tied embeddings as two tensors
    return model


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer. A generic tokenizer.json (tokenizer_class TokenizersBackend / PreTrainedTokenizerFast)
    is loaded as is: AutoTokenizer would swap in the model type's class, which rebuilds its own pre-tokenizer."""
    config_file = path / "tokenizer_config.json"
    cls = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    if cls in GENERIC_TOKENIZERS and (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def apply_lora(model: PreTrainedModel, lora: LoraOptions) -> nn.Module:
    """Wrap `model` with peft LoRA adapters (the base stays frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias=lora.bias, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise LLMSRTError(f"LoRA: {str(e).splitlines()[0]} (check lora.target_modules against the LLM's layer "
                          "names)") from None


def causal_lm(model: nn.Module) -> PreTrainedModel:
    """The HF causal LM inside an optional peft wrapper (LoRA layers stay injected in it)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder stack returning hidden states, lm_head) of a causal LM, so logits can be computed selectively."""
    lm = causal_lm(model)
    backbone = getattr(lm, lm.base_model_prefix, None) or lm.get_decoder()
    return backbone, lm.get_output_embeddings()


def softcap(logits: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Apply the LLM's final-logit soft-capping (Gemma 2 style) if its config sets one."""
    config = causal_lm(model).config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is None and hasattr(config, "get_text_config"):
        cap = getattr(config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def hidden_size(model: nn.Module) -> int:
    return causal_lm(model).get_input_embeddings().weight.shape[1]


HEAD_GEMM_MAX_ROWS = 64  # decode-sized inputs (batch x beams) use the transposed head product on CPU


def fast_cpu_head(model: nn.Module) -> None:
    """On CPU, compute the output head as (W @ h^T)^T for decode-sized inputs (<= HEAD_GEMM_MAX_ROWS rows).

    Same math as nn.Linear, but the BLAS picks faster kernels: Gemma-3's 262k x 640 head on a 2-core EPYC takes
    19 instead of 53 ms for 1 row, 44 instead of 101 ms for 8 (llm-srt bench). Larger inputs (training targets)
    keep nn.Linear."""
    head = causal_lm(model).get_output_embeddings()
    if isinstance(head, nn.Linear):
        head.forward = types.MethodType(_decode_head_forward, head)


def _decode_head_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if x.device.type != "cpu" or rows > HEAD_GEMM_MAX_ROWS or rows == 0:
        return nn.functional.linear(x, self.weight, self.bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = torch.cat([flat, flat])  # two rows: a GEMM, not the slower GEMV
    out = (self.weight @ flat.T).T[:rows]
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], self.weight.shape[0])


# ---- int8 linear layers (CPU inference) ---------------------------------------------------------------------------
def _has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (u8 x s8 dot products without 16-bit saturation): then activations may use all
    8 bits; else fbgemm needs them in 7 (`reduce_range`)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Int8Linear(nn.Module):
    """A frozen nn.Linear with int8 weights, for CPU inference: (..., in) -> (..., out) in the input's dtype.

    Weights are symmetric int8 with one scale per output row, packed once for fbgemm's int8 GEMM (4x fewer bytes
    to read per decode step than float32, and VNNI int8 arithmetic). Activations are quantized per call: each input
    row is first scaled to max |x| = 1 and scaled back after, so every row is quantized on its own range (a large
    activation in one row does not coarsen its batch neighbours)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self._pack(weight.detach().float())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.reduce_range = not _VNNI

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)

    def _pack(self, weight: torch.Tensor) -> None:
        scale = torch.linalg.vector_norm(weight, ord=float("inf"), dim=1).clamp(min=1e-12) / 127
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated upstream; torch is pinned here
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(q, None)

    @property
    def weight_bytes(self) -> int:
        """Bytes a product reads: the int8 weights plus their float32 row scales (and the bias)."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.out_features * (self.in_features + 4) + bias

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: the weights the product really uses."""
        q, _ = torch.ops.quantized.linear_unpack(self._packed)
        return q.dequantize()

    def zero_rows(self, rows: list[int]) -> None:
        """Set output rows' weights to exactly 0 (benchmarks pin a logit with it)."""
        weight = self.dequantized_weight()
        weight[rows] = 0
        self._pack(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        scale = torch.linalg.vector_norm(flat, ord=float("inf"), dim=1, keepdim=True).clamp(min=1e-30)
        y = torch.ops.quantized.linear_dynamic(flat / scale, self._packed, self.reduce_range) * scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


_VNNI = _has_vnni()


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of `model` in place by an `Int8Linear` (CPU inference), the output head included:
    a head tied to the input embedding is quantized as a copy (the embedding table stays float32 for lookups).
    LoRA's own matrices (`lora_A`/`lora_B`) stay float32; the frozen layers under them are quantized."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and "lora_" not in f"{name}.{child_name}":
                setattr(module, child_name, Int8Linear.from_linear(child))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())
