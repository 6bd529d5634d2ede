"""Dynamic batching: concurrent requests share one `SpeechTranslator.translate` call, whatever their languages and
tasks (each request keeps its own source, target and task; the systems take mixed batches).

Requests wait on an asyncio queue. A collector task takes the first waiting request, lets up to `max_batch - 1`
more join it for at most `max_wait_ms`, and hands them to one worker thread as a single translate() call (one
thread: the model runs one batch at a time and the event loop stays free to accept uploads meanwhile). Requests
that arrive while a batch runs queue up and form the next batch at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import LLMSRTError
from ..infer import SpeechTranslator, TranslationResult
from ..model.decoding import DecodingOptions
from ..prompts import Task


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 8  # most requests in one translate() call; 1 = no batching
    max_wait_ms: float = 20.0  # how long the first request of a batch waits for others to join it
    max_queue: int = 1024  # requests waiting beyond this are refused (server busy) instead of piling up
    decoding: DecodingOptions = DecodingOptions()  # passed to every translate() call

    def __post_init__(self):
        if self.max_batch < 1 or self.max_wait_ms < 0 or self.max_queue < 1:
            raise LLMSRTError(f"serve: need max_batch >= 1, max_wait_ms >= 0 and max_queue >= 1 (got "
                              f"{self.max_batch}, {self.max_wait_ms}, {self.max_queue})")


class BusyError(LLMSRTError):
    """The queue is full; the client should retry later."""


@dataclass
class Pending:
    audio: np.ndarray  # 16 kHz mono float32, shape (N,)
    src: str | None
    tgt: str | None
    task: Task
    future: asyncio.Future  # resolves to the TranslationResult


@dataclass
class BatchStats:
    sizes: Counter = field(default_factory=Counter)  # batch size -> how many translate() calls had it

    @property
    def calls(self) -> int:
        """translate() calls made."""
        return sum(self.sizes.values())

    @property
    def requests(self) -> int:
        """Requests translated (or failed in the model)."""
        return sum(size * n for size, n in self.sizes.items())

    def to_dict(self) -> dict:
        return {"requests": self.requests, "calls": self.calls,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class Batcher:
    """Queue + collector + one model thread. Use inside a running event loop: `await start()`, `await stop()`."""

    def __init__(self, translator: SpeechTranslator, options: BatchOptions = BatchOptions()):
        self.translator = translator
        self.options = options
        self.stats = BatchStats()
        self._queue: asyncio.Queue[Pending] | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm-srt-model")
        self._collector = asyncio.create_task(self._collect(), name="llm-srt-batcher")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(BusyError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, audio: np.ndarray, src: str | None, tgt: str | None, task: Task) -> TranslationResult:
        """Translate one decoded clip along with whatever else is waiting. Cancelling the await drops the request
        if its batch has not started yet."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if self._queue.qsize() >= self.options.max_queue:
            raise BusyError(f"{self._queue.qsize()} requests are already waiting; retry later")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(audio, src, tgt, task, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # timed out or cancelled while waiting
            if live:
                await self._run(loop, live)

    async def _run(self, loop: asyncio.AbstractEventLoop, group: list[Pending]) -> None:
        try:
            results = await loop.run_in_executor(self._executor, self._translate, group)
        except Exception as e:  # noqa: BLE001 - one failing batch must not stop the server
            for p in group:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        for p, r in zip(group, results):
            if not p.future.done():
                p.future.set_result(r)

    def _translate(self, group: list[Pending]) -> list[TranslationResult]:
        self.stats.sizes[len(group)] += 1
        return self.translator.translate([p.audio for p in group], [p.src for p in group], [p.tgt for p in group],
                                         task=[p.task for p in group], options=self.options.decoding,
                                         batch_size=self.options.max_batch)
