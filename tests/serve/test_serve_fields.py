"""Form fields the endpoints used to drop without a word: a repeated field (Starlette keeps the last) and a
target_language on /v1/audio/transcriptions' task asr, which writes no translation. Each was a 200 answering
something other than what was asked; each is now a 400 naming the field."""

import inspect
import typing

import pytest
from serve_helpers import DECODING, local_client

from llm_srt.serve import BatchOptions, ServeOptions, create_app, forms

TRANSLATIONS = "/v1/audio/translations"
TRANSCRIPTIONS = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def client(translator):
    with local_client(create_app(translator, ServeOptions(batch=BatchOptions(max_wait_ms=0, decoding=DECODING)))) \
            as c:
        yield c


def wav(clip, name="clip.wav"):
    return ("file", (name, clip[1], "audio/wav"))


REPEATED = {  # name -> (path, multipart parts besides one file, the param the 400 names)
    "two files": (TRANSCRIPTIONS, [("language", "eng"), ("file", ("b.wav", None, "audio/wav"))], "file"),
    "two files on translations": (TRANSLATIONS, [("source_language", "eng"), ("file", ("b.wav", None, "audio/wav"))],
                                  "file"),
    "language twice": (TRANSCRIPTIONS, [("language", "eng"), ("language", "deu")], "language"),
    "target_language twice": (TRANSLATIONS, [("source_language", "eng"), ("target_language", "deu"),
                                             ("target_language", "fra")], "target_language"),
    "response_format twice": (TRANSLATIONS, [("source_language", "eng"), ("response_format", "srt"),
                                             ("response_format", "json")], "response_format"),
}


@pytest.mark.parametrize("case", list(REPEATED))
def test_a_repeated_field_is_refused(client, clip, case):
    """`-F file=@a.wav -F file=@b.wav` answered 200 for b alone (a was dropped); a repeated language or format
    likewise went by its last value."""
    path, parts, param = REPEATED[case]
    files = [wav(clip)] + [(k, (v[0], clip[1], v[2])) if isinstance(v, tuple) else (k, (None, v)) for k, v in parts]
    r = client.post(path, files=files)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert "sent 2 times" in err["message"] and "exactly one" in err["message"], err


def test_repeated_timestamp_granularities_still_pass(client, clip):
    """The one field a client may repeat (OpenAI's timestamp_granularities[] is a list)."""
    files = [wav(clip), ("language", (None, "eng")), ("response_format", (None, "verbose_json")),
             ("timestamp_granularities[]", (None, "segment")), ("timestamp_granularities[]", (None, "segment"))]
    r = client.post(TRANSCRIPTIONS, files=files)
    assert r.status_code == 200, r.text


def test_single_fields_are_the_forms_own():
    """SINGLE_FIELDS names every field audio_form reads one value of (a field added to the form is checked too)."""
    single = []
    for name, param in inspect.signature(forms.audio_form).parameters.items():
        kind, info = typing.get_args(param.annotation)[:2]
        if "list" not in str(kind):
            single.append(info.alias or name)
    assert sorted(single) == sorted(forms.SINGLE_FIELDS)


@pytest.mark.parametrize("target", ["zz", "deu"])
def test_transcriptions_asr_refuses_a_target_language(client, clip, target):
    """task asr (the transcriptions default) read no target: `-F target_language=zz` (not even a language) was a 200
    with the transcript, as if a translation had been asked for and given."""
    r = client.post(TRANSCRIPTIONS, files=[wav(clip)], data={"language": "eng", "target_language": target})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "target_language" and err["type"] == "invalid_request_error", err
    assert "task asr writes no translation" in err["message"] and TRANSLATIONS in err["message"], err


def test_transcriptions_take_an_empty_target_language_and_srt_reads_it(client, clip):
    """A form builder that sends every field sends target_language empty: that is no target, as before; task srt
    on the same endpoint still reads a target."""
    r = client.post(TRANSCRIPTIONS, files=[wav(clip)], data={"language": "eng", "target_language": ""})
    assert r.status_code == 200 and "text" in r.json(), r.text
    r = client.post(TRANSCRIPTIONS, files=[wav(clip)], data={"language": "eng", "task": "srt",
                                                                "target_language": "deu",
                                                                "response_format": "verbose_json"})
    assert r.status_code == 200 and r.json()["target_language"] == "deu" and "translation" in r.json(), r.text


UNKNOWN = {  # field sent -> the known field the 400 names as the closest (None: none is close)
    "target_langauge": "target_language", "source_lang": "source_language", "beam": "beam_size",
    "Language": "language", "tgt": None, "no_repeat_ngram_size": None,
}


@pytest.mark.parametrize("field", list(UNKNOWN))
def test_an_unknown_field_is_refused_naming_the_closest_known_one(client, clip, field):
    """A misspelt or made-up field was dropped: `target_langauge=deu` was a 200 translating into English (the
    default), `beam=3` and `no_repeat_ngram_size=-5` decoded as the server does, all without a word."""
    r = client.post(TRANSLATIONS, files=[wav(clip)], data={"source_language": "eng", "target_language": "deu",
                                                           field: "deu"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["message"].startswith(f"unknown field {field!r}: "), err
    if UNKNOWN[field]:
        assert err["message"].endswith(f"did you mean {UNKNOWN[field]}?"), err
    else:
        assert "source_language, target_language" in err["message"] and "did you mean" not in err["message"], err


def test_source_language_and_language_naming_two_languages_are_refused(client, clip):
    """Both fields name the audio's language; given two, the server kept one (source_language) without a word. The
    same language in two spellings is no conflict."""
    for path in (TRANSLATIONS, TRANSCRIPTIONS):
        r = client.post(path, files=[wav(clip)], data={"source_language": "eng", "language": "de"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert "'eng' and language 'de' name different languages" in err["message"], err
        assert err["param"] == ("language" if path == TRANSCRIPTIONS else "source_language"), err
    r = client.post(TRANSCRIPTIONS, files=[wav(clip)], data={"source_language": "English", "language": "en",
                                                             "response_format": "verbose_json"})
    assert r.status_code == 200 and r.json()["language"] == "english", r.text


def test_the_page_and_readme_send_only_known_fields():
    """The fields the web page's form appends and README's curl examples send are all read by the server (an
    unknown one is a 400 now)."""
    import re
    from importlib import resources
    from pathlib import Path

    page = resources.files("llm_srt.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    sent = re.findall(r'fd\.append\("([^"]+)"', page)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    curl = [field for line in re.findall(r"curl [^\n]*(?:\\\n[^\n]*)*", readme)
            for field in re.findall(r"-F ([\w\[\]]+)=", line)]
    assert {"file", "source_language", "target_language"} <= set(sent) and {"file", "language"} <= set(curl)
    assert set(sent + curl) <= set(forms.KNOWN_FIELDS), set(sent + curl) - set(forms.KNOWN_FIELDS)


def test_known_fields_are_the_forms_own():
    """KNOWN_FIELDS names every field audio_form reads, lists included."""
    read = [param.annotation.__metadata__[0].alias or name
            for name, param in inspect.signature(forms.audio_form).parameters.items()]
    assert sorted(read) == sorted(forms.KNOWN_FIELDS)
