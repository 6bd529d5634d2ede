"""The batcher on a recording fake translator: mixed batches, limits, failures and dropped (timed-out) requests."""

import asyncio
import threading
from collections import deque

import numpy as np
import pytest
import torch

from llm_srt.errors import LLMSRTError
from llm_srt.infer import TranslationResult
from llm_srt.prompts import Task
from llm_srt.segment import SegmentOptions
from llm_srt.serve.batcher import BatchOptions, Batcher, BusyError, Pending


class Recorder:
    """Answers each clip with its length; records every translate() call as (srcs, tgts, tasks, lengths), one
    value per input."""

    def __init__(self, gate: threading.Event | None = None, fail_first: bool = False):
        self.calls: list[tuple] = []
        self.options: list = []  # each call's DecodingOptions
        self.segments: list = []  # each call's SegmentOptions
        self.gate = gate
        self.fail_first = fail_first

    def translate(self, inputs, src, tgt=None, task=Task.SRT, options=None, batch_size=8, segment_options=None,
                  on_result=None, **_):
        tasks = [Task(t) for t in task]
        self.calls.append((list(src), list(tgt), tasks, [x.size for x in inputs]))
        self.options.append(options)
        self.segments.append(segment_options)
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("model exploded")
        results = [TranslationResult(f"<array {i}>", s, t, k.value, translation=f"n={x.size}")
                   for i, (x, s, t, k) in enumerate(zip(inputs, src, tgt, tasks))]
        for i, r in enumerate(results):
            on_result(i, r)
        return results


def run(coro):
    return asyncio.run(coro)


async def model_called(rec: Recorder, seconds: float = 10.0) -> None:
    """Until the fake model has been called (fails after `seconds`: a call that never comes must not hang)."""
    for _ in range(int(seconds / 0.01)):
        if rec.calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the model was not called within {seconds:g} s")


async def started(translator, **kw) -> Batcher:
    b = Batcher(translator, BatchOptions(**kw))
    await b.start()
    return b


def clips(n: int, start: int = 1000) -> list[np.ndarray]:
    return [np.zeros(start + i, dtype=np.float32) for i in range(n)]


def test_concurrent_requests_share_calls_up_to_max_batch():
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=4, max_wait_ms=200)
        results = await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT) for x in clips(6)))
        await b.stop()
        return rec, b, results

    rec, b, results = run(main())
    assert [len(c[3]) for c in rec.calls] == [4, 2]
    assert rec.segments == [SegmentOptions()] * 2  # the speech cut as translate cuts it by default
    # every caller gets the answer for its own clip, in spite of the grouping
    assert [r.translation for r in results] == [f"n={1000 + i}" for i in range(6)]
    assert b.stats.to_dict() == {"requests": 6, "calls": 2, "batch_sizes": {"2": 1, "4": 1},
                                 "failed_batches_in_a_row": 0, "last_error": None}


def test_every_call_cuts_speech_with_the_servers_segment_options():
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=2, max_wait_ms=200, segment=SegmentOptions(max_seconds=7.0))
        await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT) for x in clips(3)))
        await b.stop()
        return rec

    rec = run(main())
    assert rec.segments == [SegmentOptions(max_seconds=7.0)] * 2


def test_mixed_language_pairs_and_tasks_share_one_call():
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=8, max_wait_ms=200)
        keys = [("eng", "deu", Task.SRT), ("eng", "fra", Task.SRT), ("eng", "deu", Task.SRT),
                ("deu", None, Task.ASR), ("eng", "fra", Task.S2TT)]
        results = await asyncio.gather(*(b.submit(x, *k) for x, k in zip(clips(5), keys)))
        await b.stop()
        return rec, keys, results

    rec, keys, results = run(main())
    [(srcs, tgts, tasks, sizes)] = rec.calls  # no regrouping: each request keeps its own pair and task
    assert list(zip(srcs, tgts, tasks)) == keys and sizes == [1000 + i for i in range(5)]
    assert [(r.src, r.tgt, r.task, r.translation) for r in results] == [
        (s, t, k.value, f"n={1000 + i}") for i, (s, t, k) in enumerate(keys)]


def test_max_batch_one_is_unbatched():
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=1, max_wait_ms=200)
        await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT) for x in clips(5)))
        await b.stop()
        return rec

    assert [len(c[3]) for c in run(main()).calls] == [1] * 5


