"""Dynamic batching: concurrent requests share one `SpeechTranslator.translate` call, whatever their languages and
tasks (each request keeps its own source, target and task; the systems take mixed batches).

Requests wait in a queue. A collector task takes the first waiting request, lets up to `max_batch - 1`
more join it for at most `max_wait_ms`, and hands them to one worker thread as a single translate() call (one
thread: the model runs one batch at a time and the event loop stays free to accept uploads meanwhile). Requests
that arrive while a batch runs queue up and form the next batch at once. A request whose caller stops waiting
(timeout, disconnected client) leaves the queue at once: the model never runs for it; once in a running batch, its
segments not yet run are left out, and its audio counts as queued until that batch ends. In a batch, the requests
with the least audio run first (a short clip is answered before a long upload's other segments run). Nor does a
short request that arrives while a long batch runs wait for all of it: between two model calls of a batch, the
model thread takes the waiting requests with less audio than the batch has left and runs them as a batch of their
own first (`Batcher._preempt`; up to PREEMPT_DEPTH batches deep), so a 1 s clip waits for one model call, not for
three 10-minute uploads, and a request only a little shorter than the batch does not overtake it. A request may
bring its own DecodingOptions (beam size, token cap): a batch holds requests of one kind of decoding, the first
waiting request's; the others keep their place in the queue for a later batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..audio import SAMPLE_RATE
from ..device import make_current
from ..errors import DeviceFailed, LLMSRTError
from ..infer import ALONE_OUT_OF_MEMORY, NOT_RUN, SpeechTranslator, TranslationResult, error_line, retryable
from ..model.decoding import BROKEN_SCORES, DecodingOptions
from ..model.protocol import LID_MISSING, LID_UNKNOWN
from ..prompts import Task
from ..segment import SegmentOptions


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 8  # most requests in one translate() call; 1 = no batching
    max_wait_ms: float = 20.0  # how long the first request of a batch waits for others to join it
    max_queue: int = 1024  # requests waiting beyond this are refused (server busy) instead of piling up
    decoding: DecodingOptions = DecodingOptions()  # the decoding of a request that asks for none of its own
    max_queued_seconds: float = 3600.0  # decoded audio waiting beyond this is refused too (1 h: 230 MB of samples)
    segment: SegmentOptions = SegmentOptions()  # how a request's speech is cut (--max-segment-seconds)

    def __post_init__(self):
        ok = (isinstance(self.max_batch, int) and isinstance(self.max_queue, int) and self.max_batch >= 1
              and self.max_queue >= 1 and isinstance(self.max_wait_ms, (int, float))
              and math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= 60_000
              and isinstance(self.max_queued_seconds, (int, float)) and self.max_queued_seconds > 0)
        if not ok:
            raise LLMSRTError(f"need max_batch (--max-batch) >= 1, max_wait_ms (--max-wait-ms) in 0..60000, "
                              f"max_queue >= 1 and max_queued_seconds (--max-queued-seconds) > 0 (got "
                              f"{self.max_batch}, {self.max_wait_ms}, {self.max_queue}, {self.max_queued_seconds})")


class BusyError(LLMSRTError):
    """The queue is full; the client should retry later."""


class NotStarted(LLMSRTError):
    """The batcher (or the decode pool) is used before its start(): the app's lifespan, which starts them, never ran
    (the app mounted inside another without it). The server's 500, which no retry helps."""

    def __init__(self, message: str = "the server's lifespan did not run, so its batcher and decode pool never "
                 "started: mount the app with its lifespan (e.g. lifespan=app.router.lifespan_context on the outer "
                 "app)"):
        super().__init__(message)  # (made from its message alone, as every LLMSRTError: ranks.from_rank0)


class OverQueueLimit(LLMSRTError):
    """One request's audio alone is more than max_queued_seconds: it could never be queued, so no retry helps (the
    server's 413). `llm-srt serve` refuses a --max-queued-seconds below --max-audio-seconds; an API user may not."""

    def __init__(self, seconds: float, limit: float):
        super().__init__(f"{seconds:.1f} s of audio is more than the {limit:g} s this server queues in all "
                         f"(llm-srt serve --max-queued-seconds {limit:g}); send a shorter file")
        self.seconds, self.limit = seconds, limit


@dataclass(eq=False)  # compared by identity (the queue removes this very request)
class Pending:
    audio: np.ndarray  # 16 kHz mono float32, shape (N,)
    src: str | None
    tgt: str | None
    task: Task
    future: asyncio.Future  # resolves to the TranslationResult
    decoding: DecodingOptions  # how this request decodes (its batch's, shared by every request in it)
    running: bool = False  # in a batch the model thread runs: its audio is held until the batch ends
    left: bool = False  # its submit() has returned or raised (answered, failed, timed out or cancelled)


