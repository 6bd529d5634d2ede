"""The instructions of paper Table 1 (minimal tags, no chat template) and the parser of SRT output.

Every task turns (transcript, translation, src, tgt) into (input text, target text); the input text follows the
speech embeddings. `parse_srt()` splits "transcript<|src|><|tgt|>translation" back into its parts and never raises.
A model trained with other codes in its tags than ours (the reference's <|cmn|> for Mandarin) has them in its
`SpeechLLMConfig.language_tags`; every function here that writes or reads tags takes that map as `tags`.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

from . import languages
from .config import short
from .errors import LLMSRTError
from .subtitles import unspaced

PROMPT_FORMAT_VERSION = 1  # saved in checkpoints; bump when any template below changes
# A looping model's transcript written again at its translation's end is cut only from a transcript this long (a
# short one may end a real translation: "No." in "No, no."): words, or characters where it is written without spaces
# (three words of Chinese are about five characters; Korean counts words, as it puts spaces between them)
LOOP_MIN_WORDS = 3
LOOP_MIN_CHARS = 5


class Task(str, Enum):
    ASR = "asr"  # speech + <|src|> -> transcript
    SMT = "smt"  # speech + transcript<|src|><|tgt|> -> translation (speech-aided MT)
    SRT = "srt"  # speech + <|src|><|tgt|> -> transcript<|src|><|tgt|>translation
    S2TT = "s2tt"  # speech + <|src|><|tgt|> -> translation (the paper's Baseline: direct instruction tuning)
    MT = "mt"  # text only: transcript<|src|><|tgt|> -> translation (cascade, MT-vs-S2TT)
    ASR_SMT = "asr+smt"  # two passes of one model: ASR, then SMT from its own transcript (the paper's "w/o SRT"
    #                      ablation: a model trained through ASR and SMT only); inference only, no prompt of its own

    @property
    def needs_speech(self) -> bool:
        return self is not Task.MT

    @property
    def writes_transcript(self) -> bool:
        """A task whose output holds a transcript of the speech (its WER/CER is scored)."""
        return self in (Task.ASR, Task.SRT, Task.ASR_SMT)

    @property
    def trainable(self) -> bool:
        """A task with training examples of its own (ASR_SMT is two passes of ASR and SMT at inference)."""
        return self is not Task.ASR_SMT

    @classmethod
    def trainable_names(cls) -> str:
        return ", ".join(t.value for t in cls if t.trainable)

    @classmethod
    def trainable_named(cls, name: object) -> "Task":
        """The task called `name`, which must have training examples of its own; else an LLMSRTError saying what
        to train instead (a config's data.tasks and a loader's task mix both check their names here)."""
        try:
            task = cls(name)
        except ValueError:
            raise LLMSRTError(f"unknown task {short(name)}; use {cls.trainable_names()}") from None
        if not task.trainable:
            raise LLMSRTError(f"{task.value} cannot be trained: it is an SMT-stage model's two passes at inference "
                              f"(asr, then smt); train {{smt: ..., asr: ...}} instead")
        return task

    @property
    def needs_translation(self) -> bool:
        return self is not Task.ASR


def tag(code: str, tags: Mapping[str, str] | None = None) -> str:
    """'<|eng|>': the tag of an ISO 639-3 code, with the code `tags` gives it where the model was trained with
    another one ({"zho": "cmn"} -> '<|cmn|>'). The one place that turns a language into a model's tag."""
    return f"<|{tags.get(code, code) if tags else code}|>"


def _code(written: str, tags: Mapping[str, str] | None) -> str:
    """The ISO 639-3 code of a tag's code as a model writes it: `tag`'s inverse."""
    return next((code for code, own in tags.items() if own == written), written) if tags else written


