import pytest
from hypothesis import given, strategies as st

from llm_srt import prompts
from llm_srt.errors import LLMSRTError
from llm_srt.prompts import Task, build, parse_srt, srt_target


def test_table1_exact():
    # Paper Table 1, character for character.
    assert build(Task.ASR, "eng", transcript="Will it rain tomorrow?") == ("<|eng|>", "Will it rain tomorrow?")
    assert build(Task.SMT, "eng", "deu", "Will it rain tomorrow?", "Regnet es morgen?") == (
        "Will it rain tomorrow?<|eng|><|deu|>", "Regnet es morgen?")
    assert build(Task.SRT, "eng", "deu", "Will it rain tomorrow?", "Regnet es morgen?") == (
        "<|eng|><|deu|>", "Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen?")
    assert build(Task.S2TT, "eng", "deu", "Will it rain tomorrow?", "Regnet es morgen?") == (
        "<|eng|><|deu|>", "Regnet es morgen?")


def test_unknown_language_is_a_user_error():
    with pytest.raises(LLMSRTError, match="unknown language code 'xx'"):
        build(Task.SRT, "eng", "xx", "a", "b")


def test_parse_well_formed():
    out = parse_srt("Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen?")
    assert (out.transcript, out.translation, out.src, out.tgt, out.well_formed) == (
        "Will it rain tomorrow?", "Regnet es morgen?", "eng", "deu", True)


@pytest.mark.parametrize("text,transcript,translation,well_formed", [
    ("no tags at all", "no tags at all", "", False),
    ("", "", "", False),
    ("<|eng|><|deu|>only translation", "", "only translation", False),
    ("only transcript<|eng|><|deu|>", "only transcript", "", False),
    ("one tag<|deu|>Hallo", "one tag", "Hallo", False),
    ("a<|eng|><|deu|>b<|eng|><|deu|>b<|eng|><|deu|>", "a", "b", False),  # looping output is cut
    ("a<|eng|> <|deu|> b<eos>", "a", "b", True),
    ("a<|eng|><|eng|><|deu|>b", "a", "b", False),  # duplicated tag
    ("<|", "", "", False),  # a tag the token cap cut off
    ("a<|eng|><|deu|>b<|eng|", "a", "b", False),
    ("a logging.<|eng|><|eng|><|eng|><|eng", "a logging.", "", False),
    ("a<|eng|><|deu|>b <|de", "a", "b", False),
    ("x <|", "x", "", False),
    ("<|eng|><|deu|>a<|eng|><|deu|>b", "a", "b", False),  # the prompt's tags written again first: never well formed
    (" <|eng|><|deu|> a <|eng|><|deu|>b<|eng|><|deu|>", "a", "b", False),
    ("<|eng|><|deu|><|eng|><|deu|>b", "", "b", False),
    ("<|eng|>Hello<|eng|><|deu|>Hallo", "Hello", "Hallo", False),  # the source tag alone first, then the pair
    ("<|eng|>Hello<|deu|>", "", "Hello", False),  # no pair after it: the tag is the separator
    ("<|eng|><|deu|>Hallo Welt.<|eng|>", "", "Hallo Welt.", False),  # no second pair: a translation cut at a tag
    ("<|fim_pad|>a<|eng|><|deu|>b<|im_end|>", "a", "b", True),  # a tokenizer's own tags are not language tags
    ("a<|eng|><|deu|><|box_start|>b", "a", "b", True),
    ("a<|zh-CN|><|eng|>b", "a", "b", True),
    ("a b c<|eng|><|deu|>d e a b c<|eng|><|deu|>d e", "a b c", "d e", False),  # the whole unit looping: its
    ("a b c<|eng|><|deu|>d e\na b c<|eng|><|deu|>d e a b c<|eng|>", "a b c", "d e", False),  # repeated transcript
    ("a b c<|eng|><|deu|>d b c<|eng|><|deu|>d b c", "a b c", "d b c", False),  # is no part of the translation (the
    ("a b c<|eng|><|deu|>d a b c<|eng|><|deu|>e", "a b c", "d a b c", False),  # whole transcript, and then the
    ("No.<|eng|><|spa|>No, no.<|eng|><|spa|>No, no.", "No.", "No, no.", False),  # translation again; 3+ words)
    ("<|eng|><|deu|>a<|eng|>b", "a", "b", False),  # the prompt's pair first, then the source tag, text after it
    ("<|eng|><|deu|>Hallo, du<|deu|>Hallo", "", "Hallo, du", False),  # ... the target's tag: a translation's end
])
def test_parse_robust(text, transcript, translation, well_formed):
    out = parse_srt(text)
    assert (out.transcript, out.translation, out.well_formed) == (transcript, translation, well_formed)


