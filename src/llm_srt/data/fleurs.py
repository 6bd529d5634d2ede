"""FLEURS on disk -> manifests, with many-to-many pairs made by sentence id.

Input: the FLEURS release layout, one folder per locale (en_us, de_de, cmn_hans_cn, yue_hant_hk, ...; the mapping
is languages.by_fleurs_locale()), each holding train.tsv / dev.tsv / test.tsv (no header; columns: sentence id,
file name, raw transcription, normalized transcription, phonemes/characters, number of samples, gender) and
audio/<split>/<file name>. The dataset hub ships each split's wavs as audio/<split>.tar.gz: extract it first (the
converter stops, naming every archive of the run still packed and the command that unpacks them all).

Output: OUT/<split>.jsonl for each split, and OUT/summary.json. One file per split holds both kinds of rows, so one
manifest serves every curriculum stage (the loader picks rows by task):
- an ASR row per utterance (tgt_lang and translation empty), id "fleurs:<src>:<utterance>";
- a translation row per utterance and target language that has the same sentence id in the same split,
  translation = that language's raw transcription, id "fleurs:<src>:<utterance>:<tgt>".
FLEURS reads each sentence by several speakers; every utterance of the source is paired, and the target text is the
target language's transcription (the same sentence read by its speakers; the first one in TSV order is used).
Rows without a file name or a transcription, whose sentence id is empty or not a whole number, of other than 7 columns
or holding a carriage return (a damaged line) are left out and counted (a table none of whose lines is kept stops the
run), and so is a wav listed again (it stays in the first split of test, dev, train that lists it), and an utterance
whose transcript holds a tag or special token (the sentence's other speakers then give its target text). A sentence id
stays in one split, the first of test, dev, train in which any table under ROOT lists it: every locale folder's tables
are read for their ids, also those of languages and splits not converted, so a sentence's split is the same whatever
--langs and --splits (only folders named like a FLEURS locale are read; an unreadable table of a language not converted
is skipped with a note). Its utterances in a later split are left out and counted, with a warning, so no test sentence's
text is trained on (nor that of a sentence another language's release lists in test, in a run without that language).
Every wav's header is read (in parallel; wav headers are cheap): a missing, empty or undecodable one, or one its
header shows cut short, is skipped and counted (its transcript still serves as other languages' target), or with
`strict` stops the conversion. Where a header's length differs from the table's sample count (by more than 0.05 s
and 1%), the header's is written, with a note: it is the file training loads, and the 30 s window filter must see it.
"""

import csv
import re
import shlex
import sys
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from .. import languages
from ..audio import SAMPLE_RATE
from ..errors import LLMSRTError
from ..prompts import markup_in
from .clips import (DECODED_SPLITS, DEFAULT_WORKERS, MARKUP, SPLIT_ORDER, Summary, check_clips, check_output_folder,
                    extract_command, first_three, note_durations, without_repeats, write_manifests)
from .manifest import Row, parse_directions, targets_by_source
from .tables import STRAY_CR, no_usable_line, open_table, table_text, text_lines

SPLITS = ("train", "dev", "test")
CORPUS = "fleurs"
COLUMNS = ("sentence_id", "file", "raw", "normalized", "characters", "num_samples", "gender")
SPLIT_CONFLICT = "sentence id also listed in an earlier split of test, dev, train (kept only there)"
WRONG_COLUMNS = (f"not {len(COLUMNS)} tab-separated columns ({', '.join(COLUMNS)}): a tab or line break inside a "
                 "field, or a line cut short")
BAD_ID = "sentence id empty or not a whole number (FLEURS numbers its sentences; pairs are made by id)"
LOCALE_NAME = re.compile(r"[a-z]{2,3}(_[a-z]{4})?_([a-z]{2}|[0-9]{3})")  # language[_script]_region: en_us,
#   cmn_hans_cn, es_419; the release's locales beyond our languages count too (a sentence's split is theirs as well)


@dataclass(frozen=True)
class Utterance:
    lang: str  # ISO 639-3
    split: str  # train / dev / test
    sentence_id: str  # FLEURS id, shared by every language
    audio: Path  # the wav file
    transcript: str  # raw transcription
    duration: float | None  # seconds, from the sample-count column (None: read from the header)
    where: str = ""  # tsv:line


