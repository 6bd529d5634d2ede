"""Subtitle writers: SubRip (.srt) and WebVTT (.vtt).

A cue's text is one line (the translation) or two (transcript, then translation); see `Cue.of`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import LLMSRTError

VTT_HEADER = "WEBVTT"
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


def segment_cues(segments: Iterable, mode: str = "both") -> list[Cue]:
    """Cues of timed segments (objects with start, end, transcript, translation) in one of CUE_MODES; segments with
    nothing to show in that mode get no cue."""
    cues = []
    for s in segments:
        main, above = CUE_MODES[mode](s)
        if (main or above) and s.end > s.start:
            cues.append(Cue.of(s.start, s.end, main, above))
    return cues


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
    return "\n".join(line.replace("-->", "->") for line in lines if line)


def _vtt_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
