"""Subtitle writers: SubRip (.srt) and WebVTT (.vtt).

A cue's text is one line (the translation) or two (transcript, then translation); see `Cue.of`. `segment_cues`
fits a segment's texts to the screen: lines of at most MAX_LINE_WIDTH columns (a wide character, CJK, counts two; a
combining mark none), LINES_PER_CUE lines at once, and a segment whose texts need more becomes consecutive cues, each
word of a text shown in the cue whose time holds its share of the text's columns (and, with both texts, a text
with no new words in a cue keeping its line from the cue before, so that every cue shows both).
"""

import bisect
import functools
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
_EDGES = re.compile(r"^[\s\u200b\u2060\ufeff]+|[\s\u200b\u2060\ufeff]+$")  # `_bare`: spaces and invisible ones
_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")  # `one_line`: str.splitlines()' line breaks
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
        return cls(start, end, "\n".join(_bare(t) for t in (transcript, translation) if t and _bare(t)))


def segment_cues(segments: Iterable, mode: str = "both", width: int = MAX_LINE_WIDTH) -> list[Cue]:
    """Cues of timed segments (objects with start, end, transcript, translation) in one of CUE_MODES, fitted to
    lines of `width` columns (`fit`; 0: one cue a segment, its texts unwrapped); segments with nothing to show in
    that mode get no cue, and one with text but no time (end <= start, as clipped at the audio's end) a millisecond."""
    cues = []
    for s in segments:
        main, above = CUE_MODES[mode](s)
        if (main and _bare(main)) or (above and _bare(above)):
            end = max(s.end, s.start + 0.001)
            cues.extend(fit(s.start, end, main, above, width) if width else [Cue.of(s.start, end, main, above)])
    return cues


