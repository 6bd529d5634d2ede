"""What `llm-srt serve` reads from a request (serve/app.py): the endpoints, the multipart form (OpenAI's fields and
ours), and its checks; each failed check is an `APIError` naming the field (a 400 unless it says otherwise)."""

import difflib
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated

from fastapi import File, Form, UploadFile
from starlette.datastructures import FormData

from .. import languages
from ..model.decoding import DecodingOptions
from ..model.systems import inference_task
from ..prompts import Task

if TYPE_CHECKING:  # (app.py imports this module)
    from .app import ServeOptions

AUTO = "auto"  # source language "auto": Whisper's language ID picks it per clip
MAX_FIELD_CHARS = 200  # a form field longer than this is refused before it is looked at


@dataclass(frozen=True)
class Endpoint:
    path: str
    openai_task: str  # verbose_json's "task": "translate" or "transcribe"
    text: str  # the result field that is the response's "text": "translation" or "transcript"
    tasks: tuple[Task, ...]  # accepted `task` values; the first is the default where the model's training does
    #                          not say otherwise (`default_task`)
    default_target: str | None  # target language when the request names none
    source_field: str  # the source-language field errors name when the request sent none (both are accepted)


ENDPOINTS: dict[str, Endpoint] = {
    "translations": Endpoint("/v1/audio/translations", "translate", "translation",
                             (Task.SRT, Task.S2TT, Task.ASR_SMT), "eng",
                             "source_language"),  # OpenAI's translations have no source field: ours
    "transcriptions": Endpoint("/v1/audio/transcriptions", "transcribe", "transcript", (Task.ASR, Task.SRT), None,
                               "language"),  # what an OpenAI client sends
}


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}} with `status` (code null)."""

    def __init__(self, status: int, message: str, param: str | None = None, retry: bool | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry = status, message, param, retry  # retry: error_response's


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
    beam_size: str | None = None
    max_new_tokens: str | None = None
    stream: str | None = None
    timestamp_granularities: tuple[str, ...] = ()  # OpenAI's timestamp_granularities[] (and without the brackets)
    temperature: str | None = None  # OpenAI's: only 0 (decoding here is greedy or beam search, never sampled)


def audio_form(
    file: Annotated[UploadFile, File(description="the audio: wav, flac, ogg or mp3, any rate and length")],
    model: Annotated[str, Form(description="accepted for OpenAI clients; the server runs one model")] = "",
    response_format: Annotated[str, Form(description="json | text | srt | vtt | verbose_json")] = "json",
    source_language: Annotated[str | None, Form(description="ISO 639-3 (e.g. deu), or auto")] = None,
    target_language: Annotated[str | None, Form(description="ISO 639-3; translations default to eng")] = None,
    language: Annotated[str | None, Form(description="OpenAI's field: the source language")] = None,
    task: Annotated[str | None, Form(description="translations: srt | s2tt | asr+smt; transcriptions: asr | srt; "
                                                 "default: what the model was trained for")] = None,
    subtitles: Annotated[str | None, Form(description="srt/vtt cues: translation | transcript | both")] = None,
    beam_size: Annotated[str | None, Form(description="this request's beam size (1 = greedy; default: the "
                                                      "server's --beam; at most --max-beam)")] = None,
    max_new_tokens: Annotated[str | None, Form(description="this request's token cap (default and at most: the "
                                                           "server's --max-new-tokens)")] = None,
    stream: Annotated[str | None, Form(description="OpenAI's streaming: not supported (false only)")] = None,
    granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]", description="OpenAI's: "
                             "segment (verbose_json's segments); word timestamps are not supported")] = None,
    granularities_plain: Annotated[list[str] | None, Form(alias="timestamp_granularities",
                                                          description="as timestamp_granularities[]")] = None,
    temperature: Annotated[str | None, Form(description="OpenAI's sampling temperature: 0 only (decoding is "
                                                        "deterministic)")] = None,
    prompt: Annotated[str | None, Form(description="accepted for OpenAI clients and ignored (the model takes no "
                                                   "prompt text)")] = None,
) -> AudioForm:
    return AudioForm(file, model, response_format, source_language, target_language, language, task, subtitles,
                     beam_size, max_new_tokens, stream, tuple(granularities or ()) + tuple(granularities_plain or ()),
                     temperature)


# The fields audio_form reads one value of: Starlette's form keeps the last of a repeated field and drops the rest, so
# `-F file=@a.wav -F file=@b.wav` answered for b alone, with a 200 (timestamp_granularities may repeat: a list).
SINGLE_FIELDS = ("file", "model", "response_format", "source_language", "target_language", "language", "task",
                 "subtitles", "beam_size", "max_new_tokens", "stream", "temperature", "prompt")


# Every field audio_form reads, and OpenAI's transcription fields this server has no use for, accepted and ignored as
# `prompt` is: what an OpenAI SDK may send (lists as name[]; chunking_strategy's object as chunking_strategy[type] and
# the like). Any other field is a 400 naming it: `target_langauge=deu` was dropped, and the answer was English.
KNOWN_FIELDS = SINGLE_FIELDS + ("timestamp_granularities[]", "timestamp_granularities")
IGNORED_FIELDS = ("chunking_strategy", "include[]", "known_speaker_names[]", "known_speaker_references[]")


def check_known(sent: FormData) -> None:
    """400 naming the first field of the request's form that is neither read (KNOWN_FIELDS) nor ignored on purpose
    (IGNORED_FIELDS), with the known field closest to it where one is close (a misspelling)."""
    for param in sent:
        if param in KNOWN_FIELDS or param in IGNORED_FIELDS or param.startswith("chunking_strategy["):
            continue
        close = difflib.get_close_matches(param, KNOWN_FIELDS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"the fields are {', '.join(KNOWN_FIELDS)}"
        raise APIError(400, f"unknown field {param[:40]!r}: {hint}", param[:40])


def check_single(sent: FormData) -> None:
    """400 naming the first of SINGLE_FIELDS that the request's form holds more than once."""
    for param in SINGLE_FIELDS:
        count = len(sent.getlist(param))
        if count > 1:
            what = "one file (one upload a request)" if param == "file" else f"one {param}"
            raise APIError(400, f"{param}: sent {count} times; send exactly {what}", param)


