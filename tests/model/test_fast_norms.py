"""`llm.fast_cpu_norms`: Gemma 3's, Qwen2's and Llama's RMSNorm layers compute float32 CPU inference with torch's
`F.rms_norm`, bit for bit HF's values; inputs that need a gradient take HF's own forward."""

import copy
import pickle

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, \
    Qwen2ForCausalLM

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.model import llm
from llm_srt.model.llm import fast_cpu_norms, load_llm

SMALL = dict(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def models():
    yield Gemma3ForCausalLM(Gemma3TextConfig(head_dim=12, sliding_window=16, **SMALL))
    yield Qwen2ForCausalLM(Qwen2Config(**SMALL))
    yield LlamaForCausalLM(LlamaConfig(**SMALL))


@pytest.mark.parametrize("model", list(models()), ids=["gemma3", "qwen2", "llama"])
def test_the_fused_norm_gives_hfs_values_bit_for_bit(model, monkeypatch):
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data.normal_(0, 0.5)  # norms that are not the identity
    model.eval().requires_grad_(False)
    fast = copy.deepcopy(model)
    fast_cpu_norms(fast)
    norms = [m for m in fast.modules() if isinstance(m, llm._FastRMSNorm)]
    assert len(norms) == sum(type(m).__name__ in llm.FAST_NORMS for m in model.modules()) > 0
    calls = []
    real = llm.F.rms_norm
    monkeypatch.setattr(llm.F, "rms_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = torch.randint(0, 96, (3, 9))
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    assert len(calls) == len(norms)  # every norm once, through the fused op
    calls.clear()
    fast.model.embed_tokens.weight.requires_grad_(True)  # training: HF's forward, the same gradients
    model.model.embed_tokens.weight.requires_grad_(True)
    fast(input_ids=ids, labels=ids).loss.backward()
    model(input_ids=ids, labels=ids).loss.backward()
    assert calls == []
    torch.testing.assert_close(fast.model.embed_tokens.weight.grad, model.model.embed_tokens.weight.grad, rtol=0,
                               atol=0)
    assert type(pickle.loads(pickle.dumps(norms[0]))) is type(norms[0])


def test_load_llm_fuses_the_norms(tmp_path):
    model, _ = load_llm(tiny.llm_dir(tmp_path))
    assert any(isinstance(m, llm._FastRMSNorm) for m in model.modules())
