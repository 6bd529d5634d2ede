"""The official `openai` client against a real uvicorn server on a free loopback port."""

import time

import httpx
import openai
import pytest
from serve_helpers import DECODING, bursts, live_server, wav_bytes

from llm_srt.serve import BatchOptions, ServeOptions, create_app

# openai marks audio.translations as deprecated (OpenAI's own endpoint is); the call is what clients use.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def base_url(translator):
    app = create_app(translator, ServeOptions(model_name="llm-srt-tiny", max_upload_mb=1,
                                              batch=BatchOptions(decoding=DECODING)))
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=30)


def test_openai_client_translates_and_transcribes(client, translator, clip):
    samples, wav = clip
    want = translator.translate([samples], "eng", "deu", options=DECODING)[0]
    got = client.audio.translations.create(model="llm-srt-tiny", file=("clip.wav", wav, "audio/wav"),
                                           extra_body={"source_language": "eng", "target_language": "deu"})
    assert got.text == want.translation
    verbose = client.audio.translations.create(model="whisper-1", file=("clip.wav", wav, "audio/wav"),
                                               response_format="verbose_json",
                                               extra_body={"source_language": "eng", "target_language": "deu"})
    # OpenAI's TranslationVerbose.language is "the language of the output translation"; before, it was the source
    assert verbose.duration == 1.0 and verbose.language == "german" and verbose.text == want.translation
    assert verbose.source_language == "english" and verbose.target_language == "deu"  # our fields, kept by the SDK
    srt = client.audio.translations.create(model="llm-srt-tiny", file=("clip.wav", wav, "audio/wav"),
                                           response_format="srt", temperature=0, prompt="ignored",
                                           extra_body={"source_language": "eng", "target_language": "deu"})
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\n") and want.translation in srt
    asr = translator.translate([samples], "eng", None, task="asr", options=DECODING)[0]
    text = client.audio.transcriptions.create(model="llm-srt-tiny", file=("clip.wav", wav, "audio/wav"),
                                              language="en")
    assert text.text == asr.transcript
    assert [m.id for m in client.models.list().data] == ["llm-srt-tiny"]


def test_openai_client_sees_our_errors(client, clip):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.translations.create(model="x", file=("clip.wav", clip[1], "audio/wav"),
                                         extra_body={"source_language": "eng", "target_language": "xyz"})
    assert e.value.status_code == 400 and "unknown language 'xyz'" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:  # before, accepted and ignored: greedy decoding as if sampled
        client.audio.transcriptions.create(model="x", file=("clip.wav", clip[1], "audio/wav"), language="en",
                                           temperature=0.8)
    assert "temperature '0.8': decoding is deterministic" in str(e.value)
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.translations.create(model="x", file=("long.wav", wav_bytes(bursts(40.0)), "audio/wav"),
                                         extra_body={"source_language": "eng"})
    assert e.value.status_code == 413 and "--max-upload-mb" in str(e.value)


