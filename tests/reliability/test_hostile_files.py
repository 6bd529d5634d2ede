"""Red team of files and text (issue 18, classes 1 and 6): audio headers, encodings and sizes; paths and file
kinds; manifest text; score's text files; translate's output paths. Each case either just works or ends in one
printable line naming the input and what to do: no traceback, no hang (a FIFO is never opened for reading), and
in a batch nothing else is lost. Every input is made here; in-process and fast, the tiny model loaded once."""

import io
import json
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from bombs import flac_bomb
from llm_srt import cli
from llm_srt.audio import load_audio
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import AudioError, LLMSRTError, ManifestError, shown
from llm_srt.evaluate.score import read_lines
from llm_srt.out_files import output_paths

pytestmark = pytest.mark.reliability("bad-input")
SR = 16000
SERVE_LIMITS = {"max_seconds": 600, "max_bytes": 256 << 20}  # what a server would pass per request


def _one_line(message: str, names: str) -> None:
    assert "\n" not in message and "\r" not in message and message.isprintable(), repr(message)
    assert message.startswith(shown(names)) or shown(names) in message, (message, names)


# ---- audio: headers, encodings, sizes (bytes, as an upload) -----------------------------------------------------
def _wav(tag=1, ch=1, rate=SR, bits=16, data=None, align=None, brate=None, pre=b"", rsize=None) -> bytes:
    """A hand-made RIFF/WAVE file, every header field settable."""
    data = (np.sin(np.arange(SR) / 3) * 8000).astype("<i2").tobytes() if data is None else data
    align = ch * bits // 8 if align is None else align
    fmt = struct.pack("<HHIIHH", tag, ch, rate, rate * align if brate is None else brate, align, bits)
    body = b"WAVE" + pre + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body) if rsize is None else rsize) + body


