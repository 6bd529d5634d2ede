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
    """A token wider than a part of the segment (a URL; a Thai clause was one, before Thai lines could break) left
    the part after it empty, its cue got no time and was dropped, and the other text's words shown with it too. Now
    each text's words are shown in the cue whose time holds their share of the text: every word once, two lines."""
    from llm_srt.subtitles import fit

    english = "See https://example.org/a/very/long/path/to/the/page/with/the/weather/report for the weather of today."
    german = "Siehe https://example.org/a/very/long/path/to/the/page/with/the/weather/report für das heutige Wetter."
    cues = fit(0.0, 6.0, german, english)
    assert [c.text.split("\n") for c in cues] == [["See", "Siehe"], [english.split()[1], german.split()[1]],
                                                  ["for the weather of today.", "für das heutige Wetter."]]
    assert cues[0].start == 0.0 and cues[0].end == cues[1].start and cues[-1].end == 6.0


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


def _shown_once(per_cue: list[str], text: str | None) -> bool:
    """Whether a text's lines in each cue (joined), read in cue order, give back the text once, spaces aside: each
    cue's are the text's next words, or the same as the cue before's (`fit`: a text with no new words in a cue keeps
    its line on screen; not a new showing)."""
    whole, parts = "".join((text or "").split()), ["".join(p.split()) for p in per_cue]
    read = {0}  # how much of the text the cues so far can have shown (without spaces, "a ab" may read two ways)
    for k, part in enumerate(parts):
        read = {n + len(part) for n in read if whole.startswith(part, n)} | (
            read if not part or k and part == parts[k - 1] else set())
    return len(whole) in read


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
            mine = ["".join(line for line in c.text.split("\n") if line[0] in chars) for c in cues]
            assert _shown_once(mine, text), (case, text)  # nothing lost or doubled
        if above:  # every cue: the transcript's lines, then the translation's
            firsts = [[line[0] in above_letters + above_wide for line in c.text.split("\n")] for c in cues]
            assert all(f[0] and not f[-1] and f == sorted(f, reverse=True) for f in firsts), case
        assert all(_width(line) <= width or len(line.split()) == 1 for line in lines), case  # wider: one word
        assert cues[0].start == start and cues[-1].end == end, case
        assert all(a.start < a.end <= b.start for a, b in zip(cues, cues[1:])) and cues[-1].start < end, case


def test_no_arrow_of_any_length_survives_in_a_cues_text():
    """'-->' inside cue text breaks both formats; one pass of str.replace left '--->' as '-->'."""
    for text in ("a ---> b", "a ----> b", "a --> b --> c", "---->>"):
        for out in (to_srt([Cue(0, 1, text)]), to_vtt([Cue(0, 1, text)])):
            body = out.split("\n")[2 if out.startswith("1") else 4:]
            assert not any("-->" in line or "--&gt;" in line for line in body), (text, out)


def test_thai_lines_break_between_grapheme_clusters_whose_marks_take_no_column():
    """Thai is written without spaces and is not East Asian wide: a 95-character translation was one 95-column
    line (its vowel and tone marks counted a column each, though they sit on their consonant). Now lines break
    between grapheme clusters: never before a mark, nor after a vowel written before its consonant."""
    import unicodedata

    from llm_srt.subtitles import _width, _wrap, fit

    thai = "ประเทศไทยมีประชากรประมาณหกสิบเก้าล้านคนและมีเมืองหลวงคือกรุงเทพมหานครซึ่งเป็นเมืองที่ใหญ่ที่สุด"
    assert _width(thai) == 77 == sum(unicodedata.category(ch) != "Mn" for ch in thai)
    lines = _wrap(thai, 42)
    assert "".join(lines) == thai and [_width(line) for line in lines] == [39, 38]  # cut before a word: "เมือง"
    assert lines[1].startswith("เมืองหลวง")
    assert not any(unicodedata.category(line[0]) == "Mn" or line[-1] in "เแโใไ" for line in lines)
    cues = fit(0.0, 5.0, thai, "Thailand has about sixty-nine million people and its capital is Bangkok.")
    assert all(len(c.text.split("\n")) == 2 and max(map(_width, c.text.split("\n"))) <= 42 for c in cues)