def prepare_fleurs(root: str | Path, langs: list[str] | None, out: str | Path, directions: str = "all",
                   splits: tuple[str, ...] = SPLITS, check_audio: bool = True, workers: int = DEFAULT_WORKERS,
                   strict: bool = False) -> Summary:
    """Write OUT/<split>.jsonl for each split and OUT/summary.json; returns the summary (rows per split, bad
    clips skipped).

    `langs`: ISO 639-3 codes (None: every language whose locale folder exists under `root`), each taken once (one
    named twice was read twice: every row of it written twice, a manifest training refuses). `directions`:
    all | 6x12 | 15x14 | none | SRC,..:TGT,.. (see manifest.parse_directions). `check_audio=False` trusts the
    tables (no file is opened but those whose duration the table lacks: their headers are read, and a bad one is
    skipped and counted as usual).
    """
    root, out = Path(root), Path(out)
    check_output_folder(out)
    langs = list(dict.fromkeys(langs)) if langs else available_languages(root)
    if not langs and (other := _unsupported(root)):
        raise LLMSRTError(f"{root}: no FLEURS locale folder to convert; {other}")
    if not langs:
        raise LLMSRTError(f"{root}: no FLEURS locale folders found (expected e.g. en_us/, de_de/ with "
                          f"train.tsv and audio/){_hub_hint(root)}")
    _check_locale_folders(root, langs)
    _check_unpacked(root, langs, splits)
    pairs = parse_directions(directions, langs)
    summary = Summary(out, durations_from="the tables' sample counts")
    listed = without_repeats({split: [u for lang in langs for u in read_split(root, lang, split, summary)]
                              for split in splits}, lambda u: (u.lang, u.audio.name), summary)
    listed = _one_split_per_sentence(root, langs, listed, summary)
    listed = {split: _without_markup(us, summary) for split, us in listed.items()}
    tables: dict[str, dict[str, list[Utterance]]] = {split: {lang: [] for lang in langs} for split in splits}
    for split, us in listed.items():
        for u in us:
            tables[split][u.lang].append(u)
    utts = [u for us in listed.values() for u in us]
    known = {u.audio: u.duration for u in utts if u.duration is not None}
    clips = {u.audio: u.where for u in utts if check_audio or u.duration is None}
    decode = {u.audio for split in DECODED_SPLITS for u in listed.get(split, ())} if check_audio else ()
    durations, summary.bad_clips = check_clips(clips, known, workers, strict, read_all_headers=True,
                                               desc="reading wav headers", decode=decode)
    note_durations(summary, clips, known, durations)
    if not check_audio:
        durations |= known
    rows = {}
    for split, by_lang in tables.items():
        measured = {lang: [replace(u, duration=durations[u.audio]) if u.audio in durations else u for u in us]
                    for lang, us in by_lang.items()}
        rows[split] = list(pair_rows(measured, pairs, skip={u.audio for u in listed[split]
                                                            if u.audio not in durations}))
    lost = {b.clip for b in summary.bad_clips}
    summary.rows_without_clip = sum(1 for u in utts if str(u.audio) in lost)
    write_manifests(summary, rows, {split: {u.audio for u in us if u.audio in clips} for split, us in listed.items()})
    return summary


def _without_markup(utts: list[Utterance], summary: Summary) -> list[Utterance]:
    """The utterances whose transcript holds no tag or special token; the others are left out and counted once, by
    their tsv:line, before `pair_rows` picks each sentence's target text. Left to write_manifests, the first speaker's
    text with an `<|endoftext|>` was the target of every other language's pairs into it, each pair dropped (one a
    source language, named by row id), though the sentence's other speakers read it clean."""
    kept = []
    for u in utts:
        if found := markup_in(u.transcript):
            summary.drop(MARKUP, f"{u.where} ({found!r})")
        else:
            kept.append(u)
    return kept


def available_languages(root: Path) -> list[str]:
    """ISO 639-3 codes of the FLEURS locale folders present under `root`."""
    return [code for locale, code in sorted(languages.by_fleurs_locale().items()) if (root / locale).is_dir()]


