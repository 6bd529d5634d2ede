"""The mini corpus's text (data/mini.py): the gettext catalogues of installed programs
(LOCALE_DIR/<locale>/LC_MESSAGES/<domain>.mo) -> N-way parallel sentences. A catalogue maps an English message to
its translation, so every English message translated in all chosen languages is an N-way parallel sentence; its id
is a hash of the English text. Only sentence-like messages are kept (`sentence_like`), from one domain per sentence;
`read_alike` finds the sentences that read like those a model was trained on."""

from __future__ import annotations

import gettext
import hashlib
import re
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .. import languages
from . import prose

LOCALE_DIR = Path("/usr/share/locale")  # where Debian-family systems install gettext catalogues

# What a kept message looks like.
MIN_WORDS, MAX_WORDS = 3, 12  # English words
MAX_CHARS_NO_SPACES = 60  # translations in scripts written without spaces (zho, jpn, yue, tha)
FULL_STOPS = (".", "。", "．")
NO_FULL_STOP_SCRIPTS = {"Thai"}  # Thai ends a sentence with a space or nothing
SPACELESS_SCRIPTS = {"Hans", "Hant", "Jpan", "Thai"}
_MARKUP = re.compile(r"[%{}_&<>\\$@\[\]`|/#*=~^\t\n\r]|https?:|www\.|\.\.|\s\.|::")
_ACRONYM_OR_DIGIT = re.compile(r"\d|[A-Z][A-Z]")  # espeak spells acronyms letter by letter
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Sentence:
    id: str  # hash of the English text
    domain: str  # the gettext domain (.mo name) every translation came from (prose: the document)
    texts: dict[str, str]  # language -> text (eng: the message id)
    origin: str = "gettext"  # gettext | prose; `source` in the manifest is "origin:domain"


def text_key(text: str) -> str:
    """What two catalogue texts share when they read alike: NFKC, case-folded, letters and digits only ("The color
    you've chosen." and the same with a curly apostrophe are one)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def twins_of_train(chosen: dict[str, list[Sentence]], langs: list[str]) -> dict[str, list[str]]:
    """Per held-out split (dev, test): the ids of its sentences whose text in some language reads like a train
    sentence's in that language (`text_key`). Splits go by the English message id, and two messages that differ in
    an apostrophe's shape, or two that share a translation, can fall on either side: such a sentence's speech and
    text are in train too."""
    seen = {lang: {text_key(s.texts[lang]) for s in chosen.get("train", ()) if lang in s.texts} for lang in langs}
    return {split: sorted(s.id for s in chosen.get(split, ())
                          if any(text_key(s.texts[lang]) in seen[lang] for lang in langs if lang in s.texts))
            for split in ("dev", "test")}


def read_alike(listed: frozenset[str], sentences: dict[str, Sentence], langs: list[str]
               ) -> tuple[frozenset[str], int]:
    """`listed` (sentence ids a model was trained on) and the ids of `sentences` whose text in some language reads
    like (`text_key`) a listed sentence's in that language: a model trained on "There are no upgrades available at
    this time." heard its Russian, which is also that of "There are no updates available at this time.". The
    listed files hold ids only; the texts are those of `sentences` (the catalogues) and, for English, the installed
    prose (read only when some listed id is not a catalogue sentence: 8 s on a 2-core CPU). -> (ids to leave out, how
    many listed ids have no text here: those are left out by id alone)."""
    known = {i: sentences[i].texts for i in listed if i in sentences}
    if "eng" in langs and len(known) < len(listed):
        found = prose.harvest(exclude={s.texts["eng"] for s in sentences.values()})
        known |= {i: {"eng": t} for t, _ in found if (i := prose.sentence_id(t)) in listed and i not in known}
    keys = {lang: {text_key(texts[lang]) for texts in known.values() if lang in texts} for lang in langs}
    alike = {s.id for s in sentences.values() if any(text_key(s.texts[lang]) in keys[lang] for lang in langs)}
    return listed | alike, len(listed) - len(known)


def harvest(langs: list[str], locale_dir: Path = LOCALE_DIR) -> dict[str, Sentence]:
    """Sentences translated (sentence-like) into every language of `langs`, by id. For each English message the
    first domain (sorted by name) holding good translations in all languages is used."""
    catalogues = {lang: _catalogues(lang, locale_dir) for lang in langs if lang != "eng"}
    domains = sorted(set.intersection(*(set(c) for c in catalogues.values()))) if catalogues else []
    found: dict[str, Sentence] = {}
    for domain in domains:
        tables = {lang: _read_mo(catalogues[lang][domain]) for lang in catalogues}
        first = next(iter(tables.values()))
        for msgid in sorted(first):
            if msgid in found or not sentence_like(msgid, "eng"):
                continue
            texts = {"eng": msgid}
            for lang, table in tables.items():
                text = table.get(msgid, "")
                if not sentence_like(text, lang) or text == msgid:
                    break
                texts[lang] = text
            else:
                found[msgid] = Sentence(sentence_id(msgid), domain, {lang: texts[lang] for lang in langs})
    return {s.id: s for s in found.values()}


def survey(locale_dir: Path = LOCALE_DIR, langs: list[str] | None = None) -> dict[str, int]:
    """Per language: English sentences with a sentence-like translation (any domain). `prepare mini --survey`."""
    counts = {}
    for lang in langs or [c for c in languages.LANGUAGES if c != "eng"]:
        ids = set()
        for path in _catalogues(lang, locale_dir).values():
            ids.update(m for m, t in _read_mo(path).items()
                       if sentence_like(m, "eng") and sentence_like(t, lang) and t != m)
        counts[lang] = len(ids)
    return counts


def _catalogues(lang: str, locale_dir: Path) -> dict[str, Path]:
    """domain -> .mo file; for each domain the first of the language's locale folders that has it."""
    found: dict[str, Path] = {}
    for locale in languages.get(lang).gettext:
        for mo in sorted((locale_dir / locale / "LC_MESSAGES").glob("*.mo")):
            found.setdefault(mo.stem, mo)
    return found


