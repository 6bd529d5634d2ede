"""A short request that arrives while a server's batch runs, where the batch spans translate()'s groups (a server
with --max-queued-seconds over infer.PENDING_SECONDS)."""

import asyncio

import numpy as np

from llm_srt.infer import SpeechTranslator
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task
from llm_srt.serve.batcher import BatchOptions, Batcher

SR = 16000


def talk(segments: int, seconds: float = 1.5) -> np.ndarray:
    """`segments` tones of `seconds`, 3 s apart: that many speech segments (4.5 s of audio each)."""
    t = np.arange(int(segments * (seconds + 3) * SR)) / SR
    return np.where((t % (seconds + 3)) < seconds, 0.3 * np.sin(2 * np.pi * 440 * t), 1e-3).astype(np.float32)


class Arriving:
    """A system that, during its first model call, has a short request queued on the server (and waits until it is
    in the queue, so the test does not race the event loop); each call is logged as its items' audio in seconds."""
    name, placement = "arriving", None

    def __init__(self):
        self.calls: list[list[float]] = []
        self.batcher: Batcher | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.short: list[asyncio.Task] = []

    def run_batch(self, items, options):
        self.calls.append([round(it.audio.size / SR, 1) for it in items])
        if len(self.calls) == 1:
            async def arrive():
                self.short.append(asyncio.create_task(self.batcher.submit(talk(1), "eng", "deu", Task.SRT)))
                while not self.batcher.waiting:
                    await asyncio.sleep(0)
            asyncio.run_coroutine_threadsafe(arrive(), self.loop).result(5)
        return [Output("t", "tr") for _ in items]

    def detect_language(self, audio):
        return "eng"


def test_a_short_request_runs_where_one_group_of_the_running_batch_ends_and_the_next_begins(monkeypatch):
    """A batch of an 18 s and a 27 s talk, PENDING_SECONDS 10 s: two groups, the first one model call (4 segments),
    the second two. A 4.5 s request arriving during the first call waited for the second group's first call too:
    the model thread looked for waiting requests only between two calls of one group. It now runs at the boundary."""
    import llm_srt.infer as infer

    monkeypatch.setattr(infer, "PENDING_SECONDS", 10.0)
    system = Arriving()

    async def main():
        system.loop = asyncio.get_running_loop()
        system.batcher = b = Batcher(SpeechTranslator(system), BatchOptions(max_batch=4, max_wait_ms=500))
        await b.start()
        long = await asyncio.gather(*(b.submit(talk(n), "eng", "deu", Task.SRT) for n in (6, 4)))
        short = await system.short[0]
        await b.stop()
        return long, short

    long, short = asyncio.run(main())
    assert [len(r.segments) for r in long] == [6, 4] and not any(r.error for r in long) and short.error is None
    assert [len(call) for call in system.calls] == [4, 1, 4, 2]  # the 18 s talk, the short one, the 27 s talk
