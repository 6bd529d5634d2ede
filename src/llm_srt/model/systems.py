"""Every way to turn speech (or text) into transcripts and translations, behind one call.

A *system* takes a batch of work items, each with its own audio (or text), source, target and task, and returns one
`Output` per item, in order (whisper's `DecodingTask` and HF pipelines are the models):

    system = load_system("runs/embedded/srt/final", device.resolve("auto"))
    system.run_batch([Item(clip, "eng", "deu", Task.SRT), Item(None, "fra", "eng", Task.MT, "Bonjour.")], options)

Systems (SYSTEMS, else a SpeechLLM model folder):
- a SpeechLLM folder: speech items get `prompts.build` prompts and are parsed per task; text-only MT items run the
  model's own LLM with its LoRA (paper Figure 3's MT axis);
- `whisper`: Whisper's own encoder-decoder (ASR, and translation into English only);
- `mt`: text MT with MT_TEMPLATE over any causal-LM folder (`--llm`);
- `cascade`: Whisper ASR, then `mt` on the transcript (paper Table 3's "Whisper + Qwen2.5").

Only this module (with `protocol.py`, what every system takes and gives, and `whisper_system.py`) knows how each
system works; `infer`, `evaluate`, `serve` and `bench` hand over mixed batches.
A system never picks a device: it loads onto the `Placement` it is given, in its dtype.
The task `auto` (translate's and evaluate's default, a request without one) is what a model folder was trained for
(`trained_task`, from its train_config.json): after training, generation must use the prompt format the model
learned (a Baseline folder run with the SRT prompt wrote its translation as the "transcript", then garbage).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from .. import languages
from ..device import Placement
from ..errors import LLMSRTError
from ..paths import EMBEDDED, STATE_DIR, STATE_JSON, TRAIN_CONFIG, resolve_model
from ..prompts import Task, after_first_tags, build, parse_srt, tag
from .protocol import CANNOT_RUN, LID_MISSING, Item, Output, System, cap, split_output
from .whisper_system import WhisperSystem, cannot_translate, detect_language

if TYPE_CHECKING:
    from .decoding import DecodingOptions, OnEnd, PartStart

MT_TEMPLATE = "Translate the following {src} text into {tgt}.\n{src}: {text}\n{tgt}:"  # text-only MT instruction
TAG_HEAD = re.compile(r"<(\|[A-Za-z_-]*\|?)?")  # the start of a language tag still being written ("<", "<|de", ...)
TAIL_TAGS = re.compile(r"(?:<\|[A-Za-z_-]+\|>\s*)*<?(?:\|[A-Za-z_-]*\|?)?$")  # tags (whole, or the last in part) an
#   output ends in: searched in its last ids' text, which may begin inside a tag ("g|><|de" of "<|eng|><|deu|>")
WHOLE_TAG = re.compile(r"<\|[A-Za-z_-]+\|>")  # one token that is a whole tag (an added token: the tiny test LLMs')
TAIL_IDS = 24  # the last ids decoded to find those tags: more than a language pair's tokens in any LLM's vocabulary
LEAD_TAGS = re.compile(r"\s*(?:<\|[a-z]{2,3}(?:[-_][A-Za-z]+)?\|>\s*)+")  # tags an output begins with (the prompt's)
AUTO_TASK = "auto"  # --task auto, a request without task: the task the model was trained for (auto_task)
# the task a model trained mainly on a task runs at inference: an SMT-stage model has no transcript given, so it runs
# its ASR, then its SMT (the paper's "w/o SRT"); anything else (srt, a text-only mt stage) runs SRT
INFERENCE_TASK = {Task.S2TT: Task.S2TT, Task.ASR: Task.ASR, Task.SMT: Task.ASR_SMT}


# ---- the speech LLM ------------------------------------------------------------------------------------------------
class SpeechLLMSystem:
    """A SpeechLLM (encoder + adapter + LLM, optional LoRA): speech items through the whole model, text-only MT
    items through its LLM (with its LoRA) from the MT prompt."""

    def __init__(self, model, name: str = "model", placement: Placement | None = None,
                 folder: str | Path | None = None):
        from .speech_llm import SpeechLLM

        if not isinstance(model, SpeechLLM):
            raise TypeError(f"SpeechLLMSystem wraps a SpeechLLM, not {type(model).__name__}")
        self.model = model.eval()
        self.name = name
        self.placement = placement or Placement(model.device, model.llm_dtype)
        self.folder = folder  # the folder it was loaded from (None: built in memory), whose training `auto` runs

    @cached_property
    def trained(self) -> tuple[Task, ...]:
        """The tasks its folder was trained on (`trained_tasks`), read once, when first asked: a run that names its
        task never reads them, and a folder trained again under a running server does not change its answers."""
        return trained_tasks(self.folder) if self.folder is not None else ()

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        if any(it.task is Task.ASR_SMT for it in items):
            return self._asr_then_smt(items, options)
        if any(it.task.needs_translation and it.tgt == it.src for it in items):
            return self._into_own_language(items, options)
        speech = [i for i, it in enumerate(items) if it.audio is not None]
        text = [i for i, it in enumerate(items) if it.audio is None]
        decoded: dict[int, tuple[str, bool, bool]] = {}
        tags = self.model.config.language_tags
        for idx, audio in ((speech, True), (text, False)):  # generate takes all-speech or all-text batches
            if not idx:
                continue
            prompts = [build(items[i].task, items[i].src, items[i].tgt, transcript=items[i].transcript, tags=tags)[0]
                       for i in idx]
            batch = {"prompts": prompts, "audio": [items[i].audio for i in idx] if audio else None}
            with torch.inference_mode():
                decoded.update(zip(idx, self.decode(batch, [items[i] for i in idx], options)))
        return [replace(split_output(decoded[i][0], it, tags), forced_tags=decoded[i][1], capped=decoded[i][2])
                for i, it in enumerate(items)]

    def decode(self, batch: dict, items: Sequence[Item], options: DecodingOptions,
               synced_ranks: bool = False) -> list[tuple[str, bool, bool]]:
        """One all-speech or all-text batch of `items` (`batch`: `SpeechLLM.generate_ids`'s, its prompts with their
        audio, or the cached features that stand for it) -> each row's (text, its SRT tags written for it, cut at its
        cap): each row up to its own cap (`cap`), an SRT row that would end before its tags given them
        (`_srt_tags`), n-grams counted per part (`_parts`). `run_batch`'s decoding, and training's dev decoding (its
        batches hold cached features; `synced_ranks` under FSDP), so a dev BLEU is the one evaluate gives."""
        rows: set[int] = set()  # rows whose SRT tags were written for them
        caps = [cap(it, options) for it in items]
        ids = self.model.generate_ids(batch, options, synced_ranks=synced_ranks, on_end=self._srt_tags(items, options),
                                      written=rows, caps=caps, part_start=self._parts(items, options))
        return [(self.model.tokenizer.decode(row[:c], skip_special_tokens=True), k in rows, len(row) >= c)
                for k, (row, c) in enumerate(zip(ids, caps))]  # (the ids exclude EOS: a row that wrote it ended
        #   before its cap)

    def _asr_then_smt(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        """Task.ASR_SMT items (the paper's "w/o SRT" ablation) in two batched passes of this one model: each clip's
        transcript (its ASR prompt), then its translation from the clip and that transcript (its SMT prompt),
        beside the batch's other items. A clip heard as nothing is translated from the clip alone (an empty
        transcript before the tags)."""
        two = [i for i, it in enumerate(items) if it.task is Task.ASR_SMT]
        heard = dict(zip(two, self.run_batch([replace(items[i], task=Task.ASR) for i in two], options)))
        second = [replace(it, task=Task.SMT, transcript=heard[i].transcript) if i in heard else it
                  for i, it in enumerate(items)]
        out = self.run_batch(second, options)
        return [Output(heard[i].transcript, o.translation, o.error, capped=heard[i].capped or o.capped)
                if i in heard else o for i, o in enumerate(out)]

    def _into_own_language(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        """Items into their own language (tgt == src) answer with the transcript, as the whisper system and the
        cascade do: speech is transcribed (its ASR prompt, beside the batch's other items), a given transcript (SMT,
        MT) is the answer as it is. The model was never trained on such a prompt: it ran to its cap, writing no
        translation."""
        same = {i for i, it in enumerate(items) if it.task.needs_translation and it.tgt == it.src}
        given = {i for i in same if items[i].task in (Task.SMT, Task.MT)}
        todo = [i for i in range(len(items)) if i not in given]
        asked = [replace(items[i], task=Task.ASR, tgt=None) if i in same else items[i] for i in todo]
        got = dict(zip(todo, self.run_batch(asked, options))) if todo else {}
        return [Output(it.transcript.strip(), it.transcript.strip()) if i in given
                else replace(got[i], translation=got[i].transcript) if i in same else got[i]
                for i, it in enumerate(items)]

    def _srt_tags(self, items: Sequence[Item], options: DecodingOptions) -> OnEnd | None:
        """With `options.force_srt_tags`: an SRT row that would end before its tag pair gets the tags it lacks
        written for it (the target's after the source's alone, else the pair) and goes on to the translation (greedy
        or beam search; else None)."""
        if not options.force_srt_tags or not any(it.task is Task.SRT for it in items):
            return None
        tokenizer, tags = self.model.tokenizer, self.model.config.language_tags

        def on_end(row: int, ids: list[int]) -> list[int] | None:
            it = items[row]
            text = tokenizer.decode(ids, skip_special_tokens=True) if it.task is Task.SRT else None
            out = parse_srt(text, tags) if text is not None else None
            # not SRT, or its pair written, or any text after one tag (raw: a prefix let end stays so for beam
            # search's EndRule, and tags added after text the parser takes for the translation would go unread)
            if out is None or out.tgt or (after_first_tags(text) or "").strip():
                return None
            # no tag, or another language's alone ("Hello<|deu|>" for eng->deu): the pair, right before the translation
            todo = tokenizer(("" if out.src == it.src else tag(it.src, tags)) + tag(it.tgt, tags),
                             add_special_tokens=False)["input_ids"]
            return None if len(ids) + len(todo) >= cap(it, options) else todo  # None: no room left for a translation

        return on_end

    def _parts(self, items: Sequence[Item], options: DecodingOptions) -> PartStart | None:
        """With --no-repeat-ngram: n-grams of an SRT row (S2TT's, whose prompt is SRT's: a model may write the
        transcript first) counted within its transcript and within its translation (`TranslationStart`), so that a
        translation may repeat its transcript's numbers and names (else None)."""
        srt = [it.task in (Task.SRT, Task.S2TT) for it in items]
        return TranslationStart(self.model.tokenizer, srt) if options.no_repeat_ngram_size and any(srt) else None

    def detect_language(self, audio: np.ndarray) -> str:
        return detect_language(self.model.config.encoder, audio, self.placement, encoder=self.model.encoder)


