"""The bench's training comparison (bench/training.py) leaves nothing of its steps behind on the model."""

import torch

import bench_stubs
import tiny
from llm_srt.bench import training


def test_the_training_comparison_lets_its_gradients_go(tmp_path, monkeypatch):
    """time_training restored the trained weights after its steps but kept their gradients: the trainable weights'
    size again (on a GPU, in its allocator) for the rest of the bench, where bench/paper.py's training rows set
    theirs back to None. After it every trainable weight's .grad is None, and the weights are as they were."""
    monkeypatch.setattr(training, "PeakMemory", bench_stubs.fake_peak(mib=1.0, kind="rss", reserved_mib=None,
                                                                        start_mib=0.0, rise_mib=1.0))
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path)
    params = model.trainable_parameters()
    before = [p.detach().clone() for p in params]
    training.time_training(model, bench_stubs.utterances(tmp_path, 2), batch_size=2, steps=1, workdir=tmp_path)
    assert params and [p.grad is None for p in params] == [True] * len(params)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