def _enc(x, sr=SR, fmt="WAV", subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _tone(seconds=1.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _flac_rate_0() -> bytes:
    b = bytearray(flac_bomb(SR, 1))
    b[18:20], b[20] = b"\0\0", b[20] & 0x0F  # STREAMINFO sample rate: 0
    return bytes(b)


def _flac_bad_crc() -> bytes:
    b = bytearray(flac_bomb(SR, 5))
    b[-1] ^= 0xFF
    b[-20] ^= 0x55
    return bytes(b)


@dataclass(frozen=True)
class AudioCase:
    id: str
    data: Callable[[], bytes]
    error: str | None  # a fragment of the one-line error; None: must decode
    seconds: float | None = None  # for a working case: the decoded duration (after padding to 25 ms)


AUDIO_BYTES = [
    AudioCase("wav-65535-channels", lambda: _wav(ch=65535, align=2, brate=32000), "Too many channels"),
    AudioCase("wav-1024-channels-15-frames", lambda: _wav(ch=1024), None, 0.025),
    AudioCase("wav-block-align-0", lambda: _wav(align=0), None, 1.0),
    AudioCase("wav-0-bits", lambda: _wav(bits=0), "unimplemented format"),
    AudioCase("wav-64-bit-int", lambda: _wav(bits=64), "unimplemented format"),
    AudioCase("wav-unknown-format-tag", lambda: _wav(tag=0x1234), "Malformed 'fmt ' chunk"),
    AudioCase("wav-999-hz", lambda: _wav(rate=999), "sample rate of 999 Hz"),
    AudioCase("wav-768001-hz", lambda: _wav(rate=768_001), "sample rate of 768001 Hz"),
    AudioCase("wav-1000-hz-is-fine", lambda: _wav(rate=1000), None, 16.0),
    AudioCase("wav-riff-size-0", lambda: _wav(rsize=0), None, 1.0),
    AudioCase("wav-data-before-fmt", lambda: b"RIFF" + struct.pack("<I", 32036) + b"WAVEdata" + struct.pack(
        "<I", 32000) + bytes(32000) + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16),
        "No 'data' chunk"),
    AudioCase("wav-list-chunk-claims-4-gb", lambda: _wav(pre=b"LIST" + struct.pack("<I", 0xFFFFFF00) + b"INFO"),
              "No 'data' chunk"),
    AudioCase("mu-law", lambda: _enc(_tone(), subtype="ULAW"), None, 1.0),
    AudioCase("a-law", lambda: _enc(_tone(), subtype="ALAW"), None, 1.0),
    AudioCase("ima-adpcm", lambda: _enc(_tone(), subtype="IMA_ADPCM"), None, 1.017),
    AudioCase("gsm-6.10", lambda: _enc(_tone(), subtype="GSM610"), None, 1.0),
    AudioCase("wave64", lambda: _enc(_tone(), fmt="W64"), None, 1.0),
    AudioCase("caf", lambda: _enc(_tone(), fmt="CAF"), None, 1.0),
    AudioCase("sun-au", lambda: _enc(_tone(), fmt="AU"), None, 1.0),
    AudioCase("flac-rate-0", _flac_rate_0, "cannot decode audio"),
    AudioCase("flac-no-frames-length-unknown", lambda: flac_bomb(SR, 0, header_length=False),
              "the audio is empty (0 samples)"),
    # a header without the length, as a FLAC written to a pipe has: refused, then cut to its first 4M-sample block
    AudioCase("flac-10-s-length-unknown", lambda: flac_bomb(SR, 10, header_length=False), None, 10.0),
    AudioCase("flac-300-s-length-unknown", lambda: flac_bomb(SR, 300, header_length=False), None, 300.0),
    # cut inside its last 2 frames (of 65535 samples), a FLAC decodes to the end of the one before without an error:
    # only the header's length tells it is cut short, and a stream written to a pipe has none
    AudioCase("flac-300-s-cut-short", lambda: flac_bomb(SR, 300)[:-20],
              "only the first 294.9 s of 300.0 s decode (it ends before the length its header gives): the file is "
              "damaged or cut short; re-export it, or copy it again"),
    AudioCase("flac-300-s-length-unknown-cut-short", lambda: flac_bomb(SR, 300, header_length=False)[:-20], None,
              294.9075),
    AudioCase("flac-bad-crc", _flac_bad_crc, "cannot decode audio (Error : flac decoder lost sync)"),
    AudioCase("flac-bomb-8-channels-192-khz", lambda: flac_bomb(192_000, 4 * 3600, channels=8),
              "the header claims 14400 s of audio, longer than the 600 s limit"),
    AudioCase("flac-bomb-5-minutes-at-768-khz", lambda: flac_bomb(768_000, 300),
              "decodes to 878.9 MiB of samples (768000 Hz x 1 channel(s)), over the 256.0 MiB limit"),
    AudioCase("flac-5-hours-at-16-khz", lambda: flac_bomb(SR, 5 * 3600), "the header claims 18000 s"),
    AudioCase("double-minus-infinity", lambda: _enc(np.array([0.1, -np.inf, 0.1] * 100), subtype="DOUBLE"),
              "NaN or infinite"),
    AudioCase("double-1e300", lambda: _enc(np.array([0.1, 1e300, 0.1] * 100), subtype="DOUBLE"),
              "samples as large as 1e+300 are out of range"),
    AudioCase("float-denormals", lambda: _enc(np.full(SR, 1e-40, np.float32), subtype="FLOAT"), None, 1.0),
    AudioCase("float-dc-full-scale", lambda: _enc(np.ones(SR, np.float32), subtype="FLOAT"), None, 1.0),
    AudioCase("one-stereo-frame", lambda: _enc(np.zeros((1, 2), np.float32)), None, 0.025),
    AudioCase("png-named-wav", lambda: b"\x89PNG\r\n\x1a\n" + bytes(2000), "Format not recognised"),
    AudioCase("zip-named-wav", lambda: b"PK\x03\x04" + bytes(2000), "Format not recognised"),
    AudioCase("riff-and-nothing-else", lambda: b"RIFF", "Format not recognised"),
    AudioCase("id3-tag-claiming-256-mb", lambda: b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + bytes(100),
              "Format not recognised"),
    AudioCase("mpeg-frame-headers-and-no-frames", lambda: b"\xff\xfb\x90\x00" * 1000,
              "cannot decode audio (no decodable audio frames)"),
    AudioCase("ogg-page-of-noise", lambda: b"OggS" + np.random.default_rng(5).bytes(3000), "cannot decode"),
]


@pytest.mark.parametrize("case", AUDIO_BYTES, ids=[c.id for c in AUDIO_BYTES])
def test_audio_bytes(case):
    name = f"{case.id}.wav"
    if case.error is None:
        out = load_audio(case.data(), name=name, **SERVE_LIMITS)
        assert out.dtype == np.float32 and abs(out.size / SR - case.seconds) < 0.01, out.size
        return
    with pytest.raises(AudioError) as e:
        load_audio(case.data(), name=name, **SERVE_LIMITS)
    _one_line(str(e.value), name)
    assert case.error in str(e.value), str(e.value)


def test_an_upload_cut_short_is_translated_as_far_as_it_decodes():
    """No reference goes with an upload: what decodes of a damaged one is used (load_audio refuses it by default)."""
    uploads = pytest.importorskip("llm_srt.serve.uploads")
    data = flac_bomb(SR, 300)[:-20]  # as flac-300-s-cut-short
    assert uploads.decode_audio(data, "cut.flac", max_seconds=600).size == 294.9075 * SR


# ---- audio: paths and file kinds --------------------------------------------------------------------------------
def _named(raw: bytes) -> Callable[[Path], Path]:
    """A junk file whose name is `raw` (bytes: a name need not be UTF-8 on Linux)."""
    def make(folder: Path) -> Path:
        path = Path(os.fsdecode(bytes(folder) + b"/" + raw))
        path.write_bytes(b"not audio at all\n" * 10)
        return path
    return make


def _fifo_via_symlink(folder: Path) -> Path:
    os.mkfifo(folder / "pipe")
    (folder / "a.wav").symlink_to(folder / "pipe")
    (folder / "b.wav").symlink_to(folder / "a.wav")
    return folder / "b.wav"


def _socket(folder: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(folder / "s.wav"))
    s.close()
    return folder / "s.wav"


def _mutual_loop(folder: Path) -> Path:
    (folder / "a.wav").symlink_to(folder / "b.wav")
    (folder / "b.wav").symlink_to(folder / "a.wav")
    return folder / "a.wav"


def _sparse_gigabyte(folder: Path) -> Path:
    path = folder / "huge.wav"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB of zeros, no header: refused from the first bytes
    return path


def _through_a_file(folder: Path) -> Path:
    (folder / "clip.wav").write_bytes(b"x")
    return folder / "clip.wav" / "inner.wav"


PATH_CASES = {
    "newline-in-name": (_named(b"two\nlines.wav"), "cannot decode audio (Format not recognised)"),
    "escape-sequence-in-name": (_named(b"\x1b[31mred\x1b[0m.wav"), "cannot decode audio"),
    "latin-1-name": (_named(b"caf\xe9.wav"), "cannot decode audio"),
    "fifo-behind-two-symlinks": (_fifo_via_symlink, "is a FIFO (named pipe), not a regular file"),
    "unix-socket": (_socket, "is a socket, not a regular file"),
    "dev-null": (lambda _: Path("/dev/null"), "is a character device, not a regular file"),
    "two-links-in-a-loop": (_mutual_loop, "a symlink loop"),
    "name-too-long": (lambda f: f / ("x" * 300 + ".wav"), "the path is too long"),
    "path-through-a-file": (_through_a_file, "no such file"),
    "sparse-1-gib-of-zeros": (_sparse_gigabyte, "Format not recognised"),
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    made = {}
    for key, (make, _) in PATH_CASES.items():
        folder = tmp_path_factory.mktemp(key)
        made[key] = make(folder)
    return made


@pytest.mark.parametrize("key", list(PATH_CASES))
def test_audio_path(key, paths):
    with pytest.raises(AudioError) as e:
        load_audio(paths[key])
    _one_line(str(e.value), str(paths[key]))
    assert PATH_CASES[key][1] in str(e.value), str(e.value)


@pytest.mark.reliability("batch")
def test_translate_keeps_the_good_file_among_the_hostile_paths(paths, model_dir, good_clip, capsys):
    """The same paths through `translate --format json` beside a good clip: every bad one is one printable line
    on stderr and a result with its error; the good one is translated; stdout is valid JSON (a name that is not
    UTF-8 comes back escaped, not as a crash)."""
    files = [str(p) for p in paths.values()]
    files.insert(3, good_clip)
    rc = cli.main(["translate", *files, "--model", str(model_dir), "--src", "eng", "--tgt", "deu",
                   "--max-new-tokens", "4", "--format", "json"])
    out = capsys.readouterr()
    results = json.loads(out.out)
    assert rc == 3 and [r["audio"] for r in results] == [shown(f) for f in files]
    assert [r["error"] is None for r in results] == [f == good_clip for f in files] and results[3]["segments"]
    lines = [line for line in out.err.splitlines() if line.startswith("llm-srt translate:")
             and "reached their token cap" not in line]  # (the random model never ends: the good file's is cut)
    assert len(lines) == len(files) and all(line.isprintable() for line in lines), lines
    assert lines[-1] == f"llm-srt translate: {len(files) - 1} of {len(files)} inputs failed (named above); " \
                        "the other 1 translated"


# ---- manifest text ------------------------------------------------------------------------------------------------
def _row(**over) -> dict:
    row = {"id": "u2", "audio": "clip.wav", "duration": 1.2, "src_lang": "eng", "transcript": "Hello.",
           "tgt_lang": "deu", "translation": "Hallo.", "split": "test", "corpus": "t", "sentence_id": "2"}
    return row | over


MANIFEST_LINES = {  # line 2 of a three-line manifest (bytes) -> a fragment of its error
    "surrogate-in-translation": (json.dumps(_row(translation="Hal\udbffo")).encode(), "field 'translation' holds "
                                 "a lone surrogate"),
    "surrogate-in-source": (json.dumps(_row(source="x\udc00")).encode(), "field 'source' holds a lone surrogate"),
    "surrogate-pair-is-fine": (json.dumps(_row(transcript="\ud83d\ude00 hi")).encode(), None),
    "nul-character-in-transcript": (json.dumps(_row(transcript="a\u0000b")).encode(), None),
    "cesu-8-surrogate-bytes": (json.dumps(_row()).encode().replace(b"Hello", b"Hel\xed\xa0\x80lo"), "not UTF-8"),
    "overlong-utf-8": (json.dumps(_row()).encode().replace(b"Hello", b"Hel\xc0\xafo"), "not UTF-8"),
    "utf-16-row": (json.dumps(_row()).encode("utf-16-le"), "not"),
    "audio-name-with-newline": (json.dumps(_row(audio="a\nb.wav")).encode(), "audio file"),
    "audio-name-with-escape-sequence": (json.dumps(_row(audio="\x1b]0;pwned\x07.wav")).encode(), "audio file"),
    "audio-is-dev-zero": (json.dumps(_row(audio="/dev/zero")).encode(), "is a character device"),
}


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-manifests")
    sf.write(folder / "clip.wav", _tone(1.2), SR)
    return folder


@pytest.mark.parametrize("key", list(MANIFEST_LINES))
def test_manifest_text(key, manifest_dir):
    line, error = MANIFEST_LINES[key]
    path = manifest_dir / f"{key}.jsonl"
    path.write_bytes(json.dumps(_row(id="u1")).encode() + b"\n" + line + b"\n" + json.dumps(_row(id="u3")).encode())
    if error is None:
        assert [r.id for r in read_manifest(path)] == ["u1", "u2", "u3"]
        return
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    head, *listed = str(e.value).split("\n")
    assert head.startswith(f"{path}: 1 bad row(s)") and len(listed) == 1, str(e.value)
    _one_line(listed[0].strip(), f"{path}:2: ")
    assert error in listed[0], listed[0]


def test_a_manifest_named_with_a_newline_is_named_on_one_line(manifest_dir):
    path = manifest_dir / "two\nlines.jsonl"
    path.write_bytes(b"{oops\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    head = str(e.value).split("\n")[0]
    _one_line(head, str(path))


# ---- score's text files ------------------------------------------------------------------------------------------
SCORE_FILES = {  # the hypothesis file -> a fragment of the error (None: scores 100 against the plain reference)
    "bom-on-the-hypothesis-only": (lambda f: _text(f, "h.txt", "\ufeff" + REF), None),
    "crlf-and-bom": (lambda f: _text(f, "h.txt", "\ufeff" + REF.replace("\n", "\r\n")), None),
    "utf-16-with-bom": (lambda f: _text(f, "h.txt", REF, "utf-16"), "not valid UTF-8 (byte 0)"),
    "latin-1": (lambda f: _text(f, "h.txt", "café au lait\n" * 3, "latin-1"), "not valid UTF-8"),
    "dev-zero": (lambda _: Path("/dev/zero"), "is a character device, not a regular file"),
    "a-fifo": (lambda f: (os.mkfifo(f / "h.fifo"), f / "h.fifo")[1], "is a FIFO (named pipe)"),
    "a-socket": (_socket, "is a socket"),
    "name-with-a-newline": (lambda f: _text(f, "h\n.txt", "a\n"), "has 1 lines but"),
    "old-mac-line-ends": (lambda f: _text(f, "h.txt", REF.replace("\n", "\r")), None),
}
REF = "the cat sat on the mat today\nit rains in berlin all day long\nsee you at the station tomorrow\n"


def _text(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    (folder / name).write_bytes(text.encode(encoding))
    return folder / name


@pytest.mark.parametrize("key", list(SCORE_FILES))
def test_score_file(key, tmp_path, capsys):
    make, error = SCORE_FILES[key]
    hyp, ref = make(tmp_path), _text(tmp_path, "ref.txt", REF)
    rc = cli.main(["score", "--hyp", str(hyp), "--ref", str(ref), "--tgt-lang", "eng", "--json"])
    out, err = capsys.readouterr()
    if error is None:
        assert rc == 0 and json.loads(out)["score"] == 100.0, out
        return
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    _one_line(err.strip(), str(hyp))
    assert error in err, err


def test_score_reads_nul_bytes_as_text(tmp_path):
    assert read_lines(_text(tmp_path, "h.txt", "a\0b\nc\n")) == ["a\0b", "c"]


# ---- translate's output paths --------------------------------------------------------------------------------------
OUT_CASES = {  # inputs (relative to a folder) -> the outputs under OUT, or a fragment of the error
    "same-name-two-folders": (["a/x.wav", "b/x.wav"], ["a/x.srt", "b/x.srt"]),
    "one-folder-keeps-flat-names": (["a/x.wav", "a/y.wav"], ["x.srt", "y.srt"]),
    "same-stem-two-formats": (["a/x.wav", "a/x.flac"], "would both write"),
    "names-differing-in-case": (["a/Talk.wav", "a/talk.wav"], "would both write"),
    "the-same-file-twice": (["a/x.wav", "a/x.wav"], ["x.srt", "x.srt"]),
    "no-extension": (["a/recording", "b/recording.wav"], ["a/recording.srt", "b/recording.srt"]),
    "hidden-file": (["a/.wav"], [".wav.srt"]),
    "dot-dot-in-a-path": (["a/../b/x.wav", "b/y.wav"], ["x.srt", "y.srt"]),
    "an-audio-file-named-srt": (["out/x.srt"], "would overwrite the input"),
}


@pytest.mark.parametrize("key", list(OUT_CASES))
def test_out_dir(key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs, expected = OUT_CASES[key]
    for name in inputs:  # files: an input that is none fails alone and is never refused for its output's name
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).touch()
    if isinstance(expected, str):
        with pytest.raises(LLMSRTError) as e:
            output_paths(inputs, Path("out"), ".srt")
        _one_line(str(e.value), "--out-dir: ")
        assert expected in str(e.value) and inputs[-1] in str(e.value)
        return
    assert [p.relative_to("out").as_posix() for p in output_paths(inputs, Path("out"), ".srt")] == expected
