"""CoVoST 2 as released -> manifests.

CoVoST 2 ships translations only; speech, transcripts and speakers are Common Voice **4**'s (CoVoST's README:
"Download Common Voice audio clips and transcripts (version 4)"). Input:
- TSV_DIR with the released `covost_v2.<src>_<tgt>.tsv` tables (Common Voice locale codes, e.g. covost_v2.en_de.tsv,
  covost_v2.zh-CN_en.tsv): header `path<TAB>translation<TAB>split`, split one of train, train_covost, dev, test.
  They are joined on `path` with the Common Voice 4 locale folder's validated.tsv (`sentence`, `client_id`), as
  the official readers do (CoVoST's get_covost_splits.py, fairseq's prep_covost_data.py): both read with
  csv.QUOTE_NONE and escapechar "\\", so `\\"` in a table is a `"`.
- or, instead of a release table, the per-split files that get_covost_splits.py writes,
  `covost_v2.<src>_<tgt>.<train|dev|test>.tsv` (header `path<TAB>sentence<TAB>translation<TAB>client_id`, the join
  already done); they are used when the release table or validated.tsv is absent.
- CV_DIR: the Common Voice 4 locale folder (validated.tsv, clips/*.mp3), or a folder holding one per locale
  (en/, zh-CN/, ...) when TSV_DIR has tables of several source languages.
A pair asked for that has no table in TSV_DIR stops the run, naming the file (with the command that extracts it when
only its .tsv.tar.gz is there, or saying that CoVoST 2 has no such direction); without --pairs, so does a table
still in its .tsv.tar.gz, every one named in one line with the loop that extracts them. A table of a locale
llm_srt/languages.py lacks (covost_v2.en_ar.tsv) is skipped, named on stderr and in the summary's notes.

Output: OUT/<split>.jsonl (train = train + train_covost, as the official split; dev; test) and OUT/summary.json.
Each clip gives one ASR row (id "covost2:<clip>", once however many tables translate it) and one translation row
per table (id "covost2:<clip>:<tgt>"). CoVoST has no cross-language sentence id: the clip name serves as
sentence_id. Rows without a path or a transcript, whose clip is not in validated.tsv or is there on a damaged line
(of another field count than the header: a tab or line break inside a field), or whose split is unknown are left
out and counted, and so are a table's own damaged lines; so is a clip listed again for the same target (and one
listed in two splits stays in the first of test, dev, train), and so are bad clips (missing, empty, undecodable,
cut short: the dev and test clips are decoded whole, as only that finds an MP3 missing its end), unless strict. A
row whose translation is empty or the placeholder `REMOVE` gives no translation row (counted) but still its clip's
ASR row: the transcript is Common Voice's own, and for X->eng no other table supplies it (fairseq's
prep_covost_data.py drops no REMOVE row from its ASR data either).
"""

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import languages
from ..errors import LLMSRTError
from .clips import (DECODED_SPLITS, DEFAULT_WORKERS, Summary, check_clips, check_output_folder, counted,
                    extract_command, first_three, note_durations, without_repeats, write_manifests)
from .commonvoice import read_table, wrong_width
from .manifest import Row
from .tables import by_name, known_durations, table_text

CORPUS = "covost2"
TABLE_NAME = re.compile(r"^covost_v2\.(?P<src>[A-Za-z-]+)_(?P<tgt>[A-Za-z-]+)(\.(?P<split>train|dev|test))?\.tsv$")
RELEASE_COLUMNS = ("path", "translation", "split")  # all the official readers take from a release table
SPLIT_FILE_COLUMNS = ("path", "sentence", "translation", "client_id")  # get_covost_splits.py's output
VALIDATED_COLUMNS = ("path", "sentence", "client_id")  # what the join takes from Common Voice's validated.tsv
SPLIT_OF = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}  # release label -> split
SPLITS = ("train", "dev", "test")
PLACEHOLDER = "REMOVE"  # a translation CoVoST marks as unusable
NO_TRANSLATION = f"translation empty or {PLACEHOLDER} (no translation row; the clip's ASR row is kept)"
DAMAGED_SOURCE = ("the clip's validated.tsv line is damaged: another field count than its header (a tab or line break "
                  "inside a field cut its sentence short)")
