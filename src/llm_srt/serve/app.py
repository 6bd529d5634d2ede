"""`llm-srt serve`: OpenAI-style audio endpoints, a web page and dynamic batching around one loaded model.

    llm-srt serve --model runs/embedded/srt/final --port 8000
    curl -F file=@talk.wav -F source_language=deu -F target_language=eng -F response_format=srt \\
         http://127.0.0.1:8000/v1/audio/translations

POST /v1/audio/translations and /v1/audio/transcriptions take OpenAI's multipart fields (file, model,
response_format = json | text | srt | vtt | verbose_json; `language` is read as the source) plus ours:
source_language / target_language (ISO 639-3; ISO 639-1 and English names are accepted too), task (without it:
what the model folder was trained for, `forms.default_task`), subtitles, and the request's own decoding: beam_size
(1..--max-beam) and max_new_tokens (1..the server's --max-new-tokens).
GET /v1/models (and /v1/models/{id}), /v1/languages, /health, and / (the web page). Every error is JSON
{"error": {"message", "type", "param", "code"}} with a status from ERROR_TYPES; a bad request never stops the server.
An error names none of the server's folders (guard.hide_paths; the log keeps them); a full temporary disk while an
upload is spooled is the server's 507, logged. verbose_json's "language" is OpenAI's lower-case English name
("english") of the text's language (a translation's target), "source_language" the same for the audio's;
timestamp_granularities[] word is a 400 (the model writes no word timings); no field is made up, and none is dropped:
a field sent twice (two files), an unknown one (a misspelling: the 400 names the closest known field; OpenAI's that
this server has no use for are ignored, forms.IGNORED_FIELDS), source_language and language naming two languages,
and a target_language for task asr (which writes no translation) are 400s. An answer given in part (segments that
failed, came back untranslated or were cut at their token cap, an upload that decoded only in part) says so on every
format (responses.with_notes).

Bounded work per request (see guard.py and uploads.py for the walls): an upload cap, a duration cap checked while
decoding, a pool of decode threads, a queue cap, and one deadline (--timeout-s) over decode + queue + model; a
request that times out or whose client disconnects leaves the queue at once.
"""

import errno
import logging
import os
import socket
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from .. import languages, subtitles
from ..errors import DeviceFailed, LLMSRTError, Terminated
from ..infer import (SpeechTranslator, TranslationResult, add_model_arguments, add_segment_argument, capped_note,
                     error_line, MIN_LINE_WIDTH, missing_cue_text, retryable, segment_options, translator_from_args)
from ..model.decoding import decoding_from_args
from ..model.systems import inference_task, system_trained, trained_tasks
from ..prompts import Task
from .batcher import (LID_MISSING, BatchOptions, Batcher, BusyError, NotStarted, OverQueueLimit, language_id_failed,
                      same_again)
from .forms import AUTO, ENDPOINTS, APIError, AudioForm, Endpoint, audio_form, check_fields, check_granularities, \
    check_known, check_single, default_task, parse_task, request_decoding, resolve_language, source_language
from .guard import (ERROR_TYPES, ConnectionLimits, ContentLengthLimit, HostOriginGuard, HostRule,
                    check_allowed_host, check_allowed_origin, check_number, cors_origin_regex, error_response,
                    hide_paths, is_ip, model_paths, split_host)
from .handlers import ClientGone, add_error_handlers, client_gone, too_large_message, until_done
from .logs import show_server_log
from .responses import ERROR_HEADER, RENDERERS, WARNING_HEADER, untranslated_warning, with_notes, without_paths
from .uploads import MAX_AUDIO_SECONDS, MB, DecodePool, UploadError, check_audio_seconds, check_upload
from .warmup import warm_up

__all__ = ["ERROR_TYPES", "ServeOptions", "create_app", "warm_up", "add_arguments", "options_from_args", "main"]

log = logging.getLogger("llm_srt.serve")

FORM_OVERHEAD = 64 * 1024  # bytes allowed on top of the file for the other form fields and multipart boundaries
PAGE = "static/index.html"


