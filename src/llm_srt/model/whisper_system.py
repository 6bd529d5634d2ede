"""Whisper's own encoder-decoder as a system (`whisper`, and the cascade's ASR pass), and Whisper's language ID,
which every system that detects the source language calls (`detect_language`)."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import languages
from ..device import Placement, compute_dtype, is_int8, release
from ..errors import LLMSRTError
from ..paths import EMBEDDED, resolve_model
from ..prompts import Task
from .protocol import CANNOT_RUN, LID_MISSING, LID_UNKNOWN, Item, Output, cap
from .whisper_torch import EncoderAlone, SuppressTokens, TorchWhisper

if TYPE_CHECKING:
    from .decoding import DecodingOptions


MULTILINGUAL_VOCAB = 51865  # openai-whisper's rule: a vocabulary this large is a multilingual Whisper's (large-v3's
#  51866), an English-only one's (`*.en`) is 51864
OUTDATED = ("a multilingual Whisper whose generation_config.json has no lang_to_id (as transformers before 4.27 saved "
            "fine-tunes)")
OUTDATED_FIX = "copy generation_config.json of the Whisper it was fine-tuned from (openai/whisper-*) into its folder"
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
    """HF's WhisperForConditionalGeneration on the tensors of the folder's torch Whisper (`_torch_whisper`, the
    copy the system and language ID hold), for what that one does not do (beam search, no-repeat n-grams, a
    repetition penalty): transformers is imported only then. It is built on the meta device and given the torch
    Whisper's tensors themselves (the same names under HF's `model.`; proj_out the token table, or an untied
    Whisper's head), int8's linear layers the torch Whisper's own Int8Linear modules (its head too): no second copy
    of the weights (Whisper large-v3's are 6.2 GB in float32, 3.1 GB in bfloat16). Its generation config's
    suppressed tokens are cleared, so HF's processors, which rebuild their masks with `torch.isin` at every step,
    never run: `SuppressTokens` masks the same tokens (the torch Whisper's `generation`, read from the same
    generation_config.json) from masks made once. Its prompt comes from `language=` and `task=` alone (old
    `forced_decoder_ids` cleared: HF ignores them beside those); an English-only Whisper's, given neither, is start
    and no-timestamps, and an empty `lang_to_id` (`convert`'s for a `.en` model) is dropped, or HF would run its
    language ID over no language tokens."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from .int8_linear import Int8Linear

    whisper = _torch_whisper(folder, device, dtype, False)
    try:
        config = WhisperConfig.from_pretrained(folder)
        generation = GenerationConfig.from_pretrained(folder) if (Path(folder) / "generation_config.json").is_file() \
            else GenerationConfig.from_model_config(config)  # as `from_pretrained` falls back
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{folder}: cannot load Whisper ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        model = WhisperForConditionalGeneration._from_config(config, dtype=whisper.dtype)
    own = {f"model.{name}": m for name, m in whisper.model.named_modules() if isinstance(m, Int8Linear)}
    own.update({"proj_out": whisper.head} if isinstance(whisper.head, Int8Linear) else {})
    for name, module in own.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module)
    state = {f"model.{k}": v for k, v in whisper.model.state_dict().items()
             if f"model.{k.rpartition('.')[0]}" not in own}
    if "proj_out" not in own:
        state["proj_out.weight"] = (whisper.head or whisper.model.decoder.embed_tokens).weight.detach()
    unexpected = model.load_state_dict(state, strict=False, assign=True).unexpected_keys
    left = unexpected + [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a transformers whose Whisper names or holds other tensors than the torch Whisper's
        raise LLMSRTError(f"{folder}: transformers' Whisper does not match the torch Whisper's tensors (e.g. "
                          f"{left[0]}): use the transformers version the toolkit pins")
    model.generation_config = generation
    model.generation_config.suppress_tokens = model.generation_config.begin_suppress_tokens = None
    model.generation_config.forced_decoder_ids = None
    if not getattr(model.generation_config, "lang_to_id", None):
        model.generation_config.__dict__.pop("lang_to_id", None)
    return model.eval().requires_grad_(False)


def _multilingual(whisper: TorchWhisper) -> bool:
    """Whether a Whisper is a multilingual one: its generation config's is_multilingual, else its vocabulary's size."""
    said = whisper.generation.multilingual
    return said if isinstance(said, bool) else whisper.dims.n_vocab >= MULTILINGUAL_VOCAB


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
    try:
        w = _torch_whisper(folder, placement.device, placement.dtype, encoder is not None)
    except EncoderAlone:  # a speech LLM's encoder folder without Whisper's decoder: the input's to fix, not the model's
        raise LLMSRTError(f"{folder}: a Whisper encoder alone (no decoder tensors in its weights), so it "
                          f"{LID_MISSING}; give the source language (--src)") from None
    candidates: dict[int, str] = {}
    for lang in languages.LANGUAGES.values():
        tid = w.generation.lang_to_id.get(f"<|{lang.whisper}|>")
        if tid is not None:
            candidates.setdefault(tid, lang.code)
    if not candidates and not w.generation.lang_to_id and _multilingual(w):
        raise LLMSRTError(f"{folder}: {OUTDATED}, so it {LID_MISSING}; {OUTDATED_FIX}, or give the source language "
                          "(--src)")
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


def cannot_translate(src: str, tgt: str | None, task: Task) -> str | None:
    """Why the whisper system cannot give `task`'s translation of speech in `src` into `tgt` (one line, what to do);
    None if it can: Whisper translates into English only, and `tgt == src` is the transcript. Known from the codes
    alone, before any weights load (`systems.cannot_run`, which `translate` asks up front), and per item in
    `run_batch`."""
    if not task.needs_translation or tgt in ("eng", src):
        return None
    return f"the whisper system translates only into English (eng), not {tgt}; use --model cascade for other targets"


class WhisperSystem:
    """Whisper's own encoder-decoder: transcribes any language; translates into English only (tgt == src is the
    transcript). An English-only Whisper (`tiny.en` ... `medium.en`: no language tokens) transcribes English only.
    Items it cannot do (text-only MT, another target, a language it cannot hear) fail alone.

    Greedy decoding (the default) runs the plain-torch Whisper (model/whisper_torch.py; transformers is never
    imported): one encoder pass per clip, cross-attention keys/values once per clip, a KV cache, a suppression mask
    made once, an argmax; a batch of any languages decodes together. The same tokens as HF `generate`
    (tests/model/test_systems.py checks it). Beam search, `no_repeat_ngram_size` and a repetition penalty go
    through HF `generate`, on the same weights (`_whisper`)."""

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
        """An English-only Whisper (`*.en`): its generation config has no language tokens, and says it is not
        multilingual or, saying nothing (a multilingual fine-tune's outdated config has no language tokens either),
        has a vocabulary under MULTILINGUAL_VOCAB; it was trained to transcribe English from start and no-timestamps
        alone."""
        return not self.whisper.generation.lang_to_id and not _multilingual(self.whisper)

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
        if not g.lang_to_id:  # the generation config is outdated, not the model: its prompt cannot be built
            return f"{self.folder}: {OUTDATED}, so it cannot {whisper_task} {lang}; {OUTDATED_FIX}"
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
        English-only Whisper: none, nor a task), to the largest of the clips' caps (each clip's hypotheses
        stopped at its own, `decoding.RowCaps`) -> new tokens (B, n). The options' length penalty,
        repetition penalty and early stopping are passed as the speech LLM's `decoding.generation_config` sets
        them (early stopping in beam search only), not left to the folder's generation config."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from .decoding import RowCaps

        hf = _whisper(self.folder, self.placement.device, self.placement.dtype)
        g = self.whisper.generation
        suppress = SuppressTokens(self.whisper.dims.n_vocab, g.suppress, g.begin_suppress, mel.device)
        stop = StoppingCriteriaList([RowCaps(caps)])  # greedy too: a row past its cap no longer runs the batch on
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
            elif (why := cannot_translate(it.src, it.tgt, it.task)) is not None:
                out[i] = Output(error=CANNOT_RUN + why)
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
