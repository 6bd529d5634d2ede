"""The rows an evaluation has decoded, kept as they finish, so that a killed run goes on where it stopped.

`llm-srt evaluate` appends each system's finished rows to OUT/partial/<system>.<kind>.rank<R>.jsonl (kind `hyps`,
or `mt` for --with-mt's text MT; R the torchrun rank). Its first line holds the settings that make the outputs what
they are: the model folder's files (by content), the task, the decoding options, the device type and the dtype.
Every other line is one row: a digest of its manifest row and its UtteranceResult. Run again into the same --out,
only the rows not found there are decoded (a row that failed is decoded again, and so is a row whose manifest entry
changed). Every rank reads every rank's file, so the number of processes may change between the runs. A journal of
other settings is a one-line error naming the difference (`--restart` decodes every row again). The journals are
removed once the report is written.

    journal = Journal.open(out / "partial", "srt.hyps", rank=0, size=1, settings={...})
    for row, result in decode(journal.todo(rows)):
        journal.append(row, result)  # one line, written and closed: a kill loses at most the row being written
    results = journal.results(rows)
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from ..data.manifest import Row
from ..errors import LLMSRTError
from .report import UtteranceResult

VERSION = 1
HASHED_BYTES = 1 << 30  # a model file up to 1 GiB is known by its content; a larger one by its size and mtime


def model_files(model: str) -> dict[str, str] | str:
    """What identifies a model: for a folder, each of its files by sha256 (size:mtime past HASHED_BYTES); for a
    baseline ('whisper', 'cascade', 'mt') its name."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = f.stat()
        if stat.st_size > HASHED_BYTES:
            files[f.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
            continue
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        files[f.name] = digest.hexdigest()
    return files


def row_digest(row: Row) -> str:
    """A digest of everything a manifest row says (audio path, languages, references): an edited row is new."""
    text = json.dumps(asdict(row), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def differences(old: object, new: object, key: str = "") -> list[str]:
    """'key: old -> new' for every leaf where two settings differ (nested dicts as dotted keys)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    return [] if old == new else [f"{key or 'settings'}: {json.dumps(old)[:40]} -> {json.dumps(new)[:40]}"]


class Journal:
    """One system's decoded rows of one kind, in OUT/partial (see the module's docstring)."""

    def __init__(self, path: Path, rows: dict[str, UtteranceResult]):
        self.path = path  # this rank's file, appended to
        self.rows = rows  # row digest -> its result, from every rank's file of these settings

    @classmethod
    def open(cls, folder: Path, stem: str, rank: int, size: int, settings: dict, restart: bool = False) -> Journal:
        """The journal of `stem` (e.g. 'srt.hyps') for this rank: earlier runs' rows of the same settings (none with
        `restart`), and this rank's file ready to append to. Other settings: LLMSRTError naming the file and the
        difference."""
        folder.mkdir(parents=True, exist_ok=True)
        header = {"journal": VERSION, "settings": json.loads(json.dumps(settings))}  # as it reads back
        own = folder / f"{stem}.rank{rank}.jsonl"
        files = sorted(Path(p) for p in glob.glob(str(folder / f"{glob.escape(stem)}.rank*.jsonl")))
        rows: dict[str, UtteranceResult] = {}
        if restart:
            for f in files:  # rank 0 removes the files no rank of this run writes; each rank starts its own anew
                if rank == 0 and _rank_of(f, stem) not in range(size):
                    f.unlink(missing_ok=True)
            own.write_text(json.dumps(header) + "\n", encoding="utf-8")
            return cls(own, rows)
        for f in files:
            rows.update(_read(f, header))
        if own.is_file() and own.stat().st_size:
            with open(own, "rb+") as fh:  # a line cut by a kill must not swallow the next row written
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        else:
            own.write_text(json.dumps(header) + "\n", encoding="utf-8")
        return cls(own, rows)

    def todo(self, rows: list[Row]) -> list[Row]:
        """The rows to decode: those no run wrote a result for, or whose result is an error (decoded again)."""
        def kept(row: Row) -> bool:
            result = self.rows.get(row_digest(row))
            return result is not None and result.error is None

        return [r for r in rows if not kept(r)]

    def append(self, row: Row, result: UtteranceResult) -> None:
        """Keep one decoded row (a line written and closed at once: a kill loses at most the row being written)."""
        line = json.dumps({"row": row_digest(row), "result": vars(result)}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        self.rows[row_digest(row)] = result

    def results(self, rows: list[Row]) -> list[UtteranceResult]:
        """Every row's result, kept or just decoded, in the rows' order."""
        return [self.rows[row_digest(r)] for r in rows]


def remove_journals(folder: Path, stems: list[str]) -> None:
    """Every rank's journal of these stems, and the folder once nothing else is in it."""
    for stem in stems:
        for f in glob.glob(str(folder / f"{glob.escape(stem)}.rank*.jsonl")):
            Path(f).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _rank_of(path: Path, stem: str) -> int:
    try:
        return int(path.name[len(stem) + len(".rank"):-len(".jsonl")])
    except ValueError:
        return -1


def _read(path: Path, header: dict) -> dict[str, UtteranceResult]:
    """A journal file's rows; lines cut or garbled by a kill are skipped (those rows are decoded again)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if "\n" not in text:  # empty, or its first line still being written by a rank of this run: no rows yet
        return {}
    lines = text.splitlines()
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or first.get("journal") != VERSION:
        raise LLMSRTError(f"{path}: not a journal of decoded rows this version writes; give another --out, or "
                          "--restart to decode every row again")
    if first.get("settings") != header["settings"]:
        diff = "; ".join(differences(first.get("settings"), header["settings"])[:3])
        raise LLMSRTError(f"{path}: rows an earlier run decoded with other settings ({diff}); run with those "
                          "settings to go on from them, give another --out, or --restart to decode every row again")
    rows = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            rows[entry["row"]] = UtteranceResult.from_dict(entry["result"])
        except (json.JSONDecodeError, KeyError, TypeError, LLMSRTError):
            continue
    return rows
