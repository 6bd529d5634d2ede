"""The HTTP API on a tiny random model with FastAPI's TestClient: formats, errors, batching, the serve verb."""

import argparse
import re
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import DECODING, bursts, json_answer, local_client, notes, wav_bytes

from llm_srt.device import Placement
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator, segment_options
from llm_srt.serve import app as serve_app
from llm_srt.serve import BatchOptions, ServeOptions, create_app
from llm_srt.serve.guard import ConnectionLimits, GuardedH11Protocol

TRANSLATIONS = "/v1/audio/translations"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
CPU = Placement(torch.device("cpu"), torch.float32)


def options(max_batch: int = 8, max_wait_ms: float = 20, **kw) -> ServeOptions:
    return ServeOptions(batch=BatchOptions(max_batch=max_batch, max_wait_ms=max_wait_ms, decoding=DECODING), **kw)


def post(client, path, audio: bytes, name="clip.wav", media="audio/wav", **fields):
    return client.post(path, files={"file": (name, audio, media)}, data=fields)


class Spy:
    """A translator wrapper recording every translate() call's batch size (and optionally slow or failing)."""

    def __init__(self, inner, delay: float = 0.0, fail_calls: tuple[int, ...] = ()):
        self.inner, self.delay, self.fail_calls = inner, delay, fail_calls
        self.sizes: list[int] = []

    def translate(self, inputs, *args, **kw):
        self.sizes.append(len(inputs))
        time.sleep(self.delay)
        if len(self.sizes) in self.fail_calls:
            raise RuntimeError("simulated model failure")
        return self.inner.translate(inputs, *args, **kw)


@pytest.fixture(scope="module")
def client(translator):
    with local_client(create_app(translator, options(max_upload_mb=2, max_beam=4))) as c:
        yield c


@pytest.fixture(scope="module")
def expected(translator, clip):
    """What the model itself says for the clip: the API must return exactly this."""
    samples, _ = clip
    srt = translator.translate([samples], "eng", "deu", task="srt", options=DECODING)[0]
    asr = translator.translate([samples], "eng", None, task="asr", options=DECODING)[0]
    assert srt.transcript and srt.translation and asr.transcript  # the tiny model (init_std 0.3) says something
    return srt, asr


def test_translation_in_every_format(client, clip, expected):
    _, wav = clip
    srt, _ = expected
    ask = dict(source_language="eng", target_language="deu", model="whisper-1")
    assert post(client, TRANSLATIONS, wav, **ask).json() == json_answer(srt.translation, srt)  # json is the default
    text = post(client, TRANSLATIONS, wav, response_format="text", **ask)
    assert text.text == srt.translation + "\n" and text.headers["content-type"].startswith("text/plain")
    # no note but the token cap's (the tiny model's text runs to DECODING's cap)
    assert {h: v for h, v in text.headers.items() if h.startswith("x-llm-srt-")} == (
        {"x-llm-srt-warning": notes(srt)} if notes(srt) else {})
    assert post(client, TRANSLATIONS, wav, response_format="srt", **ask).text == (
        f"1\n00:00:00,000 --> 00:00:01,000\n{srt.translation}\n")
    assert post(client, TRANSLATIONS, wav, response_format="srt", subtitles="both", **ask).text == (
        f"1\n00:00:00,000 --> 00:00:01,000\n{srt.transcript}\n{srt.translation}\n")
    vtt = post(client, TRANSLATIONS, wav, response_format="vtt", **ask)
    assert vtt.text == f"WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.000\n{srt.translation}\n"
    assert vtt.headers["content-type"].startswith("text/vtt")
    verbose = post(client, TRANSLATIONS, wav, response_format="verbose_json", **ask).json()
    assert verbose == {
        "task": "translate", "mode": "srt", "language": "german", "source_language": "english",  # OpenAI's: the
        "target_language": "deu", "duration": 1.0,  # translation's language; the source is our own field
        "text": srt.translation, "transcript": srt.transcript, "translation": srt.translation,
        "forced_tags": srt.forced_tags,  # SRT rows whose language tags greedy decoding wrote for the model
        "capped": srt.capped,  # a segment's output reached its token cap: cut there
        "no_speech": False, "untranslated": 0, "error": None, "warning": notes(srt),
        "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": srt.translation, "transcript": srt.transcript,
                      "translation": srt.translation, "forced_tags": srt.forced_tags, "capped": srt.capped,
                      "error": None, "seek": 0, "temperature": 0.0,  # OpenAI's segment fields, measured or null
                      "compression_ratio": len(srt.translation.encode()) / len(zlib.compress(
                          srt.translation.encode())), "avg_logprob": None, "tokens": None, "no_speech_prob": None}]}



def test_verbose_json_marks_forced_tags_per_segment():
    """A long input whose second segment ended after its transcript (its tags written for it): the response and
    that segment say so, the first segment does not."""
    import json

    from llm_srt.infer import SegmentResult, TranslationResult
    from llm_srt.serve.forms import ENDPOINTS
    from llm_srt.serve.responses import render_verbose

    segs = [SegmentResult(0.0, 30.0, "Hallo.", "Hello.", capped=True),
            SegmentResult(30.0, 41.0, "Welt.", "Welt.", forced_tags=True)]
    r = TranslationResult("clip.wav", "deu", "eng", "srt", "Hallo. Welt.", "Hello. Welt.", 41.0, segs)
    body = json.loads(render_verbose(r, ENDPOINTS["translations"], "translation").body)
    assert body["forced_tags"] is True and [s["forced_tags"] for s in body["segments"]] == [False, True]
    assert body["capped"] is True and [s["capped"] for s in body["segments"]] == [True, False]  # cut at its cap

