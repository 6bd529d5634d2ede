"""The answers of `llm-srt serve` (serve/app.py) by response_format: json, text, srt, vtt and verbose_json."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import languages, subtitles
from ..infer import TranslationResult
from .forms import Endpoint
from .guard import hide_paths


def without_paths(r: TranslationResult, paths: tuple[str, ...]) -> TranslationResult:
    """`r` with its errors and its segments' errors for a client (`hide_paths`)."""
    return replace(r, error=hide_paths(r.error, paths),
                   segments=[replace(s, error=hide_paths(s.error, paths)) for s in r.segments])


def _text(r: TranslationResult, endpoint: Endpoint) -> str:
    return getattr(r, endpoint.text)


def render_json(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0) -> Response:
    return JSONResponse({"text": _text(r, endpoint)})


def render_text(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0) -> Response:
    return PlainTextResponse(_text(r, endpoint) + "\n")


def render_srt(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0) -> Response:
    return PlainTextResponse(subtitles.to_srt(subtitles.segment_cues(r.segments, mode, width)))


def render_vtt(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0) -> Response:
    return PlainTextResponse(subtitles.to_vtt(subtitles.segment_cues(r.segments, mode, width)), media_type="text/vtt")


def openai_language(code: str | None) -> str:
    """verbose_json's "language" as OpenAI gives it: the lower-case English name ("english", "german"), which this
    server accepts back as a language; "unknown" where none was found (no speech on an auto source). It was the
    ISO 639-3 code, which OpenAI clients do not expect there (target_language stays a code: it is our own field)."""
    if code is None:
        return "unknown"
    lang = languages.LANGUAGES.get(code)
    return lang.name.lower() if lang else code


def render_verbose(r: TranslationResult, endpoint: Endpoint, mode: str, width: int = 0) -> Response:
    # OpenAI's "language" is the text's: a translation's target, a transcript's source; source_language is ours
    # (the same style of name) so that a translation's client still learns what was heard
    language = r.tgt if endpoint.openai_task == "translate" else r.src
    return JSONResponse({
        "task": endpoint.openai_task, "mode": r.task, "language": openai_language(language),
        "source_language": openai_language(r.src), "target_language": r.tgt,
        "duration": round(r.duration, 3), "text": _text(r, endpoint), "transcript": r.transcript,
        "translation": r.translation, "forced_tags": r.forced_tags, "no_speech": r.no_speech, "error": r.error,
        "segments": [{"id": i, "start": s.start, "end": s.end, "text": getattr(s, endpoint.text),
                      "transcript": s.transcript, "translation": s.translation, "forced_tags": s.forced_tags,
                      "error": s.error} for i, s in enumerate(r.segments)],
    })


RENDERERS: dict[str, Callable[[TranslationResult, Endpoint, str, int], Response]] = {
    "json": render_json, "text": render_text, "srt": render_srt, "vtt": render_vtt, "verbose_json": render_verbose,
}
