"""BucketBatchSampler.stream() where no epoch holds a whole step: it looped forever and yielded nothing."""

from itertools import islice

import numpy as np
import pytest

from llm_srt.data import loader
from llm_srt.data.loader import BucketBatchSampler
from llm_srt.errors import LLMSRTError


def _counted(n, limit=500):
    """Durations of `n` examples for each epoch; a test that asks for more than `limit` epochs fails (the old loop)."""
    asked = []

    def durations(epoch):
        asked.append(epoch)
        if len(asked) > limit:
            raise AssertionError(f"stream() went through {limit} epochs without yielding or stopping")
        return np.arange(n) % 7 + 0.5
    return durations, asked


@pytest.mark.parametrize("n,kwargs,said", [
    (3, dict(batch_size=4, drop_last=True), r"^no batch to yield: 3 examples in batches of 4, full ones only "
     r"\(drop_last\) make 0 batches an epoch, fewer than one step of 1 \(1 ranks x 1 micro-batches\); lower the batch "
     r"size or the micro-batches a step, or add data$"),
    (5, dict(batch_size=2, num_replicas=2, step_batches=2), r"^no batch to yield: 5 examples in batches of 2 make 3 "
     r"batches an epoch, fewer than one step of 4 \(2 ranks x 2 micro-batches\)"),
    (0, dict(batch_size=2), "^no batch to yield: 0 examples"),
])
def test_a_stream_no_epoch_of_which_holds_a_step_is_refused(n, kwargs, said):
    durations, asked = _counted(n)
    with pytest.raises(LLMSRTError, match=said):
        next(BucketBatchSampler(durations, **kwargs).stream())
    assert len(asked) <= 2  # at once: without groups every epoch has as many batches


def test_with_groups_a_stream_stops_after_empty_epochs_in_turn(monkeypatch):
    monkeypatch.setattr(loader, "EMPTY_EPOCHS", 5)
    durations, asked = _counted(3)
    with pytest.raises(LLMSRTError, match="^no batch to yield: 3 examples in batches of 4"):
        next(BucketBatchSampler(durations, 4, drop_last=True, groups=[0, 1, 1]).stream())
    assert 5 <= len(asked) <= 7


def test_an_epoch_resumed_at_its_end_is_passed_over_and_the_stream_goes_on():
    durations = np.arange(10) % 7 + 0.5  # 5 batches of 2; with 2 micro-batches a step, 4 of them are used
    sampler = BucketBatchSampler(durations, 2, seed=3, step_batches=2)
    assert sampler.load_state_dict({"epoch": 0, "batch": 3, "seed": 3, "replicas": 1}) == 1  # on to batch 4 of 4
    got = list(islice(sampler.stream(), 4))
    assert [(epoch, batch) for epoch, batch, _ in got] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert [indices for *_, indices in got] == sampler.batches(1)