def _check_locale_folders(root: Path, langs: list[str]) -> None:
    """Stop, in one line, when a language's locale folder is missing under `root`: how many, the first few, the
    languages `root` holds and the --langs that prepares them. The first missing table was named alone (as a table,
    though its folder was absent): `--langs all` on a download of 3 locales stopped 12 times, never saying which
    languages were there."""
    missing = [f"{languages.get(lang).fleurs}/" for lang in langs if not (root / languages.get(lang).fleurs).is_dir()]
    if not missing:
        return
    held = available_languages(root)
    few = first_three(missing)
    if held:
        give = [lang for lang in langs if lang in held] or held
        which = "those" if set(give) == set(held) else "the ones asked for that it holds"
        holds = f"it holds those of {', '.join(held)}: give --langs {','.join(give)} to prepare {which}"
    elif root.is_dir():
        holds = _unsupported(root) or "it holds no FLEURS locale folder (e.g. en_us/, with train.tsv and audio/)"
    else:
        holds = "there is no such folder: give the FLEURS folder as --root"
    raise LLMSRTError(f"{root}: {len(missing)} of the {len(langs)} locale folders --langs names are missing ({few}); "
                      f"{holds}{_hub_hint(root)}")


def _unsupported(root: Path) -> str:
    """'it holds af_za/, a FLEURS locale folder of no language llm-srt supports (those of llm_srt/languages.py: ...)'
    where `root` holds folders named like a FLEURS locale the registry has no language for; "" where it holds none.
    Such a --root was told it held no FLEURS locale folder at all."""
    known = languages.by_fleurs_locale()
    found = [f"{p.name}/" for p in sorted(root.iterdir()) if p.is_dir() and LOCALE_NAME.fullmatch(p.name)
             and p.name not in known] if root.is_dir() else []
    if not found:
        return ""
    what = "a FLEURS locale folder" if len(found) == 1 else "FLEURS locale folders"
    return (f"it holds {first_three(found)}, {what} of no language llm-srt supports (those of llm_srt/languages.py: "
            f"{', '.join(sorted(known))}; add an entry there for another)")


def _hub_hint(root: Path) -> str:
    """'; ... give ROOT/data' when `root` is the dataset hub's download, whose locale folders are under data/ (with
    --langs too: the hint was given only without it, and `--langs eng,deu,fra` said en_us/train.tsv was missing)."""
    below = root / "data"
    found = below.is_dir() and available_languages(below)
    return f"; this looks like the dataset's root: give {below}" if found else ""


def _check_unpacked(root: Path, langs: list[str], splits: tuple[str, ...]) -> None:
    """Stop, in one line, when wavs of the run are still in the hub's audio/<split>.tar.gz: every such archive at once,
    how many and the first few, with the command that unpacks them all (one archive was named a run: 45 runs for 15
    languages' 3 splits). The command skips a split already unpacked or without an archive."""
    packed = [audio / f"{split}.tar.gz" for lang in langs for split in splits
              if _packed(audio := root / languages.get(lang).fleurs / "audio", split)]
    if len(packed) == 1:
        raise _still_packed(packed[0], packed[0].name.removesuffix(".tar.gz"))
    if packed:
        locales = " ".join(dict.fromkeys(a.parent.parent.name for a in packed))
        names = " ".join(s for s in splits if any(a.name == f"{s}.tar.gz" for a in packed))
        few = first_three([str(a.relative_to(root)) for a in packed])
        loop = (f"for l in {locales}; do for s in {names}; do a={shlex.quote(str(root))}/$l/audio/$s.tar.gz; "
                'if [ -f "$a" ] && [ ! -d "${a%.tar.gz}" ]; then tar -xzf "$a" -C "${a%/*}"; fi; done; done')
        raise LLMSRTError(f"{root}: the wavs of {len(packed)} splits are still in their .tar.gz archives ({few}); "
                          f"extract them all first: {loop}")


def _packed(audio: Path, split: str) -> bool:
    """Whether the `split` wavs of a locale's audio/ folder are only in the hub's audio/<split>.tar.gz."""
    return not (audio / split).is_dir() and (audio / f"{split}.tar.gz").is_file()


def _still_packed(archive: Path, split: str) -> LLMSRTError:
    return LLMSRTError(f"{archive}: the {split} wavs are still in this archive; extract it first: "
                       f"{extract_command(archive)}")