ESCAPE = "\\"
# CoVoST 2's directions, as its get_covost_splits.py lists them (Common Voice locale codes): 21 into English, 15 out
XX_EN = ("fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn", "nl", "tr", "ar", "sv-SE", "lv", "sl",
         "ta", "ja", "id", "cy")
EN_XX = ("de", "tr", "fa", "sv-SE", "mn", "zh-CN", "cy", "ca", "sl", "et", "id", "ar", "ta", "lv", "ja")


@dataclass
class Table:
    """One translation direction in TSV_DIR: its release table and/or get_covost_splits.py's per-split files."""

    src: str  # ISO 639-3
    tgt: str
    locale: str  # the Common Voice locale of the speech (file name's source code)
    release: Path | None = None
    split_files: dict[str, Path] = field(default_factory=dict)  # train/dev/test -> file


@dataclass(frozen=True)
class Record:
    where: str  # table:line
    audio: Path
    transcript: str
    translation: str  # "" where the table's is empty or REMOVE: the record gives the clip's ASR row only
    split: str  # train / dev / test
    src: str
    tgt: str
    source: str  # the table's file name


def prepare_covost2(tsv_dir: str | Path, cv_dir: str | Path, out: str | Path,
                    pairs: list[tuple[str, str]] | None = None, workers: int = DEFAULT_WORKERS,
                    strict: bool = False) -> Summary:
    """Write OUT/<split>.jsonl and OUT/summary.json; returns the summary. `pairs`: (src, tgt) ISO 639-3 pairs to
    keep (None: every table found in `tsv_dir`). `strict`: stop at the first bad clip instead of skipping it."""
    tsv_dir, cv_dir, out = Path(tsv_dir), Path(cv_dir), Path(out)
    check_output_folder(out)
    unknown: list[str] = []
    tables = find_tables(tsv_dir, unknown)
    if pairs is not None:
        missing = [p for p in dict.fromkeys(pairs) if p not in tables]  # a pair asked for is never silently dropped
        if missing:
            raise LLMSRTError(f"{tsv_dir}: no table for --pairs "
                              + "; ".join(_missing_table(tsv_dir, src, tgt) for src, tgt in missing)
                              + "; add the tables there or leave those pairs out of --pairs")
        tables = {p: t for p, t in tables.items() if p in set(pairs)}
    else:
        _check_unpacked(tsv_dir, tables)
    if not tables:
        raise LLMSRTError(f"{tsv_dir}: no covost_v2.<src>_<tgt>.tsv tables found")
    locale_dirs = _locale_dirs(cv_dir, sorted({t.locale for t in tables.values()}))
    summary = Summary(out)
    if unknown:  # every row left out is counted: these were only a line on stderr, summary.json silent
        summary.notes.append(f"skipped {counted(len(unknown), 'table')} of a locale not in llm_srt/languages.py, "
                             f"their rows not converted: {', '.join(unknown)}")
    validated: dict[str, dict[str, tuple[str, str]]] = {}
    records: list[Record] = []
    for _, table in sorted(tables.items()):
        records += _records(table, locale_dirs[table.locale], validated, summary)
    by_split = without_repeats({split: [r for r in records if r.split == split] for split in SPLITS},
                               lambda r: r.audio, summary, entry=lambda r: (r.audio, r.tgt))
    kept = {r for split in SPLITS for r in by_split[split]}
    records = [r for r in records if r in kept]  # in table order, so --strict names the first bad clip of the tables
    known: dict[str, float] = {}
    sources = set()
    for folder in locale_dirs.values():
        durations, name = known_durations(folder)
        known.update(durations)
        sources.add(name or "the clips' headers")
    summary.durations_from = ", ".join(sorted(sources))
    clips = {}
    for r in records:
        clips.setdefault(r.audio, r.where)
    listed = by_name(clips, known)
    durations, summary.bad_clips = check_clips(clips, listed, workers, strict,
                                               desc="reading clip headers" if not known else "checking clips",
                                               decode={r.audio for s in DECODED_SPLITS for r in by_split[s]})
    note_durations(summary, clips, listed, durations)
    rows: dict[str, list[Row]] = {split: [] for split in SPLITS}
    lines: dict[str, str] = {}  # row id -> its table line: a clip's rows come from a line per target table
    asr_done: set[Path] = set()
    for r in records:
        if r.audio not in durations:
            summary.rows_without_clip += 1
            continue
        common = dict(audio=str(r.audio), duration=durations[r.audio], src_lang=r.src, transcript=r.transcript,
                      split=r.split, corpus=CORPUS, sentence_id=r.audio.stem, source=r.source)
        if r.audio not in asr_done:
            asr_done.add(r.audio)
            rows[r.split].append(Row(id=f"{CORPUS}:{r.audio.stem}", tgt_lang="", translation="", **common))
            lines[rows[r.split][-1].id] = r.where
        if r.translation:
            rows[r.split].append(Row(id=f"{CORPUS}:{r.audio.stem}:{r.tgt}", tgt_lang=r.tgt,
                                     translation=r.translation, **common))
            lines[rows[r.split][-1].id] = r.where
    write_manifests(summary, rows, {split: {r.audio for r in by_split[split]} for split in SPLITS}, lines)
    return summary