_words = st.text(alphabet=st.characters(blacklist_characters="<|>", blacklist_categories=("Cs", "Cc", "Zs", "Zl",
                                        "Zp")), min_size=1, max_size=12)
_sentence = st.lists(_words, min_size=1, max_size=6).map(" ".join)
_code = st.sampled_from(sorted(prompts.languages.LANGUAGES))


@given(_sentence, _sentence, _code, _code)
def test_parse_round_trips(transcript, translation, src, tgt):
    out = parse_srt(srt_target(transcript, translation, src, tgt))
    assert out.transcript == transcript and out.translation == translation
    assert (out.src, out.tgt, out.well_formed) == (src, tgt, True)


@given(st.text(max_size=200))
def test_parse_never_raises(text):
    out = parse_srt(text)
    assert isinstance(out.transcript, str) and isinstance(out.translation, str)


@pytest.mark.parametrize("text,expected", [
    ("Will it rain?<|eng|><|deu|>Regnet es?", "Will it rain?"),  # an SRT model asked for ASR goes on: cut
    ("<|eng|>Will it rain?", "Will it rain?"), ("<|eng|><|deu|> Regnet es?<eos>", "Regnet es?"),
    ("plain text", "plain text"), ("<|eng|><|deu|>", ""), ("x <|en", "x"),
])
def test_a_one_part_output_stops_at_a_language_tag_after_its_text(text, expected):
    from llm_srt.prompts import first_part

    assert first_part(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Will it rain?<|eng|><|deu|>Regnet es?", "Regnet es?"),  # S2TT's prompt is SRT's: an SRT model writes both
    ("Regnet es?", "Regnet es?"), ("Regnet es?<|deu|><|eng|>Will it rain?", "Regnet es?"),
    ("<|eng|><|deu|>Regnet es?", "Regnet es?"),
])
def test_a_translation_only_output_is_the_part_after_the_transcript_and_its_source_tag(text, expected):
    from llm_srt.prompts import translation_part

    assert translation_part(text, "eng") == expected


def test_a_models_own_language_tags_are_written_and_read_back_as_our_codes():
    """A model trained with <|cmn|> for Mandarin (the reference's checkpoints: SpeechLLMConfig.language_tags) is
    prompted with its own tag in every task, and its outputs parse back to our codes; no map: our tags as before."""
    tags = {"zho": "cmn"}
    assert prompts.tag("zho", tags) == "<|cmn|>" and prompts.tag("eng", tags) == "<|eng|>"
    assert build(Task.ASR, "zho", transcript="你好", tags=tags) == ("<|cmn|>", "你好")
    assert build(Task.SRT, "eng", "zho", "Hello.", "你好。", tags=tags) == (
        "<|eng|><|cmn|>", "Hello.<|eng|><|cmn|>你好。")
    assert build(Task.SMT, "zho", "eng", "你好", "Hello.", tags=tags) == ("你好<|cmn|><|eng|>", "Hello.")
    assert srt_target("你好", "Hello.", "zho", "eng", tags) == "你好<|cmn|><|eng|>Hello."
    out = parse_srt("Hello.<|eng|><|cmn|>你好。", tags)
    assert (out.transcript, out.translation, out.src, out.tgt, out.well_formed) == (
        "Hello.", "你好。", "eng", "zho", True)
    assert parse_srt("<|cmn|><|eng|>你好<|cmn|><|eng|>Hello.", tags).src == "zho"  # the prompt's tags first
    assert prompts.translation_part("你好<|cmn|><|eng|>Hello.", "zho", tags) == "Hello."
    assert prompts.translation_part("你好<|cmn|><|eng|>Hello.", "zho") == "你好"  # without the map: not the source
    assert build(Task.SRT, "eng", "zho", "Hello.", "你好。") == ("<|eng|><|zho|>", "Hello.<|eng|><|zho|>你好。")
    assert build(Task.SRT, "eng", "zho", "Hello.", "你好。", tags={}) == build(Task.SRT, "eng", "zho", "Hello.", "你好。")


