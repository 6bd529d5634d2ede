"""What every system takes and gives (`model/systems.py`): an `Item` of work (audio or text, source, target, task),
its `Output`, the `System` protocol that runs a batch of items, and the checks and parsing all systems share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np

from .. import languages
from ..audio import SAMPLE_RATE, WINDOW_SECONDS
from ..errors import AudioError, LLMSRTError
from ..prompts import Task, first_part, markup_in, parse_srt, translation_part

if TYPE_CHECKING:
    from ..device import Placement
    from .decoding import DecodingOptions


@dataclass(frozen=True)
class Item:
    """One unit of work: a clip (<= 30 s, 16 kHz mono) or, for Task.MT, text only."""

    audio: np.ndarray | None  # 16 kHz mono float32; None for text-only MT
    src: str  # ISO 639-3 source language
    tgt: str | None  # ISO 639-3 target language; None for ASR
    task: Task
    transcript: str = ""  # the given transcript (SMT, MT); empty otherwise
    max_new_tokens: int | None = None  # this item's own output cap (None: the options'); a batch decodes to its
    #                                    largest cap, greedy cuts each row to its own and beam search stops each
    #                                    row's hypotheses at it (`decoding.RowCaps`), so no row depends on its batch


@dataclass(frozen=True)
class Output:
    """What a system made of one item. `error` set: this item failed (its neighbours did not)."""

    transcript: str = ""
    translation: str = ""
    error: str | None = None
    forced_tags: bool = False  # SRT: language tags were written for it (the model would have ended without its pair)
    capped: bool = False  # its output reached its token cap without an end token: cut there (every system sets it)


class System(Protocol):
    """A batch of mixed-language, mixed-task items -> one Output per item, in order."""

    name: str
    placement: Placement

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]: ...

    def detect_language(self, audio: np.ndarray) -> str:
        """ISO 639-3 code of the language spoken in `audio` (Whisper's language ID)."""
        ...


LID_MISSING = "cannot detect the language"  # in the error of a system without language ID, asked for it
LID_UNKNOWN = "language ID: "  # begins the error of language ID that heard a language the toolkit lacks
CANNOT_RUN = "cannot run: "  # begins the error of an item a system (or any) cannot run, known before decoding: the
#   same every time it is asked (an evaluation going on from a killed one keeps it, `infer.retryable`)


def check_item(item: Item) -> None:
    """A clear error for an item that no system can run (unknown language, missing target, audio, transcript)."""
    languages.get(item.src)
    if item.task.needs_translation:
        if item.tgt is None:
            raise LLMSRTError(f"task {item.task.value} needs a target language (--tgt)")
        languages.get(item.tgt)
    if item.task.needs_speech and item.audio is None:
        raise LLMSRTError(f"task {item.task.value} needs audio")
    if item.task.needs_speech and len(item.audio) > WINDOW_SECONDS * SAMPLE_RATE:  # refused alike by every system:
        #   the speech LLMs' encoder refuses it, Whisper's log-mel would keep the first 30 s and decode them as whole
        raise AudioError(f"audio of {len(item.audio) / SAMPLE_RATE:.1f} s is longer than Whisper's {WINDOW_SECONDS} s "
                         "window; segment long audio first (llm_srt.segment.segment; `llm-srt translate` does)")
    if item.task in (Task.SMT, Task.MT) and not item.transcript.strip():
        raise LLMSRTError(f"task {item.task.value} needs a transcript (translate's --transcript; an evaluation "
                          "manifest row's \"transcript\")")  # (evaluate runs SMT and --with-mt's MT from its rows)
    if item.task in (Task.SMT, Task.MT) and (found := markup_in(item.transcript)):
        raise LLMSRTError(f"the transcript holds {found!r}, which the tokenizer reads as its special token, not as "
                          "text (an end or a language switch in the prompt); remove it from the transcript")


def cap(item: Item, options: DecodingOptions) -> int:
    """The most tokens `item` may generate."""
    return min(options.max_new_tokens, item.max_new_tokens or options.max_new_tokens)


def split_output(text: str, item: Item, tags: Mapping[str, str] | None = None) -> Output:
    """A speech LLM's text for `item` -> Output (SRT parsed into its two parts; SMT/MT keep the given transcript);
    `tags`: the model's own tag codes (SpeechLLMConfig.language_tags)."""
    if item.task is Task.SRT:
        out = parse_srt(text, tags)
        return Output(out.transcript, out.translation)
    if item.task is Task.ASR:
        return Output(first_part(text), "")
    return Output(item.transcript.strip(), translation_part(text, item.src, tags))
