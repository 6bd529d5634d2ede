"""head_losses: the output head and cross-entropy in blocks of rows give F.cross_entropy's losses and gradients
while holding one block of logits at a time."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_srt.model import cpu_linear, llm
from llm_srt.model.int8_linear import Int8Linear
from llm_srt.model.llm import head_losses


def _reference(hidden, head, targets, cap):
    logits = head(hidden).float()
    logits = torch.tanh(logits / cap) * cap if cap else logits
    return F.cross_entropy(logits, targets, reduction="none")


@pytest.mark.parametrize("cap", [None, 0.5])  # 0.5: tanh well off its linear part, its derivative matters
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocked_losses_and_gradients_equal_f_cross_entropy(monkeypatch, cap, bias, dtype):
    monkeypatch.setattr(llm, "HEAD_BLOCK_LOGITS", 7 * 50)  # 7 rows of the 50-token vocab a block: 3 blocks
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias).to(dtype).requires_grad_(False)
    hidden = (2 * torch.randn(17, 16)).to(dtype).requires_grad_(True)
    targets = torch.randint(0, 50, (17,))
    targets[[2, 9]] = -100  # F.cross_entropy's ignore_index: loss 0 and no gradient (was an index error)
    weights = torch.rand(17)  # a weighted sum: each row's gradient is scaled by its own weight
    got = head_losses(hidden, head, targets, cap)
    ref = _reference(hidden, head, targets, cap)
    assert got.dtype == torch.float32 and got.shape == (17,)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, ref, **tol)
    g_got, = torch.autograd.grad((got * weights).sum(), hidden)
    g_ref, = torch.autograd.grad((ref * weights).sum(), hidden)
    assert g_got.dtype == dtype
    torch.testing.assert_close(g_got, g_ref, **tol)


def test_one_block_of_logits_at_a_time(monkeypatch):
    monkeypatch.setattr(llm, "HEAD_BLOCK_LOGITS", 4 * 30)
    rows, real = [], cpu_linear.fast_linear
    monkeypatch.setattr(cpu_linear, "fast_linear",
                        lambda x, w, b=None, tune=True: rows.append(len(x)) or real(x, w, b, tune))
    head = nn.Linear(8, 30, bias=False).requires_grad_(False)
    hidden = torch.randn(10, 8, requires_grad=True)
    head_losses(hidden, head, torch.zeros(10, dtype=torch.long), None).sum().backward()
    assert rows == [4, 4, 2] and hidden.grad.shape == hidden.shape


def test_no_gradient_needed_gives_the_losses_alone(monkeypatch):
    calls, real = [], cpu_linear.input_gradient
    monkeypatch.setattr(cpu_linear, "input_gradient", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    head = nn.Linear(8, 30).requires_grad_(False)
    targets = torch.randint(0, 30, (5,))
    for hidden in (torch.randn(5, 8), torch.randn(5, 8, requires_grad=True)):
        with torch.no_grad():  # dev loss, reference losses: no gradient computed for either
            got = head_losses(hidden, head, targets, None)
        torch.testing.assert_close(got, _reference(hidden, head, targets, None), rtol=1e-5, atol=1e-5)
        assert not got.requires_grad
    assert head_losses(torch.randn(5, 8), head, targets, None).requires_grad is False  # grad on, none needed
    assert calls == []


class Doubling(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def test_other_heads_take_f_cross_entropy():
    torch.manual_seed(0)
    hidden, targets = torch.randn(5, 8, requires_grad=True), torch.randint(0, 30, (5,))
    head = nn.Linear(8, 30)  # trainable: its weights get their gradient
    head_losses(hidden, head, targets, None).sum().backward()
    assert head.weight.grad is not None and hidden.grad is not None
    head.requires_grad_(False)
    own = Doubling(8, 30).requires_grad_(False)  # a forward of its own is honoured
    own.load_state_dict(head.state_dict())
    torch.testing.assert_close(head_losses(hidden, own, targets, None), _reference(hidden, own, targets, None))
    hooked = nn.Linear(8, 30).requires_grad_(False)  # so are forward hooks
    hooked.load_state_dict(head.state_dict())
    hooked.register_forward_hook(lambda m, i, out: out * 3)
    torch.testing.assert_close(head_losses(hidden, hooked, targets, None), _reference(hidden, hooked, targets, None))
    float_losses = head_losses(hidden, head, targets, None)
    q = Int8Linear.from_linear(head)  # int8 (CPU inference): no float weight to read in blocks
    with torch.no_grad():
        torch.testing.assert_close(head_losses(hidden, q, targets, None), float_losses.detach(), rtol=0, atol=0.05)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocked_losses_on_cuda_equal_f_cross_entropy(monkeypatch, dtype):
    """The same on a GPU (make gpu-check): blocks allocated on the hidden states' device, in their dtype; the
    losses and the hidden states' gradient as F.cross_entropy's, at a Qwen2.5-sized vocabulary in 3 blocks."""
    vocab = 151_936
    monkeypatch.setattr(llm, "HEAD_BLOCK_LOGITS", 24 * vocab)
    torch.manual_seed(0)
    head = nn.Linear(64, vocab, bias=False).to("cuda", dtype).requires_grad_(False)
    hidden = torch.randn(70, 64, device="cuda", dtype=dtype, requires_grad=True)
    targets = torch.randint(0, vocab, (70,), device="cuda")
    got, ref = head_losses(hidden, head, targets, None), _reference(hidden, head, targets, None)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, ref, **tol)
    g_got, = torch.autograd.grad(got.sum(), hidden)
    g_ref, = torch.autograd.grad(ref.sum(), hidden)
    assert g_got.device.type == "cuda" and g_got.dtype == dtype
    torch.testing.assert_close(g_got, g_ref, **tol)
