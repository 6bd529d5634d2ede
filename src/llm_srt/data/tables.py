"""Reading the tables a release ships: its transcript tables line by line, and its lists of clip durations.

`text_lines` reads a table's lines (UTF-8, a byte order mark dropped, CRLF and CR-only files read whole, a carriage
return inside a line counted as damage), `open_table` opens one and `unreadable` is the one line for a table the OS
will not read; `no_usable_line` is the error for a table none of whose lines a converter can use. `table_text` is a
transcript or translation as a manifest holds it. `known_durations` reads Common Voice's `clip_durations.tsv` or
`times.txt`, and `by_name` maps their file names to the clips a converter names.
"""

import codecs
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import LLMSRTError, shown

# Common Voice 16.1+: clip_durations.tsv, header `clip<TAB>duration[ms]` (release notes of Corpus 16.1).
# Common Voice 14.0-16.0: times.txt, lines "`<path of the mp3>` = <ms>", 0 when the clip could not be measured
# (written by Common Voice's mp3-duration-reporter).
DURATION_FILES = ("clip_durations.tsv", "times.txt")
TIMES_LINE = re.compile(r"^`(?P<path>.+)`\s*=\s*(?P<ms>\d+)\s*$")
# A table saved by a spreadsheet or Windows tool may start with a UTF-8 byte order mark: kept, it became part of the
# first column's name or value (Common Voice's header read '\ufeffclient_id', FLEURS' first sentence id '\ufeff1')
TABLE_ENCODING = "utf-8-sig"  # how the duration lists are opened: UTF-8, a leading byte order mark dropped
STRAY_CR = "carriage return inside the line (a damaged line: it cut a field short)"


def table_text(field: str | None) -> str:
    """A transcript or translation as a table holds it -> as a manifest holds it: stripped, in Unicode NFC. A
    sentence typed on macOS comes decomposed (NFD): the same sentence in two byte forms was two sentences to the
    split checks (a test sentence trained on) and to training."""
    return unicodedata.normalize("NFC", (field or "").strip())

def known_durations(folder: Path) -> tuple[dict[str, float], str]:
    """Clip file name -> seconds from FOLDER/clip_durations.tsv or FOLDER/times.txt (the first present), and
    that file's name ("" when neither is there). A duration of 0 means the release could not measure the clip."""
    for name in DURATION_FILES:
        path = folder / name
        if path.is_file():
            try:
                return (_read_clip_durations if name.endswith(".tsv") else _read_times)(path), name
            except UnicodeDecodeError as e:  # was a bare traceback, naming neither file nor what to do
                raise LLMSRTError(f"{path}: not UTF-8 text ({e.reason}); remove the file to read the clips' "
                                  "headers instead, or extract it again from the release") from None
            except OSError as e:
                raise unreadable(path, e) from None
    return {}, ""


def _read_clip_durations(path: Path) -> dict[str, float]:
    durations = {}
    with open(path, encoding=TABLE_ENCODING) as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["clip", "duration[ms]"]:
            raise LLMSRTError(f"{path}:1: expected the header 'clip<TAB>duration[ms]', got {header!r}; "
                              "remove the file to read the clips' headers instead")
        for lineno, line in enumerate(f, start=2):
            clip, _, ms = line.rstrip("\n").partition("\t")
            if clip:
                durations[clip] = _milliseconds(ms, path, lineno)
    return durations


def _read_times(path: Path) -> dict[str, float]:
    durations = {}
    with open(path, encoding=TABLE_ENCODING) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            m = TIMES_LINE.match(line.rstrip("\n"))
            if m is None:
                raise LLMSRTError(f"{path}:{lineno}: expected a line like '`clips/x.mp3` = 4128', got "
                                  f"{line.strip()[:80]!r}; remove the file to read the clips' headers instead")
            durations[Path(m["path"]).name] = int(m["ms"]) / 1000
    return durations


def _milliseconds(text: str, path: Path, lineno: int) -> float:
    try:
        return int(text.strip()) / 1000
    except ValueError:
        raise LLMSRTError(f"{path}:{lineno}: duration {text.strip()!r} is not a whole number of milliseconds") \
            from None