def test_defaults_aliases_and_s2tt(client, translator, clip):
    samples, wav = clip
    # no target: English; OpenAI's `language` (ISO 639-1) is the source
    to_eng = translator.translate([samples], "deu", "eng", options=DECODING)[0]
    assert post(client, TRANSLATIONS, wav, language="de").json() == json_answer(to_eng.translation, to_eng)
    assert post(client, TRANSLATIONS, wav, source_language="German").json() == json_answer(to_eng.translation, to_eng)
    s2tt = translator.translate([samples], "eng", "fra", task="s2tt", options=DECODING)[0]
    got = post(client, TRANSLATIONS, wav, source_language="eng", target_language="fra", task="s2tt",
               response_format="verbose_json").json()
    assert got["mode"] == "s2tt" and got["text"] == s2tt.translation and got["transcript"] == ""


def test_transcription(client, clip, expected):
    _, wav = clip
    _, asr = expected
    assert post(client, TRANSCRIPTIONS, wav, language="eng").json() == json_answer(asr.transcript, asr)
    verbose = post(client, TRANSCRIPTIONS, wav, language="en", response_format="verbose_json").json()
    assert verbose["task"] == "transcribe" and verbose["target_language"] is None
    assert verbose["text"] == asr.transcript and verbose["language"] == "english"  # OpenAI's name, not the code
    assert verbose["source_language"] == "english"
    assert post(client, TRANSCRIPTIONS, wav, language="eng", response_format="srt").text.endswith(
        f"{asr.transcript}\n")


def test_long_audio_comes_back_in_segments(client):
    wav = wav_bytes(bursts(40.0))
    got = post(client, TRANSLATIONS, wav, source_language="eng", target_language="deu",
               response_format="verbose_json").json()
    segs = got["segments"]
    assert abs(got["duration"] - 40.0) < 0.01 and len(segs) >= 2
    assert all(0 <= s["start"] < s["end"] <= 40.0 and s["end"] - s["start"] <= 30.0 for s in segs)
    assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:]))
    srt = post(client, TRANSLATIONS, wav, source_language="eng", target_language="deu", response_format="srt").text
    cues = re.findall(r"^\d+\n(\d\d:\d\d:\d\d,\d\d\d) --> ", srt, flags=re.M)
    assert len(cues) == len([s for s in segs if s["translation"]]) >= 2


def nan_wav() -> bytes:
    x = np.zeros(1600, dtype=np.float32)
    x[10] = np.nan
    return wav_bytes(x, subtype="FLOAT")


