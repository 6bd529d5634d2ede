"""Tensors that are views of a memory-mapped model file (safetensors), read a few rows at a time: which tensors
are, and handing their pages back after a read.

A lookup of one row of a mapped table maps the whole page-cache folio around it into the process (~1 MB here,
whatever the row's size), so the rows a decode looks up leave most of a large table resident over time: 24 tokens
of one Whisper base clip kept ~15 MiB of its 106 MB table, 16 Gemma-3-270M generations of 48 tokens 112 MiB of its
671 MB one. `drop_mapped_pages` after each lookup keeps none (madvise MADV_DONTNEED: the file keeps the pages in
its cache, the next read maps them again; ~4 us)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
from pathlib import Path

import torch
from torch import nn

MADV_DONTNEED = 4  # Linux's madvise advice: drop these pages from the process (a file mapping re-reads them)


@functools.cache
def _libc():
    """The C library's madvise, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "madvise") else None
    except OSError:
        return None


def mapped_file(tensor: torch.Tensor) -> Path | None:
    """The file whose mapping holds all of the tensor's bytes (read from /proc/self/maps), or None: heap memory,
    another device, or no /proc."""
    if tensor.device.type != "cpu" or not tensor.numel():
        return None
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= start and end <= high:
            return Path(fields[5]) if len(fields) == 6 and fields[5].startswith("/") else None
    return None


def mapped_from(tensor: torch.Tensor, path: str | Path) -> bool:
    """Whether the tensor's bytes lie in one mapping of the file `path`: only then may `drop_mapped_pages` drop
    them, since the file keeps them. Heap memory dropped would read back as zeros."""
    return mapped_file(tensor) == Path(path).resolve()


def drop_mapped_pages(tensor: torch.Tensor) -> None:
    """Unmap the pages of a tensor that is a view of a file mapping (`mapped_from`) from this process's memory:
    the next read maps them again from the page cache. Where madvise is missing, nothing."""
    if (libc := _libc()) is None:
        return
    start = tensor.data_ptr() & ~(mmap.PAGESIZE - 1)
    length = tensor.data_ptr() + tensor.numel() * tensor.element_size() - start
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_DONTNEED)


def drop_pages_after_lookups(embedding: nn.Module) -> None:
    """After every forward of `embedding` (an nn.Embedding-like module whose weight is a mapped file's view: the
    caller checks `mapped_from`), its table's pages leave the process."""
    embedding.register_forward_hook(_drop_hook)


def _drop_hook(module: nn.Module, args, output) -> None:
    drop_mapped_pages(module.weight)