def _missing_table(tsv_dir: Path, src: str, tgt: str) -> str:
    """Why TSV_DIR has no table for (src, tgt), ISO 639-3: not a CoVoST 2 direction, still packed, or not there."""
    locale = {code: languages.get(code).commonvoice[0] for code in (src, tgt)}  # CoVoST's code is the first
    name = f"covost_v2.{locale[src]}_{locale[tgt]}.tsv"
    if (locale[src], locale[tgt]) not in {(x, "en") for x in XX_EN} | {("en", x) for x in EN_XX}:
        if "eng" not in (src, tgt):
            return (f"{src}-{tgt} (no {name}: CoVoST 2 has no such direction, each of its "
                    f"{len(XX_EN) + len(EN_XX)} is into or out of English)")
        theirs = XX_EN if tgt == "eng" else EN_XX
        others = [c for c, lang in sorted(languages.LANGUAGES.items()) if lang.commonvoice[0] in theirs]
        what = f"{', '.join(others)} into English" if tgt == "eng" else f"English into {', '.join(others)}"
        return (f"{src}-{tgt} (no {name}: CoVoST 2 has no such direction, of the languages llm_srt/languages.py "
                f"knows it translates only {what})")
    archive = tsv_dir / f"{name}.tar.gz"
    if archive.is_file():
        return f"{src}-{tgt} ({name} is still packed: extract it first with {extract_command(archive)})"
    return f"{src}-{tgt} ({name} not found)"


def _check_unpacked(tsv_dir: Path, tables: dict[tuple[str, str], Table]) -> None:
    """Without --pairs (every table in TSV_DIR), stop in one line when a table of a direction the registry knows is
    still in its covost_v2.<src>_<tgt>.tsv.tar.gz, as the tables download: every such archive, how to extract them
    all (skipping those already extracted), and the --pairs that converts the unpacked ones only. Such a table was
    skipped without a word when another was unpacked (a run meant for every direction wrote one)."""
    by_locale, packed = languages.by_commonvoice_locale(), []
    for archive in sorted(tsv_dir.glob("covost_v2.*.tsv.tar.gz")):  # how the tables download
        m = TABLE_NAME.match(archive.name.removesuffix(".tar.gz"))
        pair = (by_locale.get(m["src"]), by_locale.get(m["tgt"])) if m and not m["split"] else (None, None)
        if None not in pair and pair not in tables:  # (a locale the registry lacks is skipped once extracted too)
            packed.append(archive)
    if not packed:
        return
    only = f"; or give --pairs {','.join(f'{s}-{t}' for s, t in sorted(tables))} to convert only the tables " \
           "unpacked" if tables else ""
    if len(packed) == 1:
        raise LLMSRTError(f"{packed[0]}: this table is still packed; extract it first: {extract_command(packed[0])}"
                          f"{only}")
    folder = shlex.quote(str(tsv_dir))
    loop = f'for a in {folder}/covost_v2.*.tsv.tar.gz; do [ -f "${{a%.tar.gz}}" ] || tar -xzf "$a" -C {folder}; done'
    raise LLMSRTError(f"{tsv_dir}: {len(packed)} tables are still packed ({first_three([a.name for a in packed])}); "
                      f"extract them first: {loop}{only}")