def fit(start: float, end: float, main: str, above: str | None = None, width: int = MAX_LINE_WIDTH) -> list[Cue]:
    """One segment's cues: each text wrapped to `width` columns, at most its share of LINES_PER_CUE lines a cue
    (all of them alone, one each when the transcript is above the translation). A segment whose texts need more is
    cut into consecutive cues at whole milliseconds: each word of a text is shown in the cue whose time holds the
    start of its share of the text's columns (a text's words spread over the whole segment). The cues are as few as
    keep every one to its lines, cut near equal shares of the segment where that fits. Every word of both texts is
    shown once; a cue in which one text has no new words (it is much shorter than the other) shows that text's line
    of the cue before again, so that every cue holds both, the transcript above (a bottom-aligned player shows a cue
    of one line where the translation goes). Only a segment too short for a millisecond a cue gets cues with more
    lines. None when end <= start."""
    texts = [_bare(t) for t in (above, main) if t and _bare(t)]
    if not texts or end <= start:
        return []
    per_text = max(1, LINES_PER_CUE // len(texts))
    tokens = [_tokens(t, width) for t in texts]
    at = [_starts(ts, start, end) for ts in tokens]  # each token's millisecond, non-decreasing
    first, last = _ms(start), _ms(end)
    cuts_at = sorted({m for ms in at for m in ms if first < m < last})  # where a cue may end: where a token begins

    def fits(lo: float, hi: float) -> bool:  # whether the tokens from millisecond lo to before hi fit one cue
        return all(len(_lines(ts[bisect.bisect_left(ms, lo):bisect.bisect_left(ms, hi)], width)) <= per_text
                   for ts, ms in zip(tokens, at))

    cuts = _fewest_cuts(cuts_at, fits)
    even = _cuts(cuts_at, len(cuts) + 1, start, end)
    if all(map(fits, [-math.inf, *even], [*even, math.inf])):
        cuts = even
    bounds = [start, *(m / 1000 for m in cuts), end]
    pieces = [_pieces(ts, ms, cuts) for ts, ms in zip(tokens, at)]
    if len(pieces) == 2:  # a cue of one line would put the transcript where the translation goes (bottom-aligned)
        for text in pieces:  # a text with no new words stays on screen (piece 0 holds each text's first token)
            for k in range(1, len(text)):
                text[k] = text[k] or text[k - 1]
    return [Cue(bounds[k], bounds[k + 1], "\n".join(line for text in pieces for line in _lines(text[k], width)))
            for k in range(len(bounds) - 1)]


def _fewest_cuts(cuts_at: list[int], fits: Callable[[float, float], bool]) -> list[int]:
    """Cuts, of the possible ones (sorted), each the last after the one before that keeps the cue between them
    within its lines (`fits`): the fewest cues that do. Where even the next possible cut leaves too much (more than
    a cue's lines begin in one millisecond), that one."""
    cuts: list[int] = []
    lo, i = -math.inf, 0  # the last cut; the first possible cut after it
    while i < len(cuts_at) and not fits(lo, math.inf):
        good, bad = i, len(cuts_at)  # bisect: a cue holding more words never fits where one holding fewer does not
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(lo, cuts_at[mid]) else (good, mid)
        cuts.append(cuts_at[good])
        lo, i = cuts_at[good], good + 1
    return cuts


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _starts(tokens: list[str], start: float, end: float) -> list[int]:
    """The millisecond of the segment at which each token's share of its text's columns begins."""
    total = sum(_token_columns(t)[1] for t in tokens) or 1
    out, done = [], 0
    for token in tokens:
        out.append(_ms(start + (end - start) * done / total))
        done += _token_columns(token)[1]
    return out


def _cuts(cuts_at: list[int], parts: int, start: float, end: float) -> list[int]:
    """`parts` - 1 of the possible cuts (sorted milliseconds), each the nearest to an equal share of the segment
    that leaves room for the cuts after it."""
    cuts, i = [], -1
    for k in range(1, parts):
        target = (start + (end - start) * k / parts) * 1000
        j = bisect.bisect_left(cuts_at, target)
        if j > 0 and (j == len(cuts_at) or target - cuts_at[j - 1] <= cuts_at[j] - target):
            j -= 1
        i = min(max(j, i + 1), len(cuts_at) - (parts - k))
        cuts.append(cuts_at[i])
    return cuts


def _pieces(tokens: list[str], at: list[int], cuts: list[int]) -> list[list[str]]:
    """A text's tokens cut into len(cuts) + 1 pieces (some may be empty), each token in the piece whose time holds
    its millisecond."""
    pieces: list[list[str]] = [[] for _ in range(len(cuts) + 1)]
    for token, m in zip(tokens, at):
        pieces[bisect.bisect_right(cuts, m)].append(token)
    return pieces


# Hangul: East Asian wide, but Korean puts spaces between words.
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff]")
# Thai, Lao, Khmer, Myanmar: written without spaces between words, and not wide, but unlike CJK a line may not break
# anywhere: a word's end needs a dictionary, which we do not have. Spaces (and U+200B) mark phrases; see `_run`.
_DICTIONARY = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\ua9e0-\ua9ff\uaa60-\uaa7f]")
RUN_OVERFLOW = 1.25  # such a run up to this many times the line width stays whole on a line of its own
_LEADING_VOWELS = "\u0e40\u0e41\u0e42\u0e43\u0e44\u0ec0\u0ec1\u0ec2\u0ec3\u0ec4"  # Thai, Lao: written before
#   their consonant, which they go with: a syllable starts there
_FOLLOWING = "\u0e30\u0e32\u0e33\u0e45\u0e46\u0e2f\u0eb0\u0eb2\u0eb3\u0ec6\u17d7"  # vowels and signs after
#   their consonant (ะ า ำ ๅ ๆ ฯ, Lao's, Khmer ៗ): no line starts with one
# ะ ำ ๆ ฯ, ์ (a silent final), Lao's: a syllable ends with one
_SYLLABLE_ENDS = frozenset("\u0e30\u0e33\u0e46\u0e2f\u0e4c\u0eb0\u0eb3\u0ec6")
_SARA_AM = "\u0e33\u0eb3"  # Thai, Lao SARA AM: a spacing vowel (not a mark), yet part of its consonant's cluster
#   (Unicode's SpacingMark), so no line starts with it
_JOINERS = "\u200d\u17d2\u1039"  # zero-width joiner (emoji sequences), Khmer coeng and Myanmar virama (a stacked
#   consonant): join the characters either side of them
_ZWSP = "\u200b"  # zero-width space: a line may break after it, as after a space
_NO_BREAK = "\u00a0\u2007\u202f"  # no-break spaces: part of the word either side, as a line never breaks there
#   (French "film\u00a0?", "10\u00a0000\u00a0€": a line started with "?" or "€")
_SPACED = re.compile(r"\S+?(?:[\s\u200b]+|$)")  # a word and the spaces (or zero-width space) after it
_GLUED = re.compile(rf"[\S{_NO_BREAK}]+?(?:(?:[^\S{_NO_BREAK}]|\u200b)+|$)")  # the same, no-break spaces inside
_CLOSING, _OPENING = ("Pe", "Pf", "Po"), ("Ps", "Pi")  # Unicode categories of punctuation: "，。）」", "（「"
# No line starts with these either (JIS X 4051 kinsoku): the long-vowel mark, small kana, iteration marks, and the
# hyphen and dash-like marks
_NO_START = frozenset("ーｰぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿｧｨｩｪｫｬｭｮｯ"
                      "ゝゞヽヾ々〻‐–〜～゠")
