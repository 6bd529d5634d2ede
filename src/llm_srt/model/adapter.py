"""Speech adapters: encoder frames H (B, T, D) + frame mask (B, T) -> LLM embeddings (B, N, d_llm) + mask (B, N).

- `QFormerAdapter` (the paper's): nq learned queries cross-attend to H in a BLIP-2 Q-Former, then an MLP. N = nq.
- `PooledProjector` (Qwen2-Audio style): 2x average pooling of the frames, then an MLP. N = ceil(T / 2).
- `LinearDownsampler` (SLAM-LLM "linear"): k consecutive frames concatenated, then an MLP. N = ceil(T / k).

Module names follow the reference code (`query`, `qformer.*`, `linear` | `linear1`/`linear2`, `norm`) so reference
checkpoints import by name.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ..errors import ConfigError

QFORMER_QUERIES = 80  # nq, paper: fixed speech-token count
QFORMER_HIDDEN = 768  # query dim, paper
QFORMER_LAYERS = 8  # reference code
QFORMER_HEADS = 12  # Blip2QFormerConfig default (768 / 64)
QFORMER_FFN = 3072  # Blip2QFormerConfig default
QFORMER_CROSS_EVERY = 2  # Blip2QFormerConfig default: cross-attention in every 2nd layer
NORM_EPS = 1e-5  # reference code's output LayerNorm
# Reference MLP widths by LLM width: up to 1536 a single Linear, up to 2560 via 1536, above via 2560.
MLP_RULE = ((1536, 0), (2560, 1536), (float("inf"), 2560))


def paper_mlp_hidden(llm_dim: int) -> int:
    """Hidden width of the reference MLP for an LLM of width `llm_dim` (0 = one Linear)."""
    return next(hidden for limit, hidden in MLP_RULE if llm_dim <= limit)


class Adapter(nn.Module):
    """Base: keeps the constructor arguments (`kwargs`) so a checkpoint can rebuild the same module, and owns the
    output MLP, registered under the reference names: `linear` (one layer) or `linear1`/`linear2`, then `norm`."""

    kind = ""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    @property
    def llm_dim(self) -> int:
        return self.kwargs["llm_dim"]

    def _build_mlp(self, d_in: int, llm_dim: int, hidden: int, norm: bool = True) -> None:
        """Linear [+ ReLU + Linear] (+ LayerNorm): d_in -> llm_dim; hidden 0 = a single Linear."""
        if hidden:
            self.linear1 = nn.Linear(d_in, hidden)
            self.relu = nn.ReLU()
            self.linear2 = nn.Linear(hidden, llm_dim)
        else:
            self.linear = nn.Linear(d_in, llm_dim)
        self.norm = nn.LayerNorm(llm_dim, eps=NORM_EPS) if norm else nn.Identity()

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., llm_dim)."""
        x = self.linear2(self.relu(self.linear1(x))) if hasattr(self, "linear1") else self.linear(x)
        return self.norm(x)


class QFormerAdapter(Adapter):
    """H (B, T, D) + mask (B, T) -> (B, nq, d_llm): learned queries, BLIP-2 Q-Former cross-attention, MLP."""

    kind = "qformer"

    def __init__(self, encoder_dim: int, llm_dim: int, num_queries: int = QFORMER_QUERIES,
                 hidden_size: int = QFORMER_HIDDEN, num_layers: int = QFORMER_LAYERS, num_heads: int = QFORMER_HEADS,
                 intermediate_size: int = QFORMER_FFN, cross_attention_frequency: int = QFORMER_CROSS_EVERY,
                 mlp_hidden: int | None = None, dropout: float = 0.1):
        mlp_hidden = paper_mlp_hidden(llm_dim) if mlp_hidden is None else mlp_hidden
        super().__init__(encoder_dim=encoder_dim, llm_dim=llm_dim, num_queries=num_queries, hidden_size=hidden_size,
                         num_layers=num_layers, num_heads=num_heads, intermediate_size=intermediate_size,
                         cross_attention_frequency=cross_attention_frequency, mlp_hidden=mlp_hidden, dropout=dropout)
        config = Blip2QFormerConfig(hidden_size=hidden_size, num_hidden_layers=num_layers,
                                    num_attention_heads=num_heads, intermediate_size=intermediate_size,
                                    encoder_hidden_size=encoder_dim,
                                    cross_attention_frequency=cross_attention_frequency,
                                    hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        config._attn_implementation = "sdpa"
        self.query = nn.Parameter(torch.randn(1, num_queries, hidden_size))
        self.qformer = Blip2QFormerModel(config)
        self._build_mlp(hidden_size, llm_dim, mlp_hidden)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        query = self.query.expand(h.shape[0], -1, -1)
        h = h.masked_fill(~mask.unsqueeze(-1), 0)  # masked keys still meet their values: 0 x inf would be NaN
        out = self.qformer(query_embeds=query, encoder_hidden_states=h.to(self.query.dtype),
                           encoder_attention_mask=mask.long()).last_hidden_state
        out = self._mlp(out)
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)


