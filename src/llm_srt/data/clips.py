"""The clips a converter names: checked (missing, empty, undecodable), measured, and the bad ones counted.

Every converter (FLEURS, CoVoST 2, Common Voice) first reads and filters its tables (rows without a clip or a text are
left out and counted, and so is a clip listed again: `without_repeats`), then hands the clips of the rows that survived
to `check_clips`, which works in parallel (`workers` threads: libsndfile runs without the GIL) behind a progress bar
with an ETA. Every clip's header is read (~0.1 ms a clip: one no decoder opens is bad). A clip whose duration is already
known (Common Voice's `clip_durations.tsv` or `times.txt`) keeps it where its header agrees (a train clip whose header
disagrees is measured as a test clip is: it was written with the list's length, a 37 s clip as 1.9 s, which passed the
30 s window and training refused); the others, those listed with a duration of 0 (not measured), every FLEURS wav and
the clips of test and dev are measured from their header, and a clip the header shows
cut short is bad (load_audio refuses it: training skipped it, evaluation scored its rows as empty hypotheses). The clips
of test and dev in a compressed format or of float samples are decoded whole, as evaluation will (only that finds a FLAC
or MP3 missing its end, or a float WAV holding NaN); train's are not (hours on a large corpus; training skips one,
naming it). A measured length that differs from the listed one is used instead, with a note (`note_durations`). A bad
clip is skipped and reported (`Summary.lines()`, OUT/summary.json) unless `strict`, which stops at the first one with
its file:line. Real releases have them: hundreds of zero-byte clips in Common Voice 3/4. `write_manifests` writes the
result, and refuses a split all of whose clips are bad (a release not unpacked), writing that run's summary to
OUT/summary.failed.json and leaving an earlier run's manifests and summary.json as they were; so does a run the disk
stops (full, not writable, a folder in the way: every file is written before any takes its name), with one line naming
the file and the OS's reason. It moves aside (NAME.stale) what an earlier run left in OUT that this run would replace
with other bytes (another corpus's manifests, or another run's) or does not write (it would disagree with summary.json),
naming them in one line. The tables themselves, and the duration lists, are read by `tables`.
"""

import errno
import filecmp
import json
import os
import shlex
import stat
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import soundfile as sf
from tqdm import tqdm

from ..audio import SAMPLE_RATE, UNKNOWN_FRAMES, WINDOW_SECONDS, load_audio
from ..audio_headers import ogg_cut_short, sized_cut
from ..errors import AudioError, LLMSRTError, shown, special_kind
from ..paths import atomic_file, replace_all
from ..prompts import markup_in
from .manifest import CHARS_PER_SECOND, MIN_TEXT_LIMIT, Row, text_limit, training_refuses, write_manifest

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)  # header reads are I/O-bound: a few threads per core still help
CHUNK = 256  # clips per pool task (a future per clip costs more than a wav header read)
SHOWN = 5  # bad clips named in the printed summary (summary.json lists them all); table rows named per reason
SPLIT_ORDER = ("test", "dev", "train")  # a clip listed in several splits stays in the first: test never loses one
REPEATED = "clip listed again (its first listing is kept)"
MARKUP = "text holding a tag or special token (a tokenizer reads it as that token)"
TRAINING_SPLITS = ("train", "dev")  # read by `llm-srt train`, which takes no utterance longer than Whisper's window
DECODED_SPLITS = ("test", "dev")  # whose compressed clips are decoded whole (`decode`): test's are scored, dev's
#   decoded during training, and both are small (a 5 s MP3 decodes in ~3 ms, a FLAC in ~7, on one core)
SIZED_FORMATS = ("WAV", "WAVEX", "RF64", "AIFF", "AU", "W64")  # libsndfile's names of the formats whose header
#   gives their data's size in bytes: one cut short is found from it (audio_headers.sized_cut), never decoded to find it
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # sized, but their samples may be NaN, inf or far outside [-1, 1], which
#   load_audio refuses: decoded too (`decode`), where PCM holds none of those
SLACK_SECONDS, SLACK_SHARE = 0.05, 0.01  # a measured length within the larger of these of the listed one keeps it


