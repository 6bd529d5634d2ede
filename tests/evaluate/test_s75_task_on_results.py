"""--task was taken and silently ignored where a --model is a results file (`--model srt=hyps.srt.jsonl --task asr`
printed the SRT BLEU table): it is said in one line, as --with-mt's text MT is."""

import json

from llm_srt.evaluate import run


def test_task_given_for_a_results_file_is_said_not_to_apply(tmp_path):
    hyps = tmp_path / "hyps.srt.jsonl"
    hyps.write_text(json.dumps({"id": "s0:deu", "src": "eng", "tgt": "deu", "hyp_transcript": "a cat",
                                "hyp_translation": "eine Katze", "ref_transcript": "a cat",
                                "ref_translation": "eine Katze", "task": "srt"}) + "\n", encoding="utf-8")
    lines = []
    run.evaluate({"srt": str(hyps)}, None, tmp_path / "a", task="asr", with_mt=True, log=lines.append)
    assert "--task asr: not for srt (results files are scored, not run)" in lines
    assert "--with-mt: no text MT for srt (results files are scored, not run)" in lines
    lines = []
    run.evaluate({"srt": str(hyps)}, None, tmp_path / "b", log=lines.append)  # --task left at auto: nothing said
    assert not [line for line in lines if line.startswith("--task")]
