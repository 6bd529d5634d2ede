"""`llm-srt translate --model whisper` into a target Whisper cannot translate into: refused in one line before the
model loads, as other bad --src / --tgt values are (it was refused only per input, once each had been decoded)."""

import pytest

from llm_srt import cli, translate
from llm_srt.audio import write_wav
from llm_srt.model.systems import cannot_run
from llm_srt.prompts import Task
from test_infer import Stub, recording, stub_cli


def test_whisper_into_german_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """7 inputs took 7 min to decode, each then "failed" (exit 1), their transcripts thrown away."""
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    monkeypatch.setattr(translate, "translator_from_args", lambda args: pytest.fail("the model loaded"))
    for task in ([], ["--task", "srt"], ["--task", "s2tt"]):
        code = cli.main(["translate", str(tmp_path / "a.wav"), "--model", "whisper", "--src", "eng", "--tgt", "deu",
                         *task])
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), task
        assert err == ("llm-srt translate: error: --tgt deu: the whisper system translates only into English (eng), "
                       "not deu; use --model cascade for other targets (or --task asr for the transcript alone)\n")


def test_whisper_runs_what_it_can(tmp_path, monkeypatch, capsys):
    """Its transcript (--task asr, any --tgt), English, the source's own language, and a source language ID has yet
    to hear (German speech into deu is its transcript) still run; so does cascade into any target."""
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    for model, src, tgt, more in (("whisper", "eng", "deu", ["--task", "asr"]), ("whisper", "deu", "eng", []),
                                  ("whisper", "deu", "deu", []), ("whisper", "auto", "deu", []),
                                  ("cascade", "eng", "deu", [])):
        stub_cli(monkeypatch, Stub())
        code = cli.main(["translate", str(tmp_path / "a.wav"), "--model", model, "--src", src, "--tgt", tgt, *more])
        assert code == 0, (model, src, tgt, more, capsys.readouterr().err)
        capsys.readouterr()


def test_the_model_layer_says_it_from_the_name_alone():
    assert cannot_run("whisper", "fra", "deu", Task.SRT).startswith("the whisper system translates only into English")
    assert cannot_run("whisper", "fra", "deu", Task.ASR) is None
    assert cannot_run("whisper", None, "deu", Task.SRT) is None  # --src auto: German speech into deu runs
    assert cannot_run("cascade", "fra", "deu", Task.SRT) is None
    assert cannot_run("runs/x", "fra", "deu", Task.SRT) is None  # a folder: known once it loads
