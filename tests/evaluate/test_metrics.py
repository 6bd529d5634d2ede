import pytest
import sacrebleu

from llm_srt import languages
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import metrics

# A small fixed corpus; expected values come from SacreBLEU called directly with an explicit tokenizer.
EN_HYPS = ["The cat sat on the mat.", "It is raining in Berlin today!", "We will meet tomorrow at noon.",
           "This sentence has nothing in common."]
EN_REFS = ["The cat is sitting on the mat.", "Today it is raining in Berlin!", "We'll meet tomorrow at noon.",
           "A completely different reference sentence."]
ZH_HYPS = ["今天天气很好。", "我们明天中午见面。", "这只猫坐在垫子上"]
ZH_REFS = ["今天的天气非常好。", "我们明天中午见。", "猫坐在垫子上。"]
PAPER_CHAR_TARGETS = {"jpn", "kor", "tha", "yue", "zho"}  # paper Table 2


def test_bleu_13a_matches_sacrebleu():
    expected = sacrebleu.corpus_bleu(EN_HYPS, [EN_REFS], tokenize="13a").score
    got = metrics.bleu(EN_HYPS, EN_REFS, "eng")
    assert got.score == pytest.approx(expected, abs=1e-9)
    assert got.n == 4 and got.metric == "bleu"
    # the tokenizer matters here, so a wrong choice would be caught
    assert abs(sacrebleu.corpus_bleu(EN_HYPS, [EN_REFS], tokenize="char").score - expected) > 1.0


def test_bleu_char_for_chinese_matches_sacrebleu():
    expected = sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="char").score
    got = metrics.bleu(ZH_HYPS, ZH_REFS, "zho")
    assert got.score == pytest.approx(expected, abs=1e-9)
    # 13a leaves unspaced Chinese as one token per sentence: a far lower score
    assert sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="13a").score < expected - 10


def test_bleu_identical_is_100_and_signature_text():
    assert metrics.bleu(EN_HYPS, EN_HYPS, "deu").score == pytest.approx(100.0)
    v = sacrebleu.__version__
    assert metrics.bleu(ZH_HYPS, ZH_REFS, "zho").signature == \
        f"nrefs:1|case:mixed|eff:no|tok:char|smooth:exp|version:{v}"
    assert metrics.bleu(EN_HYPS, EN_REFS, "fra").signature == \
        f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{v}"


@pytest.mark.parametrize("code", sorted(languages.LANGUAGES))
def test_bleu_tokenizer_follows_paper_table_2(code):
    tok = "char" if code in PAPER_CHAR_TARGETS else "13a"
    assert f"|tok:{tok}|" in metrics.bleu(["a b"], ["a b"], code).signature


def test_bleu_hand_checked_bigram_case():
    # hyp "a b c d" vs ref "a b c e": 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1 -> smoothed (exp)
    # with exp smoothing the zero 4-gram count becomes 1/(2*1): BLEU = (3/4 * 2/3 * 1/2 * 1/2)^(1/4)
    expected = 100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25
    assert metrics.bleu(["a b c d"], ["a b c e"], "eng").score == pytest.approx(expected, abs=1e-6)


def test_chrf_matches_sacrebleu():
    expected = sacrebleu.corpus_chrf(EN_HYPS, [EN_REFS]).score
    got = metrics.chrf(EN_HYPS, EN_REFS, "eng")
    assert got.score == pytest.approx(expected) and got.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6")
    assert got.format().startswith("chrF2 = ")


def test_english_normalizer_real_behaviour():
    # Whisper's English normalizer spells out titles, reads "'s" as "is" and writes numbers as digits.
    assert metrics.normalize("Mr. Smith's 2 cats!", "eng") == "mister smith is 2 cats"
    assert metrics.normalize("mister smith's two cats", "eng") == "mister smith is 2 cats"
    assert metrics.normalize("Twenty-five dollars", "eng") == "$25"
    assert metrics.normalize("colour", "eng") == "color"
    assert metrics.wer(["Mr. Smith's 2 cats!"], ["mister smith's two cats"], "eng").score == 0.0
    assert metrics.wer(["it costs twenty-five dollars"], ["It costs $25."], "eng").score == 0.0


def test_basic_normalizer_for_other_languages():
    assert metrics.normalize("Guten Tag, Herr Müller!", "deu") == "guten tag herr müller"
    assert metrics.wer(["guten tag herr müller"], ["Guten Tag, Herr Müller!"], "deu").score == 0.0
    # no English rules outside English: "Mr." stays "mr"
    assert metrics.wer(["mister smith"], ["Mr. Smith"], "deu").score == pytest.approx(50.0)


def test_wer_hand_checked_and_corpus_level():
    # 1 substitution (sat -> sit) + 1 deletion (the) over 6 reference words
    got = metrics.wer(["the cat sit on mat"], ["the cat sat on the mat"], "eng")
    assert got.score == pytest.approx(100 * 2 / 6)
    # corpus WER pools the errors: 1 error / 6 words (the mean of sentence WERs would be 25 %)
    got = metrics.wer(["a b c d", "x f"], ["a b c d", "e f"], "deu")
    assert got.score == pytest.approx(100 / 6) and got.n == 2


def test_wer_skips_references_that_normalize_to_empty():
    got = metrics.wer(["garbage words", "a b"], ["...!", "a b"], "fra")
    assert got.score == 0.0 and got.n == 1 and got.skipped == 1
    with pytest.raises(LLMSRTError, match="empty after normalization"):
        metrics.wer(["x"], ["?!"], "fra")