def test_a_failing_batch_fails_its_requests_only():
    async def main():
        rec = Recorder(fail_first=True)
        b = await started(rec, max_batch=4, max_wait_ms=100)
        first = await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT) for x in clips(3)),
                                     return_exceptions=True)
        later = await b.submit(clips(1)[0], "eng", "deu", Task.SRT)
        await b.stop()
        return first, later

    first, later = run(main())
    assert all(isinstance(e, RuntimeError) and "exploded" in str(e) for e in first)
    assert later.translation == "n=1000"


def test_timed_out_requests_are_dropped_before_their_batch_runs():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = await started(rec, max_batch=4, max_wait_ms=0)
        running = asyncio.create_task(b.submit(np.zeros(10, np.float32), "eng", "deu", Task.SRT))
        await model_called(rec)  # the first batch is now blocked inside the model
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit(np.zeros(20, np.float32), "eng", "deu", Task.SRT), 0.05)
        assert b.waiting == 0  # out of the queue at once, not when the collector next looks
        kept = asyncio.create_task(b.submit(np.zeros(30, np.float32), "eng", "deu", Task.SRT))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(running, kept)
        await b.stop()
        return rec

    assert [c[3] for c in run(main()).calls] == [[10], [30]]


def test_a_request_timed_out_while_its_batch_gathers_is_left_out():
    """A request already taken into a batch that waits for joiners (max_wait_ms) and then timed out must not run:
    the other test covers one that times out while still queued."""
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=4, max_wait_ms=300)
        first = asyncio.create_task(b.submit(np.zeros(10, np.float32), "eng", "deu", Task.SRT))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit(np.zeros(20, np.float32), "eng", "deu", Task.SRT), 0.05)
        await first
        await b.stop()
        return rec

    assert [c[3] for c in run(main()).calls] == [[10]]


def test_a_full_queue_refuses_new_requests():
    async def main():
        gate = threading.Event()
        rec = Recorder(gate=gate)
        b = await started(rec, max_batch=1, max_wait_ms=0, max_queue=2)
        try:
            tasks = [asyncio.create_task(b.submit(clips(1)[0], "eng", "deu", Task.SRT))]
            await model_called(rec)  # one runs (blocked in the model) ...
            tasks += [asyncio.create_task(b.submit(x, "eng", "deu", Task.SRT)) for x in clips(2)]
            await asyncio.sleep(0.05)  # ... and two wait: the queue is full
            with pytest.raises(BusyError, match="2 requests are already waiting"):
                await b.submit(clips(1)[0], "eng", "deu", Task.SRT)
        finally:
            gate.set()
        await asyncio.gather(*tasks)
        await b.stop()
        return rec

    assert len(run(main()).calls) == 3


def test_options_are_checked():
    with pytest.raises(LLMSRTError, match="max_batch"):
        BatchOptions(max_batch=0)


def test_requests_decode_in_batches_of_their_own_decoding():
    """A batch holds requests of one decoding (the first waiting request's); the others keep their place and form
    the next batch; a request that asks for none decodes with the server's options."""
    from llm_srt.model.decoding import DecodingOptions

    server, beam = DecodingOptions(max_new_tokens=16), DecodingOptions(beam_size=3, max_new_tokens=16)

    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=8, max_wait_ms=200, decoding=server)
        asks = [None, beam, None, beam, DecodingOptions(max_new_tokens=16), None]  # the last but one is the server's
        results = await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT, d) for x, d in zip(clips(6), asks)))
        await b.stop()
        return rec, results

    rec, results = run(main())
    assert rec.options == [server, beam]
    assert [c[3] for c in rec.calls] == [[1000, 1002, 1004, 1005], [1001, 1003]]
    assert [r.translation for r in results] == [f"n={1000 + i}" for i in range(6)]


def test_a_batch_does_not_wait_for_more_while_other_decodings_are_ready():
    """Requests of another decoding waiting make the forming batch run at once (theirs next, which may wait its own
    window for joiners): one window in all, not one per decoding."""
    import time

    from llm_srt.model.decoding import DecodingOptions

    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=8, max_wait_ms=2000)
        start = time.perf_counter()
        await asyncio.gather(b.submit(clips(1)[0], "eng", "deu", Task.SRT),
                             b.submit(clips(1)[0], "eng", "deu", Task.SRT, DecodingOptions(beam_size=2)))
        await b.stop()
        return rec, time.perf_counter() - start

    rec, seconds = run(main())
    assert len(rec.calls) == 2 and seconds < 3.0  # the last batch's 2 s window only, not two windows


