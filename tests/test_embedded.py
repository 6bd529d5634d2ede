"""`llm-srt setup`: the embedded models are converted once; later calls only read the stamps."""

import errno
import json
import os
import shutil
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


def test_a_damaged_folder_is_converted_again(fake_setup):
    """A file of a converted folder deleted (by hand, by a cache cleaner) or cut short left its stamp vouching for it:
    setup said "already done" while every load said "not converted yet ...: run `llm-srt setup`", a loop only --force
    left. The stamp records the folder's files with their sizes; a folder missing one, or with one of another size,
    is converted again."""
    emb.ensure_embedded()
    stamp = json.loads((paths.embedded_llm_dir() / emb.STAMP).read_text())
    assert stamp["files"] == {"model.safetensors": len("weights")}
    (paths.embedded_llm_dir() / "model.safetensors").unlink()
    steps = []
    emb.ensure_embedded(report=steps.append)
    assert fake_setup[2:] == ["gemma-3-270m"] and [s.converted for s in steps] == [False, True]
    (paths.embedded_whisper_dir() / "model.safetensors").write_text("weigh")  # cut short
    emb.ensure_embedded()
    assert fake_setup[3:] == ["whisper-base"]
    (paths.embedded_whisper_dir() / "extra.txt").write_text("a file setup did not write")
    emb.ensure_embedded()
    assert len(fake_setup) == 4


