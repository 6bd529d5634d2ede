from collections import Counter

import pytest

from llm_srt.data.fleurs import prepare_fleurs
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import LLMSRTError

# locale -> split -> [(sentence id, speakers)]; fra lacks sentence 4, deu has sentence 5 alone.
LAYOUT = {
    "en_us": {"train": [(1, 2), (2, 1), (3, 1), (4, 1)], "dev": [(10, 1), (11, 1)], "test": [(20, 2)]},
    "de_de": {"train": [(1, 1), (2, 2), (3, 1), (4, 1), (5, 1)], "dev": [(10, 1), (11, 1)], "test": [(20, 1)]},
    "fr_fr": {"train": [(1, 1), (2, 1), (3, 1)], "dev": [(10, 1)], "test": [(20, 1)]},
}
CODE = {"en_us": "eng", "de_de": "deu", "fr_fr": "fra"}


def _text(locale, sid):
    return f"{CODE[locale]} sentence {sid}."


@pytest.fixture
def fleurs_root(tmp_path, audio_file, layouts):
    root = tmp_path / "fleurs"
    for locale, splits in LAYOUT.items():
        for split, items in splits.items():
            rows = []
            for sid, speakers in items:
                for spk in range(speakers):
                    name = f"{CODE[locale]}{sid}{spk}{split}.wav"
                    seconds = 0.3 + 0.1 * spk
                    audio_file(root / locale / "audio" / split / name, seconds=seconds)
                    rows.append((str(sid), name, _text(locale, sid), int(seconds * 16000)))
            layouts.write_fleurs_table(root / locale / f"{split}.tsv", rows)
    return root


def _expected_pairs(split, src, tgt):
    tgt_ids = {sid for sid, _ in LAYOUT[tgt][split]}
    return sum(speakers for sid, speakers in LAYOUT[src][split] if sid in tgt_ids)


def test_pairs_every_utterance_with_every_language_sharing_its_sentence_id(fleurs_root, tmp_path):
    written = prepare_fleurs(fleurs_root, None, tmp_path / "out").written
    for split in ("train", "dev", "test"):
        rows = read_manifest(tmp_path / "out" / f"{split}.jsonl")
        assert written[split] == len(rows)
        asr = [r for r in rows if r.is_asr]
        assert len(asr) == sum(s for items in LAYOUT.values() for _, s in items[split])
        counts = Counter((r.src_lang, r.tgt_lang) for r in rows if not r.is_asr)
        for src in LAYOUT:
            for tgt in LAYOUT:
                if src != tgt:
                    assert counts[(CODE[src], CODE[tgt])] == _expected_pairs(split, src, tgt), (split, src, tgt)
        for r in rows:
            if not r.is_asr:
                inverse = {v: k for k, v in CODE.items()}
                assert r.translation == _text(inverse[r.tgt_lang], r.sentence_id)
                assert r.transcript == _text(inverse[r.src_lang], r.sentence_id)


def test_splits_are_disjoint_by_sentence_id(fleurs_root, tmp_path):
    prepare_fleurs(fleurs_root, None, tmp_path / "out")
    ids = {s: {r.sentence_id for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")} for s in ("train", "dev", "test")}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]


def test_durations_from_the_sample_count(fleurs_root, tmp_path):
    prepare_fleurs(fleurs_root, ["eng"], tmp_path / "out", splits=("test",))
    rows = read_manifest(tmp_path / "out" / "test.jsonl")
    assert sorted(round(r.duration, 3) for r in rows) == [0.3, 0.4]


def test_direction_presets_restrict_the_pairs(fleurs_root, tmp_path):
    prepare_fleurs(fleurs_root, ["eng", "deu", "fra"], tmp_path / "out", directions="eng:deu,fra",
                   splits=("train",))
    pairs = {(r.src_lang, r.tgt_lang) for r in read_manifest(tmp_path / "out" / "train.jsonl") if not r.is_asr}
    assert pairs == {("eng", "deu"), ("eng", "fra")}
    prepare_fleurs(fleurs_root, ["eng", "deu", "fra"], tmp_path / "six", directions="6x12", splits=("dev",))
    pairs = {(r.src_lang, r.tgt_lang) for r in read_manifest(tmp_path / "six" / "dev.jsonl") if not r.is_asr}
    assert pairs == {(s, t) for s in ("eng", "deu", "fra") for t in ("eng", "deu", "fra") if s != t}


def test_bad_wavs_are_skipped_and_counted_or_stop_with_strict(fleurs_root, tmp_path, layouts):
    (fleurs_root / "de_de" / "audio" / "dev" / "deu110dev.wav").unlink()  # dev.tsv line 2
    layouts.write_bytes(fleurs_root / "fr_fr" / "audio" / "dev" / "fra100dev.wav")
    layouts.write_bytes(fleurs_root / "en_us" / "audio" / "test" / "eng201test.wav", b"RIFF\x00\x00WAVEfmt junk")
    summary = prepare_fleurs(fleurs_root, None, tmp_path / "out", splits=("dev", "test"))
    assert [(b.where.split("fleurs/")[1], b.reason.split(".wav ")[1].split(" (")[0]) for b in summary.bad_clips] == [
        ("de_de/dev.tsv:2", "is missing"), ("fr_fr/dev.tsv:1", "is empty"), ("en_us/test.tsv:2", "cannot be decoded")]
    assert summary.rows_without_clip == 3
    dev = {r.id: r for r in read_manifest(tmp_path / "out" / "dev.jsonl")}
    # no rows from the missing German utterance, but its text is still the German target of the others
    assert not any(i.startswith("fleurs:deu:deu110dev") for i in dev)
    assert dev["fleurs:eng:eng110dev:deu"].translation == _text("de_de", 11)
    assert "fleurs:fra:fra100dev" not in dev and "fleurs:eng:eng100dev:fra" in dev
    assert {r.id for r in read_manifest(tmp_path / "out" / "test.jsonl") if r.src_lang == "eng"} == {
        "fleurs:eng:eng200test", "fleurs:eng:eng200test:deu", "fleurs:eng:eng200test:fra"}
    with pytest.raises(LLMSRTError, match=r"de_de/dev\.tsv:2: clip .*deu110dev\.wav is missing"):
        prepare_fleurs(fleurs_root, ["deu"], tmp_path / "strict", splits=("dev",), strict=True)


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(LLMSRTError, match="no FLEURS locale folders"):
        prepare_fleurs(tmp_path, None, tmp_path / "out")
