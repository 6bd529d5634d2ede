"""`evaluate --compile` over several systems: a system let go (evaluate's `del translator`, then `release_models`)
takes its LLM's weights and its static KV caches (`StaticSteps`' store, keyed weakly by the model) with it, though
its decode steps were compiled: torch's compiled steps (and on a GPU their CUDA graph trees, which keep only the data
pointers of a step's static inputs, the weights and the KV buffers HF marks static) hold no reference to them, so
three 7B systems in one run never hold more than one at a time. What stays is torch's compiled code for the shapes
(on a GPU, one private graph pool per device, reused by later recordings)."""

import gc
import weakref

import pytest
import torch

import tiny
from llm_srt.model.decoding import greedy_ids
from llm_srt.model.static_steps import StaticSteps


@pytest.mark.long(12)
@pytest.mark.parametrize("where", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_dropped_model_frees_its_weights_and_static_caches_after_compiled_steps(tmp_path, where):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny.llm_dir(tmp_path)).to(where).eval()
    torch.manual_seed(0)
    embeds = torch.randn(2, 5, lm.config.hidden_size, device=where)
    mask = torch.ones(2, 5, dtype=torch.long, device=where)
    before = StaticSteps.steps_taken
    with torch.no_grad():
        greedy_ids(lm, embeds, mask, 8, [], compiled=True)  # no end token: every row steps to its cap
    assert StaticSteps.steps_taken > before  # compiled steps ran (not the eager fallback)
    caches = list(StaticSteps._caches[lm].values())
    buffers = [t for c in caches for layer in c.layers for t in (layer.keys, layer.values)]
    assert buffers and all(isinstance(t, torch.Tensor) and t.device.type == where for t in buffers)
    held = [weakref.ref(x) for x in [lm, *lm.parameters(), *caches, *buffers]]
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    del caches, buffers
    allocated = torch.cuda.memory_allocated() if where == "cuda" else 0
    del lm
    gc.collect()
    assert [r for r in held if r() is not None] == []  # the model, every weight, its caches and their buffers
    if where == "cuda":  # and their GPU memory
        assert allocated - torch.cuda.memory_allocated() >= weights
