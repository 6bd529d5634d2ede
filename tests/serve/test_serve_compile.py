"""`serve --compile`: the decode steps of every batch size compiled before the first request, none while serving."""

import pytest
import torch
from torch._dynamo.utils import counters

import tiny
from llm_srt import cli
from llm_srt.infer import SpeechTranslator
from llm_srt.model import decoding
from llm_srt.model.decoding import DecodingOptions, StaticSteps
from llm_srt.model.kv_cache import static_length
from llm_srt.model.llm import causal_lm
from llm_srt.serve import app as serve_app
from llm_srt.serve.app import ServeOptions, create_app, warm_up
from llm_srt.serve.batcher import BatchOptions
from serve_helpers import local_client, wav_bytes

SERVED_TOKENS = 300  # the server's --max-new-tokens: with the prompt, a cache of 512 positions


def test_warm_up_compiles_each_batch_size_and_requests_compile_nothing(tmp_path, monkeypatch):
    folder = tiny.speech_llm_folder(tmp_path / "model")
    translator = SpeechTranslator.from_pretrained(folder)  # its own LLM object: the served shapes are per model
    lm = causal_lm(translator.system.model.llm)
    options = BatchOptions(max_batch=3, max_wait_ms=0, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                                 compile=True))
    logged = []
    warm_up(translator, options, log=logged.append)
    assert logged[0] == "--compile: compiling the decode steps of batches of 1, 2, 3 before serving"
    assert StaticSteps._served[lm] == {1: {512}, 2: {512}, 4: {512}}  # 3 requests decode as a batch of 4
    graphs, steps = counters["stats"]["unique_graphs"], StaticSteps.steps_taken
    clips = [tiny.tone(1.0 + 0.3 * i, 300 + 100 * i, seed=i) for i in range(3)]
    short = DecodingOptions(max_new_tokens=12, compile=True)  # a cache of 256 would hold these
    assert static_length(100 + 12) == 256
    with local_client(create_app(translator, ServeOptions(batch=options))) as client:
        answer = client.post("/v1/audio/translations", files={"file": ("a.wav", wav_bytes(clips[0]))},
                             data={"source_language": "eng", "target_language": "deu", "response_format": "json",
                                   "max_new_tokens": "12"})
    assert answer.status_code == 200, answer.text
    served = [r.translation for r in translator.translate(clips, "eng", "deu", options=short, batch_size=3)]
    served += [r.translation for r in translator.translate(clips[:2], "eng", "deu", options=short, batch_size=2)]
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled while serving
    assert StaticSteps.steps_taken > steps  # the requests did run compiled steps, on the served shapes
    eager = SpeechTranslator.from_pretrained(folder)
    expected = [r.translation for r in eager.translate(clips, "eng", "deu", options=DecodingOptions(max_new_tokens=12),
                                                       batch_size=3)]
    assert served == expected + expected[:2]  # a longer cache, masked: the same tokens
    assert answer.json()["text"] == expected[0]
    for rows in (5, 6):  # shapes not served (batch 8) take their own caches; the served ones' stay kept
        with torch.no_grad():
            translator.translate(clips * 2, "eng", "deu", options=short, batch_size=rows)
    assert {(1, 512), (2, 512), (4, 512)} <= {key[:2] for key in StaticSteps._caches[lm]}


def test_warm_up_stops_where_the_model_decodes_without_compiled_steps(tmp_path, monkeypatch):
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    monkeypatch.setattr(decoding.StaticSteps, "fits", classmethod(lambda cls, lm, rows, positions: False))
    logged = []
    warm_up(translator, BatchOptions(max_batch=8, decoding=DecodingOptions(max_new_tokens=8, compile=True)),
            log=logged.append)
    assert logged[1] == ("--compile: the warm-up batch of 1 ran no compiled step (this model decodes eagerly here, "
                         "or its outputs ended at once); serving without the rest of the warm-up")
    assert causal_lm(translator.system.model.llm) not in StaticSteps._served


@pytest.mark.parametrize("flag", [[], ["--compile"]])
def test_serve_warms_up_before_it_listens_only_with_compile(flag, tmp_path, monkeypatch):
    import uvicorn

    events = []
    monkeypatch.setattr(serve_app, "warm_up", lambda translator, options: events.append(("warm", options.max_batch)))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: events.append(("listen", kwargs["port"])))
    folder = tiny.speech_llm_folder(tmp_path / "model")
    assert cli.main(["serve", "--model", str(folder), "--port", "8123", "--max-batch", "4", *flag]) == 0
    assert events == ([("warm", 4)] if flag else []) + [("listen", 8123)]


@pytest.mark.cuda
def test_warm_up_on_cuda_then_requests_replay_cuda_graphs_without_compiling(tmp_path):
    """On a GPU the served shapes replay as CUDA graphs: after the warm-up a batch of requests compiles nothing and
    skips no graph, and writes what eager float32 decoding writes."""
    folder = tiny.speech_llm_folder(tmp_path / "model")
    translator = SpeechTranslator.from_pretrained(folder, device="cuda", dtype="float32")
    warm_up(translator, BatchOptions(max_batch=4, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                           compile=True)), log=lambda *_: None)
    graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
    clips = [tiny.tone(1.0 + 0.3 * i, 300 + 100 * i, seed=i) for i in range(3)]
    served = translator.translate(clips, "eng", "deu", options=DecodingOptions(max_new_tokens=12, compile=True),
                                  batch_size=3)
    assert counters["stats"]["unique_graphs"] == graphs and counters["inductor"]["cudagraph_skips"] == skips
    eager = SpeechTranslator.from_pretrained(folder, device="cuda", dtype="float32")
    assert [r.translation for r in served] == [r.translation for r in eager.translate(
        clips, "eng", "deu", options=DecodingOptions(max_new_tokens=12), batch_size=3)]


def test_where_the_longest_cache_does_not_compile_a_short_clips_does(tmp_path, monkeypatch):
    """A model whose static steps stop at 256 positions (as a sliding window of 256 would): the warm-up's 30 s
    batch decodes eagerly, so a 1 s clip's shape is compiled instead, and a short request compiles nothing."""
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    lm = causal_lm(translator.system.model.llm)
    fits = StaticSteps.fits.__func__
    monkeypatch.setattr(decoding.StaticSteps, "fits", classmethod(
        lambda cls, lm, rows, positions: fits(cls, lm, rows, positions) and cls.shape(lm, rows, positions)[1] <= 256))
    warm_up(translator, BatchOptions(max_batch=2, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                           compile=True)), log=lambda *_: None)
    assert StaticSteps._served[lm] == {1: {256}, 2: {256}}
    graphs, steps = counters["stats"]["unique_graphs"], StaticSteps.steps_taken
    translator.translate([tiny.tone(1.0, 440)] * 2, "eng", "deu",
                         options=DecodingOptions(max_new_tokens=12, compile=True), batch_size=2)
    assert counters["stats"]["unique_graphs"] == graphs and StaticSteps.steps_taken > steps
