"""README's (and docs/'s, and the shipped checkpoints' READMEs') commands as a user would copy them: every
`llm-srt` command names a verb and options that verb takes (and the options it requires, unless the command elides
arguments with `...`), every `make` target exists, and every `llm_srt` import in its Python snippets resolves.
Nothing is run."""

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from llm_srt import cli

ROOT = Path(__file__).resolve().parents[1]
# README.md, the record behind its figures (docs/) and the shipped checkpoints' own READMEs (how each was trained
# and measured), whose commands a user copies too
README = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                                           *sorted((ROOT / "checkpoints").glob("*/*/README.md"))])
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`(llm-srt [^`]+)`(?!`)")
STOP = {"|", ">", ">>", "&&", ";", "||", "2>", "&"}


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == kind]


def _commands() -> list[str]:
    """Each `llm-srt ...` (or `-m llm_srt.cli ...`) command of README's bash blocks and inline spans, continuation
    lines joined, comments dropped, from the verb on."""
    texts = [line for body in _blocks("bash") for line in body.replace("\\\n", " ").splitlines()]
    texts += [m.replace("\n", " ") for m in INLINE.findall(FENCE.sub("", README))]
    commands = []
    for text in texts:
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError:  # an unclosed quote in prose: not a command
            continue
        for i, token in enumerate(tokens):
            if token == "llm-srt" or (token == "llm_srt.cli" and i and tokens[i - 1] == "-m"):
                rest = []
                for t in tokens[i + 1:]:
                    if t in STOP:
                        break
                    if t.endswith(";"):  # `...; done`
                        rest.append(t[:-1])
                        break
                    rest.append(t)
                commands.append(rest)
    return commands


def _parser(tokens: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the command's verb (and sub-verb, e.g. `prepare mini`), and the tokens after them."""
    parser = cli.build_parser()
    verb = tokens[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verb_parser = sub.choices[verb]
    importlib.import_module(cli.VERBS[verb][0]).add_arguments(verb_parser)
    rest = tokens[1:]
    nested = [a for a in verb_parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested and rest and rest[0] in nested[0].choices:
        return nested[0].choices[rest[0]], rest[1:]
    return verb_parser, rest


COMMANDS = _commands()


def test_readme_has_commands_to_check():
    assert len(COMMANDS) > 50 and {c[0] for c in COMMANDS if c} >= {"translate", "evaluate", "train", "serve"}


@pytest.mark.parametrize("tokens", COMMANDS, ids=lambda t: " ".join(t)[:60])
def test_each_readme_command_takes_its_options(tokens):
    assert tokens and tokens[0] in cli.VERBS, f"llm-srt {' '.join(tokens)}: no such verb"
    parser, rest = _parser(tokens)
    known = {s for a in parser._actions for s in a.option_strings}
    used = {t.split("=", 1)[0] for t in rest if t.startswith("--")}
    assert used <= known, f"llm-srt {' '.join(tokens)}: {sorted(used - known)} not options of this verb"
    if rest and not any("..." in t for t in rest):  # a bare `llm-srt VERB` names the verb in prose
        required = [a for a in parser._actions if a.required and a.option_strings]
        missing = [a.option_strings[0] for a in required if not set(a.option_strings) & used]
        assert not missing, f"llm-srt {' '.join(tokens)}: lacks the required {missing}"


def test_readme_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    used = {m for body in _blocks("bash") for m in re.findall(r"^\s*make ([\w.-]+)", body, re.M)}
    used |= set(re.findall(r"`make ([\w.-]+)", README))
    assert used and used <= targets, sorted(used - targets)


def test_readme_python_imports_resolve():
    lines = [line.strip() for body in _blocks("python") for line in body.splitlines()]
    imports = [line for line in lines if re.match(r"(from llm_srt\S* import |import llm_srt)", line)]
    assert imports
    for line in imports:
        m = re.match(r"from (\S+) import (.+)", line)
        if m is None:
            importlib.import_module(line.split()[1])
            continue
        module = importlib.import_module(m.group(1))
        for name in (n.strip() for n in m.group(2).split("#")[0].split(",")):
            assert hasattr(module, name) or importlib.util.find_spec(f"{m.group(1)}.{name}"), \
                f"README: `{line}`: {m.group(1)} has no {name}"


def test_readme_design_file_sizes_hold():
    """README's "Design" gives the most lines a source file holds; every file under src/ keeps to it."""
    limit = int(re.search(r"each file of `src/` at most (\d+) lines", README).group(1))
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "src").rglob("*.py")}
    over = {str(p): n for p, n in sizes.items() if n > limit}
    assert sizes and not over, f"README says at most {limit} lines a file: {over}"


def test_readme_lists_every_docs_file():
    """The paragraph that says what `docs/` holds names each of its files."""
    said = re.search(r"Beyond this README, `docs/` holds(.*?)\n\n", README, re.S).group(1)
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in said]
    assert not missing, f"README's docs/ paragraph leaves out {missing}"
