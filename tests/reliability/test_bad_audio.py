"""Bad and unusual audio, and bad translate options, through the real `llm-srt translate` on a tiny model.

Every input is generated here (no junk files in the repository). A case either just works (any format, rate,
channel count or length) or gets a one-line error naming the file; the good file of the same batch is always
translated, and the exit code is non-zero only when nothing could be done.
"""

import errno
import gzip
import io
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from llm_srt import audio, cli

pytestmark = pytest.mark.reliability("bad-input")
SR = 16000
COMMON = ["--src", "eng", "--tgt", "deu", "--max-new-tokens", "4"]
CAPPED = "reached their token cap"  # translate's note for segments cut at --max-new-tokens


def _tone(seconds: float, sr: int = SR, channels: int = 1, amp: float = 0.4) -> np.ndarray:
    """A 440 Hz tone, shape (N,) or (N, channels)."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _encode(x: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav_1s() -> bytes:
    return _encode(_tone(1.0))  # 44-byte header + 32000 bytes of 16-bit samples


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    b[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(b)


def _flac_lying_length() -> bytes:
    b = bytearray(_encode(_tone(1.0), fmt="FLAC"))
    b[21] |= 0x0F  # STREAMINFO total samples (36 bits) -> 68,719,476,735: a 256 GiB allocation if trusted
    b[22:26] = b"\xff\xff\xff\xff"
    return bytes(b)


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # file name
    data: Callable[[], bytes] | None  # the file's bytes; None: `make` builds the path itself
    error: str | None = None  # None: must work; else a fragment of the one-line error
    seconds: float | None = None  # for a working case: the duration translate must report
    speech: bool = True  # for a working case: it holds speech (one segment); else none, and one line says so
    make: Callable[[Path, pytest.MonkeyPatch], Path] | None = None


def _symlink_to_nowhere(folder: Path, _mp) -> Path:
    (folder / "dangling.wav").symlink_to(folder / "deleted.wav")
    return folder / "dangling.wav"


def _directory(folder: Path, _mp) -> Path:
    (folder / "clips.wav").mkdir()
    return folder / "clips.wav"


def _unreadable(folder: Path, mp: pytest.MonkeyPatch) -> Path:
    """We run as root, so chmod 000 would still be readable: make os.open() of this one path raise instead."""
    path = folder / "locked.wav"
    path.write_bytes(_wav_1s())
    real_open = os.open

    def fake_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    mp.setattr(audio.os, "open", fake_open)
    return path


AUDIO_CASES = [
    # broken or not audio at all
    Case("empty-file", "empty.wav", lambda: b"", error="empty (0 bytes)"),
    Case("truncated-header", "cut-header.wav", lambda: _wav_1s()[:20], error="cannot decode"),
    Case("header-only", "no-data.wav", lambda: _wav_1s()[:44], error="empty (0 samples)"),
    Case("random-bytes", "random.wav", lambda: np.random.default_rng(0).bytes(5000), error="cannot decode"),
    Case("text-file-named-wav", "notes.wav", lambda: b"meeting notes\nnot audio\n" * 20, error="cannot decode"),
    Case("text-file", "notes.txt", lambda: b"just text\n" * 50, error="cannot decode"),
    Case("gzip-named-flac", "packed.flac", lambda: gzip.compress(_wav_1s()), error="cannot decode"),
    Case("nan-samples", "nan.wav", lambda: _encode(np.array([0.1, np.nan, -0.1] * 4000, np.float32),
                                                   subtype="FLOAT"), error="NaN"),
    Case("inf-samples", "inf.wav", lambda: _encode(np.array([0.1, np.inf, -0.1] * 4000, np.float32),
                                                   subtype="FLOAT"), error="infinite"),
    Case("sample-rate-1hz-header", "rate1.wav", lambda: _patched(_wav_1s(), 24, "<I", 1), error="sample rate"),
    Case("sample-rate-2ghz-header", "rate2g.wav", lambda: _patched(_wav_1s(), 24, "<I", 2**31 - 1),
         error="sample rate"),
    Case("flac-header-claims-256gib", "lying.flac", _flac_lying_length, error="the header claims 4294967 s"),
    Case("zero-channels-header", "nochannels.wav", lambda: _patched(_wav_1s(), 22, "<H", 0), error="cannot decode"),
    Case("over-the-4-hour-limit", "marathon.wav", lambda: _encode(np.zeros(4 * 3600 * 1000 + 1000, np.float32),
                                                                   1000, subtype="PCM_U8"), error="split the file"),
    # damaged but decodable: what is there is used
    Case("truncated-data", "cut-data.wav", lambda: _wav_1s()[:44 + 8000], seconds=0.25),
    Case("truncated-mid-sample", "cut-odd.wav", lambda: _wav_1s()[:44 + 8001], seconds=0.25),
    Case("data-size-lies", "lying.wav", lambda: _patched(_patched(_wav_1s(), 40, "<I", 0xFFFFFFF0), 4, "<I",
                                                          0xFFFFFFF8), seconds=1.0),
    Case("sizes-never-written", "killed-recorder.wav", lambda: _patched(_patched(_wav_1s(), 40, "<I", 0), 4, "<I", 0),
         seconds=1.0),
    Case("data-size-zero", "unsized.wav", lambda: _patched(_wav_1s(), 40, "<I", 0), seconds=1.0),
    # a FLAC cut short (a recorder that lost power) was refused whole ("use wav, flac, ..."): translate keeps every
    # frame before the damage, as a WAV's (load_audio warns of the loss; training and evaluation refuse it)
    Case("flac-cut-short", "cut.flac", lambda: _encode(_tone(1.0), fmt="FLAC")[:-1], seconds=0.768),
    Case("flac-cut-in-its-first-frame", "stub.flac", lambda: _encode(_tone(1.0), fmt="FLAC")[:300],
         error="the file is damaged or cut short; re-export it"),
    # valid audio in any shape: must just work
    Case("all-silent", "silence.wav", lambda: _encode(np.zeros(3 * SR, np.float32)), seconds=3.0, speech=False),
    Case("one-sample", "one.wav", lambda: _encode(np.full(1, 0.2, np.float32)), seconds=0.025, speech=False),
    Case("40-samples-at-8k", "tiny8k.wav", lambda: _encode(_tone(0.005, 8000), 8000), seconds=0.025, speech=False),
    Case("8khz", "8k.wav", lambda: _encode(_tone(1.0, 8000), 8000), seconds=1.0),
    Case("44.1khz", "44k.wav", lambda: _encode(_tone(1.0, 44100), 44100), seconds=1.0),
    Case("48khz", "48k.wav", lambda: _encode(_tone(1.0, 48000), 48000), seconds=1.0),
    Case("96khz", "96k.wav", lambda: _encode(_tone(1.0, 96000), 96000), seconds=1.0),
    Case("stereo", "stereo.wav", lambda: _encode(_tone(1.0, channels=2)), seconds=1.0),
    Case("6-channels", "surround.wav", lambda: _encode(_tone(1.0, 48000, channels=6), 48000), seconds=1.0),
    Case("pcm-8-bit", "u8.wav", lambda: _encode(_tone(1.0), subtype="PCM_U8"), seconds=1.0),
    Case("pcm-24-bit", "s24.wav", lambda: _encode(_tone(1.0), subtype="PCM_24"), seconds=1.0),
    Case("pcm-32-bit", "s32.wav", lambda: _encode(_tone(1.0), subtype="PCM_32"), seconds=1.0),
    Case("float-32", "f32.wav", lambda: _encode(_tone(1.0), subtype="FLOAT"), seconds=1.0),
    Case("float-64", "f64.wav", lambda: _encode(_tone(1.0), subtype="DOUBLE"), seconds=1.0),
    Case("float-beyond-full-scale", "loud.wav", lambda: _encode(_tone(1.0, amp=4.0), subtype="FLOAT"), seconds=1.0),
    Case("mp3", "clip.mp3", lambda: _encode(_tone(1.0), fmt="MP3", subtype="MPEG_LAYER_III"), seconds=1.0),
    Case("flac", "clip.flac", lambda: _encode(_tone(1.0), fmt="FLAC"), seconds=1.0),
    Case("ogg-vorbis", "clip.ogg", lambda: _encode(_tone(1.0), fmt="OGG", subtype="VORBIS"), seconds=1.0),
    Case("ogg-opus", "clip.opus", lambda: _encode(_tone(1.0), fmt="OGG", subtype="OPUS"), seconds=1.0),
    Case("aiff", "clip.aiff", lambda: _encode(_tone(1.0), fmt="AIFF"), seconds=1.0),
    Case("wav-named-mp3", "really-a-wav.mp3", _wav_1s, seconds=1.0),
    Case("unicode-name-with-spaces", "état de l'art — 会議 1.wav", _wav_1s, seconds=1.0),
    # not a readable file
    Case("missing-path", "does-not-exist.wav", None, error="no such file", make=lambda f, _: f / "does-not-exist.wav"),
    Case("dangling-symlink", "dangling.wav", None, error="no such file", make=_symlink_to_nowhere),
    Case("directory", "clips.wav", None, error="is a directory", make=_directory),
    Case("no-read-permission", "locked.wav", None, error="permission denied", make=_unreadable),
]


def translate(argv: list[str], capsys) -> tuple[int, list[dict], list[str]]:
    """Run `llm-srt translate ... --format json`; (exit code, results, stderr lines). Never a traceback."""
    rc = cli.main(["translate", *argv, "--format", "json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    results = json.loads(out.out) if out.out.strip() else []
    return rc, results, [line for line in out.err.splitlines() if line.strip() and CAPPED not in line]


@pytest.fixture(scope="module")
def batch(model_dir, good_clip, tmp_path_factory):
    """Every audio case in one `llm-srt translate` batch (with a good clip in the middle), then the failing ones
    alone. Returns {case id: (path, result)}, both runs' stderr lines, and the exit codes."""
    folder = tmp_path_factory.mktemp("bad-audio")
    paths = {}
    with pytest.MonkeyPatch.context() as mp:
        for case in AUDIO_CASES:
            sub = folder / case.id
            sub.mkdir()
            paths[case.id] = case.make(sub, mp) if case.make else sub / case.name
            if case.data is not None:
                paths[case.id].write_bytes(case.data())
        files = [str(p) for p in paths.values()]
        files.insert(len(files) // 2, good_clip)
        with _capture() as cap:
            rc_all = cli.main(["translate", *files, "--model", str(model_dir), *COMMON, "--format", "json"])
        results = {r["audio"]: r for r in json.loads(cap.out)}
        bad = [str(paths[c.id]) for c in AUDIO_CASES if c.error]
        with _capture() as cap_bad:
            rc_bad = cli.main(["translate", *bad, "--model", str(model_dir), *COMMON, "--format", "json"])
    return {"paths": paths, "results": results, "good": results[good_clip], "err": cap.err_lines, "rc": rc_all,
            "rc_bad": rc_bad, "err_bad": cap_bad.err_lines, "files": files}


class _capture:
    """capsys for a module-scoped fixture: stdout / stderr of the block as text."""

    def __enter__(self):
        self._old, self._buffers = (sys.stdout, sys.stderr), (io.StringIO(), io.StringIO())
        sys.stdout, sys.stderr = self._buffers
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._old
        self.out, err = (b.getvalue() for b in self._buffers)
        # (a tiny random model never writes its end token: each segment it runs reaches --max-new-tokens, said)
        self.err_lines = [line for line in err.splitlines() if line.strip() and CAPPED not in line]
        return False


@pytest.mark.reliability("batch")
def test_the_batch_keeps_its_good_file_and_order(batch):
    assert batch["rc"] == 3 and list(batch["results"]) == batch["files"]
    assert batch["good"]["error"] is None and batch["good"]["segments"], "the good file of the batch lost its result"
    assert not any("Traceback" in line for line in batch["err"] + batch["err_bad"])
    assert batch["rc_bad"] == 1  # only bad files: nothing could be done


CUT_SHORT = {"truncated-data", "truncated-mid-sample", "flac-cut-short"}  # decode in part: said, and translated


@pytest.mark.parametrize("case", AUDIO_CASES, ids=[c.id for c in AUDIO_CASES])
def test_audio_file(case, batch):
    path = str(batch["paths"][case.id])
    r = batch["results"][path]
    mine = [line for line in batch["err"] if path in line]
    if case.error is None:
        assert r["error"] is None and abs(r["duration"] - case.seconds) < 0.02, r
        if case.speech:
            # a file cut short is translated as far as it decodes, with one warning under the command's name
            warned = [f"llm-srt translate: warning: {path}: only the first"] if case.id in CUT_SHORT else []
            assert [line[:len(w)] for line, w in zip(mine, warned)] == warned and len(mine) == len(warned), (mine, r)
            assert len(r["segments"]) == 1, r
        else:  # nothing the model could translate (it used to make text up): no segment, and a line saying so
            assert r["segments"] == [] and r["no_speech"] and r["translation"] == "", r
            assert mine == [f"llm-srt translate: {path}: no speech found (silence or steady noise); nothing to "
                            "translate"]
        return
    assert r["error"] and case.error in r["error"] and case.name in r["error"] and "\n" not in r["error"], r
    assert mine == [f"llm-srt translate: {r['error']}"]  # exactly one line on stderr, naming the file
    assert sum(path in line for line in batch["err_bad"]) == 1  # and again when it is alone


def test_ten_minutes_go_through_the_segmenter(model_dir, tmp_path, capsys):
    """10 minutes: eight 10 s phrases 30 s apart, then 2 minutes without any pause, then 4 minutes of silence.
    Each phrase becomes a segment, the pause-less stretch is cut at its quietest moments into <= 30 s pieces,
    the silence is skipped; every segment is translated and timed inside the recording."""
    x = np.zeros(600 * SR, np.float32)
    t = np.arange(10 * SR, dtype=np.float32) / SR
    phrases = [(30.0 * k, 30.0 * k + 10) for k in range(8)]
    for k, (a, b) in enumerate(phrases):
        x[int(a) * SR:int(b) * SR] = 0.3 * np.sin(2 * np.pi * (300 + 40 * k) * t)
    x[240 * SR:360 * SR] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(120 * SR, dtype=np.float32) / SR)
    path = tmp_path / "lecture.flac"
    sf.write(path, x, SR, format="FLAC")
    rc, [r], err = translate([str(path), "--model", str(model_dir), *COMMON, "--batch-size", "16"], capsys)
    assert rc == 0 and r["error"] is None and err == [] and abs(r["duration"] - 600) < 0.01
    segs = [(s["start"], s["end"]) for s in r["segments"]]
    assert all(0 < b - a <= 30.0 for a, b in segs) and all(p[1] <= q[0] for p, q in zip(segs, segs[1:]))
    assert all(any(a <= pa + 0.1 and b >= pb - 0.1 for a, b in segs) for pa, pb in phrases)  # each phrase whole
    drone = sum(max(0.0, min(b, 360) - max(a, 240)) for a, b in segs)
    assert drone > 0.95 * 120 and sum(b > 240.5 for a, b in segs) >= 4  # cut without a pause
    assert all(a < 361 for a, b in segs)  # the silence is skipped
    assert r["transcript"]  # the segments' outputs are joined
    assert r["capped"] and all(s["capped"] for s in r["segments"])  # 4 tokens of a random model: each one cut


