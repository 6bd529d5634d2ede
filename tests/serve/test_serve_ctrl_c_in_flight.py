"""A second Ctrl-C while a request is inside the model, on a real `llm-srt serve` process: the process leaves at once
with 130 and the request gets no answer (its client sees the connection closed), as README promises; the log says
so in one line, without a traceback."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from serve_helpers import wav_bytes

import tiny

# the model never answers: each batch stays inside it, as a long upload's does for minutes
SERVE = """import sys, time
from llm_srt import cli
from llm_srt.infer import SpeechTranslator
def stuck(self, *args, **kwargs):
    print("TEST: inside the model", flush=True)
    time.sleep(300)
SpeechTranslator.translate = stuck
sys.exit(cli.main(["serve", "--model", sys.argv[1], "--port", "0", "--device", "cpu"]))
"""


def wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 90.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return found


def test_a_second_ctrl_c_with_a_request_inside_the_model_closes_its_connection_without_an_answer(model_dir, tmp_path):
    """Before, uvicorn raised the signal again inside asyncio.run once it had stopped waiting, which cancelled every
    handler while its connection was still open: each client got Starlette's text/plain 500 (no JSON, no
    x-should-retry, so an OpenAI SDK retried it), and the log got a traceback for each."""
    log = tmp_path / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(model_dir)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    got = {}

    def client(url: str) -> None:
        try:
            got["answer"] = httpx.post(url + "/v1/audio/translations", timeout=60,
                                       files={"file": ("a.wav", wav_bytes(tiny.tone(1.0, 440)), "audio/wav")},
                                       data={"source_language": "eng", "target_language": "deu"})
        except httpx.HTTPError as e:
            got["error"] = e

    try:
        url = wait_for(log, r"running on (http://127\.0\.0\.1:\d+)", proc).group(1)
        asking = threading.Thread(target=client, args=(url,), daemon=True)
        asking.start()
        wait_for(log, "TEST: inside the model", proc)
        proc.send_signal(signal.SIGINT)  # the first: uvicorn waits for the request in flight
        wait_for(log, "Waiting for connections to close", proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # the second: out now
        assert proc.wait(30) == 130, log.read_text()[-3000:]
        asking.join(30)
    finally:
        proc.kill()
        proc.wait(10)
    text = log.read_text()
    assert "answer" not in got, (got["answer"].status_code, got["answer"].headers, got["answer"].text[:200], text)
    assert isinstance(got.get("error"), (httpx.RemoteProtocolError, httpx.ReadError)), got
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
    said = [line for line in text.splitlines() if "Ctrl-C again" in line]
    assert said == ["llm-srt serve: Ctrl-C again: exiting now; 1 request in flight gets no answer (its connection "
                    "is closed)"], text[-3000:]