PREEMPT_DEPTH = 3  # batches run inside a running batch's model calls, one inside another at most this deep
TAKE_SECONDS = 1.0  # how long the model thread waits for the event loop to hand it the waiting requests
FAILING_BATCHES = 3  # batches in a row whose every request failed in the model: the server reports itself failing


def language_id_failed(error: str | None) -> bool:
    """Whether an input with source "auto" failed in language ID: its model has none (LID_MISSING), or Whisper heard
    a language the toolkit does not know (LID_UNKNOWN, e.g. Polish). The client's to fix (name the source language):
    a 400, and no sign of a broken device."""
    return error is not None and (LID_MISSING in error or error.startswith(LID_UNKNOWN))


def same_again(error: str) -> bool:
    """Whether a request that failed whole in the model would fail alike if sent again on this device: one row out of
    GPU memory on its own (ALONE_OUT_OF_MEMORY: a long upload), or the LLM's NaN scores on its audio (BROKEN_SCORES:
    an LLM overflowing its dtype, on this input every time). Its 500 tells a client not to retry (OpenAI's SDKs sent
    it twice more), and it says nothing of a broken device: a restart would not help."""
    return ALONE_OUT_OF_MEMORY in error or BROKEN_SCORES in error


def device_failed(error: str) -> bool:
    """Whether a request that failed whole may have failed for a broken model or device, and so counts towards
    `BatchStats.failing`. Not: its caller left (NOT_RUN), the system said before decoding it cannot run it (CANNOT_RUN),
    language ID failed (`language_id_failed`), or it would fail alike on a working device (`same_again`: a long upload
    out of memory alone, NaN scores on its audio; the other requests still run, and a restart would not help)."""
    return retryable(error) and NOT_RUN not in error and not language_id_failed(error) and not same_again(error)


@dataclass
class BatchStats:
    sizes: Counter = field(default_factory=Counter)  # batch size -> how many translate() calls had it
    failed_in_a_row: int = 0  # the latest batches whose every request failed in the model (none answered in part)
    last_error: str | None = None  # the latest such batch's first error
    device_lost: bool = False  # one of those batches raised DeviceFailed: the GPU failed for the process

    @property
    def calls(self) -> int:
        """translate() calls made."""
        return sum(self.sizes.values())

    @property
    def requests(self) -> int:
        """Requests translated (or failed in the model)."""
        return sum(size * n for size, n in self.sizes.items())

    @property
    def failing(self) -> bool:
        """FAILING_BATCHES batches in a row failed whole in the model, or one raised DeviceFailed (a CUDA error the
        system knows stays until the process ends: every later batch fails too, and waiting for three more failed
        their requests for nothing): the device is likely broken for good, so `/health` answers 503 and an
        orchestrator restarts the server; one batch with an answer ends it."""
        return self.device_lost or self.failed_in_a_row >= FAILING_BATCHES

    def ended(self, results: list) -> None:
        """A batch's results (TranslationResult, or the exception the whole batch raised). Requests that failed
        whole for a reason that says nothing about the device (`device_failed`: a caller gone, a 400, a lone row out
        of memory) count neither way. On the event loop's thread, as are all changes to the stats (`/health` reads
        them there)."""
        ran, failed = 0, []
        for r in results:
            if isinstance(r, Exception):
                ran, failed = ran + 1, failed + [error_line(r)]
            elif not (r.error and not r.kept):
                ran += 1  # answered (in part at least)
            elif device_failed(r.error):
                ran, failed = ran + 1, failed + [r.error]
        if ran and len(failed) == ran:
            self.failed_in_a_row, self.last_error = self.failed_in_a_row + 1, failed[0]
            self.device_lost = self.device_lost or any(isinstance(r, DeviceFailed) for r in results)
        elif ran:
            self.failed_in_a_row, self.last_error, self.device_lost = 0, None, False

    def to_dict(self) -> dict:
        return {"requests": self.requests, "calls": self.calls,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                "failed_batches_in_a_row": self.failed_in_a_row, "last_error": self.last_error}


