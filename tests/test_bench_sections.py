"""The bench after a third review (2026-12-07): a section that fails late keeps the rows measured before it.
tests/test_bench.py, test_bench_checks.py and test_bench_edges.py have the rest."""

import argparse
from types import SimpleNamespace

import pytest

import bench_stubs
import tiny
from llm_srt import bench, device
from llm_srt.bench import embedded


def _stubbed_run(monkeypatch):
    """run_bench on the tiny models with every timed section faked (each decode pass 1 s)."""
    bench_stubs.stub_run_bench(monkeypatch, 2, lambda options, setup, utts, rows, encoder, overhead, train, cascade,
                               machine: {"decode": rows, "cascade": cascade, "finished": True})


def _options(tmp_path, **more):
    return bench.BenchOptions(encoder=str(tiny.whisper_dir(tmp_path)), llm=str(tiny.llm_dir(tmp_path)),
                              adapter_kwargs={"num_queries": 4, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                              "intermediate_size": 32}, manifest=None, n=2, new_tokens=3,
                              batch_sizes=(1, 2), beam_batch_sizes=(), pooled_batch_sizes=(2,), headline_batch=2,
                              int8_batch_sizes=(), int8_beam_batch_sizes=(), int8_compiled_batch_sizes=(), **more)


# ---- 1. the cascade failing after every decode row ------------------------------------------------------------
@pytest.mark.parametrize("error,said", [
    (RuntimeError("tokenizer.json not found"), "RuntimeError: tokenizer.json not found"),
    (embedded.LLMSRTError("bench: the cascade failed: x.wav: bad"), "bench: the cascade failed: x.wav: bad"),
])
def test_a_failing_cascade_keeps_the_rows_measured_before_it(tmp_path, monkeypatch, error, said):
    """The cascade runs last, after every decode row (minutes on the embedded models): any error of it (a Whisper
    folder without the tokenizer it decodes with, a row that failed) raised out of run_bench, and the table of
    every row measured was lost. It is now the cascade's own result, as the Whisper row's is."""
    _stubbed_run(monkeypatch)

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(embedded, "time_cascade", fails)
    logged, handed = [], []
    result = bench.run_bench(_options(tmp_path, cascade=True), device.resolve("cpu", "float32"), log=logged.append,
                             partial=handed.append)
    assert result["finished"] is True and len(result["decode"]) == 3  # greedy 1, 2 and the pooled row
    assert result["cascade"] == {"failed": said}
    assert handed[-1]["cascade"] == {"failed": said} and len(handed[-1]["decode"]) == 3  # --json-out has it too
    assert f"cascade failed: {said}" in logged


def _summarized(cascade) -> dict:
    """embedded.summarize on made-up sections, with `cascade` as the cascade's result."""
    utts = [embedded.Utterance("x", tiny.tone(3.0, 300), "eng", "deu", "", "")] * 16
    return bench_stubs.summarized(utts, bench_stubs.ENCODER, bench_stubs.OVERHEAD, bench_stubs.TRAIN, cascade)


def test_the_table_prints_a_failed_cascade_and_every_row_beside_it():
    table = bench.format_table(_summarized({"failed": "RuntimeError: tokenizer.json not found"}))
    assert "Cascade (Whisper ASR -> LLM MT)        FAILED (RuntimeError: tokenizer.json not found)" in table
    assert "Qwen2-Audio-style (pooled, 750 tok)" in table and "adapter_vs_pooled_speedup" in table
    ran = {"batch_size": 16, "seconds": 8.0, "utterances_per_s": 2.0, "asr_tokens_mean": 9.0, "mt_tokens_mean": 11.0,
           "peak_mib": 900.0}
    assert "tokens: ASR 9.0, MT 11.0 per utterance" in bench.format_table(_summarized(ran))


@pytest.mark.parametrize("cascade,code", [({"failed": "RuntimeError: x"}, 1), ({"seconds": 1.0}, 0), (None, 0)])
def test_the_bench_exits_1_when_its_cascade_failed(monkeypatch, capsys, cascade, code):
    """As on a failed Whisper row: the table is printed whole, and the exit code says a row of it failed."""
    monkeypatch.setattr(bench, "run_bench", lambda options, placement, log, **partial: {"cascade": cascade,
                                                                                       "finished": True})
    monkeypatch.setattr(bench, "format_table", lambda result: "EMBEDDED TABLE")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["--device", "cpu", "--no-whisper"])) == code
    assert capsys.readouterr().out == "EMBEDDED TABLE\n"


