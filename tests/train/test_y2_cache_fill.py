"""The feature cache's fill before step 1 (TrainingData._fill): what it says while it checks which clips the cache
holds, and the room it leaves for output_dir's checkpoints on the same disk."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from llm_srt.data.features import FeatureCache
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import data as training_data
from llm_srt.train import recipe, room
from llm_srt.train.config import load_config
from llm_srt.train.data import DataSection, TrainingData
from llm_srt.train.parallel import Dist

from .conftest import overrides

SOLO = Dist()


def _section(setup, cache, **over) -> DataSection:
    base = dict(train=setup["manifest"], feature_cache=str(cache), batch_size=3, tasks={"srt": 0.7, "asr": 0.3},
                num_workers=0)
    return DataSection(**{**base, **over})


def _to_format_1(cache: FeatureCache, clips) -> None:
    """Move the clips' entries to where format 1 stored them: the same files under the older key."""
    for clip in clips:
        old = cache.path_of(cache._key_of(cache._hash(clip), cache._unchecked))
        old.parent.mkdir(parents=True, exist_ok=True)
        cache.path_of(cache.key(clip)).rename(old)


def _older_entries_said(logs) -> list[str]:
    return [m for m in logs if "older version" in m]


def test_the_check_of_a_cache_an_older_version_filled_is_said_and_shows_progress(tiny_setup, model, tmp_path,
                                                                                 monkeypatch):
    """Since format 2, the first fill after an upgrade reads every format-1 entry whole inside the check of which
    clips are cached: on a cache of ~200 GB, hours with no line said and no progress (it looked like a stall). A
    line says it when the check meets the first such entry (here half the cache's, beside current ones), once, and
    a progress bar counts the clips checked."""
    cfg = _section(tiny_setup, tmp_path / "f")
    cache = TrainingData(cfg, model, SOLO).cache
    clips = sorted({str(e.audio) for e in TrainingData(cfg, model, SOLO).dataset})
    old = set(clips[1::2])
    _to_format_1(cache, old)

    events, real_has, real_tqdm = [], FeatureCache.has, training_data.tqdm
    monkeypatch.setattr(FeatureCache, "has", lambda self, a: events.append(f"has {a}") or real_has(self, a))

    def bar(iterable=None, *args, desc=None, **kwargs):
        events.append(f"bar {desc}")
        for item in real_tqdm(iterable, *args, desc=desc, **kwargs):
            events.append(f"in {desc}")
            yield item

    monkeypatch.setattr(training_data, "tqdm", bar)
    encoded, real_encode = [], TrainingData._encode
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(audios) or real_encode(self,
                                                                                                          audios))
    data = TrainingData(cfg, model, SOLO, log=events.append)
    assert encoded == [] and all(data.cache.has(c) for c in clips)  # every old entry sound: moved, not encoded
    said = [k for k, e in enumerate(events) if "older version" in e]
    assert len(said) == 1, events
    assert events[said[0]] == (f"the feature cache {tmp_path / 'f'} holds entries an older version of the toolkit "
                               "stored: each one the check meets is read whole once, to check its numbers and move "
                               "it to the current format")
    checked = [e.removeprefix("has ") for e in events if e.startswith("has ")]
    first_old = next(c for c in checked if c in old)
    assert events[said[0] - 1] == f"has {first_old}", events  # said as the first older entry was read, not before
    checked = [k for k, e in enumerate(events) if e.startswith("has ")]
    assert "bar feature cache check" in events[:checked[0]]
    assert all(events[k - 1] == "in feature cache check" for k in checked[:len(clips)]), events


def test_a_cache_without_older_entries_says_nothing_of_them(tiny_setup, model, tmp_path, monkeypatch):
    """Every run with a feature cache folder said that entries an older version stored are read whole, older
    entries or none: on a cache of the current format (and on a fresh one) that line is not said."""
    cfg, logs = _section(tiny_setup, tmp_path / "f"), []
    TrainingData(cfg, model, SOLO, log=logs.append)  # a fresh cache: filled now
    assert (tmp_path / "f").is_dir() and not _older_entries_said(logs), logs
    logs.clear()
    encoded, real_encode = [], TrainingData._encode
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(audios) or real_encode(self,
                                                                                                          audios))
    TrainingData(cfg, model, SOLO, log=logs.append)  # the next run: every entry current
    assert encoded == [] and not _older_entries_said(logs), logs