@dataclass(frozen=True)
class BadClip:
    where: str  # the table line that names it (file:line)
    clip: str  # its path
    reason: str  # missing / empty / undecodable, in words


def extract_command(archive: Path) -> str:
    """The command that unpacks a release's .tar.gz beside itself (errors that find one still packed give it)."""
    return f"tar -xzf {shlex.quote(str(archive))} -C {shlex.quote(str(archive.parent))}"


def check_output_folder(out: Path, default_of: str | None = None) -> None:
    """Refuse an OUT that cannot become the output folder, before any table is read or clip checked (hours, for a
    large release): a file, a path below one, or a folder this user may not write in, or on a read-only file system
    (each was a traceback, at the end of the run). `default_of`: the setting OUT came from when no --out was given
    (`prepare mini`: LLM_SRT_CACHE), which the line then asks to change, not an --out the user never gave."""
    folder = Path(os.path.abspath(out))
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))  # the folder, or the one made in
    name = shown(str(out)) if default_of else f"--out {shown(str(out))}"
    other = f"set {default_of}=/a/writable/dir, or give --out DIR" if default_of else "choose another --out"
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies below {existing}, which is a file"
        todo = other if default_of else "give a folder (made if missing)"
        raise LLMSRTError(f"{name}: {where}, not a folder; {todo}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(existing) else "permission denied"
        fix = "" if why == "read-only file system" else "make it writable, or "
        raise LLMSRTError(f"{name}: cannot write in {shown(str(existing))} ({why}); {fix}{other}")


def _read_only(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (EROFS), which no permission change makes writable."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs: Windows)
        return False



def counted(n: int, noun: str) -> str:
    """"1 row", "0 rows", "2 rows": `n` and `noun`, plural unless n is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def first_three(names: list[str]) -> str:
    """'a, b, c and N more': the first three of `names` for a one-line message."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


STALE = ".stale"  # an earlier run's file in OUT that this run replaces or does not write: moved to NAME.stale
#   (NAME.stale.1, .2, ... where that is taken)
FAILED = "summary.failed.json"  # the summary of a run that stopped (summary.json describes the manifests beside it)


@dataclass
class Summary:
    """What a converter did: rows written, rows dropped by its filters, clips skipped."""

    out: Path  # the output folder
    written: dict[str, int] = field(default_factory=dict)  # split -> rows written
    dropped: Counter = field(default_factory=Counter)  # reason -> table rows left out before any clip was read
    dropped_at: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first SHOWN of them (file:line)
    bad_clips: list[BadClip] = field(default_factory=list)  # skipped clips, in table order
    rows_without_clip: int = 0  # table rows left out because their clip is bad
    durations_from: str = ""  # where durations came from (a file name, "headers", ...)
    notes: list[str] = field(default_factory=list)  # one line each: warnings, stale manifests moved aside
    listed_at: Mapping[Path, str] = field(default_factory=dict, repr=False)  # clip -> its table line (note_durations
    #   keeps check_clips' map): how write_manifests names a clip it leaves out; not written to summary.json

    def drop(self, reason: str, where: str) -> None:
        """Count a table row left out for `reason`; the first SHOWN of each reason keep their `where` (file:line)."""
        self.dropped[reason] += 1
        at = self.dropped_at.setdefault(reason, [])
        if len(at) < SHOWN:
            at.append(where)

    def lines(self) -> list[str]:
        lines = [f"{self.out / (split + '.jsonl')}: {counted(n, 'row')}" for split, n in self.written.items()]
        lines += self.notes
        for reason, n in sorted(self.dropped.items()):
            lines.append(f"left out {counted(n, 'table row')}: {reason}; the first {len(self.dropped_at[reason])}:")
            lines += [f"  {where}" for where in self.dropped_at[reason]]
        if self.bad_clips:
            lines.append(f"skipped {counted(len(self.bad_clips), 'bad clip')} "
                         f"({counted(self.rows_without_clip, 'table row')}); the first "
                         f"{min(SHOWN, len(self.bad_clips))} (all in {self.out / 'summary.json'}):")
            lines += [f"  {b.where}: {b.reason}" for b in self.bad_clips[:SHOWN]]
        if self.durations_from:
            lines.append(f"durations from {self.durations_from}")
        return lines

    def write(self, name: str = "summary.json", staged: list[tuple[Path, Path]] | None = None) -> Path:
        """OUT/summary.json (or OUT/`name`): the counts and every skipped clip (`staged`: as atomic_file's)."""
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, staged=staged) as f:
            json.dump({"written": self.written, "dropped": dict(self.dropped), "dropped_at": self.dropped_at,
                       "durations_from": self.durations_from, "rows_without_clip": self.rows_without_clip,
                       "notes": self.notes,
                       "bad_clips": [{"where": b.where, "clip": b.clip, "reason": b.reason} for b in self.bad_clips]},
                      f, ensure_ascii=False, indent=1)
            f.write("\n")
        return path


T = TypeVar("T")


def without_repeats(by_split: Mapping[str, list[T]], clip: Callable[[T], Hashable], summary: Summary,
                    entry: Callable[[T], Hashable] | None = None) -> dict[str, list[T]]:
    """`by_split` (split -> items with a `where`, in table order) with each clip in one split only, the first of
    SPLIT_ORDER that lists it, and each entry there once (default: the entry is the clip; CoVoST's is the clip and
    its target language). The items left out are counted in `summary`, naming where the kept one is listed."""
    entry = entry or clip
    home: dict[Hashable, tuple[str, str]] = {}  # clip -> (its split, where it is first listed)
    first: dict[Hashable, str] = {}  # entry -> where it is first listed
    kept: dict[str, list[T]] = {}
    rank = {split: i for i, split in enumerate(SPLIT_ORDER)}
    for split in sorted(by_split, key=lambda s: rank.get(s, len(rank))):
        kept[split] = []
        for item in by_split[split]:
            split_of, first_at = home.setdefault(clip(item), (split, item.where))
            if split_of == split:
                first_at = first.setdefault(entry(item), item.where)
            if first_at == item.where:  # each table line has its own `where`
                kept[split].append(item)
            else:
                summary.drop(REPEATED, f"{item.where} (first at {first_at})")
    return {split: kept[split] for split in by_split}


def write_manifests(summary: Summary, rows: Mapping[str, list[Row]], clips: Mapping[str, Collection[Path]],
                    lines: Mapping[str, str] | None = None) -> None:
    """Write OUT/<split>.jsonl for each split of `rows`, then OUT/summary.json. `lines`: a row's id -> the table line
    (file:line) it comes from, where a clip's rows come from several lines (CoVoST: one per target table); by default a
    row's line is its clip's (`Summary.listed_at`). Rows left out are named by their line, counted once per line. A
    split whose table rows name clips (`clips`) none of which is usable stops the run with LLMSRTError before any
    manifest is written: a release whose audio is not unpacked must not look converted. That run's summary goes to
    OUT/summary.failed.json, listing them; an earlier run's manifests and summary.json stay as they were (the failed
    run's summary.json, beside the earlier run's manifests, described other files than those beside it). A clip of the
    train or dev split longer than Whisper's 30 s window is left out and counted (training refuses such a row: a
    manifest that held one stopped the stage before step 1), and so is a train or dev row whose text is longer than
    its clip can hold (`_texts_fit`); test keeps its clips and rows. An earlier run's files in OUT that
    this run's would replace or disagree with are moved aside (`_set_aside`), and the summary says so. An OSError while
    writing or renaming (a full disk, a folder named test.jsonl) leaves OUT as it was but for OUT/summary.failed.json,
    and raises LLMSRTError naming the file."""
    def line_of(row: Row) -> str:
        return (lines or {}).get(row.id) or summary.listed_at.get(Path(row.audio), "")

    rows = {split: _within_window(summary, split, split_rows, line_of) if split in TRAINING_SPLITS else split_rows
            for split, split_rows in rows.items()}
    rows = {split: _texts_fit(summary, split, split_rows, line_of) if split in TRAINING_SPLITS else split_rows
            for split, split_rows in rows.items()}
    rows = {split: _without_markup(summary, split_rows, line_of) for split, split_rows in rows.items()}
    for split, named in clips.items():
        bad = [b for b in summary.bad_clips if Path(b.clip) in named] if named and not rows[split] else []
        if bad and len({b.clip for b in bad}) == len(named):
            failed = summary.write(FAILED)
            folder = os.path.commonpath([str(Path(b.clip).parent) for b in bad])
            raise LLMSRTError(f"{folder}: the {split} split has no usable clip ({len(named)} listed, the first at "
                              f"{bad[0].where}: {bad[0].reason}); is the audio unpacked there? All are listed in "
                              f"{failed} (nothing else in {summary.out} was changed)")
    # Every file is written to its temporary file first and renamed only once all are written, summary.json last:
    # a full disk at test.jsonl left train.jsonl and dev.jsonl of the new run beside the earlier run's summary.json
    notes = list(summary.notes)
    staged: list[tuple[Path, Path]] = []  # (temporary file, the name it takes)
    moves: list[tuple[Path, Path]] = []  # the renames, in order: the earlier files aside, the manifests, summary.json
    target: Path | None = summary.out  # the file being written, named by the error (None: replace_all names it)
    try:
        for split, split_rows in rows.items():
            target = summary.out / f"{split}.jsonl"
            summary.written[split] = write_manifest(target, split_rows, staged)
        moves += _set_aside(summary, rows, staged) + staged
        target = summary.out / "summary.json"
        summary.write(staged=staged)
        moves.append(staged[-1])
        target = None
        replace_all(moves)
    except OSError as e:
        summary.written, summary.notes = {}, notes  # the summary of a run that wrote and moved nothing
        raise _not_written(summary, target or Path(e.filename or summary.out), e) from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)  # renamed already, or of a run that stopped
    (summary.out / FAILED).unlink(missing_ok=True)  # an earlier failed run's: this run's summary.json replaces it