@pytest.mark.parametrize("text,transcript,translation", [
    ("明天会下雨吗？<|zho|><|eng|>Will it rain tomorrow? 明天会下雨吗？<|zho|><|eng|>Will it rain tomorrow?",
     "明天会下雨吗？", "Will it rain tomorrow?"),
    ("明天会下雨吗？<|zho|><|eng|>Will it rain tomorrow?明天会下雨吗？<|zho|><|eng|>Will it rain tomorrow?",
     "明天会下雨吗？", "Will it rain tomorrow?"),
    ("Will it rain tomorrow?<|eng|><|zho|>明天会下雨吗？Will it rain tomorrow?<|eng|><|zho|>明天会下雨吗？",
     "Will it rain tomorrow?", "明天会下雨吗？"),
    ("พรุ่งนี้ฝนจะตกไหม<|tha|><|eng|>Will it rain tomorrow? พรุ่งนี้ฝนจะตกไหม<|tha|><|eng|>Will it rain tomorrow?",
     "พรุ่งนี้ฝนจะตกไหม", "Will it rain tomorrow?"),
    ("明日は雨が降りますか<|jpn|><|zho|>明天会下雨吗？明日は雨が降りますか<|jpn|><|zho|>明天会下雨吗？",
     "明日は雨が降りますか", "明天会下雨吗？"),
    ("Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen? Will it rain tomorrow?<|eng|><|deu|>Regnet es morgen?",
     "Will it rain tomorrow?", "Regnet es morgen?"),  # as before
    ("好的。<|zho|><|jpn|>はい、好的。<|zho|><|jpn|>はい、好的。", "好的。", "はい、好的。"),  # too short to tell
    ("x y z<|eng|><|deu|>wx y z<|eng|><|deu|>w", "x y z", "wx y z"),  # not the whole transcript: "wx"
])
def test_a_loop_is_cut_from_the_translation_where_either_language_is_written_without_spaces(text, transcript,
                                                                                            translation):
    """A looping model writes its transcript again after the translation, then the tags and the translation again.
    That repeat was cut only from a transcript of three space-separated words after a space: a Chinese, Japanese or
    Thai transcript is one such word, and a Chinese target leaves no space before it, so the repeat stayed in the
    translation. Now a transcript written without spaces counts its characters (5 at least), and nothing need part
    the repeat from a translation where either side of the join is written without spaces."""
    out = parse_srt(text)
    assert (out.transcript, out.translation, out.well_formed) == (transcript, translation, False)


def test_a_dropped_token_inside_cjk_text_leaves_no_space():
    """A non-special tag decoding left between two Chinese characters was replaced by a space ("你好 世界");
    between words, a space is still what separates them."""
    from llm_srt.prompts import clean

    assert clean("你好<|im_end|>世界") == "你好世界" and clean("你好<|im_end|><|im_start|>世界") == "你好世界"
    assert parse_srt("你好<|im_end|>世界<|zho|><|eng|>Hello<eos>world").transcript == "你好世界"
    assert clean("Hello<|im_end|>world") == "Hello world" and clean("你好<|im_end|>world") == "你好 world"
    assert clean("你好 <|im_end|>世界") == "你好 世界" and clean("<|im_end|>你好<|im_end|>") == "你好"


def test_a_closing_tag_look_alike_of_a_language_tag_is_no_text():
    """The shipped model once wrote "Skip </|eng|>" in a transcript (a walkthrough of README's commands): a tag with
    a slash is dropped like the tag itself."""
    from llm_srt.prompts import clean

    assert clean("Skip </|eng|>") == "Skip" and clean("a</|deu|>b") == "a b" and clean("x </ y") == "x </ y"


def test_a_prompt_that_cannot_be_built_is_the_projects_error():
    """`build` raised a bare ValueError (a traceback for a library or server caller) for a task without a prompt of
    its own or without its target language."""
    with pytest.raises(LLMSRTError, match="runs as asr, then smt"):
        build(Task.ASR_SMT, "eng", "deu", "hello")
    with pytest.raises(LLMSRTError, match="needs a target language"):
        build(Task.SRT, "eng", None, "hello")
