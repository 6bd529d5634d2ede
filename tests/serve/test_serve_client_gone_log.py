"""What the log says about a request nobody reads the answer of, on a real uvicorn server: a client that leaves (while
sending its upload, or while its request waits for the model) gets a line that says 499, as README promises, with
its address and request as uvicorn's access lines give them (uvicorn writes none once the connection is gone)."""

import logging
import socket
import threading
import time

import httpx
from serve_helpers import DECODING, live_server

from llm_srt.serve import BatchOptions, ServeOptions, create_app
from llm_srt.serve.guard import ConnectionLimits

TRANSLATIONS = "/v1/audio/translations"
BOUNDARY = "goneboundary"


def upload_head(port: int, body_bytes: int) -> bytes:
    """A request head and the start of a multipart body announcing `body_bytes` in all."""
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    return (f"POST {TRANSLATIONS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {body_bytes}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + part


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("llm_srt.serve")]


def wait_for_line(caplog, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (found := [line for line in lines(caplog) if needle in line]):
        assert time.monotonic() < deadline, lines(caplog)
        time.sleep(0.02)
    return found[0]


def test_a_client_leaving_mid_upload_is_logged_as_499_with_its_address(translator, caplog):
    """Before: only "/v1/audio/translations: the client disconnected while sending its upload": the app's 499 was
    never written (uvicorn logs no access line once the connection is gone), so grepping for 499 found nothing."""
    app = create_app(translator, ServeOptions(batch=BatchOptions(decoding=DECODING)))
    with caplog.at_level(logging.INFO, logger="llm_srt.serve"), live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(upload_head(port, 1_000_000) + b"\0" * 20_000)
            client = "127.0.0.1:%d" % s.getsockname()[1]
            time.sleep(0.3)  # the app is reading the body
        line = wait_for_line(caplog, client)
    assert line == (f'{client} - "POST {TRANSLATIONS} HTTP/1.1" 499 Client Closed Request: the client '
                    "disconnected while sending its upload"), line


class Gated:
    """A translator whose translate() waits for `gate`: the first request's batch stays inside the model."""

    def __init__(self, inner):
        self.inner, self.gate, self.calls = inner, threading.Event(), 0

    def translate(self, *args, **kwargs):
        self.calls += 1
        assert self.gate.wait(30)
        return self.inner.translate(*args, **kwargs)


def test_a_client_leaving_while_its_request_waits_is_logged_as_499(translator, clip, caplog):
    gated = Gated(translator)
    app = create_app(gated, ServeOptions(batch=BatchOptions(max_batch=4, max_wait_ms=0, decoding=DECODING)))
    with caplog.at_level(logging.INFO, logger="llm_srt.serve"), live_server(app) as url:
        first = threading.Thread(target=httpx.post, args=(url + TRANSLATIONS,), daemon=True,
                                 kwargs={"files": {"file": ("a.wav", clip[1], "audio/wav")}, "timeout": 60})
        first.start()
        try:
            deadline = time.monotonic() + 10
            while not gated.calls:  # the first request is inside the model: the next one waits
                assert time.monotonic() < deadline
                time.sleep(0.01)
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as s:
                tail = f"\r\n--{BOUNDARY}--\r\n".encode()
                head = upload_head(port, 0)
                body_start = head.index(b"\r\n\r\n") + 4
                body = head[body_start:] + clip[1] + tail
                s.sendall(head[:body_start].replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
                          + body)
                client = "127.0.0.1:%d" % s.getsockname()[1]
                deadline = time.monotonic() + 10
                while httpx.get(f"{url}/health").json()["waiting"] != 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            line = wait_for_line(caplog, client)
        finally:
            gated.gate.set()
        first.join(30)
    assert line == (f'{client} - "POST {TRANSLATIONS} HTTP/1.1" 499 Client Closed Request: a.wav: the client '
                    "disconnected; its request was dropped"), line


def test_the_servers_own_408_is_not_logged_as_the_client_leaving(translator, caplog):
    """A body that stalls past --read-timeout-s is answered 408 and closed by the server; the app then saw the
    connection gone and logged "the client disconnected while sending its upload", blaming the client."""
    done = threading.Event()
    app = create_app(translator, ServeOptions(batch=BatchOptions(decoding=DECODING)))

    async def watched(scope, receive, send):  # tells the test when the app is done with the request
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                done.set()

    limits = ConnectionLimits(read_timeout_s=0.5)
    with caplog.at_level(logging.INFO, logger="llm_srt.serve"), live_server(watched, limits=limits) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(upload_head(port, 1_000_000) + b"\0" * 20_000)
            s.settimeout(10)
            reply = s.recv(65536)
            client = "127.0.0.1:%d" % s.getsockname()[1]
            assert reply.startswith(b"HTTP/1.1 408") and b"--read-timeout-s" in reply, reply
            assert done.wait(10), "the app never ended the request"
    said = [line for line in lines(caplog) if client in line or "disconnected" in line]
    assert len(said) == 1 and "closed the connection from" in said[0] and "--read-timeout-s" in said[0], said
