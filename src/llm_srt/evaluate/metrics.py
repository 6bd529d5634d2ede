"""The paper's metrics (Table 2, following SeamlessM4T-v2), corpus level.

- BLEU: SacreBLEU, tokenizer chosen by the target language (`tok:char` for jpn kor tha yue zho, else `tok:13a`).
- chrF: SacreBLEU's chrF2 (character 6-grams, no word n-grams).
- BLEU and chrF read hypotheses and references in Unicode NFC (`nfc`): canonically equivalent text is the same text,
  but SacreBLEU compares code points, so a decomposed (NFD) hypothesis of Vietnamese or Korean (a macOS file) lost
  nearly all its BLEU against an NFC reference before 2026-12-05. NFC, not NFKC: nothing else changes, and NFC
  text scores exactly as before. The signature stays SacreBLEU's; `Score.unicode` records the form.
- WER / CER: jiwer after Whisper's text normalization (EnglishTextNormalizer for English, BasicTextNormalizer
  otherwise; the paper's own scoring script uses BasicTextNormalizer for every language, so English WER is not
  directly comparable with it: `NORMALIZERS`). CER counts the spaces left by normalization (where punctuation was)
  as characters, as SeamlessM4T-v2's evaluation (jiwer.cer) and the paper's own evaluation script do; before
  2026-12-04 they were removed here. Which of the two a language uses comes from the language registry
  (`Language.asr_metric`).

Choices (documented so scores can be compared):
- A reference that normalizes to the empty string is skipped in WER/CER (its hypothesis too), as Whisper's and
  SeamlessM4T's evaluation scripts do; `Score.skipped` counts them. BLEU/chrF keep every line.
- Thai uses BasicTextNormalizer(preserve_marks=True): Whisper's default replaces every Unicode mark with a space,
  which cuts Thai words at their vowel signs and tone marks ("สวัสดีครับ" -> "สว สด คร บ") and would make CER count
  only consonants and spaces.
- Scores are on a 0-100 scale (WER 12.3 means 12.3 %).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from unicodedata import normalize as unicode_normalize

import jiwer
from sacrebleu.metrics import BLEU, CHRF
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from .. import languages
from ..errors import LLMSRTError

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "wer": False, "cer": False}
DISPLAY_NAMES = {"bleu": "BLEU", "chrf": "chrF2", "wer": "WER", "cer": "CER"}  # as SacreBLEU prints them


@dataclass(frozen=True)
class Score:
    metric: str  # "bleu" | "chrf" | "wer" | "cer"
    score: float  # corpus score on a 0-100 scale
    signature: str  # how it was computed (SacreBLEU's signature; normalizer and unit for WER/CER)
    n: int  # number of segments scored
    skipped: int = 0  # segments left out (WER/CER: reference empty after normalization)
    unicode: str | None = None  # BLEU/chrF: the Unicode form both texts were put in before SacreBLEU ("NFC")

    def format(self, decimals: int = 2) -> str:
        """'BLEU = 36.90  nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0  (texts NFC-normalized)'"""
        note = f"  (texts {self.unicode}-normalized)" if self.unicode else ""
        return f"{DISPLAY_NAMES[self.metric]} = {self.score:.{decimals}f}  {self.signature}{note}"


# ---------------------------------------------------------------------------------------------------------------
# Normalization (Whisper's normalizers; one registry entry per language that needs a non-default one)

UNICODE_FORM = "NFC"  # BLEU/chrF texts (module docstring)
# English uses Whisper's EnglishTextNormalizer (spellings, numbers, contractions made one form), as Whisper's and
# SeamlessM4T's evaluations do; the paper's own scoring script (yxduir/LLM-SRT evaluation/test_metric.py) uses
# BasicTextNormalizer for every language. English WER here is therefore lower than that script's and not directly
# comparable with it (Thai's CER likewise, for its marks); the report says so (`PAPER_NORMALIZER`), and every
# WER/CER signature names its normalizer (norm:whisper-english).
NORMALIZERS: dict[str, tuple[str, Callable[[], Callable[[str], str]]]] = {
    "eng": ("whisper-english", EnglishTextNormalizer),
    "tha": ("whisper-basic-marks", lambda: BasicTextNormalizer(preserve_marks=True)),
}
DEFAULT_NORMALIZER = ("whisper-basic", BasicTextNormalizer)
PAPER_NORMALIZER = DEFAULT_NORMALIZER[0]  # the paper's scoring script's, for every language


def normalizer_name(lang: str) -> str:
    """The name of the normalizer WER/CER of `lang` use ("whisper-english", "whisper-basic", ...)."""
    return _normalizer(lang)[0]


@cache
def _normalizer(lang: str) -> tuple[str, Callable[[str], str]]:
    languages.get(lang)  # a clear error for an unknown code
    name, make = NORMALIZERS.get(lang, DEFAULT_NORMALIZER)
    return name, make()


def normalize(text: str, lang: str) -> str:
    """Whisper's normalization of `text` in language `lang`, runs of white space made one space, ends stripped."""
    return " ".join(_normalizer(lang)[1](text).split())