def _one_split_per_sentence(root: Path, langs: list[str], listed: dict[str, list[Utterance]],
                            summary: Summary) -> dict[str, list[Utterance]]:
    """`listed` with each sentence id in the first of test, dev, train in which any table under `root` lists it. The
    tables not converted, of every locale folder there (the languages not converted too), are read for their ids,
    so a sentence's split does not depend on --langs or --splits. Without this a sentence in de_de/test.tsv and
    en_us/train.tsv put a test sentence's English text in train, and its eng<->deu pairs vanished uncounted; and an
    English-only run put it in train, where a run with German put it in test."""
    locale_of = {lang: languages.get(lang).fleurs for lang in langs}
    run_locales = set(locale_of.values())
    converted = {(locale_of[lang], split) for lang in langs for split in listed}
    scratch = Summary(summary.out)  # the rows of tables not converted: read for their ids, their bad rows not counted
    rank = {split: i for i, split in enumerate(SPLIT_ORDER)}
    folders = _locale_folders(root)
    home: dict[str, tuple[str, str, str]] = {}  # sentence id -> (the first split listing it, where, its locale)
    for split in sorted(set(SPLITS) | set(listed), key=lambda s: rank.get(s, len(rank))):
        for u in listed.get(split, ()):
            home.setdefault(u.sentence_id, (split, u.where, locale_of[u.lang]))
        for folder in folders:
            if (folder.name, split) not in converted and (folder / f"{split}.tsv").is_file():
                for sentence_id, _, where in _ids_of(folder / f"{split}.tsv", folder.name in run_locales, scratch,
                                                     summary):
                    home.setdefault(sentence_id, (split, where, folder.name))
    moved = [u for split, us in listed.items() for u in us if home[u.sentence_id][0] != split]
    for u in moved:
        summary.drop(SPLIT_CONFLICT, f"{u.where} (in {home[u.sentence_id][0]} at {home[u.sentence_id][1]})")
    if moved:
        summary.notes.append(f"warning: {len({u.sentence_id for u in moved})} sentence ids are listed in more than "
                             f"one split, e.g. {summary.dropped_at[SPLIT_CONFLICT][0]}; their {len(moved)} "
                             "utterances in a later split are left out (kept only in the first of test, dev, train)")
    elsewhere = {u.sentence_id: home[u.sentence_id] for u in moved if home[u.sentence_id][2] not in run_locales}
    if elsewhere:
        split, where, _ = next(iter(elsewhere.values()))
        summary.notes.append(f"{len(elsewhere)} of those sentence ids are in an earlier split in a locale folder this "
                             f"run does not convert, e.g. in {split} at {where}: a sentence's split is decided from "
                             f"every locale folder under {root}, so it is the same whatever --langs")
    return {split: [u for u in us if home[u.sentence_id][0] == split] for split, us in listed.items()}


def _locale_folders(root: Path) -> list[Path]:
    """The folders under `root` named like a FLEURS locale and holding a table (train.tsv, dev.tsv or test.tsv),
    our languages or not; a user's own folder there (my_notes/train.tsv) is none of them: it stopped the run."""
    known = set(languages.by_fleurs_locale())
    return sorted(p for p in root.iterdir() if p.is_dir() and (p.name in known or LOCALE_NAME.fullmatch(p.name))
                  and any((p / f"{s}.tsv").is_file() for s in SPLITS))


def _ids_of(tsv: Path, converted_locale: bool, scratch: Summary, summary: Summary) -> list:
    """`_table_rows` of a table read only for its sentence ids. One that cannot be read (not a FLEURS table, not UTF-8)
    stops the run if its locale is converted, and is otherwise skipped with a note in `summary`: a locale not asked
    for no longer stops the languages that are. Every run that goes through skips it, so the splits stay the same."""
    try:
        return list(_table_rows(tsv, scratch))
    except LLMSRTError as e:
        if converted_locale:
            raise
        summary.notes.append(f"warning: skipped a table of a language not converted, read only for its ids: {e}")
        return []


def read_split(root: Path, lang: str, split: str, summary: Summary, audio: bool = True) -> list[Utterance]:
    """The utterances of one language and split, in TSV order (audio not checked yet); the lines `_table_rows`
    leaves out are counted in `summary`. `audio=False`: the wavs need not be unpacked (only the table is wanted)."""
    folder = root / languages.get(lang).fleurs
    tsv = folder / f"{split}.tsv"
    if not tsv.is_file():
        raise LLMSRTError(f"{tsv}: missing; a FLEURS locale folder has train.tsv, dev.tsv and test.tsv")
    if audio and _packed(folder / "audio", split):
        raise _still_packed(folder / "audio" / f"{split}.tar.gz", split)
    return [Utterance(lang, split, sentence_id, folder / "audio" / split / fields[1].strip(), table_text(fields[2]),
                      _duration(fields), where) for sentence_id, fields, where in _table_rows(tsv, summary)]


