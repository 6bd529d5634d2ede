"""The LLM's attention: Hugging Face's SDPA attention, with one faster form for a CPU decode step.

A decode step of a grouped-query layer (one query position, several query heads per key/value head) reaches HF's
`sdpa_attention_forward` without a mask when no row of the batch is padded, and HF then asks torch's SDPA for its
`enable_gqa` form. On the CPU that runs the flash kernel, whose blocking is made for long queries: for Gemma-3-270M's
4 query heads over 1 key/value head (head size 256) at 16 rows and 155 cached positions it took 411 us a layer. The
same attention with each group's query heads laid out as query rows of its key/value head (HF's own `pack_gqa`,
which HF takes when a mask is present) took 186 us, and 27 against 30 us at one row (2 threads, this project's Intel
Xeon). So on the CPU that case takes the packed form; every other call (prefill, training, masks, GPUs) is HF's
own. The values agree to float32 rounding (another summation order; tested).

`use_decode_attention(model)` registers the function with transformers' attention interface (and HF's SDPA mask
under the same name, so masks are built as for "sdpa") and selects it for the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import pack_gqa, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "llm_srt_sdpa"


def decode_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """HF's `sdpa_attention_forward`, except for one unmasked query position of a grouped-query layer on the CPU:
    (batch, heads, 1, d) query -> (batch, kv heads, group, d), attention over the kv heads' keys as they are,
    output back to HF's (batch, 1, heads, d)."""
    groups = getattr(module, "num_key_value_groups", 1)
    if (query.shape[2] != 1 or groups <= 1 or attention_mask is not None or query.device.type != "cpu"
            or dropout or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, size = query.shape
    out = F.scaled_dot_product_attention(pack_gqa(query, groups), key, value, scale=scaling)
    return out.reshape(batch, 1, heads, size), None


def use_decode_attention(model: nn.Module) -> None:
    """Every attention layer of `model` (a transformers model, or one wrapping it, e.g. peft's) that used "sdpa"
    takes `decode_attention`; others (eager, flash-attention) are left as they are."""
    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = NAME