def _read_mo(path: Path) -> dict[str, str]:
    """msgid -> translation for the plain (no context, no plural) messages of a .mo file, the translation in NFC
    (a few catalogues write accents decomposed: espeak-ng reads "informacio\u0301n" without its stress, and a model
    would learn decomposed targets); {} if unreadable."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except (OSError, UnicodeDecodeError, ValueError, LookupError, struct.error):  # a legacy encoding, a header's
        return {}  # charset=CHARSET left unfilled, a file cut short: skipped, as the language has others
    return {k.strip(): unicodedata.normalize("NFC", v.strip()) for k, v in catalog.items()
            if isinstance(k, str) and k and "\x04" not in k and isinstance(v, str)}


def sentence_like(text: str, lang: str) -> bool:
    """A plain sentence espeak can read: no markup or placeholders, no digits or acronyms, one line, ending with
    a full stop (Thai: none); English: capitalised, MIN_WORDS-MAX_WORDS words; other scripts: no Latin letters."""
    text = text.strip()
    if not text or _MARKUP.search(text) or _ACRONYM_OR_DIGIT.search(text):
        return False
    script = languages.get(lang).script
    if script not in NO_FULL_STOP_SCRIPTS and not text.endswith(FULL_STOPS):
        return False
    if script in NO_FULL_STOP_SCRIPTS and unicodedata.category(text[-1]).startswith("P"):
        return False
    if script != "Latn" and _LATIN.search(text):
        return False
    if lang == "eng":
        return text[0].isupper() and MIN_WORDS <= len(text.split()) <= MAX_WORDS
    if script in SPACELESS_SCRIPTS:
        return 2 <= len(text) <= MAX_CHARS_NO_SPACES
    return 2 <= len(text.split()) <= 2 * MAX_WORDS


def sentence_id(english: str) -> str:
    """A sentence's id: a hash of its English text."""
    return hashlib.sha1(english.encode("utf-8")).hexdigest()[:10]
