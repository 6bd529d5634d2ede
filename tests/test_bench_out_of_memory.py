"""bench --paper-shape where the machine has too little memory for the shape: refused in one line before anything is
built where its weights alone exceed what the process can allocate (`device.available_memory_bytes`), and one line,
not a traceback, where building runs out of memory (torch's own CPU allocator error, from an impossible request)."""

import resource
import sys
from types import SimpleNamespace

import pytest
import torch

from cli_run import run_cli
from llm_srt import device
from llm_srt.bench import paper
from llm_srt.errors import LLMSRTError
from test_out_of_memory import tiny_options


def test_a_bench_model_built_out_of_memory_is_one_line(monkeypatch, tmp_path, capsys):
    """`(ulimit -v 8000000; llm-srt bench --paper-shape qwen2.5-3b ...)` logged "building" and then gave a traceback
    ending in DefaultCPUAllocator's "can't allocate memory": one line naming the shape, the system, the device, what
    its weights take and what to do."""
    def pin_eos(model):  # built, then something more asked of the allocator than it has
        torch.empty(1 << 60, dtype=torch.uint8)

    monkeypatch.setattr(paper, "pin_eos", pin_eos)
    placement = device.resolve("cpu", "float32")
    need, counted = paper.weights_need(tiny_options(), placement)
    counts = paper.presets.parameter_counts("tiny")
    assert need == (counts["llm"] + counts["encoder"]) * 4 and counted.endswith("parameters x 4 bytes")
    with pytest.raises(LLMSRTError) as raised:
        paper.run_paper(tiny_options(), placement, tmp_path)
    message = str(raised.value)
    assert message.startswith("out of memory building --paper-shape tiny's llm-srt system on cpu float32 (the CPU "
                              "allocator could not allocate"), message
    assert f"its weights alone take {device.gib(need)}: {counted}" in message and "--dtype bfloat16" in message
    code, out, err = run_cli(["bench", "--paper-shape", "tiny", "--device", "cpu", "--no-train", "--max-batch", "0"],
                             capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"llm-srt bench: error: {message}"


def test_the_peer_built_out_of_memory_keeps_the_q_formers_rows_and_the_table(monkeypatch, tmp_path):
    """The Qwen2-Audio-style peer running out of memory while built, after the Q-Former's rows: the bench ended on
    the error with no table (the rows only in --json-out); its rows are out of memory, as a row that runs out is."""
    real = paper.build_system

    def build_system(name, *rest):
        if name == "pooled-750":
            torch.empty(1 << 60, dtype=torch.uint8)
        return real(name, *rest)

    monkeypatch.setattr(paper, "build_system", build_system)
    logged = []
    result = paper.run_paper(tiny_options(pooled_batch_sizes=(1, 2)), device.resolve("cpu", "float32"), tmp_path,
                             log=logged.append)
    assert result["finished"] is True
    assert [r for r in result["decode"] if r["system"] == "pooled-750"] == [
        {"system": "pooled-750", "beam": 1, "batch_size": b, "compiled": False, "out_of_memory": True} for b in (1, 2)]
    assert all(not r["out_of_memory"] for r in result["decode"] if r["system"] == "llm-srt")
    assert result["qformer_vs_pooled_at_equal_batch"] == {}
    assert any(m.startswith("pooled-750: out of memory while building it (the CPU allocator") for m in logged), logged
    table = paper.format_paper(result)
    assert table.count("out of memory") == 2, table


def test_a_shape_too_large_for_the_cpu_is_refused_before_it_is_built(monkeypatch, tmp_path):
    """`llm-srt bench --paper-shape qwen2.5-7b` on a CPU with too little memory built 31 GiB of float32 weights for
    minutes without a word: the weights alone against what the process can allocate, refused in one line."""
    built = []
    monkeypatch.setattr(paper, "build_system", lambda *a: built.append(a))
    placement = device.resolve("cpu", "float32")
    need, _ = paper.weights_need(tiny_options(), placement)
    monkeypatch.setattr(device, "available_memory_bytes", lambda: (need - 1, "available memory and free swap"))
    with pytest.raises(LLMSRTError, match=r"--paper-shape tiny on cpu float32: its weights alone take .* and this "
                                          r"process can allocate .* \(available memory and free swap\): use a "
                                          r"smaller --paper-shape"):
        paper.run_paper(tiny_options(), placement, tmp_path)
    assert built == []


def test_available_memory_counts_memory_swap_and_an_address_space_limit(monkeypatch):
    psutil = pytest.importorskip("psutil")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=5 << 30))
    monkeypatch.setattr(psutil, "swap_memory", lambda: SimpleNamespace(free=1 << 30))
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert device.available_memory_bytes() == (6 << 30, "available memory and free swap")
    vms = psutil.Process().memory_info().vms
    monkeypatch.setattr(resource, "getrlimit", lambda what: (vms + (2 << 30), resource.RLIM_INFINITY))
    room, counted = device.available_memory_bytes()
    assert abs(room - (2 << 30)) < 64 << 20 and counted == "what the address-space limit (ulimit -v) leaves"
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: /proc/meminfo
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    room, counted = device.available_memory_bytes()
    assert room > 0 and counted == "MemAvailable and SwapFree"
