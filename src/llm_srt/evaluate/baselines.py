"""The paper's reference systems as models usable by `translate` and `evaluate`:

- `whisper`: Whisper's own decoder (ASR when tgt == src, Whisper's translate task when tgt == eng);
- `cascade`: Whisper ASR, then the LLM translating the transcript from a text instruction (paper Table 3's
  "Whisper + Qwen2.5" cascade).
Both default to the embedded models; `whisper=` / `llm=` point them at a user's folders.
"""

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import languages
from ..errors import LLMSRTError
from ..paths import EMBEDDED, resolve_model
from ..model.decoding import DecodingOptions
from ..model.llm import fast_cpu_head
from ..prompts import Task, srt_target

MT_TEMPLATE = "Translate the following {src} text into {tgt}.\n{src}: {text}\n{tgt}:"  # text-only MT instruction


def _folder(value: str | None, kind: str) -> str:
    return resolve_model(value or EMBEDDED, kind)


@lru_cache(maxsize=2)
def _whisper(folder: str, device: str):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(folder).to(device).eval()
    return model, WhisperProcessor.from_pretrained(folder)


def _whisper_tokens(processor) -> set[str]:
    return set(processor.tokenizer.get_vocab())


class WhisperASR:
    """Whisper's own encoder-decoder: transcribe (any language) and translate (into English only)."""

    def __init__(self, whisper: str | None = None, device: str | None = None, **_):
        self.whisper_dir = _folder(whisper, "encoder")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.processor = _whisper(self.whisper_dir, self.device)

    def decode(self, audios: list[np.ndarray], langs: list[str], whisper_task: str, options: DecodingOptions
               ) -> list[str]:
        feats = self.processor.feature_extractor(audios, sampling_rate=16000, return_tensors="pt")
        tokens = _whisper_tokens(self.processor)
        out: list[str] = [""] * len(audios)
        for lang in sorted(set(langs)):  # Whisper's generate takes one language per call
            idx = [i for i, l in enumerate(langs) if l == lang]
            with torch.inference_mode():
                ids = self.model.generate(feats.input_features[idx].to(self.device), language=
                                          languages.whisper_language(lang, tokens), task=whisper_task,
                                          num_beams=options.beam_size, max_new_tokens=min(options.max_new_tokens, 440),
                                          no_repeat_ngram_size=options.no_repeat_ngram_size)
            for i, text in zip(idx, self.processor.batch_decode(ids, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    def run_batch(self, audios, srcs, tgts, task: Task, options: DecodingOptions) -> list[str]:
        transcripts = self.decode(audios, srcs, "transcribe", options)
        if task is Task.ASR:
            return transcripts
        bad = [t for t in tgts if t not in ("eng",)]
        if bad and any(t != s for t, s in zip(tgts, srcs)):
            raise LLMSRTError(f"the whisper baseline translates only into English (eng), not {bad[0]}; use "
                              "--model cascade for other targets")
        translations = [tr if t == s else x for tr, x, t, s in
                        zip(transcripts, self.decode(audios, srcs, "translate", options), tgts, srcs)]
        return _as_task(task, transcripts, translations, srcs, tgts)


class TextTranslator:
    """The frozen LLM translating text from MT_TEMPLATE (cascade second pass, and text-MT scores)."""

    def __init__(self, llm: str | None = None, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = _folder(llm, "llm")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder).to(self.device).eval()
        fast_cpu_head(self.model)

    def translate(self, texts: list[str], srcs: list[str], tgts: list[str], options: DecodingOptions) -> list[str]:
        prompts = [MT_TEMPLATE.format(src=languages.get(s).name, tgt=languages.get(t).name, text=x.strip())
                   for x, s, t in zip(texts, srcs, tgts)]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        longest = max(len(self.tokenizer(x)["input_ids"]) for x in texts) if texts else 0
        with torch.inference_mode():
            ids = self.model.generate(**batch, do_sample=False, num_beams=options.beam_size,
                                      max_new_tokens=min(options.max_new_tokens, 2 * longest + 16),
                                      no_repeat_ngram_size=options.no_repeat_ngram_size,
                                      pad_token_id=self.tokenizer.pad_token_id)
        texts_out = self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [t.strip().split("\n")[0].strip() for t in texts_out]  # the answer is the first line


class Cascade:
    """Whisper ASR -> LLM text MT."""

    def __init__(self, whisper: str | None = None, llm: str | None = None, device: str | None = None):
        self.asr = WhisperASR(whisper, device)
        self.whisper_dir = self.asr.whisper_dir
        self.mt = TextTranslator(llm, device)

    def run_batch(self, audios, srcs, tgts, task: Task, options: DecodingOptions) -> list[str]:
        transcripts = self.asr.decode(audios, srcs, "transcribe", options)
        if task is Task.ASR:
            return transcripts
        translations = self.mt.translate(transcripts, srcs, tgts, options)
        return _as_task(task, transcripts, translations, srcs, tgts)


def _as_task(task: Task, transcripts, translations, srcs, tgts) -> list[str]:
    if task is Task.SRT:  # the SRT output format, so every system is parsed the same way
        return [srt_target(a, b, s, t) for a, b, s, t in zip(transcripts, translations, srcs, tgts)]
    return list(translations)


BASELINES = {"whisper": WhisperASR, "cascade": Cascade}


def detect_language(whisper_dir: str | Path | None, samples: np.ndarray) -> str:
    """ISO 639-3 code of the most likely registry language, from Whisper's language-ID token."""
    model, processor = _whisper(_folder(str(whisper_dir) if whisper_dir else None, "encoder"),
                                "cuda" if torch.cuda.is_available() else "cpu")
    feats = processor.feature_extractor([samples], sampling_rate=16000, return_tensors="pt").input_features
    tokenizer = processor.tokenizer
    candidates = {}
    for lang in languages.LANGUAGES.values():
        token = f"<|{lang.whisper}|>"
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is not None and tid != tokenizer.unk_token_id:
            candidates.setdefault(tid, lang.code)
    with torch.inference_mode():
        enc = model.get_encoder()(feats.to(model.device))
        start = torch.tensor([[model.generation_config.decoder_start_token_id]], device=model.device)
        logits = model(encoder_outputs=enc, decoder_input_ids=start).logits[0, -1]
    ids = torch.tensor(list(candidates))
    return candidates[int(ids[logits[ids].argmax()])]