class PooledProjector(Adapter):
    """H (B, T, D) + mask -> (B, ceil(T/pool), d_llm): masked average over `pool` frames, then an MLP.

    Qwen2-Audio's speech-token count: with 30 s padded input (1500 frames) it gives 750 tokens. Not its module:
    Qwen2-Audio pools before the encoder's last LayerNorm and projects with one Linear; the count is what the speed
    comparison (Table 7) needs.
    """

    kind = "pooled"

    def __init__(self, encoder_dim: int, llm_dim: int, pool: int = 2, mlp_hidden: int | None = None):
        mlp_hidden = llm_dim if mlp_hidden is None else mlp_hidden
        super().__init__(encoder_dim=encoder_dim, llm_dim=llm_dim, pool=pool, mlp_hidden=mlp_hidden)
        self._build_mlp(encoder_dim, llm_dim, mlp_hidden)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        groups, gmask = _group_frames(h, mask, self.kwargs["pool"])  # (B, N, k, D), (B, N, k)
        weights = gmask.to(h.dtype).unsqueeze(-1)
        pooled = (groups * weights).sum(2) / weights.sum(2).clamp(min=1.0)
        return self._mlp(pooled), gmask.any(-1)


class LinearDownsampler(Adapter):
    """H (B, T, D) + mask -> (B, ceil(T/k), d_llm): k consecutive frames concatenated, Linear ReLU Linear. The
    reference's EncoderProjectorConcat drops the last T % k frames (floor(T/k) tokens); here they are zero-padded
    into one more token, so a clip's last words are kept."""

    kind = "linear"

    def __init__(self, encoder_dim: int, llm_dim: int, k: int = 5, mlp_hidden: int = 2048):
        super().__init__(encoder_dim=encoder_dim, llm_dim=llm_dim, k=k, mlp_hidden=mlp_hidden)
        self._build_mlp(encoder_dim * k, llm_dim, mlp_hidden, norm=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        groups, gmask = _group_frames(h, mask, self.kwargs["k"])
        return self._mlp(groups.flatten(2)), gmask.any(-1)


def _group_frames(h: torch.Tensor, mask: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) -> (B, ceil(T/k), k, D) with padding frames zeroed, and the per-frame mask (B, N, k)."""
    b, t, d = h.shape
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=h.device)
    pad = (-t) % k
    h = nn.functional.pad(h.masked_fill(~mask.unsqueeze(-1), 0), (0, 0, 0, pad))  # (not h * mask: inf * 0 is NaN)
    mask = nn.functional.pad(mask, (0, pad), value=False)
    return h.view(b, -1, k, d), mask.view(b, -1, k)


ADAPTERS: dict[str, type[Adapter]] = {cls.kind: cls for cls in (QFormerAdapter, PooledProjector, LinearDownsampler)}
INFERRED = ("encoder_dim", "llm_dim")  # constructor arguments the model fills in from the encoder and the LLM


def adapter_class(kind: str) -> type[Adapter]:
    if kind not in ADAPTERS:
        raise ConfigError(f"unknown adapter {kind!r}; choose one of {', '.join(ADAPTERS)}")
    return ADAPTERS[kind]


def adapter_options(kind: str) -> dict[str, tuple[Any, Any]]:
    """The options an adapter kind takes, read from its constructor: name -> (type hint, default)."""
    cls = adapter_class(kind)
    hints = typing.get_type_hints(cls.__init__)
    return {name: (hints[name], p.default) for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and name not in INFERRED}


def check_options(kind: str, options: dict) -> None:
    """A ConfigError naming the first option `kind`'s constructor does not take."""
    known = adapter_options(kind)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(f"adapter {kind!r}: bad options: unknown option '{unknown[0]}'; {kind} takes "
                          f"{', '.join(known)}")


def build_adapter(kind: str, encoder_dim: int, llm_dim: int, **kwargs) -> Adapter:
    """An adapter by registry name ("qformer", "pooled", "linear")."""
    check_options(kind, kwargs)
    try:
        return ADAPTERS[kind](encoder_dim=encoder_dim, llm_dim=llm_dim, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # a model folder's config.json, edited: num_heads 7 with
        # hidden 32, a negative width, dropout 2.0 (torch's errors, whose tracebacks named no file)
        raise ConfigError(f"adapter {kind!r}: bad options {kwargs} ({e})") from None
