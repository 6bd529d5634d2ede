"""Every verb's and sub-verb's option that takes one value (cli's `Parser` makes it a `StoreOnce`), given twice with
two values, is refused in one line where argparse kept the last one unsaid (`serve --port 8000 --port 8001` served
on 8001); the same value twice is taken. The options that repeat by design (append) and the positionals (train's
key=value overrides) still repeat. Walked from the CLI's verb table, as `cli.main` builds each parser."""

import argparse
import importlib
import sys
import types
from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.arguments import StoreOnce
from cli_run import run_cli

# (verb words, option) that repeat by design: each time one more value, all of them kept
REPEATING = {("evaluate", "--model"): ("m1", "m2"), ("translate", "--transcript"): ("one", "two"),
             ("prepare mini", "--unseen-by"): ("a.txt", "b.txt"), ("prepare commonvoice", "--exclude"): ("a", "b"),
             ("serve", "--allow-host"): ("a.org", "b.org"), ("serve", "--allow-origin"): ("http://a", "http://b")}


def leaves(verb: str) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(the words that choose it, its parser) for `verb`, or for each of its sub-verbs, built as `cli.main` builds
    them."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    importlib.import_module(cli.VERBS[verb][0]).add_arguments(sub.choices[verb])
    found = []

    def walk(words: list[str], p: argparse.ArgumentParser) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append((words, p))
        for a in subs:
            for name, child in a.choices.items():
                walk([*words, name], child)

    walk([verb], sub.choices[verb])
    return found


def takes_values(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.nargs != 0


def two_values(action: argparse.Action) -> tuple[str, str]:
    """Two different values `action` takes."""
    if action.choices is not None:
        return tuple(str(c) for c in list(action.choices)[:2])
    if action.type is int:
        return "3", "4"
    if action.type is float:
        return "1.5", "2.5"
    if action.type in (None, str, Path):
        name = action.dest.replace("_", "-")
        return f"{name}1", f"{name}2"
    raise AssertionError(f"{action.option_strings or action.dest}: no test values for type {action.type}; add some")


def needed(p: argparse.ArgumentParser, but: argparse.Action | None = None) -> list[str]:
    """The required options (but `but`) and positionals of `p`, each with a value it takes."""
    argv = []
    for a in p._actions:
        if a is but or isinstance(a, argparse._HelpAction):
            continue
        if a.option_strings and a.required:
            argv += [a.option_strings[0], two_values(a)[0]]
        elif not a.option_strings and a.nargs not in ("*", "?"):
            argv.append(two_values(a)[0])
    return argv


def run(argv: list[str], capsys) -> tuple[int | None, str]:
    """The exit code of `llm-srt ARGV` (argparse's refusal too) and its stderr."""
    code, _, err = run_cli(argv, capsys)
    return code, err


@pytest.fixture
def called(monkeypatch):
    """Every verb's main replaced by one that notes the arguments it was given."""
    seen = []
    for module, _ in cli.VERBS.values():
        monkeypatch.setattr(importlib.import_module(module), "main", lambda args: seen.append(args) or 0)
    return seen


def test_every_option_that_takes_values_refuses_a_second_value_or_repeats_by_design():
    """A verb added to the table gets `StoreOnce` for its single-valued options without a word of its own; an option
    that takes values and is not one repeats on purpose (append), and is named in REPEATING."""
    repeating, verbs = set(), set()
    for verb in cli.VERBS:
        for words, p in leaves(verb):
            for a in filter(takes_values, p._actions):
                if isinstance(a, StoreOnce):
                    verbs.add(verb)
                else:
                    repeating.add((" ".join(words), a.option_strings[0]))
    assert repeating == set(REPEATING)  # serve's --port, bench's --n, prepare's --out ... were argparse's plain store
    assert verbs == set(cli.VERBS) - {"setup", "train"}  # (setup's options are flags, train's items positional)


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_each_single_valued_option_given_twice_with_two_values_is_refused_and_with_one_value_taken(verb, called,
                                                                                                    capsys):
    for words, p in leaves(verb):
        for a in filter(takes_values, p._actions):
            if (" ".join(words), a.option_strings[0]) in REPEATING:
                continue
            option, (first, second) = a.option_strings[0], two_values(a)
            rest = needed(p, but=a)
            code, err = run([*words, option, first, *rest, f"{option}={second}"], capsys)
            assert code == 2 and not called, (words, option, err)  # argparse kept the second value, unsaid
            assert len(err.splitlines()) == 1 and err.startswith(f"llm-srt {' '.join(words)}: error: argument "
                                                                 f"{option}: given twice ("), err
            for again in ([], [f"{option}={first}"]):
                code, err = run([*words, option, first, *rest, *again], capsys)
                assert code == 0, (words, option, err)
                assert getattr(called.pop(), a.dest) == (a.type or str)(first), (words, option)


def test_the_options_that_repeat_by_design_keep_every_value(called, capsys):
    for (words, option), (first, second) in REPEATING.items():
        p = dict((" ".join(w), p) for w, p in leaves(words.split()[0]))[words]
        a = next(a for a in p._actions if option in a.option_strings)
        code, err = run([*words.split(), option, first, *needed(p, but=a), option, second], capsys)
        assert code == 0, (words, option, err)
        assert getattr(called.pop(), a.dest) == [(a.type or str)(first), (a.type or str)(second)], (words, option)


def test_positionals_still_take_every_value_given(called, capsys):
    """train's and curriculum's key=value overrides are positionals: the same key twice is theirs to read."""
    assert run(["train", "a.yaml", "max_steps=1", "max_steps=2"], capsys)[0] == 0
    assert called.pop().items == ["a.yaml", "max_steps=1", "max_steps=2"]
    assert run(["curriculum", "stages", "asr:max_steps=1", "--stages", "asr", "asr:max_steps=2"], capsys)[0] == 0
    assert called.pop().items == ["stages", "asr:max_steps=1", "asr:max_steps=2"]


def test_a_new_verb_and_its_sub_verbs_get_it_without_a_word_of_their_own(monkeypatch, capsys):
    def add_arguments(parser):
        sub = parser.add_subparsers(dest="kind", required=True)
        sub.add_parser("deep").add_argument("--name", default=None)

    seen = []
    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=add_arguments,
                                                                        main=lambda args: seen.append(args) or 0))
    monkeypatch.setitem(cli.VERBS, "fake", ("fake_verb", "a verb added to the table"))
    code, err = run(["fake", "deep", "--name", "a", "--name", "b"], capsys)
    assert code == 2 and err.startswith("llm-srt fake deep: error: argument --name: given twice (a, then b)"), err
    assert run(["fake", "deep", "--name", "a", "--name", "a"], capsys)[0] == 0 and seen.pop().name == "a"
