"""The server's outer walls: which Hosts and Origins may talk to it, how big a body may be, and how long a client may
take to send its request.

- `HostOriginGuard` (ASGI): a Host header that is not an allowed name gets 421 (DNS rebinding: a page on
  attacker.example whose name now points at this machine still sends `Host: attacker.example`); a POST whose
  `Origin` is neither this server's own origin nor an `--allow-origin` gets 403 (a cross-site form or fetch post).
- `ContentLengthLimit` (ASGI): 413 before reading a body whose Content-Length is over the cap.
- `guarded_protocol(limits)`: uvicorn's h11 protocol with the read timeouts uvicorn lacks (it has a keep-alive
  timeout but none for a request that is never finished): a request head must arrive within `header_timeout_s` of
  the connection (or of the previous response), a body may not pause for more than `read_timeout_s` and must be
  complete within `upload_timeout_s` of its head (a trickle of a byte a second does not hold a socket for ever);
  each answers 408 and closes. Connections beyond `max_connections` get 503 with Retry-After at once. Bytes h11
  cannot parse (a Content-Length of abc, a Transfer-Encoding other than chunked, a request line that is not HTTP) get
  the JSON 400 (431 for a head over h11's limit) where uvicorn answered text/plain, and are closed.
- `hide_paths`: what a client is told names none of the server's folders (the model's, any absolute path).
Every refusal is the API's JSON error {"error": {"message", "type", "param", "code"}} (code: OpenAI's short code,
null where there is none, as OpenAI's own).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol

from ..errors import LLMSRTError
from ..paths import cache_dir

if TYPE_CHECKING:
    from ..infer import SpeechTranslator

log = logging.getLogger("llm_srt.serve")

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    403: "forbidden",
    404: "invalid_request_error",  # OpenAI's type for an unknown route or model (its code: model_not_found)
    405: "invalid_request_error",
    408: "timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    431: "request_header_fields_too_large",
    500: "server_error",
    503: "server_busy",
    504: "timeout",
    507: "insufficient_storage",  # the server's temporary disk is full (uploads.storage_error)
}
RETRY_AFTER_S = 2  # what a 503 asks the client to wait
SERVER_CLOSED = "llm_srt.server_closed"  # set in a request's scope when a timeout here closed its connection
# The OpenAI SDK sends a request again (twice) after a 408 or a 5xx unless told not to: a 504 would be decoded and a
# full disk filled three times over, while a 503 is the one to retry (it comes with Retry-After).
NOT_RETRYABLE = (504, 507)
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # methods a cross-origin page can send without changing anything
DEFAULT_PORTS = {"http": 80, "https": 443}
SERVER_PATH = "<server path>"  # stands for a folder of the server's in what a client is told
_PATH_END = r"\s'\"`:;,()\[\]{}<>"  # what ends a path in a message: spaces, quotes, brackets, :;,
_PART = rf"[^{_PATH_END}/\\]"  # a character of one part of a path
_START = (  # /a/b, /x, ~/a, C:\a\b, C:\x, \a\b, \\host\share\x, file:///a/b; not a URL's //host/x nor eng/deu
    rf"(?<!{re.escape(SERVER_PATH)})(?:file://[^{_PATH_END}]+"  # <server path>/config.json stays one
    rf"|(?<![\w\\])\\{{2,}}{_PART}+(?:\\{_PART}*)+"  # (backslashes doubled: an OSError's repr, 'C:\\x')
    rf"|(?<![\w.~/\\-])(?:(?:~|[A-Za-z]:)?/|[A-Za-z]:\\+){_PART}+(?:[/\\]{_PART}*)*"
    rf"|(?<![\w.~/\\-])~?\\+{_PART}+(?:[/\\]{_PART}*)+)")  # a lone \x may be an escape (\n)
# a path runs on over a space into a word holding a separator ('/srv/my models/x.wav'), but not into a number (1/2,
# 12/05/2026) nor a URL (whose ':' ends the word)
ABSOLUTE_PATH = re.compile(_START + rf"(?: (?![\d./-]+(?:[{_PATH_END}]|$)){_PART}+(?:[/\\]{_PART}*)+)*")
# a quoted path is all the quotes hold, spaces and all (Python's "No such file or directory: '/my models/x'")
QUOTED_PATH = re.compile(rf"(?<!\w)(['\"`]){_START}[^\n]*?\1(?!\w)")
ROOT = re.compile(r"(?:[A-Za-z]:)?[/\\]+")  # /, C:\ : no folder of the server's, the start of every path
UNIT = re.compile(r"(?<=\d )/[A-Za-z]+\.?")  # '3 /s', '12.5 /min': a rate's unit after a number, not a folder
MAX_HEADERS, MAX_HEADER_BYTES = 100, 32 * 1024  # h11 enforces its head limit only on a head that arrives in pieces


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape, "code" included (OpenAI always sends it, null where the error has no short code)."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None, retry: bool | None = None,
                   code: str | None = None) -> JSONResponse:
    """`retry`: whether the same request may succeed if sent again (default: unless the status is NOT_RETRYABLE);
    False answers `x-should-retry: false`, which the OpenAI SDKs obey. `code`: error_body's."""
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    if retry is False or retry is None and status in NOT_RETRYABLE:
        headers = {**(headers or {}), "x-should-retry": "false"}
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def check_number(option: str, value: float, low: float, high: float = math.inf, integer: bool = False) -> None:
    """One-line LLMSRTError naming `option` unless `value` is a finite number (an int if `integer`) in [low, high]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value <= high and (not integer or float(value).is_integer())
    if not ok:
        span = f">= {low:g}" if high == math.inf else f"in {low:g}..{high:g}"
        raise LLMSRTError(f"{option} must be a finite {'integer' if integer else 'number'} {span} "
                          f"(got {value!r})")


# ---- the server's folders, kept from clients -------------------------------------------------------------------------
def model_paths(translator: SpeechTranslator) -> tuple[str, ...]:
    """The folders the served model was loaded from, as its errors may name them, longest first: --model, a
    baseline's Whisper and LLM folders, a speech LLM's encoder and LLM, each as given, absolute and with its links
    followed (as the toolkit writes and loads through them); and the server's own folders (`_own_folders`: its
    cache, temporary, home and current folders) where their name holds a space. A relative one, or one with a
    space, is why this list exists: ABSOLUTE_PATH finds the others, but cannot tell where an unquoted path with a
    space in its last part ends ('/srv/llm srt cache: ...' showed 'srt cache'). A bare name (whisper) is no path."""
    system = getattr(translator, "system", None)  # getattr: anything with translate() may be served (a test's stub)
    config = getattr(getattr(system, "model", None), "config", None)
    found = [getattr(translator, "name", None), getattr(config, "encoder", None), getattr(config, "llm", None)]
    found += [getattr(part, "folder", None) for part in (system, getattr(system, "asr", None),
                                                         getattr(system, "mt", None))]
    paths = set()
    for path in found:
        if isinstance(path, (str, os.PathLike)) and _has_separator(str(path)):
            paths |= _spellings(path)
    for folder in _own_folders():
        paths |= {form for form in _spellings(folder) if any(c.isspace() for c in form)}
    return tuple(sorted(paths, key=len, reverse=True))


def _spellings(path: str | os.PathLike) -> set[str]:
    """`path` as given, normalized, absolute and with its links followed; those that hold a separator (`./model`
    and `srt/` normalize to a word) and are more than a root: `--model ./` started in / made every '/' of a message
    SERVER_PATH ('/srv/x' was sent as '<server path>srv/x', the path's own words in plain sight)."""
    forms = {str(path), os.path.normpath(path), os.path.abspath(os.path.expanduser(path)),
             os.path.realpath(os.path.expanduser(path))}
    forms |= {form.replace("\\", "\\\\") for form in forms}  # as an OSError's message writes it: 'C:\\models'
    return {form for form in forms if _has_separator(form) and not ROOT.fullmatch(form)}


def _own_folders() -> list[str]:
    """The cache, the temporary folder (uploads), the home folder (libraries' caches) and the current folder (where
    relative paths start), as far as they can be known."""
    folders = [tempfile.gettempdir()]
    for where in (cache_dir, Path.home, os.getcwd):
        try:
            folders.append(str(where()))
        except (OSError, RuntimeError, KeyError):  # no home folder, or the current one was removed: none to hide
            pass
    return folders


def _has_separator(path: str) -> bool:
    return any(sep in path for sep in "/\\")


def hide_paths(text: str | None, paths: tuple[str, ...]) -> str | None:
    """`text` for a client: the model's folders (`model_paths`) and any other absolute path as SERVER_PATH. Before,
    an auto source on a model without language ID was a 400 naming the folder of the model's Whisper. A quoted path
    is hidden whole, spaces and all, and an unquoted one runs on over a space into a word with a separator; a unit
    after a number ('3 /s') is no path (it was hidden as one)."""
    if not text:
        return text
    for path in paths:  # whole paths only: `runs/srt` is no part of `old-runs/srt` or `runs/srt2`
        after = "" if path[-1] in "/\\" else r"(?![\w-])"  # `srt/` given: `srt/final` is in it
        text = re.sub(rf"(?<![\w.-]){re.escape(path)}{after}", SERVER_PATH, text)
    text = QUOTED_PATH.sub(lambda m: f"{m[1]}{SERVER_PATH}{m[1]}", text)
    return ABSOLUTE_PATH.sub(lambda m: m[0] if UNIT.fullmatch(text, *m.span()) else SERVER_PATH, text)


# ---- Host and Origin -------------------------------------------------------------------------------------------------
def split_host(value: str) -> tuple[str, int | None] | None:
    """'name:port' / '[v6]:port' / 'name' -> (lower-case name without a trailing dot, port); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:
        name, port = value, ""
    name = name.rstrip(".")
    if not name or any(c.isspace() or c in "/\\@?#" or not c.isprintable() for c in name):
        return None
    if port and not (port.isdigit() and int(port) <= 65535):
        return None
    return name, (int(port) if port else None)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostRule:
    """Which Host header names are answered: the bound address, localhost names, `--allow-host` names ('*' for any,
    '.example.org' or '*.example.org' for a domain and its subdomains), and any IP literal when bound to every
    interface (an IP literal cannot be rebound to another machine by DNS)."""

    bind: str = "127.0.0.1"
    extra: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "extra", tuple(check_allowed_host(h) for h in self.extra))

    @functools.cached_property
    def bind_name(self) -> str:
        """The bound address as `split_host` reads a Host header's name."""
        return self.bind.strip("[]").rstrip(".").lower()

    def allows(self, name: str) -> bool:
        if "*" in self.extra or name in LOCAL_NAMES or name == self.bind_name:
            return True
        if self.bind in WILDCARD_BINDS and is_ip(name):
            return True
        for allowed in self.extra:  # (each as check_allowed_host keeps it: '.domain' or a name)
            if allowed.startswith("."):
                if name.endswith(allowed) or name == allowed[1:]:
                    return True
            elif name == allowed:
                return True
        return False


def check_allowed_host(value: str) -> str:
    """`--allow-host` values: a host name or IP, '*', or '.domain' / '*.domain'; kept as `split_host` reads a Host
    header's name (lower case, no trailing dot, an IPv6 literal without its brackets), so that `allows` matches it:
    '[2001:db8::5]' and 'example.org.' were taken, and every request they named got 421."""
    if value == "*":
        return value
    domain = value.startswith((".", "*."))
    bare = value[2:] if value.startswith("*.") else value[1:] if domain else value
    parsed = split_host(bare)
    if parsed is None or parsed[1] is not None or "*" in bare:
        raise LLMSRTError(f"--allow-host {value!r} is not a host name (e.g. translate.example.org, "
                          "'.example.org' for a domain, '*' for any)")
    return ("." if domain else "") + parsed[0]


def check_allowed_origin(value: str) -> str:
    """`--allow-origin` values: '*' or scheme://host[:port] (a trailing '/' allowed), kept as a browser sends its
    Origin header: lower case, without the scheme's default port, and without a trailing dot on the name, as
    `split_host` keeps --allow-host. https://app.example.org:443 was kept as given, so neither the origin check nor
    CORS ever matched the browser's https://app.example.org: every post got 403 (as did https://app.example.org.)."""
    if value == "*":
        return value
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:  # not a number, or over 65535
        port = -1
    name = (parts.hostname or "").rstrip(".")  # a fully qualified name's dot: the Host check drops it too
    if parts.scheme not in DEFAULT_PORTS or not name or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password or port == -1:
        raise LLMSRTError(f"--allow-origin {value!r} is not an origin; give scheme://host[:port], e.g. "
                          "https://app.example.org, or '*'")
    host = f"[{name}]" if ":" in name else name
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS[parts.scheme]) else "")


