"""`serve --compile`: the decode steps of every batch size compiled before the first request, none while serving."""

import threading

import pytest
import torch
from torch._dynamo.utils import counters

import tiny
from llm_srt.infer import SpeechTranslator
from llm_srt.model import kv_cache
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.llm import causal_lm
from llm_srt.model.static_steps import StaticSteps
from llm_srt.model.systems import SpeechLLMSystem
from llm_srt.serve import warmup
from llm_srt.serve.app import ServeOptions, create_app
from llm_srt.serve.batcher import BatchOptions
from llm_srt.serve.warmup import warm_up
from serve_helpers import local_client, wav_bytes

SERVED_TOKENS = 300  # the server's --max-new-tokens: with the prompt, a cache of 512 positions
SHORT = DecodingOptions(max_new_tokens=12, compile=True)  # a request's: a cache of 256 positions would hold it


def clips(n: int = 3):
    return [tiny.tone(1.0 + 0.3 * i, 300 + 100 * i, seed=i) for i in range(n)]


@pytest.mark.long(59)
def test_warm_up_compiles_each_batch_size_and_requests_compile_nothing(tmp_path):
    folder = tiny.speech_llm_folder(tmp_path / "model")
    translator = SpeechTranslator.from_pretrained(folder)  # its own LLM object: the served shapes are per model
    lm = causal_lm(translator.system.model.llm)
    options = BatchOptions(max_batch=3, max_wait_ms=0, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                                 compile=True))
    logged = []
    warm_up(translator, options, log=logged.append)
    assert logged[0] == "--compile: compiling the decode steps of batches of 3, 2, 1 before serving"
    assert StaticSteps._served[lm] == {1: {512}, 2: {512}, 4: {512}}  # 3 requests decode as a batch of 4
    kept = dict(StaticSteps._caches[lm])  # every served shape's cache kept (more than STATIC_CACHES)
    assert sorted(key[:2] for key in kept) == [(1, 512), (2, 512), (4, 512)]
    graphs, steps = counters["stats"]["unique_graphs"], StaticSteps.steps_taken
    with local_client(create_app(translator, ServeOptions(batch=options, warm_up=False))) as client:
        answer = client.post("/v1/audio/translations", files={"file": ("a.wav", wav_bytes(clips()[0]))},
                             data={"source_language": "eng", "target_language": "deu", "response_format": "json",
                                   "max_new_tokens": "12"})
    assert answer.status_code == 200, answer.text
    served = [r.translation for r in translator.translate(clips(), "eng", "deu", options=SHORT, batch_size=3)]
    served += [r.translation for r in translator.translate(clips(2), "eng", "deu", options=SHORT, batch_size=2)]
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled while serving
    assert all(StaticSteps._caches[lm][key] is cache for key, cache in kept.items())  # the same KV buffers: on a
    #   GPU each served shape's CUDA graph replays on them instead of being recorded again
    assert StaticSteps.steps_taken > steps  # the requests did run compiled steps, on the served shapes
    eager = SpeechTranslator.from_pretrained(folder)
    expected = [r.translation for r in eager.translate(clips(), "eng", "deu",
                                                       options=DecodingOptions(max_new_tokens=12), batch_size=3)]
    assert served == expected + expected[:2]  # a longer cache, masked: the same tokens
    assert answer.json()["text"] == expected[0]


@pytest.mark.parametrize("window, served_tokens, served", [(256, SERVED_TOKENS, 256), (512, 600, 512)])
@pytest.mark.long(11)
def test_where_the_longest_cache_cannot_be_static_the_longest_that_can_is_served(window, served_tokens, served,
                                                                               tmp_path, monkeypatch):
    """A model whose static cache must not pass `window` positions (a sliding window, as Gemma-3's 512): the 30 s
    batch decodes eagerly once, then a 1 s clip's batch compiles the longest length that can be static, for every
    batch size, and a short request compiles nothing."""
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    lm = causal_lm(translator.system.model.llm)
    monkeypatch.setattr(kv_cache, "static_fits", lambda config, length: length <= window)
    runs = []
    real = SpeechLLMSystem.run_batch
    monkeypatch.setattr(SpeechLLMSystem, "run_batch",
                        lambda self, items, options: runs.append((len(items), items[0].audio.size)) or
                        real(self, items, options))
    warm_up(translator, BatchOptions(max_batch=2, decoding=DecodingOptions(max_new_tokens=served_tokens,
                                                                           compile=True)), log=lambda *_: None)
    assert StaticSteps._served[lm] == {1: {served}, 2: {served}}
    assert runs == [(2, 480000), (2, 16000), (1, 16000)]  # the 30 s clip once: it cannot be static at any size
    graphs, steps = counters["stats"]["unique_graphs"], StaticSteps.steps_taken
    translator.translate(clips(2), "eng", "deu", options=SHORT, batch_size=2)
    assert counters["stats"]["unique_graphs"] == graphs and StaticSteps.steps_taken > steps


