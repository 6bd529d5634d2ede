"""`llm-srt serve`: OpenAI-style audio endpoints, a web page and dynamic batching around one loaded model.

    llm-srt serve --model runs/embedded/srt/final --port 8000
    curl -F file=@talk.wav -F source_language=deu -F target_language=eng -F response_format=srt \\
         http://127.0.0.1:8000/v1/audio/translations

POST /v1/audio/translations and /v1/audio/transcriptions take OpenAI's multipart fields (file, model,
response_format = json | text | srt | vtt | verbose_json; `language` is read as the source) plus ours:
source_language / target_language (ISO 639-3; ISO 639-1 and English names are accepted too), task and subtitles.
GET /v1/models, /v1/languages, /health, and / (the web page). Every error is JSON
{"error": {"message", "type", "param"}} with a status from ERROR_TYPES; a bad request never stops the server.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import languages, subtitles
from ..audio import load_audio
from ..errors import AudioError, LLMSRTError, UndecodableAudio
from ..infer import SpeechTranslator, TranslationResult, add_model_arguments, translator_from_args
from ..model.decoding import DecodingOptions
from ..prompts import Task
from .batcher import BatchOptions, Batcher, BusyError

log = logging.getLogger("llm_srt.serve")

MB = 1024 * 1024
FORM_OVERHEAD = 64 * 1024  # bytes allowed on top of the file for the other form fields and multipart boundaries
AUTO = "auto"  # source language "auto": Whisper's language ID picks it per clip
AUDIO_MEDIA_PREFIXES = ("audio/", "video/")  # containers with sound; the decoder has the last word
AUDIO_MEDIA_TYPES = {"", "application/octet-stream", "application/ogg"}  # what clients send when they do not guess
PAGE = "static/index.html"

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    500: "server_error",
    503: "server_busy",
    504: "timeout",
}


@dataclass(frozen=True)
class ServeOptions:
    model_name: str = "llm-srt"  # the id /v1/models reports; requests may name any model (one is loaded)
    max_upload_mb: float = 50.0  # larger uploads get 413
    timeout_s: float = 120.0  # a request waiting longer (queue + model) gets 504
    batch: BatchOptions = field(default_factory=BatchOptions)  # dynamic batching and decoding

    def __post_init__(self):
        if self.max_upload_mb <= 0 or self.timeout_s <= 0:
            raise LLMSRTError(f"serve: --max-upload-mb and --timeout-s must be > 0 (got {self.max_upload_mb}, "
                              f"{self.timeout_s})")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_body_bytes(self) -> int:
        """A request's whole body: the file plus the other form fields and the multipart boundaries."""
        return self.max_upload_bytes + FORM_OVERHEAD


@dataclass(frozen=True)
class Endpoint:
    path: str
    openai_task: str  # verbose_json's "task": "translate" or "transcribe"
    text: str  # the result field that is the response's "text": "translation" or "transcript"
    tasks: tuple[Task, ...]  # accepted `task` values; the first is the default
    default_target: str | None  # target language when the request names none


ENDPOINTS: dict[str, Endpoint] = {
    "translations": Endpoint("/v1/audio/translations", "translate", "translation", (Task.SRT, Task.S2TT), "eng"),
    "transcriptions": Endpoint("/v1/audio/transcriptions", "transcribe", "transcript", (Task.ASR, Task.SRT), None),
}



class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param"}} with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass
class AudioForm:
    file: UploadFile
    model: str
    response_format: str
    source_language: str | None
    target_language: str | None
    language: str | None
    task: str | None
    subtitles: str | None


def audio_form(
    file: Annotated[UploadFile, File(description="the audio: wav, flac, ogg or mp3, any rate and length")],
    model: Annotated[str, Form(description="accepted for OpenAI clients; the server runs one model")] = "",
    response_format: Annotated[str, Form(description="json | text | srt | vtt | verbose_json")] = "json",
    source_language: Annotated[str | None, Form(description="ISO 639-3 (e.g. deu), or auto")] = None,
    target_language: Annotated[str | None, Form(description="ISO 639-3; translations default to eng")] = None,
    language: Annotated[str | None, Form(description="OpenAI's field: the source language")] = None,
    task: Annotated[str | None, Form(description="translations: srt | s2tt; transcriptions: asr | srt")] = None,
    subtitles: Annotated[str | None, Form(description="srt/vtt cues: translation | transcript | both")] = None,
) -> AudioForm:
    return AudioForm(file, model, response_format, source_language, target_language, language, task, subtitles)


