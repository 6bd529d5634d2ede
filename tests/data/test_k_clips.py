"""A clip longer than Whisper's window is named by its table line and the manifest rows it takes with it."""

from llm_srt.data.fleurs import prepare_fleurs
from llm_srt.data.manifest import read_manifest

REASON = "clip longer than the 30 s a training utterance may last (Whisper's window): left out of train"


def _fleurs(root, audio_file, layouts, long_clip):
    for locale, lang in (("en_us", "eng"), ("de_de", "deu")):
        for split, sids in (("train", (1, 2, 3)), ("dev", (10,)), ("test", (20,))):
            rows = []
            for sid in sids:
                name = f"{lang}{sid}{split}.wav"
                seconds = 31.0 if name == long_clip else 0.4
                audio_file(root / locale / "audio" / split / name, seconds=seconds)
                rows.append((str(sid), name, f"{lang} sentence {sid}.", int(seconds * 16000)))
            layouts.write_fleurs_table(root / locale / f"{split}.tsv", rows)


def test_a_long_clip_is_named_by_its_table_line_with_the_rows_it_loses(tmp_path, audio_file, layouts):
    root = tmp_path / "fleurs"
    _fleurs(root, audio_file, layouts, "eng2train.wav")
    summary = prepare_fleurs(root, ["eng", "deu"], tmp_path / "out")
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    assert not [r for r in train if "eng2train" in r.audio] and len(train) == 5 * 2  # 5 clips, an ASR + a pair each
    clip = root / "en_us" / "audio" / "train" / "eng2train.wav"
    where = f"{root / 'en_us' / 'train.tsv'}:2 (its 2 manifest rows): {clip} (31.0 s)"  # its ASR row and eng->deu
    assert summary.dropped[REASON] == 1 and summary.dropped_at[REASON] == [where]
    assert f"left out 1 table row: {REASON}; the first 1:" in summary.lines() and f"  {where}" in summary.lines()