def test_korean_breaks_at_spaces_and_latin_inside_cjk_stays_whole():
    """Hangul is wide, so every Korean word was broken between its characters ('서' / '울특별시이며'), though
    Korean puts spaces between words; "iPhone" in Chinese text was broken too. Now only characters of scripts
    written without spaces break apart (and not before closing punctuation); a word wider than the line stays whole
    on a line of its own, as a long Latin word does."""
    from llm_srt.subtitles import _wrap

    korean = "대한민국의 수도는 서울특별시이며 가장 큰 도시입니다 인구는 약 오천만 명입니다"
    assert _wrap(korean, 20) == ["대한민국의 수도는", "서울특별시이며 가장", "큰 도시입니다 인구는", "약 오천만 명입니다"]
    assert _wrap("수도는 서울특별시청년창업지원센터입니다", 10) == ["수도는", "서울특별시청년창업지원센터입니다"]
    chinese = "我喜欢用iPhone拍照片（iPhone 15），因为它的摄像头非常好用而且很方便"
    lines = _wrap(chinese, 20)
    assert lines == ["我喜欢用iPhone拍照片", "（iPhone 15），因为", "它的摄像头非常好用而", "且很方便"]
    zh = "以及在过去二十年里它是如何变化的，尤其是在冬季的几个月里，过去雪总是来得很早。"
    assert not any(line[0] in "，。" for line in _wrap(zh, 20))


def test_a_cue_keeps_to_its_lines_when_a_piece_wraps_to_more_than_its_share():
    """Texts were cut into pieces of equal width, one a cue; a piece could wrap to more lines than its text's share
    ('especially in the winter months' above 'verändert hat, besonders in den' / 'Wintermonaten,': three lines)."""
    from llm_srt.subtitles import fit

    english = ("So today I want to talk about the weather in northern Europe and how it has changed over the last "
               "twenty years, especially in the winter months when the snow used to come early.")
    german = ("Heute möchte ich also über das Wetter in Nordeuropa sprechen und darüber, wie es sich in den letzten "
              "zwanzig Jahren verändert hat, besonders in den Wintermonaten, als der Schnee früher kam.")
    cues = fit(0.0, 10.0, german, english)
    assert all(len(c.text.split("\n")) == 2 for c in cues) and len(cues) == 5
    assert " ".join(c.text.split("\n")[0] for c in cues) == english
    assert " ".join(c.text.split("\n")[1] for c in cues) == german


def test_a_much_shorter_text_stays_on_screen_so_every_cue_shows_both_in_their_places():
    """Each text's words go to the cue whose time holds their share of it: beside a long translation, "Yes,
    absolutely." was all in the first cue, the cues after showed one line, and a bottom-aligned player put the
    translation where the transcript goes. Now a text with no new words in a cue keeps its line from the cue before:
    every cue has the transcript above the translation, each word of the longer text still shown once, in order."""
    from llm_srt.subtitles import segment_cues

    german = ("Ja, auf jeden Fall, das ist ganz sicher so und daran gibt es überhaupt keinen Zweifel, meine Damen und "
              "Herren, wirklich.")
    english = ("Long english sentence that goes on and on and on for quite a number of columns indeed my friend, "
               "really.")
    for transcript, translation, short in (("Yes, absolutely.", german, 0), (english, "Ja.", 1)):
        cues = segment_cues([_segment(0.0, 6.0, transcript, translation)], "both")
        rows = [parsed[3] for parsed in parse(to_srt(cues), SRT_TIME)]
        assert len(rows) >= 3 and all(len(lines) == 2 for lines in rows), rows
        assert {lines[short] for lines in rows} == {(transcript, translation)[short]}
        assert " ".join(lines[1 - short] for lines in rows) == (transcript, translation)[1 - short]


