"""Property-based fuzzing (hypothesis): the readers of untrusted input raise only our one-line user errors.

- the manifest reader on arbitrary bytes and on rows of arbitrary JSON values: only ManifestError escapes, and
  every row it accepts is valid;
- the audio loader on arbitrary bytes, on damaged real files (wav, flac, ogg, mp3 cut and bit-flipped) and on
  arbitrary arrays: only AudioError escapes, and what it returns is usable (finite, mono, 16 kHz, >= 25 ms);
- the SRT output parser on arbitrary unicode mixed with language tags and special tokens: never raises, never
  leaves a tag in its output, and round-trips any text that holds no tag;
- config loading on arbitrary YAML: only ConfigError escapes.
"""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from llm_srt import config, languages
from llm_srt.audio import MIN_SAMPLES, load_audio
from llm_srt.data.manifest import FIELDS, read_manifest
from llm_srt.errors import AudioError, ConfigError, ManifestError
from llm_srt.prompts import parse_srt, srt_target
from llm_srt.train.config import TrainConfig

pytestmark = pytest.mark.reliability("fuzz")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIP = "clip.wav"  # the one audio file a fuzzed manifest row may point at


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    sf.write(path / CLIP, np.zeros(1600, np.float32), 16000)
    return path


# ---- manifests ----------------------------------------------------------------------------------------------------
def _read(folder: Path, data: bytes):
    path = folder / "m.jsonl"
    path.write_bytes(data)
    try:
        return read_manifest(path)
    except ManifestError as e:
        assert str(e).startswith(str(path)), e
        return None


@FUZZ
@given(st.binary(max_size=400))
def test_manifest_reader_on_arbitrary_bytes(folder, data):
    assert _read(folder, data) is None  # no row of random bytes can be valid


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=6)
_GOOD = {"id": "u", "audio": CLIP, "duration": 1.0, "src_lang": "eng", "transcript": "hi", "tgt_lang": "deu",
         "translation": "hallo", "split": "test", "corpus": "t", "sentence_id": "1"}
_values = {"id": st.text(max_size=6), "audio": st.sampled_from([CLIP, "", ".", "none.wav", "a\u0000b", "x" * 300]),
           "duration": st.one_of(st.floats(), st.integers(-3, 10 ** 30), st.booleans()),
           "src_lang": st.sampled_from(["eng", "deu", "", "xx", "ENG"]), "tgt_lang": st.sampled_from(
               ["deu", "", None, "xx"]), "translation": st.one_of(st.none(), st.text(max_size=5))}


@st.composite
def _rows(draw):
    """A valid row with some fields replaced by odd values, dropped, or set to arbitrary JSON."""
    row = dict(_GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        action = draw(st.sampled_from(["odd", "drop", "json"]))
        if action == "drop":
            row.pop(key)
        else:
            row[key] = draw(_values.get(key, _json) if action == "odd" else _json)
    return row


@FUZZ
@given(st.lists(_rows(), min_size=1, max_size=4))
def test_manifest_reader_on_odd_rows(folder, rows):
    for i, row in enumerate(rows):
        if row.get("id") == "u":
            row["id"] = f"u{i}"  # unique unless fuzzed
    got = _read(folder, "".join(json.dumps(r) + "\n" for r in rows).encode())
    for row in got or []:  # anything accepted is usable
        assert row.id.strip() and math.isfinite(row.duration) and row.duration > 0
        assert row.src_lang in languages.LANGUAGES and (row.tgt_lang == "" or row.tgt_lang in languages.LANGUAGES)
        assert bool(row.tgt_lang) == bool(row.translation.strip()) and Path(row.audio).is_file()


# ---- audio ----------------------------------------------------------------------------------------------------
def _check(source) -> None:
    try:
        out = load_audio(source)
    except AudioError as e:
        assert "\n" not in str(e)
        return
    assert out.dtype == np.float32 and out.ndim == 1 and out.size >= MIN_SAMPLES
    assert np.isfinite(out).all() and np.abs(out).max(initial=0) <= 1.0


@FUZZ
@given(st.binary(max_size=2000))
def test_audio_loader_on_arbitrary_bytes(data):
    _check(data)


def _encoded(fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    t = np.arange(8000) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format=fmt, subtype=subtype)
    return buf.getvalue()


REAL = {name: _encoded(*spec) for name, spec in {"wav": ("WAV", "PCM_16"), "float-wav": ("WAV", "FLOAT"),
                                                 "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
                                                 "mp3": ("MP3", "MPEG_LAYER_III")}.items()}


@FUZZ
@given(st.sampled_from(sorted(REAL)), st.data())
def test_audio_loader_on_damaged_real_files(name, data):
    raw = bytearray(REAL[name])
    cut = data.draw(st.integers(0, len(raw)), label="keep")
    raw = raw[:cut]
    for _ in range(data.draw(st.integers(0, 12), label="flips")):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _check(bytes(raw))


@SMALL
@given(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int16, np.float16]),
                  hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40)))
