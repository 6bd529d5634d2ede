"""Answers whose segments came back without a translation (the model ended after its transcript), on a stub
translator: the warning says "their transcripts are kept" only where the answer shows them, and elsewhere how to get
them; following it gets them."""

import numpy as np
import pytest
from serve_helpers import local_client, wav_bytes

from llm_srt.infer import SegmentResult, TranslationResult, untranslated_note
from llm_srt.serve import BatchOptions, ServeOptions, create_app
from llm_srt.serve.responses import header_note

TRANSLATIONS = "/v1/audio/translations"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSCRIPTS = ("Hallo zusammen.", "Wie geht es euch?")


def ended_after_transcript(name: str, src: str, tgt: str, task: str) -> TranslationResult:
    """Two segments with a transcript and no translation (as an SRT model that ended after its transcript answers),
    none cut at its token cap."""
    segments = [SegmentResult(0.0, 1.0, TRANSCRIPTS[0], ""), SegmentResult(1.0, 2.0, TRANSCRIPTS[1], "")]
    return TranslationResult(name, src, tgt, task, " ".join(TRANSCRIPTS), "", 2.0, segments)


class EndsAfterTranscript:
    """A translator answering every input with `ended_after_transcript`."""

    def translate(self, audios, srcs, tgts, task, on_result=None, **kw):
        results = [ended_after_transcript(f"<array {i}>", s, t, k.value)
                   for i, (s, t, k) in enumerate(zip(srcs, tgts, task))]
        for i, r in enumerate(results):
            if on_result is not None:
                on_result(i, r)
        return results


KEPT = untranslated_note(ended_after_transcript("clip.wav", "deu", "eng", "srt"))  # translate's own line


@pytest.fixture(scope="module")
def client():
    with local_client(create_app(EndsAfterTranscript(), ServeOptions(batch=BatchOptions(max_wait_ms=1)))) as c:
        yield c


def ask(client, path=TRANSLATIONS, **fields):
    wav = wav_bytes(np.zeros(32000, dtype=np.float32))
    if path == TRANSLATIONS:
        fields = {"source_language": "deu", "target_language": "eng", **fields}
    else:  # task srt: the transcript and its translation
        fields = {"language": "deu", "target_language": "eng", "task": "srt", **fields}
    r = client.post(path, files={"file": ("clip.wav", wav, "audio/wav")}, data=fields)
    assert r.status_code == 200, r.text
    return r


def cue_texts(body: str) -> list[str]:
    """The text lines of an srt or vtt body's cues (no header, cue numbers or times)."""
    return [line for line in body.splitlines()
            if line and line != "WEBVTT" and not line.isdigit() and "-->" not in line]


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_cues_without_the_transcripts_say_so_and_how_to_show_them(client, fmt):
    """The default subtitles of /v1/audio/translations are the translations (OpenAI's text): with none, the answer
    is a file without a cue (vtt: "WEBVTT"), and its warning said "their transcripts are kept". It now says they
    are not in the cues and to send subtitles both, which shows them."""
    empty = ask(client, response_format=fmt)
    warning = empty.headers["x-llm-srt-warning"]
    assert cue_texts(empty.text) == []
    assert "2 of 2 segments got no translation" in warning and "kept" not in warning, warning
    assert "not in these cues" in warning and "subtitles both" in warning, warning
    both = ask(client, response_format=fmt, subtitles="both")  # as the warning says
    assert cue_texts(both.text) == list(TRANSCRIPTS) and both.headers["x-llm-srt-warning"] == header_note(KEPT)
    shown = ask(client, TRANSCRIPTIONS, response_format=fmt)  # transcriptions' cues are the transcripts
    assert cue_texts(shown.text) == list(TRANSCRIPTS) and shown.headers["x-llm-srt-warning"] == header_note(KEPT)
    hidden = ask(client, TRANSCRIPTIONS, response_format=fmt, subtitles="translation")
    assert cue_texts(hidden.text) == [] and hidden.headers["x-llm-srt-warning"] == warning


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_text_without_the_transcripts_says_so_and_how_to_get_them(client, fmt):
    """json and text of /v1/audio/translations are the translation: "" here, beside "their transcripts are kept".
    The warning now sends the client to verbose_json, which has them; transcriptions' text is the transcript."""
    empty = ask(client, response_format=fmt)
    warning = empty.headers["x-llm-srt-warning"]
    assert (empty.json() == {"text": "", "warning": warning}) if fmt == "json" else empty.text == "\n"
    assert "kept" not in warning and "not in this text" in warning and "verbose_json" in warning, warning
    verbose = ask(client, response_format="verbose_json").json()  # as the warning says
    assert (verbose["transcript"], verbose["untranslated"], verbose["warning"]) == (" ".join(TRANSCRIPTS), 2, KEPT)
    shown = ask(client, TRANSCRIPTIONS, response_format=fmt)
    text = shown.json()["text"] if fmt == "json" else shown.text.removesuffix("\n")
    assert text == " ".join(TRANSCRIPTS) and shown.headers["x-llm-srt-warning"] == header_note(KEPT)