def test_a_request_is_answered_as_soon_as_its_own_segments_are_done():
    """A short clip batched with a long one: the model thread hands the short one's result back first, and its
    caller has it while the long one still decodes (before, every request of a batch waited for the last)."""
    class Staged(Recorder):
        def translate(self, inputs, src, tgt=None, task=Task.SRT, options=None, batch_size=8, segment_options=None,
                      on_result=None, **_):
            results = [TranslationResult(f"<array {i}>", s, t, Task(k).value, translation=f"n={x.size}")
                       for i, (x, s, t, k) in enumerate(zip(inputs, src, tgt, task))]
            on_result(1, results[1])
            assert self.gate.wait(10)
            on_result(0, results[0])
            return results

    async def main():
        gate = threading.Event()
        b = await started(Staged(gate), max_batch=2, max_wait_ms=200)
        long_clip, short_clip = [asyncio.ensure_future(b.submit(x, "eng", "deu", Task.SRT)) for x in clips(2)]
        short = await asyncio.wait_for(short_clip, 5)
        waiting = not long_clip.done()
        gate.set()
        long = await long_clip
        await b.stop()
        return short, waiting, long

    short, waiting, long = run(main())
    assert short.translation == "n=1001" and waiting and long.translation == "n=1000"


def test_decoded_audio_waiting_beyond_its_cap_is_refused():
    """Requests wait as decoded samples (64 KB a second): besides their number, the seconds of those not yet
    answered are capped, so a busy server's memory does not grow with uploads of silence (a review queued 40 600 s
    uploads: 355 -> 1,827 MB)."""
    async def main():
        gate = threading.Event()
        b = await started(Recorder(gate), max_batch=1, max_wait_ms=0, max_queued_seconds=2.5)
        held = [asyncio.ensure_future(b.submit(np.zeros(16000, np.float32), "eng", "deu", Task.SRT))
                for _ in range(2)]  # the first's batch runs (the model thread blocks on the gate), the second waits
        await asyncio.sleep(0.05)
        seconds = b.queued_seconds
        with pytest.raises(BusyError, match=r"2 s of audio are already waiting \(llm-srt serve --max-queued-seconds"):
            await b.submit(np.zeros(16000, np.float32), "eng", "deu", Task.SRT)
        gate.set()
        await asyncio.gather(*held)
        for _ in range(500):  # an answered request's audio counts until its batch ends, a moment after the answer
            if not b.queued_seconds:
                break
            await asyncio.sleep(0.01)
        left = b.queued_seconds
        await b.stop()
        return seconds, left

    assert run(main()) == (2.0, 0.0)


def test_a_request_over_the_queued_audio_cap_alone_is_refused_for_good_not_asked_to_retry():
    """A request with more audio than max_queued_seconds could never be queued: it was let in when nothing else was
    held and a BusyError ("retry later", the server's 503) when anything was, so on a busy server it never got in.
    Now OverQueueLimit (the server's 413) either way; one exactly at the cap still gets in."""
    from llm_srt.serve.batcher import OverQueueLimit

    async def main():
        gate = threading.Event()
        gate.set()  # nothing holds the model: the first upload meets an idle server
        rec = Recorder(gate)
        b = await started(rec, max_batch=1, max_wait_ms=0, max_queued_seconds=2)
        over = r"^3\.0 s of audio is more than the 2 s this server queues in all \(llm-srt serve --max-queued-seconds 2"
        with pytest.raises(OverQueueLimit, match=over):
            await b.submit(np.zeros(3 * 16000, np.float32), "eng", "deu", Task.SRT)
        gate.clear()
        held = asyncio.ensure_future(b.submit(np.zeros(16000, np.float32), "eng", "deu", Task.SRT))
        await model_called(rec)
        with pytest.raises(OverQueueLimit) as busy:
            await b.submit(np.zeros(3 * 16000, np.float32), "eng", "deu", Task.SRT)
        with pytest.raises(BusyError):  # fits alone: the queue is only full for now
            await b.submit(np.zeros(2 * 16000, np.float32), "eng", "deu", Task.SRT)
        gate.set()
        await held
        for _ in range(500):
            if not b.queued_seconds:
                break
            await asyncio.sleep(0.01)
        at_cap = await b.submit(np.zeros(2 * 16000, np.float32), "eng", "deu", Task.SRT)
        await b.stop()
        return busy.value, at_cap, rec.calls

    busy, at_cap, calls = run(main())
    assert (busy.seconds, busy.limit) == (3.0, 2)
    assert at_cap.translation == "n=32000" and [c[3] for c in calls] == [[16000], [32000]]