@dataclass(frozen=True)
class ServeOptions:
    model_name: str = "llm-srt"  # the id /v1/models reports; requests may name any model (one is loaded)
    max_upload_mb: float = 50.0  # larger uploads get 413
    max_audio_seconds: float = 600.0  # longer audio gets 413; the decoder stops at this length
    max_decodes: int = 2  # uploads decoded at once; batch.max_queue more wait, beyond that 503
    timeout_s: float = 120.0  # a request waiting longer (decode + queue + model) gets 504 and its work is dropped
    hosts: HostRule = HostRule()  # Host headers answered (the rest get 421)
    allow_origins: tuple[str, ...] = ()  # origins whose pages may POST here (CORS), besides the server's own
    max_beam: int | None = None  # the largest beam_size a request may ask for (None: the server's own --beam)
    warm_up: bool = True  # --compile: compile the decode steps before serving (serve/warmup.py)
    line_width: int = subtitles.MAX_LINE_WIDTH  # srt/vtt: columns a line (0: one unwrapped cue a segment)
    batch: BatchOptions = field(default_factory=BatchOptions)  # dynamic batching and decoding

    def __post_init__(self):
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise LLMSRTError(f"--name must be a non-empty model id (got {self.model_name!r})")
        check_number("--max-upload-mb", self.max_upload_mb, 1e-6, 1e6)
        check_audio_seconds(self.max_audio_seconds)
        check_number("--max-decodes", self.max_decodes, 1, 1024, integer=True)
        check_number("--timeout-s", self.timeout_s, 0.001, 7 * 24 * 3600)
        if self.max_beam is not None:
            check_number("--max-beam", self.max_beam, 1, 64, integer=True)
        if self.line_width:
            check_number("--line-width", self.line_width, MIN_LINE_WIDTH, 10_000, integer=True)
        object.__setattr__(self, "allow_origins", tuple(check_allowed_origin(o) for o in self.allow_origins))

    @property
    def beam_limit(self) -> int:
        """The largest beam_size a request may ask for: --max-beam, and never below the server's own --beam."""
        return max(self.max_beam or 1, self.batch.decoding.beam_size)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        """A request's whole body: the file plus the other form fields and the multipart boundaries."""
        return self.max_upload_bytes + FORM_OVERHEAD