def find_tables(tsv_dir: Path, unknown: list[str] | None = None) -> dict[tuple[str, str], Table]:
    """(src, tgt) ISO 639-3 -> the direction's tables in `tsv_dir`, for the locales the registry knows; each table of
    another locale is skipped with a line on stderr, and named in `unknown` ("covost_v2.en_ar.tsv ('ar')")."""
    by_locale = languages.by_commonvoice_locale()
    tables: dict[tuple[str, str], Table] = {}
    for tsv in sorted(tsv_dir.glob("covost_v2.*.tsv")):
        m = TABLE_NAME.match(tsv.name)
        if not m:
            continue
        src, tgt = by_locale.get(m["src"]), by_locale.get(m["tgt"])
        if src is None or tgt is None:
            locale = m["src"] if src is None else m["tgt"]
            print(f"skipping {tsv.name}: locale {locale!r} is not in llm_srt/languages.py", file=sys.stderr)
            if unknown is not None:
                unknown.append(f"{tsv.name} ({locale!r})")
            continue
        table = tables.setdefault((src, tgt), Table(src, tgt, m["src"]))
        if m["split"]:
            table.split_files[m["split"]] = tsv
        else:
            table.release = tsv
    return tables


def _records(table: Table, locale_dir: Path, validated: dict, summary: Summary) -> list[Record]:
    """The table's rows that survive the filters, in file order: from the release table joined with validated.tsv,
    else from the per-split files."""
    has_validated = (locale_dir / "validated.tsv").is_file()
    # the release table, unless validated.tsv is missing and all three split files stand in for it (with some
    # only, the error named a split file missing "and no release table", beside the release table)
    if table.release is not None and (has_validated or len(table.split_files) < len(SPLITS)):
        if not has_validated:
            here = ", ".join(sorted(table.split_files))
            some = f", or give all three files get_covost_splits.py writes (only {here} here)" if here else ""
            raise LLMSRTError(f"{locale_dir / 'validated.tsv'}: missing; {table.release.name} holds path, "
                              "translation and split only, the transcripts come from Common Voice 4's validated.tsv "
                              f"(point --cv-dir at the Common Voice 4 locale folder{some})")
        if table.locale not in validated:
            validated[table.locale] = _validated(locale_dir / "validated.tsv")
        return list(_release_records(table, locale_dir, validated[table.locale], summary))
    missing = [s for s in SPLITS if s not in table.split_files]
    if missing:
        raise LLMSRTError(f"{table.split_files[next(iter(table.split_files))].parent}: covost_v2.{table.locale}_"
                          f"{languages.get(table.tgt).commonvoice[0]}.{missing[0]}.tsv missing (and no release "
                          "table); give the release table or all three files get_covost_splits.py writes")
    records = []
    for split in SPLITS:
        tsv = table.split_files[split]
        for lineno, rec in read_table(tsv, SPLIT_FILE_COLUMNS, ESCAPE, summary.drop):
            record = _record(table, locale_dir, tsv, lineno, rec, split, table_text(rec["sentence"]), summary)
            if record is not None:
                records.append(record)
    return records


