"""Common Voice on disk -> ASR manifests (the curriculum's first stage).

Input: a Common Voice locale folder (e.g. cv-corpus-17.0/de/) with train.tsv, dev.tsv, test.tsv, validated.tsv
and clips/*.mp3. The tables have a header line; every release has `client_id`, `path` and `sentence` (Corpus 1-4:
client_id path sentence up_votes down_votes age gender accent; 17.0+ adds sentence_id, sentence_domain, variant,
locale, segment). `sentence_id` is used when present, else a hash of the sentence. The language comes from the
folder name (Common Voice locale, see languages.by_commonvoice_locale(); Cantonese is `yue` or `zh-HK`) unless given.
Durations come from clip_durations.tsv (16.1+) or times.txt (14.0-16.0) when present, else from the clips' headers.
The clips of dev and test are decoded whole (clips.DECODED_SPLITS): an MP3 cut short is found only so; where a clip of
any split lasts other than the list says (by more than 0.05 s and 1%), its measured length is written, with a note (a
train clip whose header disagrees with the list is checked as dev's and test's are), and a train or dev clip over 30 s
is left out and counted.

Output: OUT/<split>.jsonl with ASR rows only (tgt_lang and translation empty), id "commonvoice:<lang>:<clip>", and
OUT/summary.json. Rows without a path or a sentence are left out and counted, and so are damaged lines (holding a
carriage return, or of another field count than the header: a tab or line break inside a sentence; a table none of whose
lines can be used stops the run) and a clip listed again (it stays in the first split of test, dev, train that lists
it). With `validated_as_train`, validated clips are added to train unless their speaker (client_id) or their sentence is
in dev.tsv or test.tsv (read for this even when those splits are not converted): Common Voice splits by speaker, and its
official train split is much smaller than its validated set.
"""

import csv
import hashlib
import os
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path

from .. import languages
from ..errors import LLMSRTError
from .clips import (DECODED_SPLITS, DEFAULT_WORKERS, Summary, check_clips, check_output_folder, note_durations,
                    without_repeats, write_manifests)
from .manifest import Row, read_manifest
from .tables import STRAY_CR, by_name, known_durations, no_usable_line, open_table, table_text, text_lines

CORPUS = "commonvoice"
SPLITS = ("train", "dev", "test")
HELD_OUT = ("dev", "test")  # whose speakers and sentences `validated_as_train` keeps out of train
EXCLUDED_FROM = ("train", "dev")  # the splits `exclude` keeps other evaluation sets' clips out of
REQUIRED_COLUMNS = ("path", "sentence")
WRONG_WIDTH = "field count differs from the header's (a tab or line break inside a field)"
NO_CLIP, NO_SENTENCE = "no clip (empty path)", "empty sentence"
EXCLUDE_TODO = ("--exclude takes a manifest (JSONL, e.g. an `llm-srt prepare` run's test.jsonl): fix them, or give "
                "that manifest instead")  # (read_manifest's own advice names evaluate's and train's options)


@dataclass(frozen=True)
class Utterance:
    where: str  # tsv:line
    audio: Path | None  # LOCALE_DIR/clips/<path>; None when the row has no path
    transcript: str
    sentence_id: str
    speaker: str  # client_id ("" when the table has none)
    source: str  # the tsv's file name


