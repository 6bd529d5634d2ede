"""A KV cache that grows in place: HF's `DynamicCache` with its layers' keys and values kept in buffers of spare
capacity, so that a decode step writes its one new position instead of copying the whole cache.

HF's dynamic layers `torch.cat` the cache with each step's keys and values: every step copies every layer's cache
(Gemma-3-270M int8 at batch 16: 8.4 ms of an 80 ms CPU step). Here a step writes its position into the buffer and
hands attention a view of the filled part. A buffer is made with room for GROW_STEP new tokens (fewer where the
generation writes fewer), and made again with twice the room, for the rows still in the batch, when it is full, up to
the generation's new tokens: a GPU allocates a buffer's every position at once, and a batch whose rows end early
would hold their whole budgets (Qwen2.5-32B, 64 rows of 300 prompt positions and a budget of 1,284: 25 GiB reserved
for the 9 GiB written); each growth copies the cache once (3 times for 1,284 new tokens). Attention sees the same
values as with `torch.cat`, so outputs are identical. Rows that leave the batch (HF's `batch_select_indices`) are
dropped inside the buffer: the kept rows move up, nothing is allocated. Anything else that replaces a layer's tensors
(`crop`, `reorder_cache`, ...) is noticed at the next update, which copies them into a new buffer, no longer than the
generation's. A sliding-window layer keeps the buffer (never longer than its window) while the cache is shorter than
its window and falls back to HF's own update (which trims it) beyond.

`static_cache` is the other kind: fixed buffers of a bucketed length, for a compiled decode step (static_steps.py).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer


GROW_STEP = 256  # a layer's first buffer has room for this many new tokens (or the generation's, if fewer); each
#   later one for twice as many as the one before


class _Growing:
    """The buffer logic shared by both layer kinds (mixed in before HF's class): the first buffer holds the prompt
    plus min(`spare`, GROW_STEP) more positions, each later one the prompt plus twice the room of the one before, up
    to the prompt plus `spare` (`_limit`, the generation's last position), unless it must hold more."""

    spare = 0

    def _grow_update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        cached = self.keys if self.keys is not None and self.keys.numel() else None
        length = 0 if cached is None else cached.shape[-2]
        new = key_states.shape[-2]
        if cached is None or not hasattr(self, "_limit"):  # a generation's first update (or the first after a
            self._start = length + new  # reset, or onto tensors given to the layer): its prompt
            self._limit = self._start + self.spare
        buffers = getattr(self, "_kv_buffers", None)
        if (buffers is None or not self._holds_view() or length + new > buffers[0].shape[-2]
                or buffers[0].shape[:2] != key_states.shape[:2]):
            capacity = self._capacity(length + new)
            buffers = tuple(states.new_empty(*states.shape[:2], capacity, states.shape[-1])
                            for states in (key_states, value_states))
            if cached is not None:  # the tensors HF (or an earlier buffer) left, copied once
                buffers[0][:, :, :length] = cached
                buffers[1][:, :, :length] = self.values
            self._kv_buffers = buffers
        buffers[0][:, :, length:length + new] = key_states
        buffers[1][:, :, length:length + new] = value_states
        self.keys, self.values = buffers[0][:, :, :length + new], buffers[1][:, :, :length + new]
        self._kv_view = (self.keys, self.values)
        return self.keys, self.values

    def _capacity(self, positions: int) -> int:
        """The length of a buffer made to hold `positions`: the prompt plus GROW_STEP doubled as often as they need,
        at most `_most()` positions (more only where they are more). A rebuilt buffer (tensors HF replaced) is sized
        so too: a whole spare on top of the positions held would let each late rebuild hold up to prompt + twice the
        new tokens."""
        room, most = min(self.spare, GROW_STEP), self._most()
        while self._start + room < min(positions, most):
            room *= 2
        return max(positions, min(self._start + room, most))

    def _most(self) -> int:
        """The most positions a buffer of this layer holds in the generation: its last position."""
        return self._limit

    def _holds_view(self) -> bool:
        """Whether the layer's keys and values are still the views of its buffers that the last update set."""
        view = getattr(self, "_kv_view", (None, None))
        return self.keys is not None and self.keys is view[0] and self.values is view[1]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Only the `indices` rows go on: moved up inside the buffers, which keep their storage (a new pair would be
        a second allocation and copy of the whole cache each time a row ends, the old one alive until it is made).
        The finished rows' memory stays held until the generation ends: never more than the batch took at its start."""
        if not self._holds_view():
            return super().batch_select_indices(indices)
        length, rows = self.keys.shape[-2], len(indices)
        for buffer in self._kv_buffers:
            buffer[:rows, :, :length] = buffer[indices, :, :length]  # gathered first: overlapping rows are safe
        self._kv_buffers = tuple(buffer[:rows] for buffer in self._kv_buffers)
        self.keys, self.values = (buffer[:, :, :length] for buffer in self._kv_buffers)
        self._kv_view = (self.keys, self.values)


class GrowingLayer(_Growing, DynamicLayer):
    """A full-attention layer's cache, grown in place."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return self._grow_update(key_states, value_states)


class GrowingSlidingWindowLayer(_Growing, DynamicSlidingWindowLayer):
    """A sliding-window layer's cache: grown in place while it holds fewer than `sliding_window - 1` positions
    (HF's layer keeps all of them then too), HF's own update beyond."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.record_past or self.cumulative_length + key_states.shape[-2] > self.sliding_window - 1:
            self._kv_buffers, self._kv_view = None, (None, None)  # HF's tensors from now on: the buffers let go
            return super().update(key_states, value_states, *args, **kwargs)
        self.cumulative_length += key_states.shape[-2]
        return self._grow_update(key_states, value_states)

    def _most(self) -> int:
        return min(self._limit, self.sliding_window - 1)  # beyond, HF's update keeps the window


GROWING = {DynamicLayer: GrowingLayer, DynamicSlidingWindowLayer: GrowingSlidingWindowLayer}


def growing_cache(config, spare: int) -> DynamicCache:
    """An empty `DynamicCache` for a model of `config` whose full-attention and sliding-window layers grow in place,
    their buffers to at most `spare` positions beyond the prompt (a generation's new tokens); any other kind of layer
    stays HF's."""
    cache = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        kind = GROWING.get(type(layer))
        if kind is None:
            continue
        cache.layers[i] = kind(sliding_window=layer.sliding_window) if kind is GrowingSlidingWindowLayer else kind()
        cache.layers[i].spare = spare
    return cache


STATIC_LENGTH_STEP = 256  # a static cache's length is the prompt + new tokens rounded up to this: few shapes compile
STATIC_LAYER_TYPES = ("full_attention", "sliding_attention")  # the attention kinds a static cache may stand for


def static_length(positions: int) -> int:
    """The static cache length that holds `positions` (bucketed, so that few shapes compile)."""
    return -(-positions // STATIC_LENGTH_STEP) * STATIC_LENGTH_STEP


def static_fits(config, length: int) -> bool:
    """Whether a model of `config` computes with `static_cache(config, length)` what it computes with its own cache:
    full attention, or sliding windows no shorter than `length` (a window that never slides is full attention; HF's
    sliding static layers keep their fill as a Python int, which recompiles a compiled step at every token)."""
    text = config.get_text_config(decoder=True)
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if not kinds <= set(STATIC_LAYER_TYPES):
        return False
    return "sliding_attention" not in kinds or (getattr(text, "sliding_window", None) or 0) >= length


def static_cache(config, length: int):
    """An empty cache of `length` positions whose every layer is HF's `StaticLayer` (fixed buffers, allocated at the
    first update, its fill a tensor: one compiled step serves every position). For `static_fits` models only."""
    from transformers.cache_utils import Cache, StaticLayer

    layers = config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(layers)])