def check_fields(form: AudioForm) -> None:
    """400 naming the field for a text field that is absurdly long or holds control characters."""
    fields = [(param, getattr(form, param)) for param in (
        "model", "response_format", "source_language", "target_language", "language", "task", "subtitles",
        "beam_size", "max_new_tokens", "stream")]
    for param, value in fields + [("timestamp_granularities", v) for v in form.timestamp_granularities]:
        if value is None:
            continue
        if len(value) > MAX_FIELD_CHARS or any(not c.isprintable() for c in value):
            raise APIError(400, f"{param}: expected a short printable value (got {len(value)} characters: "
                           f"{value[:40]!r}...)", param)


def check_granularities(asked: tuple[str, ...]) -> None:
    """OpenAI's timestamp_granularities[]: segment is what verbose_json's segments are; word timings the model does
    not write, so word is a 400 (it was accepted and answered without a word, which a client read as none spoken)."""
    for value in asked:
        granularity = value.strip().lower()
        if granularity == "word":
            raise APIError(400, "timestamp_granularities: word timestamps are not supported; ask for segment "
                           "(verbose_json's segments have start and end)", "timestamp_granularities")
        if granularity not in ("", "segment"):
            raise APIError(400, f"timestamp_granularities: unknown {value[:40]!r}; use segment",
                           "timestamp_granularities")