def _set_aside(summary: Summary, rows: Mapping[str, list[Row]], staged: list[tuple[Path, Path]]
               ) -> list[tuple[Path, Path]]:
    """The renames that move aside, to NAME.stale, what an earlier prepare left in OUT that this run would replace or
    leave disagreeing with summary.json, said in one line of the summary's notes (an earlier NAME.stale is kept:
    `aside_name`): a manifest this run writes (`staged`:
    atomic_file's) whose bytes differ from this run's, another corpus's (`prepare fleurs` into Common Voice's OUT
    replaced hours of conversion without a word) or another run's (other languages, other data), with the
    summary.json that describes it; and a <split>.jsonl of SPLIT_ORDER this run does not write (`--splits test` into a
    full conversion must not lose train). A rerun of the same command on the same data moves nothing: its files are
    the same, byte for byte. Only the names this tool writes are looked at: nothing else in OUT is touched."""
    corpus = next((row.corpus for split_rows in rows.values() for row in split_rows), "")
    why: dict[str, list[Path]] = {}  # what the line says of them -> the files
    for tmp, path in staged:
        if path.is_file() and not filecmp.cmp(tmp, path, shallow=False):
            earlier = _corpus_of(path)
            why.setdefault(f"{earlier}'s: this run writes {corpus} manifests there" if earlier and earlier != corpus
                           else "an earlier run's, with other rows than this run's", []).append(path)
    if why and (summary.out / "summary.json").is_file():
        next(iter(why.values())).append(summary.out / "summary.json")  # (it describes the manifests moved aside)
    unwritten = [summary.out / f"{split}.jsonl" for split in SPLIT_ORDER if split not in rows]
    if unwritten := [path for path in unwritten if path.is_file()]:
        why[f"this run did not write {'it' if len(unwritten) == 1 else 'them'}"] = unwritten
    moves = [(path, aside_name(path)) for paths in why.values() for path in paths]
    if moves:
        aside = dict(moves)
        summary.notes.append("moved an earlier prepare's files aside: " + "; ".join(
            ", ".join(f"{path.name} to {aside[path].name}" for path in paths) + f" ({reason})"
            for reason, paths in why.items()) + "; rename them back if still wanted, or keep corpora in separate "
            "--out folders")
    return moves