def cors_origin_regex(origins: tuple[str, ...]) -> str | None:
    """For CORSMiddleware's allow_origin_regex: the Origin headers that `same_origin` reads as one of `origins` (kept
    by `check_allowed_origin`), which CORS compares as given: a page at https://app.example.org. (a fully qualified
    name) passed the guard, but no preflight or reply named its origin, so its browser read no answer. None for '*'."""
    if not origins or "*" in origins:
        return None
    forms = []
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        host, port = (rest, "") if rest.endswith("]") or ":" not in rest else rest.rsplit(":", 1)
        dot = "" if host.startswith("[") else r"\.?"
        forms.append(f"{re.escape(scheme)}://{re.escape(host)}{dot}"
                     + (f":{port}" if port else f"(?::{DEFAULT_PORTS[scheme]})?"))
    return "(?i)(?:" + "|".join(forms) + ")/?"


def same_origin(origin: str) -> str:
    """An Origin header as `check_allowed_origin` keeps an --allow-origin (lower case, without the scheme's default
    port), so that they compare: a client that writes the port out (https://app.example.org:443, as non-browser
    clients may) got 403 from a server started with --allow-origin https://app.example.org. What is no origin
    ("null", a sandboxed page's) is only lower-cased, and matches no allowed origin."""
    try:
        return check_allowed_origin(origin)
    except LLMSRTError:
        return origin.lower()


