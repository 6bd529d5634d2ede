"""The manifest: one JSONL row per utterance-direction, validated before anything starts.

A row (ISO 639-3 codes, see llm_srt.languages):

    {"id": "fleurs:deu:1234:eng", "audio": "audio/deu/1234.flac", "duration": 4.2,
     "src_lang": "deu", "transcript": "...", "tgt_lang": "eng", "translation": "...",
     "split": "train", "corpus": "fleurs", "sentence_id": "1234", "source": "..."}

ASR-only rows have an empty (or null) tgt_lang and translation. `source` (provenance) is optional; unknown keys
are ignored. Relative audio paths are relative to the manifest's folder. Every bad row is reported with its
file:line before anything starts, so a long run never dies on row 90,000.
"""

import errno
import json
import math
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .. import languages
from ..audio_headers import ogg_cut_short, sized_cut
from ..errors import LLMSRTError, ManifestError, open_regular, shown, special_kind, warn_each_time
from ..paths import atomic_file
from ..prompts import markup_in
from .packed import PackedList

MAX_LISTED = 20  # problems listed in a ManifestError; the rest are counted
CHARS_PER_SECOND = 60  # more text than this a second of speech is no transcript or translation of it, in any script:
#   fast speech is some 15-20 characters a second in Latin scripts (a translation ~1.3x its source), ~4-8 in CJK ones
MIN_TEXT_LIMIT = 500  # the bound of a short clip (a 0.6 s "yes" may carry a longer translation)
# field -> accepted JSON types (None = null allowed). `source` is optional; the others must be present.
FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "audio": (str,),
    "duration": (int, float),
    "src_lang": (str,),
    "transcript": (str,),
    "tgt_lang": (str, type(None)),
    "translation": (str, type(None)),
    "split": (str,),
    "corpus": (str,),
    "sentence_id": (str, int),
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"source": (str, type(None))}

# preset -> (sources, targets); None means every chosen language.
DIRECTION_PRESETS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "all": (None, None),
    "6x12": (languages.SOURCES_6X12, languages.TARGETS_6X12),
    "15x14": (tuple(languages.LANGUAGES), tuple(languages.LANGUAGES)),
}


@dataclass(frozen=True)
class Row:
    id: str  # unique within a manifest
    audio: str  # path of the audio file (resolved against the manifest's folder when read)
    duration: float  # seconds
    src_lang: str  # ISO 639-3 of the speech
    transcript: str  # what is said
    tgt_lang: str  # ISO 639-3 of the translation; "" for an ASR-only row
    translation: str  # "" for an ASR-only row
    split: str  # train / dev / test (or any name a corpus uses)
    corpus: str  # fleurs / covost2 / commonvoice / mini / ...
    sentence_id: str  # the same sentence in every language shares it (FLEURS id); splits are disjoint by it
    source: str = ""  # provenance (e.g. the gettext domain of a mini-corpus sentence)

    @property
    def is_asr(self) -> bool:
        """True for a transcript-only row (no translation)."""
        return not self.tgt_lang


_ROW_FIELDS = tuple(f.name for f in fields(Row))


class PackedRows(PackedList):
    """Rows in one buffer (llm_srt.data.packed): what training keeps of its millions of rows, shared by the
    DataLoader workers instead of copied into each."""

    def encode(self, row: Row) -> tuple:
        return tuple(getattr(row, name) for name in _ROW_FIELDS)

    def decode(self, fields: tuple) -> Row:
        return Row(*fields)


NOT_A_MANIFEST = ("a manifest is JSON-lines text, one row a line naming an audio file and its transcript and "
                  "translation (README, Data); make one with `llm-srt prepare`, or translate an audio file with "
                  "`llm-srt translate FILE`")  # said of a file that is not one (binary, or no line of it JSON)
SNIFF_BYTES = 8192  # read for binary content before a manifest's lines are
AUDIO_MAGIC = ((0, b"RIFF", "WAV audio"), (0, b"RF64", "WAV audio"), (0, b"fLaC", "FLAC audio"),
               (0, b"OggS", "Ogg audio"), (0, b"ID3", "MP3 audio"), (0, b"FORM", "AIFF audio"),
               (4, b"ftyp", "MP4 audio or video"))  # (offset, bytes, what) of binary content named
SKIP_BAD = "fix them, or skip them (evaluate --skip-bad, train data.skip_bad=true)"  # read_manifest's advice for bad
#   rows, where evaluation or training reads the manifest; a verb that reads one for another use gives its own (`todo`)