def test_a_request_given_up_on_runs_no_further_segment_and_its_audio_counts_until_its_batch_ends():
    """A request that times out in a running batch (a long upload on a slow device): its segments not yet run are
    left out (before, every one ran, and the requests queued behind waited for them), and its audio counts against
    --max-queued-seconds until the batch it is in ends (before, it stopped counting while still in the model)."""
    import time

    from llm_srt.infer import SpeechTranslator
    from llm_srt.model.protocol import Output

    class Slow:
        name, placement = "slow", None

        def __init__(self):
            self.batches = []

        def run_batch(self, items, options):
            self.batches.append(len(items))
            time.sleep(0.5)
            return [Output("t", "tr") for _ in items]

        def detect_language(self, audio):
            return "eng"

    t = np.arange(36 * 16000) / 16000  # eight 1.5 s tones, 3 s apart: eight segments
    talk = np.where((t % 4.5) < 1.5, 0.3 * np.sin(2 * np.pi * 440 * t), 1e-3).astype(np.float32)

    async def main():
        system = Slow()
        b = await started(SpeechTranslator(system), max_batch=2, max_wait_ms=0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit(talk, "eng", "deu", Task.SRT), 0.2)
        held = b.queued_seconds  # in its batch's first model call still
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not b.queued_seconds:
                break
        await asyncio.sleep(0.6)  # time for another model call, if one were made
        await b.stop()
        return system.batches, held, b.queued_seconds

    batches, held, after = run(main())
    assert batches == [2] and held == 36.0 and after == 0.0  # 1 of 4 model calls ran; 6 segments left out


def failed(error: str) -> TranslationResult:
    return TranslationResult("<array 0>", None, "deu", "srt", error=error)


def test_only_failures_that_may_be_the_devices_count_towards_failing():
    """A request the client must fix (language ID: a language the toolkit lacks, a model without it; a system that
    cannot run it), one whose caller left, and one row that ran out of GPU memory on its own (a long upload) count
    neither way: before, each counted as a failed batch, so three of them (one OpenAI call and its two retries) made
    /health answer 503 on a working device. A CUDA error still counts, and an answer ends the run."""
    from llm_srt.infer import ALONE_OUT_OF_MEMORY, NOT_RUN
    from llm_srt.model.protocol import CANNOT_RUN
    from llm_srt.model.decoding import refuse_broken_scores
    from llm_srt.model.systems import TextMTSystem
    from llm_srt.serve.batcher import FAILING_BATCHES, BatchStats

    with pytest.raises(LLMSRTError) as text_mt:  # the text MT system's own words (it has no language ID either)
        TextMTSystem.detect_language(None, np.zeros(16000, np.float32))
    with pytest.raises(LLMSRTError) as nan:  # an LLM overflowing float16 on one clip: NaN there every time
        refuse_broken_scores(torch.full((1, 8), float("nan")), torch.float16)

    cuda = "RuntimeError: CUDA error: an illegal memory access was encountered"
    stats = BatchStats()
    for _ in range(FAILING_BATCHES - 1):
        stats.ended([failed(cuda)])
    for error in ("language ID: Whisper hears pl here, not one of the languages the toolkit knows (deu, eng); give "
                  "the source language (--src), or add it to llm_srt/languages.py",
                  "whisper-x: this Whisper has no language tokens, so it cannot detect the language; give the source "
                  "language (--src)", str(text_mt.value),
                  "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" + ALONE_OUT_OF_MEMORY,
                  "2 of 2 segments failed (the first, 00:00:00.000 to 00:00:29.000: OutOfMemoryError: CUDA out of "
                  "memory. Tried to allocate 2.00 GiB" + ALONE_OUT_OF_MEMORY + ")",
                  f"{CANNOT_RUN}the whisper system translates only into English (eng), not deu", NOT_RUN,
                  str(nan.value), f"2 of 3 segments failed (the first, 00:00:00.000 to 00:00:29.000: {nan.value})"):
        for _ in range(FAILING_BATCHES):
            stats.ended([failed(error)])
        assert (stats.failed_in_a_row, stats.last_error, stats.failing) == (FAILING_BATCHES - 1, cuda, False), error
    stats.ended([failed(cuda)])
    assert stats.failing and stats.last_error == cuda
    stats.ended([failed(cuda), TranslationResult("<array 1>", "eng", "deu", "srt", translation="hallo")])
    assert (stats.failed_in_a_row, stats.failing) == (0, False)


