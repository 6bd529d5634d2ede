"""fast_linear / fast_cpu_linears: the CPU products on the faster kernels are F.linear's math, and greedy decoding
of the embedded LLM says exactly the same with them."""

import gc
import os
import subprocess
import sys
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_srt.model import cpu_linear, int8_linear
from llm_srt.model.cpu_linear import DECODE_MAX_ROWS, fast_linear, fast_cpu_linears
from llm_srt.model.llm import head_losses


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 7), (DECODE_MAX_ROWS, 1), (2, 40)])
@pytest.mark.parametrize("bias", [True, False])
def test_fast_linear_equals_f_linear_in_value_and_gradient(shape, bias):
    torch.manual_seed(0)
    w = torch.randn(48, 32, requires_grad=True)
    b = torch.randn(48, requires_grad=True) if bias else None
    x = torch.randn(*shape, 32, requires_grad=True)
    y = fast_linear(x, w, b)
    ref = F.linear(x, w, b)
    assert y.shape == ref.shape and y.is_contiguous()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, [x, w] + ([b] if bias else []), g)
    ref_grads = torch.autograd.grad(ref, [x, w] + ([b] if bias else []), g)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not cpu_linear._ONEDNN, reason="torch without oneDNN")
@pytest.mark.parametrize("rows", [1, 3, 5, DECODE_MAX_ROWS + 1, 300])
@pytest.mark.parametrize("bias", [True, False])
def test_fast_linear_without_gradients_equals_f_linear(rows, bias):
    """Inference inputs (oneDNN at one row and above ONEDNN_SMALL_ROWS, (W @ x^T)^T between): F.linear's values,
    3-d inputs and a non-contiguous input included."""
    torch.manual_seed(0)
    w, b = torch.randn(48, 32), (torch.randn(48) if bias else None)
    x = torch.randn(rows, 2, 32)[:, 1]  # every other row of a larger tensor: not contiguous
    with torch.no_grad():
        for inp in (x, x.reshape(1, rows, 32)):
            y = fast_linear(inp, w, b)
            assert y.shape == inp.shape[:-1] + (48,) and y.is_contiguous()
            torch.testing.assert_close(y, F.linear(inp, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not cpu_linear._ONEDNN, reason="torch without oneDNN")
@pytest.mark.parametrize("rows", [1, 5, DECODE_MAX_ROWS + 1, 300])
@pytest.mark.parametrize("bias", [True, False])
def test_frozen_layers_give_f_linears_input_gradient(rows, bias):
    """A frozen weight (and bias) under an input that needs a gradient: F.linear's values and input gradient."""
    torch.manual_seed(0)
    w, b = torch.randn(48, 32), (torch.randn(48) if bias else None)
    x = torch.randn(2, rows, 32, requires_grad=True)
    y, ref = fast_linear(x, w, b), F.linear(x, w, b)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                               rtol=1e-5, atol=1e-5)


def test_fast_linear_picks_the_kernel_by_rows_and_gradients(monkeypatch):
    """The rule (kernel tuning off): decode-sized inference products by row count, the rest by gradients."""
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", False)
    calls = []
    real_linear, real_onednn = F.linear, cpu_linear._onednn
    monkeypatch.setattr(cpu_linear.F, "linear", lambda *a: calls.append(("F.linear", len(a[0]))) or real_linear(*a))
    monkeypatch.setattr(cpu_linear, "_onednn", lambda *a: calls.append(("oneDNN", len(a[0]))) or real_onednn(*a))
    monkeypatch.setattr(cpu_linear, "_ONEDNN", True)
    w = torch.randn(16, 8)
    with torch.no_grad():
        for rows in (1, 2, cpu_linear.ONEDNN_SMALL_ROWS, cpu_linear.ONEDNN_SMALL_ROWS + 1, DECODE_MAX_ROWS + 1):
            fast_linear(torch.randn(rows, 8), w)
    assert calls == [("oneDNN", 1), ("oneDNN", cpu_linear.ONEDNN_SMALL_ROWS + 1), ("oneDNN", DECODE_MAX_ROWS + 1)]
    calls.clear()  # a frozen layer whose input needs a gradient (training's frozen LLM): oneDNN both ways
    x = torch.randn(DECODE_MAX_ROWS + 1, 8, requires_grad=True)
    fast_linear(x, w).sum().backward()
    assert calls == [("oneDNN", DECODE_MAX_ROWS + 1), ("oneDNN", DECODE_MAX_ROWS + 1)]
    calls.clear()  # trainable weights: (W @ x^T)^T up to DECODE_MAX_ROWS rows, F.linear above
    w.requires_grad_(True)
    fast_linear(x[:1], w)
    fast_linear(x[:DECODE_MAX_ROWS], w)
    assert calls == []
    fast_linear(x, w)  # a training batch
    assert calls == [("F.linear", DECODE_MAX_ROWS + 1)]
    calls.clear()
    w.requires_grad_(False)
    monkeypatch.setattr(cpu_linear, "_ONEDNN", False)  # a torch without oneDNN: F.linear's kernels
    with torch.no_grad():
        fast_linear(torch.randn(DECODE_MAX_ROWS + 1, 8), w)
    assert calls == [("F.linear", DECODE_MAX_ROWS + 1)]
    calls.clear()
    monkeypatch.setattr(cpu_linear, "_ONEDNN", True)  # another device (here meta, as for CUDA): F.linear at any size
    with torch.no_grad():
        for rows in (1, 3, DECODE_MAX_ROWS + 1):
            fast_linear(torch.randn(rows, 8, device="meta"), w.to("meta"))
    assert calls == [("F.linear", 1), ("F.linear", 3), ("F.linear", DECODE_MAX_ROWS + 1)]