def read_manifest(path: str | Path, check_audio: bool = True, skip_bad: bool = False,
                  max_duration: float | None = None, max_text: int | None = None,
                  on_skipped: Callable[[str], object] | None = None, todo: str = SKIP_BAD,
                  read_headers: bool = False, skipped: list[tuple[str, str]] | None = None) -> list[Row]:
    """Read and validate a JSONL manifest. Every bad row is reported as `file:line: what is wrong`.

    Checks: JSON syntax, missing fields, field types, unknown language codes, a translation without a target
    language (or the reverse), non-positive duration, duplicate ids and (with `check_audio`) audio that is
    missing, empty or unreadable (with `read_headers` also one whose header no decoder reads or shows cut short, as
    the converters check theirs: `prepare check`; training and evaluation skip or count such a clip as they decode
    it), and (with `max_duration`, training's 30 s) a row longer than that or whose
    transcript or translation is longer than its duration can hold (`text_limit`: one such row padded a batch to
    ~12k target tokens, out of GPU memory, and the resumed run drew it again), and (with `max_text`, a text-only
    stage's bound, whose durations are not read) a text longer than that. Without `skip_bad` any problem raises
    ManifestError listing them all (the first MAX_LISTED, then a count); with `skip_bad` the bad rows are dropped
    with a warning (a Python warning, or one line to `on_skipped`), and each appended to `skipped` (where given) as
    ("file:line", why). `todo`: what the error for bad rows advises (the
    default names evaluate's and train's options to skip them; `prepare commonvoice --exclude` has none). Each audio
    file is checked once however many rows (directions) share it.
    """
    path = Path(path)
    name = shown(str(path))
    if not path.exists() and not path.is_symlink():
        raise ManifestError(f"{name}: no such manifest file; build one with `llm-srt prepare`")
    fd = open_regular(path, name, ManifestError)  # a FIFO, device or symlink loop: named, never waited on
    binary = _sniff(fd, name)
    base = path.parent
    rows: list[Row] = []
    problems: list[tuple[str, str]] = []  # (file:line, why) of each bad row
    first_line_of: dict[str, int] = {}
    audio_problems: dict[Path, str | None] | None = {} if check_audio else None  # file -> its problem, if any
    json_lines = 0  # lines that parse as JSON: with none, the file is no manifest
    try:
        with os.fdopen(fd, "rb") as f:  # bytes, so that one line that is not UTF-8 is reported like any bad row
            for lineno, raw in enumerate(f, start=1):
                where = f"{name}:{lineno}"
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    problems.append((where, f"not UTF-8 text (byte {e.start + 1}); save the manifest as UTF-8"))
                    continue
                if not line.strip():
                    continue
                try:
                    row = _parse_row(line, base, audio_problems, read_headers)
                except _BadRow as e:
                    json_lines += not isinstance(e, _NotJSON)
                    problems.append((where, str(e)))
                    continue
                json_lines += 1
                if row.id in first_line_of:
                    problems.append((where, f"duplicate id {row.id!r} (first on line {first_line_of[row.id]})"))
                    continue
                if problem := (training_refuses(row, max_duration) if max_duration is not None
                               else _text_too_long(row, max_text, True)):
                    problems.append((where, problem))
                    continue
                first_line_of[row.id] = lineno
                rows.append(row)
    except OSError as e:
        raise ManifestError(f"{name}: cannot read the manifest ({e.strerror or e}); check its permissions") from None
    no_json = len(problems) > 1 and not json_lines  # no manifest: said first (one line: its own problem)
    if no_json and binary:  # (its "lines" are noise)
        raise ManifestError(f"{name}: not a JSON-lines manifest (binary content); {NOT_A_MANIFEST}")
    if problems and (no_json or not skip_bad):
        listed = "\n  ".join(f"{at}: {why}" for at, why in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        head = (f"not a JSON-lines manifest, no line of it is JSON ({len(problems):,} lines); "
                f"{NOT_A_MANIFEST if todo == SKIP_BAD else todo}" if no_json else f"{len(problems)} bad row(s); {todo}")
        raise ManifestError(f"{name}: {head}:\n  {listed}{more}")
    if problems:
        notice = f"{name}: skipped {len(problems)} bad rows (first: {problems[0][0]}: {problems[0][1]})"
        on_skipped(notice) if on_skipped is not None else warn_each_time(notice, stacklevel=2)
        if skipped is not None:
            skipped.extend(problems)
    if not rows:
        raise ManifestError(f"{name}: the manifest has no usable rows")
    return rows


def training_refuses(row: Row, max_duration: float) -> str | None:
    """What training (read_manifest's `max_duration`: Whisper's 30 s window) refuses in `row`, in the words it names
    it with: longer than `max_duration`, or a transcript or translation longer than its duration can hold
    (`text_limit`). None for a row it takes."""
    if row.duration > max_duration:
        return (f"{row.duration:g} s is longer than the {max_duration:g} s a training utterance may last (Whisper's "
                "window); cut it into shorter utterances or drop it")
    return _text_too_long(row, text_limit(row.duration), False)


def text_limit(seconds: float) -> int:
    """The most characters a transcript or translation of `seconds` of speech may have in training."""
    return max(MIN_TEXT_LIMIT, math.ceil(CHARS_PER_SECOND * seconds))


def _text_too_long(row: Row, limit: int | None, text_only: bool) -> str | None:
    """What is wrong with a row whose transcript or translation has more than `limit` characters (None: unchecked)."""
    for key, text in (("transcript", row.transcript), ("translation", row.translation)):
        if limit is not None and len(text) > limit:
            bound = (f"the {limit:,} a row of a text-only stage may have" if text_only else
                     f"{row.duration:g} s of speech can hold (at most {limit:,}: {CHARS_PER_SECOND} a second, at "
                     f"least {MIN_TEXT_LIMIT})")
            return (f"{key} has {len(text):,} characters, more than {bound}: a misaligned or merged row, whose "
                    "batch would run out of memory; fix it, split it or drop it")
    return None


def line_of(path: str | Path, row_id: str) -> int | None:
    """The line of manifest `path` that holds the row `row_id` (None if none does): for a problem found after the
    rows were read, named as `file:line` as read_manifest names its own."""
    return lines_of(path, {row_id}).get(row_id)


def lines_of(path: str | Path, row_ids: Collection[str]) -> dict[str, int]:
    """row id -> the line of manifest `path` that first holds it, for those of `row_ids` it holds (one read of the
    file, which stops once all are found)."""
    wanted, found = set(row_ids), {}
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    row_id = json.loads(raw).get("id")
                except (ValueError, AttributeError, RecursionError):  # a line read_manifest skipped as bad
                    continue
                if isinstance(row_id, str) and row_id in wanted:
                    found.setdefault(row_id, lineno)
                    if len(found) == len(wanted):
                        break
    except OSError:
        pass
    return found


def write_manifest(path: str | Path, rows: Iterable[Row], staged: list[tuple[Path, Path]] | None = None) -> int:
    """Write rows as JSONL atomically (a temporary file, then rename). Audio under the manifest's folder is
    written relative to it, so the folder can be moved. Returns the number of rows written. `staged`: the rename
    is left to the caller (paths.atomic_file's `staged`)."""
    path = Path(path)
    name = shown(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.abspath(path.parent))
    n = 0
    with atomic_file(path, staged=staged) as f:
        for row in rows:
            line = json.dumps(row_to_dict(row, base), ensure_ascii=False)
            if problem := _not_utf8(line):  # the file is left as it was
                raise ManifestError(f"{name}: row {n + 1} (id {row.id!r}) {problem}")
            f.write(line + "\n")
            n += 1
    return n


def row_to_dict(row: Row, base: Path | None = None) -> dict:
    """The JSON object of a row; `audio` relative to `base` when the file lies under it."""
    d = asdict(row)
    if base is not None:
        audio = Path(os.path.abspath(row.audio))  # a relative path in memory is relative to the working folder
        try:
            d["audio"] = audio.relative_to(base).as_posix()
        except ValueError:
            d["audio"] = str(audio)
    if not d["source"]:
        del d["source"]
    return d


def targets_by_source(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Directions (src, tgt) -> the target languages of each source, in order; a missing source has none."""
    targets: dict[str, list[str]] = defaultdict(list)
    for src, tgt in pairs:
        targets[src].append(tgt)
    return targets


def parse_directions(spec: str, langs: list[str]) -> list[tuple[str, str]]:
    """Translation directions among `langs`: "all" (every ordered pair), "6x12" / "15x14" (the paper's
    settings, restricted to `langs`), "none", or "SRC,SRC:TGT,TGT" (e.g. "eng,deu:fra,spa")."""
    spec = spec.strip()
    if spec in DIRECTION_PRESETS:
        sources, targets = DIRECTION_PRESETS[spec]
        sources = [c for c in (sources or langs) if c in langs]
        targets = [c for c in (targets or langs) if c in langs]
        if len(langs) > 1 and not any(s != t for s in sources for t in targets):  # an ASR-only manifest by mistake
            src, tgt = (", ".join(codes) for codes in DIRECTION_PRESETS[spec])
            raise LLMSRTError(f"directions {spec!r} translate from {src} into {tgt}: none of them is among the "
                              f"languages {', '.join(langs)}; use all, none or SRC,..:TGT,..")
    elif spec == "none":
        return []
    elif spec.count(":") == 1:
        left, right = spec.split(":")
        sources, targets = languages.parse_list(left), languages.parse_list(right)
        missing = sorted(set(sources + targets) - set(langs))
        if missing:
            raise LLMSRTError(f"directions {spec!r} name {', '.join(missing)}, which are not among the "
                              f"languages {', '.join(langs)}; add them to --langs")
    else:
        raise LLMSRTError(f"directions {spec!r}: use all, 6x12, 15x14, none or SRC,..:TGT,.. "
                          "(e.g. eng,deu:fra,spa)")
    return [(s, t) for s in sources for t in targets if s != t]



class _BadRow(Exception):
    pass


class _NotJSON(_BadRow):
    """A line that does not parse as JSON at all."""


def _sniff(fd: int, name: str) -> bool:
    """Whether the file's first SNIFF_BYTES look binary (NUL bytes, not as UTF-16 text has them: a BOM, or in every
    other byte alone, a quarter of them at least). An audio file's (AUDIO_MAGIC) raises ManifestError at once, `fd`
    closed: its thousand "lines" were each reported as a bad row, and the whole file read for it."""
    try:
        head = os.pread(fd, SNIFF_BYTES, 0)
    except OSError:  # (the read below says so)
        return False
    if kind := next((kind for at, magic, kind in AUDIO_MAGIC if head[at:at + len(magic)] == magic), None):
        os.close(fd)
        raise ManifestError(f"{name}: not a JSON-lines manifest ({kind}, binary); {NOT_A_MANIFEST}")
    even, odd = head[0::2], head[1::2]  # UTF-16 of ASCII: every other byte NUL, the others none
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) or any(0 not in one and 4 * other.count(0) >= len(other)
                                                               for one, other in ((even, odd), (odd, even)))
    return 0 in head and not utf16


def _parse_row(line: str, base: Path, audio_problems: dict[Path, str | None] | None, read_headers: bool = False
               ) -> Row:
    """One JSON line -> a Row; `audio_problems` (None: audio unchecked) remembers each file's check."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        # (json's "Invalid control character at" and "Unterminated string starting at" end in "at" themselves)
        raise _NotJSON(f"not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # a number of > 4300 digits, nesting deeper than Python's stack
        raise _BadRow(f"not usable JSON ({type(e).__name__}: {str(e)[:60]})") from None
    if not isinstance(obj, dict):
        raise _BadRow(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in FIELDS if k not in obj]
    if missing:
        raise _BadRow(f"missing field(s) {', '.join(missing)}")
    for key, types in {**FIELDS, **OPTIONAL_FIELDS}.items():
        if key in obj and (not isinstance(obj[key], types) or isinstance(obj[key], bool)):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise _BadRow(f"field {key!r} should be {wanted}, got {type(obj[key]).__name__} {obj[key]!r:.40}")
    for key in (*FIELDS, *OPTIONAL_FIELDS):
        if isinstance(obj.get(key), str) and (problem := _not_utf8(obj[key])):
            raise _BadRow(f"field {key!r} {problem}")
    for key in ("id", "audio", "src_lang", "split", "corpus"):
        if not obj[key].strip():
            raise _BadRow(f"field {key!r} is empty")
    try:
        duration = float(obj["duration"])
    except OverflowError:
        duration = math.inf
    if not (duration > 0 and math.isfinite(duration)):
        raise _BadRow(f"duration {obj['duration']!r:.40} is not positive and finite; give the length in seconds")
    tgt, translation = obj["tgt_lang"] or "", obj["translation"] or ""
    for key, code in (("src_lang", obj["src_lang"]), ("tgt_lang", tgt)):
        if code and code not in languages.LANGUAGES:
            hint = f"; did you mean {meant!r}?" if (meant := languages.meant_code(code)) else ""
            raise _BadRow(f"{key} {code!r} is not a known language (ISO 639-3: "
                          f"{', '.join(sorted(languages.LANGUAGES))}; add others to llm_srt/languages.py){hint}")
    if bool(tgt) != bool(translation.strip()):
        raise _BadRow("tgt_lang and translation must both be set (translation row) or both be empty (ASR row)")
    if tgt == obj["src_lang"]:  # trained as a translation, it taught the model to copy (SRT: the text twice), and
        #   scored as one it reported a transcript's BLEU as a translation's
        raise _BadRow(f"tgt_lang {tgt!r} is the speech's own language (src_lang): a transcription row leaves "
                      "tgt_lang and translation empty; or give the language the translation is in")
    if not tgt and not obj["transcript"].strip():  # it would train (or score) an empty transcript
        raise _BadRow("transcript is empty in an ASR row (no tgt_lang): fill it in or drop the row")
    for key, text in (("transcript", obj["transcript"]), ("translation", translation)):
        if found := markup_in(text):  # a tokenizer reads it as its token: EOS or a language tag inside a target
            raise _BadRow(f"{key} holds {found!r}, which the model reads as a tag or special token, not text; "
                          "remove or rewrite it")
    audio = Path(obj["audio"])
    relative = not audio.is_absolute()
    if relative:
        audio = base / audio
    if audio_problems is not None:
        if audio not in audio_problems:
            try:
                _check_audio(audio)
                if read_headers and (problem := _header_problem(audio)):
                    raise _BadRow(f"audio file {shown(str(audio))} {problem}; replace it with the whole file, or drop "
                                  "its rows")
                audio_problems[audio] = None
            except _BadRow as e:  # a path written from the working folder ("data/x.wav" in data/test.jsonl)
                audio_problems[audio] = str(e) + (f" (a relative audio path is read from the manifest's folder, "
                                                  f"{shown(str(base))})" if relative and "does not exist" in str(e)
                                                 else "")
        if audio_problems[audio]:
            raise _BadRow(audio_problems[audio])
    return Row(id=obj["id"], audio=str(audio), duration=duration, src_lang=obj["src_lang"],
               transcript=obj["transcript"], tgt_lang=tgt, translation=translation, split=obj["split"],
               corpus=obj["corpus"], sentence_id=str(obj["sentence_id"]), source=obj.get("source") or "")


def _not_utf8(text: str) -> str | None:
    """None for text that encodes as UTF-8; else what is wrong: a lone surrogate (JSON's "\\ud800" escape) is a
    string Python holds but no file, tokenizer or terminal can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"holds a lone surrogate {text[e.start]!r} at character {e.start + 1}, which is not text "
                "(a broken \\u escape); fix or drop it")
    return None


def _check_audio(audio: Path) -> None:
    where = shown(str(audio))
    try:
        mode = audio.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _BadRow(f"audio {where} is a symlink loop (the link leads back to itself); fix or remove the "
                          "link") from None
    except ValueError:  # a NUL byte: "does not exist" below
        pass
    else:
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise _BadRow(f"audio {where} is {special_kind(mode)}, not a regular file; save the audio to a file")
    try:
        if not audio.exists():
            raise _BadRow(f"audio file {where} does not exist")
        if not audio.is_file():
            raise _BadRow(f"audio {where} is not a file")
        if not os.access(audio, os.R_OK):
            raise _BadRow(f"audio file {where} is not readable (permissions)")
        if audio.stat().st_size == 0:
            raise _BadRow(f"audio file {where} is empty (0 bytes)")
    except (OSError, ValueError) as e:  # a name too long, a NUL byte in the path
        raise _BadRow(f"audio path {where[:80]!r} cannot be checked ({e}); fix the path") from None


def _header_problem(audio: Path) -> str | None:
    """What its header says is wrong with a clip, read as the converters read it (`clips._check`, ~0.1 ms a clip):
    one no decoder opens, or cut short (a WAV, AIFF, AU or W64 holding less than its header claims, an Ogg without its
    stream's last page), which load_audio refuses. A clip that existed and was not empty passed, so a corrupt or
    truncated file showed only at decode time (training skipped its rows, evaluation scored them empty)."""
    import soundfile as sf

    try:
        sf.info(str(audio))
        with audio.open("rb") as f:
            cut = sized_cut(f.fileno()) or ogg_cut_short(f.fileno())
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        reason = (getattr(e, "error_string", None) or getattr(e, "strerror", None) or str(e)).splitlines()[0]
        if "does not exist" in reason:  # libsndfile's words for an mp3 it cannot parse (the file is there)
            reason = "not a decodable audio file: damaged, or not wav/flac/mp3/ogg"
        return f"cannot be decoded ({reason.rstrip('.')})"
    return "is cut short (it ends before the length its header gives)" if cut else None