def test_audio_loader_on_arbitrary_arrays(array):
    _check(array)


# ---- the SRT output parser --------------------------------------------------------------------------------------
_CODES = sorted(languages.LANGUAGES)
_piece = st.one_of(
    st.text(max_size=10),  # any unicode, including "<", "|", ">" and control characters
    st.sampled_from(_CODES).map(lambda c: f"<|{c}|>"),
    st.sampled_from(["<|", "|>", "<|xx-Latn|>", "<|zh_Hans|>", "<eos>", "</s>", "<pad>", "<end_of_turn>",
                     "<|endoftext|>", "<|im_end|>", "<||>", "\n", "\u3000", "\u200b"]))
_TAG_LIKE = ("<|", "|>", "<eos>", "<bos>", "<pad>", "</s>", "<end_of_turn>", "<start_of_turn>")


@FUZZ
@given(st.lists(_piece, max_size=12).map("".join))
def test_srt_parser_on_unicode_with_tags(text):
    out = parse_srt(text)
    for part in (out.transcript, out.translation):
        assert part == " ".join(part.split())  # whitespace normalised
        assert not any(f"<|{c}|>" in part for c in _CODES)  # no language tag survives
    if out.well_formed:  # the format, not the codes: "<|aa|>" (Afar, not in our registry) is still a tag
        assert out.transcript and out.translation and out.src and out.tgt
    if any(f"<|{c}|>" in text for c in _CODES):
        assert out.src is not None  # a language tag is always found


_plain = st.text(max_size=30).filter(lambda s: not any(t in s for t in _TAG_LIKE))


@FUZZ
@given(_plain, _plain, st.sampled_from(_CODES), st.sampled_from(_CODES))
def test_srt_parser_round_trips_any_text_without_tags(transcript, translation, src, tgt):
    out = parse_srt(srt_target(transcript, translation, src, tgt))
    assert out.transcript == " ".join(transcript.split()) and out.translation == " ".join(translation.split())
    assert (out.src, out.tgt) == (src, tgt)
    assert out.well_formed == bool(transcript.split() and translation.split())


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.lists(st.text(max_size=3), max_size=3)))
def test_srt_parser_on_non_strings(value):
    out = parse_srt(value)
    assert isinstance(out.transcript, str) and isinstance(out.translation, str)


# ---- configs ----------------------------------------------------------------------------------------------------
_KEYS = ["stage", "max_steps", "optim", "optim.lr", "optim.betas", "optim.schedule", "data", "data.tasks",
         "data.batch_size", "trainable", "precision", "model.adapter_kwargs", "model.lora", "model.init_from", "seed",
         "unknown", "optim.unknown"]
_yaml_value = st.one_of(st.sampled_from(["1", "0", "-1", "1e-4", "true", "null", "[]", "{}", "[0.9]", "[0.9, 0.99]",
                                         "{srt: 1.0}", "{x: 1}", "adapter", "cosine", "[adapter, lora]", "'5'",
                                         ".nan", "[1", "{a: [", "!!python/object:os.system {}", "*x", "&x 1"]),
                        st.text(max_size=12))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _yaml_value), max_size=4), st.text(max_size=80))
def test_config_on_arbitrary_yaml_and_overrides(folder, items, text):
    path = folder / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for source in (None, path):
        try:
            cfg = config.load(TrainConfig, source, [f"{k}={v}" for k, v in items])
        except ConfigError as e:
            assert "\n" not in str(e)
            continue
        assert isinstance(cfg.max_steps, int) and cfg.max_steps >= 1 and len(cfg.optim.betas) == 2