# ---- languages, tasks and options -----------------------------------------------------------------------------
# A known gap, fixed by the infer.py patch in the reliability report; set to None once applied.
PATCH_INFER = None


@dataclass(frozen=True)
class OptionCase:
    id: str
    argv: tuple[str, ...]  # after the audio and --model
    rc: int
    error: str | None = None  # a fragment of the one-line error (rc 2) or of the result's error
    xfail: str | None = None


OPTION_CASES = [
    OptionCase("unknown-src", ("--src", "xx", "--tgt", "deu"), 2, "unknown language code 'xx'"),
    OptionCase("unknown-tgt", ("--src", "eng", "--tgt", "klingon"), 2, "unknown language code 'klingon'"),
    OptionCase("two-letter-code", ("--src", "en", "--tgt", "deu"), 2, "ISO 639-3"),
    OptionCase("empty-src", ("--src", "", "--tgt", "deu"), 2, "unknown language code ''"),
    OptionCase("src-equals-tgt", ("--src", "eng", "--tgt", "eng"), 0),
    OptionCase("srt-without-tgt", ("--src", "eng"), 2, "needs a target language"),
    OptionCase("no-src", ("--tgt", "deu"), 2, "--src"),
    OptionCase("smt-without-transcript", ("--src", "eng", "--tgt", "deu", "--task", "smt"), 2, "transcript"),
    OptionCase("smt-with-transcript", ("--src", "eng", "--tgt", "deu", "--task", "smt", "--transcript", "hi"), 0),
    OptionCase("asr-ignores-tgt", ("--src", "eng", "--tgt", "deu", "--task", "asr"), 0),
    OptionCase("unknown-task", ("--src", "eng", "--tgt", "deu", "--task", "translate"), 2),
    OptionCase("beam-0", ("--src", "eng", "--tgt", "deu", "--beam", "0"), 2, "beam_size"),
    OptionCase("max-new-tokens-0", ("--src", "eng", "--tgt", "deu", "--max-new-tokens", "0"), 2, "max_new_tokens"),
    OptionCase("batch-size-0", ("--src", "eng", "--tgt", "deu", "--batch-size", "0"), 2, "batch", PATCH_INFER),
    OptionCase("batch-size-negative", ("--src", "eng", "--tgt", "deu", "--batch-size", "-2"), 2, "batch",
               PATCH_INFER),
    OptionCase("out-dir-is-a-file", ("--src", "eng", "--tgt", "deu", "--out-dir", "{clip}"), 2, "out-dir",
               PATCH_INFER),
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=c.xfail, strict=True))
                                  if c.xfail else c for c in OPTION_CASES], ids=[c.id for c in OPTION_CASES])