# ---- the app --------------------------------------------------------------------------------------------------------
def create_app(translator: SpeechTranslator, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The FastAPI app around `translator`. The batcher starts and stops with the app's lifespan."""
    batcher = Batcher(translator, options.batch)
    paths = model_paths(translator)
    # what the model was trained for, read once (anything with translate() may be served: a test's stub, none)
    trained = system_trained(translator.system) if isinstance(translator, SpeechTranslator) else ()
    decoder = DecodePool(options.max_decodes, options.batch.max_queue, options.max_audio_seconds)

    stopping = threading.Event()  # set when the server is told to stop (main): a warm-up ends at its next batch

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        decoder.start()
        await batcher.start()
        try:
            if options.warm_up and options.batch.decoding.compile:  # before uvicorn listens, on the model's thread
                try:
                    await batcher.on_model_thread(warm_up, translator, options.batch, print, stopping)
                except Exception as e:  # the server starts all the same: requests compile as they come
                    log.warning("--compile: the warm-up failed (%s); serving without it", e)
            yield
        finally:
            await batcher.stop()
            decoder.stop()

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN (blank offline); /openapi.json stays
    app = FastAPI(title="LLM-SRT", summary="Speech recognition and translation with speech LLMs",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.decoder = decoder
    app.state.stopping = stopping
    app.state.options = options
    started = int(time.time())

    for name, endpoint in ENDPOINTS.items():
        app.post(endpoint.path, name=name, max_body_size=options.max_body_bytes,
                 response_class=Response)(_handler(endpoint, batcher, decoder, options, paths, trained))

    html = resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")  # read once, served as is

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return html

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: uptime probes
    async def health() -> JSONResponse:
        failing = batcher.stats.failing  # a device broken for good (a CUDA error): 503, so that it is restarted
        batching = batcher.stats.to_dict()
        if batching.get("last_error"):
            batching["last_error"] = hide_paths(batching["last_error"], paths)
        return JSONResponse(status_code=503 if failing else 200, content={
            "status": "failing" if failing else "ok", "model": options.model_name, "waiting": batcher.waiting,
            "decoding": decoder.pending, "max_batch": options.batch.max_batch, "batching": batching,
            "limits": {"beam_size": options.batch.decoding.beam_size, "max_beam": options.beam_limit,
                       "max_new_tokens": options.batch.decoding.max_new_tokens,
                       "max_segment_seconds": options.batch.segment.max_seconds,
                       "trained_for": inference_task(trained).value}})  # what a request without task runs

    def model_object() -> dict:
        return {"id": options.model_name, "object": "model", "created": started, "owned_by": "llm-srt"}

    @app.api_route("/v1/models", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: uptime probes
    async def models() -> dict:
        """The one model, by --name (default llm-srt), never by its folder: a request's `model` may be anything."""
        return {"object": "list", "data": [model_object()]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def model(model_id: str) -> JSONResponse:
        """OpenAI's retrieve: the object /v1/models lists for --name; any other id is OpenAI's 404 model_not_found."""
        if model_id == options.model_name:
            return JSONResponse(model_object())
        shown = model_id if len(model_id) <= 100 else model_id[:100] + "..."
        return error_response(404, f"model {shown!r} not found: this server serves {options.model_name!r} (see "
                              "GET /v1/models)", "model", code="model_not_found")

    # the schema describes them by a GET-only twin, never reached (the route above answers first, and its 405 names
    # GET and HEAD): FastAPI gave a route's two methods one operation id, a warning in the log at each schema read
    for path, answer in (("/health", health), ("/v1/models", models), ("/v1/models/{model_id:path}", model)):
        app.get(path)(answer)

    @app.get("/v1/languages")
    async def language_list() -> dict:
        return {"object": "list", "default_target": ENDPOINTS["translations"].default_target,
                "data": [{"code": lang.code, "name": lang.name, "script": lang.script}
                         for lang in languages.LANGUAGES.values()]}

    add_error_handlers(app, options)
    app.add_middleware(ContentLengthLimit, max_bytes=options.max_body_bytes,
                       message=too_large_message(options))
    if options.allow_origins:  # browsers may read replies to these origins' pages (and send their preflights)
        app.add_middleware(CORSMiddleware, allow_origins=list(options.allow_origins), allow_methods=["GET", "POST"],
                           allow_origin_regex=cors_origin_regex(options.allow_origins),  # as the guard reads them
                           allow_headers=["*"],  # a page's OpenAI SDK reads x-should-retry and Retry-After
                           expose_headers=[ERROR_HEADER, WARNING_HEADER, "x-should-retry", "Retry-After"])
    app.add_middleware(HostOriginGuard, hosts=options.hosts, origins=options.allow_origins)  # outermost
    return app


def _handler(endpoint: Endpoint, batcher: Batcher, decoder: DecodePool, options: ServeOptions,
             paths: tuple[str, ...], trained: tuple[Task, ...] = ()):
    async def handle(request: Request, form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
        sent = await request.form()  # the form FastAPI parsed for audio_form (Starlette keeps it)
        check_single(sent)
        check_known(sent)
        check_fields(form)
        # the OpenAI SDK's stream=True read a JSON answer as an empty stream, without an error
        if (form.stream or "").strip().lower() not in ("", "false", "0"):
            raise APIError(400, "stream: streamed answers are not supported; leave stream out (or false)", "stream")
        check_granularities(form.timestamp_granularities)
        render = RENDERERS.get(form.response_format)
        if render is None:
            raise APIError(400, f"unknown response_format {form.response_format!r}: use one of "
                           f"{', '.join(RENDERERS)}", "response_format")
        task = parse_task(form.task, endpoint, trained)
        src, src_field = source_language(form, endpoint)
        tgt = None
        if task is Task.ASR and (form.target_language or "").strip():  # was ignored: a 200 with the transcript alone
            raise APIError(400, f"target_language {form.target_language[:40]!r}: task asr writes no translation; "
                           "send task srt for the transcript and its translation, or use /v1/audio/translations",
                           "target_language")
        if task is not Task.ASR:
            tgt = form.target_language or endpoint.default_target
            if tgt is None:
                raise APIError(400, f"task {task.value} needs target_language (ISO 639-3, e.g. deu)",
                               "target_language")
            tgt = resolve_language(tgt, "target_language")
        decoding = request_decoding(form, options)
        cue_mode = form.subtitles or endpoint.text
        if cue_mode not in subtitles.CUE_MODES:
            raise APIError(400, f"unknown subtitles {cue_mode!r}: use one of {', '.join(subtitles.CUE_MODES)}",
                           "subtitles")
        if missing_cue_text(task.value, form.response_format, cue_mode):
            raise APIError(400, f"task {task.value} writes no {cue_mode}, so subtitles {cue_mode} would give "
                           f"{form.response_format} without a cue; use subtitles both, or task srt for both texts",
                           "subtitles")
        try:
            upload, name = check_upload(form.file, options.max_upload_bytes)
        except UploadError as e:
            raise APIError(e.status, e.message, "file") from None

        notes: list[str] = []  # the decoder's warning: the upload decoded only in part

        async def work() -> TranslationResult:
            samples = await decoder.decode(upload, name, notes)
            return await batcher.submit(samples, src, tgt, task, decoding)

        try:
            result = await until_done(request, work(), options.timeout_s)
        except UploadError as e:
            raise APIError(e.status, e.message, "file") from None
        except TimeoutError:
            raise APIError(504, f"no result within {options.timeout_s:g} s (llm-srt serve --timeout-s); the "
                           "server is busy or the audio is long; the request was dropped") from None
        except OverQueueLimit as e:  # no retry would help: not a 503
            raise APIError(413, f"{name}: {e.seconds:.1f} s of audio is more than the {e.limit:g} s this server "
                           f"queues in all (llm-srt serve --max-queued-seconds {e.limit:g}, below its "
                           f"--max-audio-seconds {options.max_audio_seconds:g}); send a shorter file", "file") from None
        except BusyError as e:
            raise APIError(503, str(e)) from None
        except ClientGone:
            return client_gone(request, f"{name}: the client disconnected; its request was dropped")
        except NotStarted as e:  # the operator's to fix (before, "the model failed: AttributeError", retried twice)
            log.error("%s", e)
            raise APIError(500, str(e), retry=False) from None
        except Exception as e:  # noqa: BLE001 - the model failed on this batch; the server goes on
            if getattr(e, "llm_srt_logged", False):  # each request of the batch gets it: its traceback once
                log.error("%s: the model failed (the traceback is above): %s", name, error_line(e))
            else:
                e.llm_srt_logged = True
                log.exception("%s: translate failed", name)
            # the GPU failed for the process (DeviceFailed): it fails again until a restart (/health says failing)
            line = error_line(e).removeprefix(f"{type(e).__name__}: ")  # one line, its type named below
            raise APIError(500, hide_paths(f"the model failed: {type(e).__name__}: {line}", paths),
                           retry=False if isinstance(e, DeviceFailed) else None) from None
        if result.error:  # the whole error for the operator (the server's folders too); the client's copy hides them
            log.log(logging.WARNING if retryable(result.error) else logging.INFO, "%s: %s", name, result.error)
            result = without_paths(result, paths)
        if result.error and not result.kept:  # failed whole (one that failed in part answers with the rest)
            if src == AUTO and language_id_failed(result.error):  # the client's to fix: name the language
                reason = language_id_reason(result.error)
                if LID_MISSING in result.error:  # the request asked for what this model cannot do
                    raise APIError(400, f"{src_field} auto: this model cannot detect the language ({reason}); give "
                                   f"{src_field} (e.g. eng, en or English)", src_field)
                raise APIError(400, f"{src_field} auto: language ID heard a language this server does not know "
                               f"({reason}); if the audio is in one it knows (GET /v1/languages), give it as "
                               f"{src_field} (e.g. eng, en or English)", src_field)
            if not retryable(result.error):  # asked for what this system cannot do (CANNOT_RUN: whisper into
                raise APIError(400, result.error)  # German), in every segment (`infer.segments_error`)
            raise APIError(500, result.error, "file", retry=not same_again(result.error))
        # the decoder's warning (decoded in part; the log has it whole), then `translate`'s notes (each was a plain 200)
        said = [*notes[:1], *filter(None, [untranslated_warning(result, endpoint, form.response_format, cue_mode),
                                           capped_note(result, "max_new_tokens")])]
        warning = hide_paths("; ".join(said), paths) if said else None
        return with_notes(render(result, endpoint, cue_mode, options.line_width, warning), result.error, warning)

    handle.__name__ = f"{endpoint.openai_task}_audio"
    return handle


def language_id_reason(error: str) -> str:
    """A system's language-ID error without its advice ("; give the source language (--src ...)"), which is for the
    command line: an HTTP client gets the server's own, naming its request's field."""
    return error.split("; give ", 1)[0]


# ---- CLI: llm-srt serve ---------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_segment_argument(parser)
    net = ConnectionLimits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=8, help="most requests in one model call (1 = no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="how long a request waits for others to join its batch")
    parser.add_argument("--max-queued-seconds", type=float, default=BatchOptions.max_queued_seconds,
                        help="decoded audio waiting for the model beyond this many seconds gets 503 (each second "
                             "holds 64 KB of samples); at least --max-audio-seconds")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="larger uploads get 413")
    parser.add_argument("--max-audio-seconds", type=float, default=ServeOptions.max_audio_seconds,
                        help="longer audio gets 413 (the decoder stops there: a compressed bomb never fills memory); "
                             f"at most {MAX_AUDIO_SECONDS:g}, the most the model reads of one input")
    parser.add_argument("--max-decodes", type=int, default=ServeOptions.max_decodes,
                        help="uploads decoded at once; more wait (up to the queue size, then 503)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="a request not answered within this (decode + queue + model) gets 504 and is dropped")
    parser.add_argument("--keep-alive-s", type=float, default=net.keep_alive_s,
                        help="idle keep-alive connections are closed after this")
    parser.add_argument("--header-timeout-s", type=float, default=net.header_timeout_s,
                        help="a request's headers must arrive within this (else 408 and the connection closes)")
    parser.add_argument("--read-timeout-s", type=float, default=net.read_timeout_s,
                        help="an upload may pause this long between bytes (else 408 and the connection closes)")
    parser.add_argument("--upload-timeout-s", type=float, default=net.upload_timeout_s,
                        help="an upload must be complete this long after its headers (else 408)")
    parser.add_argument("--max-connections", type=int, default=net.max_connections,
                        help="open connections beyond this get 503 with Retry-After")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host is NAME ('.example.org': a domain and its subdomains; "
                             "'*': any); by default only the --host address and localhost names (DNS rebinding)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="let pages from ORIGIN (scheme://host[:port], or '*') post here and read the replies; "
                             "other cross-origin posts get 403")
    parser.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                        help="behind a reverse proxy that ends HTTPS: the proxy's addresses (comma-separated, or '*'), "
                             "whose X-Forwarded-Proto / X-Forwarded-For this server believes, so that the page's own "
                             "posts from https://NAME pass the origin check (default: uvicorn's, 127.0.0.1 or "
                             "$FORWARDED_ALLOW_IPS)")
    parser.add_argument("--name", default="llm-srt", help="the model id /v1/models reports")
    parser.add_argument("--line-width", type=int, default=subtitles.MAX_LINE_WIDTH, metavar="COLUMNS",
                        help="srt/vtt answers: lines of at most this many columns, two a cue, a long segment cut "
                             "into several cues (default %(default)s; 0: one unwrapped cue a segment)")
    parser.add_argument("--max-beam", type=int, default=None,
                        help="the largest beam_size a request may ask for (default: --beam, so a greedy server stays "
                             "greedy unless raised; a request's max_new_tokens may not exceed --max-new-tokens)")


def check_bind(host: str, port: int) -> None:
    check_number("--port", port, 0, 65535, integer=True)
    parsed = split_host(host) if host and ":" not in host else None
    if not (is_ip(host) or parsed is not None and parsed[1] is None):
        raise LLMSRTError(f"--host {host!r} is not an address or host name (e.g. 127.0.0.1, 0.0.0.0, ::1)")


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """The sockets uvicorn would open for --host/--port (asyncio's create_server: one for each address the host
    resolves to, SO_REUSEADDR, IPv6 ones IPv6 only), bound before the model loads: a port in use is a one-line
    error now, not uvicorn's once a model has loaded for minutes, and no other server takes the port meanwhile.
    Bound, not listening: until uvicorn listens (after any --compile warm-up) a client is refused, as before.
    --port 0 on a host of several addresses: the port picked on the first may be taken on another: picked again."""
    attempts = 0
    while True:
        attempts += 1
        sockets: list[socket.socket] = []
        picked = port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, _, where in dict.fromkeys(infos):
                sockets.append(sock := socket.socket(family, kind, proto))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port the last run left in TIME_WAIT
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((where[0], picked, *where[2:]))
                picked = sock.getsockname()[1]  # --port 0: the port picked, for the host's other addresses too
                # held: a bound socket that is not listening shares its port with any other that binds with reuse
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)  # (Server.startup sets it back)
            return sockets
        except OSError as e:
            for sock in sockets:
                sock.close()
            if port == 0 and e.errno == errno.EADDRINUSE and attempts < 5:
                continue
            hint = ("another program uses it? choose another --port" if e.errno == errno.EADDRINUSE
                    else "check --host and --port")
            raise LLMSRTError(f"cannot listen on {address(host, picked)} ({e.strerror or e}); {hint}") from None


def options_from_args(args) -> ServeOptions:
    """ServeOptions from the command line; every value checked (one-line LLMSRTError) before any model loads."""
    check_bind(args.host, args.port)
    check_number("--beam", args.beam, 1, 64, integer=True)
    check_number("--max-new-tokens", args.max_new_tokens, 1, 1 << 20, integer=True)
    decoding = decoding_from_args(args)
    batch = BatchOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, decoding=decoding,
                         max_queued_seconds=args.max_queued_seconds, segment=segment_options(args.max_segment_seconds))
    hosts = HostRule(args.host, tuple(check_allowed_host(h) for h in args.allow_host))
    options = ServeOptions(model_name=args.name, max_upload_mb=args.max_upload_mb, max_beam=args.max_beam,
                           max_audio_seconds=args.max_audio_seconds, max_decodes=args.max_decodes,
                           timeout_s=args.timeout_s, hosts=hosts,
                           allow_origins=tuple(check_allowed_origin(o) for o in args.allow_origin), batch=batch,
                           line_width=args.line_width)
    queued, longest = options.batch.max_queued_seconds, options.max_audio_seconds
    if queued < longest:  # an upload between the two could never be queued (it was a 503 whenever any audio waited)
        raise LLMSRTError(f"--max-queued-seconds {queued:g} is below --max-audio-seconds {longest:g}, so "
                          f"an upload that long could never be queued; raise --max-queued-seconds to at least "
                          f"{longest:g} or lower --max-audio-seconds")
    return options


def limits_from_args(args) -> ConnectionLimits:
    return ConnectionLimits(keep_alive_s=args.keep_alive_s, header_timeout_s=args.header_timeout_s,
                            read_timeout_s=args.read_timeout_s, upload_timeout_s=args.upload_timeout_s,
                            max_connections=args.max_connections)


def auto_tasks_line(model: str, trained: tuple[Task, ...]) -> str | None:
    """The start-up line on what a request without task runs where the model's training changed it from srt on
    translations and asr on transcriptions (`forms.default_task`); None where it did not."""
    said = []
    for endpoint in ENDPOINTS.values():
        try:
            task = default_task(endpoint, trained)
        except APIError:
            said.append(f"is refused on {endpoint.path} (the model writes no {endpoint.text})")
            continue
        if task is not endpoint.tasks[0]:
            said.append(f"runs {task.value} on {endpoint.path}")
    return (f"llm-srt serve: a request without task {' and '.join(said)}: {model} was trained for "
            f"{inference_task(trained).value} (its training record)" if said else None)


def check_servable(model: str) -> None:
    """`--model mt` refused before it loads (it answered every request 500, then reported itself failing)."""
    if str(model) == "mt":
        raise LLMSRTError("--model mt: the text MT system translates given transcripts, and serve takes audio; serve a "
                          "model folder, whisper, or cascade (Whisper ASR, then the same LLM's text MT)")


def main(args) -> int:
    check_servable(args.model)
    options, limits = options_from_args(args), limits_from_args(args)  # bad options stop here, before the model
    trained_tasks(args.model)  # and so does a train_config.json that cannot be read
    sockets = bind_sockets(args.host, args.port)  # and so does a port in use
    try:
        return run_server(args, options, limits, sockets)
    finally:  # also after Ctrl-C, SIGTERM or an error while the model loads
        for sock in sockets:
            sock.close()


def run_server(args, options: ServeOptions, limits: ConnectionLimits, sockets: list[socket.socket]) -> int:
    import uvicorn

    show_server_log()
    translator = translator_from_args(args)
    app = create_app(translator, options)
    port = sockets[0].getsockname()[1]  # --port 0: the one picked
    print(f"llm-srt serve: {args.model} ({translator.system.placement}) on http://{address(args.host, port)}/ "
          f"(max batch {options.batch.max_batch}, wait {options.batch.max_wait_ms:g} ms"
          + (", listening once the --compile warm-up is done" if options.batch.decoding.compile else "") + ")",
          flush=True)
    if (line := auto_tasks_line(args.model, system_trained(translator.system))) is not None:
        print(line, flush=True)

    class Server(uvicorn.Server):  # uvicorn reads its stop signals only after start-up: a warm-up must hear them too
        def handle_exit(self, sig, frame) -> None:
            stopping.set()
            super().handle_exit(sig, frame)
            # A second Ctrl-C: gone now. In the --compile warm-up uvicorn would act on it only once start-up ends
            # (minutes to compile); once serving, it raised the signal again inside asyncio.run, which cancelled
            # every request in flight with its connection open: Starlette's text/plain 500 for each, and tracebacks.
            if self.force_exit:
                exit_at_once(len(self.server_state.tasks))

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            for sock in sockets or []:  # as uvicorn's own listening sockets (bind_sockets held the port without)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await super().startup(sockets=sockets)
            # uvicorn says where it listens only on sockets it opened itself (a private method of 0.54, as pinned)
            if self.started and sockets and hasattr(self, "_log_started_message"):
                self._log_started_message(sockets)

    stopping = app.state.stopping
    proxy = {} if args.forwarded_allow_ips is None else {"forwarded_allow_ips": args.forwarded_allow_ips}
    server = Server(uvicorn.Config(app, host=args.host, port=port, log_level="info", proxy_headers=True,
                                   **proxy, **limits.uvicorn_config()))
    try:
        server.run(sockets=sockets)  # after a signal uvicorn raises it again once shut down (Ctrl-C: KeyboardInterrupt)
    except Terminated:  # systemd, `docker stop`, Kubernetes: shut down cleanly, 0 (systemd took 143 for a failure)
        if stopping.is_set():  # (a SIGTERM before serving began stays 143)
            return 0
        raise
    return 0


def exit_at_once(in_flight: int = 0) -> None:
    """Gone now with 130, from the signal handler, not once the batch inside the model is done (the interpreter
    would wait for the model thread at exit, minutes for a large batch): the requests in flight get no answer, their
    connections closed with the process, as README says."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # closed, or a write this signal interrupted (reentrant)
            pass
    dropped = (f"; {in_flight} request{'s' if in_flight != 1 else ''} in flight get{'' if in_flight != 1 else 's'} "
               f"no answer ({'their connections are' if in_flight != 1 else 'its connection is'} closed)"
               if in_flight else "")
    try:
        os.write(2, f"llm-srt serve: Ctrl-C again: exiting now{dropped}\n".encode())
    except OSError:
        pass
    os._exit(130)
