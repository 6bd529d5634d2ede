import json
import re

import pytest
import sacrebleu

from llm_srt import cli

HYPS = ["the cat sat on the mat", "it rains in berlin", "see you tomorrow"]
REFS = ["the cat sat on a mat", "it is raining in berlin", "see you tomorrow"]


@pytest.fixture
def files(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    ref.write_text("\r\n".join(REFS), encoding="utf-8")  # CRLF, no final newline: still 3 lines
    return hyp, ref


def run(capsys, *argv):
    rc = cli.main(["score", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_bleu_text_output(files, capsys):
    rc, out, err = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "eng")
    assert rc == 0 and err == ""
    m = re.fullmatch(r"BLEU = (\d+\.\d\d)  (nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:\S+)\n", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=0.005)


def test_json_output_and_char_tokenizer(tmp_path, capsys):
    hyp, ref = tmp_path / "h.zho", tmp_path / "r.zho"
    hyp.write_text("今天天气很好\n我们明天见\n", encoding="utf-8")
    ref.write_text("今天的天气很好\n我们明天见\n", encoding="utf-8")
    rc, out, _ = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "zho", "--json")
    data = json.loads(out)
    expected = sacrebleu.corpus_bleu(["今天天气很好", "我们明天见"], [["今天的天气很好", "我们明天见"]],
                                     tokenize="char").score
    assert rc == 0 and data["metric"] == "bleu" and "|tok:char|" in data["signature"]
    assert data["score"] == pytest.approx(expected, abs=0.005)


def test_wer_metric(files, capsys):
    rc, out, _ = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "eng", "--metric", "wer",
                     "--json")
    data = json.loads(out)
    # errors: a->the (1); "is raining" vs "rains": 1 sub + 1 del (2); over 6 + 5 + 3 = 14 words
    assert rc == 0 and data["metric"] == "wer" and data["score"] == pytest.approx(100 * 3 / 14, abs=0.005)


def test_line_count_mismatch(files, capsys):
    files[0].write_text("one\ntwo\n", encoding="utf-8")
    rc, out, err = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "eng")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "hyp.txt has 2 lines" in err and "ref.txt has 3" in err


def test_missing_and_empty_files(files, tmp_path, capsys):
    rc, _, err = run(capsys, "--hyp", tmp_path / "nope.txt", "--ref", files[1], "--tgt-lang", "eng")
    assert rc == 2 and "nope.txt: no such file" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    rc, _, err = run(capsys, "--hyp", empty, "--ref", empty, "--tgt-lang", "eng")
    assert rc == 2 and "empty" in err


def test_unknown_language(files, capsys):
    rc, _, err = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "klingon")
    assert rc == 2 and "unknown language code" in err
