"""The rows an evaluation has decoded, kept as they finish, so that a killed run goes on where it stopped.

`llm-srt evaluate` appends each system's finished rows to OUT/partial/<system>.<kind>.rank<R>.jsonl (kind `hyps`,
or `mt` for --with-mt's text MT; R the torchrun rank). Its first line holds the settings that make the outputs what
they are: the model folder's weights and configuration (by content) and its base Whisper and LLM folders, the task, the
decoding options, the device type, the dtype, and the layout (batch size, rows a group, number of processes), since in
bfloat16 or int8 a row's output may depend on its neighbours. Every other line is one row: a digest of its manifest row
(by three forms of its audio path: as the manifest gives it, from the manifest's folder; absolute; as read), its
UtteranceResult, and for a row whose audio file was missing that it was. The caller runs rows in fixed
groups, each row written as its batch ends (a stop keeps the rows decoded before it), and runs again only the rows of
a group not kept, so a run that goes on forms the batches an uninterrupted run forms. A journal of other settings is a
one-line error naming the difference.

    journal = Journal.open(out / "partial", "srt.hyps", rank=0, size=1, settings={...}, base=manifest.parent)
    for group in groups:
        todo = [group[k] for k in journal.left(group)]
        for row, result in zip(todo, decode(todo)):
            journal.append(row, result)  # one line, written and closed: a kill loses at most this row
    results = journal.results(rows)
"""

from __future__ import annotations

import glob
import hashlib
from collections import Counter
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import __version__
from ..data.manifest import Row, row_to_dict
from ..errors import LLMSRTError, shown
from ..infer import retryable
from ..paths import checkpoint_relative, resolve_model
from .report import UtteranceResult

VERSION = 1
MODEL_FILES = ("*.json", "*.safetensors")  # what a model folder's loader reads (config, weights), known by content
SHOWN_CHARS = 60  # of each side of a difference in an error message
MISSING = "missing"  # `audio_state` of an audio file that is not there