def prepare_commonvoice(locale_dir: str | Path, out: str | Path, lang: str | None = None,
                        splits: tuple[str, ...] = SPLITS, validated_as_train: bool = False,
                        workers: int = DEFAULT_WORKERS, strict: bool = False,
                        exclude: Sequence[str | Path] = ()) -> Summary:
    """Write OUT/<split>.jsonl and OUT/summary.json; returns the summary (rows written per split, rows left out,
    bad clips skipped). `strict`: stop at the first missing, empty or undecodable clip instead. `exclude`: manifests
    of evaluation sets (e.g. CoVoST 2's dev and test, made from Common Voice 4's clips): their clips, the speakers of
    those clips and their sentences are left out of train and dev (a later release redraws its splits, so its train
    and validated clips hold CoVoST's test clips and speakers)."""
    locale_dir, out = Path(locale_dir), Path(out)
    check_output_folder(out)
    lang = lang or _language_of(locale_dir)
    summary = Summary(out)
    by_split: dict[str, list[Utterance]] = {split: list(read_split(locale_dir, split, damaged=summary.drop))
                                            for split in splits}
    if validated_as_train:
        by_split.setdefault("train", [])
        by_split["train"] += _validated_extra(locale_dir, by_split, summary)
    if exclude:
        held_out = _Excluded.of(exclude, locale_dir, by_split)
        by_split = {split: held_out.filter(utts, summary) if split in EXCLUDED_FROM else utts
                    for split, utts in by_split.items()}
    by_split = without_repeats({split: _usable(utts, summary) for split, utts in by_split.items()},
                               lambda u: u.audio, summary)
    clips = {u.audio: u.where for utts in by_split.values() for u in utts}
    known, summary.durations_from = known_durations(locale_dir)
    listed = by_name(clips, known)
    durations, summary.bad_clips = check_clips(clips, listed, workers, strict,
                                               desc="reading clip headers" if not known else "checking clips",
                                               decode={u.audio for s in DECODED_SPLITS for u in by_split.get(s, ())})
    note_durations(summary, clips, listed, durations)
    summary.durations_from = summary.durations_from or "the clips' headers"
    rows = {split: [_row(u, lang, split, durations[u.audio]) for u in utts if u.audio in durations]
            for split, utts in by_split.items()}
    summary.rows_without_clip = sum(len(by_split[split]) - len(rows[split]) for split in rows)
    write_manifests(summary, rows, {split: {u.audio for u in utts} for split, utts in by_split.items()})
    return summary


def _validated_extra(locale_dir: Path, by_split: dict[str, list[Utterance]], summary: Summary) -> list[Utterance]:
    """validated.tsv's clips that are in no split table, whose speaker and sentence are in no held-out table: the
    converted splits other than train, and dev.tsv and test.tsv whether converted or not. Those two are read as they
    are, their damaged lines too (left out of the converted split, a line of another width still names its speaker
    and clip): read through the converted split only, a dev clip whose sentence held a tab went to train."""
    held = [u for split, utts in by_split.items() if split != "train" for u in utts]
    held += [u for split in HELD_OUT if (locale_dir / f"{split}.tsv").is_file() for u in read_split(locale_dir, split)]
    seen = {u.audio for utts in by_split.values() for u in utts} | {u.audio for u in held}
    speakers = {u.speaker for u in held if u.speaker}
    sentences = {u.sentence_id for u in held if u.transcript}
    extra = []

    def unseen(rec: dict) -> bool:  # a damaged line of a clip the split tables hold leaves nothing out: not counted
        path = (rec.get("path") or "").strip()
        return not path or locale_dir / "clips" / path not in seen

    for u in read_split(locale_dir, "validated", REQUIRED_COLUMNS + ("client_id",), summary.drop, unseen):
        if u.audio is not None and u.audio in seen:
            continue
        if u.speaker in speakers:
            summary.drop("validated.tsv clip by a dev/test speaker (client_id)", u.where)
        elif u.sentence_id in sentences:
            summary.drop("validated.tsv clip of a dev/test sentence", u.where)
        else:
            extra.append(u)
    return extra


@dataclass(frozen=True)
class _Excluded:
    """What `exclude` keeps out of train and dev: clip file names, their speakers in this release, sentences."""

    clips: frozenset[str]
    speakers: frozenset[str]
    sentences: frozenset[str]  # text_id of each sentence (releases number sentences differently)

    @staticmethod
    def of(manifests: Sequence[str | Path], locale_dir: Path, by_split: dict[str, list[Utterance]]) -> "_Excluded":
        rows = [row for m in manifests for row in read_manifest(m, check_audio=False, todo=EXCLUDE_TODO)]
        clips = frozenset(Path(row.audio).name for row in rows)
        validated = read_split(locale_dir, "validated") if (locale_dir / "validated.tsv").is_file() else ()
        utts = chain((u for split in by_split.values() for u in split), validated)  # wherever the release lists them
        speakers = frozenset(u.speaker for u in utts if u.speaker and u.audio is not None and u.audio.name in clips)
        return _Excluded(clips, speakers, frozenset(text_id(row.transcript) for row in rows if row.transcript))

    def filter(self, utts: list[Utterance], summary: Summary) -> list[Utterance]:
        kept = []
        for u in utts:
            if u.audio is not None and u.audio.name in self.clips:
                summary.drop("clip of an --exclude manifest", u.where)
            elif u.speaker in self.speakers:
                summary.drop("clip by the speaker of an --exclude manifest's clip (client_id)", u.where)
            elif u.transcript and text_id(u.transcript) in self.sentences:
                summary.drop("sentence of an --exclude manifest", u.where)
            else:
                kept.append(u)
        return kept


