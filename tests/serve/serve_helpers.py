"""Helpers for the server tests: generated clips and a live uvicorn server on a free loopback port."""

import io
import socket
import struct
import threading
import time
from contextlib import contextmanager

import numpy as np
import soundfile as sf

import tiny
from fastapi.testclient import TestClient
from llm_srt.model.decoding import DecodingOptions

MAX_NEW_TOKENS = 12  # short outputs keep every request to a fraction of a second on the tiny model
DECODING = DecodingOptions(max_new_tokens=MAX_NEW_TOKENS)


def notes(result) -> str | None:
    """The warning a server answer to `result` (the model's own result for its audio) carries: the notes `llm-srt
    translate` prints, on segments without a translation and text cut at its token cap (the tiny model's random
    outputs mostly run to DECODING's cap); None where neither applies."""
    from llm_srt.infer import capped_note, untranslated_note

    return "; ".join(filter(None, [untranslated_note(result), capped_note(result, "max_new_tokens")])) or None


def json_answer(text: str, result) -> dict:
    """response_format json's answer: OpenAI's {"text"}, and "warning" where `notes(result)` has any."""
    note = notes(result)
    return {"text": text, **({"warning": note} if note else {})}


def local_client(app) -> TestClient:
    """A TestClient whose requests carry `Host: localhost` (the server answers localhost names by default)."""
    return TestClient(app, base_url="http://localhost")


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


def _crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
    return c


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8's, up to 21 bits here)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    if n < 0x10000:
        return bytes([0xE0 | n >> 12, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])
    return bytes([0xF0 | n >> 18, 0x80 | n >> 12 & 0x3F, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])


def flac_bomb(seconds: float, rate: int = 192_000, value: int = 1000, say_length: bool = True) -> bytes:
    """A valid mono 16-bit FLAC of `seconds` of a constant value at `rate` Hz, written frame by frame: each frame is
    a CONSTANT subframe of 65,535 samples in 14 bytes, so 4 hours at 192 kHz (11 GB as float32) is ~600 KB.
    `say_length=False`: the header gives no length (0, "unknown"), so only counting while decoding can stop it."""
    block = 65535
    frames = -(-int(seconds * rate) // block)
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    # 1 channel, 16 bit; no MD5
    info += ((rate << 44) | (15 << 36) | (frames * block if say_length else 0)).to_bytes(8, "big") + b"\0" * 16
    out = [b"fLaC", bytes([0x80]) + len(info).to_bytes(3, "big"), info]
    for i in range(frames):
        head = bytes([0xFF, 0xF8, 0x70, 0x00]) + _utf8_number(i) + (block - 1).to_bytes(2, "big")
        frame = head + bytes([_crc8(head), 0x00]) + struct.pack(">h", value)
        out.append(frame + _crc16(frame).to_bytes(2, "big"))
    return b"".join(out)


@contextmanager
def live_server(app, timeout: float = 30.0, limits=None, **config):
    """Run `app` with uvicorn on 127.0.0.1 on a free port in a background thread; yields the base URL.
    `limits`: a serve.guard.ConnectionLimits (timeouts, connection cap) as `llm-srt serve` runs it; `config`: more
    uvicorn.Config arguments (forwarded_allow_ips)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    extra = limits.uvicorn_config() if limits is not None else {}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **extra, **config))
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
