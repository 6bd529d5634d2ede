"""A compiled greedy decode that fails (out of memory in its prefill, in a step, or while its step compiles; Ctrl-C)
gives its static cache back to the model's store: a served shape's cache was lost at each such failure, and on a GPU
the next batch of that size made it anew and recorded its CUDA graph again, the old one kept beside it."""

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from llm_srt.model import static_steps
from llm_srt.model.decoding import greedy_ids
from llm_srt.model.static_steps import StaticSteps

OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture
def lm(tmp_path, monkeypatch):
    import tiny
    from transformers import AutoModelForCausalLM

    # eager "compiled" steps: the store is what is tested, not the compiler (as tests/model/test_speech_llm.py does)
    monkeypatch.setattr(StaticSteps, "_compiled", classmethod(lambda cls, mode: static_steps._decode_step))
    return AutoModelForCausalLM.from_pretrained(tiny.llm_dir(tmp_path)).eval()


def _decode(lm, embeds, mask):
    return greedy_ids(lm, embeds, mask, 8, [], compiled=True)  # no end token: every row steps to its cap


def _failing_step(error):
    def compiled(cls, mode):
        def step(*args):
            raise error
        return step
    return classmethod(compiled)


@pytest.mark.parametrize("where, error", [("prefill", OOM), ("step", OOM), ("step", KeyboardInterrupt()),
                                          ("compiling", BackendCompilerFailed(lambda *a: None, OOM, None))])
def test_a_failed_compiled_decode_keeps_its_served_shapes_static_cache(lm, monkeypatch, where, error):
    torch.manual_seed(0)
    embeds, mask = torch.randn(2, 5, lm.config.hidden_size), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad(), StaticSteps.warming():
        _decode(lm, embeds, mask)  # a served shape: its cache kept for the server's life
    ((key, cache),) = StaticSteps._caches[lm].items()
    assert StaticSteps._served[lm] == {key[0]: {key[1]}}

    def prefill_fails(module, args, kwargs):
        if kwargs["inputs_embeds"].shape[1] > 1:  # the prompt's pass, not a step (steps call `forward`: no hook)
            raise error

    hook = lm.register_forward_pre_hook(prefill_fails, with_kwargs=True) if where == "prefill" else None
    if where != "prefill":
        monkeypatch.setattr(StaticSteps, "_compiled", _failing_step(error))
    try:
        with torch.no_grad(), pytest.raises(type(error) if where != "compiling" else torch.OutOfMemoryError):
            _decode(lm, embeds, mask)
    finally:
        if hook is not None:
            hook.remove()
    assert StaticSteps._caches.get(lm, {}).get(key) is cache  # the same buffers, back in the store
    assert lm not in StaticSteps._refused  # out of memory is the batch's error, not the model's
