"""Compiled greedy decode steps on a static KV cache (`StaticSteps`, `--compile`): `decoding.greedy_ids` takes these
steps where the model allows them, its eager steps (`decoding.GrowingSteps`) otherwise; the same tokens either way in
float32 (in bfloat16 and float16 the compiled kernels round differently, so a near-tie can pick another token).
"""

from __future__ import annotations

import threading
import time
import warnings
import weakref
from contextlib import contextmanager

import torch
from torch import nn

# int8 CPU layers take compiled steps at up to this many rows: at batch 1 a compiled step of the embedded Gemma-3 was
# 13.5 against 15.4-15.8 ms eager, at 16 rows 2.2-2.5x slower (the static cache's attention over its bucketed length,
# and its copies; results/cpu-2026-12-03e)
INT8_COMPILED_ROWS = 1


def static_batch(rows: int) -> int:
    """The batch size static steps run `rows` rows at: filled to a power of two (copies of row 0)."""
    return 1 << (rows - 1).bit_length()


def error_causes(error: BaseException):
    """`error`, then what it wraps: torch wraps what a compiler backend raised in its own BackendCompilerFailed."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "inner_exception", None) or error.__cause__


class StaticSteps:
    """`greedy_ids`' steps compiled (torch.compile, fullgraph) on a static cache (`kv_cache.static_cache`): every
    step has the same shapes, so one compiled graph serves them all, and on a GPU it replays as a CUDA graph
    (mode "reduce-overhead"): a token costs the GPU's time, not one Python call per layer and op. The batch is
    filled to a power of two with copies of its first row and the cache length bucketed (`static_length`), so few
    shapes compile; finished rows stay in the batch (their tokens are ignored), since the shapes may not change.
    A compiled graph is kept per shape (torch's cache, up to COMPILED_SHAPES), and per model the caches of its
    served shapes and of its last STATIC_CACHES other shapes, so a later batch of the same shape neither compiles nor
    allocates again; a generation takes its cache
    out of that store until `close` (a concurrent one of the same shape gets its own). Prefill runs eager.
    Shapes compiled in a `warming()` block are a model's served shapes: a later batch of that size needing a shorter
    cache takes the served length instead of compiling its own."""

    COMPILED_SHAPES = 64  # torch's recompile limit while these steps compile (each batch x length is one shape)
    STATIC_CACHES = 2  # static caches kept per model (their KV buffers), most recent first

    _step: dict = {}  # the compiled `_decode_step`, by mode ("default", "reduce-overhead"), made on first use
    steps_taken = 0  # compiled steps run in this process (the LM's forward hooks do not see them: `_decode_step`)
    last_step_at = 0.0  # time.perf_counter() when the last compiled step was done (benchmarks time the steps): on
    #  the CPU as it returns; on a GPU, where it returns once queued, at its generation's `close`, synchronized
    _caches = weakref.WeakKeyDictionary()  # model -> {shape: cache} (a dropped model frees its caches)
    _lock = threading.Lock()  # the store, between threads
    _refused = weakref.WeakSet()  # models whose step failed to compile (`refuse`)
    _shapes: set[tuple[int, int]] = set()  # (batch, cache length) of the steps that ran compiled
    _full = False  # torch's recompile limit was reached (`shapes_full`)
    _served = weakref.WeakKeyDictionary()  # model -> {batch: {cache lengths}} of its steps compiled in `warming()`
    _warming = threading.local()  # .longest: in a `warming()` block, the longest cache a generation there asked for

    @classmethod
    @contextmanager
    def warming(cls):
        """Generations in this block whose steps run compiled make their (batch, cache length) one of the model's
        served shapes: a later batch of that size takes the shortest served length that holds it (the extra
        positions masked: the same tokens in float32), so a server warmed up at the longest length its requests can
        need compiles no shape while it serves (`serve --compile`). Where that length cannot be static (a sliding
        window shorter than it), a later generation in the block takes the longest length that can, for the requests
        that fit it."""
        outer = cls._warming_longest()
        cls._warming.longest = outer or 0
        try:
            yield
        finally:
            cls._warming.longest = outer

    @classmethod
    def _warming_longest(cls) -> int | None:
        """In a `warming()` block of this thread, the longest cache a generation there asked for (0: none yet);
        outside one, None."""
        return getattr(cls._warming, "longest", None)

    @classmethod
    def fits(cls, lm: nn.Module, rows: int, positions: int) -> bool:
        """Whether this model can take static steps for `rows` rows of a prompt + new tokens of `positions` (int8
        CPU layers at most INT8_COMPILED_ROWS rows, some attention kinds have no static cache here, a model whose
        step failed to compile (`refuse`) is not tried again, and once torch's limit of compiled shapes is reached
        only shapes already compiled are: the others decode as without `compile`)."""
        from .int8_linear import is_quantized
        from .kv_cache import static_fits, static_length

        if static_batch(rows) > INT8_COMPILED_ROWS and is_quantized(lm):
            return False
        if cls._warming_longest() is not None:  # before `shape`, as `__init__` will see it
            cls._warming.longest = max(cls._warming.longest, static_length(positions))
        shape = cls.shape(lm, rows, positions)
        if lm in cls._refused or not static_fits(lm.config, shape[1]):
            return False
        return not cls._full or shape in cls._shapes

    @classmethod
    def shape(cls, lm: nn.Module, rows: int, positions: int) -> tuple[int, int]:
        """(batch, cache length) of the model's static steps for `rows` rows of a prompt + new tokens of `positions`:
        the batch filled to a power of two, the length bucketed (`kv_cache.static_length`), or the shortest served
        length for that batch that holds it; while warming, the longest length that can be static up to the longest
        one asked for in the block (`warming`)."""
        from .kv_cache import STATIC_LENGTH_STEP, static_fits, static_length

        batch, length = static_batch(rows), static_length(positions)
        longest = cls._warming_longest()
        if longest:
            fitting = [n for n in range(longest, length, -STATIC_LENGTH_STEP) if static_fits(lm.config, n)]
            return batch, fitting[0] if fitting else length
        with cls._lock:
            served = [n for n in cls._served.get(lm, {}).get(batch, ()) if n >= length]
        return batch, min(served, default=length)

    @classmethod
    def shapes_full(cls, error: Exception) -> None:
        """Torch compiled COMPILED_SHAPES shapes of the step: new ones decode eagerly from now on (said once)."""
        if not cls._full:
            warnings.warn(f"--compile: {cls.COMPILED_SHAPES} batch x length shapes are compiled; new shapes decode "
                          f"eagerly ({type(error).__name__})", RuntimeWarning, stacklevel=3)
        cls._full = True

    @classmethod
    def refuse(cls, lm: nn.Module, error: Exception) -> None:
        """The model's decode step does not compile here: a warning, and eager steps for it from now on (the
        generation that failed runs again eagerly: nothing of it was returned)."""
        cls._refused.add(lm)
        error = getattr(error, "inner_exception", None) or error  # what a backend raised, not torch's wrapper
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.warn(f"--compile: this model's decode step does not compile ({type(error).__name__}: {first[:200]}); "
                      "it decodes eagerly (the same tokens in float32, without the compiled speed)", RuntimeWarning,
                      stacklevel=3)

    def __init__(self, lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int):
        rows, prompt = mask.shape
        batch, length = self.shape(lm, rows, prompt + max_new_tokens)
        self.warming = self._warming_longest() is not None  # served once a step runs compiled
        if batch > rows:  # copies of row 0 fill the batch to a power of two
            embeds = torch.cat([embeds, embeds[:1].expand(batch - rows, -1, -1)])
            mask = torch.cat([mask, mask[:1].expand(batch - rows, -1)])
        # a cache made in inference mode holds inference tensors, which nothing outside it may write in place (a
        # later generation's `reset` under no_grad raised): one cache per mode
        self.lm, self.cache_key = lm, (batch, length, embeds.dtype, embeds.device, torch.is_inference_mode_enabled())
        self.cache = self._cache(lm, self.cache_key)
        try:
            self.mask = mask.new_zeros(batch, length, dtype=torch.long)
            self.mask[:, :prompt] = mask
            from .decoding import prompt_positions  # (decoding imports this module)

            positions = prompt_positions(mask)
            out = lm(inputs_embeds=embeds, attention_mask=self.mask, position_ids=positions, use_cache=True,
                     logits_to_keep=1, past_key_values=self.cache)
        except BaseException:  # (out of memory, Ctrl-C): the cache back to the store, or a served shape's is lost
            self._give_back()
            raise
        device = embeds.device
        # the next cache slot, whose mask column each step opens; HF's StaticLayer writes keys and values at its
        # own fill counter (`cumulative_length`), the same number (tests/model/test_speech_llm.py checks it)
        self.slot, self.position = prompt, positions[:, -1:] + 1
        self.active = torch.arange(rows, device=device)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.mode = "reduce-overhead" if device.type == "cuda" else "default"
        self.queued = device.type == "cuda"  # a step returns once its kernels are queued (a CUDA graph's replay)
        self.stepped = False
        self.logits = out.logits[:rows]

    def keep(self, index: torch.Tensor) -> None:
        self.active = self.active[index]

    def close(self) -> None:
        """The cache goes back to the model's store (the most recent). A served shape's cache stays there for good
        (`warming`): a new cache would be new buffers, and on a GPU the step's CUDA graph, recorded on the old
        ones, would be recorded again (and kept beside it) at the next batch of that size; of the other shapes', the
        oldest beyond STATIC_CACHES are dropped. On a GPU, where a step returns once queued, the last step's end
        (`last_step_at`) is taken here, after one synchronize per generation (the loop has read the last step's
        tokens: it waits for nothing more); one after every step would hold back the queuing of each token's
        argmax and copy."""
        if self.queued and self.stepped:
            torch.cuda.synchronize(self.tokens.device)
            StaticSteps.last_step_at = time.perf_counter()
        self._give_back()

    def _give_back(self) -> None:
        """`close`'s store: the cache back as the most recent, the oldest unserved ones beyond STATIC_CACHES dropped."""
        with self._lock:
            kept = self._caches.setdefault(self.lm, {})
            kept[self.cache_key] = self.cache
            served = self._served.get(self.lm, {})
            unserved = [key for key in kept if key[1] not in served.get(key[0], ())]
            for key in unserved[:max(0, len(unserved) - self.STATIC_CACHES)]:
                del kept[key]

    @classmethod
    def drop_caches(cls) -> int:
        """Every model's kept static caches let go but its served shapes' (a GPU out of memory: the KV buffers are
        freed before the batch is retried in halves). A served shape's cache stays, as in `close`: a new one would
        be new buffers, so on a GPU its step's CUDA graph would be recorded again, and kept beside the old one, at
        the next batch of that size, after every out-of-memory error of `serve --compile`. Returns how many."""
        dropped = 0
        with cls._lock:
            for lm, kept in list(cls._caches.items()):
                served = cls._served.get(lm, {})
                for key in [key for key in kept if key[1] not in served.get(key[0], ())]:
                    del kept[key]
                    dropped += 1
                if not kept:
                    del cls._caches[lm]
        return dropped

    def step(self, token: torch.Tensor) -> torch.Tensor:
        self.tokens.zero_()
        self.tokens[self.active] = token
        self.mask[:, self.slot] = 1
        # the embedding lookup outside the compiled step: its forward hooks run as in eager steps (a memory-mapped
        # table's pages are let go after each lookup: `mapped.drop_pages_after_lookups`)
        embeds = self.lm.get_input_embeddings()(self.tokens[:, None])
        with torch._dynamo.config.patch(recompile_limit=self.COMPILED_SHAPES):
            logits = self._compiled(self.mode)(self.lm, embeds, self.position, self.mask, self.cache)
        if self.warming:  # compiled, and it ran: a served shape
            with self._lock:
                self._served.setdefault(self.lm, {}).setdefault(self.cache_key[0], set()).add(self.cache_key[1])
            self.warming = False
        self.slot += 1
        self.position = self.position + 1
        self.stepped = True
        StaticSteps.steps_taken += 1
        StaticSteps.last_step_at = time.perf_counter()
        StaticSteps._shapes.add(self.cache_key[:2])
        return logits[self.active].unsqueeze(1)  # read before the next replay overwrites the graph's output

    @classmethod
    def _compiled(cls, mode: str):
        if mode not in cls._step:
            cls._step[mode] = torch.compile(_decode_step, fullgraph=True, dynamic=False, mode=mode)
        return cls._step[mode]

    @classmethod
    def _cache(cls, lm: nn.Module, key: tuple):
        """A reset static cache of shape `key` (batch, length, dtype, device, made in inference mode), taken out of
        the model's store: the kept one (the same buffers: a CUDA graph recorded on them replays), else a new one."""
        from .kv_cache import static_cache

        with cls._lock:
            cache = cls._caches.setdefault(lm, {}).pop(key, None)
        if cache is None:
            return static_cache(lm.config, key[1])
        cache.reset()
        return cache


def _decode_step(lm: nn.Module, embeds: torch.Tensor, position: torch.Tensor, mask: torch.Tensor,
                 cache) -> torch.Tensor:
    """One decode step of every batch slot on a static cache: the embeddings (B, 1, d) of its tokens at `position`
    (B, 1), written at the cache's next slot, attending where `mask` (B, length) is 1 -> next-token logits (B, V).
    What `StaticSteps` compiles.
    `forward`, not the module's call: a forward hook on the LM itself (a benchmark's counter) would break the graph;
    its layers' own hooks still run (traced)."""
    return lm.forward(inputs_embeds=embeds, attention_mask=mask, position_ids=position, past_key_values=cache,
                      use_cache=True).logits[:, -1]