_SCRIPTS = {  # a script -> (its letters, whether it puts spaces between words, its comma and full stop)
    "latin": ("abcdefghijklmnopqrstuvwxyz", True, ",."),
    "cjk": ("今日天気明晴来週良はがのを", False, "，。"),
    "korean": ("대한민국수도서울특별시입니다", True, ",."),
    "thai": ("กขคงจฉชซมนยรลวสหอ", False, " "),
}
THAI_MARKS = "\u0e48\u0e34"  # mai ek (a tone mark), sara i (a vowel): both sit on their consonant


def _script_text(rng, script: str) -> str:
    """Random words of one script, some ending in a comma or full stop; those without spaces run together, with a
    space between clauses; Thai letters take random vowel and tone marks."""
    letters, spaced, stops = _SCRIPTS[script]
    words = []
    for _ in range(rng.integers(1, 45)):
        word = "".join(rng.choice(list(letters), rng.integers(1, 9 if spaced else 4)))
        if script == "thai":
            word = "".join(ch + "".join(m for m in THAI_MARKS if rng.random() < 0.3) for ch in word)
        words.append(word + (rng.choice(list(stops)) if rng.random() < 0.2 else ""))
    if spaced:
        return " ".join(words)
    return "".join(w + (" " if rng.random() < 0.15 else "") for w in words).strip()


def test_no_cue_has_more_lines_than_the_limit_in_latin_cjk_korean_or_thai_text():
    """Random segments of one or two texts of Latin, CJK, Korean and Thai words, random widths: no cue shows more
    than LINES_PER_CUE lines (one a text when both are shown) or a line wider than the width (but a word), every
    character of each text is shown once, in order, and the cues cover the segment."""
    import numpy as np

    from llm_srt.subtitles import LINES_PER_CUE, _tokens, _width, fit

    rng = np.random.default_rng(1)
    scripts = sorted(_SCRIPTS)
    for case in range(300):
        main_script, above_script = rng.choice(scripts, 2, replace=False)
        main = _script_text(rng, main_script)
        above = _script_text(rng, above_script) if rng.random() < 0.7 else None
        width = int(rng.integers(12, 61))
        start = float(rng.uniform(0, 100))
        end = start + float(rng.uniform(2, 30))  # a millisecond for every column of the texts (shorter: see fit)
        cues = fit(start, end, main, above, width)
        assert cues[0].start == start and cues[-1].end == end and all(a.end == b.start for a, b in zip(cues, cues[1:]))
        for text, script in ((above, above_script), (main, main_script)):
            mine = [[line for line in c.text.split("\n") if line[0] in _SCRIPTS[script][0]] for c in cues]
            assert all(len(lines) <= (1 if above else LINES_PER_CUE) for lines in mine), (case, text, width)
            assert all(lines for lines in mine) or not text, (case, text)  # with both texts: a line each, every cue
            assert _shown_once(["".join(lines) for lines in mine], text), case
        lines = [line for c in cues for line in c.text.split("\n")]
        assert all(len(c.text.split("\n")) <= LINES_PER_CUE for c in cues), case
        assert all(_width(line) <= width or len(_tokens(line)) == 1 for line in lines), case  # wider: one word


def test_invisible_characters_alone_make_no_cue_and_no_line():
    """str.strip() keeps a zero-width space (some models write one between CJK words) and a byte-order mark: such a
    text alone was a cue of nothing to see, and one before a wide word a line of its own above the cue's two."""
    from llm_srt.subtitles import LINES_PER_CUE, fit, segment_cues

    for invisible in ("\u200b", " \ufeff\u200b ", "\u2060"):
        assert fit(0, 3, invisible) == [] and Cue.of(0, 1, "eins", invisible).text == "eins"
        assert segment_cues([_segment(0.0, 1.0, invisible, invisible)], "both", 42) == []
        assert segment_cues([_segment(0.0, 1.0, invisible, invisible)], "both", 0) == []
    for main, above in (("\u200b「" + "x" * 50 + " <i>", None), ("東京\u200b「" + "x" * 30 + " <i>", "\ufeff")):
        cues = fit(0, 3, main, above, width=20)
        lines = [line for c in cues for line in c.text.split("\n")]
        assert all(len(c.text.split("\n")) <= LINES_PER_CUE for c in cues) and all(line.isprintable() for line in lines)
        assert "".join(lines).replace(" ", "") == main.replace("\u200b", "").replace(" ", "")