def test_a_batch_the_gpu_failed_for_good_makes_the_server_failing_at_once():
    """DeviceFailed (a CUDA error the system knows stays until the process ends: `infer._run_chunk`) fails every
    later batch too: one such batch is enough to say failing (three were needed, each failing its requests for
    nothing); a batch failed whole for another reason after it keeps it; an answer ends it."""
    from llm_srt.errors import DeviceFailed
    from llm_srt.serve.batcher import BatchStats

    stats = BatchStats()
    stats.ended([failed("RuntimeError: CUDA error: an illegal memory access was encountered")])  # a row's error
    assert not stats.failing
    stats.ended([DeviceFailed("llm-srt: the GPU failed on a batch of 2 (RuntimeError: CUDA error: an illegal memory "
                              "access was encountered)")])
    assert stats.failing and stats.failed_in_a_row == 2 and stats.last_error.startswith("llm-srt: the GPU failed")
    stats.ended([failed("RuntimeError: boom")])
    assert stats.failing
    stats.ended([TranslationResult("<array 0>", "eng", "deu", "srt", translation="hallo")])
    assert not stats.failing and stats.failed_in_a_row == 0


def test_the_stats_change_on_the_event_loops_thread_only():
    """`/health` iterates the batch sizes on the event loop's thread: the model thread once added to them meanwhile
    ("dictionary changed size during iteration" when a new size came). Every change is now made on the loop's
    thread, and the counts stay right."""
    from collections import Counter

    class Watched(Counter):
        def __setitem__(self, key, value):
            threads.add(threading.current_thread().name)
            super().__setitem__(key, value)

    threads: set[str] = set()

    async def main():
        rec = Recorder()
        b = await started(rec, max_batch=4, max_wait_ms=200)
        b.stats.sizes = Watched()
        await asyncio.gather(*(b.submit(x, "eng", "deu", Task.SRT) for x in clips(6)))
        await b.submit(clips(1)[0], "eng", "deu", Task.SRT)
        await b.stop()
        return b.stats.to_dict()

    stats = run(main())
    assert threads == {threading.current_thread().name}  # asyncio.run's loop runs on this thread
    assert stats == {"requests": 7, "calls": 3, "batch_sizes": {"1": 1, "2": 1, "4": 1}, "failed_batches_in_a_row": 0,
                     "last_error": None}


def test_the_model_thread_makes_the_placements_cuda_device_its_current_one(monkeypatch):
    """`serve --device cuda:1`: the model thread made no device current, so what runs on "the current GPU" (CUDA
    graphs of --compile, library handles) went to cuda:0. It now calls torch.cuda.set_device once, at start, on the
    thread every batch runs on (faked here: no GPU needed); a CPU placement calls nothing."""
    import torch

    from llm_srt.device import Placement
    from llm_srt.infer import SpeechTranslator
    from llm_srt.model.protocol import Output

    made: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: made.append((device, threading.current_thread())))

    class OnGPU:
        name = "fake"

        def __init__(self, device: str):
            self.placement = Placement(torch.device(device), torch.float32)
            self.threads = []

        def run_batch(self, items, options):
            self.threads.append(threading.current_thread())
            return [Output("t", "tr") for _ in items]

        def detect_language(self, audio):
            return "eng"

    async def main(system):
        b = await started(SpeechTranslator(system), max_batch=1, max_wait_ms=0)
        await b.submit(np.sin(np.arange(16000, dtype=np.float32) * 0.2) * 0.1, "eng", "deu", Task.SRT)  # a tone
        await b.stop()

    system = OnGPU("cuda:1")
    run(main(system))
    assert made == [(torch.device("cuda:1"), system.threads[0])] and system.threads[0].name.startswith("llm-srt-model")
    made.clear()
    run(main(OnGPU("cpu")))
    assert made == []