def test_cer_chinese_and_japanese_counts_the_spaces_normalization_leaves():
    # the reference normalizes to "你好 世界" (the comma becomes a space): 5 characters; 你好世介 lacks the space and
    # substitutes one character: 2 of 5
    assert metrics.cer(["你好世介"], ["你好，世界！"], "zho").score == pytest.approx(40.0)
    assert metrics.cer(["你好 世界"], ["你好世界"], "zho").score == pytest.approx(25.0)  # an inserted space counts
    # "今日は いい天気です" (10 characters) -> 今日はいい天気: the space and です deleted
    assert metrics.cer(["今日はいい天気"], ["今日は、いい天気です。"], "jpn").score == pytest.approx(30.0)
    assert metrics.cer(["今日はいい天気"], ["今日は、いい天気です。"], "jpn").signature.startswith(
        "norm:whisper-basic|unit:char+space|lang:jpn")


def test_cer_is_seamlessm4t_v2s_jiwer_cer_over_whispers_normalizer():
    """The paper follows SeamlessM4T-v2's evaluation: jiwer.cer over Whisper's basic normalizer's output, corpus
    level (its eval_utils.compute_asr_error_rate; the paper's own script does the same with HF evaluate's cer)."""
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer

    refs = ["今天天气很好，我们去公园吧。", "他说：“明天见！”", "一二三 四五六", "我喜欢（很）喜欢猫"]
    hyps = ["今天天气很好我们去公园吧", "他说明天见", "一二三四五六七", "我喜欢很喜欢狗。"]
    norm = BasicTextNormalizer()
    seamless = 100 * jiwer.cer([norm(r) for r in refs], [norm(h) for h in hyps])
    assert metrics.cer(hyps, refs, "zho").score == pytest.approx(seamless)
    assert seamless != pytest.approx(100 * jiwer.cer([norm(r).replace(" ", "") for r in refs],
                                                     [norm(h).replace(" ", "") for h in hyps]))  # spaces matter here


def test_asr_metric_comes_from_registry():
    assert metrics.asr_error_rate(["你好世界"], ["你好世介"], "zho").metric == "cer"
    assert metrics.asr_error_rate(["hello world"], ["hello word"], "eng").metric == "wer"
    assert metrics.asr_error_rate(["안녕 하세요"], ["안녕 하세요"], "kor").metric == "cer"  # the paper's script


def test_thai_keeps_vowel_marks():
    # Whisper's default normalizer would drop the marks and see no error here
    assert metrics.normalize("สวัสดีครับ", "tha") == "สวัสดีครับ"
    assert metrics.cer(["สวสดีครับ"], ["สวัสดีครับ"], "tha").score > 0


def test_errors():
    with pytest.raises(LLMSRTError, match="no hypotheses"):
        metrics.bleu([], [], "eng")
    with pytest.raises(LLMSRTError, match="2 hypotheses but 1 references"):
        metrics.wer(["a", "b"], ["a"], "eng")
    with pytest.raises(LLMSRTError, match="unknown language"):
        metrics.bleu(["a"], ["a"], "xxx")
    with pytest.raises(LLMSRTError, match="unknown metric"):
        metrics.compute("meteor", ["a"], ["a"], "eng")
    with pytest.raises(LLMSRTError, match="lists of sentences"):
        metrics.bleu("a b", "a b", "eng")


def test_bleu_and_chrf_read_canonically_equivalent_text_as_the_same_text():
    """A decomposed (NFD) hypothesis against its NFC reference (Vietnamese, Korean, a macOS file) lost nearly all
    its BLEU (0.0 for the same Vietnamese sentence, WER 0.0): both texts are NFC now. NFC input scores exactly as
    SacreBLEU scores it, with SacreBLEU's own signature, and compatibility forms (NFKC's business) stay apart."""
    import unicodedata

    vie = ["Tôi đang học tiếng Việt ở Hà Nội mỗi ngày", "Chúng tôi sẽ gặp nhau vào ngày mai"]
    kor = ["오늘 날씨가 아주 좋습니다", "우리는 내일 정오에 만납니다"]
    for refs, lang in ((vie, "vie"), (kor, "kor")):
        nfd = [unicodedata.normalize("NFD", r) for r in refs]
        assert nfd != refs and metrics.wer(nfd, refs, lang).score == 0.0
        assert metrics.bleu(nfd, refs, lang).score == pytest.approx(100.0) == metrics.chrf(nfd, refs, lang).score
        assert metrics.bleu(refs, nfd, lang).score == pytest.approx(100.0)
    for hyps, refs, lang, tok in ((EN_HYPS, EN_REFS, "eng", "13a"), (ZH_HYPS, ZH_REFS, "zho", "char"),
                                  (vie[:1] + ["Chúng tôi gặp nhau"], vie, "vie", "13a")):
        got, plain = metrics.bleu(hyps, refs, lang), sacrebleu.BLEU(tokenize=tok)
        assert got.score == plain.corpus_score(hyps, [refs]).score and got.signature == str(plain.get_signature())
        assert metrics.chrf(hyps, refs, lang).score == sacrebleu.corpus_chrf(hyps, [refs]).score
        assert got.unicode == "NFC" and got.format().endswith("  (texts NFC-normalized)")
    assert metrics.bleu(["ﬁve"], ["five"], "eng").score < 100  # the ligature is not NFC's to fold
    assert metrics.wer(["a"], ["a"], "eng").unicode is None