def test_a_cue_shorter_than_a_millisecond_once_rounded_is_written_a_millisecond_long():
    """A cue from 1.0001 s to 1.0004 s would be written '00:00:01,000 --> 00:00:01,000'; it was then left out, its
    text gone without a word. Now it is written a millisecond long, the cue after it (which rounding made overlap)
    starts a millisecond later, numbering stays 1..n, and a backward cue is still an error."""
    cues = [Cue(1.0001, 1.0004, "short"), Cue(1.0004, 1.0006, "kept"), Cue(2.0, 3.0, "next")]
    for text, time_re, header in ((to_srt(cues), SRT_TIME, None), (to_vtt(cues), VTT_TIME, "WEBVTT")):
        parsed = parse(text, time_re, header)
        check(parsed)
        assert [c[3] for c in parsed] == [["short"], ["kept"], ["next"]]
        assert [c[1:3] for c in parsed] == [(1.0, 1.001), (1.001, 1.002), (2.0, 3.0)]
    assert "1\n00:00:01,000 --> 00:00:01,001\nshort" in to_srt([Cue(1.0001, 1.0004, "short")])
    with pytest.raises(LLMSRTError, match="cue 1"):
        to_srt([Cue(1.0004, 1.0001, "backwards")])


def test_a_segment_with_text_always_gets_a_cue():
    """A segment of a millisecond or less (or none: its end clipped to the audio's end) lost its text from SRT/VTT."""
    from llm_srt.subtitles import segment_cues

    segments = [_segment(0.0, 1.0, "one", "eins"), _segment(1.0001, 1.0004, "two", "zwei"),
                _segment(1.5, 1.5, "three", "drei"), _segment(2.0, 3.0, "four", "vier")]
    for width in (42, 0):
        parsed = parse(to_srt(segment_cues(segments, "both", width)), SRT_TIME)
        check(parsed)
        assert [c[3] for c in parsed] == [[en, de] for en, de in
                                          (("one", "eins"), ("two", "zwei"), ("three", "drei"), ("four", "vier"))]
        assert [c[1:3] for c in parsed][1:3] == [(1.0, 1.001), (1.5, 1.501)]


def test_japanese_kinsoku_marks_never_start_a_line_nor_opening_brackets_end_one():
    """Only closing punctuation was kept off a line's start: 'ちょっとコ' / 'ーヒーを飲'. The long-vowel mark, small
    kana, iteration marks and dash-like marks must not start a line either (JIS X 4051), and an opening bracket
    never ends one."""
    from llm_srt.subtitles import _wrap

    assert _wrap("ちょっとコーヒーを飲みたいです。", 10) == ["ちょっと", "コーヒーを", "飲みたいで", "す。"]
    for mark in "ーぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶゝゞヽヾ々〻〜‐゠":
        for k in range(1, 8):
            text = "あ" * k + mark + "い" * 6 + "「う」" + "え" * k
            lines = _wrap(text, 8)
            assert "".join(lines) == text and not any(line[0] in mark + "」" or line[-1] == "「" for line in lines)
    assert _wrap("今日は人々が来る", 8) == ["今日は", "人々が来", "る"]  # not "今日は人" / "々が来る"


THAI_SENTENCE = "ผมคิดว่าเป็นความคิดที่ดีมากด้วยกันครับ"  # "I think it is a very good idea": 28 columns, no space