BAD_REQUESTS = {  # name -> (path, upload (name, bytes, media type) or None, fields, status, param, message part)
    "unknown source": (TRANSLATIONS, None, {"source_language": "xx"}, 400, "source_language", "unknown language"),
    "unknown target": (TRANSLATIONS, None, {"source_language": "eng", "target_language": "klingon"}, 400,
                       "target_language", "'klingon'"),
    "unknown format": (TRANSLATIONS, None, {"response_format": "docx"}, 400, "response_format", "docx"),
    "task not served": (TRANSLATIONS, None, {"task": "asr"}, 400, "task", "srt, s2tt"),
    "srt without target": (TRANSCRIPTIONS, None, {"task": "srt", "language": "eng"}, 400, "target_language",
                           "needs target_language"),
    "unknown subtitles": (TRANSLATIONS, None, {"source_language": "eng", "subtitles": "all"}, 400, "subtitles",
                          "translation, transcript, both"),
    "beam 0": (TRANSLATIONS, None, {"beam_size": "0"}, 400, "beam_size", "from 1 to 4"),
    "sampling temperature": (TRANSLATIONS, None, {"temperature": "0.7"}, 400, "temperature", "deterministic"),
    "temperature not a number": (TRANSCRIPTIONS, None, {"temperature": "hot"}, 400, "temperature", "send 0"),
    "beam not a number": (TRANSLATIONS, None, {"beam_size": "two"}, 400, "beam_size", "'two'"),
    "beam not ASCII digits": (TRANSLATIONS, None, {"beam_size": "\u0663"}, 400, "beam_size", "from 1 to 4"),
    "beam signed": (TRANSLATIONS, None, {"beam_size": "+3"}, 400, "beam_size", "from 1 to 4"),
    "beam over --max-beam": (TRANSLATIONS, None, {"beam_size": "5"}, 400, "beam_size", "from 1 to 4 on this server"),
    "tokens over the server's": (TRANSLATIONS, None, {"max_new_tokens": "100000"}, 400, "max_new_tokens", "from 1 to"),
    "no file": (TRANSLATIONS, (), {"source_language": "eng"}, 400, "file", "multipart"),
    "not audio": (TRANSLATIONS, ("notes.txt", b"hello", "text/plain"), {}, 415, "file", "text/plain"),
    "undecodable": (TRANSLATIONS, ("broken.wav", b"RIFF\x00\x00junk" * 10, "audio/wav"), {}, 415, "file",
                    "broken.wav: cannot decode"),
    "empty": (TRANSLATIONS, ("empty.wav", b"", "audio/wav"), {}, 400, "file", "empty"),
    "NaN samples": (TRANSLATIONS, ("nan.wav", nan_wav(), "audio/wav"), {}, 400, "file", "NaN"),
    "too large": (TRANSLATIONS, ("big.wav", b"\x00" * 2_200_000, "audio/wav"), {}, 413, "file", "2 MB"),
    "file over the limit": (TRANSLATIONS, ("big.wav", b"\x00" * (2 * 2**20 + 100), "audio/wav"), {}, 413, "file",
                            "big.wav: larger than 2 MB"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_json_errors(client, clip, case):
    path, upload, fields, status, param, message = BAD_REQUESTS[case]
    if upload is None:
        upload = ("clip.wav", clip[1], "audio/wav")
    r = client.post(path, files={"file": upload} if upload else None, data={"source_language": "eng", **fields})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and message in err["message"], err
    assert err["type"] == serve_app.ERROR_TYPES[status]


def test_the_server_survives_bad_requests(client, clip, expected):
    for path, upload, fields, *_ in BAD_REQUESTS.values():
        client.post(path, files={"file": upload} if upload else None, data=fields)
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    assert client.get(TRANSLATIONS).status_code == 405
    r = post(client, TRANSLATIONS, clip[1], source_language="eng", target_language="deu")
    assert r.status_code == 200 and r.json() == json_answer(expected[0].translation, expected[0])
    assert client.get("/health").json()["status"] == "ok"


def test_timeouts_and_model_failures(translator, clip):
    spy = Spy(translator, delay=0.5, fail_calls=(2,))
    with local_client(create_app(spy, options(max_batch=1, timeout_s=0.2))) as c:
        r = post(c, TRANSLATIONS, clip[1], source_language="eng")
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout" and "--timeout-s" in r.text
        assert r.headers["x-should-retry"] == "false"  # the OpenAI SDK would send it twice more
    with local_client(create_app(Spy(translator, fail_calls=(1,)), options())) as c:
        r = post(c, TRANSLATIONS, clip[1], source_language="eng")
        assert r.status_code == 500 and "simulated model failure" in r.json()["error"]["message"]
        assert "x-should-retry" not in r.headers  # a failed batch may work next time
        assert post(c, TRANSLATIONS, clip[1], source_language="eng").status_code == 200  # still serving


@pytest.mark.parametrize("trusted, status", [("10.0.0.5", 403), ("127.0.0.1,10.0.0.5", 200), ("*", 200)])
def test_behind_a_proxy_that_ends_https_the_pages_own_post_passes_once_the_proxy_is_trusted(translator, clip,
                                                                                             trusted, status):
    """The proxy (here at 127.0.0.1, as the test client is) says X-Forwarded-Proto https; the browser's Origin is
    https://NAME. The scheme counts only from an address uvicorn trusts (`serve --forwarded-allow-ips`, which
    test_serve_verb_builds_the_app sees reach uvicorn; default this host only): from a proxy elsewhere the page's own
    post was a 403."""
    import urllib.request

    from serve_helpers import live_server

    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    args = parser.parse_args(["--model", "x", "--host", "0.0.0.0", "--allow-host", "translate.example.org"])
    app = create_app(translator, serve_app.options_from_args(args))
    body, boundary = wav_form(clip[1])
    with live_server(app, forwarded_allow_ips=trusted) as url:
        request = urllib.request.Request(url + TRANSLATIONS, data=body, method="POST", headers={
            "Host": "translate.example.org", "Origin": "https://translate.example.org", "X-Forwarded-Proto": "https",
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            got = urllib.request.urlopen(request, timeout=60).status
        except urllib.error.HTTPError as e:
            got = e.code
    assert got == status


def wav_form(wav: bytes) -> tuple[bytes, str]:
    boundary = "llmsrtboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="source_language"\r\n\r\neng\r\n'.encode(),
             f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
             'Content-Type: audio/wav\r\n\r\n'.encode() + wav + b"\r\n", f"--{boundary}--\r\n".encode()]
    return b"".join(parts), boundary


def test_a_request_the_system_cannot_run_is_the_clients_error_not_the_servers(translator, clip, monkeypatch):
    """A system that says before decoding that it cannot do what was asked (CANNOT_RUN: the whisper system into
    German) answers 400 with its own words; a row that failed in the model stays a 500."""
    from llm_srt.model.protocol import CANNOT_RUN, Output
    from llm_srt.model.systems import SpeechLLMSystem

    monkeypatch.setattr(SpeechLLMSystem, "run_batch", lambda self, items, opts: [
        Output(error=f"{CANNOT_RUN}this system translates only into English (eng), not {it.tgt}") for it in items])
    with local_client(create_app(translator, options())) as c:
        r = post(c, TRANSLATIONS, clip[1], source_language="eng", target_language="deu")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == f"{CANNOT_RUN}this system translates only into English (eng), not deu"
    monkeypatch.setattr(SpeechLLMSystem, "run_batch", lambda self, items, opts: [Output(error="RuntimeError: boom")
                                                                                 for it in items])
    with local_client(create_app(translator, options())) as c:
        assert post(c, TRANSLATIONS, clip[1], source_language="eng", target_language="deu").status_code == 500


def test_health_says_failing_when_batch_after_batch_fails_in_the_model_and_ok_once_one_answers(translator, clip,
                                                                                               monkeypatch):
    """A CUDA error stays until the process ends: every later batch fails whole. After FAILING_BATCHES such
    batches in a row /health answers 503 "failing" (an orchestrator's probe restarts the server); a request the
    system cannot run (400) or one whose client left does not count; one answered request ends it."""
    from llm_srt.model.protocol import CANNOT_RUN, Output
    from llm_srt.model.systems import SpeechLLMSystem
    from llm_srt.serve.batcher import FAILING_BATCHES

    real = SpeechLLMSystem.run_batch
    broken = {"error": "RuntimeError: CUDA error: an illegal memory access was encountered"}
    monkeypatch.setattr(SpeechLLMSystem, "run_batch", lambda self, items, opts: [Output(error=broken["error"])
                                                                                 for _ in items] if broken["error"]
                        else real(self, items, opts))
    def settled(c, status: int):  # a batch's stats are taken on the event loop once it ends, which may be a tick
        deadline = time.monotonic() + 5  # after its last answer went out
        while (health := c.get("/health")).status_code != status and time.monotonic() < deadline:
            time.sleep(0.01)
        return health

    with local_client(create_app(translator, options(max_batch=1))) as c:
        for n in range(FAILING_BATCHES):
            assert settled(c, 200).status_code == 200
            assert post(c, TRANSLATIONS, clip[1], source_language="eng").status_code == 500
        health = settled(c, 503)
        assert health.status_code == 503 and health.json()["status"] == "failing"
        assert health.json()["batching"]["failed_batches_in_a_row"] == FAILING_BATCHES
        assert health.json()["batching"]["last_error"] == broken["error"]
        broken["error"] = f"{CANNOT_RUN}not this language"  # the client's error: neither way
        assert post(c, TRANSLATIONS, clip[1], source_language="eng").status_code == 400
        assert c.get("/health").status_code == 503
        broken["error"] = None
        assert post(c, TRANSLATIONS, clip[1], source_language="eng").status_code == 200
        health = settled(c, 200)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["batching"]["failed_batches_in_a_row"] == 0



class HearsPolish:
    """Just enough of TorchWhisper for model.whisper_system.detect_language: it hears <|pl|>, a language the toolkit
    lacks."""

    generation = argparse.Namespace(lang_to_id={"<|en|>": 1, "<|de|>": 2, "<|pl|>": 3}, start=0)
    device, dtype = torch.device("cpu"), torch.float32

    def mel(self, audio):
        return torch.zeros(1, 80, 10)

    def encode(self, mel):
        return mel

    def next_logits(self, states, tokens):
        return torch.tensor([[0.0, 1.0, 2.0, 3.0]])


class FakeSystem:
    """A system whose language ID is the real one on HearsPolish, and whose rows longer than `fits_s` run out of GPU
    memory (a long upload on a working device)."""

    name, placement = "fake", CPU

    def __init__(self, fits_s: float = 60.0):
        self.fits = int(fits_s * 16000)

    def run_batch(self, items, opts):
        from llm_srt.model.protocol import Output

        if max(it.audio.size for it in items) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Output("hello", "hallo") for _ in items]

    def detect_language(self, audio):
        from llm_srt.model import whisper_system

        return whisper_system.detect_language(None, audio, self.placement)


def test_audio_in_a_language_the_toolkit_lacks_is_the_clients_400_and_the_server_stays_ok(clip, monkeypatch):
    """An OpenAI client sends no language (auto); Whisper hears Polish, which the toolkit lacks. Before, that was a
    500 counted as a failed batch: the client retried it twice, and its one call made /health answer 503 (a
    liveness probe then restarted a working server). Now a 400 naming source_language (not retried), counted
    neither way; naming the language gets the answer."""
    from llm_srt.model import whisper_system
    from llm_srt.serve.batcher import FAILING_BATCHES, LID_UNKNOWN

    monkeypatch.setattr(whisper_system, "_torch_whisper", lambda *args: HearsPolish())
    monkeypatch.setattr(whisper_system, "resolve_model", lambda *args: "whisper")
    with pytest.raises(LLMSRTError, match=f"^{LID_UNKNOWN}Whisper hears pl here"):  # the words the server keys on
        FakeSystem().detect_language(clip[0])
    with local_client(create_app(SpeechTranslator(FakeSystem()), options(max_batch=1))) as c:
        for _ in range(FAILING_BATCHES):
            r = post(c, TRANSLATIONS, clip[1])
            err = r.json()["error"]
            assert r.status_code == 400 and err["param"] == "source_language", r.text
            assert "Whisper hears pl here" in err["message"] and "give it as source_language" in err["message"]
            assert "--src" not in err["message"] and "languages.py" not in err["message"]  # the command line's advice
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["batching"]["failed_batches_in_a_row"] == 0
        assert post(c, TRANSLATIONS, clip[1], language="deu").json() == {"text": "hallo"}


def test_requests_the_model_cannot_detect_the_language_of_never_make_the_server_failing(client, clip):
    """The tiny model's Whisper has no language tokens: an auto source is a 400 (the client's to fix). Before, each
    counted as a failed batch, and three made /health answer 503."""
    from llm_srt.serve.batcher import FAILING_BATCHES

    for _ in range(FAILING_BATCHES + 1):
        r = post(client, TRANSLATIONS, clip[1])
        assert r.status_code == 400 and "cannot detect the language" in r.json()["error"]["message"]
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["batching"]["failed_batches_in_a_row"] == 0


def test_one_long_upload_out_of_gpu_memory_alone_never_makes_the_server_failing(clip):
    """A row that runs out of GPU memory as a batch of one (a long upload) is that request's 500; before, it counted
    as a failed batch, so one upload and OpenAI's two retries made /health answer 503 on a device that answers every
    shorter request."""
    from llm_srt.infer import ALONE_OUT_OF_MEMORY
    from llm_srt.serve.batcher import FAILING_BATCHES

    long = wav_bytes((0.2 * np.sin(np.arange(25 * 16000) * 0.2)).astype(np.float32))  # 25 s of a tone (constant: DC)
    with local_client(create_app(SpeechTranslator(FakeSystem(fits_s=20)), options(max_batch=1))) as c:
        for _ in range(FAILING_BATCHES):
            r = post(c, TRANSLATIONS, long, source_language="eng")
            assert r.status_code == 500 and ALONE_OUT_OF_MEMORY in r.json()["error"]["message"], r.text
            assert r.headers["x-should-retry"] == "false"  # it would run out of memory again, twice
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["batching"]["failed_batches_in_a_row"] == 0
        assert post(c, TRANSLATIONS, clip[1], source_language="eng").json() == {"text": "hallo"}


def test_a_gpu_failed_for_good_makes_the_server_failing_at_once_not_retried_and_logged_once(translator, clip,
                                                                                           monkeypatch, caplog):
    """A CUDA error that breaks the GPU for the process (infer.DeviceFailed) fails every later batch too. /health said
    ok until FAILING_BATCHES batches had failed, each request's 500 was one to retry (OpenAI's SDKs sent it twice more,
    to the broken GPU), and the batch's traceback was logged once per request in it. Now /health answers 503 after the
    first such batch, its 500s are not retried, and its traceback is logged once (a line for each request)."""
    import logging

    from llm_srt.errors import DeviceFailed

    calls = []

    def run_batch(items, opts):
        calls.append(len(items))
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(translator.system, "run_batch", run_batch)
    caplog.set_level(logging.INFO, logger="llm_srt.serve")
    with local_client(create_app(translator, options(max_batch=3, max_wait_ms=1000))) as c:
        answers = concurrent_posts(c, clip, 3)
        health = c.get("/health")
    assert calls == [3]  # one batch, not halved: the GPU fails every batch now
    for r in answers:
        err = r.json()["error"]["message"]
        assert r.status_code == 500 and r.headers["x-should-retry"] == "false" and "DeviceFailed" in err, r.text
    assert health.status_code == 503 and health.json()["status"] == "failing", health.text
    assert health.json()["batching"]["failed_batches_in_a_row"] == 1
    said = [rec for rec in caplog.records if rec.name == "llm_srt.serve"]
    assert len(said) == 3 and [isinstance(rec.exc_info and rec.exc_info[1], DeviceFailed) for rec in said].count(
        True) == 1, [rec.getMessage() for rec in said]


def test_an_answer_without_a_translation_says_so_as_translate_does(client, translator):
    """The tiny model writes 8 s of speech's transcript up to its token cap and no translation: `llm-srt translate`
    says so (infer.untranslated_note, capped_note), the server answered a plain 200 with an empty text (srt: an empty
    file) and no sign why. Now the same notes are the answer's warning on every format, and verbose_json counts the
    untranslated segments. "their transcripts are kept" is said only where the answer shows them (verbose_json
    here); json, text, srt and vtt say how to get them (test_serve_untranslated_cues)."""
    from llm_srt.infer import capped_note, untranslated_note
    from llm_srt.serve.responses import header_note

    audio = bursts(8.0)
    want = translator.translate([audio], "eng", "deu", options=DECODING)[0]
    assert want.untranslated and not want.translation and want.transcript  # what the answers below are of
    note = "; ".join(filter(None, [untranslated_note(want), capped_note(want, "max_new_tokens")]))
    kept = "their transcripts are kept"
    instead = {"json": "their transcripts are not in this text: ask for verbose_json",
               "srt": "their transcripts are not in these cues: send subtitles both"}
    said = {fmt: note.replace(kept, instead[fmt]) for fmt in instead} | {"verbose_json": note}
    said |= {"text": said["json"], "vtt": said["srt"]}
    answers = {fmt: post(client, TRANSLATIONS, wav_bytes(audio), response_format=fmt, source_language="eng",
                         target_language="deu") for fmt in ("json", "text", "srt", "vtt", "verbose_json")}
    assert {fmt: (r.status_code, r.headers.get("x-llm-srt-warning")) for fmt, r in answers.items()} == {
        fmt: (200, header_note(said[fmt])) for fmt in answers}
    assert answers["json"].json() == {"text": "", "warning": said["json"]}
    verbose = answers["verbose_json"].json()
    assert (verbose["untranslated"], verbose["warning"], verbose["transcript"]) == (want.untranslated, note,
                                                                                    want.transcript)
    assert note.count(capped_note(want, "max_new_tokens")) == 1  # the cap's note once, beside the missing translation's
    heard = translator.translate([audio], "eng", None, task="asr", options=DECODING)[0]
    asr = post(client, TRANSCRIPTIONS, wav_bytes(audio), language="eng", response_format="verbose_json")
    assert asr.json()["untranslated"] == 0  # asr writes no translation: its warning is the token cap's alone
    assert asr.json()["warning"] == notes(heard) == capped_note(heard, "max_new_tokens")


def test_text_cut_at_its_token_cap_says_so_on_every_format(client, translator, clip):
    """A translation cut at its token cap (here the request's max_new_tokens 2) was a plain 200 on json, text, srt
    and vtt: the cap's note (infer.capped_note, which `translate` prints on its own) was added only beside a missing
    translation. Now it is the answer's warning wherever a segment was cut."""
    from dataclasses import replace

    from llm_srt.infer import capped_note
    from llm_srt.serve.responses import header_note

    samples, wav = clip
    want = translator.translate([samples], "eng", "deu", task="s2tt", options=replace(DECODING, max_new_tokens=2))[0]
    assert want.capped and want.translation and not want.untranslated  # cut short, not missing
    note = capped_note(want, "max_new_tokens")
    assert "token cap (max_new_tokens, or" in note  # the request's field, not translate's --max-new-tokens
    answers = {fmt: post(client, TRANSLATIONS, wav, response_format=fmt, task="s2tt", max_new_tokens="2",
                         source_language="eng", target_language="deu") for fmt in ("json", "text", "srt", "vtt")}
    assert {fmt: (r.status_code, r.headers.get("x-llm-srt-warning")) for fmt, r in answers.items()} == {
        fmt: (200, header_note(note)) for fmt in answers}
    assert answers["json"].json() == {"text": want.translation, "warning": note}


def concurrent_posts(client, clip, n: int, targets=("deu",)) -> list:
    barrier = threading.Barrier(n)
    out = [None] * n

    def one(i):
        barrier.wait()
        out[i] = post(client, TRANSLATIONS, clip[1], source_language="eng", target_language=targets[i % len(targets)])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("max_batch", [8, 1])
def test_concurrent_requests_are_batched(translator, clip, expected, max_batch):
    spy = Spy(translator)
    with local_client(create_app(spy, options(max_batch=max_batch, max_wait_ms=300))) as c:
        responses = concurrent_posts(c, clip, 8)
        stats = c.get("/health").json()["batching"]
    assert [r.json() for r in responses] == [json_answer(expected[0].translation, expected[0])] * 8
    assert sum(spy.sizes) == 8 and stats["calls"] == len(spy.sizes)
    if max_batch == 1:
        assert spy.sizes == [1] * 8
    else:
        assert len(spy.sizes) <= 2 and max(spy.sizes) >= 4, spy.sizes


def test_mixed_language_pairs_share_a_batch(translator, clip):
    spy = Spy(translator)
    with local_client(create_app(spy, options(max_batch=8, max_wait_ms=300))) as c:
        responses = concurrent_posts(c, clip, 6, targets=("deu", "fra"))
    assert all(r.status_code == 200 for r in responses)
    assert sum(spy.sizes) == 6 and len(spy.sizes) <= 2 and max(spy.sizes) >= 4  # pairs are not regrouped
    samples = clip[0]
    alone = {t: translator.translate([samples], "eng", t, options=DECODING)[0].translation for t in ("deu", "fra")}
    assert [r.json()["text"] for r in responses] == [alone[("deu", "fra")[i % 2]] for i in range(6)]


def test_pages_and_listings(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "MediaRecorder" in page.text and '"v1/audio/translations"' in page.text
    assert not re.search(r"""(src|href)=["']https?://""", page.text)  # no CDN: everything is served from here
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "llm-srt"
    langs = client.get("/v1/languages").json()
    assert {"code": "deu", "name": "German", "script": "Latn"} in langs["data"] and langs["default_target"] == "eng"
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 404  # CDN-only


def test_serve_verb_builds_the_app(model_dir, clip, monkeypatch, capsys):
    import uvicorn

    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    args = parser.parse_args(["--model", str(model_dir), "--max-batch", "4", "--port", "0", "--max-new-tokens",
                              "8", "--name", "tiny", "--device", "cpu", "--dtype", "bfloat16"])
    seen = {}

    def run(self, sockets):
        seen.update(vars(self.config), server=self, sockets=sockets, bound=[s.getsockname() for s in sockets])

    monkeypatch.setattr(uvicorn.Server, "run", run)
    assert serve_app.main(args) == 0
    # uvicorn is handed the socket bound before the model loaded, and closed with it; --port 0 says the port picked
    assert seen["host"] == "127.0.0.1" and seen["bound"] == [("127.0.0.1", seen["port"])] and seen["port"] > 0
    assert all(s.fileno() == -1 for s in seen["sockets"])
    assert f" on http://127.0.0.1:{seen['port']}/ " in capsys.readouterr().out
    # the connection limits reach uvicorn: read timeouts in the protocol, keep-alive, the connection cap
    assert issubclass(seen["http"], GuardedH11Protocol) and seen["http"].limits == ConnectionLimits()
    assert seen["timeout_keep_alive"] == 5.0 and seen["limit_concurrency"] == ConnectionLimits().max_connections + 1
    assert seen["proxy_headers"] and "127.0.0.1" in seen["forwarded_allow_ips"]  # uvicorn's default: this host
    import logging

    logging.getLogger("llm_srt.serve").info("a client went away")  # the server's INFO lines reach stderr
    assert "INFO:     llm_srt.serve: a client went away" in capsys.readouterr().err

    args.forwarded_allow_ips = "10.0.0.5,10.0.0.6"
    assert serve_app.main(args) == 0 and seen["forwarded_allow_ips"] == "10.0.0.5,10.0.0.6"
    seen["app"].state.stopping.clear()
    seen["server"].handle_exit(2, None)  # Ctrl-C: uvicorn stops, and so would a warm-up in progress
    assert seen["server"].should_exit and seen["app"].state.stopping.is_set()
    seen["app"].state.stopping.clear()
    assert "(cpu bfloat16)" in capsys.readouterr().out  # the model runs where --device / --dtype put it
    with local_client(seen["app"]) as c:
        assert c.get("/health").json()["max_batch"] == 4
        assert c.get("/v1/models").json()["data"][0]["id"] == "tiny"
        assert post(c, TRANSLATIONS, clip[1], source_language="eng").status_code == 200
    with TestClient(seen["app"], base_url="http://evil.example") as c:  # Hosts: the --host address and localhost
        assert c.get("/health").status_code == 421
    with pytest.raises(LLMSRTError, match="max_batch"):
        serve_app.options_from_args(parser.parse_args(["--model", "x", "--max-batch", "0"]))
    with pytest.raises(LLMSRTError, match="timeout"):
        serve_app.options_from_args(parser.parse_args(["--model", "x", "--timeout-s", "0"]))
    assert serve_app.options_from_args(parser.parse_args(["--model", "x", "--line-width", "0"])).line_width == 0
    with pytest.raises(LLMSRTError, match=r"--line-width must be a finite integer in 10..10000 \(got 5\)"):
        serve_app.options_from_args(parser.parse_args(["--model", "x", "--line-width", "5"]))
    for bad in ("1", "31", "nan"):
        with pytest.raises(LLMSRTError, match=f"--max-segment-seconds {bad}: give 2 to 30 seconds"):
            serve_app.options_from_args(parser.parse_args(["--model", "x", "--max-segment-seconds", bad]))


def test_a_second_ctrl_c_exits_at_once_with_130(model_dir, monkeypatch):
    """The first Ctrl-C lets uvicorn finish the requests in flight (main returns 0: test_serve_verb_builds_the_app);
    a second one forces the exit: the process leaves at once with 130, without joining the model thread, which
    may be minutes inside a batch."""
    import signal

    import uvicorn

    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)

    def two_ctrl_cs(self, sockets):  # as uvicorn does: shut down, then raise the signal again
        self.handle_exit(signal.SIGINT, None)
        self.handle_exit(signal.SIGINT, None)
        raise KeyboardInterrupt

    class Exited(Exception):
        pass

    def exit_now(code):
        raise Exited(code)

    monkeypatch.setattr(uvicorn.Server, "run", two_ctrl_cs)
    monkeypatch.setattr(serve_app.os, "_exit", exit_now)
    try:
        with pytest.raises(Exited) as exited:
            serve_app.main(parser.parse_args(["--model", str(model_dir), "--port", "0"]))
    except KeyboardInterrupt:  # uvicorn's, let through: the interpreter would then wait for the model thread
        pytest.fail("a second Ctrl-C did not exit at once: uvicorn's KeyboardInterrupt went on to the interpreter")
    assert exited.value.args == (130,)


def test_max_segment_seconds_cuts_a_requests_speech_into_shorter_cues(translator, model_dir, monkeypatch):
    """serve --max-segment-seconds 5: 40 s of 1.5 s tones 1 s apart comes back as cues of at most 5 s, each the
    model's own text for that stretch (translate with the same option); /health says the limit."""
    import uvicorn

    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: seen.update(app=self.config.app))
    args = parser.parse_args(["--model", str(model_dir), "--max-new-tokens", "8", "--max-segment-seconds", "5",
                              "--port", "0"])
    assert serve_app.main(args) == 0
    samples = bursts(40.0)
    ask = dict(source_language="eng", target_language="deu")
    with local_client(seen["app"]) as c:
        assert c.get("/health").json()["limits"]["max_segment_seconds"] == 5.0
        segs = post(c, TRANSLATIONS, wav_bytes(samples), response_format="verbose_json", **ask).json()["segments"]
        srt = post(c, TRANSLATIONS, wav_bytes(samples), response_format="srt", **ask).text
    assert len(segs) >= 8 and all(s["end"] - s["start"] <= 5.0 for s in segs)
    want = translator.translate([samples], "eng", "deu", options=serve_app.options_from_args(args).batch.decoding,
                                segment_options=segment_options(5.0))[0]
    assert [(s["start"], s["end"], s["translation"]) for s in segs] == [
        (s.start, s.end, s.translation) for s in want.segments]
    assert len(re.findall(r"^\d+\n\d\d:\d\d:\d\d,\d\d\d --> ", srt, flags=re.M)) == len(
        [s for s in segs if s["translation"]])


def test_a_request_decodes_with_its_own_beam_size_and_token_cap(client, translator, clip):
    """beam_size and max_new_tokens fields: the answer is what the model says with those options."""
    from dataclasses import replace

    samples, audio = clip
    for fields, decoding in (({"max_new_tokens": "3"}, replace(DECODING, max_new_tokens=3)),
                             ({"beam_size": "2"}, replace(DECODING, beam_size=2)),
                             ({"beam_size": "1", "max_new_tokens": ""}, DECODING)):
        want = translator.translate([samples], "eng", "deu", task="srt", options=decoding)[0]
        r = post(client, TRANSLATIONS, audio, source_language="eng", target_language="deu",
                 response_format="verbose_json", **fields)
        assert r.status_code == 200 and r.json()["text"] == want.translation, (fields, r.text)
    capped = translator.translate([samples], "eng", "deu", task="srt", options=replace(DECODING, max_new_tokens=3))[0]
    full = translator.translate([samples], "eng", "deu", task="srt", options=DECODING)[0]
    assert (capped.transcript, capped.translation) != (full.transcript, full.translation)  # the cap did cut it


def test_a_greedy_server_stays_greedy_unless_its_operator_raises_max_beam(translator, clip):
    args = argparse.ArgumentParser()
    serve_app.add_arguments(args)
    assert serve_app.options_from_args(args.parse_args(["--model", "m"])).max_beam is None
    assert serve_app.options_from_args(args.parse_args(["--model", "m", "--max-beam", "6"])).max_beam == 6
    with local_client(create_app(translator, options())) as c:  # --beam 1, no --max-beam
        r = post(c, TRANSLATIONS, clip[1], source_language="eng", beam_size="2")
        assert r.status_code == 400 and "from 1 to 1" in r.json()["error"]["message"]
        assert post(c, TRANSLATIONS, clip[1], source_language="eng", beam_size=" 1 ").status_code == 200


class PartlyFailing:
    """The inner translator's results with a second, failed segment each (a CUDA error on one segment of a long
    input leaves its result so: the error set, the other segments' texts kept)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def translate(self, inputs, *args, on_result=None, **kw):
        from dataclasses import replace

        from llm_srt.infer import SegmentResult

        results = []
        for i, r in enumerate(self.inner.translate(inputs, *args, **kw)):
            bad = SegmentResult(r.duration, r.duration + 1.0, "", "", error="RuntimeError: CUDA error")
            results.append(replace(r, segments=[*r.segments, bad], error="1 of 2 segments failed (the first, ...)"))
            if on_result is not None:
                on_result(i, results[-1])
        return results


def test_a_request_that_failed_in_part_gets_the_rest_and_says_so(translator, clip, expected):
    """Before, any failed segment made the whole request a 500 (which OpenAI clients retry twice, running the whole
    audio three times) and its good segments were thrown away."""
    samples, wav = clip
    srt, _ = expected
    ask = {"source_language": "eng", "target_language": "deu"}
    error = "1 of 2 segments failed (the first, ...)"
    kept = PartlyFailing(translator).translate([samples], "eng", "deu", options=DECODING)[0]
    with local_client(create_app(PartlyFailing(translator), options())) as c:
        answers = {fmt: post(c, TRANSLATIONS, wav, response_format=fmt, **ask)
                   for fmt in ("json", "text", "srt", "vtt")}
        verbose = post(c, TRANSLATIONS, wav, response_format="verbose_json", **ask).json()
    assert verbose["error"] == error and verbose["text"] == srt.translation
    assert [s["error"] for s in verbose["segments"]] == [None, "RuntimeError: CUDA error"]
    # every format says so (json, text, srt and vtt clients had no sign of it): a header, and json's body
    assert {fmt: (r.status_code, r.headers.get("x-llm-srt-error")) for fmt, r in answers.items()} == {
        fmt: (200, error) for fmt in answers}
    assert answers["json"].json() == {**json_answer(srt.translation, kept), "error": error}
    assert srt.translation in answers["srt"].text  # and the token cap's note, which the tiny model's text reaches
    assert answers["srt"].headers.get("x-llm-srt-warning") == notes(kept)


def test_an_upload_cut_short_is_answered_as_far_as_it_goes_and_says_so(client, translator):
    """A FLAC cut to a quarter of its bytes decodes its first 4.9 s of 20 s: translated, and answered 200 as if that
    were all of it; the warning naming the seconds kept reached the server's log alone. Now verbose_json's "warning"
    and a header on every format carry it (one line of ASCII: the name of the file may be in any script)."""
    import io

    import soundfile as sf

    from llm_srt.audio import load_audio
    from llm_srt.serve.responses import header_note

    buf = io.BytesIO()
    sf.write(buf, bursts(20.0), 16000, format="FLAC", subtype="PCM_16")
    cut = buf.getvalue()[:len(buf.getvalue()) // 4]
    ask = {"source_language": "eng", "target_language": "deu", "name": "讲座.flac", "media": "audio/flac"}
    verbose = post(client, TRANSLATIONS, cut, response_format="verbose_json", **ask)
    body = verbose.json()
    assert verbose.status_code == 200 and body["error"] is None and 1 < body["duration"] < 10, verbose.text
    kept = re.fullmatch(r"讲座\.flac: only the first (\d+\.\d) s of 20\.0 s decode \(.+\): the file is damaged or cut "
                        r"short; those are used \(re-export it, or copy it again, for the rest\)(.*)", body["warning"])
    assert kept and float(kept[1]) == round(body["duration"], 1), body["warning"]
    # then the model's own notes on what was kept (the tiny model's text runs to its token cap)
    said = notes(translator.translate([load_audio(cut, salvage=True)], "eng", "deu", options=DECODING)[0])
    assert kept[2] == (f"; {said}" if said else ""), body["warning"]
    header = header_note(body["warning"])  # one line of ASCII, at most 300 characters
    assert header.startswith("\\u8bb2\\u5ea7.flac: only the first") and len(header) <= 300
    assert verbose.headers["x-llm-srt-warning"] == header
    for fmt in ("srt", "json"):
        r = post(client, TRANSLATIONS, cut, response_format=fmt, **ask)
        assert r.status_code == 200 and r.headers["x-llm-srt-warning"] == header, (fmt, r.headers)
        assert "x-llm-srt-error" not in r.headers
    assert r.json() == {"text": r.json()["text"], "warning": body["warning"]}


def test_an_app_mounted_without_its_lifespan_says_so_and_is_not_retried(translator, clip):
    """Mounted inside another app without its lifespan, the app never started its decode pool and batcher: every
    request was a 500 "the model failed: AttributeError: 'NoneType' object has no attribute 'submit'", which the
    OpenAI SDKs retry twice. Now the 500 names the lifespan and how to run it, and is not retried."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/llm-srt", app=create_app(translator, options()))])
    with TestClient(outer, base_url="http://localhost") as c:
        r = post(c, "/llm-srt" + TRANSLATIONS, clip[1], source_language="eng")
    err = r.json()["error"]
    assert r.status_code == 500 and r.headers.get("x-should-retry") == "false", r.text
    assert err["message"].startswith("the server's lifespan did not run") and "lifespan_context" in err["message"]
    assert "AttributeError" not in err["message"]


