from llm_srt.cli import VERBS
from llm_srt.data.manifest import Row, read_manifest, write_manifest
from llm_srt.demo import test_subset as demo_subset


def test_demo_subset_keeps_the_chosen_directions_and_sentences(tmp_path):
    wav = tmp_path / "a.wav"
    import numpy as np
    from llm_srt.audio import write_wav
    write_wav(wav, np.zeros(1600, dtype=np.float32))
    rows = []
    for sid in range(12):
        for src, tgt in (("eng", "deu"), ("deu", "eng"), ("eng", "zho"), ("eng", "")):
            rows.append(Row(id=f"{sid}-{src}-{tgt}", audio=str(wav), duration=0.1, src_lang=src, transcript="x",
                            tgt_lang=tgt, translation="y" if tgt else "", split="test", corpus="t",
                            sentence_id=f"{sid:02d}"))
    write_manifest(tmp_path / "test.jsonl", rows)
    out = demo_subset(tmp_path / "test.jsonl", tmp_path / "sub.jsonl", directions=(("eng", "deu"), ("deu", "eng")),
                      sentences=5)
    kept = read_manifest(out)
    assert len(kept) == 10
    assert {(r.src_lang, r.tgt_lang) for r in kept} == {("eng", "deu"), ("deu", "eng")}
    assert {r.sentence_id for r in kept} == {"00", "01", "02", "03", "04"}
    assert "demo" in VERBS