class TranslationStart:
    """`decoding.PartStart` of SRT outputs: a row's (a hypothesis's) n-grams are counted over all its ids until it
    has written text after its first run of language tags (`prompts.after_first_tags`), then from the first id of
    that text on (its translation alone); an output that begins with the prompt's tags again has them left out of
    its transcript's count (else the tags after the transcript repeated them, and were blocked, and so was a
    translation beginning as the transcript does); `srt[row]` False: over all. A tag is several tokens in most LLMs'
    vocabularies (Gemma's "<|eng|><|deu|>": "<", "|", "eng", "|", "><", ...), so the ids are decoded: only a row's
    that hold a token with a ">" in it, and only until the first id of its part is found, which is kept with the ids
    up to it (a beam's later extensions find it there). While a row ends in tags written in pieces, nothing is counted
    (`_in_tags`: the pieces repeat within a pair, "|" four times, and --no-repeat-ngram 1 broke the tags)."""

    def __init__(self, tokenizer, srt: Sequence[bool]):
        self.tokenizer, self.srt = tokenizer, list(srt)
        self.pieces: dict[int, str] = {}  # token id -> its token's text (`_piece`)
        self.found: dict[int, list[tuple[int, ...]]] = {}  # row -> ids up to its translation's first, per hypothesis
        self.begun: dict[int, list[tuple[int, ...]]] = {}  # row -> ids up to its transcript's first, after tags

    def __call__(self, row: int, ids: list[int]) -> int:
        if not self.srt[row]:
            return 0
        if (start := self._known(self.found, row, ids)) is not None:  # its translation found at an earlier step
            return start
        if self._in_tags(ids):  # its tags are written outside any count (Gemma's "<|eng|><|deu|>" holds "|" four
            return len(ids)  #   times: counted, --no-repeat-ngram 1 broke it, "<g|>" leaking into the transcript)
        if not any(map(self._closes, ids)):
            return 0
        if (start := self._first(self.found, row, ids, self._translated)) is not None:
            return start
        if (start := self._known(self.begun, row, ids)) is not None:  # its transcript's start, after leading tags
            return start
        return self._first(self.begun, row, ids, self._transcribing) or 0

    @staticmethod
    def _known(heads: dict[int, list[tuple[int, ...]]], row: int, ids: list[int]) -> int | None:
        """The index `_first` found for a hypothesis of `row` that `ids` extends (None: none found yet)."""
        for head in heads.get(row, ()):
            if len(ids) >= len(head) and tuple(ids[:len(head)]) == head:
                return len(head) - 1
        return None

    def _first(self, heads: dict[int, list[tuple[int, ...]]], row: int, ids: list[int], test) -> int | None:
        """The index of the id from which `test` holds for `ids`' prefixes (it holds for every longer one once it
        holds: a search), kept in `heads` with the ids up to it (`_known` finds it there); None where it does not hold
        yet."""
        if not test(ids):
            return None
        low, high = 1, len(ids)
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if test(ids[:mid]) else (mid + 1, high)
        heads.setdefault(row, []).append(tuple(ids[:low]))
        return low - 1

    def _in_tags(self, ids: list[int]) -> bool:
        """Whether the ids end in language tags written in pieces, or the head of one ("<", "<|de", "...|>"): the next
        token may go on writing them (the first "<" of a run is counted with the text before it). A vocabulary with a
        token per tag writes no piece twice in a pair, and its tags are counted as any token is. Decoded only where one
        of the last TAIL_IDS tokens holds a "<" or "|": text without either ends in no tag (this runs at every step
        of every row whose translation has not begun)."""
        if not any("<" in piece or "|" in piece for piece in map(self._piece, ids[-TAIL_IDS:])):
            return False
        if WHOLE_TAG.fullmatch(self.tokenizer.decode(ids[-1:], skip_special_tokens=True).strip()):
            return False
        text = self.tokenizer.decode(ids[-TAIL_IDS:], skip_special_tokens=True).rstrip()
        return TAIL_TAGS.search(text).start() < len(text)  # (it matches "" at the end of any other text)

    def _closes(self, token: int) -> bool:
        return ">" in self._piece(token)

    def _piece(self, token: int) -> str:
        """The token's text as the vocabulary holds it (cached: asked at every step)."""
        if token not in self.pieces:
            self.pieces[token] = self.tokenizer.convert_ids_to_tokens(token) or ""
        return self.pieces[token]

    def _translated(self, ids: list[int]) -> bool:
        """Whether text follows the ids' first run of language tags after their text begins (a run they begin with,
        the prompt's tags written again, is not it): not blank, nor the head of another tag ("<|de" of "<|deu|>", a
        token "><" holding the end of one tag and the start of the next)."""
        text, lead = self._decoded(ids)  # "<|eng|><|deu|>1932<|eng|><|deu|>1932": the prompt's tags written again
        return _is_text((after_first_tags(text[lead or 0:]) or "").strip())

    def _transcribing(self, ids: list[int]) -> bool:
        """Whether the ids begin with language tags (the prompt's again) and text after them, its transcript."""
        text, lead = self._decoded(ids)
        return lead is not None and _is_text(text[lead:].strip())

    def _decoded(self, ids: list[int]) -> tuple[str, int | None]:
        """The ids' text, and where the language tags it begins with end (None: it begins with none)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        lead = LEAD_TAGS.match(text)
        return text, lead.end() if lead else None


def _is_text(after: str) -> bool:
    """Whether `after` (stripped) is text: not blank, nor the head of a tag still being written."""
    return bool(after) and not TAG_HEAD.fullmatch(after)


# ---- text MT and the cascade ---------------------------------------------------------------------------------------
class TextMTSystem:
    """A causal LM translating text from MT_TEMPLATE (the cascade's second pass; text MT of any LLM folder).
    Speech items without a transcript fail alone."""

    def __init__(self, folder: str | Path | None, placement: Placement, name: str = "mt"):
        from .llm import load_llm

        self.folder = resolve_model(str(folder or EMBEDDED), "llm")
        self.placement = placement
        self.name = name
        self.model, self.tokenizer = load_llm(self.folder, placement.dtype, device=placement.device)

    @classmethod
    def of_speech_llm(cls, model, name: str = "mt") -> "TextMTSystem":
        """The text MT of a SpeechLLM's own LLM, its LoRA applied (in eval mode: no LoRA dropout), from the same
        MT_TEMPLATE as a plain LLM: what a speech LLM's training left of its LLM's translation. Shares the
        model's weights (nothing is loaded or copied)."""
        from .speech_llm import SpeechLLM

        if not isinstance(model, SpeechLLM):
            raise TypeError(f"TextMTSystem.of_speech_llm takes a SpeechLLM, not {type(model).__name__}")
        system = cls.__new__(cls)
        system.folder, system.name = None, name
        system.placement = Placement(model.device, model.llm_dtype)
        system.model, system.tokenizer = model.eval().llm, model.tokenizer
        return system

    @cached_property
    def token_texts(self) -> list[str]:
        """Each token id's text alone, special tokens empty as in the answers. A tokenizer that decodes as its
        `tokenizers` backend does (no decode of its own, no clean-up of spaces) takes one batch call of the backend:
        Gemma's 262k tokens in 1.6 s, where transformers' batch_decode, a Python call per id, took 5.6 s."""
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        tok, ids = self.tokenizer, [[i] for i in range(len(self.tokenizer))]
        if (isinstance(tok, TokenizersBackend) and not tok.clean_up_tokenization_spaces
                and all(getattr(type(tok), f) is getattr(TokenizersBackend, f) for f in ("decode", "_decode"))):
            return tok.backend_tokenizer.decode_batch(ids, skip_special_tokens=True)
        return tok.batch_decode(ids, skip_special_tokens=True)

    def translate(self, texts: list[str], srcs: list[str], tgts: list[str], options: DecodingOptions,
                  caps: list[int] | None = None, capped: set[int] | None = None) -> list[str]:
        """Texts -> their translations, one language pair per text; the answer is the first line generated.
        Each text may generate twice its own length + 16 tokens, and at most its cap (default: the options'); beam
        search stops each text's hypotheses at its cap (`decoding.RowCaps`). `capped`: gets the index of each text
        whose tokens filled its cap before an end token or the end of its first line, its answer cut there."""
        from transformers import (LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                                  StoppingCriteriaList)

        from .decoding import FirstLineEnd, FirstScoresCheck, NewTokensOnly, RowCaps, eos_ids, generation_config
        from .llm import causal_lm

        if not texts:
            return []
        tok = self.tokenizer
        prompts = [MT_TEMPLATE.format(src=languages.get(s).name, tgt=languages.get(t).name, text=x.strip())
                   for x, s, t in zip(texts, srcs, tgts)]
        side, tok.padding_side = tok.padding_side, "left"
        try:
            batch = tok(prompts, return_tensors="pt", padding=True).to(self.placement.device)
        finally:
            tok.padding_side = side
        caps = [min(c, 2 * len(tok(x)["input_ids"]) + 16)
                for x, c in zip(texts, caps or [options.max_new_tokens] * len(texts))]
        start = batch["input_ids"].shape[1]
        # the options' search as the speech LLM runs it (`decoding.generation_config`: length penalty, early
        # stopping, the tokenizer's and the model's end ids; no sampling settings, nor the folder's own repetition
        # penalty); n-gram blocking and the repetition penalty count the translation's tokens alone
        ends = eos_ids(self.model, tok)
        config = generation_config(causal_lm(self.model).generation_config, replace(
            options, max_new_tokens=max(caps), no_repeat_ngram_size=0, repetition_penalty=1.0), ends, tok.pad_token_id)
        processors = LogitsProcessorList([FirstScoresCheck(causal_lm(self.model).dtype, options.beam_size)])  # NaN
        if options.no_repeat_ngram_size:
            processors.append(NewTokensOnly(NoRepeatNGramLogitsProcessor(options.no_repeat_ngram_size), start))
        if options.repetition_penalty != 1.0:
            processors.append(NewTokensOnly(RepetitionPenaltyLogitsProcessor(options.repetition_penalty), start))
        # greedy: a row stops at its first line break after text (the answer is the first line that is not blank),
        # or at its own cap (one row that wrote no line break kept the batch to the largest cap); beam search keeps
        # the model's own EOS (a line break must not end a beam's ranking) and stops each row's hypotheses at its own
        # cap, not the batch's largest
        stop = StoppingCriteriaList([FirstLineEnd(self.token_texts, start), RowCaps(caps)] if options.beam_size == 1
                                    else [RowCaps(caps)])
        with torch.inference_mode():
            ids = self.model.generate(**batch, generation_config=config, logits_processor=processors,
                                      stopping_criteria=stop)
        new = [row[:c] for row, c in zip(ids[:, batch["input_ids"].shape[1]:].tolist(), caps)]
        answers = tok.batch_decode(new, skip_special_tokens=True)
        if capped is not None:  # a row that ended holds an end token or a line break after text (padding after it)
            capped.update(i for i, (row, a, c) in enumerate(zip(new, answers, caps))
                          if len(row) >= c and not set(ends).intersection(row) and "\n" not in a.lstrip())
        return [a.strip().split("\n")[0].strip() for a in answers]

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        out: list[Output | None] = [None] * len(items)
        todo = []
        for i, it in enumerate(items):
            if not it.transcript.strip() or not it.task.needs_translation:
                out[i] = Output(error=f"the text MT system translates given transcripts only (task mt or smt), not "
                                      f"task {it.task.value} without one; use --model cascade for speech")
            elif it.tgt == it.src:  # into its own language: the text itself, as every other system answers (the
                out[i] = Output(it.transcript.strip(), it.transcript.strip())  # LLM asked to "translate" eng to eng)
            else:
                todo.append(i)
        cut: set[int] = set()
        hyps = self.translate([items[i].transcript for i in todo], [items[i].src for i in todo],
                              [items[i].tgt for i in todo], options, [cap(items[i], options) for i in todo], cut)
        for k, (i, h) in enumerate(zip(todo, hyps)):
            out[i] = Output(items[i].transcript.strip(), h, capped=k in cut)
        return out

    def detect_language(self, audio: np.ndarray) -> str:
        raise LLMSRTError(f"the text MT system has no audio model, so it {LID_MISSING}; give --src")


class CascadeSystem:
    """Whisper ASR -> text MT of the transcript (a given transcript, SMT / MT items, skips the ASR)."""

    def __init__(self, asr: WhisperSystem, mt: TextMTSystem, name: str = "cascade"):
        self.asr, self.mt, self.name = asr, mt, name
        self.placement = asr.placement

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        unheard = {i: why for i, it in enumerate(items) if it.task not in (Task.SMT, Task.MT)
                   and (why := self.asr.cannot(it.src, "transcribe")) is not None}  # an English-only Whisper's
        #   other languages: these items fail alone, before decoding, not their whole batch
        heard = [i for i, it in enumerate(items) if it.task not in (Task.SMT, Task.MT) and i not in unheard]
        transcripts = {i: it.transcript.strip() for i, it in enumerate(items) if i not in unheard}
        cut: set[int] = set()  # items whose transcript (the ASR's) or translation was capped
        if heard:
            heard_cut: set[int] = set()
            text = self.asr.decode([items[i].audio for i in heard], [items[i].src for i in heard], "transcribe",
                                   options, [cap(items[i], options) for i in heard], heard_cut)
            transcripts.update(zip(heard, text))
            cut.update(heard[k] for k in heard_cut)
        todo = [i for i, it in enumerate(items) if it.task.needs_translation and it.tgt != it.src
                and transcripts.get(i)]
        mt_cut: set[int] = set()
        hyps = dict(zip(todo, self.mt.translate([transcripts[i] for i in todo], [items[i].src for i in todo],
                                                [items[i].tgt for i in todo], options,
                                                [cap(items[i], options) for i in todo], mt_cut)))
        cut.update(todo[k] for k in mt_cut)
        return [Output(error=CANNOT_RUN + unheard[i]) if i in unheard else
                Output(transcripts[i], "" if not it.task.needs_translation else hyps.get(i, transcripts[i]),
                       capped=i in cut)
                for i, it in enumerate(items)]

    def detect_language(self, audio: np.ndarray) -> str:
        return self.asr.detect_language(audio)


# ---- loading -------------------------------------------------------------------------------------------------------
def _speech_llm(spec: str, placement: Placement, encoder: str | None = None, llm: str | None = None, **_) -> System:
    from .speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(spec, device=placement.device, dtype=placement.dtype, merge_lora=True,
                                      encoder=encoder, llm=llm)
    model.encoder  # noqa: B018  loaded now, as the other systems' models are: a server whose encoder cannot load
    #                (or does not fit beside the LLM) fails at start-up, not at its first request, nor in its time
    return SpeechLLMSystem(model, spec, placement, folder=spec)


SYSTEMS: dict[str, Callable[..., System]] = {  # name -> builder(name, placement, whisper=, llm=, ...)
    "whisper": lambda name, placement, whisper=None, **_: WhisperSystem(whisper, placement, name),
    "mt": lambda name, placement, llm=None, **_: TextMTSystem(llm, placement, name),
    "cascade": lambda name, placement, whisper=None, llm=None, **_: CascadeSystem(
        WhisperSystem(whisper, placement), TextMTSystem(llm, placement), name),
}


def load_system(spec: str | Path, placement: Placement, whisper: str | None = None, llm: str | None = None,
                encoder: str | None = None) -> System:
    """A system by name (a key of SYSTEMS) or a SpeechLLM model folder, loaded onto `placement`.
    `whisper` / `llm`: the baselines' models (default: the embedded ones); for a model folder, `encoder` / `llm`
    re-point the Whisper and LLM folders its config.json names (a folder moved to another host)."""
    builder = SYSTEMS.get(str(spec), _speech_llm)
    return builder(str(spec), placement, whisper=whisper, llm=llm, encoder=encoder)


def cannot_run(spec: str | Path, src: str | None, tgt: str | None, task: Task) -> str | None:
    """Why the system `spec` names cannot run `task` from `src` (None: language ID picks it per input) into `tgt`
    whatever the audio (one line, what to do), read from its name before any weights load: the whisper system into
    another target than English (its items failed one by one, each input decoded first). None where it may: the
    other systems, a model folder (known once it loads), a source language ID has yet to hear."""
    if str(spec) == "whisper" and src is not None:
        return cannot_translate(src, tgt, task)
    return None


# ---- what a model folder was trained for (the task `auto` runs) ----------------------------------------------------
def trained_tasks(model: str | Path) -> tuple[Task, ...]:
    """The tasks a SpeechLLM folder was trained on (its train_config.json's data.tasks, or a checkpoint's saved
    config: `runs/x/checkpoints/step-N` is a model folder too), the main one first (the largest share; on a tie the
    first, as training takes it). Empty for a system's name (a key of SYSTEMS) and for a folder without either (a
    reference model imported by `llm-srt convert`). A plain file read: callers check what depends on the task before
    any model loads."""
    file = Path(model) / TRAIN_CONFIG
    if not file.is_file():  # a checkpoint's record: its saved config
        file = Path(model) / STATE_DIR / STATE_JSON  # (its "config" holds the same data.tasks)
    if str(model) in SYSTEMS or not file.is_file():
        return ()
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
        config = config if file.name == TRAIN_CONFIG else config.get("config") or {}
        tasks = config.get("data", {}).get("tasks") or {}
        return tuple(Task(t) for t in sorted(tasks, key=lambda t: -float(tasks[t])))  # (sorted keeps a tie's order)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        why = (e.strerror if isinstance(e, OSError) else "not JSON" if isinstance(e, json.JSONDecodeError)
               else "its data.tasks is no {task: share} mapping of known tasks")
        raise LLMSRTError(f"{file}: cannot read the tasks the model was trained on ({why}); give the task (--task, "
                          "a request's task), or fix or remove the file (a folder without it runs srt)") from None


def inference_task(trained: Sequence[Task]) -> Task:
    """The task a model trained on `trained` (main first) runs under `auto`: SRT unless its main task was direct
    S2TT or ASR, or SMT, which runs ASR_SMT; SRT for no record (a reference model, a baseline system)."""
    return INFERENCE_TASK.get(trained[0], Task.SRT) if trained else Task.SRT


def trained_task(model: str | Path) -> Task:
    """The task `auto` runs on `model` (a folder or a system's name), read before it loads."""
    return inference_task(trained_tasks(model))


def system_trained(system: System) -> tuple[Task, ...]:
    """The tasks a loaded system was trained on: a SpeechLLM folder's (`trained_tasks`); none for the others
    (whisper, cascade, mt, a model built in memory), whose `auto` is SRT, as their default was."""
    return system.trained if isinstance(system, SpeechLLMSystem) else ()


def auto_task(system: System) -> Task:
    """The task `auto` runs on a loaded system (`inference_task` of `system_trained`)."""
    return inference_task(system_trained(system))

