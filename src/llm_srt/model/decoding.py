"""Batched greedy and beam-search decoding from input embeddings (left-padded), on HF `generate` with a KV cache."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig

from ..errors import LLMSRTError
from .llm import backbone_and_head, causal_lm


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode. Greedy when beam_size is 1."""

    beam_size: int = 1  # number of beams; 1 = greedy
    max_new_tokens: int = 256  # hard cap on generated tokens per utterance
    length_penalty: float = 1.0  # beam ranking: sum logprob / length ** length_penalty (0 = raw sum)
    no_repeat_ngram_size: int = 0  # forbid repeating any n-gram of this size (0 = off)
    repetition_penalty: float = 1.0  # >1 discourages tokens already generated (1 = off)
    early_stopping: bool = True  # beam search stops once beam_size finished hypotheses exist
    share_prompt_cache: bool = True  # beam search: the prompt's KV cache is computed once per row, not per beam

    def __post_init__(self):
        if self.beam_size < 1 or self.max_new_tokens < 1:
            raise LLMSRTError(f"decoding: beam_size and max_new_tokens must be >= 1 (got {self.beam_size}, "
                              f"{self.max_new_tokens})")


def eos_ids(model: nn.Module, tokenizer) -> list[int]:
    """Every token id that ends a generation: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = causal_lm(model).generation_config.eos_token_id
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra] if extra is not None else [])
    if not ids:
        raise LLMSRTError("the LLM's tokenizer defines no EOS token; generation could not stop")
    return sorted(ids)


def generate_ids(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, options: DecodingOptions,
                 eos: list[int], pad_id: int, synced_ranks: bool = False) -> list[list[int]]:
    """Left-padded inputs_embeds (B, L, d) + attention mask (B, L) -> new token ids per row (EOS and after cut).
    `synced_ranks`: keep stepping until every rank is done (a sharded model needs all ranks at each step).

    Greedy stops as soon as every row has ended (HF generate); a finished row still rides along until then. Beam
    search (with `options.share_prompt_cache`) runs the prompt but its last position once per row, copies that KV
    cache to the row's beams, and lets `generate` go on from it: the prompt costs one pass, not `beam_size`."""
    config = generation_config(causal_lm(model).generation_config, options, eos, pad_id)
    extra = {}
    with torch.no_grad(), warnings.catch_warnings():
        # n-gram blocking over generated tokens only is what we want: the prompt is speech + language tags
        warnings.filterwarnings("ignore", message=".*no_repeat_ngram_size.*inputs_embeds")
        if options.beam_size > 1 and options.share_prompt_cache and embeds.shape[1] > 1 and not synced_ranks:
            extra["past_key_values"] = prompt_cache(model, embeds[:, :-1], mask[:, :-1], options.beam_size)
        out = model.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config,
                             synced_gpus=synced_ranks, **extra)
    result = []
    for row in out.tolist():
        ids = []
        for token in row:
            if token in eos:
                break
            ids.append(token)
        result.append(ids)
    return result


def prompt_cache(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, copies: int):
    """The LLM's KV cache of left-padded prompts (B, L, d), positions counted as `generate` counts them (from the
    mask), each row's cache repeated `copies` times in place (row i's copies at i * copies ...: generate's
    order)."""
    backbone, _ = backbone_and_head(model)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(~mask.bool(), 0)
    cache = backbone(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                     use_cache=True).past_key_values
    cache.batch_repeat_interleave(copies)
    return cache


def generation_config(base: GenerationConfig, o: DecodingOptions, eos: list[int], pad_id: int) -> GenerationConfig:
    """`base` (the model's own) set for deterministic search with `o`: no sampling, EOS ids, pad id."""
    config = copy.deepcopy(base)
    # Deterministic search only: clear the sampling settings some checkpoints ship with.
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        setattr(config, name, None)
    config.do_sample = False
    config.num_beams = o.beam_size
    config.num_return_sequences = 1
    config.max_new_tokens = o.max_new_tokens
    config.max_length = None
    config.min_new_tokens = None
    config.min_length = 0
    config.length_penalty = o.length_penalty
    config.no_repeat_ngram_size = o.no_repeat_ngram_size
    config.repetition_penalty = o.repetition_penalty
    config.early_stopping = o.early_stopping if o.beam_size > 1 else False
    config.eos_token_id = eos
    config.pad_token_id = pad_id
    config.bos_token_id = None
    return config