_FREE = 3  # `_break`: a line may break here (next to CJK) as between words


@functools.lru_cache(maxsize=1 << 16)
def unspaced(ch: str) -> bool:
    """Whether a character is of a script written without spaces between words (Han, kana, CJK punctuation: the
    wide characters but Hangul; Thai, Lao, Khmer, Myanmar)."""
    return bool(_DICTIONARY.match(ch)) or _cjk(ch)


def _cjk(ch: str) -> bool:
    """Whether a line may break before or after a character anywhere (bar punctuation): the wide ones but Hangul."""
    return _wide(ch) and not _HANGUL.match(ch)


def _clusters(text: str) -> list[str]:
    """Grapheme clusters, near enough for breaking lines: a character with the combining marks after it (Thai vowel
    and tone marks, and SARA AM), a Thai leading vowel with the consonant after it, characters joined by a zero-width
    joiner, a Khmer or Myanmar consonant stacked under the one before it."""
    out: list[str] = []
    for ch in text:
        if out and (unicodedata.category(ch) in ("Mn", "Me", "Mc") or ch in _SARA_AM or ch == _JOINERS[0]
                    or out[-1][-1] in _LEADING_VOWELS or out[-1][-1] in _JOINERS):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _tokens(text: str, width: float = math.inf, glued: bool = True) -> list[str]:
    """Words with the spaces (or zero-width space) after them, a word cut between two grapheme clusters where a line
    may break there (`_break`: next to CJK, not before closing punctuation nor after opening); other letters stay
    together (a Korean word, "iPhone" in Chinese text), and so does a run of Thai, Lao, Khmer or Myanmar but one
    too wide for lines of `width` columns (`_run`). Words joined by a no-break space are one (`glued`), but where
    they are wider than a line with nowhere else to break (a text spaced with no-break spaces throughout)."""
    out = []
    for word in (_GLUED if glued else _SPACED).findall(text):
        if word.isascii():
            out.append(word)
            continue
        clusters = _clusters(word)
        pieces, run, inside = [], [clusters[0]], {}  # run: clusters since the last free break; inside: where it may
        #                                              break, how well
        for before, now, then in zip(clusters, clusters[1:], [*clusters[2:], ""]):
            how = None if now.isspace() or before.isspace() or now == _ZWSP else _break(before, now, then)
            if how == _FREE:
                pieces.extend(_run(run, inside, width))
                run, inside = [], {}
            elif how is not None:
                inside[len(run)] = how
            run.append(now)
        pieces.extend(_run(run, inside, width))
        for piece in pieces:
            if glued and _width(piece) > width and any(ch in _NO_BREAK for ch in piece.rstrip()):
                out.extend(_tokens(piece, width, glued=False))
            else:
                out.append(piece)
    return out


