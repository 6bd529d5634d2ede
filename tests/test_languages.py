import pytest

from llm_srt import languages
from llm_srt.errors import LLMSRTError


def test_table10_languages():
    assert len(languages.LANGUAGES) == 15
    assert {l.code for l in languages.LANGUAGES.values()} == {
        "deu", "eng", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa", "tha", "vie", "yue", "zho"}


def test_bleu_tokenizer_follows_table2():
    char = {c for c, l in languages.LANGUAGES.items() if l.bleu_tokenize == "char"}
    assert char == {"jpn", "kor", "tha", "yue", "zho"}
    assert all(l.bleu_tokenize == "13a" for c, l in languages.LANGUAGES.items() if c not in char)


def test_paper_6x12_setting():
    assert len(languages.SOURCES_6X12) == 6 and len(languages.TARGETS_6X12) == 13  # 12 targets + eng
    assert set(languages.SOURCES_6X12) <= set(languages.LANGUAGES)
    assert set(languages.TARGETS_6X12) <= set(languages.LANGUAGES)


def test_yue_falls_back_to_zh_when_whisper_lacks_the_token():
    assert languages.whisper_language("yue", {"<|zh|>", "<|en|>"}) == "zh"
    assert languages.whisper_language("yue", {"<|zh|>", "<|yue|>"}) == "yue"


def test_parse_list_and_errors():
    assert languages.parse_list("eng, deu") == ["eng", "deu"]
    assert languages.parse_list("eng,deu, eng") == ["eng", "deu"]  # named again: once (its rows were written twice)
    assert len(languages.parse_list("all")) == 15
    with pytest.raises(LLMSRTError, match="unknown language code 'en'.*ISO 639-3"):
        languages.parse_list("en,deu")


def test_locale_maps_reach_every_language():
    assert len(languages.by_fleurs_locale()) == 15
    by_cv = languages.by_commonvoice_locale()
    assert set(by_cv.values()) == set(languages.LANGUAGES) and len(by_cv) == 16
    # Cantonese: Common Voice's `yue` locale (since Corpus 9.0) and `zh-HK` (Chinese, Hong Kong); CoVoST's zh-CN
    assert (by_cv["yue"], by_cv["zh-HK"], by_cv["zh-CN"]) == ("yue", "yue", "zho")


@pytest.mark.parametrize("text", ["", " , ", ","])
def test_a_list_with_no_language_is_refused(text):
    """parse_list("") was [], so `--directions eng,deu:` built an ASR-only manifest without a word."""
    with pytest.raises(LLMSRTError, match=r"names no language: give ISO 639-3 codes"):
        languages.parse_list(text)


def test_directions_with_an_empty_side_are_refused():
    from llm_srt.data.manifest import parse_directions

    with pytest.raises(LLMSRTError, match="names no language"):
        parse_directions("eng,deu:", ["eng", "deu"])
    assert parse_directions("none", ["eng", "deu"]) == []  # the way to ask for no translation
    assert parse_directions("eng:deu", ["eng", "deu"]) == [("eng", "deu")]


@pytest.mark.parametrize("value, meant", [("de", "deu"), ("German", "deu"), ("german", "deu"), ("ENG", "eng"),
                                          ("zh", "zho"), ("Cantonese", "yue"), ("cmn", "zho"), ("zh-CN", "zho"),
                                          ("zh_HK", "yue"), ("cmn_hans_cn", "zho"), ("en_us", "eng")])
def test_another_name_of_a_language_is_refused_naming_the_code_meant(value, meant):
    """`--src de` or `German` (which the server takes) was refused with the list of codes alone; the CLI keeps to
    ISO 639-3, as the README documents, and says which code was meant. So for Mandarin's own code `cmn` (FLEURS's and
    the reference model's tag) and a FLEURS or Common Voice locale."""
    with pytest.raises(LLMSRTError) as e:
        languages.get(value)
    assert str(e.value) == (f"unknown language code {value!r}: use one of deu, eng, fra, ind, ita, jpn, kor, nld, "
                            "por, rus, spa, tha, vie, yue, zho (ISO 639-3), or add an entry to llm_srt/languages.py; "
                            f"did you mean {meant!r}?")


@pytest.mark.parametrize("value", ["xx", "klingon", "", "auto"])
def test_a_value_naming_no_language_gets_no_guess(value):
    with pytest.raises(LLMSRTError) as e:
        languages.get(value)
    assert str(e.value).endswith("or add an entry to llm_srt/languages.py")


def test_translate_says_which_code_was_meant(capsys, tmp_path):
    from llm_srt import cli

    (tmp_path / "a.wav").write_bytes(b"")
    assert cli.main(["translate", str(tmp_path / "a.wav"), "--model", "m", "--src", "German", "--tgt", "eng"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-srt translate: error: --src: unknown language code 'German': use one of deu, ")
    assert err.endswith("; did you mean 'deu'?\n")


def test_the_server_takes_every_name_the_cli_says_is_meant():
    """The server's own alias table lacked what the CLI's "did you mean" names: cmn, zh-CN, cmn_hans_cn were a 400."""
    from llm_srt.serve.forms import resolve_language

    for lang in languages.LANGUAGES.values():
        for alias in (lang.code, lang.whisper, lang.name, lang.name.upper(), lang.fleurs, *lang.commonvoice):
            assert resolve_language(alias, "language") == languages.meant_code(alias) == lang.code, alias
    assert resolve_language(" cmn ", "language") == languages.meant_code("cmn") == "zho"
    with pytest.raises(Exception, match="unknown language 'klingon'"):
        resolve_language("klingon", "language")