def test_an_earlier_stamp_needs_its_folders_main_files(fake_setup):
    """A stamp written before files were recorded is still good while its folder holds config.json and the weights
    (existing caches are not converted again for nothing); without either, the folder is converted again."""
    emb.ensure_embedded()
    for folder in (paths.embedded_whisper_dir(), paths.embedded_llm_dir()):
        (folder / "config.json").write_text("{}")
        stamp = json.loads((folder / emb.STAMP).read_text())
        del stamp["files"]
        (folder / emb.STAMP).write_text(json.dumps(stamp))
    emb.ensure_embedded()
    assert len(fake_setup) == 2
    (paths.embedded_whisper_dir() / "config.json").unlink()
    emb.ensure_embedded()
    assert fake_setup[2:] == ["whisper-base"]


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
embedded.ensure_embedded(force=len(sys.argv) > 1)
"""


def _kill_a_setup(*force: str) -> int:
    """Run a setup SIGKILLed mid-conversion (`force`: of models already converted); -> its process id."""
    killed = subprocess.Popen([sys.executable, "-c", KILLED_SETUP, *force], stderr=subprocess.PIPE)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -9, err
    return killed.pid


def _age(*folders: Path, seconds: float = emb.LEFTOVER_QUIET_S + 5) -> None:
    then = time.time() - seconds
    for folder in folders:
        for p in [folder, *folder.rglob("*")]:
            os.utime(p, (then, then))  # nothing written there for a while


def test_setup_removes_what_a_killed_setup_left(fake_setup, tmp):
    """A SIGKILL runs no cleanup: the joined files (cache/tmp/whisper-ct2-<pid>/) and the half-written
    whisper-base.tmp-<pid>/ stayed forever (~1.5 GB a try). The next setup removes them under the machine lock,
    and says so; those of a running process are its conversion in progress, and stay, as do those of no setup of
    this host (no OWNER file: another host's, say) written in the last LEFTOVER_QUIET_S seconds; what stays is
    said, with its size."""
    pid = _kill_a_setup()
    models, scratch = paths.cache_dir() / "models", paths.cache_dir() / "tmp"
    left = sorted(p.name for p in [*models.iterdir(), *scratch.iterdir()] if p.name != emb.LOCK)
    assert left == [f"setup-{pid}-{emb._space_digest(emb._pid_space())}.host", f"whisper-base.tmp-{pid}",
                    f"whisper-ct2-{pid}"]
    (models / "whisper-base.old-0").mkdir()  # killed between atomic_dir's two renames (0: no process)
    _age(models / "whisper-base.old-0")
    live = [models / f"gemma-3-270m.tmp-{os.getppid()}", scratch / f"gemma-gguf-{os.getppid()}",
            models / "gemma-3-270m.old-0"]  # a running process's; one written just now (another host's, say)
    for folder in live:
        folder.mkdir()
    (live[2] / "part").write_bytes(b"z" * 2_000_000)
    logs: list[str] = []
    emb.ensure_embedded(log=logs.append)
    assert fake_setup == ["whisper-base", "gemma-3-270m"]
    assert sorted(p.name for p in models.iterdir()) == sorted([emb.LOCK, "gemma-3-270m", "whisper-base", live[0].name,
                                                               live[2].name])
    assert [p.name for p in scratch.iterdir()] == [live[1].name]  # the OWNER files are gone too
    assert len(logs) == 2 and logs[0].startswith("removed 3 folders (0.0 MB) left by an earlier setup that was killed")
    assert logs[1].startswith("kept 3 folders (2.0 MB) that may be a conversion in progress: ")
    assert f"{live[2].name} (written 0 min ago; its process may be another host's)" in logs[1]
    assert f"{live[0].name} (process {os.getppid()} runs here)" in logs[1]
    for folder in live:
        shutil.rmtree(folder)
    emb.ensure_embedded(force=True, log=logs.append)
    assert len(logs) == 2  # nothing left: nothing said


def test_leftovers_beside_a_linked_models_target_are_found(tmp, monkeypatch):
    """atomic_dir writes beside a link's target (since 2026-12-06): a killed setup's `.tmp-<pid>` lies there, under
    the target's name, and was looked for beside the link."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp / "cache"))
    real = tmp / "big-disk" / "wb"
    real.mkdir(parents=True)
    models = paths.cache_dir() / "models"
    models.mkdir(parents=True)
    (models / "whisper-base").symlink_to(real)
    left = real.with_name("wb.tmp-0")  # pid 0: no process
    left.mkdir()
    _age(left)
    logs: list[str] = []
    emb._remove_leftovers([models / "whisper-base"], logs.append)
    assert not left.exists() and real.is_dir() and logs == [
        "removed 1 folders (0.0 MB) left by an earlier setup that was killed: wb.tmp-0"]


def test_a_killed_setup_rerun_at_once_leaves_nothing(fake_setup, tmp):
    """A setup killed, then rerun within LEFTOVER_QUIET_S: its folders were too recent to remove, and every later
    setup took the quick path, which never looked: ~1.3 GB stayed for good. Its OWNER file says they are this host's
    and its process is gone: the next setup removes them, however recent, on the quick path too (unless another
    setup holds the lock: it is converting, and cleans up itself)."""
    import fcntl

    emb.ensure_embedded()  # converted: later setups take the quick path
    pid = _kill_a_setup("--force")
    models, scratch = paths.cache_dir() / "models", paths.cache_dir() / "tmp"
    (scratch / "gemma-gguf-0").mkdir()  # no OWNER file and recent: cannot be judged, stays
    with open(models / emb.LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another setup converting
        logs: list[str] = []
        emb.ensure_embedded(log=logs.append)
        assert logs == [] and (models / f"whisper-base.tmp-{pid}").is_dir()
    steps: list = []
    emb.ensure_embedded(report=steps.append, log=logs.append)
    assert [s.converted for s in steps] == [False, False] and len(fake_setup) == 2  # the quick path
    assert logs[0] == (f"removed 2 folders (0.0 MB) left by an earlier setup that was killed: whisper-ct2-{pid}, "
                       f"whisper-base.tmp-{pid}")
    assert logs[1].startswith("kept 1 folders (0.0 MB) that may be a conversion in progress: gemma-gguf-0 (written")
    assert sorted(p.name for p in [*models.iterdir(), *scratch.iterdir()]) == sorted(
        [emb.LOCK, "gemma-3-270m", "whisper-base", "gemma-gguf-0"])
    _age(scratch / "gemma-gguf-0")
    emb.ensure_embedded(log=logs.append)
    assert logs[2] == "removed 1 folders (0.0 MB) left by an earlier setup that was killed: gemma-gguf-0"
    (models / emb.LOCK).unlink()
    (models / emb.LOCK).mkdir()  # a lock that cannot be opened (as in a read-only cache): the quick path goes on
    emb.ensure_embedded(log=logs.append)
    assert len(logs) == 3


def test_another_hosts_recent_leftovers_stay(fake_setup, tmp):
    """An OWNER file of another pid space (a host sharing the cache) leaves its process unjudged: its folders stay
    until unchanged for LEFTOVER_QUIET_S, and so does the OWNER file once they are gone (a reboot's, say)."""
    scratch = paths.cache_dir() / "tmp"
    other = emb._space_digest("other-host 0 pid:[1]")
    (scratch / "gemma-gguf-1").mkdir(parents=True)  # pid 1 runs here too; the OWNER file says it is not this one
    (scratch / f"setup-1-{other}.host").write_text("other-host 0 pid:[1]\n")
    (scratch / "gemma-gguf-999999999").mkdir()
    (scratch / f"setup-999999999-{other}.host").write_text("other-host 0 pid:[1]\n")
    # a pid both this host's killed setup and another host's running one had: which folder is whose is not told
    here = emb._pid_space()
    (scratch / "gemma-gguf-999999998").mkdir()
    (scratch / f"setup-999999998-{emb._space_digest(here)}.host").write_text(here + "\n")
    (scratch / f"setup-999999998-{other}.host").write_text("other-host 0 pid:[1]\n")
    logs: list[str] = []
    emb.ensure_embedded(log=logs.append)
    assert sorted(p.name for p in scratch.iterdir() if p.is_dir()) == sorted(
        ["gemma-gguf-1", "gemma-gguf-999999998", "gemma-gguf-999999999"])
    assert logs[0].startswith("kept 3 folders") and "gemma-gguf-999999999 (written 0 min ago;" in logs[0]
    assert "gemma-gguf-999999998 (written 0 min ago;" in logs[0]
    _age(*scratch.iterdir())
    emb.ensure_embedded(log=logs.append)
    assert logs[1] == ("removed 2 folders (0.0 MB) left by an earlier setup that was killed: gemma-gguf-999999998, "
                       "gemma-gguf-999999999")
    assert sorted(p.name for p in scratch.iterdir()) == ["gemma-gguf-1", f"setup-1-{other}.host"]  # its folder stays


def _failing_converter(error: BaseException):
    """A conversion that fails with `error` after writing half its folder and its scratch."""
    def convert(target: Path) -> None:
        with emb._scratch("gemma-gguf") as scratch, paths.atomic_dir(target) as half:
            (scratch / "model.gguf").write_bytes(b"x" * 1000)
            (half / "model.safetensors").write_bytes(b"y" * 1000)
            raise error
    return convert


@pytest.mark.parametrize("error,why", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "CACHE/models"), "Read-only file system"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded"),
    ("safetensors", "No space left on device"),
])
def test_a_cache_that_cannot_take_the_models_says_what_to_do(fake_setup, tmp, monkeypatch, error, why):
    """A read-only or full cache folder gave a raw traceback (OSError [Errno 30] Read-only file system; on a full
    disk safetensors' SafetensorError ... No space left on device (os error 28)); it is an LLMSRTError naming the
    folder, its free space and what setup needs, and the half-written folders are removed as before."""
    from safetensors import SafetensorError

    from llm_srt.errors import LLMSRTError

    cache = paths.cache_dir()
    if error == "safetensors":
        error = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                                'space left on device" })')
    elif error.filename:
        error.filename = str(cache / "models")
    monkeypatch.setattr(emb, "_convert_gemma", _failing_converter(error))
    with pytest.raises(LLMSRTError) as raised:
        emb.ensure_embedded()
    message = str(raised.value)
    assert message.startswith(f"{cache}: cannot write the embedded models there ({why}; ")
    assert " GB free there); setup needs about 1.7 GB " in message
    advice = "set LLM_SRT_CACHE=/a/writable/dir with that much free"
    assert message.endswith(advice if why == "Read-only file system" else f"free space there, or {advice}")
    assert sorted(p.name for p in (cache / "models").iterdir()) == [emb.LOCK, "whisper-base"]
    assert list((cache / "tmp").iterdir()) == []  # scratch and the OWNER file removed


