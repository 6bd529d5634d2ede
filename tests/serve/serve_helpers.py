"""Helpers for the server tests: generated clips and a live uvicorn server on a free loopback port."""

import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import soundfile as sf

import tiny
from llm_srt.model.decoding import DecodingOptions

MAX_NEW_TOKENS = 12  # short outputs keep every request to a fraction of a second on the tiny model
DECODING = DecodingOptions(max_new_tokens=MAX_NEW_TOKENS)


def wav_bytes(samples: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def bursts(seconds: float, sr: int = 16000) -> np.ndarray:
    """Long audio: 1.5 s tones separated by 1 s of silence (the segmenter splits at the pauses)."""
    parts, i = [], 0
    while sum(p.size for p in parts) < seconds * sr:
        parts += [tiny.tone(1.5, 300 + 40 * (i % 7), seed=i), np.zeros(sr, dtype=np.float32)]
        i += 1
    return np.concatenate(parts)[: int(seconds * sr)]


@contextmanager
def live_server(app, timeout: float = 30.0):
    """Run `app` with uvicorn on 127.0.0.1 on a free port in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
