"""The language registry: one entry per language, everything the toolkit needs to know about it.

Adding a language is adding one `Language(...)` line to LANGUAGES.
"""

from dataclasses import dataclass

from .errors import LLMSRTError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3, the code used in tags (<|eng|>) and manifests
    name: str  # English name
    script: str  # ISO 15924 script
    whisper: str  # Whisper language token (without <| |>)
    espeak: str  # espeak-ng voice used by the embedded corpus
    bleu_tokenize: str  # SacreBLEU tokenizer for this target language (paper Table 2)
    asr_metric: str  # "wer" or "cer" (CER for languages written without spaces)
    fleurs: str  # FLEURS locale folder
    commonvoice: tuple[str, ...]  # Common Voice locale folders of the language (the first is CoVoST 2's code)
    gettext: tuple[str, ...]  # gettext locale folders, first found wins (embedded corpus)


# Paper Table 10. Common Voice has Cantonese under two locales: `yue` (since Corpus 9.0) and `zh-HK` (Chinese, Hong
# Kong, since Corpus 4). Whisper base has no Cantonese token (large-v3 added "yue"); with Whisper base we use "zh",
# the token Whisper base was trained with for Chinese speech of every variety. See whisper_language().
LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("deu", "German", "Latn", "de", "de", "13a", "wer", "de_de", ("de",), ("de",)),
        Language("eng", "English", "Latn", "en", "en-us", "13a", "wer", "en_us", ("en",), ("en",)),
        Language("fra", "French", "Latn", "fr", "fr", "13a", "wer", "fr_fr", ("fr",), ("fr",)),
        Language("ind", "Indonesian", "Latn", "id", "id", "13a", "wer", "id_id", ("id",), ("id",)),
        Language("ita", "Italian", "Latn", "it", "it", "13a", "wer", "it_it", ("it",), ("it",)),
        Language("jpn", "Japanese", "Jpan", "ja", "ja", "char", "cer", "ja_jp", ("ja",), ("ja",)),
        Language("kor", "Korean", "Kore", "ko", "ko", "char", "cer", "ko_kr", ("ko",), ("ko",)),  # CER as the
        #   paper's own scoring script has it (yxduir/LLM-SRT, evaluation/test_metric.py: cer_lang), though Korean is
        #   written with spaces
        Language("nld", "Dutch", "Latn", "nl", "nl", "13a", "wer", "nl_nl", ("nl",), ("nl",)),
        Language("por", "Portuguese", "Latn", "pt", "pt-br", "13a", "wer", "pt_br", ("pt",), ("pt_BR", "pt")),
        Language("rus", "Russian", "Cyrl", "ru", "ru", "13a", "wer", "ru_ru", ("ru",), ("ru",)),
        Language("spa", "Spanish", "Latn", "es", "es", "13a", "wer", "es_419", ("es",), ("es",)),
        Language("tha", "Thai", "Thai", "th", "th", "char", "cer", "th_th", ("th",), ("th",)),
        Language("vie", "Vietnamese", "Latn", "vi", "vi", "13a", "wer", "vi_vn", ("vi",), ("vi",)),
        Language("yue", "Cantonese", "Hant", "yue", "yue", "char", "cer", "yue_hant_hk", ("yue", "zh-HK"),
                 ("zh_HK", "zh_TW")),
        Language("zho", "Chinese", "Hans", "zh", "cmn-latn-pinyin", "char", "cer", "cmn_hans_cn", ("zh-CN",),
                 ("zh_CN",)),
    ]
}

# The paper's 6 x 12 setting (Table 3).
SOURCES_6X12 = ("eng", "deu", "fra", "zho", "rus", "jpn")
TARGETS_6X12 = ("eng", "deu", "fra", "spa", "por", "ita", "nld", "rus", "jpn", "kor", "vie", "ind", "zho")


def get(code: str) -> Language:
    """The registry entry for an ISO 639-3 code; a clear error for anything else, which names the code meant where
    the value is another name of a registry language (`meant`)."""
    try:
        return LANGUAGES[code]
    except KeyError:
        hint = f"; did you mean {meant!r}?" if (meant := meant_code(code)) else ""
        raise LLMSRTError(
            f"unknown language code {code!r}: use one of {', '.join(sorted(LANGUAGES))} "
            f"(ISO 639-3), or add an entry to llm_srt/languages.py{hint}"
        ) from None


OTHER_CODES = {"cmn": "zho"}  # Mandarin's own ISO 639-3 code (FLEURS's and the reference model's tag) -> ours


def meant_code(value: str) -> str | None:
    """The ISO 639-3 code of the registry language `value` names otherwise: its Whisper code ("de"), its English name
    ("German") or its code in other letter case ("DEU"), as the server takes them (serve/forms.py); its FLEURS or
    Common Voice locale ("cmn_hans_cn", "zh-CN", "zh_HK"), or an OTHER_CODES code ("cmn"); None for anything else.
    The CLI, manifests and configs keep to the codes, and say which one was meant."""
    key = _locale(value.strip()) if isinstance(value, str) else None
    if key in OTHER_CODES:
        return OTHER_CODES[key]
    return next((lang.code for lang in LANGUAGES.values() if key in (lang.code, lang.whisper, lang.name.lower(),
                                                                       lang.fleurs, *map(_locale, lang.commonvoice))),
                None)


def _locale(name: str) -> str:
    """A locale as `meant_code` compares it: "zh-HK" and "zh_HK" alike, case aside."""
    return name.lower().replace("-", "_")


def parse_list(text: str) -> list[str]:
    """'eng,deu, fra' -> ['eng', 'deu', 'fra'], each checked against the registry, a code named again dropped (its
    rows were written twice, and the manifest refused for its repeated ids); 'all' -> every language. A list with no
    code in it is an error: one side of `--directions eng,deu:` left empty built an ASR-only manifest unsaid."""
    if text.strip() == "all":
        return list(LANGUAGES)
    codes = list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    if not codes:
        raise LLMSRTError(f"language list {text!r} names no language: give ISO 639-3 codes, comma-separated "
                          "(e.g. eng,deu), or all")
    for c in codes:
        get(c)
    return codes


def whisper_language(code: str, whisper_tokens: set[str] | None = None) -> str:
    """Whisper's language token for `code`; falls back to 'zh' for yue when the model lacks <|yue|>."""
    lang = get(code)
    if whisper_tokens is not None and f"<|{lang.whisper}|>" not in whisper_tokens and lang.code == "yue":
        return "zh"
    return lang.whisper


def by_fleurs_locale() -> dict[str, str]:
    return {lang.fleurs: lang.code for lang in LANGUAGES.values()}


def by_commonvoice_locale() -> dict[str, str]:
    """Common Voice locale (folder name) -> ISO 639-3; Cantonese has two (`yue` since Corpus 9.0, `zh-HK`)."""
    return {locale: lang.code for lang in LANGUAGES.values() for locale in lang.commonvoice}
