import re

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.subtitles import Cue, timestamp, to_srt, to_vtt, write

CUES = [
    Cue.of(0.0, 2.5, "Das Wetter ist heute schön.", "The weather is nice today."),
    Cue.of(3.1234, 65.0, "Wir treffen uns morgen."),
    Cue(3725.5, 3727.999, "line one\n\nline two --> three"),
]
SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})"


def parse(text: str, time_re: str, header: str | None = None) -> list[tuple[int, float, float, list[str]]]:
    """A small strict parser: blocks separated by one blank line; index, 'start --> end', 1+ text lines."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    blocks = text[:-1].split("\n\n")
    if header is not None:
        assert blocks.pop(0) == header
    cues = []
    for block in blocks:
        lines = block.split("\n")
        assert len(lines) >= 3 and all(lines), block
        m = re.fullmatch(f"{time_re} --> {time_re}", lines[1])
        assert m, lines[1]
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append((int(lines[0]), start, end, lines[2:]))
    return cues


def check(cues):
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    assert all(s < e for _, s, e, _ in cues)
    assert all(a[2] <= b[1] for a, b in zip(cues, cues[1:]))  # monotonic, no overlap


def test_timestamps():
    assert timestamp(62.345) == "00:01:02,345"
    assert timestamp(62.345, ".") == "00:01:02.345"
    assert timestamp(3599.9996) == "01:00:00,000"  # rounds to the millisecond, carrying over
    assert timestamp(0) == "00:00:00,000"
    assert timestamp(360000.0) == "100:00:00,000"


def test_srt_round_trip():
    text = to_srt(CUES)
    cues = parse(text, SRT_TIME)
    check(cues)
    assert len(cues) == 3
    assert cues[0][3] == ["The weather is nice today.", "Das Wetter ist heute schön."]  # transcript first
    assert cues[1][3] == ["Wir treffen uns morgen."]
    assert cues[1][1] == pytest.approx(3.123) and cues[1][2] == pytest.approx(65.0)
    assert cues[2][1] == pytest.approx(3725.5) and cues[2][3] == ["line one", "line two -> three"]
    assert "00:00:03,123 --> 00:01:05,000" in text and "01:02:05,500 --> 01:02:07,999" in text


def test_vtt_round_trip():
    text = to_vtt(CUES)
    assert text.startswith("WEBVTT\n\n")
    cues = parse(text, VTT_TIME, header="WEBVTT")
    check(cues)
    assert len(cues) == 3 and cues[0][3][1] == "Das Wetter ist heute schön."
    assert "00:00:00.000 --> 00:00:02.500" in text and "-->" not in "".join(l for c in cues for l in c[3])


def test_empty_cues_and_errors(tmp_path):
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n"
    assert len(parse(to_srt([Cue(0, 1, "  "), Cue(1, 2, "a")]), SRT_TIME)) == 1  # no text, no cue
    with pytest.raises(LLMSRTError, match="cue 1"):
        to_srt([Cue(2.0, 1.0, "backwards")])
    with pytest.raises(LLMSRTError, match="unknown subtitle format"):
        write(tmp_path / "x.txt", CUES)
    path = write(tmp_path / "x.vtt", CUES)
    assert len(parse(path.read_text(encoding="utf-8"), VTT_TIME, header="WEBVTT")) == 3


def test_vtt_escapes_what_its_cue_text_cannot_hold_and_srt_keeps_it():
    """WebVTT cue text cannot hold '&', '<' or '>' as such ('<' starts a tag); before, they were written as they
    were. SubRip players read tags such as <i> in the text: it keeps it as it is."""
    cue = Cue.of(0.0, 1.0, "Tom & Jerry <i>3 > 2</i>", "a <b> & c")
    assert parse(to_vtt([cue]), VTT_TIME, header="WEBVTT")[0][3] == ["a &lt;b&gt; &amp; c",
                                                                     "Tom &amp; Jerry &lt;i&gt;3 &gt; 2&lt;/i&gt;"]
    assert parse(to_srt([cue]), SRT_TIME)[0][3] == ["a <b> & c", "Tom & Jerry <i>3 > 2</i>"]


def _segment(start, end, transcript, translation):
    from types import SimpleNamespace

    return SimpleNamespace(start=start, end=end, transcript=transcript, translation=translation)


def test_a_long_segment_becomes_cues_of_two_short_lines_timed_by_their_share():
    """A 30 s segment was one cue with its translation on one line of 300+ characters, off any screen. Now: lines
    of at most 42 columns, two a cue (one each with the transcript above), consecutive cues that cover the segment
    exactly, each long in proportion to the text it shows."""
    from llm_srt.subtitles import MAX_LINE_WIDTH, segment_cues

    english = ("The quick brown fox jumps over the lazy dog and keeps running through the forest until the sun "
               "goes down behind the hills of the far country, where nobody has ever seen it again.")
    german = ("Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter durch den Wald, bis die "
              "Sonne hinter den Hügeln des fernen Landes untergeht, wo ihn niemand je wieder gesehen hat.")
    for mode, lines_each in (("both", 1), ("translation", 2)):
        cues = segment_cues([_segment(10.0, 40.0, english, german)], mode)
        assert len(cues) > 2 and cues[0].start == 10.0 and cues[-1].end == 40.0
        assert all(a.end == b.start for a, b in zip(cues, cues[1:]))  # no gap, no overlap
        for cue in cues:
            lines = cue.text.split("\n")
            assert len(lines) <= 2 and all(len(line) <= MAX_LINE_WIDTH for line in lines), cue
        shown = " ".join(c.text.split("\n")[-1] for c in cues) if mode == "both" else " ".join(
            c.text.replace("\n", " ") for c in cues)
        assert shown == german  # every word, in order, once
        if mode == "both":
            assert " ".join(c.text.split("\n")[0] for c in cues) == english
    one = segment_cues([_segment(10.0, 40.0, english, german)], "translation", width=0)  # as before
    assert one == [Cue(10.0, 40.0, german)]
    assert segment_cues([_segment(1.0, 2.0, "hi", "hallo")]) == [Cue(1.0, 2.0, "hi\nhallo")]  # fits: untouched


def test_cjk_lines_break_between_characters_and_count_two_columns_each():
    from llm_srt.subtitles import segment_cues

    japanese = "今日はとても良い天気ですね。明日も晴れるといいですね。そして来週も晴れてほしいです。"  # 42 characters
    cues = segment_cues([_segment(0.0, 9.0, "", japanese)], "translation")
    lines = [line for c in cues for line in c.text.split("\n")]
    assert "".join(lines) == japanese and all(len(line) <= 21 for line in lines) and len(lines) == 2


def test_a_token_wider_than_a_part_no_longer_drops_the_other_texts_words():
    """Thai is written without spaces between words: a clause is one token, wider than a part of the segment, so
    the Thai part after it was empty, its cue got no time and was dropped, and the English shown with it too
    ("we will go to the public park with" vanished). Now that English joins the cue showing the Thai clause."""
    from llm_srt.subtitles import fit

    english = "Today the weather is very good, so we will go to the public park with our children after lunch, okay."
    thai = ("วันนี้อากาศดีมากเราจึงจะไปสวนสาธารณะกับลูกๆของเราหลังอาหารกลางวันแล้วก็จะกลับบ้านตอนเย็น"
            " นะคะ ขอบคุณค่ะ")
    cues = fit(0.0, 6.0, english, thai)
    assert [line for c in cues for line in c.text.split("\n") if line.isascii()] == [
        "Today the weather is very good, so we will", "go to the public park with", "our children after lunch, okay."]
    assert [line for c in cues for line in c.text.split("\n") if not line.isascii()] == thai.split(" ", 1)
    assert cues[0].start == 0.0 and cues[0].end == cues[1].start and cues[-1].end == 6.0 and len(cues) == 2


def test_narrow_lines_keep_every_word_of_both_texts():
    """`--line-width 20`: the German part after its long compound was empty (the compound took its time), so its
    cue was dropped with the English part shown in it: "The tram stop is opposite the main station." was shown as
    "The tram stop / the / main station."."""
    from llm_srt.subtitles import segment_cues

    english = "The tram stop is opposite the main station."
    german = "Die Straßenbahnhaltestelle befindet sich gegenüber dem Hauptbahnhof."
    cues = segment_cues([_segment(0.0, 6.0, english, german)], "both", width=20)
    lines = [line for c in cues for line in c.text.split("\n")]
    assert " ".join(line for line in lines if line in english) == english
    assert " ".join(line for line in lines if line not in english) == german
    assert cues[0].start == 0.0 and cues[-1].end == 6.0 and all(a.end == b.start for a, b in zip(cues, cues[1:]))


def _random_text(rng, letters: str, wide: str) -> str:
    """Words of `letters`: mostly short, some far wider than a line (a Thai clause, a German compound, a URL), some
    runs of `wide` characters (CJK, two columns each, broken between characters), in random mixes."""
    words = []
    for _ in range(rng.integers(1, 40)):
        kind = rng.random()
        if kind < 0.1:
            n, pool = rng.integers(15, 120), letters  # one token wider than most lines
        elif kind < 0.2:
            n, pool = rng.integers(1, 30), wide
        else:
            n, pool = rng.integers(1, 12), letters
        words.append("".join(rng.choice(list(pool), n)))
    return " ".join(words)


def test_every_word_of_both_texts_is_shown_once_in_order_within_the_segment():
    """Random segments of random texts and widths (long tokens, Thai-like runs, CJK): each text's lines, read in
    cue order, give back the text, and cues follow each other inside the segment, covering it."""
    import numpy as np

    from llm_srt.subtitles import _width, fit

    rng = np.random.default_rng(0)
    # each text its own characters, to tell its lines apart
    above_letters, above_wide, main_letters, main_wide = "ABCDEFGHIJKLMNกขคงจฉชซ", "今日天気明", "abcdefghijklm,.?", "晴来週良"
    for case in range(400):
        above = _random_text(rng, above_letters, above_wide) if rng.random() < 0.8 else None
        main = _random_text(rng, main_letters, main_wide)
        width = int(rng.integers(10, 61))
        start = float(rng.uniform(0, 100))
        end = start + float(rng.choice([rng.uniform(0.001, 0.02), rng.uniform(0.02, 30)]))  # also too short for ms
        cues = fit(start, end, main, above, width)
        lines = [line for c in cues for line in c.text.split("\n")]
        for text, chars in ((above, above_letters + above_wide), (main, main_letters + main_wide)):
            shown = "".join(line for line in lines if line[0] in chars)
            assert "".join(shown.split()) == "".join((text or "").split()), (case, text)  # nothing lost or doubled
        assert all(_width(line) <= width or len(line.split()) == 1 for line in lines), case  # wider: one word
        assert cues[0].start == start and cues[-1].end == end, case
        assert all(a.start < a.end <= b.start for a, b in zip(cues, cues[1:])) and cues[-1].start < end, case


def test_no_arrow_of_any_length_survives_in_a_cues_text():
    """'-->' inside cue text breaks both formats; one pass of str.replace left '--->' as '-->'."""
    for text in ("a ---> b", "a ----> b", "a --> b --> c", "---->>"):
        for out in (to_srt([Cue(0, 1, text)]), to_vtt([Cue(0, 1, text)])):
            body = out.split("\n")[2 if out.startswith("1") else 4:]
            assert not any("-->" in line or "--&gt;" in line for line in body), (text, out)
