"""Subtitle writers: SubRip (.srt) and WebVTT (.vtt).

A cue's text is one line (the translation) or two (transcript, then translation); see `Cue.of`. `segment_cues`
fits a segment's texts to the screen: lines of at most MAX_LINE_WIDTH columns (a wide character, CJK, counts two),
LINES_PER_CUE lines at once, and a segment whose texts need more becomes consecutive cues, timed by the share of
its longer text each shows.
"""

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import LLMSRTError

VTT_HEADER = "WEBVTT"
MAX_LINE_WIDTH = 42  # columns of a subtitle line (the usual broadcast and streaming limit; CJK: 21 characters)
LINES_PER_CUE = 2  # lines on screen at once; with the transcript above the translation, one line each
# what a cue shows of a segment -> (its main line, the line above it)
CUE_MODES: dict[str, Callable] = {
    "translation": lambda s: (s.translation, None),
    "transcript": lambda s: (s.transcript, None),
    "both": lambda s: (s.translation, s.transcript),
}


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float  # seconds, > start
    text: str  # shown text; a newline separates lines

    @classmethod
    def of(cls, start: float, end: float, translation: str, transcript: str | None = None) -> "Cue":
        """A cue showing the transcript (if given) above the translation."""
        return cls(start, end, "\n".join(t.strip() for t in (transcript, translation) if t and t.strip()))


def segment_cues(segments: Iterable, mode: str = "both", width: int = MAX_LINE_WIDTH) -> list[Cue]:
    """Cues of timed segments (objects with start, end, transcript, translation) in one of CUE_MODES, fitted to
    lines of `width` columns (`fit`; 0: one cue a segment, its texts unwrapped); segments with nothing to show in
    that mode get no cue."""
    cues = []
    for s in segments:
        main, above = CUE_MODES[mode](s)
        if (main or above) and s.end > s.start:
            cues.extend(fit(s.start, s.end, main, above, width) if width else [Cue.of(s.start, s.end, main, above)])
    return cues