def _usable(utts: list[Utterance], summary: Summary) -> list[Utterance]:
    """The utterances with a clip and a sentence; the others are left out and counted."""
    kept = []
    for u in utts:
        if u.audio is None:
            summary.drop(NO_CLIP, u.where)
        elif not u.transcript:
            summary.drop(NO_SENTENCE, u.where)
        else:
            kept.append(u)
    return kept


def read_split(locale_dir: Path, split: str, required: tuple[str, ...] = REQUIRED_COLUMNS,
               damaged: Callable[[str, str], None] | None = None,
               counted: Callable[[dict], bool] | None = None) -> Iterator[Utterance]:
    """The utterances of LOCALE_DIR/<split>.tsv, in file order (`damaged`, `counted`: as `read_table`'s). Given
    `damaged`, a table with lines none of which has a clip and a sentence stops the run (`no_usable_line`): one whose
    every line held a stray carriage return was written as an empty split, and the run exited 0."""
    tsv = locale_dir / f"{split}.tsv"
    if not tsv.is_file():
        raise LLMSRTError(f"{tsv}: missing; a Common Voice locale folder has train.tsv, dev.tsv, test.tsv, "
                          f"validated.tsv and clips/{'; ' + hint if (hint := _release_hint(locale_dir)) else ''}")
    clips, drops, used = locale_dir / "clips", [], 0

    def drop(reason: str, where: str) -> None:
        drops.append((reason, where))
        damaged(reason, where)

    for lineno, rec in read_table(tsv, required, damaged=drop if damaged else None, counted=counted):
        sentence = table_text(rec["sentence"])
        if rec["path"] and sentence:
            used += 1
        else:  # counted by `_usable`
            drops.append((NO_SENTENCE if rec["path"] else NO_CLIP, f"{tsv}:{lineno}"))
        yield Utterance(where=f"{tsv}:{lineno}", audio=clips / rec["path"] if rec["path"] else None,
                        transcript=sentence, sentence_id=(rec.get("sentence_id") or "").strip() or text_id(sentence),
                        speaker=(rec.get("client_id") or "").strip(), source=tsv.name)
    if damaged is not None and drops and not used:
        raise no_usable_line(drops)


def read_table(tsv: Path, required: tuple[str, ...], escapechar: str | None = None,
               damaged: Callable[[str, str], None] | None = None, counted: Callable[[dict], bool] | None = None):
    """(line number, record) for each data line of a Common Voice / CoVoST tsv whose header names at least the
    `required` columns, `path` stripped (it may be empty). Fields are taken as written (csv.QUOTE_NONE: a bare " is
    text); `escapechar="\\"` undoes backslash escapes as CoVoST's official reader does (pandas, escapechar="\\").
    A line holding a carriage return (`tables.text_lines`), or of more or fewer fields than the header (`wrong_width`),
    is damaged: given `damaged`, it is called with the reason and the line's FILE:LINE, and the line is left out.
    `counted(record)`: whether a line of another width is passed to `damaged` (default: every one); validated.tsv's
    damaged line of a clip a split table lists is left out uncounted, as that clip is not left out. Without `damaged`
    (tables read only for their speakers and sentences), a line with a carriage return is a record whose fields are
    empty, and one of another width a record as read (`wrong_width` tells it)."""
    csv.field_size_limit(sys.maxsize)
    with open_table(tsv) as f:
        cut = partial(damaged, STRAY_CR) if damaged is not None else None  # csv cut a field short at the CR
        reader = csv.DictReader(text_lines(f, tsv, cut), delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar=escapechar)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise LLMSRTError(f"{tsv}:1: header lacks column(s) {', '.join(missing)} "
                              f"(found: {', '.join(reader.fieldnames or [])})")
        try:
            for rec in reader:
                if damaged is not None and (wrong := wrong_width(rec)):
                    if counted is None or counted(rec):
                        damaged(WRONG_WIDTH, f"{tsv}:{reader.line_num} ({wrong})")
                    continue
                rec["path"] = (rec.get("path") or "").strip()
                yield reader.line_num, rec
        except csv.Error as e:
            raise LLMSRTError(f"{tsv}:{reader.line_num + 1}: not a table line ({e}); fix or remove the line") from None


