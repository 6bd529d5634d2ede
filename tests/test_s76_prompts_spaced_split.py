"""parse_srt splits an SRT output on a language tag written with spaces inside ("< |eng|>", "<|deu| >") as on the
tag itself: the spaced forms `clean` drops (what serve's transcripts lose) are the ones it splits on."""

import pytest

from llm_srt.prompts import after_first_tags, clean, parse_srt, translation_part

PARTS = ("Will it rain tomorrow?", "Regnet es morgen?")


def _code(written: str) -> str:
    """The code in a tag as written ("< |eng| >": "eng")."""
    return written.replace(" ", "")[2:-2]


@pytest.mark.parametrize("src_tag, tgt_tag", [
    ("< |eng|>", "<|deu|>"),  # a small model's spaced source tag (seen on a 42 s clip)
    ("<|eng|>", "<|deu| >"),
    ("< |eng| >", " < | deu | > "),
    ("<|en| >", "< |de|>"),  # the registry's Whisper codes, spaced as clean drops them
])
def test_a_spaced_tag_pair_splits_transcript_from_translation(src_tag, tgt_tag):
    out = parse_srt(PARTS[0] + src_tag + tgt_tag + PARTS[1])
    assert (out.transcript, out.translation) == PARTS
    assert (out.src, out.tgt) == (_code(src_tag), _code(tgt_tag))
    assert out.well_formed


def test_the_spaced_forms_are_the_ones_clean_drops():
    for written in ("< |eng|>", "<|deu| >", "< | fra | >", "<|en| >"):
        assert clean(f"a{written}b") == "a b"  # one pattern: what clean drops, parse_srt splits on
        out = parse_srt(f"Hello.{written}Hallo.")
        assert (out.transcript, out.translation, out.src) == ("Hello.", "Hallo.", _code(written))


def test_a_spaced_tag_pair_after_the_translation_cuts_the_loop():
    out = parse_srt("Will it rain?< |eng|><|deu|>Regnet es?< |eng| ><|deu|>Regnet es?")
    assert (out.transcript, out.translation, out.src, out.tgt, out.well_formed) == (
        "Will it rain?", "Regnet es?", "eng", "deu", False)


def test_the_prompts_tags_written_again_spaced_are_passed_over():
    out = parse_srt("< |eng|><|deu|>Hello.<|eng|>< |deu|>Hallo.")
    assert (out.transcript, out.translation, out.src, out.tgt) == ("Hello.", "Hallo.", "eng", "deu")


def test_a_spaced_source_tag_alone_still_parts_the_transcript():
    out = parse_srt("Hello< |eng|> Hallo")
    assert (out.transcript, out.translation, out.src, out.tgt) == ("Hello", "Hallo", "eng", None)
    assert after_first_tags("Hello< |eng|> Hallo") == " Hallo"  # the decoder's end rule sees the translation begun
    assert translation_part("Will it rain?< |eng|><|deu|>Regnet es?", "eng") == "Regnet es?"


@pytest.mark.parametrize("text", ["x < |y| > z", "a < |xyz| > b", "a < b | c > d"])
def test_text_that_only_looks_like_a_spaced_tag_is_the_transcript(text):
    out = parse_srt(text)
    assert (out.transcript, out.translation, out.src) == (text, "", None)