def request_decoding(form: AudioForm, options: "ServeOptions") -> DecodingOptions | None:
    """The request's own decoding (beam_size, max_new_tokens over the server's), or None for the server's; 400
    naming the field for a value that is not a whole number in its range, and for a temperature other than 0."""
    server = options.batch.decoding
    temperature = (form.temperature or "").strip()
    try:
        sampled = bool(temperature) and float(temperature) != 0.0
    except ValueError:
        sampled = True
    if sampled:  # an ignored temperature let a client believe it had sampled
        raise APIError(400, f"temperature {temperature[:20]!r}: decoding is deterministic (greedy or beam search) on "
                       "this server; send 0 or leave it out", "temperature")
    asked = {}
    for param, high in (("beam_size", options.beam_limit),
                        ("max_new_tokens", server.max_new_tokens)):
        value = (getattr(form, param) or "").strip()
        if not value:
            continue
        if not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= high:
            raise APIError(400, f"{param} {value!r}: a whole number from 1 to {high} on this server", param)
        asked[param] = int(value)
    return replace(server, **asked) if asked else None


def parse_task(value: str | None, endpoint: Endpoint, trained: tuple[Task, ...] = ()) -> Task:
    """The request's `task`, or without one `default_task` for a model trained on `trained` (main first)."""
    if value is None or value == "":
        return default_task(endpoint, trained)
    allowed = {t.value: t for t in endpoint.tasks}
    if value not in allowed:
        raise APIError(400, f"task {value!r} is not served on {endpoint.path}: use one of {', '.join(allowed)}",
                       "task")
    return allowed[value]


def default_task(endpoint: Endpoint, trained: tuple[Task, ...]) -> Task:
    """The task of a request without one, for a model trained on `trained` (`systems.trained_tasks`, main first;
    empty for a baseline or a folder without a record): on translations what the model was trained for
    (`systems.inference_task`: s2tt for a Baseline folder, asr+smt for an SMT stage, else srt), on transcriptions
    asr. After training, generation must use the prompt the model learned: a Baseline run with the SRT prompt gave an
    OpenAI client garbage as its text. A model that cannot write the endpoint's text is a 400 saying what to do."""
    task = inference_task(trained)
    if endpoint.text == "translation" and not task.needs_translation:
        raise APIError(400, f"task: this server's model was trained for {task.value}, which writes no translation; "
                       "use /v1/audio/transcriptions, or send task srt or s2tt to run that prompt on it anyway",
                       "task")
    if endpoint.text == "transcript" and task is Task.S2TT and Task.ASR not in trained:
        raise APIError(400, "task: this server's model was trained for s2tt alone, which writes no transcript; "
                       "use /v1/audio/translations, or send task asr to run that prompt on it anyway", "task")
    return task if endpoint.text == "translation" else endpoint.tasks[0]


def source_language(form: AudioForm, endpoint: Endpoint) -> tuple[str, str]:
    """(the request's source language, or AUTO; the field an error about it names): source_language or OpenAI's
    `language`, which name the same thing; both, naming different languages, are a 400 (one was dropped)."""
    sent = [(param, value) for param, value in (("source_language", form.source_language),
                                                ("language", form.language)) if value]
    if not sent:
        return AUTO, endpoint.source_field
    codes = [resolve_language(value, param, allow_auto=True) for param, value in sent]
    if len(set(codes)) > 1:
        raise APIError(400, f"source_language {sent[0][1][:40]!r} and language {sent[1][1][:40]!r} name different "
                       "languages; send one of them (both name the audio's language)", endpoint.source_field)
    return codes[0], sent[0][0]


def resolve_language(value: str, param: str, allow_auto: bool = False) -> str:
    value = value.strip()
    if allow_auto and value.lower() == AUTO:  # as case-blind as the language names
        return AUTO
    # the code, or any other name of it the CLI would suggest: Whisper's ISO 639-1 code, the English name in any
    # letter case, a FLEURS or Common Voice locale, Mandarin's own code cmn
    code = value if value in languages.LANGUAGES else languages.meant_code(value)
    if code is None:
        raise APIError(400, f"{param}: unknown language {value!r}: use one of {', '.join(languages.LANGUAGES)} "
                       f"(ISO 639-3){' or auto' if allow_auto else ''}; GET /v1/languages lists them", param)
    return code
