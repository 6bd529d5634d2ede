"""Both benches' tables print their memory column and its legend through bench/common.py's one copy (2026-12-07:
bench/paper.py had its own copy of table.py's cell and legend), and print what they printed before."""

from types import SimpleNamespace

import torch

import bench_stubs
from llm_srt import bench, device
from llm_srt.bench import common, paper, table
from test_bench_y3 import _memory_cells, _paper_row, _with_memory

LEGEND = ("  peak/rsvd MiB: the CUDA allocator's peak (what tensors held) / its reserved peak (cached blocks, graph "
          "pools too: what a card must hold, {})")


def test_both_tables_print_the_memory_column_through_one_copy(monkeypatch):
    assert paper.memory_cell is table.memory_cell is common.memory_cell
    assert paper.reserved_legend is table.reserved_legend is common.reserved_legend
    result = bench_stubs.summarized([SimpleNamespace(seconds=3.0)] * 16, bench_stubs.ENCODER, bench_stubs.OVERHEAD,
                                    bench_stubs.TRAIN, None)
    gpu = bench.format_table(_with_memory(result, memory="gpu", peak_mib=300.4, reserved_mib=1199.6,
                                          rss_start_mib=None, peak_rise_mib=None))
    assert _memory_cells(gpu) == ["peak/rsvd MiB"] + ["300/1200"] * 4
    assert LEGEND.format("what a memory cap limits") in gpu.splitlines()
    cpu = bench.format_table(_with_memory(result, memory="rss", peak_mib=4967.0, reserved_mib=None,
                                          rss_start_mib=None, peak_rise_mib=None))
    assert _memory_cells(cpu) == ["RSS peak MiB"] + ["4967"] * 4 and "peak/rsvd" not in cpu

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    cuda = device.Placement(torch.device("cuda", 0), torch.bfloat16)
    probe = {**_paper_row("llm-srt", 128, 128, 5.0), "memory": "gpu", "peak_mib": 18000.0, "reserved_mib": 21000.0}
    row = {**_paper_row("llm-srt", 8, 16, 2.0), "memory": "gpu", "peak_mib": 9000.0}  # no reserved peak measured
    found = {"llm-srt": {"probes": [probe], "largest_fit": 128, "out_of_memory_at": 256, "capped_at_max_batch": False,
                         "memory_gib": None, "outside_allocator_mib": None}}
    lines = paper.format_paper(paper.summarize(paper.PaperOptions(), cuda, [row], found, [], 1.0)).splitlines()
    assert lines[2].endswith(" speech tok peak/rsvd MiB")
    assert [x.split()[-1] for x in lines if x.startswith("LLM-SRT")] == ["9000/-", "18000/21000"]
    assert lines[5] == LEGEND.format("what --memory-gib caps")


def test_both_tables_name_their_peak_columns_through_one_definition(monkeypatch):
    """"GPU peak MiB" and "RSS peak MiB" were literals in both table.memory_column and paper.format_paper; both now
    take them from bench/common.py, beside RESERVED and RISE, and print the same headers."""
    assert (common.GPU_PEAK, common.RSS_PEAK) == ("GPU peak MiB", "RSS peak MiB")
    assert table.GPU_PEAK is paper.GPU_PEAK is common.GPU_PEAK and table.RSS_PEAK is paper.RSS_PEAK is common.RSS_PEAK
    assert table.memory_column([{"peak_mib": 300.0, "memory": "gpu"}]) == "GPU peak MiB"
    assert table.memory_column([{"peak_mib": 4967.0, "memory": "rss"}]) == "RSS peak MiB"

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    found = {"llm-srt": {"probes": [], "largest_fit": 8, "out_of_memory_at": None, "capped_at_max_batch": True,
                         "memory_gib": None, "outside_allocator_mib": None}}
    cuda = device.Placement(torch.device("cuda", 0), torch.bfloat16)
    for placement, memory, header in ((cuda, "gpu", "GPU peak MiB"), (device.resolve("cpu"), "rss", "RSS peak MiB")):
        row = {**_paper_row("llm-srt", 8, 16, 2.0), "memory": memory}
        lines = paper.format_paper(paper.summarize(paper.PaperOptions(), placement, [row], found, [], 1.0)).splitlines()
        assert lines[2].endswith(f" speech tok {header:>13}")
        assert [x.split()[-1] for x in lines if x.startswith("LLM-SRT")] == ["100"]