# ---- 2. the training rows' autocast: the recipe's, by its config and the GPU --------------------------------------
class _Autocasts:
    """torch.autocast stand-in: records each one made (`enabled`), and runs as a plain block."""

    def __init__(self):
        self.made = []

    def __call__(self, device_type, dtype=None, enabled=True, **kwargs):
        import contextlib

        self.made.append({"device_type": device_type, "dtype": dtype, "enabled": enabled})
        return contextlib.nullcontext()


@pytest.mark.parametrize("precision,native,weights,on", [
    ("auto", True, "float32", True),  # an H100 in float32: the embedded recipe runs bf16 products (was: off)
    ("auto", False, "bfloat16", False),  # a V100 emulates bf16: the embedded recipe runs none (was: on)
    ("bf16", False, "float32", True),  # configs/paper's precision: on any GPU
    ("auto", True, "bfloat16", True),
])
def test_the_training_rows_autocast_is_the_recipes_on_a_gpu(monkeypatch, precision, native, weights, on):
    """The bench's training rows took bf16 autocast from the weights' dtype; the recipe (train/preflight.use_bf16)
    takes it from the config's precision and the GPU. Checked against use_bf16 itself on a fake GPU."""
    import torch

    from llm_srt.bench import training
    from llm_srt.train.preflight import use_bf16

    made = _Autocasts()
    monkeypatch.setattr(torch, "autocast", made)
    monkeypatch.setattr(device, "native_bf16", lambda d: native)
    training.recipe_autocast(torch.device("cuda"), precision)
    assert made.made == [{"device_type": "cuda", "dtype": torch.bfloat16, "enabled": on}]
    assert on == use_bf16(SimpleNamespace(precision=precision), torch.device("cuda"))
    training.recipe_autocast(torch.device("cpu"), "auto")
    assert made.made[-1]["enabled"] is False


def test_the_paper_training_rows_run_under_bf16_autocast_on_a_gpu_whatever_the_weights(monkeypatch):
    """`bench --paper-shape ... --device cuda --dtype float32` timed float32 training products; configs/paper's
    precision is bf16, so the recipe runs that step under bf16 autocast. A stand-in model on a fake GPU (a step of
    the real one is tests/test_bench.py's)."""
    import torch

    from llm_srt.bench import paper
    from llm_srt.train import parallel

    FakePeak = bench_stubs.fake_peak(mib=1.0, kind="gpu", reserved_mib=1.0,
                                     start_mib=None, rise_mib=None)  # as PeakMemory's on CUDA

    made = _Autocasts()
    monkeypatch.setattr(torch, "autocast", made)
    monkeypatch.setattr(device, "native_bf16", lambda d: True)
    monkeypatch.setattr(device, "synchronize", lambda d: None)
    monkeypatch.setattr(paper, "PeakMemory", FakePeak)
    monkeypatch.setattr(paper, "release", lambda *a: None)
    monkeypatch.setattr(paper, "training_batch", lambda model, options: {})
    monkeypatch.setattr(parallel, "apply_activation_checkpointing", lambda model: 2)
    options = paper.PaperOptions(shape="tiny", **paper.TINY)
    placement = device.Placement(torch.device("cuda"), torch.float32)
    rows = list(paper.training_rows(bench_stubs.Trainable(torch.ones(4)), options, placement, log=lambda msg: None))
    assert len(rows) == 3 and made.made == [{"device_type": "cuda", "dtype": torch.bfloat16, "enabled": True}]