def _break(before: str, after: str, then: str = "") -> int | None:
    """Whether a line may break between two grapheme clusters of a word: _FREE next to CJK; else, next to Thai, Lao,
    Khmer or Myanmar, how likely a word (or syllable) begins there, 0 to 2 (`_run`; `then`: the cluster after);
    else None. Never before closing
    punctuation nor after opening ("里，" and "（i" stay together), nor before a mark JIS X 4051 keeps off a line's
    start ("コー"), nor after a leading vowel or before a following one ("เป", "กะ")."""
    a, b = before[-1], after[0]
    if (unicodedata.category(b) in _CLOSING or unicodedata.category(a) in _OPENING or b in _NO_START
            or b in _FOLLOWING or a in _LEADING_VOWELS):
        return None
    if _cjk(a) or _cjk(b):
        return _FREE
    if not (_DICTIONARY.match(a) or _DICTIONARY.match(b)):
        return None
    if not (_DICTIONARY.match(a) and _DICTIONARY.match(b)) or b in _LEADING_VOWELS or set(before) & _SYLLABLE_ENDS:
        return 2  # another script, a leading vowel, after a syllable's end
    if b in "รลว" and len(before) == 1:  # maybe the second consonant of an initial cluster ("คร", "กล", "คว")
        return 0
    voiced = (len(after) > 1 and after[1] != "\u0e4c") or then[:1] in _FOLLOWING
    return 1 if voiced else 0  # a consonant with its vowel or tone mark: likely a syllable's first


# `_run`: what a break inside a too wide run costs, in lines, by how likely a word begins there (`_break`)
_BREAK_COST = {2: 0.0, 1: 0.5, 0: 2.0}


def _run(clusters: list[str], inside: dict[int, int], width: float) -> list[str]:
    """A run of clusters with no free break as tokens. A run of Thai (Lao, Khmer, Myanmar) is written without spaces
    between words, and without a dictionary we cannot tell where a word ends: it stays whole, on a line of its own if
    need be, unless it is wider than RUN_OVERFLOW lines; then it is cut into pieces of at most `width` columns where
    `inside` allows, the fewest lines with the likeliest word starts (a cut word costs two more lines)."""
    if not clusters:
        return []
    whole = "".join(clusters)
    if not inside or _width(whole) <= width * RUN_OVERFLOW:
        return [whole]
    cols = [0]
    for c in clusters:
        cols.append(cols[-1] + _width(c))
    starts = [0, *sorted(inside)]
    best: dict[int, tuple[float, int]] = {0: (0.0, -1)}  # where a piece ends -> (least cost, where it starts)
    for j in [*starts[1:], len(clusters)]:
        for i in reversed(starts[:bisect.bisect_left(starts, j)]):  # the nearest start first: every start is reached
            too_wide = cols[j] - cols[i] > width and j - i > 1
            if too_wide and j in best:
                break
            cost = best[i][0] + 1 + (_BREAK_COST[inside[i]] if i else 0)
            if j not in best or cost < best[j][0]:
                best[j] = (cost, i)
            if too_wide:  # no allowed break within the width (a long number, a Latin word): one piece over it
                break
    pieces, j = [], len(clusters)
    while j:
        i = best[j][1]
        pieces.append("".join(clusters[i:j]))
        j = i
    return pieces[::-1]


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _columns(ch: str) -> int:
    """Columns a character takes: none for combining marks and format characters (a Thai tone mark sits on its
    consonant), two for a wide one, else one."""
    if unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if _wide(ch) else 1


def _bare(text: str) -> str:
    """`text` on one line (`one_line`), without spaces or invisible characters at its ends: str.strip() keeps a
    zero-width space (U+200B, written by some models between CJK words) or a byte-order mark, so such a text alone
    was a cue of nothing to see, or a line of its own above a cue's two."""
    return _EDGES.sub("", one_line(text))