class Slow:
    """The translator, answering after `delay` seconds and counting its calls."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.calls = inner, delay, 0

    def translate(self, inputs, *args, **kw):
        self.calls += 1
        time.sleep(self.delay)
        return self.inner.translate(inputs, *args, **kw)


def test_the_sdk_does_not_send_a_timed_out_request_again(translator, clip):
    """The SDK retries a 408 or 5xx twice unless told `x-should-retry: false`: before, a --timeout-s 504 was decoded
    and run three times. A 503 (busy, with Retry-After) stays one to retry."""
    slow = Slow(translator, delay=1.0)
    app = create_app(slow, ServeOptions(timeout_s=0.3, batch=BatchOptions(decoding=DECODING)))
    posts = []

    @app.middleware("http")
    async def count(request, call_next):
        posts.append(request.method)
        return await call_next(request)

    with live_server(app) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", timeout=30)  # the SDK's own max_retries=2
        with pytest.raises(openai.APIStatusError) as e:
            sdk.audio.translations.create(model="x", file=("clip.wav", clip[1], "audio/wav"),
                                          extra_body={"source_language": "eng"})
        assert posts.count("POST") == 1 and slow.calls == 1, (posts, slow.calls)
        assert e.value.status_code == 504 and e.value.response.headers["x-should-retry"] == "false"


def test_chunked_upload_over_the_limit_is_refused_while_streaming(base_url):
    boundary = "llmsrtboundary"

    def body():  # no Content-Length: the server has to count
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(30):
            yield b"\x00" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{base_url}/v1/audio/translations", content=body(), timeout=30,
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_verbose_json_speaks_openais_language_and_refuses_word_timestamps(client, base_url, clip):
    """OpenAI's verbose_json gives "language" as a lower-case English name and timestamp_granularities=["word"] gives
    words. Ours gave the ISO 639-3 code and took word to answer without a word (a client read it as none spoken):
    now OpenAI's name, and word is a 400 that says to ask for segment (sent by the SDK as timestamp_granularities[],
    by hand often without the brackets)."""
    wav = ("clip.wav", clip[1], "audio/wav")
    got = client.audio.transcriptions.create(model="whisper-1", file=wav, language="de",
                                             response_format="verbose_json", timestamp_granularities=["segment"])
    assert got.language == "german" and got.segments[0].start == 0.0 and not getattr(got, "words", None)
    assert got.segments[0].avg_logprob is None  # the SDK's field, left out: the model does not measure it
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="whisper-1", file=wav, language="de",
                                           response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert "word timestamps are not supported; ask for segment" in str(e.value)
    for field in ("timestamp_granularities[]", "timestamp_granularities"):
        r = httpx.post(f"{base_url}/v1/audio/transcriptions", files={"file": wav}, timeout=30,
                       data={"language": "de", "response_format": "verbose_json", field: "word"})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "timestamp_granularities" and "\n" not in err["message"]
    r = httpx.post(f"{base_url}/v1/audio/transcriptions", files={"file": wav}, timeout=30,
                   data={"language": "de", "timestamp_granularities[]": "char"})
    assert r.status_code == 400 and "use segment" in r.json()["error"]["message"]


def test_nan_scores_are_one_500_not_retried_and_the_server_stays_ok(translator, clip, monkeypatch):
    """An LLM overflowing its dtype on one clip gives NaN scores (`decoding.refuse_broken_scores`), the same every
    time. Its 500 had no `x-should-retry: false`: the SDK sent it twice more, each counted as a failed batch, so one
    user call made /health answer 503 (a probe then restarts a server that answers every other clip)."""
    import torch

    from llm_srt.model.decoding import BROKEN_SCORES, refuse_broken_scores

    calls = []

    def run_batch(items, options):  # the real check on the scores of a model that overflows on every row
        calls.append(len(items))
        refuse_broken_scores(torch.full((len(items), 8), float("nan")), torch.float16)

    monkeypatch.setattr(translator.system, "run_batch", run_batch)
    app = create_app(translator, ServeOptions(batch=BatchOptions(decoding=DECODING)))
    with live_server(app) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", timeout=30)  # the SDK's own max_retries=2
        with pytest.raises(openai.InternalServerError) as e:
            sdk.audio.translations.create(model="x", file=("clip.wav", clip[1], "audio/wav"),
                                          extra_body={"source_language": "eng", "target_language": "deu"})
        assert BROKEN_SCORES in str(e.value) and e.value.response.headers["x-should-retry"] == "false"
        assert calls == [1]  # one model call: not sent again, nor halved
        health = httpx.get(f"{url}/health")
        assert health.status_code == 200 and health.json()["batching"]["failed_batches_in_a_row"] == 0


def test_openais_transcription_fields_the_server_has_no_use_for_are_accepted(client, clip):
    """What the SDK sends for chunking_strategy (an object: chunking_strategy[type]), include and the known
    speakers (lists: name[]) is ignored, as prompt is, where any other unknown field is a 400 (test_serve_fields)."""
    got = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", clip[1], "audio/wav"),
                                             language="en", include=["logprobs"], prompt="ignored",
                                             chunking_strategy={"type": "server_vad", "silence_duration_ms": 500},
                                             known_speaker_names=["a"],
                                             known_speaker_references=["data:audio/wav;base64,AAAA"])
    assert got.text == client.audio.transcriptions.create(model="whisper-1", language="en",
                                                          file=("clip.wav", clip[1], "audio/wav")).text
    assert client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", clip[1], "audio/wav"),
                                              language="en", chunking_strategy="auto").text == got.text
