"""A language tag or special token the model wrote with spaces inside ("< |eng|>") is dropped like the tag itself;
text that only looks a little like one stays."""

import pytest

from llm_srt.prompts import clean, first_part, parse_srt


@pytest.mark.parametrize("text, kept", [
    ("No stopping.< |eng|>", "No stopping."),  # seen on a 42 s clip: it reached the transcript, cues, verbose_json
    ("Hi < | deu | > there", "Hi there"),
    ("Hallo <|en| > Welt", "Hallo Welt"),  # the registry's Whisper code too
    ("Stop.</ |eng|>", "Stop."),
    ("a < |endoftext| >", "a"),
    ("a < eos > b </ s >", "a b"),
    ("你好< |im_end|>世界", "你好世界"),
])
def test_spaced_tags_are_dropped(text, kept):
    assert clean(text) == kept
    assert first_part(text) == kept


@pytest.mark.parametrize("text", ["a < b | c > d", "x <| y", "x < |y| > z", "|a| < |b| > |c|", "if a < s > b",
                                  "< |xyz| >"])
def test_text_that_only_looks_like_a_tag_stays(text):
    assert clean(text) == text


def test_a_transcript_ending_in_a_spaced_tag_is_parsed_without_it():
    out = parse_srt("No stopping.< |eng|>")
    assert out.transcript == "No stopping." and out.translation == "" and not out.well_formed