def build(task: Task | str, src: str, tgt: str | None = None, transcript: str = "", translation: str = "",
          tags: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(input text, target text) for one example of `task`. Codes are ISO 639-3 (checked); `tags`: the model's
    own codes for some of them (SpeechLLMConfig.language_tags)."""
    task = Task(task)
    if not task.trainable:
        raise LLMSRTError(f"task {task.value} has no prompt of its own: it runs as asr, then smt")
    languages.get(src)
    if task is Task.ASR:
        return tag(src, tags), transcript.strip()
    if tgt is None:
        raise LLMSRTError(f"task {task.value} needs a target language")
    languages.get(tgt)
    pair = tag(src, tags) + tag(tgt, tags)
    if task is Task.SMT or task is Task.MT:
        return transcript.strip() + pair, translation.strip()
    if task is Task.SRT:
        return pair, srt_target(transcript, translation, src, tgt, tags)
    return pair, translation.strip()  # S2TT


def srt_target(transcript: str, translation: str, src: str, tgt: str, tags: Mapping[str, str] | None = None) -> str:
    """'Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen?' (paper Table 1)."""
    return f"{transcript.strip()}{tag(src, tags)}{tag(tgt, tags)}{translation.strip()}"


@dataclass(frozen=True)
class SRTOutput:
    transcript: str
    translation: str
    src: str | None  # the languages of the tags found in the output, if any (ISO 639-3 where `tags` maps them)
    tgt: str | None
    well_formed: bool  # exactly "transcript<|a|><|b|>translation" with both parts non-empty


# a language tag; not one of the tokenizers' own tags of that shape that decoding may leave in the text (Qwen2.5's
# <|fim_pad|>, <|fim_prefix|>, ... are not special tokens; <|im_end|> and <|box_start|> where a tokenizer keeps them)
_TAG = re.compile(r"<\|(?!(?:fim|im|box)_)([a-z]{2,3}(?:[-_][A-Za-z]+)?)\|>")
_CODES = "|".join(sorted({code for lang in languages.LANGUAGES.values() for code in (lang.code, lang.whisper)}))


def _spaced(names: str, slash: str = "") -> str:
    """A regex: a tag of `names` (a regex) written with spaces inside ("< |eng|>", "<|deu| >": a small model wrote
    them, on a 42 s clip), `slash` (a regex) before its first bar. What `clean` drops and `parse_srt` splits on."""
    return rf"<\s*{slash}\|\s*{names}\s*\|\s*>"


_SPACED = (_spaced(rf"(?:{_CODES}|endoftext|im_start|im_end)", r"/?\s*")  # spaced, only around the registry's codes
           + r"|<\s*/?\s*(?:eos|bos|pad|end_of_turn|start_of_turn)\s*>|<\s*/\s*s\s*>")  # and the special tokens
#   named here ("a < b | c > d" and "x < |y| > z" are text)
# an SRT output's language tag, spaced too where `clean` drops it as one: group 1 unspaced, 2 spaced (`_written`)
_PART_TAG = re.compile(rf"{_TAG.pattern}|{_spaced(f'({_CODES})')}")
# "</|eng|>": a small model's closing-tag look-alike of a language tag (seen in a transcript), no text either
_SPECIAL = re.compile(r"</?\|[^|<>]{0,20}\|>|<(?:eos|bos|pad|end_of_turn|start_of_turn)>|</s>|" + _SPACED)
_MARKUP = re.compile(r"</?\|[^|<>\s]{1,20}\|>|<(?:eos|bos|pad|end_of_turn|start_of_turn)>|</s>")  # what a tokenizer
#   reads as its token: `_SPECIAL` without the empty or spaced look-alikes (`<| update |>`: Elm's operators, plain text)
_CUT_TAG = re.compile(r"<\|[^|<>\s]{0,20}\|?\s*$")  # a tag cut off by the token cap: "<|en", "<|eng|"


def markup_in(text: str) -> str | None:
    """The first tag or special token (`<|deu|>`, `<|endoftext|>`, `</s>`, `<eos>`...) written in `text`, or None:
    in a transcript or translation the tokenizer reads it as that token, not as text, so a model trained on it would
    learn to end or to switch language mid-sentence."""
    m = _MARKUP.search(text)
    return m.group(0) if m else None


def _written(m: re.Match) -> str:
    """The code of a `_PART_TAG` match as the model wrote it, without spaces."""
    return m.group(1) or m.group(2)


def parse_srt(text: str, tags: Mapping[str, str] | None = None) -> SRTOutput:
    """Split an SRT output into transcript and translation. Never raises. `tags`: the model's own codes (`tag`);
    src and tgt come back as ours.

    The first run of language tags separates the parts (a tag written with spaces inside, "< |eng|>", is one where
    `clean` drops it as one); tags after it and special tokens are dropped, and a translation that repeats the tag
    pair (a looping model) is cut at the repeat (and before the transcript written again in front of it), or at a tag
    the token cap cut off.
    An output that starts with the prompt's tags again is parsed after them when more tags follow.
    """
    text = text if isinstance(text, str) else str(text)
    matches = list(_PART_TAG.finditer(text))
    if not matches:
        return SRTOutput(clean(text), "", None, None, False)
    if not text[:matches[0].start()].strip():  # the prompt's tags written again first ("<|eng|><|deu|>Hello.<|eng|>
        lead = _tag_run(text, matches)  # <|deu|>Hallo."): the parts follow them, when a pair of tags follows text
        rest = matches[len(lead):]
        # (a lone source tag first too: "<|eng|>Hello<|eng|><|deu|>.."; or the source tag alone with text after it, a
        # pair whose target tag the model left out: "<|eng|><|deu|>Hello<|eng|>Hallo"; the target's own tag there
        # ends a translation: "<|eng|><|deu|>Hallo<|deu|>Hallo")
        nxt_run = _tag_run(text, rest) if rest else []
        if rest and (len(nxt_run) >= 2 or (_written(nxt_run[0]) == _written(lead[0])
                                           and clean(text[nxt_run[-1].end():]))):
            return replace(parse_srt(text[lead[-1].end():], tags), well_formed=False)
    first = matches[0]
    run = _tag_run(text, matches)
    transcript = clean(text[:first.start()])
    rest = text[run[-1].end():]
    nxt = _PART_TAG.search(rest)
    translation = clean(rest[:nxt.start()] if nxt else rest)
    if nxt:
        translation = _without_loop(transcript, translation, rest[nxt.start():])
    codes = [_code(_written(m), tags) for m in run]
    src = codes[0]
    tgt = codes[1] if len(codes) > 1 else None
    well_formed = (len(codes) == 2 and bool(transcript) and bool(translation) and nxt is None
                   and not _CUT_TAG.search(rest))
    return SRTOutput(transcript, translation, src, tgt, well_formed)


def _without_loop(transcript: str, translation: str, after: str) -> str:
    """A translation cut at repeated tags, less the transcript written again at its end when that is a loop of the
    whole "transcript<|a|><|b|>translation" unit, whose next part repeats the translation without it. Only for a
    transcript of LOOP_MIN_WORDS words or LOOP_MIN_CHARS characters of a script written without spaces; with a space
    before it, or none where either side of the join is written without spaces (nothing parts "Regnet es?明天会下雨吗？"
    nor "明天会下雨吗？Will it rain?")."""
    if not _long(transcript) or not translation.endswith(transcript):
        return translation
    head = translation[:-len(transcript)]
    if not head.strip() or not (head[-1].isspace() or unspaced(head[-1]) or unspaced(transcript[0])):
        return translation
    head = head.rstrip()
    run = _tag_run(after, list(_PART_TAG.finditer(after)))
    rest = after[run[-1].end():]
    nxt = _PART_TAG.search(rest)
    again = clean(rest[:nxt.start()] if nxt else rest)
    return head if again in (head, translation) else translation


def _long(transcript: str) -> bool:
    """Whether a transcript is long enough to tell its repeat from a translation's last words (LOOP_MIN_WORDS)."""
    if any(map(unspaced, transcript)):
        return sum(ch.isalnum() for ch in transcript) >= LOOP_MIN_CHARS
    return len(transcript.split()) >= LOOP_MIN_WORDS


def after_first_tags(text: str) -> str | None:
    """The raw text after an SRT output's first run of language tags (None: no tag yet); once it is not blank, no
    longer text makes it blank again (what a decoder's end rule may rely on: `systems.SpeechLLMSystem._srt_tags`)."""
    matches = list(_PART_TAG.finditer(text))
    return text[_tag_run(text, matches)[-1].end():] if matches else None


def _tag_run(text: str, matches: list[re.Match]) -> list[re.Match]:
    """The first tag match and those right after it (only whitespace between)."""
    run = [matches[0]]
    for m in matches[1:]:
        if m.start() == run[-1].end() or not text[run[-1].end():m.start()].strip():
            run.append(m)
        else:
            break
    return run


def translation_part(text: str, src: str, tags: Mapping[str, str] | None = None) -> str:
    """A translation-only output (S2TT, SMT, MT): `first_part`, unless the model wrote the transcript first, then
    the source's tag and the rest ("Will it rain?<|eng|><|deu|>Regnet es?": S2TT's prompt is SRT's, so an
    SRT-trained model asked for S2TT does), whose translation is the part after the tags. `tags`: as `parse_srt`."""
    out = parse_srt(text, tags)
    return out.translation if out.src == src and out.transcript else first_part(text)


def first_part(text: str) -> str:
    """A one-part output (ASR's transcript; S2TT's, SMT's, MT's translation) up to a language tag after its text,
    `clean`ed: an SRT-trained model asked for a transcript may go on with "<|eng|><|deu|>" and a translation, which
    would count as inserted words (and, in asr+smt, go into the SMT prompt as transcript). Tags before the text (the
    prompt's, written again) are passed over."""
    matches = list(_TAG.finditer(text))
    if matches and not text[:matches[0].start()].strip():
        text = text[_tag_run(text, matches)[-1].end():]
    nxt = _TAG.search(text)
    return clean(text[:nxt.start()] if nxt else text)


def clean(text: str) -> str:
    """Model text without language tags or special tokens (nor a tag the token cap cut off at its end), whitespace
    folded. A token between words leaves a space, none between characters of a script written without spaces
    ("你好<|im_end|>世界": "你好世界")."""
    out = ""
    for part in _SPECIAL.split(_CUT_TAG.sub("", text)):
        if out and part and not (unspaced(out[-1]) and unspaced(part[0])):
            out += " "
        out += part
    return " ".join(out.split())
