"""`llm-srt serve`: infer's warning of a batch that failed and was retried in halves is one line under the command's
name, as the toolkit's other warnings (`cli.one_line_warnings`), at every request whose batch fails: neither once per
process (Python's default for a warning from one line) nor bare. It was logged, as the server's own log lines
("WARNING:     llm_srt.infer: a batch of 2 failed ...")."""

import uvicorn
from fastapi.testclient import TestClient
from serve_helpers import wav_bytes
from test_infer import SR, Stub, recording
from test_infer_warnings_cli import INDEX, RETRIED, _warnings

from llm_srt import cli
from llm_srt.infer import SpeechTranslator
from llm_srt.serve import app as serve_app


def test_serve_warns_of_a_failed_batch_at_every_request_under_its_name(monkeypatch, capsys):
    audio = recording(8.0, [(0.5, 2.5), (5.0, 7.5)])  # two segments, one batch
    system = Stub(fails=lambda it: it.audio.size < 2.6 * SR)  # the first segment's
    monkeypatch.setattr(serve_app, "translator_from_args", lambda args: SpeechTranslator(system))
    answers = []

    def requests(server, sockets=None):  # in place of serving: three uploads, then stop
        with TestClient(server.config.app, base_url="http://127.0.0.1") as client:
            for _ in range(3):
                answers.append(client.post("/v1/audio/translations", data={"source_language": "eng",
                                                                           "target_language": "deu"},
                                           files={"file": ("a.wav", wav_bytes(audio), "audio/wav")}).status_code)

    monkeypatch.setattr(uvicorn.Server, "run", requests)
    assert cli.main(["serve", "--model", "stub", "--port", "0"]) == 0
    assert answers == [200] * 3 and [len(b) for b in system.batches] == [2, 1, 1] * 3
    err = capsys.readouterr().err
    assert _warnings(err) == [f"llm-srt serve: warning: {RETRIED.format(2, INDEX)}"] * 3, err
