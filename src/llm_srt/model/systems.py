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

Only this module knows how each system works; `infer`, `evaluate`, `serve` and `bench` hand over mixed batches.
A system never picks a device: it loads onto the `Placement` it is given, in its dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import languages
from ..audio import SAMPLE_RATE, WINDOW_SECONDS
from ..device import Placement, compute_dtype, is_int8, release
from ..errors import AudioError, LLMSRTError
from ..paths import EMBEDDED, resolve_model
from ..prompts import Task, after_first_tags, build, first_part, markup_in, parse_srt, tag, translation_part
from .whisper_torch import SuppressTokens, TorchWhisper

if TYPE_CHECKING:
    from .decoding import DecodingOptions, OnEnd

MT_TEMPLATE = "Translate the following {src} text into {tgt}.\n{src}: {text}\n{tgt}:"  # text-only MT instruction


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
        raise LLMSRTError(f"task {item.task.value} needs a transcript (--transcript)")
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


# ---- the speech LLM ------------------------------------------------------------------------------------------------
class SpeechLLMSystem:
    """A SpeechLLM (encoder + adapter + LLM, optional LoRA): speech items through the whole model, text-only MT
    items through its LLM (with its LoRA) from the MT prompt."""

    def __init__(self, model, name: str = "model", placement: Placement | None = None):
        from .speech_llm import SpeechLLM

        if not isinstance(model, SpeechLLM):
            raise TypeError(f"SpeechLLMSystem wraps a SpeechLLM, not {type(model).__name__}")
        self.model = model.eval()
        self.name = name
        self.placement = placement or Placement(model.device, model.llm_dtype)

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        if any(it.task is Task.ASR_SMT for it in items):
            return self._asr_then_smt(items, options)
        if any(it.task.needs_translation and it.tgt == it.src for it in items):
            return self._into_own_language(items, options)
        speech = [i for i, it in enumerate(items) if it.audio is not None]
        text = [i for i, it in enumerate(items) if it.audio is None]
        texts: dict[int, str] = {}
        forced: set[int] = set()  # items whose SRT tags were written for them
        capped: set[int] = set()  # items cut at their cap (the ids exclude EOS: a row that wrote it ended before)
        tags = self.model.config.language_tags
        for idx, audio in ((speech, True), (text, False)):  # generate takes all-speech or all-text batches
            if not idx:
                continue
            prompts = [build(items[i].task, items[i].src, items[i].tgt, transcript=items[i].transcript, tags=tags)[0]
                       for i in idx]
            batch = {"prompts": prompts, "audio": [items[i].audio for i in idx] if audio else None}
            rows: set[int] = set()
            caps = [cap(items[i], options) for i in idx]
            with torch.inference_mode():
                ids = self.model.generate_ids(batch, options, on_end=self._srt_tags([items[i] for i in idx], options),
                                              written=rows, caps=caps)
            forced.update(idx[r] for r in rows)
            capped.update(i for i, row, c in zip(idx, ids, caps) if len(row) >= c)
            texts.update((i, self.model.tokenizer.decode(row[:c], skip_special_tokens=True))
                         for i, row, c in zip(idx, ids, caps))
        return [replace(split_output(texts[i], it, tags), forced_tags=i in forced, capped=i in capped)
                for i, it in enumerate(items)]

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

    def detect_language(self, audio: np.ndarray) -> str:
        return detect_language(self.model.config.encoder, audio, self.placement, encoder=self.model.encoder)


# ---- Whisper -------------------------------------------------------------------------------------------------------
CPU_CROSS_KV_BYTES = 48 * 2**20  # on the CPU, greedy decodes as many clips at once as their cross-attention keys and
#  values fit in (Whisper base: 36.9 MB a clip -> 1: a second clip costs 37 MiB of peak RSS, the memory goal
#  has little room for that, and saves ~0.3 s of 5 clips' ~1.1 s of decoding); each clip's encoder runs alone


