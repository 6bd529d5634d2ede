"""`llm-srt evaluate`'s options as the command line reads them (evaluate/arguments.py): an option that takes one value,
given twice with two values, is refused in one line before anything runs, not silently overridden by the last."""

import pytest

from llm_srt import cli
from llm_srt.evaluate import run as evaluate_run


def _evaluate(argv: list[str], monkeypatch, capsys) -> tuple[list[tuple], int | None, str]:
    """The (manifest, out, args) `evaluate` was called with (none where the command line was refused), the exit code
    of a refusal (None: none), and what went to stderr."""
    called = []
    monkeypatch.setattr(evaluate_run, "evaluate", lambda models, manifest, out, *a, **k: called.append(
        (manifest, out, a, k)))
    code = None
    try:
        cli.main(["evaluate", *argv])
    except SystemExit as e:
        code = e.code
    return called, code, capsys.readouterr().err


def test_a_second_manifest_is_refused_in_one_line_not_the_first_dropped(monkeypatch, capsys, tmp_path):
    called, code, err = _evaluate(["--model", "srt=m", "--manifest", "data/fleurs/test.jsonl", "--manifest",
                                   "data/cv/de/test.jsonl", "--out", str(tmp_path)], monkeypatch, capsys)
    assert not called and code == 2  # argparse's plain store scored data/cv/de/test.jsonl alone, unsaid
    assert len(err.strip().splitlines()) == 1, err
    assert "--manifest" in err and "data/fleurs/test.jsonl, then data/cv/de/test.jsonl" in err
    assert "once per manifest" in err and "join them into one manifest" in err


def test_the_same_manifest_twice_or_once_is_taken(monkeypatch, capsys, tmp_path):
    for argv in (["--manifest", "a.jsonl"], ["--manifest", "a.jsonl", "--manifest=a.jsonl"]):
        called, code, err = _evaluate(["--model", "m", *argv, "--out", str(tmp_path)], monkeypatch, capsys)
        assert code is None and [c[0] for c in called] == ["a.jsonl"], err


# every option of evaluate that takes one value, with two values it takes (the first one other than its default)
TWO_VALUES = {"--manifest": ("a.jsonl", "b.jsonl"), "--out": ("r1", "r2"), "--task": ("srt", "asr"),
              "--beam": ("4", "5"), "--batch-size": ("4", "16"), "--max-new-tokens": ("64", "128"),
              "--no-repeat-ngram": ("3", "4"), "--limit": ("10", "20"), "--mt-prompt": ("tags", "instruction"),
              "--whisper": ("w1", "w2"), "--llm": ("l1", "l2"), "--encoder": ("e1", "e2"),
              "--model-llm": ("m1", "m2"), "--significance": ("100", "200"), "--comet": ("c1", "c2"),
              "--comet-python": ("p1", "p2"), "--comet-batch-size": ("8", "32"), "--comet-gpus": ("0", "1"),
              "--device": ("cpu", "cuda"), "--dtype": ("float32", "bfloat16")}


def test_the_table_holds_every_option_of_evaluate_that_takes_one_value():
    parser = cli.Parser(prog="llm-srt evaluate")
    evaluate_run.add_arguments(parser)
    single = {a.option_strings[0] for a in parser._actions if a.option_strings and a.nargs != 0
              and a.dest != "model"}  # --model repeats: one system each
    assert single == set(TWO_VALUES)


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_twice_with_two_values_is_refused_in_one_line(option, monkeypatch, capsys, tmp_path):
    first, second = TWO_VALUES[option]
    rest = [] if option == "--out" else ["--out", str(tmp_path)]
    called, code, err = _evaluate(["--model", "m", option, first, *rest, f"{option}={second}"], monkeypatch, capsys)
    assert not called and code == 2, option  # argparse kept the second value, unsaid
    assert len(err.strip().splitlines()) == 1 and f"argument {option}: given twice ({first}, then {second})" in err


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_once_or_twice_with_one_value_is_taken(option, monkeypatch, capsys, tmp_path):
    first, _ = TWO_VALUES[option]
    rest = [] if option == "--out" else ["--out", str(tmp_path)]
    for twice in (False, True):
        argv = ["--model", "m", option, first, *rest, *([option, first] if twice else [])]
        called, code, err = _evaluate(argv, monkeypatch, capsys)
        assert code is None and len(called) == 1, err
