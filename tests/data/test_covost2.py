from collections import Counter

import pytest

from llm_srt.data.covost2 import prepare_covost2
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import LLMSRTError

HEADER = "path\tsentence\ttranslation\tclient_id\tsplit"
# clip -> (sentence, split); en clips are translated into German and Japanese, zh-CN clips into English.
EN_CLIPS = {"common_voice_en_1.mp3": ("Hello there.", "train"), "common_voice_en_2.mp3": ("Good morning.", "train"),
            "common_voice_en_3.mp3": ("See you.", "dev"), "common_voice_en_4.mp3": ("Thanks a lot.", "test")}
ZH_CLIPS = {"common_voice_zh-CN_1.mp3": ("你好。", "train"), "common_voice_zh-CN_2.mp3": ("谢谢。", "test")}


@pytest.fixture
def covost(tmp_path, audio_file, mp3_format):
    cv = tmp_path / "cv"
    for locale, clips in (("en", EN_CLIPS), ("zh-CN", ZH_CLIPS)):
        for i, name in enumerate(clips):
            audio_file(cv / locale / "clips" / name, seconds=1.0 + 0.25 * i, sr=48000, fmt=mp3_format)
    tsv = tmp_path / "covost"
    tsv.mkdir()
    for tgt in ("de", "ja"):
        lines = [HEADER] + [f"{n}\t{s}\t[{tgt}] {s}\tc{i}\t{split}"
                            for i, (n, (s, split)) in enumerate(EN_CLIPS.items())]
        (tsv / f"covost_v2.en_{tgt}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = [HEADER] + [f"{n}\t{s}\t[en] {s}\tc\t{split}" for n, (s, split) in ZH_CLIPS.items()]
    (tsv / "covost_v2.zh-CN_en.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tsv, cv


def test_converts_every_table_with_one_asr_row_per_clip(covost, tmp_path):
    tsv, cv = covost
    written = prepare_covost2(tsv, cv, tmp_path / "out")
    rows = [r for split in written for r in read_manifest(tmp_path / "out" / f"{split}.jsonl")]
    assert sorted(written) == ["dev", "test", "train"]
    asr = [r for r in rows if r.is_asr]
    assert len(asr) == len(EN_CLIPS) + len(ZH_CLIPS)  # en clips appear in two tables, one ASR row each
    assert Counter((r.src_lang, r.tgt_lang) for r in rows if not r.is_asr) == {
        ("eng", "deu"): 4, ("eng", "jpn"): 4, ("zho", "eng"): 2}
    by_id = {r.id: r for r in rows}
    row = by_id["covost2:common_voice_en_1:jpn"]
    assert (row.transcript, row.translation, row.split) == ("Hello there.", "[ja] Hello there.", "train")
    assert by_id["covost2:common_voice_zh-CN_2"].split == "test"
    # durations come from the (mp3) headers: 1.0, 1.25, 1.5, 1.75 s; mp3 framing adds a little
    durations = sorted(r.duration for r in asr if r.src_lang == "eng")
    assert durations == pytest.approx([1.0, 1.25, 1.5, 1.75], abs=0.06)


def test_pairs_filter_and_clips_folder_given_directly(covost, tmp_path):
    tsv, cv = covost
    prepare_covost2(tsv, cv / "en" / "clips", tmp_path / "out", pairs=[("eng", "deu")])
    rows = read_manifest(tmp_path / "out" / "train.jsonl")
    assert {r.tgt_lang for r in rows} == {"", "deu"} and len(rows) == 4


def test_missing_clip_and_bad_header_name_the_line(covost, tmp_path):
    tsv, cv = covost
    (cv / "en" / "clips" / "common_voice_en_3.mp3").unlink()
    with pytest.raises(LLMSRTError, match=r"covost_v2\.en_de\.tsv:4: clip common_voice_en_3\.mp3 not found"):
        prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("eng", "deu")])
    (tsv / "covost_v2.zh-CN_en.tsv").write_text("file\tsentence\n", encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"tsv:1: header lacks column\(s\) path, translation, split"):
        prepare_covost2(tsv, cv, tmp_path / "out", pairs=[("zho", "eng")])
