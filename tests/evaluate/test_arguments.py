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
