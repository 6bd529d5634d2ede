"""Tensors that are views of a memory-mapped model file (safetensors, or a pytorch_model.bin torch.load mapped),
read a few rows at a time: which tensors are, and handing their pages back after a read.

A lookup of one row of a mapped table maps the whole page-cache folio around it into the process (~1 MB here,
whatever the row's size), so the rows a decode looks up leave most of a large table resident over time: 24 tokens
of one Whisper base clip kept ~15 MiB of its 106 MB table, 16 Gemma-3-270M generations of 48 tokens 112 MiB of its
671 MB one. `drop_mapped_pages` after each lookup keeps none (madvise MADV_DONTNEED: the file keeps the pages in
its cache, the next read maps them again; ~4 us).

Dropping is only for a clean file mapping: safetensors maps its files private and writable, so a page written in
place is the process's own copy, and dropping it would revert it to the file's bytes (heap memory would read back
as zeros). `mapping_of(..., written=True)` says whether any page of a mapping was ever written (smaps'
"Anonymous"); only whole pages inside a tensor are dropped, never a neighbour's."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

MADV_DONTNEED = 4  # Linux's madvise advice: drop these pages from the process (a file mapping re-reads them)


@dataclass(frozen=True)
class Mapping:
    """One mapping of this process (a line of /proc/self/maps)."""

    start: int
    end: int
    file: Path | None  # None: anonymous memory
    written: bool | None  # whether any of its pages is the process's own copy (None: not read)


@functools.cache
def _libc():
    """The C library's madvise, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "madvise") else None
    except OSError:
        return None


def mapping_of(tensor: torch.Tensor, written: bool = False) -> Mapping | None:
    """The mapping that holds all of the tensor's bytes, or None (another device, an empty tensor, no /proc, or
    bytes across mappings). `written`: also read whether any page of it was written (/proc/self/smaps, ~5 ms;
    /proc/self/maps alone is ~0.5 ms)."""
    if tensor.device.type != "cpu" or not tensor.numel():
        return None
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    try:
        lines = Path("/proc/self/smaps" if written else "/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split(maxsplit=5)
        if found is not None:
            if fields[0] == "Anonymous:":
                return Mapping(*found, written=int(fields[1]) > 0)
            continue
        if ":" in fields[0] or "-" not in fields[0]:
            continue  # an smaps field of another mapping
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= start and end <= high:
            file = Path(fields[5]) if len(fields) == 6 and fields[5].startswith("/") else None
            if not written:
                return Mapping(low, high, file, None)
            found = (low, high, file)
    return None


def mapped_from(tensor: torch.Tensor, path: str | Path) -> bool:
    """Whether the tensor's bytes lie in one mapping of the file `path` none of whose pages was written: then
    `drop_mapped_pages` may drop them (the file holds the same bytes)."""
    found = mapping_of(tensor, written=True)
    return found is not None and found.file == Path(path).resolve() and found.written is False


def drop_mapped_pages(tensor: torch.Tensor) -> None:
    """Unmap the whole pages inside a tensor that is a view of a clean file mapping (`mapped_from`; the caller
    checks) from this process: the next read maps them again from the page cache. The partial pages at its two
    ends (shared with its neighbours in the file) stay. Where madvise is missing, nothing."""
    if (libc := _libc()) is None:
        return
    page = mmap.PAGESIZE
    start = -(-tensor.data_ptr() // page) * page
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    if end > start:
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)


def drop_pages_after_lookups(embedding: nn.Module) -> None:
    """After every forward of `embedding` (an nn.Embedding-like module whose weight the caller found
    `mapped_from` its file), its table's pages leave the process, as long as the weight is still those bytes (a
    weight replaced since, e.g. by `.data =` or a resize, is left alone)."""
    weight = embedding.weight
    embedding.register_forward_hook(_DropAfterLookup(weight.data_ptr(), weight.numel() * weight.element_size()))


@dataclass(frozen=True)
class _DropAfterLookup:
    """A forward hook: drop the pages of the module's weight if it still is the `nbytes` bytes at `ptr`."""

    ptr: int
    nbytes: int

    def __call__(self, module: nn.Module, args, output) -> None:
        weight = module.weight
        if weight.data_ptr() == self.ptr and weight.numel() * weight.element_size() == self.nbytes:
            drop_mapped_pages(weight)


def checkpoint_pages_dropper(folder: str | Path, keep: torch.Tensor | None = None) -> Callable[[nn.Module], None]:
    """For `int8_linear.quantize_int8(done=)`: a float layer just quantized lets go of its weight's pages when that
    weight is a view of one of `folder`'s weights files (symlinks resolved, as /proc/self/maps names them): a
    safetensors file, or a pytorch_model.bin that `torch.load(mmap=True)` mapped (privately, as safetensors does),
    in a mapping no page of which was written (checked once per mapping: nothing writes while quantizing), and
    is not `keep` (a tied head's weight that is still the embedding table). Quantizing reads every weight through
    the mapping, whose pages would otherwise stay resident for as long as any view of it lives."""
    files = {p.resolve() for pattern in ("*.safetensors", "*.bin") for p in Path(folder).glob(pattern)}
    clean: dict[tuple[int, int], bool] = {}

    def done(linear: nn.Module) -> None:
        weight = linear.weight
        if keep is not None and weight.data_ptr() == keep.data_ptr():
            return
        found = mapping_of(weight)
        if found is None or found.file not in files:
            return
        key = (found.start, found.end)
        if key not in clean:
            clean[key] = (checked := mapping_of(weight, written=True)) is not None and checked.written is False
        if clean[key]:
            drop_mapped_pages(weight)

    return done