def _validated(tsv: Path) -> dict[str, tuple[str, str] | str]:
    """validated.tsv's clips: path -> (sentence, client_id), or for a clip on a damaged line (`wrong_width`: a tab
    inside its sentence cut it short) its FILE:LINE and what is wrong, so the rows naming it are left out, counted."""
    joined: dict[str, tuple[str, str] | str] = {}
    for lineno, rec in read_table(tsv, VALIDATED_COLUMNS, ESCAPE):
        if rec["path"] and (wrong := wrong_width(rec)):
            joined.setdefault(rec["path"], f"{tsv}:{lineno}: {wrong}")
        elif rec["path"]:
            joined[rec["path"]] = (table_text(rec["sentence"]), (rec["client_id"] or "").strip())
    return joined


def _release_records(table: Table, locale_dir: Path, validated: dict[str, tuple[str, str] | str], summary: Summary):
    """The release table's rows joined with validated.tsv; a table none of whose clips is there is an error (another
    locale's folder, or another release's), not a run that writes empty manifests."""
    clips, found, missed = 0, 0, ""
    for lineno, rec in read_table(table.release, RELEASE_COLUMNS, ESCAPE, summary.drop):
        label = (rec["split"] or "").strip()
        if label not in SPLIT_OF:
            summary.drop(f"split {label!r} is none of {', '.join(SPLIT_OF)}", f"{table.release}:{lineno}")
            continue
        joined = validated.get(rec["path"])
        clips += bool(rec["path"])
        found += joined is not None
        if joined is None and rec["path"]:
            summary.drop("clip not in validated.tsv (CoVoST 2 needs Common Voice 4)", f"{table.release}:{lineno}")
            missed = rec["path"]
            continue
        if isinstance(joined, str):
            summary.drop(DAMAGED_SOURCE, f"{table.release}:{lineno} ({joined})")
            continue
        transcript = joined[0] if joined else ""
        record = _record(table, locale_dir, table.release, lineno, rec, SPLIT_OF[label], transcript, summary)
        if record is not None:
            yield record
    if clips and not found:
        held = next(iter(validated), None)
        raise LLMSRTError(f"{table.release}: none of its {clips:,} clips is in {locale_dir / 'validated.tsv'} (the "
                          f"table names e.g. {missed}, the folder holds e.g. {held or 'no clip'}); point --cv-dir at "
                          f"the Common Voice 4 '{table.locale}' folder")


def _record(table: Table, locale_dir: Path, tsv: Path, lineno: int, rec: dict, split: str, transcript: str,
            summary: Summary) -> Record | None:
    """The row as a Record, or None (counted in `summary`) where it gives no row at all. An empty or REMOVE
    translation is counted too, but the record stays, with translation "": the transcript still makes an ASR row."""
    where = f"{tsv}:{lineno}"
    translation = table_text(rec["translation"])
    if not rec["path"]:
        summary.drop("no clip (empty path)", where)
    elif not transcript:
        summary.drop("empty transcript (sentence)", where)
    else:
        if not translation or translation == PLACEHOLDER:
            summary.drop(NO_TRANSLATION, where)
            translation = ""
        return Record(where=where, audio=locale_dir / "clips" / rec["path"], transcript=transcript,
                      translation=translation, split=split, src=table.src, tgt=table.tgt, source=tsv.name)
    return None


def _locale_dirs(cv_dir: Path, locales: list[str]) -> dict[str, Path]:
    """Common Voice locale -> its folder: CV_DIR itself when it is a locale folder, else CV_DIR/<locale>."""
    if (cv_dir / "validated.tsv").is_file() or (cv_dir / "clips").is_dir():
        if len(locales) > 1:
            raise LLMSRTError(f"--cv-dir {cv_dir} is one Common Voice locale folder, but the tables translate from "
                              f"{', '.join(locales)}: pick one source with --pairs, or point --cv-dir at a folder "
                              f"holding {', '.join(l + '/' for l in locales)}")
        return {locales[0]: cv_dir}
    dirs = {locale: cv_dir / locale for locale in locales}
    for locale, folder in dirs.items():
        if not folder.is_dir():
            raise LLMSRTError(f"--cv-dir {cv_dir}: neither a Common Voice locale folder (validated.tsv, clips/) nor "
                              f"a folder holding {locale}/; point it at the Common Voice 4 '{locale}' folder")
    return dirs
