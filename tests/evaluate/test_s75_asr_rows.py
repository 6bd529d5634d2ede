"""--task asr ran each clip's first manifest row, so its result carried a translation row's id ("s1:deu", tgt eng)
where the manifest has the clip's transcript-only row ("s1:asr"), the one README says --task asr scores: that row
is run now where there is one."""

from llm_srt.data.manifest import Row
from llm_srt.evaluate.selection import select_rows, unscored_rows
from llm_srt.prompts import Task


def _row(uid, audio, src, tgt):
    return Row(id=uid, audio=audio, duration=1.0, src_lang=src, transcript="a cat sat", tgt_lang=tgt,
               translation="" if not tgt else "x", split="test", corpus="c", sentence_id=uid.split(":")[0])


def test_asr_runs_the_clips_transcript_only_row_where_it_has_one():
    rows = [_row("s1:deu", "a.wav", "eng", "deu"), _row("s1:zho", "a.wav", "eng", "zho"),
            _row("s1:asr", "a.wav", "eng", ""), _row("s2:deu", "b.wav", "eng", "deu"),
            _row("s3:asr", "c.wav", "deu", ""), _row("s3:eng", "c.wav", "deu", "eng")]
    assert [r.id for r in select_rows(rows, Task.ASR)] == ["s1:asr", "s2:deu", "s3:asr"]
    assert unscored_rows(rows, Task.ASR) == []