class Timed:
    """A system whose every model call takes `seconds` and is recorded as the seconds of audio of its items."""
    name, placement = "timed", None

    def __init__(self, seconds: float = 0.3, fail_below: float = 0.0):
        self.seconds, self.fail_below = seconds, fail_below
        self.calls: list[list[float]] = []

    def run_batch(self, items, options):
        import time

        from llm_srt.model.protocol import Output

        self.calls.append([round(it.audio.size / 16000, 1) for it in items])  # a segment: its speech + 0.1 s
        time.sleep(self.seconds)
        if any(it.audio.size / 16000 < self.fail_below for it in items):
            raise RuntimeError("this batch's model call failed")
        return [Output("t", "tr") for _ in items]

    def detect_language(self, audio):
        return "eng"


def talk(segments: int, seconds: float = 1.5) -> np.ndarray:
    """`segments` tones of `seconds`, 3 s apart: that many speech segments."""
    t = np.arange(int(segments * (seconds + 3) * 16000)) / 16000
    return np.where((t % (seconds + 3)) < seconds, 0.3 * np.sin(2 * np.pi * 440 * t), 1e-3).astype(np.float32)


async def calls_made(system: Timed, n: int) -> None:
    for _ in range(1000):
        if len(system.calls) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(system.calls)} model calls, not {n}")


async def long_then_short(b: Batcher, system: Timed):
    """An 8-segment talk submitted, then, once the model has made its first call, a 1 s clip; the batcher stopped at
    the end. Returns (the clip's result, whether the talk was still running when the clip was answered, the talk's)."""
    long = asyncio.ensure_future(b.submit(talk(8), "eng", "deu", Task.SRT))
    await calls_made(system, 1)
    short = await asyncio.wait_for(b.submit(talk(1, 1.0), "eng", "deu", Task.SRT), 5)
    running = not long.done()
    long = await long
    await b.stop()
    return short, running, long


def test_a_short_request_runs_between_the_model_calls_of_a_long_batch():
    """A review timed a 1 s clip at 26 s behind three 590 s uploads: a batch was one translate() call, and a request
    arriving meanwhile waited for all of it. Now the model thread runs the waiting shorter requests between two
    model calls of the batch: the clip waits for one call, is answered while the long one still runs, and the long
    one loses none of its segments."""
    from llm_srt.infer import SpeechTranslator

    async def main():
        system = Timed()
        b = await started(SpeechTranslator(system), max_batch=2, max_wait_ms=0)
        short, running, long = await long_then_short(b, system)
        return system.calls, short, running, long, b.stats.to_dict()

    calls, short, running, long, stats = run(main())
    assert calls == [[1.6, 1.6], [1.1], [1.6, 1.6], [1.6, 1.6], [1.6, 1.6]] and running
    assert len(short.segments) == 1 and len(long.segments) == 8 and not long.error
    assert stats["calls"] == 2 and stats["batch_sizes"] == {"1": 2}


def test_a_batcher_never_started_says_its_lifespan_did_not_run():
    """Before start() (an app mounted without its lifespan) submit raised a bare RuntimeError, answered as a model
    failure that clients retry; now it is the error the server answers with a 500 that says what to do."""
    from llm_srt.serve.batcher import NotStarted

    b = Batcher(Recorder(), BatchOptions())
    with pytest.raises(NotStarted, match=r"^the server's lifespan did not run.*lifespan_context"):
        run(b.submit(clips(1)[0], "eng", "deu", Task.SRT))


def test_a_batcher_started_again_after_stop_still_runs_short_requests_between_model_calls():
    """A lifespan run twice (a second TestClient, an app served again) stops and starts the batcher: stop() left it
    stopping for good, so no request ever again ran between the model calls of a long batch (`_take` gave none)."""
    from llm_srt.infer import SpeechTranslator

    system = Timed()
    b = Batcher(SpeechTranslator(system), BatchOptions(max_batch=2, max_wait_ms=0))

    async def first():
        await b.start()
        await b.stop()

    async def again():
        await b.start()
        return await long_then_short(b, system)

    run(first())
    short, running, long = run(again())
    assert system.calls == [[1.6, 1.6], [1.1], [1.6, 1.6], [1.6, 1.6], [1.6, 1.6]] and running
    assert len(short.segments) == 1 and len(long.segments) == 8 and not long.error


