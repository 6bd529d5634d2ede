"""The GPU check's bench steps (scripts/gpu_check_bench.py): the rows a stopped bench measured, and a finished
bench that did not measure what its step proves."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check_bench  # noqa: E402
import gpu_check_runner  # noqa: E402


def test_a_bench_stopped_before_its_end_reports_the_rows_it_measured(tmp_path, monkeypatch):
    """bench wrote --json-out only at its end: a 7B bench cut at its limit after minutes of rows reported none. Now
    bench rewrites it after each row, search and training row (`finished` false until the end), and a stopped
    bench's step lists the rows that file holds; one stopped before its first row, none."""
    from llm_srt.bench import paper

    decode = [{"system": "llm-srt", "beam": 1, "batch_size": 1, "compiled": True}]
    search = {"llm-srt": {"probes": [], "largest_fit": None}}
    train = [{"activation_checkpointing": False, "s_per_step": 0.5}]
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)
    written = [paper.so_far({"shape": "qwen2.5-7b"}, decode, search, train, 99.0)]  # what bench had written

    def stopped(name, argv, timeout, cwd=None, reserve=0.0):
        assert argv[1:4] == ["-m", "llm_srt.cli", "bench"] and "--compiled-only" in argv  # the plain CLI
        if written:
            Path(argv[argv.index("--json-out") + 1]).write_text(json.dumps(written[0]))
        check.failed = True
        return gpu_check_runner.Done(argv, 124, "", "[bench] llm-srt: greedy compiled batch 1\n"
                              "[bench] llm-srt: greedy compiled batch 64\ntimed out after 240 s")

    monkeypatch.setattr(check, "run", stopped)
    result = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    assert result["ok"] is False
    assert result["rows"] == [{"decode": decode[0]}, {"largest_batch": search}, {"train": train[0]}]
    assert result["error"] == ("bench exit 124: timed out after 240 s; it was at: llm-srt: greedy compiled batch 64; "
                               "3 measured before it stopped (report.json's rows)")
    assert json.dumps({"decode": decode[0]}) in (tmp_path / "report.md").read_text()
    assert not (tmp_path / gpu_check_bench.RUNNING_BENCH).exists()  # its rows in report.json: not left in OUT too
    written.clear()  # stopped before its first row: no file
    result = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    check.log.close()
    assert result["ok"] is False and result["rows"] == [] and "0 measured before it stopped" in result["error"]


def _bench_result(dtype="bfloat16", reserved=512.0, oom=()) -> dict:
    """A finished paper-shape bench's result on a GPU: compiled rows at batch 1 and 64, a greedy row, the three
    training rows; those named in `oom` ("compiled 64", "ckpt") out of memory."""
    def decode(batch, compiled):
        if f"compiled {batch}" in oom and compiled:
            return {"system": "llm-srt", "batch_size": batch, "compiled": True, "out_of_memory": True}
        return {"system": "llm-srt", "batch_size": batch, "compiled": compiled, "peak_mib": 300.0,
                "reserved_mib": reserved, "memory": "gpu", "out_of_memory": False, "cudagraph_skips": 0}

    def train(ckpt, block):
        if ckpt and "ckpt" in oom:
            return {"activation_checkpointing": True, "head_block_logits": block, "out_of_memory": True}
        return {"activation_checkpointing": ckpt, "layers_recomputed": 28 * ckpt, "head_block_logits": block,
                "peak_mib": 9000.0, "reserved_mib": reserved and 12000.0, "memory": "gpu", "out_of_memory": False}

    return {"shape": "qwen2.5-7b", "dtype": dtype, "finished": True,
            "decode": [decode(1, True), decode(64, True), decode(8, False)],
            "train": [train(False, 1), train(True, 1), train(True, 8)]}


@pytest.mark.parametrize("case", ["proven", "compiled 64 out of memory", "checkpointing out of memory",
                                  "no reserved peak", "auto ran in float32"])
def test_a_finished_bench_that_did_not_measure_what_its_step_proves_fails_it(tmp_path, monkeypatch, case):
    """A bench ends `finished` with its rows out of memory recorded, not measured: the compiled 7B step passed with
    its batch-64 row out of memory, the eager one with the checkpointed training rows out of memory, a GPU's rows
    without their reserved peak (reserved_mib), and --dtype auto that ran in float32 on a bfloat16 GPU. The step
    now fails, naming what was not measured, its table and result kept."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    result = {"proven": _bench_result(), "compiled 64 out of memory": _bench_result(oom=("compiled 64",)),
              "checkpointing out of memory": _bench_result(oom=("ckpt",)), "no reserved peak": _bench_result(
                  reserved=None), "auto ran in float32": _bench_result(dtype="float32")}[case]
    check = gpu_check_runner.Check(tmp_path, tmp_path, "cuda", "auto", budget_s=60)

    def bench(name, argv, timeout, cwd=None, reserve=0.0):
        Path(argv[argv.index("--json-out") + 1]).write_text(json.dumps(result))
        return gpu_check_runner.Done(argv, 0, "the table", "")

    monkeypatch.setattr(check, "run", bench)
    compiled = check.step("bench-compiled-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", None, "1,64")
    eager = check.step("bench-qwen2.5-7b", gpu_check_bench.bench_step, check, "qwen2.5-7b", 24.0)
    check.log.close()
    errors = {"compiled": compiled.get("error"), "eager": eager.get("error")}
    assert compiled["result"] == eager["result"] == result and compiled["table"] == "the table"
    assert errors == {
        "proven": {"compiled": None, "eager": None},
        "compiled 64 out of memory": {"compiled": "no compiled row measured at batch 64 (out of memory, or not run: "
                                                  "the table says which)", "eager": None},
        "checkpointing out of memory": {"compiled": None, "eager": "no training row measured with activation "
                                        "checkpointing (out of memory, or not run: the table says which)"},
        "no reserved peak": {what: "6 of 6 rows measured on the GPU have no reserved_mib (torch's reserved peak, "
                             "which a card must hold)" for what in ("compiled", "eager")},
        "auto ran in float32": {what: "--dtype auto on a GPU with native bfloat16 ran in float32"
                                for what in ("compiled", "eager")}}[case]
    assert (compiled["ok"], eager["ok"]) == (errors["compiled"] is None, errors["eager"] is None)