def _table_rows(tsv: Path, summary: Summary):
    """(sentence id, fields, tsv:line) of each usable line of a FLEURS table, in file order. Rows without a file
    name, a transcription or a whole-number sentence id (an empty one paired rows of unrelated sentences), lines of
    other than 7 columns and lines holding a carriage return are left out and counted in `summary`; a table none of
    whose lines has 7 columns is not a FLEURS table: LLMSRTError, and so is one none of whose lines can be used
    (`no_usable_line`). A tab inside the transcription, or a line break (the rest of the line then a line of its
    own), cut the text short, and it became every other language's target."""
    damaged, rows, used, drops = [], 0, 0, []

    def drop(reason: str, where: str) -> None:
        drops.append((reason, where))
        summary.drop(reason, where)

    csv.field_size_limit(sys.maxsize)
    with open_table(tsv) as f:
        lines = text_lines(f, tsv, damaged=lambda where: drop(STRAY_CR, where))
        for lineno, fields in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields:
                continue
            where = f"{tsv}:{lineno}"
            if len(fields) != len(COLUMNS):  # a damaged line (a tab in a field, a line cut short, a stray note)
                damaged.append((where, len(fields)))
                continue
            rows += 1
            sentence_id, name, transcript = (field.strip() for field in fields[:3])
            if not name:
                drop("no clip (empty file name)", where)
            elif not transcript:
                drop("empty transcription", where)
            elif not (sentence_id.isascii() and sentence_id.isdigit()):
                drop(BAD_ID, f"{where} ({sentence_id!r})")
            else:
                used += 1
                yield str(int(sentence_id)), fields, where
    if damaged and not rows:
        raise LLMSRTError(f"{damaged[0][0]}: expected {len(COLUMNS)} tab-separated columns ({', '.join(COLUMNS)}), "
                          f"got {damaged[0][1]}, and no line of the file has {len(COLUMNS)}: is it a FLEURS table, its "
                          "columns separated by tabs?")
    for where, n in damaged:
        drop(WRONG_COLUMNS, f"{where} ({n} columns)")
    if drops and not used:  # every line left out: its split was written without them, and the run exited 0
        raise no_usable_line(drops)


def pair_rows(by_lang: dict[str, list[Utterance]], pairs: list[tuple[str, str]], skip: Collection[Path] = ()):
    """ASR rows for every utterance, then translation rows for every (src, tgt) pair sharing a sentence id. The
    utterances whose audio is in `skip` give no rows of their own but still give their text as a target."""
    text_of: dict[str, dict[str, str]] = {}
    for lang, utts in by_lang.items():
        texts: dict[str, str] = {}
        for u in utts:
            texts.setdefault(u.sentence_id, u.transcript)
        text_of[lang] = texts
    targets_of = targets_by_source(pairs)
    for lang, utts in by_lang.items():
        for u in utts:
            if u.audio in skip:
                continue
            yield _row(u, "", "")
            for tgt in targets_of[lang]:
                translation = text_of.get(tgt, {}).get(u.sentence_id)
                if translation:
                    yield _row(u, tgt, translation)


def _row(u: Utterance, tgt: str, translation: str) -> Row:
    stem = Path(u.audio.name).stem
    rid = f"{CORPUS}:{u.lang}:{stem}" + (f":{tgt}" if tgt else "")
    return Row(id=rid, audio=str(u.audio), duration=u.duration, src_lang=u.lang, transcript=u.transcript,
               tgt_lang=tgt, translation=translation, split=u.split, corpus=CORPUS, sentence_id=u.sentence_id)


def _duration(fields: list[str]) -> float | None:
    """From the sample count column (FLEURS audio is 16 kHz); None when it is absent or no whole number of ASCII
    digits (read from the header): a damaged field of a digit int() does not take ('²', which isdigit() calls one)
    was a ValueError traceback that ended the conversion."""
    count = fields[5].strip() if len(fields) > 5 else ""
    if count.isascii() and count.isdigit() and int(count) > 0:
        return int(count) / SAMPLE_RATE
    return None