# ---- the app --------------------------------------------------------------------------------------------------------
def create_app(translator: SpeechTranslator, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The FastAPI app around `translator`. The batcher starts and stops with the app's lifespan."""
    batcher = Batcher(translator, options.batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="LLM-SRT", summary="Speech recognition and translation with speech LLMs",
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.state.options = options
    started = int(time.time())

    for name, endpoint in ENDPOINTS.items():
        app.post(endpoint.path, name=name, max_body_size=options.max_body_bytes,
                 response_class=Response)(_handler(endpoint, batcher, options))

    html = resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")  # read once, served as is

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return html

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": options.model_name, "waiting": batcher.waiting,
                "max_batch": options.batch.max_batch, "batching": batcher.stats.to_dict()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list",
                "data": [{"id": options.model_name, "object": "model", "created": started, "owned_by": "llm-srt"}]}

    @app.get("/v1/languages")
    async def language_list() -> dict:
        return {"object": "list", "default_target": ENDPOINTS["translations"].default_target,
                "data": [{"code": lang.code, "name": lang.name, "script": lang.script}
                         for lang in languages.LANGUAGES.values()]}

    _add_error_handlers(app, options)
    app.add_middleware(ContentLengthLimit, max_bytes=options.max_body_bytes,
                       message=too_large_message(options))
    return app


def _handler(endpoint: Endpoint, batcher: Batcher, options: ServeOptions):
    async def handle(form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
        render = RENDERERS.get(form.response_format)
        if render is None:
            raise APIError(400, f"unknown response_format {form.response_format!r}: use one of "
                           f"{', '.join(RENDERERS)}", "response_format")
        task = parse_task(form.task, endpoint)
        src = resolve_language(form.source_language or form.language or AUTO,
                               "source_language" if form.source_language else "language", allow_auto=True)
        tgt = None
        if task is not Task.ASR:
            tgt = form.target_language or endpoint.default_target
            if tgt is None:
                raise APIError(400, f"task {task.value} needs target_language (ISO 639-3, e.g. deu)",
                               "target_language")
            tgt = resolve_language(tgt, "target_language")
        cue_mode = form.subtitles or endpoint.text
        if cue_mode not in subtitles.CUE_MODES:
            raise APIError(400, f"unknown subtitles {cue_mode!r}: use one of {', '.join(subtitles.CUE_MODES)}",
                           "subtitles")
        samples = await read_audio(form.file, options.max_upload_bytes)
        try:
            result = await asyncio.wait_for(batcher.submit(samples, src, tgt, task), options.timeout_s)
        except TimeoutError:
            raise APIError(504, f"no result within {options.timeout_s:g} s (llm-srt serve --timeout-s); the "
                           "server is busy or the audio is long") from None
        except BusyError as e:
            raise APIError(503, str(e)) from None
        except Exception as e:  # noqa: BLE001 - the model failed on this batch; the server goes on
            log.exception("translate failed")
            raise APIError(500, f"the model failed: {type(e).__name__}: {e}") from None
        if result.error:
            raise APIError(500, result.error, "file")
        return render(result, endpoint, cue_mode)

    handle.__name__ = f"{endpoint.openai_task}_audio"
    return handle


def _add_error_handlers(app: FastAPI, options: ServeOptions) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = str(err["loc"][-1]) if err.get("loc") else None
        hint = " (send multipart/form-data with the audio in the field 'file')" if param == "file" else ""
        return error_response(400, f"{param}: {err['msg']}{hint}" if param else err["msg"], param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {
            413: too_large_message(options),
            404: f"no such endpoint {request.url.path}; see / for the page and /docs or /openapi.json for the API",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                              "file" if exc.status_code == 413 else None)


def too_large_message(options: ServeOptions) -> str:
    return f"the upload is larger than {options.max_upload_mb:g} MB (llm-srt serve --max-upload-mb)"


class ContentLengthLimit:
    """ASGI middleware: a JSON 413 before reading a body whose Content-Length is over `max_bytes`.

    Bodies sent without a length (chunked) are counted by the routes' own max_body_size as they arrive.
    """

    def __init__(self, app, max_bytes: int, message: str):
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                return await error_response(413, self.message, "file")(scope, receive, send)
        return await self.app(scope, receive, send)


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": param}},
                        status_code=status)


# ---- request checks -------------------------------------------------------------------------------------------------
def parse_task(value: str | None, endpoint: Endpoint) -> Task:
    if value is None or value == "":
        return endpoint.tasks[0]
    allowed = {t.value: t for t in endpoint.tasks}
    if value not in allowed:
        raise APIError(400, f"task {value!r} is not served on {endpoint.path}: use one of {', '.join(allowed)}",
                       "task")
    return allowed[value]


def _aliases() -> dict[str, str]:
    """ISO 639-3 code, Whisper's ISO 639-1 code, lower-case English name -> ISO 639-3 code."""
    out = {}
    for lang in languages.LANGUAGES.values():
        for alias in (lang.name.lower(), lang.whisper, lang.code):
            out.setdefault(alias, lang.code)
    return out


LANGUAGE_ALIASES = _aliases()


def resolve_language(value: str, param: str, allow_auto: bool = False) -> str:
    value = value.strip()
    if allow_auto and value == AUTO:
        return AUTO
    code = LANGUAGE_ALIASES.get(value.lower())
    if code is None:
        raise APIError(400, f"{param}: unknown language {value!r}: use one of {', '.join(languages.LANGUAGES)} "
                       f"(ISO 639-3){' or auto' if allow_auto else ''}; GET /v1/languages lists them", param)
    return code


async def read_audio(file: UploadFile, max_bytes: int) -> np.ndarray:
    """The upload decoded to 16 kHz mono float32, shape (N,); APIError 413 / 415 / 400 naming the problem."""
    name = file.filename or "upload"
    media = (file.content_type or "").split(";")[0].strip().lower()
    if not (media in AUDIO_MEDIA_TYPES or media.startswith(AUDIO_MEDIA_PREFIXES)):
        raise APIError(415, f"{name}: media type {media!r} is not audio; send wav, flac, ogg or mp3", "file")
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise APIError(413, f"{name}: larger than {max_bytes / MB:g} MB (llm-srt serve --max-upload-mb)", "file")
    return await run_in_threadpool(decode_audio, data, name)


def decode_audio(data: bytes, name: str) -> np.ndarray:
    """415 for bytes no decoder opens, 400 for anything else wrong with the audio (empty, damaged, too long)."""
    try:
        return load_audio(data, name=name)
    except UndecodableAudio as e:
        raise APIError(415, f"{name}: cannot decode this audio ({e.detail}); send wav, flac, ogg or mp3",
                       "file") from None
    except AudioError as e:
        raise APIError(400, str(e), "file") from None


# ---- responses -------------------------------------------------------------------------------------------------------
def _text(r: TranslationResult, endpoint: Endpoint) -> str:
    return getattr(r, endpoint.text)


def render_json(r: TranslationResult, endpoint: Endpoint, mode: str) -> Response:
    return JSONResponse({"text": _text(r, endpoint)})


def render_text(r: TranslationResult, endpoint: Endpoint, mode: str) -> Response:
    return PlainTextResponse(_text(r, endpoint) + "\n")


def render_srt(r: TranslationResult, endpoint: Endpoint, mode: str) -> Response:
    return PlainTextResponse(subtitles.to_srt(subtitles.segment_cues(r.segments, mode)))


def render_vtt(r: TranslationResult, endpoint: Endpoint, mode: str) -> Response:
    return PlainTextResponse(subtitles.to_vtt(subtitles.segment_cues(r.segments, mode)), media_type="text/vtt")


def render_verbose(r: TranslationResult, endpoint: Endpoint, mode: str) -> Response:
    return JSONResponse({
        "task": endpoint.openai_task, "mode": r.task, "language": r.src, "target_language": r.tgt,
        "duration": round(r.duration, 3), "text": _text(r, endpoint), "transcript": r.transcript,
        "translation": r.translation,
        "segments": [{"id": i, "start": s.start, "end": s.end, "text": getattr(s, endpoint.text),
                      "transcript": s.transcript, "translation": s.translation} for i, s in enumerate(r.segments)],
    })


RENDERERS: dict[str, Callable[[TranslationResult, Endpoint, str], Response]] = {
    "json": render_json, "text": render_text, "srt": render_srt, "vtt": render_vtt, "verbose_json": render_verbose,
}


# ---- CLI: llm-srt serve ---------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=8, help="most requests in one model call (1 = no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="how long a request waits for others to join its batch")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="larger uploads get 413")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="requests waiting longer get 504")
    parser.add_argument("--name", default="llm-srt", help="the model id /v1/models reports")


def options_from_args(args) -> ServeOptions:
    decoding = DecodingOptions(beam_size=args.beam, max_new_tokens=args.max_new_tokens)
    batch = BatchOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, decoding=decoding)
    return ServeOptions(model_name=args.name, max_upload_mb=args.max_upload_mb, timeout_s=args.timeout_s,
                        batch=batch)


def main(args) -> int:
    import uvicorn

    options = options_from_args(args)
    translator = translator_from_args(args)
    app = create_app(translator, options)
    print(f"llm-srt serve: {args.model} ({translator.system.placement}) on http://{args.host}:{args.port}/ "
          f"(max batch {options.batch.max_batch}, wait {options.batch.max_wait_ms:g} ms)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
