"""The decoding helpers that need no model: `last_argmax` against torch's argmax."""

import pytest
import torch

from llm_srt.model.decoding import ARGMAX_BLOCK, ARGMAX_MIN_VOCAB, last_argmax

VOCABS = (ARGMAX_MIN_VOCAB, 262_144, 151_936, ARGMAX_MIN_VOCAB + 7)  # whole blocks, Gemma's, Qwen's, a short tail


def expected(logits):
    return logits[:, -1].argmax(-1)


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_argmax_is_torchs_argmax_on_random_logits(vocab, dtype):
    logits = torch.randn(16, 2, vocab, generator=torch.Generator().manual_seed(vocab)).to(dtype)
    assert torch.equal(last_argmax(logits), expected(logits))


@pytest.mark.parametrize("vocab", VOCABS)
def test_last_argmax_takes_the_first_of_equal_maxima_and_nans_as_torch_does(vocab):
    whole = vocab // ARGMAX_BLOCK * ARGMAX_BLOCK
    logits = torch.randn(8, 1, vocab, generator=torch.Generator().manual_seed(1))
    row = logits[:, 0]
    row[0, [5, ARGMAX_BLOCK + 3, 3 * ARGMAX_BLOCK]] = 9.0  # equal maxima in three blocks: the first
    row[1, [ARGMAX_BLOCK + 9, ARGMAX_BLOCK + 2]] = 9.0  # two in one block
    row[2, [whole - 1, vocab - 1]] = 9.0  # the last whole block's and the last logit tie
    row[3, vocab - 1] = 9.0  # the very last logit alone
    row[4, [7, vocab - 2]] = float("nan")  # NaNs: the first
    row[5, vocab - 1] = float("nan")  # a NaN at the end
    row[6] = float("-inf")  # nothing but -inf: index 0
    row[7, ARGMAX_BLOCK:] = float("-inf")
    assert torch.equal(last_argmax(logits), expected(logits))


def test_last_argmax_falls_back_on_small_vocabularies_and_strided_logits():
    small = torch.randn(4, 1, ARGMAX_MIN_VOCAB - 1)
    assert torch.equal(last_argmax(small), expected(small))
    strided = torch.randn(4, 1, 2 * ARGMAX_MIN_VOCAB)[..., ::2]  # last dimension not contiguous
    assert torch.equal(last_argmax(strided), expected(strided))
