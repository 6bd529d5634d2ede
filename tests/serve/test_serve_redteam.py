"""Red team of the server, through real sockets against a live uvicorn with `llm-srt serve`'s protocol and limits:
hostile headers, methods, sizes, hosts, origins, JSON shapes, form fields and slow clients, plus bad options.
Each case must get a clean 4xx (JSON {"error": ...}, bytes that are not HTTP too), log no traceback, answer within a
bounded time, and leave the server serving."""

import argparse
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serve_helpers import DECODING, flac_bomb, live_server, wav_bytes

from llm_srt.errors import LLMSRTError
from llm_srt.serve import BatchOptions, ServeOptions, create_app
from llm_srt.serve import app as serve_app
from llm_srt.serve.guard import ERROR_TYPES, ConnectionLimits, HostRule

T = "/v1/audio/translations"
LIMITS = ConnectionLimits(keep_alive_s=0.5, header_timeout_s=0.6, read_timeout_s=0.6, upload_timeout_s=1.2,
                          max_connections=6)
BOUNDARY = "redteamboundary"


class Records(logging.Handler):
    """Every record of uvicorn's and the server's loggers; a traceback or an ERROR is a finding."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def findings(self, start: int = 0) -> list[str]:
        return [f"{r.levelname} {r.getMessage()}" for r in self.records[start:]
                if r.exc_info or r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def records():
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "llm_srt.serve")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


def opts(**kw) -> ServeOptions:
    return ServeOptions(max_upload_mb=1, max_audio_seconds=5, timeout_s=30,
                        batch=BatchOptions(max_batch=4, max_wait_ms=0, decoding=DECODING), **kw)


@pytest.fixture(scope="module")
def servers(translator, records):
    """{"default": port (bound 127.0.0.1, no extra hosts or origins), "open": port (as if bound to 0.0.0.0, with
    --allow-host .example.org and --allow-origin https://app.example.org)}"""
    open_opts = opts(hosts=HostRule("0.0.0.0", (".Example.org",)), allow_origins=("https://App.example.org",))
    with live_server(create_app(translator, opts()), limits=LIMITS) as default, \
            live_server(create_app(translator, open_opts), limits=LIMITS) as wide:
        yield {"default": int(default.rsplit(":", 1)[1]), "open": int(wide.rsplit(":", 1)[1])}


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def exchange(port: int, data: bytes, timeout: float = 10.0, pause: float = 0.0) -> tuple[int | None, dict, bytes]:
    """Send raw bytes, read until the server closes; (status, headers, body). `pause`: wait before reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # refused before the whole body went out
            pass
        time.sleep(pause)
        got = read_until_closed(s)
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return status, headers, body


def http(method: str = "POST", path: str = T, headers: dict | None = None, body: bytes = b"", host: str | None = "",
         length: bool = True, version: str = "HTTP/1.1") -> bytes:
    """A raw request; host "" = 127.0.0.1:{port} filled in later, None = no Host header."""
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host or '127.0.0.1:{port}'}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if length and body and not any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def form(*parts) -> bytes:
    """multipart/form-data body; a part is (name, text) or (name, (filename, bytes, media type))."""
    out = b""
    for name, value in parts:
        if isinstance(value, tuple):
            filename, data, media = value
            out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {media}\r\n\r\n").encode("latin-1") + data + b"\r\n"
        else:
            out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode() + \
                value.encode("utf-8", "surrogateescape") + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
CLIP = wav_bytes((0.3 * np.sin(np.arange(16000) * 0.1)).astype(np.float32))
FILE = ("file", ("clip.wav", CLIP, "audio/wav"))
EVIL = "https://evil.example"


def post(*parts, headers=None, **kw) -> bytes:
    return http(headers={**MULTIPART, **(headers or {})}, body=form(*parts), **kw)


def chunked(body: bytes, piece: int = 100_000) -> bytes:
    return b"".join(f"{len(body[i:i + piece]):x}\r\n".encode() + body[i:i + piece] + b"\r\n"
                    for i in range(0, len(body), piece)) + b"0\r\n\r\n"


# name -> (class, server, request, expected status(es), the error's param or a part of its message, or None)
CASES = {
    # hosts (DNS rebinding)
    "host: a rebinding name": ("hosts", "default", http("GET", "/health", host="evil.example"), 421, "host"),
    "host: rebinding name with port": ("hosts", "default", post(FILE, host="evil.example:8000"), 421, "host"),
    "host: 127.0.0.1 as a subdomain": ("hosts", "default", http("GET", "/", host="127.0.0.1.evil.example"), 421,
                                       "host"),
    "host: missing (HTTP/1.0)": ("hosts", "default", http("GET", "/health", host=None, version="HTTP/1.0"), 400,
                                 "host"),
    "host: two Host headers": ("hosts", "default", http("GET", "/health", headers={"Host": "evil.example"}), 400,
                               None),
    "host: userinfo trick": ("hosts", "default", http("GET", "/health", host="evil.example@127.0.0.1"), 400, "host"),
    "host: bad port": ("hosts", "default", http("GET", "/health", host="127.0.0.1:99999"), 400, "host"),
    "host: another IP literal on a loopback bind": ("hosts", "default", http("GET", "/health", host="10.0.0.1"),
                                                    421, "host"),
    "host: not under an allowed domain": ("hosts", "open", http("GET", "/health", host="evilexample.org"), 421,
                                          "host"),
    "host: allowed domain's subdomain (ok)": ("hosts", "open", http("GET", "/health", host="a.example.org"), 200,
                                              None),
    "host: IP literal on a wildcard bind (ok)": ("hosts", "open", http("GET", "/health", host="10.1.2.3:80"), 200,
                                                 None),
    "host: localhost. with port (ok)": ("hosts", "default", http("GET", "/health", host="localhost.:1"), 200, None),
    "host: [::1] (ok)": ("hosts", "default", http("GET", "/health", host="[::1]:8000"), 200, None),
    # origins (cross-site posts)
    "origin: cross-site multipart post": ("origins", "default", post(FILE, headers={"Origin": EVIL}), 403, "origin"),
    "origin: cross-site urlencoded form": ("origins", "default", http(
        headers={"Origin": EVIL, "Content-Type": "application/x-www-form-urlencoded"}, body=b"a=b"), 403, "origin"),
    "origin: cross-site text/plain": ("origins", "default", http(
        headers={"Origin": EVIL, "Content-Type": "text/plain"}, body=b"x"), 403, "origin"),
    "origin: null (sandboxed page)": ("origins", "default", post(FILE, headers={"Origin": "null"}), 403, "origin"),
    "origin: same host, other port": ("origins", "default", post(FILE, headers={"Origin": "http://127.0.0.1:1"}),
                                      403, "origin"),
    "origin: same host and port, https": ("origins", "default", post(
        FILE, headers={"Origin": "https://127.0.0.1:{port}"}), 403, "origin"),
    "origin: localhost page to 127.0.0.1": ("origins", "default", post(
        FILE, headers={"Origin": "http://localhost:{port}"}), 403, "origin"),
    "origin: two Origin headers": ("origins", "default", post(  # a whole form: only the guard refuses it
        FILE, ("source_language", "eng"), headers={"Origin": "http://127.0.0.1:{port}", "origin": EVIL}), 400,
        "more than one Host or Origin header"),
    "origin: cross-site PUT": ("origins", "default", http("PUT", headers={"Origin": EVIL}, body=b"x"), 403, "origin"),
    "origin: allowed origin, preflight from another": ("origins", "open", http("OPTIONS", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST"}), 403, "origin"),
    "origin: not an allowed origin": ("origins", "open", post(FILE, headers={"Origin": "https://app.example.org.evil"},
                                                              host="a.example.org"), 403, "origin"),
    # methods
    "method: PUT": ("methods", "default", http("PUT", body=b"x"), 405, None),
    "method: DELETE": ("methods", "default", http("DELETE"), 405, None),
    "method: PATCH": ("methods", "default", http("PATCH", body=b"{}"), 405, None),
    "method: TRACE": ("methods", "default", http("TRACE", "/"), 405, None),
    "method: made up": ("methods", "default", http("BREW", "/"), 405, None),
    "method: lower-case post": ("methods", "default", http("post", body=b"x"), 405, None),
    "method: GET on the endpoint": ("methods", "default", http("GET"), 405, None),
    "method: OPTIONS without CORS": ("methods", "default", http("OPTIONS"), 405, None),
    "method: CONNECT": ("methods", "default", http("CONNECT", "127.0.0.1:22"), (400, 404, 405), None),
    "method: absolute URL to elsewhere": ("methods", "default", http("GET", "http://evil.example/health"),
                                          (400, 404, 421), None),
    "method: pipelined after a GET": ("methods", "default", http("GET", "/health").replace(
        b"Connection: close\r\n", b"") + http("PUT", body=b"x"), 200, None),
    # headers
    "header: 100 KB header line": ("headers", "default", http("GET", "/health", headers={"X-Big": "a" * 100_000}),
                                   (400, 431), None),
    "header: Content-Length not a number": ("headers", "default", http(headers={"Content-Length": "abc"}), 400,
                                            "Content-Length"),
    "header: negative Content-Length": ("headers", "default", http(headers={"Content-Length": "-5"}), 400,
                                        "Content-Length"),
    "header: two Content-Lengths": ("headers", "default", http(headers={"Content-Length": "1", "content-length": "2"},
                                                               body=b"x"), 400, "Content-Length"),
    "header: Content-Length and chunked": ("headers", "default", http(
        headers={"Content-Length": "3", "Transfer-Encoding": "chunked"}, body=b"0\r\n\r\n"), 400, None),
    "header: unknown Transfer-Encoding": ("headers", "default", http(headers={"Transfer-Encoding": "gzip"},
                                                                     body=b"x"), 400, "Transfer-Encoding"),
    "header: control character in a value": ("headers", "default", http("GET", "/health",
                                                                        headers={"X-A": "a\x01b"}), 400, None),
    "header: not HTTP at all": ("headers", "default", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
                                400, None),
    "header: multipart without boundary": ("headers", "default", http(
        headers={"Content-Type": "multipart/form-data"}, body=form(FILE)), 400, None),
    "header: HTTP/2 preface": ("headers", "default", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, None),
    "header: space in the path": ("headers", "default", b"GET /he alth HTTP/1.1\r\nHost: localhost\r\n\r\n", 400,
                                  None),
    "header: bad chunk size": ("headers", "default", http(headers={**MULTIPART, "Transfer-Encoding": "chunked"},
                                                          body=b"zz\r\nabc\r\n0\r\n\r\n"), 400, None),
    "header: multipart boundary of 5,000 chars": ("headers", "default", http(
        headers={"Content-Type": "multipart/form-data; boundary=" + "b" * 5000}, body=b"x"), 400, None),
    "header: raw audio body, no form": ("headers", "default", http(headers={"Content-Type": "audio/wav"}, body=CLIP),
                                        400, "file"),
    "header: 10,000 headers": ("headers", "default", http("GET", "/health", headers={f"X-{i}": "1" for i in
                                                                                     range(10_000)}), (400, 431), None),
    # sizes
    "size: Content-Length over the cap": ("sizes", "default", http(headers={**MULTIPART, "Content-Length": str(10**9)}),
                                          413, "file"),
    "size: chunked upload over the cap": ("sizes", "default", http(
        headers={**MULTIPART, "Transfer-Encoding": "chunked"},
        body=chunked(form(("file", ("big.wav", b"\0" * 1_200_000, "audio/wav"))))), 413, None),
    "size: audio over --max-audio-seconds": ("sizes", "default", post(
        ("file", ("long.wav", wav_bytes(np.zeros(6 * 16000, np.float32)), "audio/wav"))), 413,
        "--max-audio-seconds"),
    "size: 5,000 form fields": ("sizes", "default", post(*[(f"f{i}", "x") for i in range(5000)], FILE), 400, None),
    "size: a 64 KB language field": ("sizes", "default", post(("source_language", "e" * 65536), FILE), 400,
                                     "source_language"),
    "size: 50 KB file name": ("sizes", "default", post(("file", ("a" * 50_000 + ".wav", b"RIFF", "audio/wav"))),
                              (400, 413, 415), None),
    "size: 100 KB URL": ("sizes", "default", http("GET", "/" + "a" * 100_000), 404, None),
    "size: Expect 100-continue over the cap": ("sizes", "default", http(
        headers={**MULTIPART, "Content-Length": str(10**8), "Expect": "100-continue"}), 413, "file"),
    "size: 1 h FLAC bomb at 768 kHz (40 KB)": ("sizes", "default", post(
        ("file", ("b.flac", flac_bomb(3600, rate=768_000), "audio/flac")), ("source_language", "eng")), 413,
        "--max-audio-seconds"),
    "size: FLAC bomb whose header gives no length": ("sizes", "default", post(
        ("file", ("b.flac", flac_bomb(600, rate=768_000, say_length=False), "audio/flac")),
        ("source_language", "eng")), 413, "--max-audio-seconds"),
    "size: empty file part": ("sizes", "default", post(("file", ("e.wav", b"", "audio/wav")), ("source_language",
                                                                                              "eng")), 400, "empty"),
    "size: empty body": ("sizes", "default", http(headers={**MULTIPART, "Content-Length": "0"}), 400, "file"),
    # JSON shapes
    "json: an object naming a file": ("json", "default", http(headers={"Content-Type": "application/json"},
                                                              body=json.dumps({"file": "a.wav"}).encode()), 400,
                                      "file"),
    "json: an array": ("json", "default", http(headers={"Content-Type": "application/json"}, body=b"[1,2]"), 400,
                       None),
    "json: not JSON": ("json", "default", http(headers={"Content-Type": "application/json"}, body=b"{"), 400, None),
    "json: 100k nested arrays": ("json", "default", http(headers={"Content-Type": "application/json"},
                                                         body=b"[" * 100_000 + b"]" * 100_000), 400, None),
    "json: no Content-Type": ("json", "default", http(body=b'{"file": 1}'), 400, None),
    # form fields
    "form: file sent as a text field": ("form", "default", post(("file", "not a file")), 400, "file"),
    "form: no file part": ("form", "default", post(("source_language", "eng")), 400, "file"),
    "form: html as the file": ("form", "default", post(("file", ("x.html", b"<html>", "text/html"))), 415, "file"),
    "form: random bytes as audio": ("form", "default", post(("file", ("r.wav", bytes(range(256)) * 20, "audio/wav"))),
                                    415, "file"),
    "form: a second, broken file part": ("form", "default", post(FILE, ("file", ("b.wav", b"junk", "audio/wav")),
                                                                 ("source_language", "eng")), 400, "file"),
    "form: a second file part": ("form", "default", post(FILE, FILE, ("source_language", "eng")), 400, "file"),
    "form: target_language on transcriptions' asr": ("form", "default", post(
        FILE, ("language", "eng"), ("target_language", "zz"), path="/v1/audio/transcriptions"), 400,
        "target_language"),
    "form: look-alike Cyrillic language code": ("form", "default", post(FILE, ("source_language", "\u0435ng")), 400,
                                                "source_language"),
    "form: utf-16 charset on the form": ("form", "default", http(
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}; charset=utf-16"}, body=form(FILE)), 400,
        None),
    "form: NaN samples": ("form", "default", post(("file", ("n.wav", wav_bytes(np.full(1600, np.inf, np.float32),
                                                                               subtype="FLOAT"), "audio/wav"))), 400,
                          "NaN"),
    "form: NUL in a language": ("form", "default", post(("source_language", "en\x00g"), FILE), 400,
                                "source_language"),
    "form: non-UTF-8 field": ("form", "default", post(("target_language", "d\udce9u"), FILE), 400, None),
    "form: unknown response_format": ("form", "default", post(("response_format", "pdf"), FILE), 400,
                                      "response_format"),
    "form: task mt on translations": ("form", "default", post(("task", "mt"), FILE), 400, "task"),
    "form: truncated multipart": ("form", "default", http(headers=MULTIPART, body=form(FILE)[:-30]), 400, None),
    "form: wrong boundary": ("form", "default", http(headers={"Content-Type": "multipart/form-data; boundary=zz"},
                                                     body=form(FILE)), 400, None),
    "form: header injection in the file name": ("form", "default", post(
        ("file", ('a.wav"\r\nX-Injected: 1', CLIP, "audio/wav")), ("source_language", "eng")), (200, 400), None),
    "form: auto source on a model without language ID": ("form", "default", post(FILE), 400, "source_language"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_request(servers, records, case):
    _cls, server, raw, expected, needle = CASES[case]
    port = servers[server]
    raw = raw.replace(b"{port}", str(port).encode())
    before = len(records.records)
    t0 = time.monotonic()
    status, headers, body = exchange(port, raw)
    assert time.monotonic() - t0 < 10
    assert status in (expected if isinstance(expected, tuple) else (expected,)), (status, body[:300])
    assert b"Traceback" not in body and b"Internal Server Error" not in body
    if status >= 400:  # JSON, whatever refused it: h11 (bytes that are not HTTP), a guard, or the endpoint
        assert headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
        err = json.JSONDecoder().raw_decode(body.decode())[0]["error"]  # (a 400 for bytes pipelined after may follow)
        assert "\n" not in err["message"] and len(err["message"]) < 600, err
        assert err["type"] == ERROR_TYPES[status], err
        if needle:
            assert err["param"] == needle or needle in err["message"], err
    assert records.findings(before) == []
    ok = exchange(port, http("GET", "/health").replace(b"{port}", str(port).encode()))
    assert ok[0] == 200 and json.loads(ok[2])["status"] == "ok"  # still serving


MALFORMED = {  # name -> (request h11 cannot parse, status, what the message must name)
    "Content-Length: abc": (http(headers={"Content-Length": "abc"}), 400, "bad Content-Length"),
    "Transfer-Encoding: gzip": (http(headers={"Transfer-Encoding": "gzip"}, body=b"x"), 400, "Transfer-Encoding"),
    "a request line that is not HTTP": (b"HELLO\r\n\r\n", 400, "illegal request line: b'HELLO'"),
    "a head over h11's 16 KB, still arriving": (b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * 20_000,
                                                 431, "larger than 16 KB"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_http_gets_the_json_error(servers, records, case):
    """h11 refuses these before the app sees them; uvicorn answered text/plain "Invalid HTTP request received.",
    which an OpenAI SDK shows unparsed. Now the API's JSON error (GuardedH11Protocol.send_400_response), then close."""
    raw, status, needle = MALFORMED[case]
    port = servers["default"]
    got, headers, body = exchange(port, raw.replace(b"{port}", str(port).encode()))
    assert got == status and headers["content-type"] == "application/json", (headers, body[:300])
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    err = json.loads(body)["error"]
    assert err["type"] == ERROR_TYPES[status] and needle in err["message"], err
    assert status != 400 or err["type"] == "invalid_request_error"
    assert records.findings() == []


def test_allowed_origin_gets_cors_and_same_origin_posts_work(servers, records):
    port = servers["open"]
    status, headers, body = exchange(port, post(FILE, ("source_language", "eng"), host="a.example.org",
                                                headers={"Origin": "https://app.example.org"}))
    assert status == 200 and "text" in json.loads(body)
    assert headers["access-control-allow-origin"] == "https://app.example.org"
    status, headers, _ = exchange(port, http("OPTIONS", host="a.example.org", headers={
        "Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}))
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.org"  # its preflight
    port = servers["default"]
    own = post(FILE, ("source_language", "eng"), headers={"Origin": f"http://127.0.0.1:{port}"})
    status, _, body = exchange(port, own.replace(b"{port}", str(port).encode()))
    assert status == 200 and "text" in json.loads(body)  # the server's own page posts from its own origin
    assert records.findings() == []


# ---- slow clients ---------------------------------------------------------------------------------------------------
def timed(port: int, parts: list[bytes], gap: float = 0.0) -> tuple[float, bytes]:
    """Send `parts` with `gap` seconds between them, then read until the server closes; (seconds, reply)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for p in parts:
                s.sendall(p)
                time.sleep(gap)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = read_until_closed(s)
    return time.monotonic() - t0, got


SLOW = {  # name -> (parts, gap between them, the option a 408 names; None: closed without a reply)
    "an idle connection": ([], 0.0, None),
    "a half-sent head": ([b"POST /v1/audio/translations HTTP/1.1\r\nHost: 127.0.0.1\r\n"], 0.0,
                         b"--header-timeout-s"),
    "a head sent one byte per 0.2 s": ([bytes([c]) for c in b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"],
                                       0.2, b"--header-timeout-s"),
    "a body that stalls": ([f"POST {T} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {MULTIPART['Content-Type']}"
                            f"\r\nContent-Length: 100000\r\n\r\n--{BOUNDARY}".encode()], 0.0, b"--read-timeout-s"),
    "a body trickled a byte per 0.3 s": ([f"POST {T} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
                                          f"Content-Type: {MULTIPART['Content-Type']}\r\n\r\n--{BOUNDARY}\r\n"
                                          'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                                          .encode()] + [b"\0"] * 12, 0.3, b"--upload-timeout-s"),
}


def test_slow_clients_are_cut_off(servers, records):
    """All at once (each waits out a timeout): each is closed within its limit, with a 408 naming the option."""
    port = servers["default"]
    with ThreadPoolExecutor(len(SLOW)) as pool:
        results = dict(zip(SLOW, pool.map(lambda c: timed(port, SLOW[c][0], SLOW[c][1]), SLOW)))
    for case, (seconds, reply) in results.items():
        option = SLOW[case][2]
        assert seconds < 3.0, (case, seconds)  # 0.6-1.2 s limits; never held open
        if option is None:
            assert reply == b"", (case, reply[:200])
        else:
            assert reply.startswith(b"HTTP/1.1 408") and b'"type": "timeout"' in reply and option in reply, \
                (case, reply[:300])
    ok = exchange(port, http("GET", "/health").replace(b"{port}", str(port).encode()))
    assert ok[0] == 200 and records.findings() == []


PIPELINED = {  # what follows `GET /health` in the same packet -> the option a 408 names (None: may close silently)
    "a body that stalls": (f"POST {T} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {MULTIPART['Content-Type']}\r\n"
                           f"Content-Length: 100000\r\n\r\n--{BOUNDARY}".encode(), b"--read-timeout-s"),
    "a half-sent head": (f"POST {T} HTTP/1.1\r\nHost: localhost\r\n".encode(), None),
}


@pytest.mark.parametrize("case", PIPELINED)
def test_a_pipelined_slow_request_is_cut_off(servers, records, case):
    """uvicorn starts a request pipelined behind another from on_response_complete, with no data_received: before,
    a stalled body there held the connection open for ever (no read timer, and uvicorn's keep-alive cancelled)."""
    rest, option = PIPELINED[case]
    seconds, reply = timed(servers["default"], [b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n" + rest])
    assert seconds < 3.0, (case, seconds)  # 0.5-1.2 s limits
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    second = reply[reply.find(b"HTTP/1.1", 1):] if reply.count(b"HTTP/1.1 ") > 1 else b""
    if option is not None or second:
        assert second.startswith(b"HTTP/1.1 408") and (option or b"timeout-s") in second, (case, reply[-300:])
    assert records.findings() == []


def test_idle_keep_alive_is_closed_and_connections_are_capped(servers, records):
    port = servers["default"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        t0 = time.monotonic()
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert got.startswith(b"HTTP/1.1 200") and time.monotonic() - t0 < 3  # closed after --keep-alive-s
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.1)
        status, headers, body = exchange(port, http("GET", "/health").replace(b"{port}", str(port).encode()))
        assert status == 503 and headers["retry-after"] == "2" and b"connections are open" in body, body
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert exchange(port, http("GET", "/health").replace(b"{port}", str(port).encode()))[0] == 200


# ---- options --------------------------------------------------------------------------------------------------------
BAD_OPTIONS = [  # (arguments, the option the one-line error must name)
    (["--max-upload-mb", "nan"], "--max-upload-mb"), (["--max-upload-mb", "inf"], "--max-upload-mb"),
    (["--max-upload-mb", "0"], "--max-upload-mb"), (["--timeout-s", "nan"], "--timeout-s"),
    (["--timeout-s", "-1"], "--timeout-s"), (["--max-audio-seconds", "inf"], "--max-audio-seconds"),
    (["--max-audio-seconds", "0"], "--max-audio-seconds"), (["--max-decodes", "0"], "--max-decodes"),
    (["--max-wait-ms", "nan"], "--max-wait-ms"), (["--max-wait-ms", "-5"], "--max-wait-ms"),
    (["--max-batch", "0"], "--max-batch"), (["--keep-alive-s", "nan"], "--keep-alive-s"),
    (["--header-timeout-s", "0"], "--header-timeout-s"), (["--read-timeout-s", "inf"], "--read-timeout-s"),
    (["--upload-timeout-s", "nan"], "--upload-timeout-s"),
    (["--max-connections", "0"], "--max-connections"), (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"), (["--host", "not a host"], "--host"), (["--host", ""], "--host"),
    (["--allow-host", "a b"], "--allow-host"), (["--allow-host", "evil.example:80"], "--allow-host"),
    (["--allow-origin", "app.example.org"], "--allow-origin"),
    (["--allow-origin", "https://app.example.org/path"], "--allow-origin"), (["--beam", "0"], "--beam"),
    (["--max-new-tokens", "0"], "--max-new-tokens"), (["--name", " "], "--name"),
    (["--max-queued-seconds", "300"], "--max-queued-seconds 300 is below --max-audio-seconds 600"),
    (["--model", "mt"], "--model mt: the text MT system translates given transcripts, and serve takes audio"),
]


@pytest.mark.parametrize("argv,option", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_stop_before_the_model_loads(argv, option, monkeypatch):
    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    args = parser.parse_args(["--model", "no/such/model", *argv])
    monkeypatch.setattr(serve_app, "translator_from_args", lambda a: pytest.fail("the model was loaded"))
    with pytest.raises(LLMSRTError) as e:
        serve_app.main(args)
    assert option in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not str(e.value).startswith("serve:")  # the CLI adds "llm-srt serve: error: " (it read "... serve: serve:")


def test_a_queue_cap_below_the_audio_cap_is_refused_at_start():
    """An upload longer than --max-queued-seconds but within --max-audio-seconds could never be queued: it was a 503
    "retry later" whenever any audio waited. Such options now stop `serve` with one line naming both; the defaults
    (3600 s and 600 s) and equal caps pass."""
    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)

    def options(*argv):
        return serve_app.options_from_args(parser.parse_args(["--model", "no/such/model", *argv]))

    assert (options().batch.max_queued_seconds, options().max_audio_seconds) == (3600, 600)
    assert options("--max-queued-seconds", "60", "--max-audio-seconds", "60").batch.max_queued_seconds == 60
    with pytest.raises(LLMSRTError) as e:
        options("--max-queued-seconds", "60", "--max-audio-seconds", "120.5")
    assert str(e.value) == ("--max-queued-seconds 60 is below --max-audio-seconds 120.5, so an upload that "
                            "long could never be queued; raise --max-queued-seconds to at least 120.5 or lower "
                            "--max-audio-seconds")


def test_an_audio_cap_over_what_the_model_reads_of_one_input_is_refused_at_start(capsys):
    """--max-audio-seconds took up to 24 h, but translate() reads each decoded upload again through load_audio, which
    refuses an input over audio.MAX_SECONDS_DEFAULT (4 h): a 4.5 h upload was decoded, then answered 500, and three
    in a row made /health "failing" (an orchestrator restarts a healthy server). `serve` now stops at once, exit 2,
    with one line naming the cap; the cap itself is taken."""
    from llm_srt import cli
    from llm_srt.audio import MAX_SECONDS_DEFAULT, load_audio
    from llm_srt.errors import AudioOverLimit

    with pytest.raises(AudioOverLimit):  # what a longer upload met in translate() (zeros: no memory touched)
        load_audio(np.zeros(int(MAX_SECONDS_DEFAULT + 1) * 16000, dtype=np.float32))
    longest = ServeOptions(max_audio_seconds=MAX_SECONDS_DEFAULT, batch=BatchOptions(max_queued_seconds=6 * 3600))
    assert longest.max_audio_seconds == MAX_SECONDS_DEFAULT
    rc = cli.main(["serve", "--model", "no/such/model", "--max-audio-seconds", "16200", "--max-queued-seconds", "20000"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--max-audio-seconds 16200 is over {MAX_SECONDS_DEFAULT:g} (" in err, err


def test_a_sigtermed_server_that_shuts_down_cleanly_exits_0(model_dir, tmp_path):
    """systemd, `docker stop` and Kubernetes stop a server with SIGTERM: uvicorn shut down cleanly, then the process
    exited 143, which systemd counts as a failure (a unit with Restart=on-failure came back). It exits 0."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llm_srt.cli", "serve", "--model", str(model_dir), "--port", "0",
                                 "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not re.search(r"running on http://127\.0\.0\.1:\d+", log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        proc.kill()
        proc.wait(10)
    assert "Finished server process" in log.read_text() and "Traceback" not in log.read_text()
