"""English prose for the ASR stage: plain sentences from the documentation installed on the machine.

Sources, read in sorted order: the README files of /usr/share/doc (plain or gzipped) and the docstrings of Python's
standard library (parsed with `ast`, nothing imported). Paragraphs are split into sentences and only plain readable
ones are kept: the mini corpus's sentence filter (capitalised, 3-12 words, a full stop, no digits, acronyms, markup
or placeholders) and, stricter for prose, nothing but words, commas and apostrophes (no code, parentheses, colons
or abbreviations). Duplicates (case-insensitive) and `exclude` are left out. No translations: ASR rows only.
"""

import ast
import gzip
import hashlib
import re
import sysconfig
from pathlib import Path

DOC_DIR = Path("/usr/share/doc")
STDLIB = Path(sysconfig.get_paths()["stdlib"])  # this Python's standard library
PLAIN = re.compile(r"[A-Z][a-z']*(?:,? [A-Za-z](?:[a-z'-]*[a-z])?)+\.")  # words, commas, apostrophes, a full stop
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sources(doc_dir: Path | None = None, stdlib: Path | None = None) -> list[tuple[str, str]]:
    """(document name, its text) for every README under `doc_dir` (default DOC_DIR) and every module of the
    standard library (default STDLIB; third-party site-packages left out)."""
    found = []
    for path in sorted((doc_dir or DOC_DIR).glob("*/README*")):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        found.append((f"doc:{path.parent.name}/{path.name}", raw.decode("utf-8", errors="replace")))
    root = stdlib or STDLIB
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if path.parts[-2] in ("site-packages", "dist-packages") or "test" in path.parts[-2] \
                or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = [ast.get_docstring(n) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        found.append((f"python:{path.relative_to(root).with_suffix('')}", "\n\n".join(d for d in docs if d)))
    return found


def sentences(text: str) -> list[str]:
    """The plain sentences of a text (paragraphs joined, then split after . ! ?)."""
    from .catalogues import sentence_like

    kept = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        for sentence in SENTENCE_END.split(flat):
            if PLAIN.fullmatch(sentence) and sentence_like(sentence, "eng"):
                kept.append(sentence)
    return kept


def harvest(exclude: set[str] = frozenset(), doc_dir: Path | None = None, stdlib: Path | None = None
            ) -> list[tuple[str, str]]:
    """(sentence, document) for every plain sentence, first occurrence only, none of `exclude`."""
    seen = {s.lower() for s in exclude}
    found = []
    for name, text in sources(doc_dir, stdlib):
        for sentence in sentences(text):
            if sentence.lower() not in seen:
                seen.add(sentence.lower())
                found.append((sentence, name))
    return found


def sentence_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
