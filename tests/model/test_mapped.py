"""model/mapped.py: which tensors are views of a mapped file, and dropping their pages after lookups."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import tiny
from llm_srt.model import mapped


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "table.safetensors"
    save_file({"table": torch.randn(8192, 256), "other": torch.ones(3)}, path)  # an 8 MB table
    return path


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps (Linux)")
def test_only_a_view_of_that_file_counts_as_mapped_from_it(table_file, tmp_path):
    with safe_open(table_file, framework="pt") as f:
        view = f.get_tensor("table")
    assert mapped.mapped_from(view, table_file) and mapped.mapped_from(view[100:200], table_file)
    assert not mapped.mapped_from(view.clone(), table_file)  # heap memory: dropping it would zero it
    assert not mapped.mapped_from(view, tmp_path / "other.safetensors")
    assert not mapped.mapped_from(torch.empty(0), table_file)


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file() or mapped._libc() is None,
                    reason="reads /proc/self/smaps, calls madvise")
def test_lookups_leave_no_page_of_the_table_resident_and_read_the_files_rows(table_file):
    """60 rows across an 8 MB mapped table: a plain lookup leaves most of it resident (each row maps a page-cache
    folio around it), one whose pages drop after each lookup at most 64 KiB; the rows are the file's either way,
    and again after the drop."""
    ids = torch.arange(0, 8192, 8192 // 60)[None]
    want = load_file(table_file)["table"].clone()[ids]
    for drop in (False, True):
        with safe_open(table_file, framework="pt") as f:
            lookup = nn.Embedding(8192, 256, _weight=f.get_tensor("table"))
        if drop:
            mapped.drop_pages_after_lookups(lookup)
        mapped.drop_mapped_pages(lookup.weight)  # start from none
        assert tiny.mapped_kib(table_file) <= 64
        with torch.inference_mode():
            rows = lookup(ids)
            resident = tiny.mapped_kib(table_file)
            assert (resident <= 64) == drop and resident >= (0 if drop else 60 * 4)
            assert torch.equal(rows, want) and torch.equal(lookup(ids), want)
        del lookup


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file() or mapped._libc() is None,
                    reason="reads /proc/self/smaps, calls madvise")
def test_written_mappings_and_replaced_weights_are_never_dropped(table_file):
    """A mapping with a page written in place (safetensors maps privately: the page is the process's own copy)
    is not `mapped_from` its file, so nothing would revert that write; a hook set on a clean view leaves a weight
    replaced since (here by heap memory, which a drop would zero) alone; only whole pages inside a tensor drop."""
    with safe_open(table_file, framework="pt") as f:
        clean, written = f.get_tensor("table"), None
    assert mapped.mapped_from(clean, table_file) and not mapped.mapping_of(clean, written=True).written
    with safe_open(table_file, framework="pt") as f:
        written = f.get_tensor("table")
    written[5, 0] += 1.0
    assert mapped.mapping_of(written, written=True).written and not mapped.mapped_from(written, table_file)
    lookup = nn.Embedding(8192, 256, _weight=clean)
    mapped.drop_pages_after_lookups(lookup)
    heap, ids = torch.randn(8192, 256), torch.tensor([[1, 4000]])
    want = heap[ids].clone()
    lookup.weight.data = heap
    with torch.inference_mode():
        assert torch.equal(lookup(ids), want) and torch.equal(heap[ids], want)
    small = torch.arange(100.0)  # inside one page: no whole page to drop, so nothing is
    mapped.drop_mapped_pages(small[1:50])
    assert torch.equal(small, torch.arange(100.0))


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file() or mapped._libc() is None,
                    reason="reads /proc/self/smaps, calls madvise")
@pytest.mark.parametrize("name", ["pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "model.safetensors"])
def test_a_quantized_layer_lets_go_of_the_pages_of_its_checkpoint_file(tmp_path, name):
    """An int8 encoder read from an older fine-tune's pytorch_model.bin (torch.load's mapping, as clean as a
    safetensors file's) kept every page quantizing had read of it: the dropper looked at *.safetensors alone. The
    layer's whole pages go, the bytes read again are the file's, and a layer of heap memory is left alone."""
    from llm_srt.model.weight_files import TensorReader

    weight, heap = torch.randn(2048, 1024), torch.randn(64, 64)  # an 8 MB weight
    if name.endswith(".bin"):
        torch.save({"weight": weight, "bias": torch.ones(3)}, tmp_path / name)
    else:
        save_file({"weight": weight, "bias": torch.ones(3)}, tmp_path / name)
    with TensorReader().open(tmp_path / name) as f:
        linear = nn.Linear(1024, 2048, bias=False, device="meta")
        linear.weight = nn.Parameter(f.get_tensor("weight"), requires_grad=False)
    assert torch.equal(linear.weight, weight) and tiny.mapped_kib(tmp_path / name) >= 8 * 1024  # all read
    done = mapped.checkpoint_pages_dropper(tmp_path)
    done(linear)
    assert tiny.mapped_kib(tmp_path / name) <= 8 and torch.equal(linear.weight, weight)
    other = nn.Linear(64, 64, bias=False, device="meta")
    other.weight = nn.Parameter(heap.clone(), requires_grad=False)
    done(other)
    assert torch.equal(other.weight, heap)