def aside_name(path: Path) -> Path:
    """Where `path` is moved aside: NAME.stale, or where an earlier run's file has that name, the first free of
    NAME.stale.1, NAME.stale.2, ... (renamed onto NAME.stale, a third run into one OUT lost the first one's files)."""
    aside, n = path.with_name(path.name + STALE), 0
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"{path.name}{STALE}.{n}")
    return aside


def _corpus_of(manifest: Path) -> str:
    """The `corpus` of a manifest's first row ("" where it has none, or is no manifest)."""
    try:
        with manifest.open(encoding="utf-8") as f:
            record = json.loads(next((line for line in f if line.strip()), "{}"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return ""
    return str(record.get("corpus") or "") if isinstance(record, dict) else ""


def _not_written(summary: Summary, path: Path, e: OSError) -> LLMSRTError:
    """The one line for a run that could not write `path` (replace_all has undone its renames): the OS's reason and
    what to do; its summary goes to OUT/summary.failed.json, as a run that stops does, where the disk takes it."""
    try:
        failed = f"this run's summary is in {summary.write(FAILED)}; nothing else"
    except OSError:
        failed = "nothing"
    todo = {errno.ENOSPC: "free space there", errno.EDQUOT: "free space there (your disk quota is full)",
            errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable",
            errno.EISDIR: "move the folder of that name aside", errno.ENOTDIR: "move the file in the way aside",
            errno.EEXIST: "move the file in the way aside"}.get(e.errno, "check the disk")
    return LLMSRTError(f"{shown(str(path))}: cannot write ({e.strerror or e}); {todo}, or choose another --out "
                       f"({failed} in {summary.out} was changed)")


def _without_markup(summary: Summary, rows: list[Row], line_of: Callable[[Row], str]) -> list[Row]:
    """The rows whose transcript and translation hold no tag or special token (`<|deu|>`, `</s>`): read_manifest
    refuses such a row (a tokenizer reads it as its token), so a converted corpus holding one could not train. Those
    left out are counted once per table line (`line_of`; the row's id where it has none), named by it: they were
    named by row id, and each manifest row (a clip's ASR row and every translation row) counted as a table row."""
    kept, dropped = [], {}
    for row in rows:
        found = markup_in(row.transcript) or markup_in(row.translation)
        if found:
            dropped.setdefault(line_of(row) or row.id, found)
        else:
            kept.append(row)
    for where, found in dropped.items():
        summary.drop(MARKUP, f"{where} ({found!r})")
    return kept


def _within_window(summary: Summary, split: str, rows: list[Row], line_of: Callable[[Row], str]) -> list[Row]:
    """`rows` without those of clips longer than Whisper's window, each table line listing such a clip (`line_of`:
    CoVoST lists a clip once per target table) counted in `summary` as one table row, named with the manifest rows
    it loses (a clip's ASR row and its translation rows): it was named by its audio alone, so a user could not find
    the line, nor tell that a dropped clip took several rows with it."""
    long = {row.audio: row.duration for row in rows if row.duration > WINDOW_SECONDS}
    lost = Counter((row.audio, line_of(row)) for row in rows if row.audio in long)
    for (audio, line), n in lost.items():
        summary.drop(f"clip longer than the {WINDOW_SECONDS} s a training utterance may last (Whisper's window): left "
                     f"out of {split}", (f"{line} " if line else "") + f"(its {n} manifest rows): {audio} "
                     f"({long[audio]:.1f} s)")
    return [row for row in rows if row.audio not in long] if long else rows


def _texts_fit(summary: Summary, split: str, rows: list[Row], line_of: Callable[[Row], str]) -> list[Row]:
    """`rows` without those whose transcript or translation `llm-srt train` refuses as longer than the clip can hold
    (manifest.training_refuses, the rule `prepare check` holds train and dev rows to: more than max(500, 60 x seconds)
    characters): a 749-character sentence on a 1.9 s clip was written, and `prepare check` refused the manifest. Those
    left out are counted once per table line (`line_of`; the row's id where it has none), named by it."""
    kept, dropped = [], {}
    for row in rows:
        if training_refuses(row, WINDOW_SECONDS) is None:  # (rows over the window are gone: `_within_window`)
            kept.append(row)
            continue
        key, text = max((("transcript", row.transcript), ("translation", row.translation)), key=lambda kt: len(kt[1]))
        dropped.setdefault(line_of(row) or row.id, f"{row.id}: its {key} has {len(text):,} characters, "
                           f"{row.duration:g} s hold at most {text_limit(row.duration):,}")
    for where, detail in dropped.items():
        summary.drop(f"transcript or translation longer than its clip can hold (more than max({MIN_TEXT_LIMIT}, "
                     f"{CHARS_PER_SECOND} x seconds) characters: `llm-srt train` refuses it): left out of {split}",
                     f"{where} ({detail})")
    return kept


def check_clips(clips: Mapping[Path, str], known: Mapping[Path, float] | None = None, workers: int = DEFAULT_WORKERS,
                strict: bool = False, read_all_headers: bool = False, desc: str = "checking clips",
                decode: Collection[Path] = ()) -> tuple[dict[Path, float], list[BadClip]]:
    """Check and measure `clips` (path -> the table line naming it, in table order).

    Returns (seconds per good clip, the bad ones in table order). `known`: clip -> seconds from the release's metadata
    (see tables.by_name); those clips are checked to exist, be non-empty and have a header libsndfile reads, and keep
    that length where the header's agrees, unless `read_all_headers` or `decode` names them (a clip listed with a
    duration of 0, which the release could not measure, is measured like an unlisted one; one whose header's length
    disagrees is checked and measured as one of `decode`). `decode`: the clips (of DECODED_SPLITS) decoded whole where a
    header cannot tell whether they are cut short (see _check). With `strict` the first bad clip in table order raises
    LLMSRTError naming its line.
    """
    known = known or {}
    decode = frozenset(decode)
    paths = list(clips)
    durations: dict[Path, float] = {}
    problems: dict[Path, str] = {}
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(paths), desc=desc, unit="clip", dynamic_ncols=True, disable=not paths) as bar:
        futures = [pool.submit(_check_chunk, chunk, known, read_all_headers, decode) for chunk in chunks]
        try:
            for fut in futures:  # in table order, so --strict names the first bad clip of the tables
                results = fut.result()
                bar.update(len(results))
                for path, seconds, reason in results:
                    if reason is None:
                        durations[path] = seconds
                    elif strict:
                        raise LLMSRTError(f"{clips[path]}: clip {shown(str(path))} {reason} (without --strict bad "
                                          "clips are skipped and counted)")
                    else:
                        problems[path] = reason
        except BaseException:  # --strict's stop, Ctrl-C: leaving the pool waited for every queued chunk (an hour
            pool.shutdown(wait=False, cancel_futures=True)  # on a big corpus), and a second Ctrl-C hung again
            raise
    bad = [BadClip(clips[p], str(p), f"clip {shown(str(p))} {problems[p]}") for p in paths if p in problems]
    return durations, bad


def note_durations(summary: Summary, clips: Mapping[Path, str], known: Mapping[Path, float],
                   durations: Mapping[Path, float]) -> None:
    """Count in `summary`'s notes the clips whose measured length (check_clips' `durations`) replaced the one their
    table or duration list gives (`known`), naming the first by its table line, with both lengths. Keeps `clips`
    (clip -> table line) in the summary, for the clips write_manifests leaves out."""
    summary.listed_at = clips
    other = [p for p in clips if p in durations and known.get(p, 0) > 0 and durations[p] != known[p]]
    if other:
        p = other[0]
        summary.notes.append(f"the measured length of {len(other)} clip(s) is used where their table or duration list "
                             f"gives another (by more than {SLACK_SECONDS} s and {SLACK_SHARE:.0%}); the first: "
                             f"{clips[p]}: {known[p]:.2f} s listed, {durations[p]:.2f} s in {p}")



def _check_chunk(paths: Iterable[Path], known: Mapping[Path, float], read_header: bool,
                 decode: Collection[Path] = frozenset()):
    return [_check(path, known.get(path), read_header, path in decode) for path in paths]


def _check(path: Path, known: float | None, read_header: bool, decode: bool = False
           ) -> tuple[Path, float, str | None]:
    """(path, seconds, None) for a usable clip, (path, 0, what is wrong) otherwise. The header is read (a clip it
    cannot be read from is bad); where `known` gives the length, the header's agrees with it (or gives none) and
    neither `read_header` nor `decode` asks, that is all: the clip keeps its listed length, its end is not checked; one
    whose header's length disagrees is checked as with `decode`. A clip cut short is bad, as load_audio
    refuses it (its transcript is the whole clip's): a WAV, AIFF, AU or W64 whose header claims more than the file
    holds, and an Ogg without its stream's last page, are found from the header and the last page alone; a FLAC or MP3
    missing its end only by decoding it, which `decode` does, as load_audio will (refusing what load_audio refuses);
    `decode` also decodes a float WAV (AIFF, AU, W64), whose NaN, inf or integer-scaled samples load_audio refuses.
    Without `decode` such a clip is kept with its header's length, at least the decoded one, and training skips it,
    naming it. A measured length that differs from `known` by more than SLACK_SECONDS and SLACK_SHARE replaces it."""
    try:
        mode, size = (st := path.stat()).st_mode, st.st_size
    except FileNotFoundError:
        return path, 0.0, "is missing"
    except OSError as e:
        return path, 0.0, f"cannot be read ({e.strerror or e})"
    except ValueError:  # a NUL byte in the name, which no file has: it stopped the whole conversion with a traceback
        return path, 0.0, "is no file name: it holds a NUL byte (a damaged table line)"
    if stat.S_ISDIR(mode):  # in load_audio's words: it was "cannot be decoded (Format not recognised)", or kept with
        return path, 0.0, "is a directory, not a file"  # its listed length
    if not stat.S_ISREG(mode):  # a FIFO was "is empty (0 bytes)"; never opened, which would wait for a writer
        return path, 0.0, f"is {special_kind(mode)}, not a regular file"
    if size == 0:
        return path, 0.0, "is empty (0 bytes)"
    try:  # always: ~0.1 ms a clip (5 s MP3s, 1,000 read in 0.10 s on one core, warm cache), while a clip no decoder
        info = sf.info(str(path))  # opens, kept with its listed length, was written as a usable row
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        reason = getattr(e, "error_string", None) or str(e).splitlines()[0]
        if "does not exist" in reason:  # libsndfile's words for an mp3 it cannot parse; the stat above found it
            reason = "not a decodable audio file: damaged, or not wav/flac/mp3/ogg"
        unmeasured = ", and the release's duration list gives 0" if known is not None and known <= 0 else ""
        return path, 0.0, f"cannot be decoded ({reason.rstrip('.')}){unmeasured}"
    if known is not None and known > 0 and not read_header and not decode:
        if not 0 < info.frames < UNKNOWN_FRAMES or info.samplerate <= 0 or _agrees(known, info.duration):
            return path, known, None
        decode = True  # the header's length is not the list's (a 37 s train clip listed as 1.9 s was written so, and
        #   training refused it): measured as a test clip is, decoded where the header's is an estimate (an MP3 without
        #   a Xing/Info frame: a VBR one's may be twice its length), and that length used
    if info.frames >= UNKNOWN_FRAMES:  # no length in the header (a stream written to a pipe, e.g. a FLAC whose
        return _decoded_length(path, known)  # total-samples field is 0): SF_COUNT_MAX frames would read as 5.8e14 s
    if info.frames <= 0 and info.samplerate > 0:  # a recorder killed before it wrote the sizes (of a WAV, or the
        try:  # WAVEX 24-bit and multichannel ones write): load_audio reads the samples after the header (rare: decoded
            return path, len(load_audio(path)) / SAMPLE_RATE, None  # whole to measure them)
        except AudioError:
            pass
    if info.frames <= 0 or info.samplerate <= 0:
        return path, 0.0, "holds no audio (0 frames)"
    if cut := _cut_short(path, info.duration):
        return path, 0.0, cut
    seconds = info.duration
    if decode and (info.format not in SIZED_FORMATS or info.subtype in FLOAT_SUBTYPES):
        try:
            seconds = len(load_audio(path)) / SAMPLE_RATE
        except AudioError as e:
            return path, 0.0, _not_loaded(path, e)
    return path, _duration(known, seconds), None


def _cut_short(path: Path, seconds: float) -> str | None:
    """Why a clip whose header gives `seconds` is cut short, found without decoding it (load_audio's own tests):
    a WAV, AIFF, AU or W64 whose header claims more sound data than follows it (libsndfile's length is what it
    holds), an Ogg that ends before its stream's last page (libsndfile's length is up to its last page). None else."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    try:
        if found := sized_cut(fd):
            held, claimed = found
            return (f"is cut short: only the first {seconds:.1f} s of {seconds * claimed / held:.1f} s decode (it ends "
                    "before the length its header gives)")
        if ogg_cut_short(fd):
            return f"is cut short: only the first {seconds:.1f} s decode (it ends before its Ogg stream's last page)"
        return None
    finally:
        os.close(fd)


def _not_loaded(path: Path, e: AudioError) -> str:
    """_check's reason for a clip load_audio refuses, in load_audio's words (without the path it starts with and the
    advice it ends with): "is cut short: only the first 1.0 s of 2.0 s decode (...)" for one that decodes in part."""
    detail = str(e).removeprefix(shown(str(path)) + ": ")
    detail, damaged, _ = detail.partition(": the file is damaged or cut short")
    return f"is cut short: {detail}" if damaged and detail.startswith("only the first") else f"does not load ({detail})"


def _duration(known: float | None, measured: float) -> float:
    """`known` (a table's or duration list's length) where `measured` (the header's, or as decoded) agrees with it
    within the larger of SLACK_SECONDS and SLACK_SHARE; the measured one otherwise, and where none is known: the file
    is what training loads (a 40 s wav its table called 2 s passed the 30 s window filter, and training refused it)."""
    return known if known is not None and _agrees(known, measured) else measured


def _agrees(known: float, measured: float) -> bool:
    """Whether `measured` is within the larger of SLACK_SECONDS and SLACK_SHARE of a listed length `known` (> 0)."""
    return known > 0 and abs(measured - known) <= max(SLACK_SECONDS, SLACK_SHARE * known)


def _decoded_length(path: Path, known: float | None) -> tuple[Path, float, str | None]:
    """_check's answer for a clip whose header gives no length: its length as decoded (read whole, as the unsized
    WAV above: rare), or bad with load_audio's reason where it does not decode (train/dev dropped such a FLAC as
    "longer than 30 s", its SF_COUNT_MAX frames read as a length)."""
    try:
        seconds = len(load_audio(path)) / SAMPLE_RATE
    except AudioError as e:
        return path, 0.0, f"could not be measured ({str(e).removeprefix(shown(str(path)) + ': ')})"
    return path, _duration(known, seconds), None


