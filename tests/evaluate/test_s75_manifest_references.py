"""A results file given with --manifest was scored against the references it held, the manifest read (with --limit)
for its ids alone: a reference corrected in the manifest since the file was written was not scored, unsaid. The
manifest's references are scored now, and one line says how many rows held others; a row the manifest lacks is
refused."""

import json
import re

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import run
from llm_srt.evaluate.report import load_results

OLD, NEW = "Bitte öffne das Fenster.", "Bitte öffnen Sie die Fenster."
HYPS = ["Bitte öffnen Sie die Fenster.", "Das Wetter ist heute schön.", "Der Hund läuft im Park."]


def _manifest(path, fixed: bool):
    refs = [NEW if fixed else OLD, "Das Wetter ist heute schön.", "Der Hund rennt im Park."]
    path.write_text("".join(json.dumps({
        "id": f"s{k}:deu", "audio": f"audio/s{k}.wav", "duration": 1.5, "src_lang": "eng", "transcript": f"text {k}",
        "tgt_lang": "deu", "translation": ref, "split": "test", "corpus": "mine", "sentence_id": f"s{k}"}) + "\n"
        for k, ref in enumerate(refs)), encoding="utf-8")
    return path


def _hyps(path, ids=("s0:deu", "s1:deu", "s2:deu")):
    refs = [OLD, "Das Wetter ist heute schön.", "Der Hund rennt im Park."]
    path.write_text("".join(json.dumps({
        "id": i, "src": "eng", "tgt": "deu", "hyp_transcript": f"text {k}", "hyp_translation": HYPS[k],
        "ref_transcript": "old transcript" if k == 1 else f"text {k}", "ref_translation": refs[k], "task": "srt",
        "sentence": f"s{k}"}) + "\n" for k, i in enumerate(ids)), encoding="utf-8")
    return path


def _bleu(report):
    return report.systems[0].bleu[("eng", "deu")].score


def test_a_results_file_is_scored_against_the_given_manifests_references(tmp_path):
    hyps = _hyps(tmp_path / "hyps.srt.jsonl")
    stored = run.evaluate({"srt": str(hyps)}, None, tmp_path / "a", log=lambda *_: None)
    lines = []
    fixed = run.evaluate({"srt": str(hyps)}, _manifest(tmp_path / "fixed.jsonl", True), tmp_path / "b",
                         log=lines.append)
    assert _bleu(fixed) > _bleu(stored)
    assert [r.ref_translation for r in load_results(tmp_path / "b" / "hyps.srt.jsonl")][0] == NEW
    assert [r.ref_transcript for r in load_results(tmp_path / "b" / "hyps.srt.jsonl")][1] == "text 1"
    assert (f"srt: 2 rows of 3 held other references than --manifest {tmp_path / 'fixed.jsonl'} (s0:deu, s1:deu); "
            "scored against the manifest's") in lines
    limited = run.evaluate({"srt": str(hyps)}, tmp_path / "fixed.jsonl", tmp_path / "c", limit=1, log=lambda *_: None)
    assert [r.ref_translation for r in load_results(tmp_path / "c" / "hyps.srt.jsonl")] == [NEW]
    assert limited.systems[0].n_rows == 1
    lines = []  # the reference translations the file holds: only its transcript's row said
    same = run.evaluate({"srt": str(hyps)}, _manifest(tmp_path / "old.jsonl", False), tmp_path / "d", log=lines.append)
    assert _bleu(same) == _bleu(stored)
    assert [line.split(" (")[1] for line in lines if "held other references" in line] == ["s1:deu); scored against "
                                                                                          "the manifest's"]


def test_a_results_row_the_manifest_lacks_is_refused(tmp_path):
    hyps = _hyps(tmp_path / "hyps.x.jsonl", ids=("s0:deu", "s1:deu", "s9:deu"))
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(hyps))}: row 's9:deu' is not in --manifest "):
        run.evaluate({"x": str(hyps)}, _manifest(tmp_path / "m.jsonl", True), tmp_path / "o", log=lambda *_: None)
    assert not (tmp_path / "o").exists()


def test_a_row_skip_bad_left_out_of_the_manifest_is_named_so(tmp_path):
    hyps = _hyps(tmp_path / "hyps.x.jsonl")
    manifest = _manifest(tmp_path / "m.jsonl", True)
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('"tgt_lang": "deu", "translation": "Der Hund',
                                                                      '"tgt_lang": "xx", "translation": "Der Hund'),
                        encoding="utf-8")
    with pytest.raises(LLMSRTError, match=r"row 's2:deu' is not in --manifest .*m.jsonl \(--skip-bad skipped 1 bad "
                                          r"rows of it, or a results file of another test set\?\)"):
        run.evaluate({"x": str(hyps)}, manifest, tmp_path / "o", skip_bad=True, log=lambda *_: None)