def test_silence_is_no_speech_and_impossible_subtitles_are_refused(client):
    silence = wav_bytes(np.zeros(32000, dtype=np.float32))
    verbose = post(client, TRANSLATIONS, silence, target_language="deu", response_format="verbose_json").json()
    assert verbose["no_speech"] is True and verbose["source_language"] == "unknown" and verbose["segments"] == []
    assert verbose["language"] == "german"  # a translation's language is its target's, heard or not
    r = post(client, TRANSCRIPTIONS, silence, language="eng", response_format="srt", subtitles="translation")
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "subtitles" and "task asr writes no translation" in err["message"]


def test_head_probes_and_a_streamed_request_get_plain_answers(client, clip):
    """Uptime checks and proxies probe with HEAD (405 made a healthy server look down); the OpenAI SDK's
    stream=True read the JSON answer as an empty stream without an error: a 400 naming the field now."""
    for path in ("/health", "/v1/models", "/"):
        assert client.head(path).status_code == 200, path
    r = post(client, TRANSLATIONS, clip[1], source_language="eng", stream="true")
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream", r.text
    assert post(client, TRANSLATIONS, clip[1], source_language="eng", stream="false").status_code == 200


@pytest.mark.parametrize("path, fields, field", [
    (TRANSCRIPTIONS, {}, "language"),  # an OpenAI client's field for the source
    (TRANSCRIPTIONS, {"source_language": "auto"}, "source_language"),
    (TRANSLATIONS, {}, "source_language"),  # OpenAI's translations have none: ours, as the docs show
    (TRANSLATIONS, {"language": "auto"}, "language"),
])
def test_a_model_without_language_id_names_the_requests_own_field_and_no_cli_flag(client, clip, path, fields,
                                                                                   field):
    """An auto source on a model that cannot detect the language: the 400 told every client to give
    `source_language`, even an OpenAI client on /v1/audio/transcriptions (whose field is `language`), and passed on
    the system's advice for the command line (--src). Now it names the field the request sent, else the endpoint's
    own, and no flag."""
    r = post(client, path, clip[1], **fields)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == field, r.text
    assert err["message"].startswith(f"{field} auto: this model cannot detect the language (")
    assert err["message"].endswith(f"; give {field} (e.g. eng, en or English)") and "--" not in err["message"]


class DetectsEnglish(FakeSystem):
    def detect_language(self, audio):
        return "eng"


def test_auto_is_as_case_blind_as_the_language_names():
    """`language=English` was accepted and `language=AUTO` an unknown language."""
    with local_client(create_app(SpeechTranslator(DetectsEnglish()), options())) as c:
        for auto in ("auto", "AUTO", " Auto "):
            r = post(c, TRANSCRIPTIONS, wav_bytes(bursts(2.0)), language=auto, response_format="verbose_json")
            assert r.status_code == 200 and r.json()["language"] == "english", (auto, r.text)


def test_a_method_not_allowed_says_which_are(client):
    """A 405 is to carry Allow (RFC 9110); the JSON error handler dropped Starlette's headers."""
    for method, path, allowed in (("GET", TRANSLATIONS, {"POST"}), ("DELETE", "/health", {"GET", "HEAD"}),
                                  ("PUT", "/v1/languages", {"GET"})):
        r = client.request(method, path)
        assert r.status_code == 405 and set(r.headers.get("allow", "").split(", ")) == allowed, (path, r.headers)
        assert r.json()["error"]["message"] == f"{method} is not allowed on {path}"
