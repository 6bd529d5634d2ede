"""Speech adapters: shapes, masks, the paper's sizes and the reference module names."""

import pytest
import torch

from llm_srt.errors import ConfigError
from llm_srt.model.adapter import ADAPTERS, PooledProjector, QFormerAdapter, build_adapter

SMALL = {"qformer": dict(num_queries=6, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
         "pooled": dict(pool=2, mlp_hidden=24), "linear": dict(k=3, mlp_hidden=24)}


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(3, 11, 16, generator=g)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 4:] = False
    return h, mask


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_shapes(kind):
    adapter = build_adapter(kind, 16, 40, **SMALL[kind]).eval()
    h, mask = _inputs()
    out, out_mask = adapter(h, mask)
    n = {"qformer": 6, "pooled": 6, "linear": 4}[kind]  # 6 queries; ceil(11/2); ceil(11/3)
    assert out.shape == (3, n, 40) and out_mask.shape == (3, n)
    if kind == "qformer":
        assert out_mask.all()
    else:
        assert out_mask[2].sum() == -(-4 // SMALL[kind].get("pool", SMALL[kind].get("k")))


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_padding_frames_do_not_change_the_output(kind):
    torch.manual_seed(0)
    adapter = build_adapter(kind, 16, 40, **SMALL[kind]).eval()
    h, mask = _inputs()
    noisy = h.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), 16)
    noisy[(~mask).nonzero(as_tuple=True) + (0,)] = float("inf")  # a damaged cache entry's padding: not even
    #   inf * 0 = NaN gets through
    with torch.no_grad():
        a, a_mask = adapter(h, mask)
        b, _ = adapter(noisy, mask)
        alone, _ = adapter(h[2:3, :4], None)
        unmasked, _ = adapter(noisy, None)
    valid = a_mask.unsqueeze(-1)
    assert torch.allclose(a * valid, b * valid, atol=1e-5)
    n = alone.shape[1]
    assert torch.allclose(a[2, :n], alone[0], atol=1e-5)
    assert not torch.allclose(unmasked * valid, a * valid, atol=1e-3)  # the mask is what protects them


def test_paper_qformer_size_and_names():
    adapter = QFormerAdapter(1280, 2048)  # Whisper-large-v3 -> Qwen2.5-3B
    assert sum(p.numel() for p in adapter.parameters()) / 1e6 == pytest.approx(73.7, abs=0.05)
    assert adapter.query.shape == (1, 80, 768) and adapter.qformer.config.num_hidden_layers == 8
    assert adapter.linear1.out_features == 1536 and adapter.linear2.out_features == 2048
    assert hasattr(QFormerAdapter(16, 1024, num_layers=1), "linear")  # d_llm <= 1536: one Linear + norm
    assert QFormerAdapter(16, 3584, num_layers=1).linear1.out_features == 2560  # Qwen2.5-7B


def test_pooled_projector_gives_750_tokens_for_30s():
    proj = PooledProjector(16, 24)
    out, mask = proj(torch.randn(1, 1500, 16), torch.ones(1, 1500, dtype=torch.bool))
    assert out.shape == (1, 750, 24) and mask.all()


def test_unknown_adapter_or_option():
    with pytest.raises(ConfigError, match="unknown adapter"):
        build_adapter("perceiver", 16, 40)
    with pytest.raises(ConfigError, match="bad options"):
        build_adapter("linear", 16, 40, queries=3)