def origin_address(origin: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.hostname.rstrip("."), port or DEFAULT_PORTS[parts.scheme]


class HostOriginGuard:
    """ASGI middleware: 400 without a usable Host, 421 for a Host not allowed, 403 for a cross-origin POST."""

    def __init__(self, app, hosts: HostRule, origins: tuple[str, ...] = ()):
        self.app, self.hosts, self.origins = app, hosts, origins

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                return await error_response(*refusal)(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str, str | None] | None:
        if len(scope["headers"]) > MAX_HEADERS or sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            return 431, (f"the request headers are too large (more than {MAX_HEADERS} headers or "
                         f"{MAX_HEADER_BYTES // 1024} KB)"), None
        bad = next((k for k, v in scope["headers"] if any(b < 32 and b != 9 or b == 127 for b in v)), None)
        if bad is not None:
            return 400, f"header {bad[:40].decode('latin-1')!r} holds control characters", None
        headers = [(k, v) for k, v in scope["headers"] if k in (b"host", b"origin")]
        hosts = [v for k, v in headers if k == b"host"]
        origins = [v for k, v in headers if k == b"origin"]
        if len(hosts) != 1 or len(origins) > 1:
            what = "no Host header" if not hosts else "more than one Host or Origin header"
            return 400, f"the request has {what}; send exactly one Host", "host"
        raw_host = hosts[0].decode("latin-1")
        host = split_host(raw_host)
        if host is None:
            return 400, f"malformed Host header {raw_host[:80]!r}", "host"
        if not self.hosts.allows(host[0]):
            return 421, (f"this server does not answer to Host {host[0][:80]!r}; start it with --allow-host "
                         f"{host[0][:80]} if that name is meant to reach it"), "host"
        preflight = scope["method"] == "OPTIONS" and any(k == b"access-control-request-method"
                                                         for k, _ in scope["headers"])
        if scope["method"] in SAFE_METHODS and not preflight or not origins:
            return None
        origin = origins[0].decode("latin-1").rstrip("/")
        if "*" in self.origins or same_origin(origin) in self.origins:
            return None
        scheme = scope.get("scheme", "http")
        own = (host[0], host[1] or DEFAULT_PORTS.get(scheme, 80))
        if origin_address(origin) == own and origin.lower().startswith(f"{scheme}://"):
            return None
        return 403, (f"cross-origin {scope['method']} from {origin[:80]!r} refused; start the server with "
                     f"--allow-origin {origin[:80]} to accept that site's requests"), "origin"


class ContentLengthLimit:
    """ASGI middleware: a JSON 413 before reading a body whose Content-Length is over `max_bytes`. Bodies sent without
    a length (chunked) are counted by the routes' own max_body_size as they arrive."""

    def __init__(self, app, max_bytes: int, message: str):
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            # Under `serve` h11 refuses a Content-Length that is not digits before the app runs (send_400_response
            # answers); this stays for the app under another ASGI server, where int() would fail as a 500.
            if length is not None and not length.strip().isdigit():
                return await error_response(400, f"Content-Length {length[:40].decode('latin-1')!r} is not a "
                                            "number of bytes", "content-length")(scope, receive, send)
            if length is not None and int(length) > self.max_bytes:
                return await error_response(413, self.message, "file")(scope, receive, send)
        return await self.app(scope, receive, send)


# ---- connections: read timeouts and a cap --------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionLimits:
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
    header_timeout_s: float = 10.0  # a request head must be complete this long after the connection (or response)
    read_timeout_s: float = 30.0  # a request body may pause this long between bytes
    upload_timeout_s: float = 300.0  # a request body must be complete this long after its head
    max_connections: int = 128  # open connections beyond this get 503 + Retry-After and are closed

    def __post_init__(self):
        check_number("--keep-alive-s", self.keep_alive_s, 0.01, 3600)
        check_number("--header-timeout-s", self.header_timeout_s, 0.01, 3600)
        check_number("--read-timeout-s", self.read_timeout_s, 0.01, 3600)
        check_number("--upload-timeout-s", self.upload_timeout_s, 0.01, 24 * 3600)
        check_number("--max-connections", self.max_connections, 1, 1_000_000, integer=True)

    def uvicorn_config(self) -> dict:
        """Keyword arguments for uvicorn.run / uvicorn.Config."""
        # uvicorn refuses a request when connections >= limit_concurrency; this connection counts itself
        return {"http": guarded_protocol(self), "timeout_keep_alive": self.keep_alive_s,
                "limit_concurrency": self.max_connections + 1}


def raw_error(status: int, reason: str, message: str, extra_headers: str = "") -> bytes:
    body = json.dumps(error_body(status, message)).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra_headers}connection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a head deadline, a body idle timeout and a connection cap (`limits`), answering
    what h11 cannot parse with the API's JSON error."""

    limits = ConnectionLimits()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._read_timer = None
        self._body_deadline: float | None = None  # loop time by which the body being received must be complete

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("refused a connection: %d open (--max-connections)", len(self.connections) - 1)
            transport.write(raw_error(503, "Service Unavailable", f"more than {self.limits.max_connections} "
                                      "connections are open; retry later", f"retry-after: {RETRY_AFTER_S}\r\n"))
            transport.close()
            return
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def _follow_request(self) -> None:
        """Set our timer for where the request being received stands: its head, its body, or all in."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self._disarm()
        elif state is h11.IDLE:  # a head is arriving: the deadline set when it began still holds
            if self._read_timer is None:
                self._arm(self.limits.header_timeout_s)
        elif state is h11.SEND_BODY:  # the body is arriving: the idle clock restarts with each piece
            if self._body_deadline is None:
                self._body_deadline = self.loop.time() + self.limits.upload_timeout_s
            self._arm(min(self.limits.read_timeout_s, self._body_deadline - self.loop.time()))
        else:  # the whole request is in; the app's own --timeout-s takes over
            self._disarm()
        if state is not h11.SEND_BODY:
            self._body_deadline = None

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer now runs; the next request's first bytes re-arm ours
        self._body_deadline = None
        super().on_response_complete()
        # A request pipelined behind this one was just started from bytes already buffered: no data_received comes
        # for them, and uvicorn cancelled its keep-alive timer when that request began, so time it from here.
        if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
            self._follow_request()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot parse (a Content-Length of abc or -1, two of them, a Transfer-Encoding
        other than chunked, a bad chunk, a request line that is not HTTP) was a text/plain 400 "Invalid HTTP request
        received.", which an OpenAI SDK shows unparsed: the API's JSON error instead, naming what h11 refused, then
        close. uvicorn calls this inside its `except h11.RemoteProtocolError`, so the error is sys.exc_info()'s."""
        error = sys.exc_info()[1]
        detail = str(error) if isinstance(error, h11.RemoteProtocolError) else msg
        detail = re.sub(r"bytearray\((b.*)\)", r"\1", detail)[:200]  # h11 quotes a line as bytearray(b'...')
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # else an answer is already under way: just close
            if getattr(error, "error_status_hint", 400) == 431:  # h11's "Receive buffer too long": a long head
                limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
                self.transport.write(raw_error(431, "Request Header Fields Too Large", "the request head is larger "
                                               f"than {limit // 1024} KB; send fewer or shorter headers"))
            else:
                self.transport.write(raw_error(400, "Bad Request", f"malformed HTTP request: {detail}; send a "
                                               "valid HTTP/1.1 request"))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(max(0.0, seconds), self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self.flow.read_paused:  # the server, not the client, is behind
            return self._arm(self.limits.read_timeout_s)
        if state is h11.IDLE:
            what = "the request head was not complete"
            option = f"{self.limits.header_timeout_s:g} s (--header-timeout-s)"
            started = bool(self.conn.trailing_data[0])
        elif state is h11.SEND_BODY and self.loop.time() >= (self._body_deadline or math.inf) - 0.01:
            what = "the request body was not complete"
            option = f"{self.limits.upload_timeout_s:g} s of its head (--upload-timeout-s)"
            started = True
        elif state is h11.SEND_BODY:
            what, option = "the request body stalled", f"{self.limits.read_timeout_s:g} s (--read-timeout-s)"
            started = True
        else:
            return
        client = "%s:%d" % self.client if self.client else "a client"
        log.warning("closed the connection from %s: %s within %s", client, what, option)
        if state is h11.SEND_BODY and self.cycle is not None:  # the app, reading the body, sees the connection gone:
            self.cycle.scope[SERVER_CLOSED] = what  # the server's doing, not a client that left (serve.handlers)
        if started and (state is h11.IDLE or self.cycle is None or not self.cycle.response_started):
            self.transport.write(raw_error(408, "Request Timeout", f"{what} within {option}; send the whole "
                                           "request at once"))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class bound to `limits`, for uvicorn's `http=`."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