def model_files(model: str) -> dict | str:
    """What identifies a model: a model folder's config and weight files by sha256, and under "base" the frozen
    Whisper and LLM folders its config.json names (an LLM replaced in place is another model); another folder (a
    baseline's Whisper or LLM, a model's base) by its files' sizes and modification times; a baseline name
    ('whisper', 'cascade') itself."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return _stats(folder)
    files: dict = {"base": _base_folders(folder / "config.json")}
    for f in sorted({f for pattern in MODEL_FILES for f in folder.glob(pattern) if f.is_file()}):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        files[f.name] = digest.hexdigest()
    return files


def _stats(folder: Path) -> dict[str, str]:
    """A folder's files by size and modification time (a base model of gigabytes is not read for this)."""
    return {f.name: f"{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir()) if f.is_file()}


def _base(value: str) -> dict[str, str] | str:
    """A baseline's Whisper or LLM folder (--whisper / --llm), or the one a model folder's is re-pointed at
    (--encoder / --model-llm), by `_stats`: a Hugging Face folder holds a config.json and weights as a trained model
    folder does, and `model_files` read all of Qwen2.5-32B's 64 GB on every rank at each start. A name stays a name."""
    return _stats(Path(value)) if Path(value).is_dir() else value


def _base_folders(config: Path) -> dict[str, object]:
    """The encoder and LLM folders a model's config.json names ("embedded": the converted embedded default's), each
    by `_stats`; a name that is no folder here stays as it is (loading the model will say what is missing)."""
    try:
        named = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    bases = {}
    for kind in ("encoder", "llm"):
        value = named.get(kind) if isinstance(named, dict) else None
        if not isinstance(value, str):
            continue
        value = checkpoint_relative(config.parent, value)
        try:
            folder = Path(resolve_model(value, kind))
        except LLMSRTError:
            folder = Path(value)
        bases[kind] = _stats(folder) if folder.is_dir() else value
    return bases


def settings(model: str, whisper: str | None, llm: str | None, decoding: dict, batch_size: int, group_rows: int,
             world_size: int) -> dict:
    """A journal's settings: everything but the rows that makes its outputs what they are (as JSON reads back)."""
    return json.loads(json.dumps({
        "llm_srt": __version__, "model": model_files(model),
        "whisper": whisper and _base(str(whisper)), "llm": llm and _base(str(llm)),
        "decoding": decoding,
        "layout": {"batch_size": batch_size, "group_rows": group_rows, "world_size": world_size}}, default=str))


def row_digest(row: Row, base: str | Path | None = None, audio: str | None = None) -> str:
    """A digest of everything a manifest row says (audio path, languages, references): an edited row is new. `base`:
    the manifest's folder, from which its audio path is taken as the manifest gives it (`row_to_dict`), not as read
    (joined to the folder); `audio`: the path to digest instead."""
    said = asdict(row)
    if audio is not None:
        said["audio"] = audio
    elif base is not None:
        said["audio"] = row_to_dict(row, Path(os.path.abspath(base)))["audio"]
    text = json.dumps(said, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def row_digests(row: Row, base: str | Path | None) -> tuple[str, str, str]:
    """A row's digests (`row_digest`) by its audio path in three forms, any of which a journal keeps it by: from the
    manifest's folder (`base`; the same manifest given by a relative or an absolute path, or copied with its audio to
    a requeued job's node-local scratch: it kept none of a killed run's rows), absolute (a manifest of absolute audio
    paths copied without its audio, or reached through a linked folder), and as read (the form journals written
    before 2026-12-07 hold)."""
    return (row_digest(row, base), row_digest(row, audio=os.path.abspath(row.audio)), row_digest(row))


def audio_state(path: str) -> str:
    """An audio file's state where a row failed before any batch: MISSING where it is not there (the one failure a
    journal keeps: it fails the same way until the file appears), "unreachable: ERRNO" where it cannot be looked at
    (a network disk's passing error), else its size, modification time and mode."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError as e:  # out of reach (a network disk's passing error): not kept, run again
        return f"unreachable: {e.errno}"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode:o}"


def differences(old: object, new: object, key: str = "") -> list[str]:
    """'key: old -> new' for every leaf where two settings differ (nested dicts as dotted keys), each side cut to
    the part around its first difference from the other."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    if old == new:
        return []
    a, b = json.dumps(old, ensure_ascii=False), json.dumps(new, ensure_ascii=False)
    start = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, start - SHOWN_CHARS // 3)
    cut = [("..." if start else "") + s[start:start + SHOWN_CHARS] + ("..." if len(s) > start + SHOWN_CHARS else "")
           for s in (a, b)]
    return [f"{key or 'settings'}: {shown(cut[0])} -> {shown(cut[1])}"]


@dataclass(frozen=True)
class Kept:
    """What an evaluation that stopped before its end (Ctrl-C, SIGTERM, another rank gone) keeps, on the exception
    it stops with (`error.kept`), for cli's last line (`stopped_advice`), as training's `Kept`: it said "the rows
    decoded so far are kept" where a stop within a group had kept none of them."""
    rows: int  # the rows of this run this rank's journals keep (the same command does not decode them again)
    folder: Path  # where (OUT/partial)
    rank: int | None = None  # under torchrun, whose journals (each rank keeps its own)

    def said(self) -> str:
        """What is kept, in words: "N decoded rows are kept in OUT/partial" ("rank R keeps N decoded rows in ..."
        under torchrun), or "no decoded row is kept" ("rank R keeps no decoded row"): after a stop, and after a
        journal's write that failed (`Unwritten`), which said "the rows written before are kept" where none was."""
        rows = f"{self.rows} decoded row{'s' if self.rows > 1 else ''}" if self.rows else "no decoded row"
        if self.rank is not None:
            return f"rank {self.rank} keeps {rows}" + (f" in {self.folder}" if self.rows else "")
        return f"{rows} {'are' if self.rows > 1 else 'is'} kept" + (f" in {self.folder}" if self.rows else "")

    def again(self) -> str:
        """What the same command does then."""
        return "run the same command again" + (" to go on from them" if self.rows else "")


class Unwritten(LLMSRTError):
    """A journal's write that failed (a full disk, a read-only one), in one line naming the file; `saying(kept)`
    says what this rank's journals keep (`Kept`: the rows of the batches written whole, counted as a stop counts
    them), which a batch cut short by the full disk is not part of."""

    def __init__(self, path: Path | str, reason: str | None = None, kept: Kept | None = None):
        if reason is None:  # made from its message alone: a pickle's round trip, another rank's (`ranks.from_rank0`)
            super().__init__(str(path))
            return
        self.path, self.reason = path, reason
        then = (f"{kept.said()}: make room (or make it writable) and {kept.again()}" if kept is not None else
                "make room (or make it writable) and run the same command again")
        super().__init__(f"{shown(str(path))}: cannot write a decoded row there ({reason}); {then}")

    def saying(self, kept: Kept) -> Unwritten:
        return Unwritten(self.path, self.reason, kept)


class Journal:
    """One system's decoded rows of one kind for one rank, in OUT/partial (see the module's docstring)."""

    def __init__(self, path: Path, rows: dict[str, UtteranceResult], header: str | None = None,
                 groups: dict[str, str | None] | None = None, base: str | Path | None = None,
                 unread: dict[str, str] | None = None):
        self.path = path  # this rank's file, appended to
        self.rows = rows  # row digest -> its result
        self.groups = groups if groups is not None else {}  # row digest -> the digest of the group it was decoded
        #   in (`group_digests`; None: a line written before groups were kept)
        self.header = header  # the first line, written (over what is there) with the first row; None: in the file
        self.base = base  # the manifest's folder (`row_digest`)
        self.unread = unread if unread is not None else {}  # row digest -> its audio file's `audio_state` when the
        #   row failed before any batch

    @classmethod
    def open(cls, folder: Path, stem: str, rank: int, size: int, settings: dict, restart: bool = False,
             base: str | Path | None = None) -> Journal:
        """This rank's journal of `stem` (e.g. 'srt.hyps'): the rows an earlier run of the same settings kept (none
        with `restart`: its file starts anew, and rank 0 removes those of ranks this run has not), ready to append
        to; a new file is written with its first row, so a run that stops before decoding (another rank's journal
        of other settings) leaves none. `base`: the manifest's folder (`row_digest`). Other settings: LLMSRTError
        naming the file and the difference."""
        header = json.dumps({"journal": VERSION, "settings": settings}) + "\n"
        own = folder / f"{stem}.rank{rank}.jsonl"
        if restart:
            folder.mkdir(parents=True, exist_ok=True)
            if rank == 0:
                for f in glob.glob(str(folder / f"{glob.escape(stem)}.rank*.jsonl")):
                    if _rank_of(Path(f), stem) not in range(size):
                        Path(f).unlink(missing_ok=True)
            own.write_text(header, encoding="utf-8")
            return cls(own, {}, base=base)
        text = own.read_text(encoding="utf-8", errors="replace") if own.is_file() else ""
        if "\n" not in text:  # none, or its first line cut by a kill: nothing kept
            return cls(own, {}, header, base=base)
        rows, groups, unread = _read(own, text, settings)
        if not text.endswith("\n"):  # a line cut by a kill must not swallow the next row written
            with open(own, "a", encoding="utf-8") as fh:
                fh.write("\n")
        return cls(own, rows, groups=groups, base=base, unread=unread)

    def digests(self, row: Row) -> tuple[str, str, str]:
        """`row_digests` of a row of this journal's manifest."""
        return row_digests(row, self.base)

    def _key(self, forms: tuple[str, ...]) -> str:
        """The digest this journal holds a row by, of its `digests` (its first form where it holds none)."""
        return next((d for d in forms if d in self.rows), forms[0])

    def kept(self, rows: list[Row]) -> bool:
        """Whether every one of these rows has a result an earlier run wrote, none of them a failure that may not come
        back (`infer.retryable`). One said before decoding (the whisper system into German) is kept: a group holding
        one would otherwise be decoded again on every resume, and a killed whisper run on a many-to-many test set
        would start over. So is one whose audio file was missing (--skip-bad), or an SMT clip over the window, while
        its file is as it was (`audio_state`): it fails the same way until the file changes (with 1% such rows, a
        resume decoded ~72% of its groups again). Any other failure runs again: an unreadable file may be a network
        disk's passing error."""
        return not self.left(rows)

    def left(self, rows: list[Row]) -> list[int]:
        """The positions of the rows of a group (`rows`) that are not `kept`: those to run (again). A group a stop
        cut short keeps the rows it had decoded (written as each batch ended)."""
        group = group_digests(rows, self.base)  # a row decoded in another group (the manifest changed: groups
        #   shifted) is run again in this one, so every batch is the uninterrupted run's
        left = [k for k, row in enumerate(rows) if not self._kept(row, group)]
        if left and all(self._held(row, group) for row in rows):  # a group that ran to its end, with rows to run
            return list(range(len(rows)))  # again (failed): whole, so that their batches are the uninterrupted run's
        return left

    def _held(self, row: Row, group: tuple[str, ...]) -> bool:
        """Whether this journal holds a result of `row` decoded in this group (`group`'s digests), failed or not."""
        return any(digest in self.rows and self.groups.get(digest) in (None, in_group)
                   for digest, in_group in zip(self.digests(row), group))

    def _kept(self, row: Row, group: tuple[str, ...]) -> bool:
        for digest, in_group in zip(self.digests(row), group):  # by any form of its audio path (`row_digests`)
            result = self.rows.get(digest)
            if result is not None and self.groups.get(digest) in (None, in_group):
                return not retryable(result.error) or self.unread.get(digest, "") == audio_state(row.audio)
        return False

    def append(self, row: Row, result: UtteranceResult, group: tuple[str, ...] | None = None,
               audio: str | None = None) -> None:
        """Keep one decoded row (`write` of it alone)."""
        self.write([(row, result, group, audio)])

    def write(self, decoded: list[tuple[Row, UtteranceResult, tuple[str, ...] | None, str | None]]) -> None:
        """Keep decoded rows, each (row, result, group, audio), as one batch: their lines written and closed at once,
        each naming the batch and its number of lines, so that a batch a kill cut short is read back as none of its
        rows (`_read`: the rows a resume runs form the uninterrupted run's batches). A result is never replaced by a
        later error (as `_read` reads the file): a group run again for one failed row must not turn a row that
        succeeded before into a failure. `group`: the `group_digests` of the rows it was decoded with; `audio`: for a
        row that failed before any batch, its audio file's `audio_state` (taken before the group ran). A write that
        fails (a full disk, a read-only one) is `Unwritten`, one line naming the file; the rows it held are not
        kept (in memory either), so what the journal holds after it counts only the batches written whole."""
        entries = []
        for row, result, group, audio in decoded:
            forms, groups = self.digests(row), group or (None, None, None)
            digest = self._key(forms)
            kept = self.rows.get(digest)
            if result.error is not None and kept is not None and kept.error is None and not _regrouped(
                    self.groups.get(digest), groups[forms.index(digest)]):
                continue
            entries.append((forms, groups, result, audio))
        if not entries:
            return
        batch = [os.urandom(6).hex(), len(entries)]
        text = "".join(json.dumps({"row": forms[0], "group": groups[0], "result": vars(result),
                                   "forms": [list(f) for f in zip(forms[1:], groups[1:])], "batch": batch}
                                  | ({"audio": audio} if audio else {}), ensure_ascii=False) + "\n"
                       for forms, groups, result, audio in entries)
        try:
            if self.header is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(self.header, encoding="utf-8")
                self.header = None
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise Unwritten(self.path, e.strerror or str(e)) from None  # (`evaluate` says what is kept)
        for forms, groups, result, audio in entries:
            for digest, in_group in zip(forms, groups):
                self.rows[digest] = result
                self.groups[digest] = in_group
                if audio:
                    self.unread[digest] = audio
                else:
                    self.unread.pop(digest, None)

    def results(self, rows: list[Row]) -> list[UtteranceResult]:
        """Every row's result, kept or just decoded, in the rows' order, with its row's sentence id (a journal
        written before results recorded it has none)."""
        return [replace(self.rows[self._key(self.digests(r))], sentence=r.sentence_id) for r in rows]


def remove_journals(folder: Path, stems: list[str], rank: int | None = None) -> None:
    """Every rank's journal of these stems (only `rank`'s, if given: a rank on another node's disk), and the folder
    once nothing else is in it (another rank may have removed it first)."""
    for stem in stems:
        pattern = f"{glob.escape(stem)}.rank{'*' if rank is None else rank}.jsonl"
        for f in glob.glob(str(folder / pattern)):
            Path(f).unlink(missing_ok=True)
    try:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:  # gone already, or not empty after all
        pass


def _rank_of(path: Path, stem: str) -> int:
    try:
        return int(path.name[len(stem) + len(".rank"):-len(".jsonl")])
    except ValueError:
        return -1


def _read(path: Path, text: str,
          settings: dict) -> tuple[dict[str, UtteranceResult], dict[str, str | None], dict[str, str]]:
    """A journal file's rows (`text`, its content), the group each was decoded in, and the audio state of those that
    failed before any batch (`Journal.unread`); lines cut or garbled by a kill are skipped, and so are the other rows
    of their batch (`Journal.write`: those rows are decoded again, together), and a row's error never replaces its
    result in the same group."""
    lines = text.split("\n")  # not splitlines(): a text may hold U+2028 and other separators JSON leaves raw
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or first.get("journal") != VERSION:
        raise LLMSRTError(f"{shown(str(path))}: not a journal of decoded rows this version writes; give another "
                          "--out, or --restart to decode every row again")
    if first.get("settings") != settings:
        diff = "; ".join(differences(first.get("settings"), settings)[:3])
        raise LLMSRTError(f"{shown(str(path))}: rows an earlier run decoded with other settings ({diff}); run with "
                          "those settings to go on from them, give another --out, or --restart to decode every row "
                          "again")
    rows: dict[str, UtteranceResult] = {}
    groups: dict[str, str | None] = {}
    unread: dict[str, str] = {}
    read = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            result = UtteranceResult.from_dict(entry["result"])
            forms = [(entry["row"], entry.get("group")), *(tuple(f) for f in entry.get("forms", ()))]
            audio = entry.get("audio")
            batch = tuple(entry["batch"]) if "batch" in entry else None  # (none: a line written before 2026-12-07)
            hash(batch)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError, LLMSRTError):
            continue
        read.append((result, forms, audio, batch))
    lines_of = Counter(batch for *_, batch in read if batch is not None)
    for result, forms, audio, batch in read:
        if batch is not None and lines_of[batch] != batch[-1]:  # a batch a kill cut short: none of its rows
            continue
        for row, group in forms:  # (a line written before 2026-12-07 holds one form: the audio path as read)
            if not isinstance(row, str):
                continue
            if result.error is None or row not in rows or _regrouped(groups.get(row), group):
                rows[row], groups[row] = result, group
                if isinstance(audio, str) and audio:
                    unread[row] = audio
                else:
                    unread.pop(row, None)
    return rows, groups, unread


def _regrouped(kept: str | None, new: str | None) -> bool:
    """Whether a row's new line was decoded in another group than its kept one (both known): the new one stands
    then, an error too, as the kept result is not the one this run's batches give."""
    return kept is not None and new is not None and kept != new


def group_digests(rows: list[Row], base: str | Path | None = None) -> tuple[str, str, str]:
    """The digests of a decoded group, one for each form of `row_digests`: its rows' digests in order (the batch a
    row's output may depend on); `base`: the manifest's folder."""
    forms = zip(*(row_digests(r, base) for r in rows)) if rows else ((), (), ())
    return tuple(hashlib.sha256(" ".join(f).encode("ascii")).hexdigest()[:24] for f in forms)
