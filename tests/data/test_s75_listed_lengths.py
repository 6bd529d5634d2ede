"""A train clip whose header's length is not its duration list's: the measured length is written, with a note, and a
clip over Whisper's window is left out and counted (a 37 s clip listed as 1.9 s was written as 1.9 s, `prepare check`
passed it and `llm-srt train` refused it mid-run). A header that agrees keeps the list's length, the clip undecoded."""

import re

import numpy as np
import pytest
import soundfile as sf

from llm_srt.data import clips as clips_module
from llm_srt.data.commonvoice import prepare_commonvoice
from llm_srt.data.manifest import read_manifest

CLIPS = {"train": ("de_1.mp3", "de_2.mp3"), "dev": ("de_3.mp3",), "test": ("de_4.mp3",)}


def _locale(tmp_path, layouts, write_clip, listed_ms: dict[str, int]):
    """A Common Voice 17 locale folder whose clips `write_clip(path, i)` writes, listed in clip_durations.tsv."""
    root = tmp_path / "cv" / "de"
    i = 0
    for split, names in CLIPS.items():
        rows = []
        for name in names:
            i += 1
            write_clip(root / "clips" / name, i)
            rows.append({"client_id": f"spk{i}", "path": name, "sentence_id": f"s{i}", "sentence": f"Satz {i}.",
                         "locale": "de"})
        layouts.write_cv_table(root / f"{split}.tsv", layouts.CV17_HEADER, rows)
    layouts.write_cv_table(root / "validated.tsv", layouts.CV17_HEADER, [])
    layouts.write_clip_durations(root, listed_ms)
    return root


def test_a_train_clip_longer_than_listed_is_measured_noted_and_left_out_over_the_window(tmp_path, layouts,
                                                                                        audio_file, mp3_format,
                                                                                        monkeypatch):
    monkeypatch.setattr(clips_module, "WINDOW_SECONDS", 2.0)  # de_1 (2.5 s, listed 1.0 s) is over it
    seconds = {1: 2.5, 2: 1.2, 3: 0.8, 4: 0.8}
    root = _locale(tmp_path, layouts, lambda p, i: audio_file(p, seconds=seconds[i], sr=48000, fmt=mp3_format),
                   {"de_1.mp3": 1000, "de_2.mp3": 1200, "de_3.mp3": 800, "de_4.mp3": 800})
    summary = prepare_commonvoice(root, tmp_path / "out", workers=1)
    assert [r.id for r in read_manifest(tmp_path / "out" / "train.jsonl")] == ["commonvoice:deu:de_2"]
    (reason, n), = summary.dropped.items()
    assert n == 1 and reason.startswith("clip longer than the 2.0 s") and summary.dropped_at[reason] == [
        f"{root}/train.tsv:2 (its 1 manifest rows): {root}/clips/de_1.mp3 (2.5 s)"]
    note, = summary.notes
    assert re.search(rf"the measured length of 1 clip\(s\) is used .*{root}/train.tsv:2: 1\.00 s listed, "
                     rf"2\.5\d s", note)

    monkeypatch.setattr(clips_module, "WINDOW_SECONDS", 30.0)  # under the window: written with its measured length
    prepare_commonvoice(root, tmp_path / "out2", workers=1)
    durations = {r.id: r.duration for r in read_manifest(tmp_path / "out2" / "train.jsonl")}
    assert durations["commonvoice:deu:de_1"] == pytest.approx(2.5, abs=0.06)
    assert durations["commonvoice:deu:de_2"] == 1.2  # agreeing: the list's, as before


def test_a_train_clip_whose_header_agrees_with_the_list_is_not_decoded(tmp_path, layouts, audio_file, mp3_format,
                                                                       monkeypatch):
    root = _locale(tmp_path, layouts, lambda p, i: audio_file(p, seconds=1.0, sr=48000, fmt=mp3_format),
                   {f"de_{i}.mp3": 1000 for i in range(1, 5)})
    decoded, real_load = [], clips_module.load_audio
    monkeypatch.setattr(clips_module, "load_audio", lambda path, *a, **k: decoded.append(path.name) or
                        real_load(path, *a, **k))
    summary = prepare_commonvoice(root, tmp_path / "out", workers=1)
    assert sorted(decoded) == (["de_3.mp3", "de_4.mp3"] if mp3_format == "MP3" else [])  # dev's and test's only
    assert summary.notes == [] and summary.dropped == {}
    assert [r.duration for r in read_manifest(tmp_path / "out" / "train.jsonl")] == [1.0, 1.0]


def test_a_vbr_mp3_without_a_xing_frame_keeps_its_list_length_when_decoding_agrees(tmp_path, layouts, mp3_format):
    """libsndfile estimates such an MP3's length from its first frame (here ~2.5 times its length): the clip is
    decoded to settle it, and the list, which agrees with what decodes, is kept; the estimate is not written."""
    if mp3_format != "MP3":
        pytest.skip("this libsndfile writes no MP3")
    sr = 16000
    noise = 0.5 * np.random.default_rng(0).standard_normal(4 * sr)
    samples = np.concatenate([np.zeros(4 * sr), noise]).astype(np.float32)  # silence first: a small first frame

    def vbr_without_xing(path, i):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, samples, sr, format="MP3", bitrate_mode="VARIABLE")
        data = path.read_bytes()
        second = next(j for j in range(1, len(data) - 1) if data[j] == 0xFF and data[j + 1] & 0xE0 == 0xE0)
        path.write_bytes(data[second:])  # the first frame, holding the Xing header, cut off

    root = _locale(tmp_path, layouts, vbr_without_xing, {})
    measured = len(clips_module.load_audio(root / "clips" / "de_1.mp3")) / clips_module.SAMPLE_RATE
    assert sf.info(str(root / "clips" / "de_1.mp3")).duration > 2 * measured  # the header's estimate is far off
    layouts.write_clip_durations(root, {f"de_{i}.mp3": round(measured * 1000) for i in range(1, 5)})
    summary = prepare_commonvoice(root, tmp_path / "out", workers=1)
    assert summary.notes == [] and summary.dropped == {} and summary.bad_clips == []
    assert [r.duration for r in read_manifest(tmp_path / "out" / "train.jsonl")] == [round(measured, 3)] * 2