def test_the_free_space_said_is_measured_after_the_failed_writes_open_files_let_go(fake_setup, monkeypatch):
    """A converter's file, removed with its scratch but still open (a memory map of a GGUF, a half-written
    safetensors) in a frame of the failed write, kept its space: the exception, held by contextlib's __exit__, kept
    those frames alive through gc.collect, and the free space said understated what setup could use once it ended."""
    import weakref

    from llm_srt.errors import LLMSRTError

    held = []

    def full(target: Path) -> None:
        with emb._scratch("gemma-gguf") as scratch:
            mapped = open(scratch / "model.gguf", "wb")  # noqa: SIM115  left open, as a mapping is, in this frame
            held.append(weakref.ref(mapped))
            raise OSError(errno.ENOSPC, "No space left on device", str(scratch / "model.gguf"))

    monkeypatch.setattr(emb, "_convert_gemma", full)
    monkeypatch.setattr(paths, "free_space", lambda path: "a file still held" if held[0]() else "0.50 GB free there")
    with pytest.raises(LLMSRTError, match=r"\(No space left on device; 0.50 GB free there\)"):
        emb.ensure_embedded()


def test_a_linked_cache_that_cannot_take_a_file_says_what_to_do(fake_setup, tmp, monkeypatch):
    """atomic_file names a file by its resolved path: with LLM_SRT_CACHE a link, a write it failed was taken for one
    outside the cache and raised as a bare OSError traceback, where the resolved path gave setup's own line."""
    from llm_srt.errors import LLMSRTError

    (tmp / "real").mkdir()
    (tmp / "link").symlink_to(tmp / "real")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp / "link"))
    error = OSError(errno.ENOSPC, "No space left on device", str(tmp / "real" / "models" / "x" / ".stamp.json.tmp"))
    monkeypatch.setattr(emb, "_convert_gemma", _failing_converter(error))
    with pytest.raises(LLMSRTError, match=r": cannot write the embedded models there \(No space left on device; "):
        emb.ensure_embedded()


