"""The feature cache's fill before step 1 (TrainingData._fill): what it says while it checks which clips the cache
holds, and the room it leaves for output_dir's checkpoints on the same disk."""

import json
import os
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from llm_srt.data.features import FeatureCache
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.train import data as training_data
from llm_srt.train import recipe, room
from llm_srt.train.config import load_config
from llm_srt.train.data import DataSection, TrainingData
from llm_srt.train.parallel import Dist

from .conftest import gloo_when_all_arrived, overrides

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


def _node_of_its_own(rank: int, world: int, store: str, setup: dict, root: str) -> None:
    """One of two ranks on two "nodes" (LOCAL_WORLD_SIZE 1), each with the feature cache on its own disk (nodeN
    under `root`); it writes what it said, the progress bars it showed and the clips it encoded to rankN.json."""
    torch.set_num_threads(1)
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    gloo_when_all_arrived(store, rank, world, timedelta(seconds=60))
    try:
        bars, real_tqdm = [], training_data.tqdm

        def bar(iterable=None, *args, desc=None, disable=False, **kwargs):
            bars.extend([] if disable else [desc])
            return real_tqdm(iterable, *args, desc=desc, disable=disable, **kwargs)

        training_data.tqdm = bar
        encoded, encode = [], TrainingData._encode
        TrainingData._encode = lambda self, audios: (encoded.append(len(audios)), encode(self, audios))[1]
        logs, model = [], _node_model(setup)
        TrainingData(_node_section(setup, Path(root) / f"node{rank}"), model, Dist(rank, world), log=logs.append)
        (Path(root) / f"rank{rank}.json").write_text(json.dumps({"logs": logs, "bars": bars,
                                                                 "encoded": sum(encoded)}))
    finally:
        torch.distributed.destroy_process_group()


def _node_model(setup) -> SpeechLLM:
    return SpeechLLM(SpeechLLMConfig(encoder=setup["whisper"], llm=setup["llm"], adapter="linear"))


def _node_section(setup, cache) -> DataSection:
    return DataSection(train=setup["manifest"], batch_size=2, feature_cache=str(cache), tasks={"asr": 1.0},
                       num_workers=0)


@pytest.mark.slow  # two processes; make test: the check's own line and progress (tests above)
@pytest.mark.long(30)
def test_a_node_looking_for_the_other_nodes_clips_says_older_entries_and_shows_progress(tiny_setup, tmp_path,
                                                                                       monkeypatch):
    """After the fill, a node whose cache disk lacks a clip of another node's share looks for every clip of the
    corpus: has() read each entry an older version stored (format 1) whole there too, with no line said and no
    progress (millions of clips on a node's own disk). Here node 0's disk holds its rank's share as current entries
    and the other rank's as older ones, one of them missing: the line is said once, as the look-up meets the first
    older entry, and a progress bar counts the clips looked for."""
    import torch.multiprocessing as mp

    checked, real_has = [], FeatureCache.has
    monkeypatch.setattr(FeatureCache, "has", lambda self, a: checked.append(a) or real_has(self, a))
    cache = TrainingData(_node_section(tiny_setup, tmp_path / "node0"), _node_model(tiny_setup), SOLO).cache
    monkeypatch.undo()
    theirs = checked[1::2]  # in the fill's order (longest first), every other clip is rank 1's
    cache.path_of(cache.key(theirs[0])).unlink()  # not on node 0's disk
    _to_format_1(cache, theirs[1:])

    mp.spawn(_node_of_its_own, args=(2, str(tmp_path / "store"), dict(tiny_setup), str(tmp_path)), nprocs=2,
             join=True)
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert got["encoded"] == 1 and all(cache.has(c) for c in checked)  # the missing clip; the older ones moved
    older = [k for k, m in enumerate(got["logs"]) if "older version" in m]
    lacks = [k for k, m in enumerate(got["logs"]) if " lacks " in m]
    assert len(older) == 1 and len(lacks) == 1 and older[0] < lacks[0], got["logs"]
    assert got["bars"][:1] == ["feature cache check"] and "feature cache check, every rank's clips" in got["bars"], \
        got["bars"]


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
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=17 << 20))  # 17 MiB, whatever is
    #   written: one checkpoint (the tiny adapter, its logs' 2 MiB) fits, and 8 x 2 MiB of features alone
    monkeypatch.setattr(FeatureCache, "stored_bytes", lambda self, frames, dim: 2 << 20)
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(len(audios)) or [])
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=1, **{"data.feature_cache": str(tmp_path / "f")}))
    with pytest.raises(LLMSRTError, match=r"data.feature_cache: the encoder features of 8 utterances .* need about "
                                          r"16.0 MiB in .*f, which has .* MiB free once .* MiB are kept for one "
                                          r"checkpoint of output_dir, on the same disk"):
        recipe.train(cfg, log=lambda *_: None)
    assert encoded == [] and not list(tmp_path.glob("f/**/*.npy"))
