"""`llm-srt score`'s options as the command line reads them: an option that takes one value, given twice with two
values, is refused in one line before anything is scored, not silently overridden by the last."""

import pytest

from cli_run import run_cli


@pytest.fixture
def texts(tmp_path):
    """Two hypothesis files (the first right, the second wrong) and a reference file."""
    good, bad, ref = tmp_path / "good.txt", tmp_path / "bad.txt", tmp_path / "ref.txt"
    good.write_text("the cat sat on the mat\nsee you tomorrow\n", encoding="utf-8")
    bad.write_text("a dog ran\nhello there\n", encoding="utf-8")
    ref.write_text("the cat sat on the mat\nsee you tomorrow\n", encoding="utf-8")
    return str(good), str(bad), str(ref)


def test_a_second_hyp_is_refused_in_one_line_not_the_first_dropped(texts, capsys):
    good, bad, ref = texts
    code, out, err = run_cli(["score", "--hyp", good, "--ref", ref, "--tgt-lang", "eng", "--hyp", bad], capsys)
    assert code == 2 and out == ""  # argparse's plain store scored bad.txt alone, unsaid
    assert len(err.strip().splitlines()) == 1, err
    assert f"argument --hyp: given twice ({good}, then {bad})" in err


def test_the_same_hyp_twice_scores_as_once(texts, capsys):
    good, _, ref = texts
    once = run_cli(["score", "--hyp", good, "--ref", ref, "--tgt-lang", "eng"], capsys)
    twice = run_cli(["score", "--hyp", good, "--ref", ref, "--tgt-lang", "eng", f"--hyp={good}"], capsys)
    assert once[0] == 0 and once[1].startswith("BLEU = 100.00") and twice == once