class _Clock:
    """A fake perf_counter that only the fake kernels move: kernel k costs costs[k] per call."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fake_kernels(monkeypatch, costs):
    clock, calls = _Clock(), []
    monkeypatch.setattr(cpu_linear.time, "perf_counter", clock)
    monkeypatch.setattr(cpu_linear, "TUNED", {})
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)

    def kernel(name):
        def run(x, w, b):
            clock.now += costs[name]
            calls.append((name, len(x)))
            return F.linear(x, w, b)
        return run
    monkeypatch.setattr(cpu_linear, "KERNELS", {name: kernel(name) for name in costs})
    return calls


def test_decode_sized_products_take_the_kernel_timed_fastest_once_per_shape_and_row_bucket(monkeypatch):
    costs = {"oneDNN": 10.0, "MKL": 5.0, "(W @ x^T)^T": 9.0}
    calls = _fake_kernels(monkeypatch, costs)
    w, b = torch.randn(16, 8), torch.randn(16)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y = fast_linear(x, w, b)
        torch.testing.assert_close(y, F.linear(x, w, b))
        assert len(calls) == 3 * (cpu_linear.TUNE_REPEATS + 1) + 1  # each timed, then the chosen one runs
        threads = torch.get_num_threads()
        assert cpu_linear.TUNED == {(16, 8, True, 4, threads): "MKL"} and calls[-1] == ("MKL", 3)
        calls.clear()
        fast_linear(torch.randn(2, 4, 8), w, b)  # 8 rows: another bucket
        fast_linear(torch.randn(4, 8), w, b)  # 4 rows: the bucket of 3, no timing
        assert calls[-1] == ("MKL", 4) and calls.count(("MKL", 4)) == 1
        assert set(cpu_linear.TUNED) == {(16, 8, True, 4, threads), (16, 8, True, 8, threads)}
        # the rule's kernel stays unless another is TUNE_MARGIN x faster: 9 vs 10 keeps oneDNN at one row
        costs.update({"MKL": 9.0, "(W @ x^T)^T": 9.5})
        calls.clear()
        fast_linear(torch.randn(1, 8), w)
        assert cpu_linear.TUNED[(16, 8, False, 1, threads)] == "oneDNN" and calls[-1] == ("oneDNN", 1)
    calls.clear()  # training shapes are never timed: an input that needs a gradient, a trainable weight, > 64 rows
    fast_linear(torch.randn(3, 8, requires_grad=True), w)
    w.requires_grad_(True)
    fast_linear(torch.randn(3, 8), w)
    with torch.no_grad():
        fast_linear(torch.randn(DECODE_MAX_ROWS + 1, 8), w.detach())
    assert calls == [] and len(cpu_linear.TUNED) == 3
    with torch.no_grad():  # a caller may refuse the timing (a training loss without autograd), and so may training
        fast_linear(torch.randn(16, 8), w.detach(), tune=False)
        with cpu_linear.kernel_rule():
            fast_linear(torch.randn(16, 8), w.detach())
        assert cpu_linear.KERNEL_TUNING
    assert calls == [] and len(cpu_linear.TUNED) == 3


@pytest.mark.skipif(not cpu_linear._ONEDNN, reason="this torch has no oneDNN")
@pytest.mark.parametrize("kernel", list(cpu_linear.KERNELS))
@pytest.mark.parametrize("rows", [1, 3, DECODE_MAX_ROWS])
def test_every_tunable_kernel_computes_f_linear(monkeypatch, kernel, rows):
    """Whichever kernel the timing picks gives F.linear's values, with and without bias, for a non-contiguous input."""
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    w, b = torch.randn(24, 40), torch.randn(24)
    x = torch.randn(40, rows * 2)[:, ::2].T  # (rows, 40), not contiguous
    assert not x.is_contiguous()
    key = (24, 40, True, cpu_linear._bucket(rows), torch.get_num_threads())
    monkeypatch.setattr(cpu_linear, "TUNED", {key: kernel, (*key[:2], False, *key[3:]): kernel})
    with torch.no_grad():
        for bias in (b, None):
            torch.testing.assert_close(fast_linear(x, w, bias), F.linear(x, w, bias), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fast_linear(x[None], w, bias), F.linear(x[None], w, bias), rtol=1e-5,
                                       atol=1e-5)
    assert len(cpu_linear.TUNED) == 2  # no timing: the preset choices were used


