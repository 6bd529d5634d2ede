"""An auxiliary CTC loss that aligns the adapter's speech embeddings with the LLM's own input embeddings.

Each speech embedding is scored against the LLM's input embedding of each token by cosine similarity times a
learned scale, with a learned blank vector (`CTCHead`), and CTC (torch's `ctc_loss`) sums over every alignment of
the transcript's tokens to the speech embeddings. So the adapter learns to emit, in order, vectors that point where
the LLM's embeddings of the spoken words point: text-like input that a small LLM can learn to read (without it, the
embedded 270M LLM never learned to read through the projector on this project's data: README).

Scoring against the whole vocabulary each step would cost (speech embeddings x vocabulary) products (262k rows for
Gemma-3), so each batch scores against the tokens its transcripts contain plus `negatives` random others (a sampled
softmax). The head (blank and scale, d + 1 numbers) is saved beside the adapter while a stage trains with CTC
(`ctc_head.safetensors`); inference never uses it.

Measured here (CTC alone, 1,000 steps of 16 clips, greedy CTC WER on a held-out voice): a fixed scale of 40 gave 89,
the pad token's embedding as the blank 104; both learned, 72 (at 400 steps) and 69 (3,000 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import bounds

INITIAL_SCALE = 20.0  # cosine similarity -> logit, at the start (learned)


@dataclass
class CTCLoss:
    """The auxiliary CTC loss of a training stage (`ctc:` in a training config)."""

    weight: float = field(default=0.0, metadata=bounds(ge=0))  # the objective is CE + weight x CTC (0 = off)
    only: bool = False  # train the adapter against CTC alone: no LLM forward, ~10x faster steps (an alignment
    #   warm-up before CE; needs trainable: [adapter])
    negatives: int = field(default=2048, metadata=bounds(ge=0))  # random vocabulary tokens scored besides the
    #   batch's own

    @property
    def active(self) -> bool:
        return self.only or self.weight > 0


class CTCHead(nn.Module):
    """The CTC loss's own parameters: the blank's direction and the log of the cosine scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.blank = nn.Parameter(torch.randn(dim) * 0.02)
        self.log_scale = nn.Parameter(torch.tensor([math.log(INITIAL_SCALE)]))  # 1-D: FSDP shards no scalars

    @staticmethod
    def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A saved head's state as this class holds it: heads saved before `log_scale` became 1-D (2026-12-01)
        stored it as a scalar."""
        scale = state.get("log_scale")
        return {**state, "log_scale": scale.reshape(1)} if scale is not None and scale.dim() == 0 else state

    def loss(self, speech: torch.Tensor, mask: torch.Tensor, token_ids: list[list[int]], embed: nn.Module,
             negatives: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean CTC loss (per target token, then over rows, as `F.ctc_loss`'s "mean") of speech embeddings (B, N, d)
        with mask (B, N) against each row's token ids, scored against `embed` (the LLM's input embeddings) of the
        batch's tokens plus `negatives` random vocabulary ids (drawn with torch's generator). A row whose speech is
        too short for its tokens (fewer vectors than tokens plus repeated neighbours: no alignment) adds nothing and
        is left out of the mean (it counted as a 0: a Q-Former with 4 queries trained on a loss of 0.0), which is 0
        when no row is feasible. Returns (the loss, (feasible rows, rows) as a float tensor on its device: the
        recipe's count, `Recipe.train_step` warns or stops)."""
        device = speech.device
        flat = torch.tensor([t for row in token_ids for t in row], dtype=torch.long, device=device)
        # the table's rows from its weight: peft's LoRA wrapper of it (target_modules with embed_tokens) has no
        #   num_embeddings, and the first CTC step stopped on an AttributeError
        columns = torch.unique(torch.cat([flat, torch.randint(embed.weight.shape[0], (negatives,), device=device)]))
        logits = self._scores(speech, embed(columns))  # (B, N, 1 + C): column 0 is the blank
        lengths = torch.tensor([len(row) for row in token_ids], dtype=torch.long, device=device)
        needed = torch.tensor([len(row) + sum(a == b for a, b in zip(row, row[1:])) for row in token_ids],
                              dtype=torch.long, device=device)  # a blank between two equal tokens
        frames = mask.sum(1)
        feasible = (frames >= needed).float()
        per_row = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.searchsorted(columns, flat) + 1, frames,
                             lengths, blank=0, reduction="none", zero_infinity=True) / lengths.clamp(min=1)
        rows = torch.stack([feasible.sum(), feasible.new_tensor(float(len(token_ids)))])
        return (per_row * feasible).sum() / feasible.sum().clamp(min=1), rows  # no sync on the device: no `if`

    @torch.no_grad()
    def greedy_tokens(self, speech: torch.Tensor, mask: torch.Tensor, embed: nn.Module) -> list[list[int]]:
        """The best path over the whole vocabulary, repeats merged and blanks dropped: each row's token ids (what
        the adapter's output reads as by itself; for checks and diagnostics)."""
        best = (self._scores(speech, embed.weight).argmax(-1) - 1).tolist()  # -1: the blank
        rows = []
        for path, keep in zip(best, mask.tolist()):
            out, prev = [], -1
            for token, real in zip(path, keep):
                if not real:
                    continue
                if token != prev and token >= 0:
                    out.append(token)
                prev = token
            rows.append(out)
        return rows

    def _scores(self, speech: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, N, d) speech x (C, d) table -> (B, N, 1 + C) float32 logits, column 0 the blank. Float32 even under
        the recipe's bf16 autocast, which would run the product in bf16 (scores off by ~0.04 at scale 20)."""
        with torch.autocast(device_type=speech.device.type, enabled=False):
            columns = F.normalize(torch.cat([self.blank[None].float(), table.float()]), dim=-1)
            return self.log_scale.exp() * F.normalize(speech.float(), dim=-1) @ columns.T
