"""The feature cache stores only finite features: a NaN or inf stored was served to every later epoch and stage."""

import re

import numpy as np
import pytest

from llm_srt.data.features import FeatureCache
from llm_srt.errors import LLMSRTError


def _encoder(value):
    """A fake encoder whose (5, 4) features of the second clip hold `value` once."""
    def encode(audio):
        feats = [np.ones((5, 4), dtype=np.float32) for _ in audio]
        feats[-1][2, 1] = value
        return feats
    return encode


@pytest.fixture
def clips(tmp_path, audio_file):
    return [str(audio_file(tmp_path / f"c{i}.wav", seconds=0.2, freq=300 + 100 * i)) for i in range(2)]


@pytest.mark.parametrize("value,said", [
    (np.nan, r"the encoder's features hold 1 values that are NaN or inf: not stored in the feature cache; an encoder "
             r"run in float16 overflows \(run the model in bfloat16 or float32\), or its weights are damaged$"),
    (np.inf, "the encoder's features hold 1 values that are NaN or inf"),
    (1e5, r"the encoder's features reach 100000, beyond the range of float16 \(65504\) the feature cache stores "
          r"them in: not stored; .* or set data.feature_cache=null to train without the cache$"),
])
def test_features_that_are_not_finite_as_stored_are_refused_naming_the_clip(tmp_path, clips, value, said):
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    with pytest.raises(LLMSRTError, match=f"^{re.escape(clips[1])}: {said}"):
        cache.get_or_compute(clips, _encoder(value))
    stored = [np.load(p) for p in (tmp_path / "cache").rglob("*.npy")]
    assert len(stored) == 1 and np.isfinite(stored[0]).all()  # the first clip's, sound; none of the second's
    assert cache.lookup(clips[1:]) == [None]


def test_a_float32_cache_keeps_what_float16_cannot_hold(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache", "enc", {}, dtype="float32")
    assert cache.get_or_compute(clips, _encoder(1e5))[1][2, 1] == 1e5


def test_an_entry_holding_nan_stored_before_is_damaged_and_encoded_again(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    cache.get_or_compute(clips, _encoder(2.0))
    path = cache.path_of(cache.key(clips[1]))
    poisoned = np.load(path)
    poisoned[0, 0] = np.nan
    np.save(path, poisoned)
    assert cache.lookup(clips)[1] is None and cache.lookup(clips)[0] is not None
    again = FeatureCache(tmp_path / "cache", "enc", {}).get_or_compute(clips, _encoder(3.0))[1]
    assert np.isfinite(again).all() and again[2, 1] == 3.0 and np.isfinite(np.load(path)).all()
