"""`llm-srt setup`: the embedded models are converted once; later calls only read the stamps."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_srt import embedded as emb
from llm_srt import paths


def _fake_converter(calls: list, fail: bool = False):
    def convert(target: Path) -> None:
        calls.append(target.name)
        if fail:
            raise RuntimeError("conversion crashed")
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.safetensors").write_text("weights")
    return convert


@pytest.fixture
def fake_setup(tmp, monkeypatch):
    """ensure_embedded against an empty cache, with instant fake converters (records which ran)."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp / "cache"))
    calls: list[str] = []
    monkeypatch.setattr(emb, "_convert_whisper", _fake_converter(calls))
    monkeypatch.setattr(emb, "_convert_gemma", _fake_converter(calls))
    return calls


def test_stamp_makes_setup_idempotent(fake_setup, monkeypatch):
    steps = []
    result = emb.ensure_embedded(report=steps.append)
    assert fake_setup == ["whisper-base", "gemma-3-270m"]
    assert result == emb.EmbeddedPaths(whisper=paths.embedded_whisper_dir(), llm=paths.embedded_llm_dir())
    assert [s.converted for s in steps] == [True, True]

    steps.clear()
    emb.ensure_embedded(report=steps.append)
    assert len(fake_setup) == 2 and [s.converted for s in steps] == [False, False]

    emb.ensure_embedded(force=True)
    assert len(fake_setup) == 4

    # A newer source package invalidates the stamp of the model it feeds.
    versions = emb._source_versions
    monkeypatch.setattr(emb, "_source_versions",
                        lambda dists: {**versions(dists), "bumped": True} if dists == emb.GEMMA_DISTS
                        else versions(dists))
    emb.ensure_embedded()
    assert fake_setup[4:] == ["gemma-3-270m"]


def test_failed_conversion_leaves_no_stamp(fake_setup, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(emb, "_convert_gemma", _fake_converter(calls, fail=True))
    with pytest.raises(RuntimeError, match="conversion crashed"):
        emb.ensure_embedded()
    assert (paths.embedded_whisper_dir() / emb.STAMP).is_file()
    assert not (paths.embedded_llm_dir() / emb.STAMP).exists()
    monkeypatch.setattr(emb, "_convert_gemma", _fake_converter(calls))
    emb.ensure_embedded()
    assert fake_setup == ["whisper-base"] and calls == ["gemma-3-270m", "gemma-3-270m"]


def test_assemble_whisper_ct2_joins_the_parts(tmp):
    out = emb.assemble_whisper_ct2(tmp / "ct2")
    parts = [emb._package_file(pkg, name).stat().st_size for pkg, name in emb.WHISPER_PARTS]
    assert (out / "model.bin").stat().st_size == sum(parts)
    assert all((out / name).is_file() for name in emb.WHISPER_FILES)


@pytest.mark.integration
def test_second_setup_is_fast_and_redoes_nothing(embedded):
    files = [embedded.whisper / "model.safetensors", embedded.llm / "model.safetensors",
             embedded.whisper / emb.STAMP, embedded.llm / emb.STAMP]
    before = [f.stat().st_mtime_ns for f in files]
    steps = []
    start = time.perf_counter()
    again = emb.ensure_embedded(report=steps.append)
    seconds = time.perf_counter() - start
    assert again == embedded
    assert seconds <= 5.0
    assert [s.converted for s in steps] == [False, False]
    assert [f.stat().st_mtime_ns for f in files] == before
    scratch = paths.cache_dir() / "tmp"
    assert not list(scratch.glob("whisper-ct2-*")) + list(scratch.glob("gemma-gguf-*"))  # joined files deleted


@pytest.mark.integration
def test_setup_command_exits_0(embedded):
    done = subprocess.run([sys.executable, "-m", "llm_srt.cli", "setup"], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stdout and str(embedded.llm) in done.stdout


KILLED_SETUP = """
import os, sys
from llm_srt import embedded, paths

def whisper(target):  # a conversion SIGKILLed with its joined files and half its output written
    with embedded._scratch("whisper-ct2") as scratch, paths.atomic_dir(target) as tmp:
        (scratch / "model.bin").write_bytes(b"x" * 1000)
        (tmp / "model.safetensors").write_bytes(b"y" * 1000)
        os.kill(os.getpid(), 9)

embedded._convert_whisper = whisper
embedded.ensure_embedded()
"""


def test_setup_removes_what_a_killed_setup_left(fake_setup, tmp):
    """A SIGKILL runs no cleanup: the joined files (cache/tmp/whisper-ct2-<pid>/) and the half-written
    whisper-base.tmp-<pid>/ stayed forever (~1.5 GB a try). The next setup removes them under the machine lock,
    and says so; those of a running process are its conversion in progress, and stay, as do those written in the
    last LEFTOVER_QUIET_S seconds (a process id names a process of this host only)."""
    killed = subprocess.Popen([sys.executable, "-c", KILLED_SETUP], stderr=subprocess.PIPE)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -9, err
    models, scratch = paths.cache_dir() / "models", paths.cache_dir() / "tmp"
    left = sorted(p.name for p in [*models.iterdir(), *scratch.iterdir()] if p.name != emb.LOCK)
    assert left == [f"whisper-base.tmp-{killed.pid}", f"whisper-ct2-{killed.pid}"]
    (models / "whisper-base.old-0").mkdir()  # killed between atomic_dir's two renames (0: no process)
    quiet = time.time() - emb.LEFTOVER_QUIET_S - 5
    for folder in [models / f"whisper-base.tmp-{killed.pid}", scratch / f"whisper-ct2-{killed.pid}",
                   models / "whisper-base.old-0"]:
        for p in [folder, *folder.rglob("*")]:
            os.utime(p, (quiet, quiet))  # nothing written there for a while
    live = [models / f"gemma-3-270m.tmp-{os.getppid()}", scratch / f"gemma-gguf-{os.getppid()}",
            models / "gemma-3-270m.old-0"]  # a running process's; one written just now (another host's, say)
    for folder in live:
        folder.mkdir()
    logs: list[str] = []
    emb.ensure_embedded(log=logs.append)
    assert fake_setup == ["whisper-base", "gemma-3-270m"]
    assert sorted(p.name for p in models.iterdir()) == sorted([emb.LOCK, "gemma-3-270m", "whisper-base", live[0].name,
                                                               live[2].name])
    assert [p.name for p in scratch.iterdir()] == [live[1].name]
    assert len(logs) == 1 and logs[0].startswith("removed 3 folders (0.0 MB) left by an earlier setup that was killed")
    emb.ensure_embedded(force=True, log=logs.append)
    assert len(logs) == 1  # nothing left: nothing said