def wrong_width(rec: dict) -> str:
    """What is wrong with a csv.DictReader record: "N fields, the header has M", or "" when it has the header's
    width. DictReader files extra fields under the key None and fills missing ones with None: a tab inside a sentence
    cut it short, and a line broken inside a sentence was kept cut short, the rest a row of its own (its 2nd field
    taken as a clip)."""
    if None not in rec and None not in rec.values():
        return ""
    named = [value for key, value in rec.items() if key is not None]
    return f"{sum(v is not None for v in named) + len(rec.get(None) or ())} fields, the header has {len(named)}"


def text_id(sentence: str) -> str:
    """A sentence id from the text itself (releases before 17.0 have no sentence_id column), of its Unicode NFC
    form: the same sentence typed decomposed (NFD, as macOS writes it) got another id, so another speaker's clip of
    a test sentence went into train (`validated_as_train`, `exclude`). An NFC text keeps the id it had."""
    text = unicodedata.normalize("NFC", " ".join(sentence.split()))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _row(u: Utterance, lang: str, split: str, duration: float) -> Row:
    return Row(id=f"{CORPUS}:{lang}:{u.audio.stem}", audio=str(u.audio), duration=duration, src_lang=lang,
               transcript=u.transcript, tgt_lang="", translation="", split=split, corpus=CORPUS,
               sentence_id=u.sentence_id, source=u.source)


def _language_of(locale_dir: Path) -> str:
    """The language of the locale folder's name as given (a link cv/de -> /data/cv-corpus/de_17 is German: the
    link's target was read, "not a locale"), else of its resolved path's name (`--locale-dir .`, `..`)."""
    by_locale = languages.by_commonvoice_locale()
    name, resolved = _as_typed(locale_dir).name, locale_dir.resolve().name
    code = by_locale.get(name) or by_locale.get(resolved)
    if code is None:
        hint = _release_hint(locale_dir)
        names = repr(name) + (f" (a link to {resolved!r})" if resolved != name else "")
        raise LLMSRTError(f"{locale_dir}: " + (hint or f"folder name {names} is not a Common Voice "
                          "locale of a known language; pass the language (--lang deu) or add it to "
                          "llm_srt/languages.py"))
    return code


def _as_typed(path: Path) -> Path:
    """`path` made absolute as the shell shows it: from $PWD, the working folder reached through links as typed
    (`cd cv/de`), when it is the working folder, rather than getcwd(), whose links are resolved (de_17)."""
    pwd = os.environ.get("PWD", "")
    try:
        base = pwd if os.path.isabs(pwd) and os.path.samefile(pwd, os.curdir) else os.getcwd()
    except OSError:
        base = os.getcwd()
    return Path(os.path.normpath(os.path.join(base, path)))


def _release_hint(folder: Path) -> str:
    """What to give instead when `folder` holds locale folders (a release, cv-corpus-17.0-.../) instead of being
    one, else ""."""
    try:
        locales = sorted(p.name for p in folder.iterdir() if (p / "train.tsv").is_file())
    except OSError:
        return ""
    if not locales:
        return ""
    return (f"a Common Voice release folder, not a locale's; give one of its locale folders ({', '.join(locales[:4])}"
            f"{', ...' if len(locales) > 4 else ''}), e.g. {folder / locales[0]}")