def nfc(texts: Sequence[str]) -> list[str]:
    """`texts` in Unicode NFC, as BLEU and chrF read them (module docstring)."""
    return [unicode_normalize(UNICODE_FORM, t) for t in texts]


# ---------------------------------------------------------------------------------------------------------------
# The metrics. Each takes (hypotheses, references, language) and returns a Score.


def bleu(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> Score:
    """Corpus BLEU with the target language's SacreBLEU tokenizer."""
    _check(hyps, refs, "bleu")
    metric = BLEU(tokenize=languages.get(tgt_lang).bleu_tokenize)
    result = metric.corpus_score(nfc(hyps), [nfc(refs)])
    return Score("bleu", float(result.score), str(metric.get_signature()), len(hyps), unicode=UNICODE_FORM)


def chrf(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str | None = None) -> Score:
    """Corpus chrF2 (language-independent; `tgt_lang` is accepted for a uniform signature)."""
    _check(hyps, refs, "chrf")
    if tgt_lang is not None:
        languages.get(tgt_lang)
    metric = CHRF()
    result = metric.corpus_score(nfc(hyps), [nfc(refs)])
    return Score("chrf", float(result.score), str(metric.get_signature()), len(hyps), unicode=UNICODE_FORM)


def wer(hyps: Sequence[str], refs: Sequence[str], lang: str) -> Score:
    """Corpus word error rate (%) after Whisper normalization."""
    return _error_rate(hyps, refs, lang, "word")


def cer(hyps: Sequence[str], refs: Sequence[str], lang: str) -> Score:
    """Corpus character error rate (%) after Whisper normalization, its spaces counted as characters."""
    return _error_rate(hyps, refs, lang, "char")


def asr_error_rate(hyps: Sequence[str], refs: Sequence[str], lang: str) -> Score:
    """WER or CER, whichever the registry says `lang` is scored with (paper Table 2)."""
    return METRICS[languages.get(lang).asr_metric](hyps, refs, lang)


def error_counts(hyps: Sequence[str], refs: Sequence[str], lang: str) -> list[tuple[int, int] | None]:
    """Per sentence, in the unit `lang` is scored with (`asr_error_rate`): (edit errors, reference length) after
    normalization, or None where the reference normalizes to the empty string (skipped, as in the corpus score).
    Summed over sentences they give the corpus rate: 100 * errors / length (what a paired bootstrap resamples)."""
    metric = languages.get(lang).asr_metric
    unit = "word" if metric == "wer" else "char"
    _check(hyps, refs, metric)
    out: list[tuple[int, int] | None] = []
    for h, r in zip(hyps, refs):
        h, r = normalize(h, lang), normalize(r, lang)
        if not r:
            out.append(None)
            continue
        o = jiwer.process_words(r, h) if unit == "word" else jiwer.process_characters(r, h)
        out.append((o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits))
    return out


METRICS: dict[str, Callable[[Sequence[str], Sequence[str], str], Score]] = {
    "bleu": bleu,
    "chrf": chrf,
    "wer": wer,
    "cer": cer,
}


def compute(metric: str, hyps: Sequence[str], refs: Sequence[str], lang: str) -> Score:
    """Any metric by name ('bleu', 'chrf', 'wer', 'cer')."""
    if metric not in METRICS:
        raise LLMSRTError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return METRICS[metric](hyps, refs, lang)


# ---------------------------------------------------------------------------------------------------------------


def _error_rate(hyps: Sequence[str], refs: Sequence[str], lang: str, unit: str) -> Score:
    metric = "wer" if unit == "word" else "cer"
    _check(hyps, refs, metric)
    pairs = [(normalize(h, lang), normalize(r, lang)) for h, r in zip(hyps, refs)]
    kept = [(h, r) for h, r in pairs if r]
    if not kept:
        raise LLMSRTError(f"{metric.upper()}: all {len(refs)} references are empty after normalization; "
                          "check that the reference file holds transcripts")
    h, r = zip(*kept)
    # jiwer's character measure (process_characters) counts spaces as characters, as jiwer.cer does
    out = jiwer.process_words(list(r), list(h)) if unit == "word" else jiwer.process_characters(list(r), list(h))
    rate = out.wer if unit == "word" else out.cer
    unit_name = "char+space" if unit == "char" else unit  # "char" (spaces removed) until 2026-12-04
    signature = f"norm:{_normalizer(lang)[0]}|unit:{unit_name}|lang:{lang}|jiwer:{version('jiwer')}"
    return Score(metric, 100.0 * float(rate), signature, len(kept), skipped=len(pairs) - len(kept))


def _check(hyps: Sequence[str], refs: Sequence[str], metric: str) -> None:
    if isinstance(hyps, str) or isinstance(refs, str):
        raise LLMSRTError(f"{metric.upper()}: pass lists of sentences, not a single string")
    if len(hyps) == 0:
        raise LLMSRTError(f"{metric.upper()}: there are no hypotheses to score (empty list)")
    if len(hyps) != len(refs):
        raise LLMSRTError(f"{metric.upper()}: {len(hyps)} hypotheses but {len(refs)} references; "
                          "they must pair up line by line")
