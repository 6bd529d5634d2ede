"""A request without `task` runs what the served model folder was trained for (forms.default_task): a Baseline
(S2TT-trained) folder ran the SRT prompt on /v1/audio/translations, and an OpenAI client got garbage as its text."""

import argparse
from pathlib import Path

import pytest
import tiny
from serve_helpers import DECODING, json_answer, local_client

from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator
from llm_srt.prompts import Task
from llm_srt.serve import app as serve_app
from llm_srt.serve import BatchOptions, ServeOptions, create_app

TRANSLATIONS = "/v1/audio/translations"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
ASK = dict(source_language="eng", target_language="deu", response_format="verbose_json")


def served(folder: Path):
    return local_client(create_app(SpeechTranslator.from_pretrained(folder),
                                   ServeOptions(batch=BatchOptions(decoding=DECODING))))


def post(client, path, wav: bytes, **fields):
    return client.post(path, files={"file": ("clip.wav", wav, "audio/wav")}, data=fields)


def test_a_request_without_task_runs_what_the_folder_was_trained_for(model_dir, translator, clip, tmp_path):
    samples, wav = clip
    expect = {t: translator.translate([samples], "eng", "deu", task=t, options=DECODING)[0] for t in ("srt", "s2tt")}
    with served(tiny.trained_folder(model_dir, tmp_path / "s2tt", {"s2tt": 1.0})) as c:
        verbose = post(c, TRANSLATIONS, wav, **ASK).json()
        assert verbose["mode"] == "s2tt" and verbose["forced_tags"] is False and verbose["transcript"] == ""
        assert verbose["text"] == verbose["translation"] == expect["s2tt"].translation
        assert post(c, TRANSLATIONS, wav, source_language="eng", target_language="deu").json() == json_answer(
            expect["s2tt"].translation, expect["s2tt"])  # what an OpenAI client reads
        named = post(c, TRANSLATIONS, wav, task="srt", **ASK).json()  # a request's own task as before
        assert named["mode"] == "srt" and named["translation"] == expect["srt"].translation
    with served(model_dir) as c:  # no train_config.json (an imported reference model): srt, as before
        verbose = post(c, TRANSLATIONS, wav, **ASK).json()
        assert verbose["mode"] == "srt" and verbose["translation"] == expect["srt"].translation
        assert post(c, TRANSCRIPTIONS, wav, language="en", response_format="verbose_json").json()["mode"] == "asr"


def test_an_asr_trained_folder_transcribes_and_refuses_a_translation_without_task(model_dir, translator, clip,
                                                                                    tmp_path):
    """An ASR-stage folder writes no translation: a translation without task is a 400 saying what to do (it was the
    SRT prompt's output); a transcription is its ASR; a request naming a task runs it as before."""
    samples, wav = clip
    heard = translator.translate([samples], "eng", None, task="asr", options=DECODING)[0]
    with served(tiny.trained_folder(model_dir, tmp_path / "asr", {"asr": 1.0})) as c:
        r = post(c, TRANSLATIONS, wav, **ASK)
        assert r.status_code == 400 and r.json()["error"]["param"] == "task"
        assert r.json()["error"]["message"] == (
            "task: this server's model was trained for asr, which writes no translation; use "
            "/v1/audio/transcriptions, or send task srt or s2tt to run that prompt on it anyway")
        verbose = post(c, TRANSCRIPTIONS, wav, language="en", response_format="verbose_json").json()
        assert verbose["mode"] == "asr" and verbose["text"] == heard.transcript
        assert post(c, TRANSLATIONS, wav, task="srt", **ASK).json()["mode"] == "srt"


def test_an_smt_stage_translates_in_two_passes_and_an_s2tt_only_folder_transcribes_nothing(model_dir, translator, clip,
                                                                                             tmp_path):
    """An SMT-stage folder's translation without task is its asr+smt (also asked for by name); a Baseline trained on
    s2tt alone writes no transcript: a transcription without task is a 400, with task asr it runs as before."""
    samples, wav = clip
    both = translator.translate([samples], "eng", "deu", task="asr+smt", options=DECODING)[0]
    with served(tiny.trained_folder(model_dir, tmp_path / "smt", {"smt": 0.8, "asr": 0.2})) as c:
        verbose = post(c, TRANSLATIONS, wav, **ASK).json()
        assert (verbose["mode"], verbose["transcript"], verbose["translation"]) == (
            "asr+smt", both.transcript, both.translation)
        assert post(c, TRANSLATIONS, wav, task="asr+smt", **ASK).json()["mode"] == "asr+smt"
        assert post(c, TRANSCRIPTIONS, wav, language="en", response_format="verbose_json").json()["mode"] == "asr"
    with served(tiny.trained_folder(model_dir, tmp_path / "s2tt", {"s2tt": 1.0})) as c:
        r = post(c, TRANSCRIPTIONS, wav, language="en")
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(
            "task: this server's model was trained for s2tt alone, which writes no transcript")
        assert post(c, TRANSCRIPTIONS, wav, language="en", task="asr").status_code == 200


@pytest.mark.parametrize("tasks,line", [
    ({"s2tt": 1.0}, "a request without task runs s2tt on /v1/audio/translations and is refused on "
                    "/v1/audio/transcriptions (the model writes no transcript): M was trained for s2tt"),
    ({"s2tt": 0.8, "asr": 0.2}, "a request without task runs s2tt on /v1/audio/translations: M was trained for s2tt"),
    ({"asr": 1.0}, "a request without task is refused on /v1/audio/translations (the model writes no translation): "
                   "M was trained for asr"),
    ({"srt": 0.8, "asr": 0.2}, None), (None, None),
])
def test_the_start_up_log_says_what_a_request_without_task_runs(tasks, line):
    trained = tuple(Task(t) for t in sorted(tasks or {}, key=lambda t: -tasks[t]))
    said = serve_app.auto_tasks_line("M", trained)
    assert said == (None if line is None else f"llm-srt serve: {line} (its training record)")


def test_serve_says_it_at_start_up_and_refuses_a_damaged_train_config_before_the_model_loads(model_dir, tmp_path,
                                                                                            monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    folder = tiny.trained_folder(model_dir, tmp_path / "s2tt", {"s2tt": 0.8, "asr": 0.2})
    assert serve_app.main(parser.parse_args(["--model", str(folder), "--port", "0", "--device", "cpu"])) == 0
    assert (f"llm-srt serve: a request without task runs s2tt on /v1/audio/translations: {folder} was trained for "
            "s2tt (its training record)\n") in capsys.readouterr().out
    (folder / "train_config.json").write_text("[]")

    def load(args):
        raise AssertionError("the model loaded before its train_config.json was read")

    monkeypatch.setattr(serve_app, "translator_from_args", load)
    with pytest.raises(LLMSRTError, match="train_config.json: cannot read the tasks the model was trained on"):
        serve_app.main(parser.parse_args(["--model", str(folder), "--port", "0"]))
