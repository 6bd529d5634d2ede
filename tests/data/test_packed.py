import pickle

import numpy as np
import pytest

from llm_srt.data.features import FeatureCache
from llm_srt.data.manifest import PackedRows, Row
from llm_srt.data.packed import PackedList, PackedMap


def _row(i, **kw):
    return Row(**{**dict(id=f"r{i}", audio=f"a/{i}.wav", duration=1.5 + i, src_lang="eng", transcript=f"words {i}",
                         tgt_lang="deu", translation=f"Wörter {i}", split="train", corpus="t", sentence_id=str(i)),
                  **kw})


def test_packed_rows_give_back_the_rows_they_were_given():
    rows = [_row(i) for i in range(5)] + [_row(5, id="ü:1", audio="ä/b.wav", tgt_lang="", translation="",
                                               source="po")]
    packed = PackedRows(rows)
    assert len(packed) == 6 and list(packed) == rows and packed[-1] == rows[-1] and packed[2:5] == rows[2:5]
    assert pickle.loads(pickle.dumps(packed))[np.int64(4)] == rows[4] and len(PackedRows([])) == 0
    with pytest.raises(IndexError):
        packed[6]
    assert PackedList(["a", ("b", 1.5), None])[1] == ("b", 1.5)


def test_packed_map_is_the_mapping_it_was_given():
    items = {f"clips/{i:05d}.mp3": f"{i * 7919:064x}" for i in range(1000)}
    items |= {"ä/日本.wav": "x", "": "empty key", "undecodable-\udcff.wav": "from os.fsdecode"}
    packed = PackedMap(items)
    assert len(packed) == len(items) and dict(packed) == items and sorted(packed) == sorted(items)
    assert all(packed[k] == v for k, v in items.items()) and pickle.loads(pickle.dumps(packed)) == items
    assert packed.get("clips/01000.mp3") is None and "clips/00999.mp3" in packed and 3 not in packed
    assert len(PackedMap({})) == 0 and PackedMap({}).get("a", "default") == "default"
    with pytest.raises(KeyError):
        packed["clips/0.mp3"]


def test_keys_of_one_digest_are_told_apart(monkeypatch):
    from llm_srt.data import packed as module

    monkeypatch.setattr(module, "_digest", lambda key: len(key) % 3)  # digests shared by many keys
    items = {f"k{i}": str(i) for i in range(50)}
    packed = PackedMap(items)
    assert all(packed[k] == v for k, v in items.items()) and "k50" not in packed and packed.get("k") is None


def test_the_feature_cache_looks_the_given_hashes_up(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"not read: its hash is given")
    given = FeatureCache(tmp_path / "c", "enc", hashes={str(clip): "1" * 64})
    read = FeatureCache(tmp_path / "c", "enc")
    assert given.key(clip) == FeatureCache(tmp_path / "c", "enc", hashes={str(clip): "1" * 64}).key(str(clip))
    assert given.key(clip) != read.key(clip) and given.hashes[str(clip)] == "1" * 64
