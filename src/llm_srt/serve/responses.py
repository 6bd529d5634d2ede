"""The answers of `llm-srt serve` (serve/app.py) by response_format: json, text, srt, vtt and verbose_json.

An answer that is not the whole story says so on every format: a request that failed in part (`error`: its other
segments are answered), an upload that decoded only in part (`warning`: the seconds kept), and segments that came
back without a translation or cut at their token cap (`warning` too: `infer.untranslated_note` and `capped_note`, as
`translate` says them; `untranslated_warning` where the answer does not show those segments' transcripts) each in a
header (ERROR_HEADER, WARNING_HEADER: one line, at most MAX_NOTE_CHARS) and, in json and verbose_json, in the body.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import replace
from typing import Callable

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import languages, subtitles
from ..audio import SAMPLE_RATE
from ..infer import TranslationResult, untranslated_note
from ..model.encoder import HOP_LENGTH
from .forms import Endpoint
from .guard import hide_paths

ERROR_HEADER = "X-LLM-SRT-Error"  # a request answered in part: what failed (verbose_json's "error")
WARNING_HEADER = "X-LLM-SRT-Warning"  # an upload decoded in part, segments untranslated or cut (verbose_json's too)
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # Whisper's mel frames (100: 10 ms), the unit of a segment's "seek"
MAX_NOTE_CHARS = 300  # a header's note is cut here (the body's is whole)
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")  # a header value is one line: no CR, LF or other control byte
KEPT = "; their transcripts are kept"  # infer.untranslated_note's end: true of an answer that shows them
NOT_SHOWN = {  # what untranslated_warning says instead, by response_format, where the answer does not show them
    "srt": "; their transcripts are not in these cues: send subtitles both",
    "vtt": "; their transcripts are not in these cues: send subtitles both",
    "json": "; their transcripts are not in this text: ask for verbose_json",
    "text": "; their transcripts are not in this text: ask for verbose_json",
}


def without_paths(r: TranslationResult, paths: tuple[str, ...]) -> TranslationResult:
    """`r` with its errors and its segments' errors for a client (`hide_paths`)."""
    return replace(r, error=hide_paths(r.error, paths),
                   segments=[replace(s, error=hide_paths(s.error, paths)) for s in r.segments])


def _text(r: TranslationResult, endpoint: Endpoint) -> str:
    return getattr(r, endpoint.text)


def shows_transcripts(endpoint: Endpoint, fmt: str, mode: str) -> bool:
    """Whether an answer in response_format `fmt` (subtitles `mode`) shows the segments' transcripts: verbose_json
    always, srt and vtt whose cues show them, json and text of transcriptions (their text is the transcript)."""
    if fmt in ("srt", "vtt"):
        return mode != "translation"
    return fmt not in NOT_SHOWN or endpoint.text == "transcript"


def untranslated_warning(r: TranslationResult, endpoint: Endpoint, fmt: str, mode: str) -> str | None:
    """`infer.untranslated_note` (segments without a translation) as this answer can say it: its "their transcripts
    are kept" where the answer shows them, else how to get them (subtitles both; verbose_json). A translation's srt
    without a translation was a file without a cue whose warning said the transcripts were kept (in `translate`'s
    files, whose --subtitles default is both, they are)."""
    note = untranslated_note(r)
    if note is None or shows_transcripts(endpoint, fmt, mode):
        return note
    return note.removesuffix(KEPT) + NOT_SHOWN[fmt]


def header_note(text: str) -> str:
    """`text` as a header value: one line of ASCII (a client's file name may be in any script, and HTTP headers are
    Latin-1 at most: other characters as Python escapes), at most MAX_NOTE_CHARS long."""
    line = " ".join(UNPRINTABLE.sub(" ", text.encode("ascii", "backslashreplace").decode("ascii")).split())
    return line if len(line) <= MAX_NOTE_CHARS else line[:MAX_NOTE_CHARS - 3] + "..."