def test_a_disk_filling_while_a_converter_writes_says_what_setup_needs(fake_setup, monkeypatch):
    """The real converters write through convert.output_dir, whose line for a full disk ("cannot write the converted
    model there ...; free space there or choose another output folder") reached setup's user, who has no output
    folder to choose, with the free space measured while the scratch copy still took its room. It is setup's own
    line, naming LLM_SRT_CACHE, with the free space measured once scratch and half-written folder are gone."""
    from llm_srt.errors import LLMSRTError
    from llm_srt.model.convert import output_dir

    cache = paths.cache_dir()

    def full(target: Path) -> None:
        with emb._scratch("gemma-gguf") as scratch, output_dir(target) as half:
            (scratch / "model.gguf").write_bytes(b"x" * 1000)
            (half / "model.safetensors").write_bytes(b"y" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", str(half / "model.safetensors"))

    def free_space(path) -> str:
        scratch = [p for p in (cache / "tmp").iterdir() if p.name.startswith("gemma-gguf-")]
        return "scratch still there" if scratch else "0.50 GB free there"

    monkeypatch.setattr(emb, "_convert_gemma", full)
    monkeypatch.setattr(paths, "free_space", free_space)
    with pytest.raises(LLMSRTError) as raised:
        emb.ensure_embedded()
    assert str(raised.value) == (f"{cache}: cannot write the embedded models there (No space left on device; 0.50 GB "
                                 "free there); setup needs about 1.7 GB (the converted models and, while converting, "
                                 "scratch): free space there, or set LLM_SRT_CACHE=/a/writable/dir with that much free")
    assert sorted(p.name for p in (cache / "models").iterdir()) == [emb.LOCK, "whisper-base"]


def test_convert_keeps_its_own_line_for_a_full_disk(tmp):
    """`llm-srt convert` has an output folder to choose: its line stays, now a paths.WriteFailed with the OS's."""
    from llm_srt.model.convert import output_dir

    with pytest.raises(paths.WriteFailed) as raised, output_dir(tmp / "out") as half:
        raise OSError(errno.ENOSPC, "No space left on device", str(half / "model.safetensors"))
    assert str(raised.value).startswith(f"{tmp / 'out'}: cannot write the converted model there (No space left on "
                                        "device; ")
    assert str(raised.value).endswith(" GB free there); free space there or choose another output folder")
    assert (raised.value.errno, raised.value.reason) == (errno.ENOSPC, "No space left on device")


def test_other_errors_of_a_conversion_stay_as_they_are(fake_setup, monkeypatch):
    """Not every OSError is the cache's: a package file that cannot be read is reported as it is."""
    from safetensors import SafetensorError

    outside = OSError(errno.EACCES, "Permission denied", "/usr/lib/python3/site-packages/x/data/model.bin.part1")
    for error in (outside, OSError(errno.EIO, "Input/output error"), SafetensorError("header too large")):
        monkeypatch.setattr(emb, "_convert_gemma", _failing_converter(error))
        with pytest.raises(type(error)):
            emb.ensure_embedded()


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_cache_set_to_a_file_says_so_before_converting(fake_setup, tmp, monkeypatch, below):
    """LLM_SRT_CACHE naming a file, or a path below one, gave a NotADirectoryError traceback (mkdir of its models
    folder); it is a one-line error naming the file, before anything is converted."""
    from llm_srt.errors import LLMSRTError

    (tmp / "file").write_text("not a folder")
    cache = tmp / "file" / below  # "": the file itself
    monkeypatch.setenv(paths.CACHE_ENV, str(cache))
    with pytest.raises(LLMSRTError) as raised:
        emb.ensure_embedded()
    where = "it" if not below else tmp / "file"
    assert str(raised.value) == (f"{cache}: {where} is not a folder (a file, or a broken link); set LLM_SRT_CACHE to "
                                 "a writable folder")
    assert fake_setup == [] and (tmp / "file").read_text() == "not a folder"


def test_a_setup_waiting_for_another_says_so(fake_setup):
    """A second setup started while a first converted waited silently on the lock for the whole conversion; it says
    what it waits for, then converts once the lock is free."""
    import fcntl
    import threading

    models = paths.cache_dir() / "models"
    models.mkdir(parents=True)
    said = threading.Event()
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        said.set()

    with open(models / emb.LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another setup converting
        second = threading.Thread(target=emb.ensure_embedded, kwargs={"log": log})
        second.start()
        assert said.wait(10) and fake_setup == []
        fcntl.flock(held, fcntl.LOCK_UN)
    second.join(10)
    assert logs == [f"waiting for another llm-srt setup to finish converting the models in {models} ..."]
    assert fake_setup == ["whisper-base", "gemma-3-270m"]


def _no_locks(monkeypatch, number: int) -> None:
    """fcntl.flock as on a file system that takes no locks (NFS without lockd, Lustre -o noflock): taking one fails
    with `number`, letting go works."""
    import fcntl

    real = fcntl.flock

    def flock(f, operation: int) -> None:
        if operation & (fcntl.LOCK_EX | fcntl.LOCK_SH):
            raise OSError(number, os.strerror(number))
        real(f, operation)

    monkeypatch.setattr(fcntl, "flock", flock)


@pytest.mark.parametrize("number", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP],
                         ids=["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_cache_that_takes_no_locks_is_said_and_setup_goes_on(fake_setup, monkeypatch, number):
    """On a cache whose file system takes no locks, setup was flock's OSError traceback; it says so in one line and
    converts, as a training run's RunLock does."""
    _no_locks(monkeypatch, number)
    logs: list[str] = []
    emb.ensure_embedded(log=logs.append)
    assert fake_setup == ["whisper-base", "gemma-3-270m"]
    lock = paths.cache_dir() / "models" / emb.LOCK
    assert logs == [f"{lock}: this file system takes no locks ({os.strerror(number)}); run one llm-srt setup at a "
                    "time on this cache"]
    emb.ensure_embedded(log=logs.append)  # the fast path: nothing to say
    assert len(logs) == 1


def test_a_lock_refused_otherwise_stops_setup_as_before(fake_setup, monkeypatch):
    """EACCES (a lock another host holds, on some network file systems) is no sign of a file system without locks:
    setup stops before converting, as before (the cache's line); another error passes unchanged."""
    from llm_srt.errors import LLMSRTError

    _no_locks(monkeypatch, errno.EACCES)
    with pytest.raises(LLMSRTError, match="cannot write the embedded models there \\(Permission denied; "):
        emb.ensure_embedded(log=lambda line: None)
    _no_locks(monkeypatch, errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        emb.ensure_embedded(log=lambda line: None)
    assert fake_setup == []


def test_a_cache_path_that_is_not_utf8_is_refused_before_any_folder_is_made(fake_setup, tmp, monkeypatch, capsys):
    """LLM_SRT_CACHE=/tmp/café in Latin-1: setup made its folders, then ended in the tokenizers' UnicodeEncodeError
    traceback (they write UTF-8 paths only). One line asking for a UTF-8 path, exit 2, nothing made or converted."""
    from llm_srt import cli

    cache = os.fsdecode(os.fsencode(tmp) + b"/caf\xe9")
    monkeypatch.setenv(paths.CACHE_ENV, cache)
    assert cli.main(["setup"]) == 2
    assert capsys.readouterr().err == (f"llm-srt setup: error: {tmp}/caf\\xe9: not a UTF-8 path (the model libraries "
                                       f"write UTF-8 file names only); set {paths.CACHE_ENV} to a writable folder, one "
                                       "whose name is UTF-8\n")
    assert fake_setup == [] and not os.path.lexists(cache)
