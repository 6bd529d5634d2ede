"""An entry stored before the feature cache refused NaN and inf (cache format 1) is checked once, when has() or a
lookup meets it: has() reported one holding NaN as stored, so the pre-fill before step 1 skipped it and a training
step encoded it again, or stopped on it."""

import hashlib
import json

import numpy as np
import pytest

from llm_srt.audio import DECODER_VERSION
from llm_srt.data.features import FeatureCache

HASHES = {"sound.wav": "1" * 64, "nan.wav": "2" * 64, "inf.wav": "3" * 64}


def _format_1_path(root, audio_hash, dtype="float16"):
    """Where a cache of format 1 (encoder "enc", no settings) stored the features of the audio of `audio_hash`."""
    prefix = json.dumps({"format": 1, "encoder": "enc", "dtype": dtype, "settings": {}, "decoder": DECODER_VERSION},
                        sort_keys=True)
    key = hashlib.sha256((prefix + audio_hash).encode("utf-8")).hexdigest()
    return root / key[:2] / f"{key}.npy"


@pytest.fixture
def cache(tmp_path):
    """A cache holding format-1 entries: sound.wav's sound, nan.wav's with a NaN, inf.wav's with an inf."""
    for name, bad in (("sound.wav", 1.0), ("nan.wav", np.nan), ("inf.wav", np.inf)):
        path = _format_1_path(tmp_path / "cache", HASHES[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        feats = np.ones((5, 4), dtype=np.float16)
        feats[3, 2] = bad
        np.save(path, feats)
    return FeatureCache(tmp_path / "cache", "enc", {}, hashes=HASHES)


def test_has_reports_an_older_entry_holding_nan_or_inf_as_absent(cache, tmp_path):
    assert not cache.has("nan.wav") and not cache.has("inf.wav")  # so the pre-fill encodes them before step 1
    assert cache.has("sound.wav")
    assert cache.lookup(["nan.wav", "inf.wav"]) == [None, None]
    # checked once: the unsound entries are gone, the sound one is under its current key (has() reads its header)
    assert [p.name for p in (tmp_path / "cache").rglob("*.npy")] == [cache.path_of(cache.key("sound.wav")).name]
    assert not _format_1_path(tmp_path / "cache", HASHES["sound.wav"]).exists()
    assert cache.has("sound.wav") and cache.lookup(["sound.wav"])[0].tolist() == np.ones((5, 4)).tolist()


def test_a_lookup_serves_a_sound_older_entry_without_encoding_it_again(cache, tmp_path):
    def encode(audio):
        raise AssertionError("encoded again")
    found = cache.get_or_compute(["sound.wav"], encode)[0]
    assert found.dtype == np.float16 and found.tolist() == np.ones((5, 4)).tolist() and cache.hits == 1
    assert cache.path_of(cache.key("sound.wav")).is_file()
    assert cache.lookup(["nan.wav"]) == [None] and not _format_1_path(tmp_path / "cache", HASHES["nan.wav"]).exists()


def test_a_sound_older_entry_in_a_folder_that_cannot_be_written_is_still_served(cache, tmp_path, monkeypatch):
    def refuse(*args):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("llm_srt.data.features.os.replace", refuse)
    assert cache.has("sound.wav") and cache.lookup(["sound.wav"])[0] is not None
    assert _format_1_path(tmp_path / "cache", HASHES["sound.wav"]).is_file()
