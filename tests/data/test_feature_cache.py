import os
import threading
from pathlib import Path

import numpy as np
import pytest

from llm_srt.data.features import FeatureCache
from llm_srt.errors import LLMSRTError


class Encoder:
    """A fake frozen encoder: (N,) audio -> (N // 160, 4) features; counts the utterances it computed."""

    def __init__(self, scale=1.0):
        self.scale, self.calls, self.seen = scale, 0, 0

    def __call__(self, audio):
        self.calls += 1
        self.seen += len(audio)
        return [self.scale * np.stack([a[: len(a) // 160 * 160].reshape(-1, 160).mean(1) + k for k in range(4)], 1)
                for a in audio]


@pytest.fixture
def clips(tmp_path, audio_file):
    return [str(audio_file(tmp_path / f"c{i}.wav", seconds=0.2 + 0.1 * i, freq=200 + 50 * i)) for i in range(3)]


def test_second_call_is_all_hits_and_gives_identical_features(tmp_path, clips):
    enc = Encoder()
    cache = FeatureCache(tmp_path / "cache", "whisper-base@abc", {"mel": 80})
    first = cache.get_or_compute(clips, enc)
    assert cache.stats() == {"hits": 0, "misses": 3} and enc.calls == 1
    assert [f.shape for f in first] == [(20, 4), (30, 4), (40, 4)] and first[0].dtype == np.float16  # as stored
    again = FeatureCache(tmp_path / "cache", "whisper-base@abc", {"mel": 80}).get_or_compute(clips[::-1], enc)
    assert enc.calls == 1
    for a, b in zip(first, again[::-1]):
        np.testing.assert_array_equal(a, b)  # computed-now and loaded-later are the same numbers (float16-rounded)
    stored = list((tmp_path / "cache").rglob("*.npy"))
    assert len(stored) == 3 and all(np.load(p).dtype == np.float16 for p in stored)
    assert all(p.parent.name == p.stem[:2] for p in stored)


def test_changed_file_encoder_or_settings_recompute(tmp_path, clips, audio_file):
    enc = Encoder()
    root = tmp_path / "cache"
    FeatureCache(root, "enc-a", {"mel": 80}).get_or_compute(clips, enc)
    assert enc.seen == 3
    FeatureCache(root, "enc-b", {"mel": 80}).get_or_compute(clips[:1], enc)
    assert enc.seen == 4
    FeatureCache(root, "enc-a", {"mel": 128}).get_or_compute(clips[:1], enc)
    assert enc.seen == 5
    FeatureCache(root, "enc-a", {"mel": 80}, dtype="float32").get_or_compute(clips[:1], enc)
    assert enc.seen == 6
    cache = FeatureCache(root, "enc-a", {"mel": 80})
    old = cache.get_or_compute(clips[:1], enc)[0]
    assert enc.seen == 6 and cache.hits == 1
    audio_file(tmp_path / "c0.wav", seconds=0.2, freq=900)  # same name and length, new content
    st = os.stat(clips[0])
    os.utime(clips[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    new = cache.get_or_compute(clips[:1], enc)[0]
    assert enc.seen == 7 and cache.misses == 1 and not np.array_equal(old, new)


def test_a_cache_filled_by_another_version_of_the_audio_decoder_is_not_served(tmp_path, monkeypatch, audio_file):
    """The key held the encoder, the file's bytes and the settings, not the code that decodes them: after an
    upgrade that refuses a clip (an MP3 that decoded 6.5 s of its 20 s), its cached features, cut short and paired
    with the whole transcript, were still served. The decoder's version is in the key."""
    from llm_srt import audio
    from llm_srt.data import features

    clip = [str(audio_file(tmp_path / "c.wav", seconds=2.0, freq=300))]
    whole = features.load_audio
    monkeypatch.setattr(features, "load_audio", lambda *a, **k: whole(*a, **k)[:16000])  # a decoder cutting it short
    enc = Encoder()
    assert FeatureCache(tmp_path / "cache", "enc", {}).get_or_compute(clip, enc)[0].shape == (100, 4)
    monkeypatch.setattr(features, "load_audio", whole)  # the decoder fixed, its version bumped
    monkeypatch.setattr(features, "DECODER_VERSION", audio.DECODER_VERSION + 1)
    assert FeatureCache(tmp_path / "cache", "enc", {}).get_or_compute(clip, enc)[0].shape == (200, 4)
    assert enc.calls == 2


def test_duplicates_in_one_call_computed_once_and_damaged_files_recomputed(tmp_path, clips):
    enc = Encoder()
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    out = cache.get_or_compute([clips[0], clips[0], clips[1]], enc)
    assert enc.seen == 2 and np.array_equal(out[0], out[1])
    path = cache.path_of(cache.key(clips[0]))
    path.write_bytes(b"garbage")
    cache.get_or_compute(clips[:1], enc)
    assert enc.seen == 3 and np.load(path).shape == (20, 4)


def test_concurrent_writers_leave_complete_files(tmp_path, clips):
    errors = []

    def work():
        try:
            FeatureCache(tmp_path / "cache", "enc", {}).get_or_compute(clips * 5, Encoder())
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3 and not list((tmp_path / "cache").rglob("*.tmp"))


def test_bad_feature_functions_are_reported(tmp_path, clips):
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    with pytest.raises(LLMSRTError, match="returned 1 arrays for 2"):
        cache.get_or_compute(clips[:2], lambda audio: [np.zeros((3, 4))])
    with pytest.raises(LLMSRTError, match=r"expected \(T, D\)"):
        cache.get_or_compute(clips[:1], lambda audio: [np.zeros(3)])
    with pytest.raises(LLMSRTError, match="dtype"):
        FeatureCache(tmp_path, "enc", {}, dtype="int8")


def test_known_hashes_spare_reading_and_stat_ing_the_audio(tmp_path, clips, monkeypatch):
    from llm_srt.data import features

    hashes = features.content_hashes(clips + clips[:1])
    assert sorted(hashes) == sorted(clips) and hashes[clips[0]] == features.content_hash(clips[0])
    enc = Encoder()
    FeatureCache(tmp_path / "cache", "enc", {}).get_or_compute(clips, enc)

    def no_stat(path):
        raise AssertionError(f"{path} stat-ed although its hash was given")

    monkeypatch.setattr(features, "content_hash", no_stat)
    cache = FeatureCache(tmp_path / "cache", "enc", {}, hashes=hashes)
    assert [f.shape for f in cache.lookup(clips)] == [(20, 4), (30, 4), (40, 4)] and cache.hits == 3
    with pytest.raises(AssertionError, match="stat-ed"):
        FeatureCache(tmp_path / "cache", "enc", {}).key(clips[0])


def test_lookup_computes_nothing_and_settings_such_as_pad_to_30s_are_in_the_key(tmp_path, clips):
    enc = Encoder()
    plain = FeatureCache(tmp_path / "cache", "enc", {"pad_to_30s": False})
    padded = FeatureCache(tmp_path / "cache", "enc", {"pad_to_30s": True})
    assert plain.key(clips[0]) != padded.key(clips[0])
    plain.get_or_compute(clips[:2], enc)
    found = plain.lookup(clips)
    assert found[2] is None and found[0].shape == (20, 4) and enc.seen == 2
    assert padded.lookup(clips[:1]) == [None] and not padded.has(clips[0]) and plain.has(clips[0])


def test_content_hashes_reads_each_file_once_per_process(tmp_path, monkeypatch):
    """A curriculum's stages run in one process: the second stage's hashing of the same clips reads no file again
    (the memo had been dropped from content_hashes: every stage read every clip of the corpus again)."""
    from llm_srt.data import features

    clips = []
    for i in range(3):
        clips.append(tmp_path / f"{i}.wav")
        clips[-1].write_bytes(bytes([i]) * 10)
    read = []
    real = features._sha256
    monkeypatch.setattr(features, "_sha256", lambda path: read.append(path) or real(path))
    first = features.content_hashes(clips, threads=2)
    assert features.content_hashes(clips, threads=2) == first and len(read) == 3
    clips[0].write_bytes(b"changed")  # another size: read again
    assert features.content_hashes(clips, threads=1)[str(clips[0])] != first[str(clips[0])] and len(read) == 4


def test_a_file_rewritten_after_it_was_hashed_never_puts_its_new_audio_under_the_old_key(tmp_path, clips,
                                                                                         audio_file):
    """Rank 0 hashes the audio at set-up; a fill encodes it hours later. A clip rewritten in between stored its new
    features under the old content's key, and a later run with the old content got them. The features now go under
    the hash of the bytes encoded."""
    from llm_srt.data.features import content_hashes

    hashes = content_hashes(clips)
    old = open(clips[0], "rb").read()
    audio_file(Path(clips[0]), seconds=0.2, freq=900)  # rewritten in place after the hashing
    cache = FeatureCache(tmp_path / "cache", "enc", {}, hashes=hashes)
    new_features = cache.get_or_compute(clips[:1], Encoder())[0]
    open(clips[0], "wb").write(old)  # the old content back: its features are its own, not the rewrite's
    fresh = FeatureCache(tmp_path / "cache", "enc", {}, hashes=hashes)
    enc = Encoder()
    old_features = fresh.get_or_compute(clips[:1], enc)[0]
    assert enc.seen == 1 and not np.array_equal(old_features, new_features)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_has_counts_a_file_cut_short_as_absent(tmp_path, clips, dtype):
    """Features are stored without fsync: a crash can leave one empty or cut short. has() checked only that the file
    existed, so a pre-fill counted it as cached and left it to be encoded again in the training steps."""
    enc = Encoder()
    cache = FeatureCache(tmp_path / "cache", "enc", {}, dtype=dtype)
    cache.get_or_compute(clips[:1], enc)
    path = cache.path_of(cache.key(clips[0]))
    whole = path.read_bytes()
    assert cache.has(clips[0]) and not cache.has(clips[1])
    for size in (len(whole) - 1, 130, 128, 60, 0):
        path.write_bytes(whole[:size])
        assert not cache.has(clips[0]), size
    cache.get_or_compute(clips[:1], enc)  # what a fill does with it: encoded again, stored whole
    assert enc.seen == 2 and path.read_bytes() == whole and cache.has(clips[0])


@pytest.mark.parametrize("shape", [(5,), (0, 4), (2, 3, 4)])
def test_an_entry_of_another_shape_than_frames_by_dims_is_damaged_and_encoded_again(tmp_path, clips, shape):
    """Only a (T, D) entry with T >= 1 is what the cache writes: a 1-D one stopped a lazy-cache run with an error
    naming no file, and a (0, D) one counted as stored and trained its row on no speech at all."""
    enc = Encoder()
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    want = cache.get_or_compute(clips[:1], enc)[0]
    path = cache.path_of(cache.key(clips[0]))
    np.save(path, np.zeros(shape, np.float16), allow_pickle=False)
    assert not cache.has(clips[0]) and cache.lookup(clips[:1]) == [None]
    assert np.array_equal(cache.get_or_compute(clips[:1], enc)[0], want) and enc.seen == 2 and cache.has(clips[0])


def test_a_clip_a_frame_over_the_window_is_encoded_as_the_window(tmp_path):
    """30 s and one frame at 8 kHz decode to 480,002 samples at 16 kHz, which Whisper's encoder refuses: the cache
    handed it over whole, and the clip was left out of a cached run as "cannot be decoded" while one without the
    cache (which loads with max_seconds) trained on it."""
    import soundfile as sf

    path = tmp_path / "edge.wav"
    sf.write(path, np.full(30 * 8000 + 1, 0.1, np.float32), 8000)
    seen = []
    FeatureCache(tmp_path / "cache", "enc", {"mel": 80}).get_or_compute(
        [str(path)], lambda audio: seen.extend(a.size for a in audio) or Encoder()(audio))
    assert seen == [30 * 16000]


def test_an_entry_whose_header_numpy_cannot_parse_is_damaged_and_encoded_again(tmp_path, clips):
    """A byte of the .npy header damaged into an unclosed bracket: np.load raised tokenize.TokenError (not a
    ValueError), which lookup() and get_or_compute() let through: a DataLoader worker, the step and a resumed run
    stopped at that batch with a traceback. It is damaged, like any other: absent to lookup, encoded again."""
    enc = Encoder()
    cache = FeatureCache(tmp_path / "cache", "enc", {})
    want = cache.get_or_compute(clips[:1], enc)[0]
    path = cache.path_of(cache.key(clips[0]))
    whole = path.read_bytes()
    for damage in (b"{{descr'", b"(20, 4, }"):
        path.write_bytes(whole.replace(b"{'descr'" if damage.startswith(b"{") else b"(20, 4), }", damage))
        assert not cache.has(clips[0]) and cache.lookup(clips[:1]) == [None]
        assert np.array_equal(cache.get_or_compute(clips[:1], enc)[0], want) and path.read_bytes() == whole
