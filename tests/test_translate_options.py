"""`llm-srt translate`'s options as the command line reads them: an option that takes one value, given twice with
two values, is refused in one line before the model loads, not silently overridden by the last."""

import pytest

from llm_srt import cli, translate
from llm_srt.audio import write_wav
from test_infer import Stub, recording, stub_cli


class _Targets(Stub):
    """The stub system, noting the target language of every item it ran."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def run_batch(self, items, options):
        self.targets += [it.tgt for it in items]
        return super().run_batch(items, options)


def _translate(argv: list[str], capsys) -> tuple[int | None, str, str]:
    """The exit code of `llm-srt translate ARGV` (argparse's refusal too), its stdout and its stderr."""
    try:
        code = cli.main(["translate", *argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_second_tgt_is_refused_in_one_line_not_the_first_dropped(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    stub = _Targets()
    stub_cli(monkeypatch, stub)
    code, out, err = _translate([str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu",
                                 "--tgt", "fra"], capsys)
    assert code == 2 and out == "" and stub.targets == []  # argparse's plain store translated into fra alone, unsaid
    assert len(err.strip().splitlines()) == 1 and "argument --tgt: given twice (deu, then fra)" in err, err


def test_the_same_tgt_twice_translates_as_once(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    runs = []
    for again in ([], ["--tgt=deu"]):
        stub = _Targets()
        stub_cli(monkeypatch, stub)
        runs.append((_translate([str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu",
                                 *again], capsys), stub.targets))
    assert runs[0][0][0] == 0 and runs[0][1] == ["deu"] and runs[1] == runs[0]


# every option of translate that takes one value, with two values it takes (--transcript repeats, one per input)
TWO_VALUES = {"--model": ("m1", "m2"), "--beam": ("4", "5"), "--max-new-tokens": ("64", "128"),
              "--no-repeat-ngram": ("3", "4"), "--whisper": ("w1", "w2"), "--llm": ("l1", "l2"),
              "--encoder": ("e1", "e2"), "--device": ("cpu", "cuda"), "--dtype": ("float32", "bfloat16"),
              "--src": ("eng", "auto"), "--tgt": ("deu", "fra"), "--task": ("srt", "asr"), "--batch-size": ("4", "16"),
              "--format": ("srt", "vtt"), "--subtitles": ("transcript", "translation"), "--line-width": ("30", "60"),
              "--max-segment-seconds": ("7.0", "10.0"), "--out-dir": ("o1", "o2")}


def test_the_table_holds_every_option_of_translate_that_takes_one_value():
    parser = cli.Parser(prog="llm-srt translate")
    translate.add_arguments(parser)
    single = {a.option_strings[0] for a in parser._actions if a.option_strings and a.nargs != 0
              and a.dest != "transcript"}
    assert single == set(TWO_VALUES)


def _argv(option: str, first: str, again: str | None = None) -> list[str]:
    """An input, `option first`, --model where not the one tested, then `option=again` (none: not again)."""
    rest = [] if option == "--model" else ["--model", "m"]
    return ["a.wav", option, first, *rest, *([f"{option}={again}"] if again is not None else [])]


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_twice_with_two_values_is_refused_in_one_line(option, monkeypatch, capsys):
    called = []
    monkeypatch.setattr(translate, "main", lambda args: called.append(args) or 0)
    first, second = TWO_VALUES[option]
    code, _, err = _translate(_argv(option, first, second), capsys)
    assert not called and code == 2, option  # argparse kept the second value, unsaid
    assert len(err.strip().splitlines()) == 1 and f"argument {option}: given twice ({first}, then {second})" in err


@pytest.mark.parametrize("option", sorted(TWO_VALUES))
def test_an_option_given_once_or_twice_with_one_value_is_taken(option, monkeypatch, capsys):
    called = []
    monkeypatch.setattr(translate, "main", lambda args: called.append(args) or 0)
    first, _ = TWO_VALUES[option]
    dest = option.removeprefix("--").replace("-", "_")
    for again in (None, first):
        code, _, err = _translate(_argv(option, first, again), capsys)
        assert code == 0 and str(getattr(called.pop(), dest)) == first, err


def test_inputs_and_transcripts_still_come_in_any_order(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(translate, "main", lambda args: called.append(args) or 0)
    argv = ["a.wav", "--model", "m", "--transcript", "one", "b.wav", "--transcript", "two", "--model", "m", "c.wav"]
    assert _translate(argv, capsys)[0] == 0
    assert called[0].audio == ["a.wav", "b.wav", "c.wav"] and called[0].transcript == ["one", "two"]
    assert _translate(["--model", "m", "--", "-take1.wav"], capsys)[0] == 0 and called[1].audio == ["-take1.wav"]
