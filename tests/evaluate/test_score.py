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
    m = re.fullmatch(r"BLEU = (\d+\.\d\d)  (nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:\S+)"
                     r"  \(texts NFC-normalized\)\n", out)  # SacreBLEU's signature as it prints it, then the note
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


@pytest.mark.parametrize("bom_on", ["ref", "hyp"])
def test_a_utf8_bom_is_read_as_a_bom(tmp_path, capsys, bom_on):
    """Notepad's "UTF-8 with BOM": before the fix the BOM stuck to the first word (identical files: BLEU 82, WER 20).
    On one file only: a BOM on both would stick to both first words alike, and score perfect all the same."""
    text = "\n".join(["hello world, how are you today", "see you at the station tomorrow", "it rains in berlin"]) + "\n"
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text(text, encoding="utf-8-sig" if bom_on == "hyp" else "utf-8")
    ref.write_text(text, encoding="utf-8-sig" if bom_on == "ref" else "utf-8")
    for metric, perfect in (("bleu", 100.0), ("wer", 0.0), ("chrf", 100.0)):
        rc, out, _ = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "eng", "--metric", metric, "--json")
        assert rc == 0 and json.loads(out)["score"] == perfect, (metric, out)


def test_special_files_are_named_and_never_block(tmp_path, capsys):
    import os

    fifo, loop = tmp_path / "hyp.fifo", tmp_path / "loop.txt"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    loop.symlink_to(loop)
    ref = tmp_path / "ref.txt"
    ref.write_text("a\n", encoding="utf-8")
    for path, words in ((fifo, "is a FIFO (named pipe), not a regular file"), (loop, "a symlink loop"),
                        (tmp_path, "is a directory")):
        rc, _, err = run(capsys, "--hyp", path, "--ref", ref, "--tgt-lang", "eng")
        assert rc == 2 and err.strip() == f"llm-srt score: error: {path}: " + err.split(f"{path}: ", 1)[1].strip()
        assert words in err and len(err.strip().splitlines()) == 1, err


def test_wer_of_an_unsegmented_script_says_cer_is_its_metric(tmp_path, capsys):
    hyp, ref = tmp_path / "h.zho", tmp_path / "r.zho"
    hyp.write_text("今天天气很好\n我们明天见\n", encoding="utf-8")
    ref.write_text("今天的天气很好\n我们明天见\n", encoding="utf-8")
    rc, out, err = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "zho", "--metric", "wer", "--json")
    assert rc == 0 and json.loads(out)["score"] == 50.0  # one of two "words" (sentences) wrong
    assert "zho transcripts are scored by CER" in err and "--metric cer" in err
    rc, out, err = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "zho", "--metric", "cer", "--json")
    assert rc == 0 and err == "" and json.loads(out)["score"] == pytest.approx(100 / 12, abs=0.005)  # 1 of 12


def test_lines_whose_reference_normalizes_to_nothing_are_counted(tmp_path, capsys):
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    hyp.write_text("hello there\nnoise\n", encoding="utf-8")
    ref.write_text("hello there\n[noise]\n", encoding="utf-8")  # Whisper's normalizer drops bracketed text
    rc, out, err = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "eng", "--metric", "wer")
    assert rc == 0 and out.startswith("WER = 0.00") and "(skipped 1 of 2 lines: reference empty after" in out
    rc, out, _ = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "eng", "--metric", "wer", "--json")
    assert json.loads(out)["n"] == 1 and json.loads(out)["skipped"] == 1


def test_wer_of_korean_says_why_cer_is_its_metric_without_calling_it_unsegmented(tmp_path, capsys):
    """Korean is written with spaces; the note said "an unsegmented script". It is scored by CER as the paper's own
    scoring script scores it (languages.py)."""
    hyp, ref = tmp_path / "h.kor", tmp_path / "r.kor"
    hyp.write_text("오늘 날씨가 좋다\n", encoding="utf-8")
    ref.write_text("오늘 날씨가 좋네요\n", encoding="utf-8")
    rc, out, err = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "kor", "--metric", "wer", "--json")
    assert rc == 0 and json.loads(out)["score"] == pytest.approx(100 / 3, abs=0.005)  # Korean words: 1 of 3 wrong
    assert err == ("note: kor transcripts are scored by CER in `llm-srt evaluate`, as the paper's own scoring script "
                   "scores it (though Korean is written with spaces); --metric cer gives that\n")
    assert "unsegmented" not in err


def test_a_decomposed_hypothesis_scores_as_the_composed_text_it_is(tmp_path, capsys):
    """The same Vietnamese sentence in NFD (a macOS file) against the NFC reference scored BLEU 0.0 (WER 0.0):
    BLEU and chrF read both texts in NFC now, and say so."""
    import unicodedata

    text = "Tôi đang học tiếng Việt ở Hà Nội mỗi ngày"
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    hyp.write_text(unicodedata.normalize("NFD", text) + "\n", encoding="utf-8")
    ref.write_text(text + "\n", encoding="utf-8")
    for metric in ("bleu", "chrf"):
        rc, out, _ = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "vie", "--metric", metric)
        assert rc == 0 and out.startswith(("BLEU = 100.00  nrefs:1|", "chrF2 = 100.00  nrefs:1|")), out
        assert out.endswith("  (texts NFC-normalized)\n")


def test_the_module_docstrings_example_is_what_score_prints(files, capsys):
    """The usage example at the top of score.py (README's source for it) showed the BLEU line without the
    "(texts NFC-normalized)" that score prints after SacreBLEU's signature."""
    from llm_srt.evaluate import score

    rc, out, _ = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "deu")
    [example] = [line.strip() for line in score.__doc__.splitlines() if line.strip().startswith("BLEU = ")]
    assert rc == 0 and re.sub(r"^BLEU = \d+\.\d\d", "BLEU = 36.90", out.strip()) == example