def test_warm_up_ends_in_one_line_where_there_is_nothing_to_compile(tmp_path, monkeypatch):
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    logged = []
    greedy = BatchOptions(max_batch=8, decoding=DecodingOptions(max_new_tokens=8, compile=True))
    warm_up(translator, BatchOptions(decoding=DecodingOptions(beam_size=4, compile=True)), log=logged.append)
    monkeypatch.setattr(StaticSteps, "fits", classmethod(lambda cls, lm, rows, positions: False))
    warm_up(translator, greedy, log=logged.append)
    assert logged == ["--compile: only greedy decoding is compiled, and this server decodes with --beam 4: no warm-up",
                      "--compile: this model decodes eagerly here (an attention kind without a static "
                      "cache, or its step did not compile): no warm-up"]
    assert causal_lm(translator.system.model.llm) not in StaticSteps._served
    monkeypatch.undo()
    monkeypatch.setattr(SpeechLLMSystem, "run_batch", lambda self, items, options: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")))
    logged.clear()
    stop = threading.Event()
    warm_up(translator, greedy, log=lambda line: (logged.append(line), "batch of 2 " in line and stop.set()),
            stopping=stop)
    assert logged[1:-1] == [f"--compile: the warm-up batch of {n} failed (OutOfMemoryError: CUDA out of memory. "
                            "Tried to allocate 9.00 GiB); that batch size compiles when a request needs it"
                            for n in (8, 4, 2)] + ["--compile: the warm-up was stopped"]  # Ctrl-C before batch 1
    assert causal_lm(translator.system.model.llm) not in StaticSteps._served  # nothing ran: nothing served


def test_the_warm_up_item_has_the_largest_budget_any_request_can_have_and_the_longest_segment(tmp_path, monkeypatch):
    """The warm-up's cache must hold the longest request: SRT between two wide-script languages (jpn -> zho: 1,824
    tokens for 30 s at the default cap; eng -> jpn, what it warmed before, has 1,284), and no longer a clip than the
    server's --max-segment-seconds cuts. An out-of-memory batch gives the kept caches back before the next one."""
    import itertools

    import numpy as np

    from llm_srt import languages
    from llm_srt.infer import MAX_NEW_TOKENS, item_budget
    from llm_srt.model.protocol import Item
    from llm_srt.prompts import Task
    from llm_srt.segment import SegmentOptions

    clip = np.zeros(30 * 16000, dtype=np.float32)
    budget = item_budget(Item(clip, *warmup.widest_pair(), Task.SRT), MAX_NEW_TOKENS)
    assert budget == MAX_NEW_TOKENS == max(item_budget(Item(clip, s, t, Task.SRT), MAX_NEW_TOKENS)
                                           for s, t in itertools.permutations(languages.LANGUAGES, 2))
    assert item_budget(Item(clip, "eng", "jpn", Task.SRT), MAX_NEW_TOKENS) == 1284
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    seen, dropped = [], []
    def compiled_batch(system, clip, size, options):
        seen.append(clip.size)
        if size == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return True

    monkeypatch.setattr(warmup, "_compiled_batch", compiled_batch)
    monkeypatch.setattr(warmup.StaticSteps, "drop_caches", classmethod(lambda cls: dropped.append(1) or 0))
    logged = []
    warm_up(translator, BatchOptions(max_batch=2, decoding=DecodingOptions(max_new_tokens=8, compile=True),
                                     segment=SegmentOptions(max_seconds=7.0)), log=logged.append)
    assert seen == [7 * 16000, 7 * 16000] and dropped == [1]
    assert logged[1].startswith("--compile: the warm-up batch of 2 failed (OutOfMemoryError: CUDA out of memory)")


def test_warm_up_skips_the_batch_sizes_that_decode_eagerly(tmp_path, monkeypatch):
    """int8 on the CPU compiles one-row steps only: the warm-up says which sizes decode eagerly, and warms up the
    others (here batch 1), instead of stopping at the first size that runs no compiled step."""
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    fits = StaticSteps.fits.__func__
    monkeypatch.setattr(StaticSteps, "fits",
                        classmethod(lambda cls, lm, rows, positions: rows == 1 and fits(cls, lm, rows, positions)))
    sizes = []
    real = warmup._compiled_batch
    monkeypatch.setattr(warmup, "_compiled_batch", lambda system, clip, size, options: sizes.append(size) or real(
        system, clip, size, options))
    logged = []
    warm_up(translator, BatchOptions(max_batch=4, decoding=DecodingOptions(max_new_tokens=8, compile=True)),
            log=logged.append)
    assert logged[0] == ("--compile: batches of 4, 2 decode eagerly (int8 CPU steps compile at 1 row at most: more "
                         "were slower compiled)")
    assert set(sizes) == {1} and not any("ran no compiled step" in line for line in logged)
    assert set(StaticSteps._served[causal_lm(translator.system.model.llm)]) == {1}


def test_a_shape_is_served_only_once_a_compiled_step_ran(tmp_path, monkeypatch):
    """A warm-up generation that fails before its compiled step (out of memory in its cache) serves nothing, so
    requests of that batch size keep their own shapes."""
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    real = StaticSteps._cache.__func__

    def cache(cls, lm, key):
        if key[0] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(cls, lm, key)

    monkeypatch.setattr(StaticSteps, "_cache", classmethod(cache))
    logged = []
    warm_up(translator, BatchOptions(max_batch=2, decoding=DecodingOptions(max_new_tokens=8, compile=True)),
            log=logged.append)
    assert StaticSteps._served[causal_lm(translator.system.model.llm)] == {1: {256}}  # batch 1 went on
    assert logged[1].startswith("--compile: the warm-up batch of 2 failed (OutOfMemoryError")


@pytest.mark.parametrize("compile_, warm", [(True, True), (True, False), (False, True)])
def test_the_server_warms_up_on_its_model_thread_before_it_serves(compile_, warm, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(warmup, "warm_up", lambda translator, options, log, stopping:
                        calls.append(threading.current_thread().name))
    from llm_srt.serve import app as serve_app
    monkeypatch.setattr(serve_app, "warm_up", warmup.warm_up)
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    options = ServeOptions(warm_up=warm, batch=BatchOptions(decoding=DecodingOptions(compile=compile_)))
    with local_client(create_app(translator, options)) as client:
        assert calls == (["llm-srt-model_0"] if compile_ and warm else [])  # the thread every batch runs on
        assert client.get("/health").status_code == 200


@pytest.mark.cuda
def test_warm_up_on_cuda_then_requests_replay_cuda_graphs_without_compiling(tmp_path):
    """On a GPU the served shapes replay as CUDA graphs: a server warmed up on its model thread answers requests
    (on that thread) without compiling or skipping a graph, with what eager float32 decoding writes."""
    folder = tiny.speech_llm_folder(tmp_path / "model")
    translator = SpeechTranslator.from_pretrained(folder, device="cuda", dtype="float32")
    options = ServeOptions(batch=BatchOptions(max_batch=1, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                                    compile=True)))  # one compile
    eager = SpeechTranslator.from_pretrained(folder, device="cuda", dtype="float32")
    want = eager.translate(clips(1), "eng", "deu", options=DecodingOptions(max_new_tokens=12))[0].translation
    with local_client(create_app(translator, options)) as client:
        graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
        for _ in range(3):
            answer = client.post("/v1/audio/translations", files={"file": ("a.wav", wav_bytes(clips(1)[0]))},
                                 data={"source_language": "eng", "target_language": "deu", "response_format": "json",
                                       "max_new_tokens": "12"})
            assert answer.status_code == 200 and answer.json()["text"] == want
    assert counters["stats"]["unique_graphs"] == graphs and counters["inductor"]["cudagraph_skips"] == skips


@pytest.mark.cuda
def test_served_batch_sizes_replay_their_cuda_graphs_without_recording_them_again(tmp_path, monkeypatch):
    """Warmed up at batches 4, 2 and 1 (more shapes than STATIC_CACHES), then batches of those sizes in turn: each
    replays the CUDA graph recorded on its own kept cache; none records again (a new cache's buffers would)."""
    from torch._inductor import cudagraph_trees

    recorded = []
    real = cudagraph_trees.CUDAGraphTreeManager.record_function
    monkeypatch.setattr(cudagraph_trees.CUDAGraphTreeManager, "record_function",
                        lambda self, *a, **k: recorded.append(1) or real(self, *a, **k))
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"), device="cuda",
                                                  dtype="float32")
    warm_up(translator, BatchOptions(max_batch=4, decoding=DecodingOptions(max_new_tokens=SERVED_TOKENS,
                                                                           compile=True)), log=lambda *_: None)
    assert recorded  # the warm-up recorded each size's graph
    before = len(recorded)
    for n in (4, 1, 2, 4, 1, 2):
        translator.translate(clips(n), "eng", "deu", options=SHORT, batch_size=n)
    assert len(recorded) == before