@pytest.mark.long(3)  # a tiny model's feature cache and two steps
def test_the_embedded_training_comparison_takes_the_embedded_recipes_autocast(tmp_path, monkeypatch):
    """The feature-cache comparison's steps on a GPU: configs/embedded set no precision (auto), so bf16 autocast
    where the GPU computes bf16 natively, also for float32 weights (the tiny model's here; a fake GPU)."""
    import soundfile
    import torch

    from llm_srt.bench import training

    model = tiny.speech_llm(tmp_path)
    utts = []
    for i in range(2):
        audio = tiny.tone(0.6 + 0.2 * i, 300 + 200 * i, seed=i)
        soundfile.write(tmp_path / f"u{i}.wav", audio, tiny.SAMPLE_RATE)
        utts.append(embedded.Utterance(str(tmp_path / f"u{i}.wav"), audio, "eng", "deu", "a cat", "eine katze"))
    forward = type(model).forward
    made = _Autocasts()

    def on_the_cpu(self, batch, *args, **kwargs):  # the model claims a GPU; its step runs here
        with monkeypatch.context() as m:
            m.setattr(type(self), "device", property(lambda _: torch.device("cpu")))
            return forward(self, batch, *args, **kwargs)

    assert model.llm_dtype == torch.float32 and model.encoder is not None  # (the encoder loads lazily: here)
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(type(model), "forward", on_the_cpu)
    monkeypatch.setattr(torch, "autocast", made)
    monkeypatch.setattr(device, "native_bf16", lambda d: True)
    monkeypatch.setattr(device, "synchronize", lambda d: None)
    monkeypatch.setattr(training, "PeakMemory", _NoPeak)
    t = training.time_training(model, utts, batch_size=2, steps=1, workdir=tmp_path)
    assert t["s_per_step_audio"] > 0  # (the encoder's and the CTC loss's own blocks turn autocast off: not these)
    assert [a for a in made.made if a["device_type"] == "cuda"] == [{"device_type": "cuda", "dtype": torch.bfloat16,
                                                                     "enabled": True}]


_NoPeak = bench_stubs.fake_peak(mib=1.0, kind="gpu", start_mib=None, rise_mib=None,
                                 reserved_mib=None)  # as PeakMemory's on CUDA: no RSS start or rise


# ---- 3. a --model the bench cannot time, refused before the yardstick --------------------------------------------
@pytest.mark.parametrize("config,says", [
    (None, "no such folder"),
    ('{"encoder": "e", "llm": "l", "adapter": "linear"}', r"has a 'linear' adapter; \(a\) benchmarks the Q-Former"),
    ("{", "invalid JSON"),
])
def test_a_model_the_bench_cannot_time_is_refused_before_the_yardstick(tmp_path, monkeypatch, config, says):
    """A mistyped --model, or one with another adapter, was refused only once the yardstick's probes (~20 s on a
    2-core CPU: 1 GiB copies, three GEMM kernels, the int8 probe) and the utterances had run."""
    def not_yet(*args, **kwargs):
        raise AssertionError("measured before the --model was checked")

    monkeypatch.setattr(embedded, "measure_machine", not_yet)
    monkeypatch.setattr(embedded, "load_utterances", not_yet)
    folder = tmp_path / "model"
    if config is not None:
        folder.mkdir()
        (folder / "config.json").write_text(config)
    with pytest.raises(embedded.LLMSRTError, match=says):
        bench.run_bench(bench.BenchOptions(model=str(folder)), device.resolve("cpu", "float32"))


# ---- 4. a --memory-gib the GPU cannot give, refused before any row -----------------------------------------------
@pytest.mark.parametrize("more,refused", [({}, True), ({"max_batch": 0}, False),
                                          ({"compiled_only": True, "compiled_batch_sizes": (1,)}, False)])
def test_a_memory_cap_the_gpu_cannot_give_is_refused_before_any_row(tmp_path, monkeypatch, more, refused):
    """`--memory-gib 24` on a shared GPU where other processes hold 30 GiB: the cap was tried at the Q-Former's
    largest-batch search, after its rows (minutes of a 7B model's), and the error lost them. Now before any model
    is built; a run with no search (--max-batch 0, --compiled-only) uses no cap and is not refused."""
    import torch

    from llm_srt.bench import paper

    gib, total = 2**30, 80 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (total - 30 * gib, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        raise Built

    monkeypatch.setattr(paper.presets, "write_folders", build)
    options = paper.PaperOptions(shape="qwen2.5-7b", memory_gib=24, **more)
    placement = device.Placement(torch.device("cuda:0"), torch.bfloat16)
    with pytest.raises(paper.LLMSRTError if refused else Built) as stopped:
        paper.run_paper(options, placement, tmp_path)
    if refused:
        assert "holds 30.00 GiB outside this process's allocator already" in str(stopped.value)