def test_thai_breaks_at_spaces_and_keeps_a_run_a_little_too_wide_whole():
    """Thai lines broke between any two grapheme clusters, as Chinese lines do, which cut words: 'ควา' / 'มคิด'.
    Thai words are not separated by spaces and no dictionary is at hand: lines break at spaces (and zero-width
    spaces); a run a little wider than a line stays whole on its own line; a far wider one is cut where a word most
    likely begins, never after a leading vowel nor before a following vowel or mark."""
    from llm_srt.subtitles import _width, _wrap

    assert _width(THAI_SENTENCE) == 28
    assert _wrap(THAI_SENTENCE, 12) == ["ผมคิดว่า", "เป็นความคิดที่ดี", "มากด้วยกันครับ"]  # cut between words
    assert _wrap(THAI_SENTENCE, 24) == [THAI_SENTENCE]  # a little too wide: whole
    assert _wrap("ผมคิดว่า เป็นความคิดที่ดีมาก ด้วยกันครับ", 20) == ["ผมคิดว่า", "เป็นความคิดที่ดีมาก",
                                                                   "ด้วยกันครับ"]
    zwsp = "ผมคิดว่า\u200bเป็นความคิดที่ดีมาก\u200bด้วยกันครับ"
    assert _wrap(zwsp, 18) == ["ผมคิดว่า", "เป็นความคิดที่ดีมาก", "ด้วยกันครับ"]  # a break's zero-width space: gone
    assert _wrap("ทำ" + "ละ" * 20, 10)[1:2] != ["ะ"] and not any(
        line[0] in "ะาำๅๆ" or line[-1] in "เแโใไ" for line in _wrap("กะทำงานๆเดินไปมาแล้ว" * 6, 10))


def test_thai_lao_khmer_and_myanmar_runs_cut_only_between_clusters():
    """Random runs far wider than a line: every piece of at most the width, none starting with a mark or a
    following vowel, none ending with a leading vowel, a Khmer or Myanmar stacked consonant kept with its base."""
    import unicodedata

    import numpy as np

    from llm_srt.subtitles import _width, _wrap

    rng = np.random.default_rng(2)
    pools = ["กขคงมนรลวส", "เแโใไ", "ะาำๅๆ", "\u0e34\u0e35\u0e48\u0e49\u0e4c"]  # consonants, leading, following, marks
    khmer, myanmar = "ក\u17d2រ", "က\u1039ခ"
    for case in range(200):
        text = ""
        for _ in range(rng.integers(20, 80)):
            kind = rng.integers(0, 6)
            text += (khmer if kind == 4 else myanmar if kind == 5 else
                     "".join(rng.choice(list(pools[0 if kind == 3 else kind]))) + (
                         "".join(rng.choice(list(pools[0]))) if kind == 1 else ""))
            if rng.random() < 0.3:
                text += rng.choice(list(pools[3]))
        width = int(rng.integers(8, 30))
        lines = _wrap(text, width)
        assert "".join(lines) == text, case
        if _width(text) > width * 1.25:
            assert all(_width(line) <= width for line in lines), (case, lines)
        for line in lines[1:]:
            assert unicodedata.category(line[0]) not in ("Mn", "Mc") and line[0] not in "ะาำๅๆ", (case, line)
            assert line[0] not in "\u17d2\u1039", case
        assert not any(line[-1] in "เแโใไ\u17d2\u1039" for line in lines), case


def test_thai_sara_am_stays_with_its_consonant():
    """SARA AM (U+0E33) is a spacing vowel, not a mark, yet part of its consonant's cluster: a line began with it
    ("น้" / "ำใจ" at width 10, a review)."""
    from llm_srt.subtitles import _clusters, _lines, _tokens

    assert "น้ำ" in _clusters("น้ำใจ") and "ทำ" in _clusters("ทำงาน")
    for text in ("กกกกกกกกกน้ำใจ", "ทำงาน" * 7):
        assert not any(line.startswith("\u0e33") for line in _lines(_tokens(text), 10)), text


def test_a_long_thai_run_around_an_unbreakable_stretch_is_still_cut_into_lines():
    """A Thai run holding a stretch with no allowed break (50 digits, a Latin word wider than the line) came out as
    one line of 1,450 columns: the cut search never reached the run's end. Now only the stretch (with the clusters
    it joins) goes over the width, and every character is kept."""
    from llm_srt.subtitles import _wrap

    phrase = "ผมคิดว่าเป็นความคิดที่ดีมากด้วยกันครับเมืองหลวงของประเทศไทยคือกรุงเทพมหานคร"
    for stretch in ("1234567890" * 5, "A" * 43):
        text = phrase * 8 + stretch + phrase * 8
        lines = _wrap(text, 42)
        assert "".join(lines) == text and len(lines) > 10
        assert max(len(line) for line in lines) < len(stretch) + 42