@lru_cache(maxsize=2)
def _torch_whisper(folder: str, device: torch.device, dtype: torch.dtype, decoder_only: bool = False) -> TorchWhisper:
    """The folder's Whisper in plain torch (model/whisper_torch.py: no transformers) on `device` in `dtype`; int8:
    float32, then int8 linear layers, CPU only. Cached: language ID and the baselines share one copy.
    `decoder_only`: a speech LLM's language ID, its own encoder giving the states."""
    if is_int8(dtype) and device.type != "cpu":
        raise LLMSRTError(f"--dtype int8: int8 linear layers run on the CPU only, not on {device}")
    return TorchWhisper.from_pretrained(folder, device, compute_dtype(dtype), int8=is_int8(dtype),
                                        decoder_only=decoder_only)


@lru_cache(maxsize=2)
def _whisper(folder: str, device: torch.device, dtype: torch.dtype):
    """An HF Whisper folder loaded straight onto `device` in `dtype` (int8: float32, then int8 linear layers), for
    what the torch Whisper does not do (beam search, no-repeat n-grams): transformers is imported only then. Its
    generation config's suppressed tokens are cleared, so HF's processors, which rebuild their masks with
    `torch.isin` at every step, never run: `SuppressTokens` masks the same tokens (the torch Whisper's
    `generation`, read from the same generation_config.json) from masks made once. Its prompt comes from
    `language=` and `task=` alone (old `forced_decoder_ids` cleared: HF ignores them beside those); an
    English-only Whisper's, given neither, is start and no-timestamps, and an empty `lang_to_id` (`convert`'s
    for a `.en` model) is dropped, or HF would run its language ID over no language tokens."""
    from transformers import WhisperForConditionalGeneration

    from .int8_linear import quantize_int8

    try:
        model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=compute_dtype(dtype),
                                                                device_map={"": device})
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{folder}: cannot load Whisper ({str(e).splitlines()[0]})") from None
    if is_int8(dtype):  # every linear layer of encoder and decoder, the tied output head as a copy (as CTranslate2's
        quantize_int8(model)  # int8); convolutions, embeddings, norms and activations stay float32
    model.generation_config.suppress_tokens = model.generation_config.begin_suppress_tokens = None
    model.generation_config.forced_decoder_ids = None
    if not getattr(model.generation_config, "lang_to_id", None):
        model.generation_config.__dict__.pop("lang_to_id", None)
    return model.eval()


def release_models(device: torch.device) -> None:
    """Let go of the Whisper models kept for language ID and the baselines (`_torch_whisper`, `_whisper`), then give
    what nothing holds any more back (`device.release`): between the systems of an evaluation, and before COMET
    runs on the same GPU."""
    _torch_whisper.cache_clear()
    _whisper.cache_clear()
    release(device)


def detect_language(whisper: str | Path | None, audio: np.ndarray, placement: Placement, encoder=None) -> str:
    """ISO 639-3 code of the most likely registry language, from Whisper's language-ID token. `encoder`: the
    folder's encoder already loaded (a speech LLM's `WhisperEncoder`): it encodes the clip's 30 s window, and only
    Whisper's decoder is loaded beside it (for Whisper large-v3 in bf16, 1.3 GB of GPU memory not taken twice)."""
    folder = resolve_model(str(whisper or EMBEDDED), "encoder")
    w = _torch_whisper(folder, placement.device, placement.dtype, encoder is not None)
    candidates: dict[int, str] = {}
    for lang in languages.LANGUAGES.values():
        tid = w.generation.lang_to_id.get(f"<|{lang.whisper}|>")
        if tid is not None:
            candidates.setdefault(tid, lang.code)
    if not candidates:
        raise LLMSRTError(f"{folder}: this Whisper has no language tokens (an English-only Whisper such as "
                          f"tiny.en), so it {LID_MISSING}; give the source language (--src; --src eng for English "
                          "speech)")
    with torch.inference_mode():
        start = torch.tensor([[w.generation.start]], device=w.device)
        mel = w.mel([audio])
        states = w.encode(mel) if encoder is None else encoder.encoder(
            mel.to(encoder.device, encoder.encoder.conv1.weight.dtype)).last_hidden_state.to(w.dtype)
        logits = w.next_logits(states, start)[0]
    every = {tid: token for token, tid in w.generation.lang_to_id.items()}
    ids = torch.tensor(list(every), device=logits.device)
    heard = int(ids[logits[ids].argmax()])
    if heard not in candidates:  # the registry's likeliest would be a wrong tag, read as such (Polish as eng)
        raise LLMSRTError(f"{LID_UNKNOWN}Whisper hears {every[heard].strip('<|>')} here, not one of the languages "
                          f"the toolkit knows ({', '.join(sorted(set(candidates.values())))}); give the source "
                          "language (--src), or add it to llm_srt/languages.py")
    return candidates[heard]


