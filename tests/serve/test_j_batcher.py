"""The batcher's figure of what a running batch has left, against which waiting requests are let run ahead of it."""

import asyncio

import numpy as np
import pytest

from llm_srt.infer import SpeechTranslator
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task
from llm_srt.serve.batcher import BatchOptions, Batcher

SR = 16000


class Quick:
    """A system answering at once, recording each model call as its items' seconds."""
    name, placement = "quick", None

    def __init__(self):
        self.calls: list[list[float]] = []

    def run_batch(self, items, options):
        self.calls.append([it.audio.size / SR for it in items])
        return [Output("t", "tr") for _ in items]

    def detect_language(self, audio):
        return "eng"


def talk(segments: int, seconds: float = 1.5) -> np.ndarray:
    """`segments` tones of `seconds`, 3 s apart: that many speech segments (4.5 s of audio each)."""
    t = np.arange(int(segments * (seconds + 3) * SR)) / SR
    return np.where((t % (seconds + 3)) < seconds, 0.3 * np.sin(2 * np.pi * 440 * t), 1e-3).astype(np.float32)


def test_what_a_batch_spanning_translates_groups_has_left_is_its_own_rest(monkeypatch):
    """A batch of more than infer.PENDING_SECONDS of audio (a server with --max-queued-seconds over 7200) runs as
    several of translate()'s groups; the batcher took the share left of the group running times the whole batch's
    audio: after 2 of the 6 segments of the second group's 27 s talk, about 30 s "left" where 18 s were, so a
    waiting 25 s request ran ahead of a batch that would have answered sooner (and in the first group, about 22 s
    where 36 s were left). PENDING_SECONDS is 10 s here: the batch of an 18 s and a 27 s talk runs as two groups,
    two segments a call."""
    import llm_srt.infer as infer

    monkeypatch.setattr(infer, "PENDING_SECONDS", 10.0)
    lefts = []
    monkeypatch.setattr(Batcher, "_preempt", lambda self, loop, left, depth: lefts.append(left / SR))
    system = Quick()

    async def main():
        b = Batcher(SpeechTranslator(system), BatchOptions(max_batch=2, max_wait_ms=500))
        await b.start()
        results = await asyncio.gather(*(b.submit(talk(n), "eng", "deu", Task.SRT) for n in (6, 4)))
        await b.stop()
        return results

    results = asyncio.run(main())
    assert [len(r.segments) for r in results] == [6, 4] and not any(r.error for r in results)
    assert [len(call) for call in system.calls] == [2, 2, 2, 2, 2]  # the 18 s talk's two calls, then the other's
    assert lefts == pytest.approx([36.0, 27.0, 18.0, 9.0], abs=0.3)  # 27: between the groups (test_u_batcher)