def with_notes(response: Response, error: str | None, warning: str | None) -> Response:
    """`response` with ERROR_HEADER and WARNING_HEADER where `error` or `warning` is set (the answer of any format:
    json, text, srt and vtt clients had no sign of a failed segment or of an upload kept in part)."""
    for header, note in ((ERROR_HEADER, error), (WARNING_HEADER, warning)):
        if note:
            response.headers[header] = header_note(note)
    return response


def render_json(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0,
                warning: str | None = None) -> Response:
    # OpenAI's {"text"}, and only where set our "error" and "warning" (extra keys OpenAI's SDKs keep, unread)
    notes = {key: note for key, note in (("error", r.error), ("warning", warning)) if note}
    return JSONResponse({"text": _text(r, endpoint), **notes})


def render_text(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0,
                warning: str | None = None) -> Response:
    return PlainTextResponse(_text(r, endpoint) + "\n")


def render_srt(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0,
               warning: str | None = None) -> Response:
    return PlainTextResponse(subtitles.to_srt(subtitles.segment_cues(r.segments, mode, width)))


def render_vtt(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0,
               warning: str | None = None) -> Response:
    return PlainTextResponse(subtitles.to_vtt(subtitles.segment_cues(r.segments, mode, width)), media_type="text/vtt")


def openai_language(code: str | None) -> str:
    """verbose_json's "language" as OpenAI gives it: the lower-case English name ("english", "german"), which this
    server accepts back as a language; "unknown" where none was found (no speech on an auto source). It was the
    ISO 639-3 code, which OpenAI clients do not expect there (target_language stays a code: it is our own field)."""
    if code is None:
        return "unknown"
    lang = languages.LANGUAGES.get(code)
    return lang.name.lower() if lang else code


def render_verbose(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0,
                   warning: str | None = None) -> Response:
    # OpenAI's "language" is the text's: a translation's target, a transcript's source; source_language is ours
    # (the same style of name) so that a translation's client still learns what was heard
    language = r.tgt if endpoint.openai_task == "translate" else r.src
    return JSONResponse({
        "task": endpoint.openai_task, "mode": r.task, "language": openai_language(language),
        "source_language": openai_language(r.src), "target_language": r.tgt,
        "duration": round(r.duration, 3), "text": _text(r, endpoint), "transcript": r.transcript,
        "translation": r.translation, "forced_tags": r.forced_tags, "capped": r.capped, "no_speech": r.no_speech,
        "untranslated": r.untranslated, "error": r.error, "warning": warning,
        "segments": [{"id": i, "start": s.start, "end": s.end, "text": getattr(s, endpoint.text),
                      **_whisper_fields(s.start, getattr(s, endpoint.text)),
                      "transcript": s.transcript, "translation": s.translation, "forced_tags": s.forced_tags,
                      "capped": s.capped, "error": s.error} for i, s in enumerate(r.segments)],
    })


def _whisper_fields(start: float, text: str) -> dict:
    """OpenAI's segment fields, each measured here or null: seek, the mel frame its decode started at (each segment
    is decoded alone from its start); temperature 0.0 (decoding is greedy or beam search, never sampled: forms.py
    refuses another); compression_ratio of its text as Whisper defines it (UTF-8 bytes over their zlib size).
    avg_logprob and tokens stay null (the decoder keeps no token log-probabilities nor ids in its result), and
    no_speech_prob too (speech is found by the segmenter, which gives no probability)."""
    data = text.encode("utf-8")
    return {"seek": round(start * FRAMES_PER_SECOND), "temperature": 0.0,
            "compression_ratio": len(data) / len(zlib.compress(data)), "avg_logprob": None, "tokens": None,
            "no_speech_prob": None}


RENDERERS: dict[str, Callable[[TranslationResult, Endpoint, str, int, str | None], Response]] = {
    "json": render_json, "text": render_text, "srt": render_srt, "vtt": render_vtt, "verbose_json": render_verbose,
}
