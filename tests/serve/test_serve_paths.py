"""The server's folders never reach a client: errors (400, 500), verbose_json's per-segment errors and /health's
last error name SERVER_PATH where the model's text named a folder; the server's log keeps the whole text."""

import logging
import time

import torch
from serve_helpers import DECODING, bursts, local_client, wav_bytes

from llm_srt.device import Placement
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator
from llm_srt.model.protocol import Output
from llm_srt.serve import BatchOptions, ServeOptions, create_app
from llm_srt.serve import guard

TRANSLATIONS = "/v1/audio/translations"
MODEL = "runs/secret-project/srt/final"  # relative: no pattern finds it, the app must know it
WHISPER = "models/whisper-rel"
ELSEWHERE = "/home/operator/.cache/llm-srt/blobs/model.bin"  # absolute, known to nobody


def options() -> ServeOptions:
    return ServeOptions(batch=BatchOptions(max_batch=1, max_wait_ms=0, decoding=DECODING))


def post(client, audio: bytes, **fields):
    return client.post(TRANSLATIONS, files={"file": ("clip.wav", audio, "audio/wav")},
                       data={"source_language": "eng", "target_language": "deu", **fields})


class Broken:
    """A baseline-like system loaded from WHISPER whose rows fail naming folders: every row (`fail` "all") or the
    first row of its first batch ("first": a long request answered in part)."""

    name, placement, folder = "broken", Placement(torch.device("cpu"), torch.float32), WHISPER

    def __init__(self):
        self.fail, self.calls = "all", 0

    def run_batch(self, items, opts):
        self.calls += 1
        error = f"{WHISPER}: cannot load Whisper ({ELSEWHERE}: unexpected end of file) under {MODEL}"
        failing = {"all": range(len(items)), "first": [0] if self.calls == 1 else []}[self.fail]
        return [Output(error=error) if i in failing else Output("hello", "hallo") for i in range(len(items))]


def test_hide_paths_keeps_the_words_and_drops_the_folders():
    paths = guard.model_paths(SpeechTranslator(Broken(), name=MODEL))
    assert MODEL in paths and WHISPER in paths and "broken" not in paths  # a bare name is no folder
    text = guard.hide_paths(f"{WHISPER}: no tokenizer.json ({ELSEWHERE}); see https://example.org/a/b or eng/deu",
                                paths)
    hidden = guard.SERVER_PATH
    assert text == f"{hidden}: no tokenizer.json ({hidden}); see https://example.org/a/b or eng/deu"
    # a review: file URIs and UNC paths were left whole, and a closing bracket went with the path
    for shown, kept in ((r"[/srv/a/b]", f"[{hidden}]"), ("file:///srv/models/w.bin failed", f"{hidden} failed"),
                        (r"at \\server\share\m\w.bin", f"at {hidden}"), ("{/a/b} `/c/d`", f"{{{hidden}}} `{hidden}`"),
                        ("and/or 12/05/2026 3/4 text/plain", "and/or 12/05/2026 3/4 text/plain")):
        assert guard.hide_paths(shown, ()) == kept, shown



def test_a_model_given_as_dot_slash_or_with_a_trailing_slash_hides_its_folder_and_no_word():
    """A review: `--model ./model`, `srt/` or `./` added their normalized forms, `model`, `srt` and `.`, and every such
    word or dot of a client's message became SERVER_PATH ("the <server path> failed", "3<server path>5 s")."""
    hidden = guard.SERVER_PATH
    for name, text, kept in (
            ("./model", "the model failed: ./model/config.json: 3.5 s of model output",
             f"the model failed: {hidden}/config.json: 3.5 s of model output"),
            ("srt/", "task srt needs a target; srt/final/a.bin and srt2/ are not it",
             f"task srt needs a target; {hidden}final/a.bin and srt2/ are not it"),
            ("./", "the model produced 3.5 s of nothing", "the model produced 3.5 s of nothing")):
        paths = guard.model_paths(SpeechTranslator(Broken(), name=name))
        assert all("/" in path for path in paths), paths
        assert guard.hide_paths(text, paths) == kept, name
    paths = guard.model_paths(SpeechTranslator(Broken(), name="runs/srt"))
    assert guard.hide_paths("runs/srt, old-runs/srt, runs/srt2", paths) == f"{hidden}, old-runs/srt, runs/srt2"

def test_a_model_without_language_id_is_a_400_without_the_folder_of_its_whisper(translator, model_dir, clip, caplog):
    """An auto source on the tiny model (its Whisper has no language tokens) was a 400 naming the absolute folder of
    the model's Whisper; /v1/models gives the --name, never the model's folder."""
    whisper = str(translator.system.model.config.encoder)
    assert whisper.startswith("/")
    with local_client(create_app(translator, options())) as c, caplog.at_level(logging.INFO, "llm_srt.serve"):
        r = c.post(TRANSLATIONS, files={"file": ("clip.wav", clip[1], "audio/wav")})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "source_language", r.text
        assert whisper not in r.text and str(model_dir.parent) not in r.text
        assert "cannot detect the language" in err["message"]
        assert f"({guard.SERVER_PATH}: this Whisper" in err["message"]
        assert whisper in caplog.text  # the operator's log keeps it
        models = c.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == ["llm-srt"] and str(model_dir) not in models.text


def test_failures_name_no_server_folder_in_errors_segments_or_health(caplog):
    """A request failed whole (500), one failed in part (200, verbose_json's error and its segment's) and /health's
    last_error all named the model's folders as the model's error did; the log keeps them."""
    system = Broken()
    with local_client(create_app(SpeechTranslator(system, name=MODEL), options())) as c, \
            caplog.at_level(logging.INFO, "llm_srt.serve"):
        r = post(c, wav_bytes(bursts(1.0)))
        for _ in range(500):  # the batch's end (its stats) comes a moment after its answer
            health = c.get("/health")
            if health.json()["batching"]["last_error"]:
                break
            time.sleep(0.01)
        system.fail, system.calls = "first", 0
        verbose = post(c, wav_bytes(bursts(40.0)), response_format="verbose_json")
        for text in (r.text, health.text, verbose.text):
            assert MODEL not in text and WHISPER not in text and ELSEWHERE not in text and "/home/" not in text, text
        hidden = guard.SERVER_PATH
        assert r.status_code == 500 and r.json()["error"]["message"].startswith(f"{hidden}: cannot load"), r.text
        assert health.json()["batching"]["last_error"].startswith(f"{hidden}: cannot load Whisper")
        body = verbose.json()
        assert verbose.status_code == 200 and body["error"] and [s for s in body["segments"] if s["error"]], body
        assert MODEL in caplog.text and WHISPER in caplog.text and ELSEWHERE in caplog.text


class Raises:
    """A translator whose translate() raises, naming a folder (the batch failed outside any row)."""

    name, system = MODEL, None

    def translate(self, *args, **kw):
        raise LLMSRTError(f"{MODEL}/config.json: cannot read it (the disk went away)")


def test_a_model_that_raises_is_a_500_without_its_folder(clip):
    with local_client(create_app(Raises(), options())) as c:
        r = post(c, clip[1])
    assert r.status_code == 500 and MODEL not in r.text, r.text
    assert guard.SERVER_PATH in r.json()["error"]["message"]