def test_a_warm_up_that_raises_still_lets_the_server_start(tmp_path, monkeypatch):
    from llm_srt.serve import app as serve_app

    def broken(*args):
        raise ValueError("a bug in the warm-up")

    warned = []
    monkeypatch.setattr(serve_app, "warm_up", broken)
    monkeypatch.setattr(serve_app.log, "warning", lambda message, *args: warned.append(message % args))
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    options = ServeOptions(batch=BatchOptions(decoding=DecodingOptions(max_new_tokens=4, compile=True)))
    with local_client(create_app(translator, options)) as client:
        assert client.get("/health").status_code == 200
    assert warned == ["--compile: the warm-up failed (a bug in the warm-up); serving without it"]


@pytest.mark.long(15)
def test_an_out_of_memory_batch_keeps_the_served_shapes_caches_and_drops_the_others(tmp_path, monkeypatch):
    """A batch that runs out of GPU memory gives the kept static caches back before its halves run
    (`infer.give_back_gpu_memory`). It gave back the served shapes' too: the next batch of a served size made a new
    cache, and on a GPU recorded its CUDA graph again beside the old one, after every out-of-memory error of a
    `serve --compile`. Now a served shape's cache is the same one after the recovery; an unserved shape's is let go."""
    translator = SpeechTranslator.from_pretrained(tiny.speech_llm_folder(tmp_path / "model"))
    lm = causal_lm(translator.system.model.llm)
    short = DecodingOptions(max_new_tokens=8, compile=True)
    warm_up(translator, BatchOptions(max_batch=1, decoding=short), log=lambda *_: None)
    assert StaticSteps._served[lm] == {1: {256}}
    served = dict(StaticSteps._caches[lm])
    translator.translate(clips(2), "eng", "deu", options=short, batch_size=2)  # a batch of 2: not a served size
    assert sorted(key[:2] for key in StaticSteps._caches[lm]) == [(1, 256), (2, 256)]
    real, runs = SpeechLLMSystem.run_batch, []

    def run_batch(self, items, options):
        runs.append(len(items))
        if len(items) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, items, options)

    monkeypatch.setattr(SpeechLLMSystem, "run_batch", run_batch)
    steps = StaticSteps.steps_taken
    results = translator.translate(clips(2), "eng", "deu", options=short, batch_size=2)
    assert runs == [2, 1, 1] and not any(r.error for r in results) and StaticSteps.steps_taken > steps
    assert sorted(key[:2] for key in StaticSteps._caches[lm]) == [(1, 256)]  # batch 2's let go
    assert all(StaticSteps._caches[lm][key] is cache for key, cache in served.items())  # the halves ran on it