def one_line(text: str) -> str:
    """`text` with each line break in it (and the spaces around it) one space: a model's text is one line of a
    subtitle's or of --format text's. A break kept was a line of its own in a cue, counted as a column by the
    wrapper (a 2-line cue written as 3, with the transcript above as 4), and in --format text a line unindented."""
    return _BREAKS.sub(" ", text)


def _width(text: str) -> int:
    return sum(map(_columns, text.strip()))


@functools.lru_cache(maxsize=1 << 16)
def _token_columns(token: str) -> tuple[int, int]:
    """A token's columns without and with the spaces after it (asked for again and again by `fit`)."""
    word = _width(token)
    return word, word + sum(map(_columns, token[len(token.rstrip()):]))


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` columns, broken between tokens (a longer word alone on its line)."""
    return _lines(_tokens(text, width), width)


def _lines(tokens: list[str], width: int) -> list[str]:
    """`_wrap` of a text's tokens."""
    lines, line, cols = [], "", 0  # cols: the line's columns with the spaces after its last token
    for token in tokens:
        word, spaced = _token_columns(token)
        if line and cols + word > width and _bare(line):  # (a zero-width space alone is no line: on with the next)
            lines.append(_bare(line))
            line, cols = "", 0
        line += token
        cols += spaced
    if line := _bare(line):
        lines.append(line)
    return lines


def timestamp(seconds: float, sep: str = ",") -> str:
    """62.345 -> '00:01:02,345' (SRT) or, with sep='.', '00:01:02.345' (VTT). Hours grow past 99 if needed."""
    return _stamp(_ms(seconds), sep)


def _stamp(ms: int, sep: str) -> str:
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip: numbered cues '1\\n00:00:01,000 --> 00:00:02,500\\ntext\\n', separated by blank lines."""
    blocks = [f"{i}\n{_stamp(start, ',')} --> {_stamp(end, ',')}\n{text}"
              for i, (start, end, text) in enumerate(_checked(cues), start=1)]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT: the 'WEBVTT' header, then numbered cues with '.' before the milliseconds. Cue text is escaped as the
    format requires ('&', '<', '>' as character references: '<' would start a tag); SRT keeps text as it is."""
    blocks = [f"{i}\n{_stamp(start, '.')} --> {_stamp(end, '.')}\n{_vtt_escaped(text)}"
              for i, (start, end, text) in enumerate(_checked(cues), start=1)]
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


NUDGE_MS = 5  # `_checked`: the most a cue is moved to start after the one before (segments at one instant)


def _checked(cues: Iterable[Cue]) -> list[tuple[int, int, str]]:
    """Validated cues as the milliseconds the formats write and their cleaned text; cues with no text are left out
    (nothing to show). A cue shorter than a millisecond once rounded (1.0001 s to 1.0004 s: 1,000 to 1,000) is
    written a millisecond long rather than dropped with its text, and a cue that rounding (or those milliseconds) makes
    overlap the one before by at most NUDGE_MS starts where that one ends (a wider overlap is the caller's)."""
    out: list[tuple[int, int, str]] = []
    for i, cue in enumerate(cues, start=1):
        if not (0 <= cue.start < cue.end):
            raise LLMSRTError(f"subtitle cue {i}: start {cue.start:.3f} s / end {cue.end:.3f} s are not a valid "
                              "interval (need 0 <= start < end)")
        text = _clean(cue.text)
        if not text:
            continue
        start = _ms(cue.start)
        if out and 0 < out[-1][1] - start <= NUDGE_MS:
            start = out[-1][1]
        out.append((start, max(_ms(cue.end), start + 1), text))
    return out


def _clean(text: str) -> str:
    # A blank line would end the cue early in both formats, and '-->' is forbidden inside WebVTT cue text.
    lines = [_bare(line) for line in text.replace("\r", "\n").split("\n")]
    return "\n".join(re.sub(r"-{2,}>", "->", line) for line in lines if line)  # one pass: "--->" is "->" too


def _vtt_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
