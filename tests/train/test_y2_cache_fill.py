"""The feature cache's fill before step 1 (TrainingData._fill): what it says while it checks which clips the cache
holds, and the room it leaves for output_dir's checkpoints on the same disk."""

from dataclasses import replace

import pytest

from llm_srt.data.features import FeatureCache
from llm_srt.errors import ConfigError
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig
from llm_srt.train import data as training_data
from llm_srt.train import room
from llm_srt.train.data import DataSection, TrainingData
from llm_srt.train.parallel import Dist

SOLO = Dist()


@pytest.fixture(scope="module")
def model(tiny_setup):
    kwargs = {"num_queries": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    return SpeechLLM(SpeechLLMConfig(encoder=tiny_setup["whisper"], llm=tiny_setup["llm"], adapter_kwargs=kwargs))


def _section(setup, cache, **over) -> DataSection:
    base = dict(train=setup["manifest"], feature_cache=str(cache), batch_size=3, tasks={"srt": 0.7, "asr": 0.3},
                num_workers=0)
    return DataSection(**{**base, **over})


def test_the_check_of_a_cache_an_older_version_filled_is_said_and_shows_progress(tiny_setup, model, tmp_path,
                                                                                 monkeypatch):
    """Since format 2, the first fill after an upgrade reads every format-1 entry whole inside the check of which
    clips are cached: on a cache of ~200 GB, hours with no line said and no progress (it looked like a stall). A
    line says it before the first clip is checked, and a progress bar counts the clips checked."""
    cfg = _section(tiny_setup, tmp_path / "f")
    cache = TrainingData(cfg, model, SOLO).cache
    clips = list(dict.fromkeys(str(e.audio) for e in TrainingData(cfg, model, SOLO).dataset))
    for clip in clips:  # as format 1 stored them: the same files under the older key
        old = cache.path_of(cache._key_of(cache._hash(clip), cache._unchecked))
        old.parent.mkdir(parents=True, exist_ok=True)
        cache.path_of(cache.key(clip)).rename(old)

    events, real_has, real_tqdm = [], FeatureCache.has, training_data.tqdm
    monkeypatch.setattr(FeatureCache, "has", lambda self, a: events.append("has") or real_has(self, a))

    def bar(iterable=None, *args, desc=None, **kwargs):
        events.append(f"bar {desc}")
        for item in real_tqdm(iterable, *args, desc=desc, **kwargs):
            events.append(f"in {desc}")
            yield item

    monkeypatch.setattr(training_data, "tqdm", bar)
    encoded, real_encode = [], TrainingData._encode
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(audios) or real_encode(self,
                                                                                                          audios))
    logs = []
    data = TrainingData(cfg, model, SOLO, log=lambda line: events.append(line) or logs.append(line))
    assert encoded == [] and all(data.cache.has(c) for c in clips)  # every old entry sound: moved, not encoded
    said = [k for k, e in enumerate(events) if e.startswith("checking ")]
    assert len(said) == 1 and said[0] < events.index("has"), events
    line = events[said[0]]
    assert line.startswith(f"checking {len(clips)} clips against the feature cache {tmp_path / 'f'}: ") \
        and "older version" in line and "read whole once" in line, line
    checked = [k for k, e in enumerate(events) if e == "has"]
    assert "bar feature cache check" in events[:checked[0]]
    assert all(events[k - 1] == "in feature cache check" for k in checked[:len(clips)]), events

    logs.clear()
    TrainingData(_section(tiny_setup, tmp_path / "fresh"), model, SOLO, log=logs.append)  # nothing there to check
    assert not [m for m in logs if m.startswith("checking ")], logs