def test_a_frozen_heads_training_loss_is_never_timed(monkeypatch):
    """The blocked head loss computes its gradient inside an autograd Function, where gradients are off: the
    training loss still takes the rule's kernels (a timed choice would make training depend on the timing)."""
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    monkeypatch.setattr(cpu_linear, "_tuned_kernel", lambda *a: pytest.fail("a training product was timed"))
    head = nn.Linear(8, 50, bias=False).requires_grad_(False)
    fast_cpu_linears(head)
    hidden = torch.randn(5, 8, requires_grad=True)
    targets = torch.randint(0, 50, (5,))
    loss = head_losses(hidden, head, targets, None)
    loss.sum().backward()
    ref = F.cross_entropy(F.linear(hidden, head.weight), targets, reduction="none")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


def test_kernel_tuning_can_be_turned_off_from_the_environment():
    """LLM_SRT_KERNEL_TUNING=0 or off, read when the module loads (one process: the import costs seconds)."""
    env = {k: v for k, v in os.environ.items() if k != cpu_linear.KERNEL_TUNING_ENV}
    code = "from llm_srt.model import cpu_linear; print(cpu_linear.KERNEL_TUNING)"
    out = subprocess.run([sys.executable, "-c", code], env={**env, cpu_linear.KERNEL_TUNING_ENV: " Off "},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_fast_linear_leaves_mixed_dtypes_to_f_linear_and_its_error(monkeypatch):
    calls = []
    real = F.linear
    monkeypatch.setattr(cpu_linear.F, "linear", lambda *a: calls.append(a[0].dtype) or real(*a))
    with pytest.raises(RuntimeError, match="dtype"):
        fast_linear(torch.randn(2, 8, dtype=torch.float64), torch.randn(16, 8))
    assert calls == [torch.float64]  # F.linear said what is wrong, not a bare matmul


class Doubling(nn.Linear):
    """A subclass with its own forward: fast_cpu_linears must leave it alone."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_fast_cpu_linears_patches_plain_linears_only():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Doubling(8, 8), nn.Linear(8, 4))
    x = torch.randn(3, 8)
    before = model(x)
    fast_cpu_linears(model)
    assert [type(m) for m in model] == [cpu_linear.FastLinear, nn.ReLU, Doubling, cpu_linear.FastLinear]
    torch.testing.assert_close(model(x), before)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"]


def test_fast_cpu_linears_leave_no_reference_cycle():
    """A model dropped after `fast_cpu_linears` is freed at once, not at the next garbage collection (a forward
    bound to its module kept each demo stage's 1 GB of Gemma weights alive into the next stage)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    fast_cpu_linears(model)
    weight = weakref.ref(model[0].weight)
    gc.disable()
    try:
        del model
        assert weight() is None
    finally:
        gc.enable()


@pytest.mark.slow  # the kernels' equality is tested on tiny shapes in make test
@pytest.mark.long(31)
def test_greedy_text_decoding_of_the_embedded_llm_is_unchanged(embedded):
    """The embedded Gemma, greedy, 6 prompts at batch 1 and as one batch: the same token ids with the decode-sized
    product as with plain F.linear everywhere."""
    from llm_srt.model.decoding import eos_ids, greedy_ids
    from llm_srt.model.llm import causal_lm, load_llm

    model, tok = load_llm(embedded.llm)
    texts = ["Translate to German: The weather is nice today.", "Translate to French: Where is the station?",
             "The capital of Spain is", "Once upon a time", "Translate to English: Das Haus ist alt.",
             "List three colours:"]
    emb = causal_lm(model).get_input_embeddings()
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    eos = eos_ids(model, tok)

    def run():
        with torch.no_grad():
            single = [greedy_ids(model, emb(enc.input_ids[i:i + 1]), enc.attention_mask[i:i + 1], 12, eos)[0]
                      for i in range(len(texts))]
            batch = greedy_ids(model, emb(enc.input_ids), enc.attention_mask, 12, eos)
        return single, batch

    linears = [m for m in causal_lm(model).modules() if isinstance(m, nn.Linear)]
    assert len(linears) > 100 and all(type(m) is cpu_linear.FastLinear for m in linears)
    fast = run()
    for m in linears:
        m.__class__ = nn.Linear
    assert run() == fast


def test_linear_kernels_script_times_both_forms_at_each_row_count():
    """scripts/linear_kernels.py (README's per-layer figures), at a tiny shape."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "linear_kernels.py"
    spec = importlib.util.spec_from_file_location("linear_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--shapes", "32x16,16x32", "--layers", "2", "--rows", "1,3", "--repeats", "1"])
    assert [r["rows"] for r in rows] == [1, 3]
    assert all(r["linear_ms"] > 0 and r["fast_linear_ms"] > 0 for r in rows)


@pytest.mark.parametrize("user", [None, "7"])
def test_onednn_primitive_cache_is_capped_unless_the_user_chose(user):
    """Importing cpu_linear caps oneDNN's primitive cache (its default held ~330 MB at the demo's training peak); a
    capacity the user set stays."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if user:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = user
    code = "import os, llm_srt.model.cpu_linear; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == (user or str(cpu_linear.ONEDNN_CACHE_PRIMITIVES))


def test_int8_layers_packed_chunk_by_chunk_equal_quantize_rows(monkeypatch, tmp_path):
    """Int8Linear from large float weights, and `from_file` from a safetensors matrix, write each chunk's int8
    rows straight into the tensor that is packed: the same packed weights as `quantize_rows` of the whole matrix (chunk
    boundaries change nothing), the same products; a file matrix of another shape is a ValueError naming both."""
    from safetensors.torch import save_file

    from llm_srt.model.int8_linear import Int8Linear, quantize_rows

    torch.manual_seed(0)
    weight, bias = torch.randn(50, 24), torch.randn(50)
    weight[3] = 0  # an all-zero row keeps its floor scale
    q, scale = quantize_rows(weight)
    reference = Int8Linear(q, scale=scale)
    monkeypatch.setattr(int8_linear, "QUANTIZE_CHUNK_ROWS", 7)  # not a divisor of 50
    monkeypatch.setattr(int8_linear, "PACK_IN_PLACE_ELEMENTS", weight.numel())  # this one is large
    chunked = Int8Linear(weight, bias)
    save_file({"w": weight}, tmp_path / "w.safetensors")
    from_file = Int8Linear.from_file(tmp_path / "w.safetensors", "w", (50, 24))
    assert torch.equal(chunked.dequantized_weight(), reference.dequantized_weight())
    assert torch.equal(from_file.dequantized_weight(), reference.dequantized_weight())
    x = torch.randn(5, 24)
    assert torch.equal(from_file(x), reference(x)) and torch.equal(chunked(x), Int8Linear(q, bias, scale=scale)(x))
    assert from_file.bias is None and (from_file.out_features, from_file.in_features) == (50, 24)
    with pytest.raises(ValueError, match=r"w is \(50, 24\) in .*w.safetensors, the model expects \(24, 50\)"):
        Int8Linear.from_file(tmp_path / "w.safetensors", "w", (24, 50))


needs_onednn_int8 = pytest.mark.skipif(not int8_linear._ONEDNN_INT8, reason="this torch has no oneDNN int8 product")


@needs_onednn_int8
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_onednn_product_is_fbgemms_bit_for_bit(monkeypatch, reduce_range, bias):
    """Many-row inputs may run on oneDNN's int8 product: the same int8 sums and scales as fbgemm's, so every output
    is exactly fbgemm's, for inputs of any magnitude (all-zero rows and negative extremes included)."""
    from llm_srt.model.int8_linear import Int8Linear

    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    torch.manual_seed(0)
    many = int8_linear.INT8_MANY_ROWS + 3  # (rows 1 and 2 are set below)
    for out_features, in_features, rows, magnitude in [(48, 64, many, 1.0), (300, 77, 2 * many, 1e-3),
                                                       (96, 200, 3 * many, 50.0)]:
        q = Int8Linear(torch.randn(out_features, in_features), torch.randn(out_features) if bias else None)
        q.reduce_range = reduce_range
        x = torch.randn(rows, in_features) * magnitude
        x[1] = 0
        x[2] = -x[2].abs()
        key = (out_features, in_features, cpu_linear._bucket(rows), torch.get_num_threads())
        with torch.no_grad():
            monkeypatch.setattr(int8_linear, "TUNED_INT8", {key: "fbgemm"})
            fbgemm = q(x)
            assert q._onednn is None  # never built for a layer that does not use it
            monkeypatch.setattr(int8_linear, "TUNED_INT8", {key: "oneDNN"})
            onednn = q(x)
            assert q._onednn is not None and q._onednn_used
            assert torch.equal(onednn, fbgemm)
            for row in (1, 2):  # one row (a batch-1 decode step: fbgemm, untimed): the same again
                assert torch.equal(q(x[row:row + 1]), fbgemm[row:row + 1])


@needs_onednn_int8
def test_int8_many_rows_take_the_kernel_timed_faster_once_per_shape_and_bucket(monkeypatch):
    """The first input of more than INT8_MANY_ROWS rows of a shape times fbgemm and oneDNN (warm-up plus
    `int8_tune_repeats` each) and keeps oneDNN only when TUNE_MARGIN x faster; a timing's oneDNN copy is let go when
    fbgemm wins; fewer rows, KERNEL_TUNING off and new weights (`zero_rows`) behave as fbgemm alone."""
    from llm_srt.model.int8_linear import Int8Linear

    clock, calls, costs = _Clock(), [], {"fbgemm": 10.0, "oneDNN": 5.0}
    monkeypatch.setattr(cpu_linear.time, "perf_counter", clock)
    monkeypatch.setattr(int8_linear, "TUNED_INT8", {})
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    fbgemm, onednn = int8_linear._QDQ_LINEAR, Int8Linear._onednn_product

    def timed(name, product):
        def run(*args):
            clock.now += costs[name]
            calls.append((name, len(args[0]) if name == "fbgemm" else len(args[1])))
            return product(*args)
        return run
    monkeypatch.setattr(int8_linear, "_QDQ_LINEAR", timed("fbgemm", fbgemm))
    monkeypatch.setattr(Int8Linear, "_onednn_product", timed("oneDNN", onednn))
    torch.manual_seed(0)
    q, threads = Int8Linear(torch.randn(16, 8), torch.randn(16)), torch.get_num_threads()
    few = int8_linear.INT8_MANY_ROWS
    many, bucket = few + 1, 2 * few
    with torch.no_grad():
        q(torch.randn(few, 8))  # a decode step's rows, or a short prefill: fbgemm, never timed
        assert calls == [("fbgemm", few)] and int8_linear.TUNED_INT8 == {}
        calls.clear()
        q(torch.randn(many, 8))
        assert len(calls) == 2 * (int8_linear.int8_tune_repeats(many) + 1) + 1 and calls[-1] == ("oneDNN", many)
        assert int8_linear.TUNED_INT8 == {(16, 8, bucket, threads): "oneDNN"}
        calls.clear()
        q(torch.randn(bucket, 8))  # the same bucket: no timing
        assert calls == [("oneDNN", bucket)]
        top = int8_linear.INT8_TOP_BUCKET
        q(torch.randn(top // 2 + 1, 8))  # rows above half the top bucket share one timing, whatever their number
        calls.clear()
        q(torch.randn(4 * top + 3, 8))
        assert calls == [("oneDNN", 4 * top + 3)] and (16, 8, top, threads) in int8_linear.TUNED_INT8
        costs["oneDNN"] = 9.0  # 10 vs 9: not TUNE_MARGIN x faster, fbgemm stays (another layer of another shape)
        other = Int8Linear(torch.randn(24, 8))
        calls.clear()
        other(torch.randn(many, 8))
        assert int8_linear.TUNED_INT8[(24, 8, bucket, threads)] == "fbgemm"
        assert calls[-1] == ("fbgemm", many) and other._onednn is None  # the timing's copy let go
        calls.clear()
        with cpu_linear.kernel_rule():  # tuning off: fbgemm alone
            q(torch.randn(many, 8))
        assert calls == [("fbgemm", many)]
        q.zero_rows([0, 5])  # new weights: the oneDNN copy is packed again from them
        assert q._onednn is None
        x = torch.randn(many, 8)
        y = q(x)
        assert calls[-1] == ("oneDNN", many) and torch.equal(y[:, [0, 5]], q.bias[[0, 5]].expand(many, 2))



@needs_onednn_int8
def test_int8_decode_steps_of_a_batch_time_the_kernels_and_one_row_does_not(monkeypatch):
    """A batched greedy decode step (2 to 16 rows) times fbgemm against oneDNN, as a prefill does: on the Intel Xeon
    with AMX of 2026-12-07 oneDNN took Gemma's head at 16 rows in 3.3 ms against fbgemm's 7.0 (an int8 step at batch
    16 39 -> 31-33 ms). A one-row step (batch 1) runs fbgemm untimed."""
    from llm_srt.model.int8_linear import Int8Linear

    clock, calls = _Clock(), []
    monkeypatch.setattr(cpu_linear.time, "perf_counter", clock)
    monkeypatch.setattr(int8_linear, "TUNED_INT8", {})
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    fbgemm, onednn = int8_linear._QDQ_LINEAR, Int8Linear._onednn_product

    def timed(name, product, cost):
        def run(*args):
            clock.now += cost
            calls.append((name, len(args[0]) if name == "fbgemm" else len(args[1])))
            return product(*args)
        return run
    monkeypatch.setattr(int8_linear, "_QDQ_LINEAR", timed("fbgemm", fbgemm, 10.0))
    monkeypatch.setattr(Int8Linear, "_onednn_product", timed("oneDNN", onednn, 3.0))
    torch.manual_seed(0)
    q, threads = Int8Linear(torch.randn(16, 8)), torch.get_num_threads()
    with torch.no_grad():
        q(torch.randn(1, 8))
        assert calls == [("fbgemm", 1)] and int8_linear.TUNED_INT8 == {}
        for rows in (2, 16):
            calls.clear()
            q(torch.randn(rows, 8))
            assert {name for name, _ in calls} == {"fbgemm", "oneDNN"} and calls[-1] == ("oneDNN", rows)
        assert int8_linear.TUNED_INT8 == {(16, 8, 2, threads): "oneDNN", (16, 8, 16, threads): "oneDNN"}

@needs_onednn_int8
def test_int8_onednn_is_not_kept_where_it_rounds_otherwise(monkeypatch):
    """A oneDNN whose outputs differ from fbgemm's in one bit of one value of the timed input (a CPU whose oneDNN
    scales its int32 sums in another order) is never kept, however much faster it runs: the layer's outputs stay
    fbgemm's. Checked within the first INT8_CHECKED_ROWS rows."""
    from llm_srt.model.int8_linear import Int8Linear

    clock = _Clock()
    monkeypatch.setattr(cpu_linear.time, "perf_counter", clock)
    monkeypatch.setattr(int8_linear, "TUNED_INT8", {})
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    fbgemm, onednn = int8_linear._QDQ_LINEAR, Int8Linear._onednn_product
    off = {"row": 0}

    def slow_fbgemm(*args):
        clock.now += 10.0
        return fbgemm(*args)

    def fast_onednn_one_ulp_off(self, unit):
        clock.now += 1.0
        y = onednn(self, unit)
        if off["row"] is not None:
            y[off["row"], 3] = torch.nextafter(y[off["row"], 3], torch.tensor(float("inf")))
        return y
    monkeypatch.setattr(int8_linear, "_QDQ_LINEAR", slow_fbgemm)
    monkeypatch.setattr(Int8Linear, "_onednn_product", fast_onednn_one_ulp_off)
    torch.manual_seed(0)
    many, threads = max(int8_linear.INT8_MANY_ROWS + 1, int8_linear.INT8_CHECKED_ROWS), torch.get_num_threads()
    bucket = cpu_linear._bucket(many)
    for row, kept in [(0, "fbgemm"), (int8_linear.INT8_CHECKED_ROWS - 1, "fbgemm"), (None, "oneDNN")]:
        off["row"] = row
        int8_linear.TUNED_INT8.clear()
        q, x = Int8Linear(torch.randn(16, 8), torch.randn(16)), torch.randn(many, 8)
        with torch.no_grad():
            y = q(x)
            assert int8_linear.TUNED_INT8 == {(16, 8, bucket, threads): kept}
            with cpu_linear.kernel_rule():
                assert torch.equal(y, q(x))  # fbgemm's own outputs
        assert (q._onednn is None) == (kept == "fbgemm")


class _Attention(nn.Module):
    """q/k/v/o as a decoder's self-attention names them (k without bias, as in Whisper), and gate/up."""

    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(24, 16), nn.Linear(24, 8, bias=False), nn.Linear(24, 8)
        self.o_proj = nn.Linear(16, 24)
        self.gate_proj, self.up_proj = nn.Linear(24, 32, bias=False), nn.Linear(16, 32, bias=False)  # other inputs


def test_int8_fused_projections_read_each_siblings_columns_exactly():
    """`fuse_int8_projections`: q/k/v (biases mixed) become parts of one product, each exactly its own layer's
    output, in one product for the three calls on one input; an in-place add to one part's output changes no
    other part, and a part's second call on the same input computes afresh; siblings of different input sizes
    (gate/up here) and float layers stay as they are. Parts that read different inputs (a cross-attention's keys)
    split the group back into exact separate layers for good, the fused weights let go."""
    from llm_srt.model.int8_linear import Int8Linear, Int8Part, fuse_int8_projections, quantize_int8

    torch.manual_seed(0)
    model = quantize_int8(_Attention())
    separate = {n: getattr(model, n) for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")}
    float_only = _Attention()
    assert fuse_int8_projections(model) == 1 and fuse_int8_projections(float_only) == 0
    parts = {n: getattr(model, n) for n in ("q_proj", "k_proj", "v_proj")}
    assert all(isinstance(p, Int8Part) for p in parts.values())
    assert model.gate_proj is separate["gate_proj"] and model.up_proj is separate["up_proj"]
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 1 + 1 + 2  # fused, o, gate, up
    shared = parts["q_proj"]._shared
    x, other = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
    with torch.no_grad():
        want = {n: separate[n](x) for n in parts}
        q = parts["q_proj"](x)
        q += 1  # in place, as a LoRA update may be added
        k, v = parts["k_proj"](x), parts["v_proj"](x)
        assert shared.products == 1 and shared.input is None and shared.output is None  # all read: let go
        assert torch.equal(q, want["q_proj"] + 1) and torch.equal(k, want["k_proj"]) and torch.equal(v, want["v_proj"])
        assert k.shape == (2, 5, 8)
        parts["q_proj"](x).mul_(0)  # a new call with x: the group's product again, not a stale one
        assert torch.equal(parts["q_proj"](x), want["q_proj"]) and shared.products == 3  # its second call: afresh
        k2 = parts["k_proj"](other)  # cross-attention: keys of another input, before v read x's
        assert torch.equal(k2, separate["k_proj"](other)) and shared.products == 3
        assert torch.equal(parts["v_proj"](other), separate["v_proj"](other))
        assert all(isinstance(p.own, Int8Linear) for p in parts.values()) and shared.linear is None
        assert parts["k_proj"].own.bias is None and sum(isinstance(m, Int8Linear) for m in model.modules()) == 6
        assert all(torch.equal(p(other), separate[n](other)) for n, p in parts.items()) and shared.products == 3


def test_int8_fused_projections_read_one_product_in_a_traced_step():
    """What a step being compiled runs (`read_traced`): one fused product for the group's three parts, each part
    its own layer's output, and the group left as it was found (nothing for torch to guard on changes); a part
    called with another input meanwhile gets its own product, and the group is still let go after its parts'
    calls."""
    from llm_srt.model.int8_linear import fuse_int8_projections, quantize_int8

    torch.manual_seed(0)
    model = quantize_int8(_Attention())
    separate = {n: getattr(model, n) for n in ("q_proj", "k_proj", "v_proj")}
    fuse_int8_projections(model)
    parts = {n: getattr(model, n) for n in separate}
    shared = parts["q_proj"]._shared
    products = []
    shared.linear.register_forward_hook(lambda *_: products.append(1))
    x, other = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
    with torch.no_grad():
        for _ in range(2):
            out = {n: shared.read_traced(x, p) for n, p in parts.items()}
            assert all(torch.equal(out[n], separate[n](x)) for n in parts) and shared.traced is None
        assert len(products) == 2 and shared.products == 0
        q = shared.read_traced(x, parts["q_proj"])
        k = shared.read_traced(other, parts["k_proj"])
        assert torch.equal(k, separate["k_proj"](other)) and shared.traced[0] is x and shared.traced[2] == 1
        v = shared.read_traced(x, parts["v_proj"])
        assert torch.equal(q, separate["q_proj"](x)) and torch.equal(v, separate["v_proj"](x))
        assert shared.traced is None and len(products) == 4


@pytest.mark.slow  # the fused groups' exactness is tested on tiny layers in make test
@pytest.mark.long(28)
def test_embedded_gemmas_int8_groups_stay_fused_and_decode_the_same_ids(embedded, monkeypatch):
    """The embedded Gemma-3 in int8: every layer's q/k/v and gate/up are fused, each group computes exactly one
    product per call of its layer (prefill and each step: none is split back, so Gemma's call pattern shares the
    input), and greedy decoding gives the same token ids as the separate int8 layers, at batch 1 and as a batch."""
    from llm_srt.model import llm as llm_module
    from llm_srt.model.decoding import eos_ids, greedy_ids
    from llm_srt.model.int8_linear import Int8Part
    from llm_srt.model.llm import causal_lm, load_llm

    fused, tok = load_llm(embedded.llm, "int8")
    with monkeypatch.context() as m:
        m.setattr(llm_module, "fuse_int8_projections", lambda model: 0)
        separate, _ = load_llm(embedded.llm, "int8")
    texts = ["Translate to German: The weather is nice today.", "The capital of Spain is"]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    layer_calls = []
    causal_lm(fused).model.layers[0].register_forward_pre_hook(lambda *_: layer_calls.append(1))
    ids = {}
    for name, model in (("fused", fused), ("separate", separate)):
        emb, eos = causal_lm(model).get_input_embeddings(), eos_ids(model, tok)
        with torch.no_grad():
            ids[name] = (greedy_ids(model, emb(enc.input_ids[:1]), enc.attention_mask[:1], 4, eos),
                         greedy_ids(model, emb(enc.input_ids), enc.attention_mask, 4, eos))
    assert ids["fused"] == ids["separate"]
    parts = [m for m in fused.modules() if isinstance(m, Int8Part)]
    assert len(parts) == causal_lm(fused).config.num_hidden_layers * 5 and all(p.own is None for p in parts)
    assert {p._shared.products for p in parts} == {len(layer_calls)} and len(layer_calls) >= 4


@pytest.mark.parametrize("copy_with", ["deepcopy", "pickle"])
def test_a_copied_int8_layer_is_a_layer_of_its_own_for_the_compiled_op(copy_with):
    """The compiled op finds a layer by its number: a copy must not read the weights of the layer it came from."""
    import copy
    import pickle

    torch.manual_seed(0)
    original = int8_linear.Int8Linear.from_linear(nn.Linear(16, 8))
    clone = copy.deepcopy(original) if copy_with == "deepcopy" else pickle.loads(pickle.dumps(original))
    x = torch.randn(3, 16)
    assert clone.number != original.number and int8_linear._LAYERS[clone.number] is clone
    expected = original(x)
    original.zero_rows(list(range(8)))  # the original changes, then goes
    del original
    gc.collect()
    scale = int8_linear.row_ranges(x)
    assert torch.equal(torch.ops.llm_srt.int8_product(x / scale, scale, clone.number), expected)
    assert torch.equal(clone(x), expected)


def test_an_int8_layer_refuses_weights_from_a_state_dict_instead_of_keeping_its_own():
    """A state dict of int8 layers holds their biases alone (the weights are packed); loading one model's float
    state into a quantized other said every key matched and changed nothing."""
    from llm_srt.errors import LLMSRTError

    torch.manual_seed(0)
    source, target = nn.Sequential(nn.Linear(8, 6)), nn.Sequential(nn.Linear(8, 6))
    state = source.state_dict()
    int8_linear.quantize_int8(target)
    assert list(target.state_dict()) == ["0.bias"]
    with pytest.raises(LLMSRTError, match=r"^0\.weight: an int8 layer's weights are packed .*quantize_int8"):
        target.load_state_dict(state)
    target.load_state_dict({"0.bias": state["0.bias"]})  # its bias alone loads
    assert torch.equal(target[0].bias, state["0.bias"])


def _copied(obj, copy_with: str):
    import copy
    import pickle

    return copy.deepcopy(obj) if copy_with == "deepcopy" else pickle.loads(pickle.dumps(obj))


@needs_onednn_int8
@pytest.mark.parametrize("copy_with", ["deepcopy", "pickle"])
def test_an_int8_layer_that_ran_on_onednn_copies_without_its_packed_copy(monkeypatch, copy_with):
    """A layer whose many-row inputs ran on oneDNN holds oneDNN's packed weights, an opaque tensor that neither
    deepcopy nor pickle can read: the copy leaves them behind and packs its own when it needs them (the same
    outputs); the original keeps its own. The copy's activation grid is the CPU's it is loaded on, not the one
    it was made on (`reduce_range`: 7 bits without VNNI)."""
    from llm_srt.model.int8_linear import Int8Linear

    torch.manual_seed(0)
    monkeypatch.setattr(cpu_linear, "KERNEL_TUNING", True)
    layer, x = Int8Linear(torch.randn(32, 64), torch.randn(32)), torch.randn(int8_linear.INT8_MANY_ROWS + 8, 64)
    key = (32, 64, cpu_linear._bucket(len(x)), torch.get_num_threads())
    monkeypatch.setattr(int8_linear, "TUNED_INT8", {key: "oneDNN"})  # as if the timing had picked oneDNN
    with torch.no_grad():
        y = layer(x)
        packed = layer._onednn
        assert packed is not None and layer._onednn_used
        clone = _copied(layer, copy_with)
        assert clone._onednn is None and not clone._onednn_used and layer._onednn is packed
        assert torch.equal(clone(x), y) and clone._onednn is not None and torch.equal(layer(x), y)
        monkeypatch.setattr(int8_linear, "_VNNI", not int8_linear._VNNI)  # loaded on the other kind of CPU
        assert _copied(layer, copy_with).reduce_range == (not int8_linear._VNNI) != layer.reduce_range


@pytest.mark.parametrize("copy_with", ["deepcopy", "pickle"])
def test_a_copied_model_with_fused_int8_groups_is_a_model_of_its_own(copy_with):
    """copy.deepcopy or pickle of a model whose q/k/v are one fused int8 product: the copy's parts share the
    copy's product (not the original's: a deep copy kept the original's weak references, so the copy's split
    rewired the original's layers and every copy's call failed; pickle refused weak references), each gives its
    layer's outputs, the copy's split (a cross-attention's other input) splits the copy alone, and the original
    goes on as before, fused, then split by its own call."""
    from llm_srt.model.int8_linear import Int8Linear, fuse_int8_projections, quantize_int8

    torch.manual_seed(0)
    model = quantize_int8(_Attention())
    names = ("q_proj", "k_proj", "v_proj")
    separate = {n: getattr(model, n) for n in names}
    fuse_int8_projections(model)
    x, other = torch.randn(2, 5, 24), torch.randn(2, 7, 24)
    with torch.no_grad():
        want = {n: getattr(model, n)(x) for n in names}  # the original's outputs before the copy
        want_other = {n: separate[n](other) for n in names}
        clone = _copied(model, copy_with)
        shared, copied = model.q_proj._shared, clone.q_proj._shared
        assert copied is not shared and all(getattr(clone, n)._shared is copied for n in names)
        assert [m() for m in copied.members] == [getattr(clone, n) for n in names]
        assert copied.linear is clone.q_proj.fused and copied.linear is not shared.linear
        assert all(torch.equal(getattr(clone, n)(x), want[n]) for n in names)
        assert copied.products == 2  # one product for the three calls (the count travels: 1 before the copy)
        clone.q_proj(x)
        assert torch.equal(clone.k_proj(other), want_other["k_proj"])  # another input: the copy's group splits
        assert all(isinstance(getattr(clone, n).own, Int8Linear) for n in names) and copied.linear is None
        assert all(torch.equal(getattr(clone, n)(other), want_other[n]) for n in names)
        assert shared.linear is model.q_proj.fused and all(getattr(model, n).own is None for n in names)
        assert all(torch.equal(getattr(model, n)(x), want[n]) for n in names) and shared.products == 2
        model.q_proj(x)
        assert torch.equal(model.k_proj(other), want_other["k_proj"])  # now the original splits, by its own call
        assert all(torch.equal(getattr(model, n)(other), want_other[n]) for n in names)
        assert all(getattr(model, n).own is not getattr(clone, n).own for n in names)