def test_segments_at_one_instant_keep_their_order():
    """Three segments clipped to one instant (start == end) got cues 5,000-5,001, 5,001-5,002 and 5,000-5,001: the
    third before the second."""
    from types import SimpleNamespace

    from llm_srt.subtitles import segment_cues, to_srt

    segments = [SimpleNamespace(start=5.0, end=5.0, transcript="", translation=t) for t in "abc"]
    times = [block.split("\n")[1] for block in to_srt(segment_cues(segments, "translation")).strip().split("\n\n")]
    assert times == ["00:00:05,000 --> 00:00:05,001", "00:00:05,001 --> 00:00:05,002",
                     "00:00:05,002 --> 00:00:05,003"]


def test_a_line_break_inside_a_models_text_is_a_space_in_its_cues():
    """A text was trimmed at its ends only: a line break inside it was a line of its own in a cue, and the wrapper
    counted it as a column, so a segment whose text fits two lines got one cue of three (four with the transcript
    above), the second sentence wrapped at the wrong place (a reviewer's find). Now a break, with the spaces around
    it, is one space."""
    from llm_srt.subtitles import LINES_PER_CUE, fit, segment_cues

    german = "Das ist ein Satz der passt.\nUnd noch einer, der auch passt."
    english = "Hello there. \r\n\r\n  How are you today?\u2028Fine."
    cues = fit(1, 4, german)
    assert all(len(c.text.split("\n")) <= LINES_PER_CUE for c in cues), cues
    assert " ".join(c.text.replace("\n", " ") for c in cues) == german.replace("\n", " ")  # every word, once
    both = segment_cues([_segment(1.0, 4.0, english, german)], "both")
    assert all(len(c.text.split("\n")) == 2 for c in both), both  # the transcript above, the translation below
    assert " ".join(c.text.split("\n")[0] for c in both) == "Hello there. How are you today? Fine."
    assert " ".join(c.text.split("\n")[1] for c in both) == german.replace("\n", " ")
    assert segment_cues([_segment(1.0, 4.0, english, german)], "both", width=0) == [  # unwrapped: one line each
        Cue(1.0, 4.0, "Hello there. How are you today? Fine.\n" + german.replace("\n", " "))]


def test_a_line_never_breaks_at_a_no_break_space():
    """A no-break space (U+00A0, U+2007, U+202F) was a space to the wrapper: French puts one before "?" and "!" and
    inside numbers, and a line started with "?" or "€" ("... nouveau film" / "? Oui, ..."; a reviewer's find). Now
    the words either side of one stay on one line, with its column counted; only words so joined wider than a line
    (a text spaced with no-break spaces throughout) break there still."""
    from llm_srt.subtitles import _width, _wrap

    french = "Est-ce que vous avez vu le nouveau film\u00a0? Oui, il coûte 10\u00a0000\u00a0€ par jour\u00a0!"
    for width in (20, 30, 40):
        lines = _wrap(french, width)
        assert " ".join(lines) == french and max(map(_width, lines)) <= width, (width, lines)
        assert not any(line[0] in "?!€" for line in lines), (width, lines)
    assert "10\u2007000\u202f€." in _wrap(f"Il coûte {'très ' * 6}cher, 10\u2007000\u202f€.", 12)
    japanese = "この本の価格は1\u00a0500\u00a0円です。"  # nor next to a character a line may break before or after
    for width in range(8, 20):
        assert not any(line.startswith(("500", "円")) for line in _wrap(japanese, width)), width
    glued = "\u00a0".join(french.split())
    assert max(map(_width, _wrap(glued, 20))) <= 20 and len(_wrap(glued, 20)) > 1