def test_a_request_as_long_as_the_running_batch_waits_for_it():
    """Only shorter requests run inside a batch: an upload as long as the one running queues behind it (no two
    long uploads take turns), and so does one of another decoding only when it is not shorter."""
    from llm_srt.infer import SpeechTranslator

    async def main():
        system = Timed(0.1)
        b = await started(SpeechTranslator(system), max_batch=2, max_wait_ms=0)
        first = asyncio.ensure_future(b.submit(talk(4), "eng", "deu", Task.SRT))
        await calls_made(system, 1)
        await b.submit(talk(4), "eng", "fra", Task.SRT)
        await first
        await b.stop()
        return system.calls

    assert run(main()) == [[1.6, 1.6], [1.6, 1.6], [1.6, 1.6], [1.6, 1.6]]


def test_a_request_run_inside_a_batch_that_fails_fails_alone():
    """The requests run between a batch's model calls are a batch of their own: if the system fails them, they fail
    (each with its error) and are counted as a failed batch, and the batch they interrupted still answers."""
    from llm_srt.infer import SpeechTranslator

    async def main():
        system = Timed(0.2, fail_below=1.2)
        b = await started(SpeechTranslator(system), max_batch=2, max_wait_ms=0)
        long = asyncio.ensure_future(b.submit(talk(4), "eng", "deu", Task.SRT))
        await calls_made(system, 1)
        short = await asyncio.wait_for(b.submit(talk(1, 1.0), "eng", "deu", Task.SRT), 5)
        long = await long
        for _ in range(500):  # the batch ends a moment after its answer
            if not b.queued_seconds:
                break
            await asyncio.sleep(0.01)
        await b.stop()
        return short, long, b.stats

    short, long, stats = run(main())
    assert short.error and "this batch's model call failed" in short.error
    assert not long.error and len(long.segments) == 4 and stats.calls == 2 and stats.failed_in_a_row == 0


def test_batches_run_one_inside_another_at_most_preempt_depth_deep(monkeypatch):
    """A medium request runs inside a long batch, and a short one inside the medium one; with PREEMPT_DEPTH 1 the
    short one waits for the medium batch, and the long batch makes one model call between two batches run inside it
    (a stream of short requests does not stall it); with 0 nothing runs inside a batch (as before)."""
    from llm_srt.infer import SpeechTranslator
    from llm_srt.serve import batcher

    async def main():
        system = Timed(0.25)
        b = await started(SpeechTranslator(system), max_batch=1, max_wait_ms=0)
        long = asyncio.ensure_future(b.submit(talk(4, 2.0), "eng", "deu", Task.SRT))
        await calls_made(system, 1)
        medium = asyncio.ensure_future(b.submit(talk(3), "eng", "deu", Task.SRT))
        await calls_made(system, 2)
        await b.submit(talk(1, 1.0), "eng", "deu", Task.SRT)
        await asyncio.gather(long, medium)
        await b.stop()
        return system.calls

    assert run(main()) == [[2.1], [1.6], [1.1], [1.6], [1.6], [2.1], [2.1], [2.1]]
    monkeypatch.setattr(batcher, "PREEMPT_DEPTH", 1)  # the short one then runs inside the long batch, which first
    assert run(main()) == [[2.1], [1.6], [1.6], [1.6], [2.1], [1.1], [2.1], [2.1]]  # makes a call of its own
    monkeypatch.setattr(batcher, "PREEMPT_DEPTH", 0)
    assert run(main()) == [[2.1], [2.1], [2.1], [2.1], [1.6], [1.6], [1.6], [1.1]]