def by_name(clips: Iterable[Path], durations: Mapping[str, float]) -> dict[Path, float]:
    """known_durations' file names -> the clips that bear them."""
    return {clip: durations[clip.name] for clip in clips if clip.name in durations}


def text_lines(f, name: Path | str, damaged: Callable[[str], None] | None = None):
    """The lines of a table opened in binary, as UTF-8 text ending in a line feed (a CRLF line end read as one, and
    so are the CRs of a run before the line feed: a CRLF file re-saved in text mode on Windows ends its lines in
    CR CR LF, and each of its lines was damaged), without the byte order mark a file may start with; a line that is
    not UTF-8 raises LLMSRTError naming the file and line (csv reading a text-mode file raised a bare
    UnicodeDecodeError at some byte of the file).

    A file without any line feed ends its lines with lone carriage returns (old Mac tools): read so. In any other
    file a CR inside a line is damage: csv took it for a line end, cutting the field short ("Hello\rworld" gave the
    transcript "Hello" and a bogus row "world"). Such a line is left out, its line number still counted:
    `damaged(FILE:LINE)` is called and csv gets an empty line; without `damaged` csv gets the line with its fields
    emptied, a row without a clip, which every converter leaves out and counts with its file:line."""
    for lineno, raw in enumerate(_read(f, name), start=1):
        bom = len(codecs.BOM_UTF8) if lineno == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        if lineno == 1 and b"\r" in raw and not raw.endswith(b"\n"):  # the whole file, with no line feed in it
            pieces = raw[bom:].split(b"\r")
            for n, piece in enumerate(pieces[:-1] if not pieces[-1] else pieces, start=1):
                yield _utf8(piece, name, n, bom if n == 1 else 0) + "\n"
            return
        body = raw.removesuffix(b"\n").rstrip(b"\r")  # CR LF, and CR CR LF: a CRLF file re-saved on Windows
        line = _utf8(body[bom:], name, lineno, bom)
        if "\r" not in line:
            yield line + "\n"
        elif damaged is not None:
            damaged(f"{name}:{lineno}")
            yield "\n"  # csv skips an empty line but counts it: the lines after keep their numbers
        else:
            yield "\t" * max(1, line.count("\t")) + "\n"


def _read(f, name: Path | str):
    """The lines of `f`; a read the OS fails part way (a disk error) raises `unreadable`'s LLMSRTError."""
    try:
        yield from f
    except OSError as e:
        raise unreadable(Path(name), e) from None


def no_usable_line(drops: list[tuple[str, str]]) -> LLMSRTError:
    """The one line for a table that has lines but none a converter can use, from what it left out of it ((reason,
    file:line), in file order): the most common reason, where it first occurs, and what to do. Such a table gave an
    empty manifest and exit 0 (a CRLF file re-saved on Windows: a carriage return inside every line)."""
    reason, n = Counter(reason for reason, _ in drops).most_common(1)[0]
    where = next(at for why, at in drops if why == reason)
    return LLMSRTError(f"{where}: no line of this table can be used ({n} of its {len(drops)} lines: {reason}); fix "
                       "the table, or extract it again from the release")


def open_table(table: Path):
    """`table` opened (binary) for `text_lines`; one the OS will not open is `unreadable`'s one line."""
    try:
        return open(table, "rb")
    except OSError as e:
        raise unreadable(table, e) from None


def unreadable(table: Path, e: OSError) -> LLMSRTError:
    """The one line for a table the OS will not read (permissions, a disk error): it was a traceback."""
    return LLMSRTError(f"{shown(str(table))}: cannot read ({e.strerror or e}); check its permissions, or extract it "
                       "again from the release")


def _utf8(raw: bytes, name: Path | str, lineno: int, skipped: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LLMSRTError(f"{name}:{lineno}: not UTF-8 text (byte {skipped + e.start + 1} of the line); the file is "
                          "damaged or was saved in another encoding: extract it again from the corpus archive, "
                          "or save it as UTF-8") from None