class Batcher:
    """Queue + collector + one model thread. Use inside a running event loop: `await start()`, `await stop()`."""

    def __init__(self, translator: SpeechTranslator, options: BatchOptions = BatchOptions()):
        self.translator = translator
        self.options = options
        self.stats = BatchStats()
        self._queue: deque[Pending] | None = None  # waiting, oldest first
        self._forming: list[Pending] = []  # taken from the queue for the batch being gathered
        self._arrived: asyncio.Event | None = None  # set when a request is queued
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._held = 0  # samples of the requests submitted and not yet answered
        self._stopping = False  # stop() was called: a batch still running takes no request into it

    @property
    def waiting(self) -> int:
        """Requests whose batch has not started (timed-out or cancelled ones are gone)."""
        if self._queue is None:
            return 0
        return len(self._queue) + sum(not p.future.done() for p in self._forming)

    @property
    def queued_seconds(self) -> float:
        """Seconds of decoded audio held by the requests not yet answered (waiting, or in a batch)."""
        return self._held / SAMPLE_RATE

    async def start(self) -> None:
        self._queue = deque()
        self._forming, self._stopping = [], False  # a lifespan run again (an earlier stop() set it: no preemption)
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm-srt-model")
        # on the model thread, at start: the CUDA runtime keeps the current device per thread
        await self.on_model_thread(make_current, getattr(getattr(self.translator, "system", None), "placement", None))
        self._collector = asyncio.create_task(self._collect(), name="llm-srt-batcher")

    async def on_model_thread(self, fn, *args):
        """`fn(*args)` on the thread every batch runs on (after `start`), e.g. a warm-up whose CUDA graphs the
        requests then replay (torch keeps them per thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def stop(self) -> None:
        self._stopping = True
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        for p in [*(self._queue or ()), *self._forming]:
            if not p.future.done():
                p.future.set_exception(BusyError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, audio: np.ndarray, src: str | None, tgt: str | None, task: Task,
                     decoding: DecodingOptions | None = None) -> TranslationResult:
        """Translate one decoded clip along with whatever else is waiting (and decodes as it does: `decoding`, the
        server's options when None). Cancelling the await (a timeout, a client gone) removes the request from the
        queue at once if its batch has not started yet."""
        if self._queue is None:
            raise NotStarted()
        if self.waiting >= self.options.max_queue:
            raise BusyError(f"{self.waiting} requests are already waiting; retry later")
        limit = self.options.max_queued_seconds * SAMPLE_RATE  # in samples, as uploads.decode_audio cuts them
        if audio.size > limit:  # before, a 503 whenever anything waited: never in on a busy server
            raise OverQueueLimit(audio.size / SAMPLE_RATE, self.options.max_queued_seconds)
        if self._held + audio.size > limit:
            raise BusyError(f"{self.queued_seconds:.0f} s of audio are already waiting (llm-srt serve "
                            f"--max-queued-seconds {self.options.max_queued_seconds:g}); retry later")
        pending = Pending(audio, src, tgt, task, asyncio.get_running_loop().create_future(),
                          decoding or self.options.decoding)
        self._queue.append(pending)
        self._held += audio.size
        self._arrived.set()
        try:
            return await pending.future  # a cancelled await cancels the future too: the collector skips it
        finally:
            pending.left = True
            if not pending.running:  # else the batch lets its audio go when it ends (`_run`)
                self._held -= audio.size
            if pending in self._queue:
                self._queue.remove(pending)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._forming = [self._queue.popleft()]
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                same = next((p for p in self._queue if p.decoding == batch[0].decoding), None)
                if same is not None:  # the next request that decodes as this batch does (others keep their place)
                    self._queue.remove(same)
                    batch.append(same)
                    continue
                if self._queue:  # only requests of other decodings wait: run this batch now, theirs next
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            self._forming = []
            live = [p for p in batch if not p.future.done()]  # timed out or cancelled while gathering
            if live:
                await self._run(loop, live)

    async def _run(self, loop: asyncio.AbstractEventLoop, group: list[Pending]) -> None:
        self._started(group)
        outcome: list | Exception = []
        try:
            outcome = await loop.run_in_executor(self._executor, self._translate, loop, group, 0)
        except Exception as e:  # noqa: BLE001 - one failing batch must not stop the server
            outcome = e
        finally:
            self._finish(group, outcome)

    def _started(self, group: list[Pending]) -> None:
        """On the event loop's thread: `group` goes to the model (its audio is held until `_finish`)."""
        for p in group:
            p.running = True
        self.stats.sizes[len(group)] += 1  # here, not on the model thread: `/health` iterates it on this one

    def _finish(self, group: list[Pending], outcome: list | Exception) -> None:
        """On the event loop's thread: `group`'s batch has ended with `outcome`, its results (None: not run) or the
        exception the whole batch raised."""
        if isinstance(outcome, Exception):
            self.stats.ended([outcome])
            for p in group:
                if not p.future.done():
                    p.future.set_exception(outcome)
        else:
            self.stats.ended([r for r in outcome if r is not None])  # the requests that ran (not cancelled)
        for p in group:
            p.running = False
            if p.left:  # its submit() is gone: its audio is let go here (else there, when it returns)
                self._held -= p.audio.size

    def _translate(self, loop: asyncio.AbstractEventLoop, group: list[Pending], depth: int) -> list:
        """On the model thread: the group through the model, the requests with the least audio first; each request
        is answered as soon as its last segment is back (a short clip batched with a long one does not wait for the
        long one's other segments), and one whose caller has gone runs no further segment. Before each model call,
        shorter requests that arrived meanwhile run first (`_preempt`). The results of the requests that ran.
        The group goes in least audio first (stable), not in arrival order: translate() runs its inputs in groups of
        infer.PENDING_SECONDS of audio in their order, and orders only within a group (a 1 s clip batched behind
        twelve 600 s uploads waited for all of them); `answer` and `cancelled` index this same list."""
        group = sorted(group, key=lambda p: p.audio.size)

        def answer(i: int, result: TranslationResult) -> None:  # as each request is done
            loop.call_soon_threadsafe(_settle, group[i].future, result)

        audio = sum(p.audio.size for p in group)

        def between(left: float) -> None:  # left: the share of the group's audio not yet run (translate's call)
            if depth < PREEMPT_DEPTH:
                self._preempt(loop, left * audio, depth + 1)

        return self.translator.translate([p.audio for p in group], [p.src for p in group], [p.tgt for p in group],
                                         task=[p.task for p in group], options=group[0].decoding,
                                         batch_size=self.options.max_batch, segment_options=self.options.segment,
                                         on_result=answer, shortest_first=True,
                                         cancelled=lambda i: group[i].future.done(),
                                         remember_out_of_memory=False,  # one long request must not shrink later ones
                                         between_batches=between)

    def _preempt(self, loop: asyncio.AbstractEventLoop, left: float, depth: int) -> None:
        """On the model thread, between two model calls of a running batch: the waiting requests with fewer samples
        than `left` (what the running batch has left: its requests' audio times the share of its segments not yet
        run) run now, as a batch of their own (`_take`), and the running batch goes on when they are done. Only
        those: shortest remaining work first, so an upload as long as the batch's rest waits for it, as in a queue
        (one a little shorter than the batch's longest request overtook it, again and again: a review's 27 s request
        ran behind six of 22.5 s), and the batches one inside another get shorter."""
        if not self._queue:  # nothing waits (a deque's length, read from this thread): no trip to the event loop
            return
        taken: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:  # on the event loop's thread
            if taken.set_running_or_notify_cancel():  # not given up on by the model thread
                try:
                    taken.set_result(self._take(left))
                except BaseException as e:  # noqa: BLE001 - handed to the model thread
                    taken.set_exception(e)

        try:
            loop.call_soon_threadsafe(take)
            group = taken.result(TAKE_SECONDS)
        except RuntimeError:  # the event loop is closed: the server is stopping
            return
        except concurrent.futures.TimeoutError:  # the loop is busy: the batch goes on, the requests wait
            if taken.cancel():
                return
            group = taken.result()  # `take` is running: it hands them over at once
        if not group:
            return
        outcome: list | Exception
        try:
            outcome = self._translate(loop, group, depth)
        except Exception as e:  # noqa: BLE001 - it fails these requests, not the batch it interrupted
            outcome = e
        try:
            loop.call_soon_threadsafe(self._finish, group, outcome)
        except RuntimeError:  # the event loop is closed
            pass

    def _take(self, left: float) -> list[Pending]:
        """On the event loop's thread: the requests `_preempt` runs, taken from the queue (at most max_batch, in
        their order, of the first one's decoding, each with fewer than `left` samples); none once the server stops."""
        if self._stopping:
            return []
        shorter = [p for p in self._queue or () if p.audio.size < left and not p.future.done()]
        group = [p for p in shorter if p.decoding == shorter[0].decoding][:self.options.max_batch] if shorter else []
        for p in group:
            self._queue.remove(p)
        if group:
            self._started(group)
        return group


def _settle(future: asyncio.Future, result: TranslationResult) -> None:
    if not future.done():  # not timed out or cancelled meanwhile
        future.set_result(result)
