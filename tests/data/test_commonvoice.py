import pytest

from llm_srt.data.commonvoice import prepare_commonvoice
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import LLMSRTError

HEADER = "client_id\tpath\tsentence_id\tsentence\tup_votes\tdown_votes\tage\tgender\tlocale"
SPLITS = {
    "train": [("de_1.mp3", "s1", "Guten Tag."), ("de_2.mp3", "s2", "Wie geht es?")],
    "dev": [("de_3.mp3", "s3", "Danke schön.")],
    "test": [("de_4.mp3", "s4", "Bis morgen.")],
    # validated = all of the above plus two more clips, one of which repeats a test sentence
    "validated": [("de_1.mp3", "s1", "Guten Tag."), ("de_2.mp3", "s2", "Wie geht es?"),
                  ("de_3.mp3", "s3", "Danke schön."), ("de_4.mp3", "s4", "Bis morgen."),
                  ("de_5.mp3", "s5", "Gute Nacht."), ("de_6.mp3", "s4", "Bis morgen.")],
}


@pytest.fixture
def locale_dir(tmp_path, audio_file, mp3_format):
    root = tmp_path / "cv-corpus" / "de"
    for split, items in SPLITS.items():
        lines = [HEADER] + [f"c\t{name}\t{sid}\t{text}\t2\t0\t\t\tde" for name, sid, text in items]
        (root / f"{split}.tsv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for name, _, _ in items:
            if not (root / "clips" / name).exists():
                audio_file(root / "clips" / name, seconds=0.8, sr=48000, fmt=mp3_format)
    return root


def test_asr_rows_per_split_with_language_from_the_folder(locale_dir, tmp_path):
    written = prepare_commonvoice(locale_dir, tmp_path / "out")
    assert written == {"train": 2, "dev": 1, "test": 1}
    rows = read_manifest(tmp_path / "out" / "train.jsonl")
    assert all(r.is_asr and r.src_lang == "deu" and r.corpus == "commonvoice" for r in rows)
    assert [r.transcript for r in rows] == ["Guten Tag.", "Wie geht es?"]
    assert rows[0].duration == pytest.approx(0.8, abs=0.06)


def test_validated_adds_only_clips_of_unseen_sentences_to_train(locale_dir, tmp_path):
    written = prepare_commonvoice(locale_dir, tmp_path / "out", validated_as_train=True)
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    assert written["train"] == 3 and [r.sentence_id for r in train] == ["s1", "s2", "s5"]
    held_out = {r.sentence_id for s in ("dev", "test") for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")}
    assert not held_out & {r.sentence_id for r in train}


def test_sentence_id_from_text_when_the_column_is_absent(locale_dir, tmp_path):
    for split in ("train", "dev", "test"):
        tsv = locale_dir / f"{split}.tsv"
        tsv.write_text("path\tsentence\n" + "".join(f"{n}\t{t}\n" for n, _, t in SPLITS[split]), encoding="utf-8")
    prepare_commonvoice(locale_dir, tmp_path / "out")
    ids = [r.sentence_id for r in read_manifest(tmp_path / "out" / "train.jsonl")]
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)


def test_unknown_locale_folder_asks_for_the_language(locale_dir, tmp_path):
    other = locale_dir.rename(locale_dir.parent / "xx")
    with pytest.raises(LLMSRTError, match="--lang"):
        prepare_commonvoice(other, tmp_path / "out")
    assert prepare_commonvoice(other, tmp_path / "out", lang="deu")["dev"] == 1