def fit(start: float, end: float, main: str, above: str | None = None, width: int = MAX_LINE_WIDTH) -> list[Cue]:
    """One segment's cues: each text wrapped to `width` columns; when a text needs more than its share of
    LINES_PER_CUE lines (all of them alone, one each when the transcript is above the translation), the texts are
    cut into as many consecutive parts, cue k showing part k of each, timed by the share of the longer text's
    columns shown up to it (times in whole milliseconds). Every word of both texts is shown: a part that gets no
    time of its own joins the cue before it, so a cue may then hold more lines. None when end <= start."""
    texts = [t.strip() for t in (above, main) if t and t.strip()]
    if not texts or end <= start:
        return []
    per_text = max(1, LINES_PER_CUE // len(texts))
    parts = max(math.ceil(len(_wrap(t, width)) / per_text) for t in texts)
    chunks = [_split(t, parts) for t in texts]
    b = max(range(len(chunks)), key=lambda i: sum(map(_width, chunks[i])))  # the longer text times the cues
    basis = chunks[b]
    total = sum(map(_width, basis)) or 1
    spans: list[list] = []  # [start, end, the part of each text] of the cues so far
    waiting = [""] * len(texts)  # parts with no time before the first cue (times rounded to the millisecond)
    t0, shown = start, 0
    for k in range(parts):
        shown += _width(basis[k])
        t1 = end if k == parts - 1 else min(end, round(start + (end - start) * shown / total, 3))
        part = [w + c[k] for w, c in zip(waiting, chunks)]
        if part[b].strip() and t1 > t0:
            spans.append([t0, t1, part])
            waiting, t0 = [""] * len(texts), t1
        elif spans:
            # No time of part k's own: its piece of the longer text is empty, as a token wider than a piece began
            # before it (the cue before shows that token for part k's time too), or the segment is too short for a
            # millisecond each. The cue before shows part k of each text (a cue of no time was dropped before, and
            # with it, words of the other text).
            spans[-1][2] = [before + now for before, now in zip(spans[-1][2], part)]
        else:
            waiting = part
    spans[-1][1] = end  # the last part may have joined the cue before it
    return [Cue(a, z, "\n".join(line for piece in pieces for line in _wrap(piece, width))) for a, z, pieces in spans]


def _tokens(text: str) -> list[str]:
    """Words with the spaces after them; a run of wide characters (CJK, written without spaces) one token a
    character, as lines may break between any two of them."""
    out = []
    for word in re.findall(r"\S+\s*", text):
        if any(_wide(ch) for ch in word):
            out.extend(re.findall(r".\s*", word))
        else:
            out.append(word)
    return out


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _width(text: str) -> int:
    return sum(2 if _wide(ch) else 1 for ch in text.strip())


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` columns, broken between tokens (a longer word alone on its line)."""
    lines, line = [], ""
    for token in _tokens(text):
        if line and _width(line + token) > width:
            lines.append(line.strip())
            line = ""
        line += token
    if line.strip():
        lines.append(line.strip())
    return lines


def _split(text: str, parts: int) -> list[str]:
    """`text` cut between tokens into `parts` pieces of about equal width, each with the spaces after it, so that
    joined they give `text` back; some are empty when a token is wider than a piece (or there are fewer tokens)."""
    tokens = _tokens(text)
    total = sum(_width(t) for t in tokens) or 1
    pieces, done = [""] * parts, 0
    for token in tokens:
        pieces[min(parts - 1, done * parts // total)] += token
        done += _width(token)
    return pieces


def timestamp(seconds: float, sep: str = ",") -> str:
    """62.345 -> '00:01:02,345' (SRT) or, with sep='.', '00:01:02.345' (VTT). Hours grow past 99 if needed."""
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip: numbered cues '1\\n00:00:01,000 --> 00:00:02,500\\ntext\\n', separated by blank lines."""
    blocks = [f"{i}\n{timestamp(c.start)} --> {timestamp(c.end)}\n{text}"
              for i, (c, text) in enumerate(_checked(cues), start=1)]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT: the 'WEBVTT' header, then numbered cues with '.' before the milliseconds. Cue text is escaped as the
    format requires ('&', '<', '>' as character references: '<' would start a tag); SRT keeps text as it is."""
    blocks = [f"{i}\n{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{_vtt_escaped(text)}"
              for i, (c, text) in enumerate(_checked(cues), start=1)]
    return "\n\n".join([VTT_HEADER, *blocks]) + "\n"


WRITERS: dict[str, Callable[[Iterable[Cue]], str]] = {".srt": to_srt, ".vtt": to_vtt}


def write(path: str | Path, cues: Iterable[Cue]) -> Path:
    """Write cues in the format named by the file's suffix (.srt or .vtt)."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise LLMSRTError(f"{path}: unknown subtitle format {path.suffix!r}; use one of {', '.join(WRITERS)}")
    path.write_text(writer(cues), encoding="utf-8")
    return path


def _checked(cues: Iterable[Cue]) -> list[tuple[Cue, str]]:
    """Validated cues with their cleaned text; cues with no text are left out (nothing to show)."""
    out = []
    for i, cue in enumerate(cues, start=1):
        if not (0 <= cue.start < cue.end):
            raise LLMSRTError(f"subtitle cue {i}: start {cue.start:.3f} s / end {cue.end:.3f} s are not a valid "
                              "interval (need 0 <= start < end)")
        text = _clean(cue.text)
        if text:
            out.append((cue, text))
    return out


def _clean(text: str) -> str:
    # A blank line would end the cue early in both formats, and '-->' is forbidden inside WebVTT cue text.
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    return "\n".join(re.sub(r"-{2,}>", "->", line) for line in lines if line)  # one pass: "--->" is "->" too


def _vtt_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