def test_requests_are_left_in_the_queue_when_the_event_loop_does_not_hand_them_over(monkeypatch):
    """The model thread waits TAKE_SECONDS for the event loop to hand it the waiting requests; if the loop does not
    answer in time, the batch goes on, and when the loop gets to it later it takes nothing (no request is marked
    running and then never run)."""
    from llm_srt.serve import batcher

    monkeypatch.setattr(batcher, "TAKE_SECONDS", 0.05)
    b = Batcher(Recorder())
    loop = asyncio.new_event_loop()  # not running: its callbacks wait
    try:
        waiting = Pending(np.zeros(100, np.float32), "eng", "deu", Task.SRT, loop.create_future(),
                          b.options.decoding)
        b._queue = deque([waiting])
        b._preempt(loop, 1000, 1)  # gives up after TAKE_SECONDS
        loop.call_soon(loop.stop)
        loop.run_forever()  # now the loop runs the hand-over, which finds it given up
        assert list(b._queue) == [waiting] and not waiting.running and b.stats.calls == 0
    finally:
        loop.close()
    b._preempt(loop, 1000, 1)  # a closed loop: the server is stopping


def test_a_request_a_little_shorter_than_the_running_batch_does_not_overtake_it():
    """Shortest remaining work first: a request runs inside a batch only with less audio than the batch has left
    (a review: with the batch's longest request as the bar, a 27 s request ran behind six of 22.5 s, each let in
    between two of its model calls). 23 s requests wait for a 27 s one that has made one of its six calls."""
    from llm_srt.infer import SpeechTranslator

    async def main():
        system = Timed(0.1)
        b = await started(SpeechTranslator(system), max_batch=1, max_wait_ms=0)
        first = asyncio.ensure_future(b.submit(talk(6), "eng", "deu", Task.SRT))  # 27 s, six segments
        await calls_made(system, 1)
        later = [asyncio.ensure_future(b.submit(talk(5, 1.6), "eng", "deu", Task.SRT)) for _ in range(2)]  # 23 s
        await asyncio.gather(first, *later)
        await b.stop()
        return system.calls

    assert run(main()) == [[1.6]] * 6 + [[1.7]] * 10


def test_a_batch_still_running_after_stop_takes_no_request_into_it():
    """stop() while a batch runs: requests submitted since are not run inside it (a review saw one answered after
    stop)."""
    from llm_srt.infer import SpeechTranslator

    async def main():
        system = Timed(0.2)
        b = await started(SpeechTranslator(system), max_batch=1, max_wait_ms=0)
        asyncio.ensure_future(b.submit(talk(4), "eng", "deu", Task.SRT))
        await calls_made(system, 1)
        b._stopping = True  # as stop() sets it first; the queue is still open to the request below
        late = asyncio.ensure_future(b.submit(talk(1, 1.0), "eng", "deu", Task.SRT))
        await calls_made(system, 4)
        calls = list(system.calls)
        await b.stop()
        late.cancel()
        return calls

    assert run(main())[:4] == [[1.6]] * 4  # not [[1.6], [1.1], [1.6], ...]


def test_a_short_request_batched_behind_long_ones_runs_first_across_translates_groups(monkeypatch):
    """translate() runs its inputs in groups of infer.PENDING_SECONDS of audio, in their order, and orders the
    requests by audio only within a group: a 1 s clip batched behind long uploads that fill a group waited for all
    of them (with the 7200 s of a real server: twelve 600 s uploads ahead of it at --max-batch 16). The batch now goes
    in least audio first; PENDING_SECONDS is lowered to 60 s here so that talks of 45 s and 40.5 s fill a group."""
    import llm_srt.infer as infer
    from llm_srt.infer import SpeechTranslator

    monkeypatch.setattr(infer, "PENDING_SECONDS", 60.0)

    async def main():
        system = Timed(0.01)
        b = await started(SpeechTranslator(system), max_batch=4, max_wait_ms=200)
        answered = []

        async def go(name, audio):
            result = await b.submit(audio, "eng", "deu", Task.SRT)
            answered.append((name, len(result.segments)))

        await asyncio.gather(go("long1", talk(10)), go("long2", talk(9)), go("short", talk(1, 1.0)))
        await b.stop()
        return answered, system.calls, b.stats.to_dict()["batch_sizes"]

    answered, calls, sizes = run(main())
    assert sizes == {"3": 1} and answered[0] == ("short", 1), (answered, calls)  # one batch; the clip answered first
    assert sorted(answered) == [("long1", 10), ("long2", 9), ("short", 1)]  # each answer its own request's
    assert 1.1 in calls[0]  # in the batch's first model call