def test_the_fill_keeps_room_for_one_checkpoint_of_output_dir_on_the_same_disk(tiny_setup, model, tmp_path,
                                                                               monkeypatch):
    """The feature cache's room was checked for its features alone: on output_dir's disk (data.feature_cache:
    auto, under the home folder beside runs/) a fill that left less than a checkpoint was refused only after it
    (638c1a0), hours of encoding in. With `keep` (output_dir, one checkpoint's bytes) on the same disk those bytes
    are held back before the fill: refused at once, in one line, nothing encoded; on another disk, not held back."""
    cfg = _section(tiny_setup, tmp_path / "f")
    TrainingData(cfg, model, SOLO)
    need = sum(-(-f.stat().st_size // 4096) * 4096 for f in (tmp_path / "f").rglob("*.npy"))  # (whole blocks)
    out, kept = tmp_path / "run", 5 << 20
    out.mkdir()
    encoded, real_encode = [], TrainingData._encode
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(len(audios)) or real_encode(
        self, audios))
    monkeypatch.setattr(FeatureCache, "free_bytes", lambda self: need + kept - 1)
    with pytest.raises(ConfigError, match=r"data.feature_cache: the encoder features of 8 utterances .* need about "
                       rf"{need / 2**20:.1f} MiB in .*g, which has {(need - 1) / 2**20:.1f} MiB free once 5.0 MiB are "
                       r"kept for one checkpoint of output_dir, on the same disk; point data.feature_cache at a disk "
                       r"with room \(or output_dir\), or set it to null") as e:
        TrainingData(replace(cfg, feature_cache=str(tmp_path / "g")), model, SOLO, keep=(out, kept))
    assert "\n" not in str(e.value) and encoded == [] and not list(tmp_path.glob("g/**/*.npy"))

    monkeypatch.setattr(FeatureCache, "free_bytes", lambda self: need + kept)  # just enough for both
    TrainingData(replace(cfg, feature_cache=str(tmp_path / "g")), model, SOLO, keep=(out, kept))
    assert len(list(tmp_path.glob("g/**/*.npy"))) == len(list(tmp_path.glob("f/**/*.npy"))) == 8

    monkeypatch.setattr(FeatureCache, "free_bytes", lambda self: need)  # output_dir on another disk: nothing held
    monkeypatch.setattr(training_data, "same_disk", lambda folder, other: False)
    TrainingData(replace(cfg, feature_cache=str(tmp_path / "h")), model, SOLO, keep=(out, kept))
    assert len(list(tmp_path.glob("h/**/*.npy"))) == 8


def test_same_disk_tells_one_filesystem_from_another(tmp_path):
    assert room.same_disk(tmp_path / "not" / "made", tmp_path) and room.same_disk(tmp_path, tmp_path / "x")
    if not os.path.ismount("/proc"):
        pytest.skip("no /proc filesystem here")
    assert not room.same_disk(tmp_path, Path("/proc"))


def test_a_run_whose_cache_would_fill_output_dirs_disk_is_refused_before_encoding(tiny_setup, tmp_path,
                                                                                  monkeypatch):
    """The recipe hands TrainingData output_dir and one checkpoint's size: a feature cache on output_dir's disk
    that fits alone, but not beside a checkpoint, is refused before the fill, not after it (nor, as before 638c1a0,
    at the first save)."""
    usage, encoded = shutil.disk_usage(tmp_path), []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=70 << 20))  # 70 MiB, whatever is
    #   written: one checkpoint (64 MiB + the tiny adapter) fits, and 8 x 2 MiB of features alone
    monkeypatch.setattr(FeatureCache, "stored_bytes", lambda self, frames, dim: 2 << 20)
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(len(audios)) or [])
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=1, **{"data.feature_cache": str(tmp_path / "f")}))
    with pytest.raises(LLMSRTError, match=r"data.feature_cache: the encoder features of 8 utterances .* need about "
                                          r"16.0 MiB in .*f, which has .* MiB free once .* MiB are kept for one "
                                          r"checkpoint of output_dir, on the same disk"):
        recipe.train(cfg, log=lambda *_: None)
    assert encoded == [] and not list(tmp_path.glob("f/**/*.npy"))
