"""A memory-capped `llm-srt serve` process (RLIMIT_AS) under a compressed-audio bomb made here: 4 hours of 192 kHz
FLAC in ~600 KB (11 GB as float32). The server answers 413 naming --max-audio-seconds (the decoder stops at the cap)
and then serves the next good request."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import flac_bomb

ADDRESS_SPACE = 3 * 2**30  # the serve process idles at ~1 GB of address space with torch and the tiny model
LAUNCH = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap})); "
          "from llm_srt.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def capped_server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("bomb") / "serve.log"
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", LAUNCH.format(cap=ADDRESS_SPACE), "serve", "--model", str(model_dir), "--port", "0",
           "--device", "cpu", "--max-new-tokens", "8", "--max-audio-seconds", "120"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield m.group(1), proc, log
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.long(10)
def test_a_flac_bomb_gets_413_and_the_capped_server_keeps_serving(capped_server, clip):
    url, proc, log = capped_server
    bomb = flac_bomb(4 * 3600, rate=192_000)
    assert len(bomb) < 1_000_000
    r = httpx.post(f"{url}/v1/audio/translations", files={"file": ("bomb.flac", bomb, "audio/flac")},
                   data={"source_language": "eng"}, timeout=60)
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["param"] == "file" and "bomb.flac" in err["message"] and "--max-audio-seconds" in err["message"]
    good = httpx.post(f"{url}/v1/audio/translations", files={"file": ("clip.wav", clip[1], "audio/wav")},
                      data={"source_language": "eng", "target_language": "deu"}, timeout=60)
    assert good.status_code == 200 and "text" in good.json(), good.text
    assert proc.poll() is None and "Traceback" not in log.read_text()
