"""`llm-srt score`'s options as the command line reads them: an option that takes one value, given twice with two
values, is refused in one line before anything is scored, not silently overridden by the last."""

import pytest

from llm_srt import cli
from llm_srt.evaluate import score


def _score(argv: list[str], capsys) -> tuple[int | None, str, str]:
    """The exit code of `llm-srt score ARGV` (argparse's refusal too), its stdout and its stderr."""
    try:
        code = cli.main(["score", *argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


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
    code, out, err = _score(["--hyp", good, "--ref", ref, "--tgt-lang", "eng", "--hyp", bad], capsys)
    assert code == 2 and out == ""  # argparse's plain store scored bad.txt alone, unsaid
    assert len(err.strip().splitlines()) == 1, err
    assert f"argument --hyp: given twice ({good}, then {bad})" in err


def test_the_same_hyp_twice_scores_as_once(texts, capsys):
    good, _, ref = texts
    once = _score(["--hyp", good, "--ref", ref, "--tgt-lang", "eng"], capsys)
    twice = _score(["--hyp", good, "--ref", ref, "--tgt-lang", "eng", f"--hyp={good}"], capsys)
    assert once[0] == 0 and once[1].startswith("BLEU = 100.00") and twice == once


# every option of score that takes one value, with two values it takes
TWO_VALUES = {"--hyp": ("h1.txt", "h2.txt"), "--ref": ("r1.txt", "r2.txt"), "--tgt-lang": ("deu", "fra"),
              "--metric": ("chrf", "wer"), "--src": ("s1.txt", "s2.txt"), "--comet-model": ("c1", "c2"),
              "--comet-python": ("p1", "p2")}
NEEDED = {"--hyp": "h.txt", "--ref": "r.txt", "--tgt-lang": "eng"}  # the required ones, where not the one tested


def test_the_table_holds_every_option_of_score_that_takes_one_value():
    parser = cli.Parser(prog="llm-srt score")
    score.add_arguments(parser)
    single = {a.option_strings[0] for a in parser._actions if a.option_strings and a.nargs != 0}
    assert single == set(TWO_VALUES)


def _argv(option: str, first: str, again: str | None = None) -> list[str]:
    """`option first`, the required options, then `option=again` (none: not again)."""
    rest = [part for name, value in NEEDED.items() if name != option for part in (name, value)]
    return [option, first, *rest, *([f"{option}={again}"] if again is not None else [])]


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_twice_with_two_values_is_refused_in_one_line(option, monkeypatch, capsys):
    called = []
    monkeypatch.setattr(score, "main", lambda args: called.append(args) or 0)
    first, second = TWO_VALUES[option]
    code, _, err = _score(_argv(option, first, second), capsys)
    assert not called and code == 2, option  # argparse kept the second value, unsaid
    assert len(err.strip().splitlines()) == 1 and f"argument {option}: given twice ({first}, then {second})" in err


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_once_or_twice_with_one_value_is_taken(option, monkeypatch, capsys):
    called = []
    monkeypatch.setattr(score, "main", lambda args: called.append(args) or 0)
    first, _ = TWO_VALUES[option]
    dest = option.removeprefix("--").replace("-", "_")
    for again in (None, first):
        code, _, err = _score(_argv(option, first, again), capsys)
        assert code == 0 and str(getattr(called.pop(), dest)) == first, err