class WhisperSystem:
    """Whisper's own encoder-decoder: transcribes any language; translates into English only (tgt == src is the
    transcript). An English-only Whisper (`tiny.en` ... `medium.en`: no language tokens) transcribes English only.
    Items it cannot do (text-only MT, another target, a language it cannot hear) fail alone.

    Greedy decoding (the default) runs the plain-torch Whisper (model/whisper_torch.py; transformers is never
    imported): one encoder pass per clip, cross-attention keys/values once per clip, a KV cache, a suppression mask
    made once, an argmax; a batch of any languages decodes together. The same tokens as HF `generate`
    (tests/model/test_systems.py checks it). Beam search, `no_repeat_ngram_size` and a repetition penalty go
    through HF `generate`."""

    def __init__(self, folder: str | Path | None, placement: Placement, name: str = "whisper"):
        self.folder = resolve_model(str(folder or EMBEDDED), "encoder")
        self.placement = placement
        self.name = name
        self.whisper = _torch_whisper(self.folder, placement.device, placement.dtype, False)  # as detect_language
        #   calls it: one cached copy for both
        self.vocab = set(self.whisper.generation.lang_to_id)  # to map a registry language to its Whisper token

    @cached_property
    def tokenizer(self):
        """The folder's HF tokenizer, for callers that count tokens with one (decoding needs none)."""
        from .llm import load_tokenizer

        return load_tokenizer(Path(self.folder))

    @property
    def english_only(self) -> bool:
        """An English-only Whisper (`*.en`): its generation config has no language tokens; it was trained to
        transcribe English from start and no-timestamps alone."""
        return not self.whisper.generation.lang_to_id

    def cannot(self, lang: str, whisper_task: str) -> str | None:
        """Why this Whisper cannot `whisper_task` ("transcribe" / "translate") a clip in `lang`, and what to do
        (one line); None if it can."""
        g = self.whisper.generation
        if self.english_only:
            if lang == "eng" and whisper_task == "transcribe":
                return None
            return (f"{self.folder}: an English-only Whisper (no language tokens in its generation_config.json) "
                    f"transcribes English (eng) only, so it cannot {whisper_task} {lang}; use a multilingual "
                    "Whisper (--whisper)")
        token = f"<|{languages.whisper_language(lang, self.vocab)}|>"
        if token not in g.lang_to_id or whisper_task not in g.task_to_id:
            return (f"{self.folder}: this Whisper cannot {whisper_task} {lang} (no {token} or <|{whisper_task}|> "
                    "in its generation_config.json); use a multilingual Whisper (--whisper)")
        return None

    def prompt(self, lang: str, whisper_task: str) -> list[int]:
        """Whisper's task prompt for a clip in `lang`: start, language, task, no-timestamps (as HF generate builds
        it from `language=` and `task=`); an English-only Whisper's: start, no-timestamps (as openai-whisper and HF
        generate decode `*.en` models), English transcription only. Ids from the model's own generation config
        (start and no-timestamps differ: 50257 / 50362 in `*.en`, 50258 / 50364 in large-v3)."""
        why = self.cannot(lang, whisper_task)
        if why is not None:
            raise LLMSRTError(why)
        g = self.whisper.generation
        ids = [g.start] if self.english_only else [
            g.start, g.lang_to_id[f"<|{languages.whisper_language(lang, self.vocab)}|>"], g.task_to_id[whisper_task]]
        return ids + ([g.no_timestamps] if g.no_timestamps is not None else [])

    def decode(self, audios: list[np.ndarray], langs: list[str], whisper_task: str, options: DecodingOptions,
               caps: list[int] | None = None, capped: set[int] | None = None) -> list[str]:
        """Clips -> texts with Whisper's `whisper_task` ("transcribe" / "translate") in each clip's language;
        `caps`: each clip's own token cap (default: the options'). Any mix of languages decodes as one batch.
        `capped`: gets the index of each clip whose tokens filled its cap (or the decoder's context) without an end
        token, its text cut there."""
        rows = self.decode_ids(audios, langs, whisper_task, options, caps, capped)
        return [text.strip() for text in self.whisper.decode_text(rows)]

    def decode_ids(self, audios: list[np.ndarray], langs: list[str], whisper_task: str, options: DecodingOptions,
                   caps: list[int] | None = None, capped: set[int] | None = None) -> list[list[int]]:
        """As `decode`, the new token ids of each clip (cut to its cap; after an end token, padding; beam search
        stops each clip's hypotheses at its cap: `decoding.RowCaps`)."""
        prompts = torch.tensor([self.prompt(lang, whisper_task) for lang in langs], device=self.whisper.device)
        room = self.whisper.dims.n_text_ctx - prompts.shape[1]  # the decoder's positions the prompt leaves
        caps = [min(c, room) for c in (caps or [options.max_new_tokens] * len(audios))]
        with torch.inference_mode():
            mel = self.whisper.mel(audios)
            if options.beam_size == 1 and not options.no_repeat_ngram_size and options.repetition_penalty == 1.0:
                ids = self._greedy(mel, prompts, max(caps))
            else:
                ids = self._generate(mel, langs, whisper_task, options, caps)
        rows = [row[:c] for row, c in zip(ids.tolist(), caps)]
        if capped is not None:  # a row that ended is shorter than its cap or holds the end token (HF's Whisper
            #   generate drops a row's last end token, and pads with it where pad is end, as in Whisper's)
            capped.update(i for i, (row, c) in enumerate(zip(rows, caps))
                          if len(row) >= c and self.whisper.generation.eos not in row)
        return rows

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, 3000) -> encoder states (B, 1500, D). On the CPU one clip at a time: the same values
        (each clip's 1500 frames already fill the BLAS) with one clip's activations at a time; on a GPU the whole
        batch at once."""
        step = 1 if mel.device.type == "cpu" else len(mel)
        return torch.cat([self.whisper.encode(mel[i:i + step]) for i in range(0, len(mel), step)])

    def _greedy(self, mel: torch.Tensor, prompts: torch.Tensor, max_new: int) -> torch.Tensor:
        """mel (B, n_mels, 3000), prompts (B, P) -> new tokens (B, <= max_new); a row that ended is padded. On the
        CPU in groups of clips whose cross-attention keys/values fit CPU_CROSS_KV_BYTES (each clip's tokens do not
        depend on its group); on a GPU the whole batch."""
        dims, w = self.whisper.dims, self.whisper
        per_clip = 2 * dims.decoder_layers * dims.n_audio_ctx * dims.d_model * mel.element_size()
        group = max(1, CPU_CROSS_KV_BYTES // per_clip) if mel.device.type == "cpu" else len(mel)
        parts = [w.greedy(self.encode(mel[i:i + group]), prompts[i:i + group], max_new)
                 for i in range(0, len(mel), group)]
        width = max(p.shape[1] for p in parts)
        return torch.cat([F.pad(p, (0, width - p.shape[1]), value=w.generation.pad) for p in parts])

    def _generate(self, mel: torch.Tensor, langs: list[str], whisper_task: str, options: DecodingOptions,
                  caps: list[int]) -> torch.Tensor:
        """HF `generate` (beam search, no-repeat n-grams, a repetition penalty) with each clip's language (an
        English-only Whisper: none, nor a task), to the largest of the clips' caps (beam search: each clip's
        hypotheses stopped at its own, `decoding.RowCaps`) -> new tokens (B, n). The options' length penalty,
        repetition penalty and early stopping are passed as the speech LLM's `decoding.generation_config` sets
        them (early stopping in beam search only), not left to the folder's generation config."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from .decoding import RowCaps

        hf = _whisper(self.folder, self.placement.device, self.placement.dtype)
        g = self.whisper.generation
        suppress = SuppressTokens(self.whisper.dims.n_vocab, g.suppress, g.begin_suppress, mel.device)
        stop = StoppingCriteriaList([RowCaps(caps)]) if options.beam_size > 1 else None
        prompt = {} if self.english_only else {
            "language": [languages.whisper_language(x, self.vocab) for x in langs], "task": whisper_task}
        return hf.generate(mel, **prompt, num_beams=options.beam_size, max_new_tokens=max(caps),
                           no_repeat_ngram_size=options.no_repeat_ngram_size,
                           length_penalty=options.length_penalty, repetition_penalty=options.repetition_penalty,
                           early_stopping=options.early_stopping if options.beam_size > 1 else False,
                           logits_processor=LogitsProcessorList([suppress]), stopping_criteria=stop)

    def run_batch(self, items: Sequence[Item], options: DecodingOptions) -> list[Output]:
        out: list[Output | None] = [None] * len(items)
        speech = []
        for i, it in enumerate(items):
            if it.audio is None:
                out[i] = Output(error=CANNOT_RUN + "the whisper system needs audio; text-only MT needs --model "
                                      "cascade, mt or a speech model folder")
            elif (why := self.cannot(it.src, "transcribe")) is not None:  # an English-only Whisper, another
                out[i] = Output(error=CANNOT_RUN + why)  # language: fails alone, not its whole batch
            elif it.task.needs_translation and it.tgt not in ("eng", it.src):
                out[i] = Output(error=f"{CANNOT_RUN}the whisper system translates only into English (eng), not "
                                      f"{it.tgt}; use --model cascade for other targets")
                if it.task.writes_transcript:  # its transcript it can write (scored as WER): only the translation
                    speech.append(i)  # fails
            else:
                speech.append(i)
        if speech:
            audios, srcs = [items[i].audio for i in speech], [items[i].src for i in speech]
            caps = [cap(items[i], options) for i in speech]
            heard_cut: set[int] = set()  # indices into `speech` whose transcript was capped
            transcripts = self.decode(audios, srcs, "transcribe", options, caps, heard_cut)
            to_eng = [k for k, i in enumerate(speech) if items[i].task.needs_translation and items[i].src != "eng"
                      and items[i].tgt != items[i].src and out[i] is None]  # tgt == src: the transcript
            cut: set[int] = set()  # indices into `to_eng` whose translation was capped
            translated = dict(zip(to_eng, self.decode([audios[k] for k in to_eng], [srcs[k] for k in to_eng],
                                                      "translate", options, [caps[k] for k in to_eng], cut))) \
                if to_eng else {}
            translation_cut = {to_eng[j] for j in cut}
            for k, i in enumerate(speech):
                it = items[i]
                given = it.transcript.strip() if it.task is Task.SMT else transcripts[k]
                if out[i] is not None:  # a target it cannot translate into: the transcript, and the error
                    out[i] = replace(out[i], transcript=given, capped=it.task is not Task.SMT and k in heard_cut)
                    continue
                translation = "" if not it.task.needs_translation else translated.get(k, transcripts[k])
                # capped: a text it answers with was cut (an SMT item's decoded transcript is unused unless it is
                # the translation: into its own language, or English from English)
                heard_used = it.task is not Task.SMT or (it.task.needs_translation and k not in translated)
                out[i] = Output(given, translation, capped=k in translation_cut or (heard_used and k in heard_cut))
        return out

    def detect_language(self, audio: np.ndarray) -> str:
        return detect_language(self.folder, audio, self.placement)


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

        from .decoding import FirstLineEnd, NewTokensOnly, RowCaps, eos_ids, generation_config
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
        processors = LogitsProcessorList()
        if options.no_repeat_ngram_size:
            processors.append(NewTokensOnly(NoRepeatNGramLogitsProcessor(options.no_repeat_ngram_size), start))
        if options.repetition_penalty != 1.0:
            processors.append(NewTokensOnly(RepetitionPenaltyLogitsProcessor(options.repetition_penalty), start))
        # greedy: a row stops at its first line break after text (the answer is the first line that is not blank),
        # so no row runs on to its cap; beam search keeps the model's own EOS (a line break must not end a beam's
        # ranking) and stops each row's hypotheses at its own cap, not the batch's largest
        stop = StoppingCriteriaList([FirstLineEnd(self.token_texts, start) if options.beam_size == 1 else
                                     RowCaps(caps)])
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
    return SpeechLLMSystem(model, spec, placement)


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