def test_translate_options(case, model_dir, good_clip, capsys):
    """src == tgt is allowed: it asks for the transcript plus a same-language rendering (SRT's format with both tags
    equal), which is how ASR-like use and `evaluate`'s ASR rows (tgt = src) work; refusing it would gain nothing."""
    argv = [a.replace("{clip}", good_clip) for a in case.argv]
    try:
        cap = [] if "--max-new-tokens" in argv else ["--max-new-tokens", "4"]  # given once: a second is refused
        rc = cli.main(["translate", good_clip, "--model", str(model_dir), *cap, *argv])
    except SystemExit as e:  # argparse: usage line + one error line, exit 2
        rc = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert rc == case.rc, out.err
    if rc == 0:
        notes = [line for line in out.err.splitlines() if "translate:" in line]  # 4 tokens: no error
        assert good_clip in out.out and all("got no translation" in line or CAPPED in line for line in notes)
        return
    lines = [line for line in out.err.splitlines() if "error:" in line]  # argparse adds a usage block above
    assert len(lines) == 1 and lines[0].startswith("llm-srt translate: error:"), out.err
    assert case.error is None or case.error in lines[0]


@pytest.mark.reliability("batch")
@pytest.mark.long(9)
def test_a_real_process_prints_one_line_per_bad_file_and_nothing_else(model_dir, good_clip, tmp_path):
    """The installed entry point, in its own process: no progress bars, warnings or tracebacks on stderr."""
    import subprocess

    junk, missing = tmp_path / "junk.wav", tmp_path / "missing.wav"
    junk.write_bytes(np.random.default_rng(3).bytes(3000))
    proc = subprocess.run([sys.executable, "-m", "llm_srt.cli", "translate", str(junk), str(missing), good_clip,
                           "--model", str(model_dir), *COMMON], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr  # some inputs failed
    capped = [line for line in proc.stderr.splitlines() if CAPPED in line]  # the tiny random model never ends
    assert capped == [f"llm-srt translate: {good_clip}: 1 of 1 segments {CAPPED} (--max-new-tokens, or the "
                      "segment's duration budget): their text is cut there"], proc.stderr
    assert [line for line in proc.stderr.splitlines() if line not in capped] == [
                                        f"llm-srt translate: {junk}: cannot decode audio (Format not recognised); "
                                        "use wav, flac, ogg or mp3", f"llm-srt translate: {missing}: no such file",
                                        "llm-srt translate: 2 of 3 inputs failed (named above); the other 1 translated"]
    assert proc.stdout.startswith(good_clip) and "translation:" in proc.stdout
