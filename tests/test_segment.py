import numpy as np
import pytest

from llm_srt.errors import AudioError
from llm_srt.segment import Segment, SegmentOptions, segment

SR = 16000
TOL = 0.1  # seconds
# Speech-like bursts in a 70 s clip: (start, end) seconds. Pauses between them are 0.5-1.2 s long.
BURSTS = [(0.7, 8.2), (8.9, 15.0), (15.6, 24.1), (25.3, 31.0), (31.5, 39.8), (41.0, 47.5), (48.2, 57.0),
          (57.5, 63.3), (64.1, 69.2)]


def tone_bursts(bursts, seconds=70.0, seed=0) -> np.ndarray:
    """Amplitude-modulated tones (syllable-like 3 Hz envelope) in faint noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e-4, int(seconds * SR)).astype(np.float32)
    for start, end in bursts:
        t = np.arange(int(round((end - start) * SR))) / SR
        env = 0.35 + 0.65 * np.abs(np.sin(2 * np.pi * 3 * t + rng.uniform(0, np.pi)))
        i = int(round(start * SR))
        x[i:i + t.size] += (0.3 * env * np.sin(2 * np.pi * rng.uniform(150, 300) * t)).astype(np.float32)
    return x


def check_against_truth(segs: list[Segment], bursts, max_seconds: float) -> None:
    assert segs, "no segments"
    assert all(s.duration <= max_seconds + 1e-9 for s in segs)
    assert all(a.end <= b.start for a, b in zip(segs, segs[1:])), "segments overlap or are out of order"
    starts, ends = [b[0] for b in bursts], [b[1] for b in bursts]
    for i, s in enumerate(segs):
        # every boundary is a burst edge (within TOL), or, where two segments of one phrase group meet (a cut in a
        # pause shorter than split_silence), a point of that pause: never inside speech
        joined_before = i > 0 and segs[i - 1].end == s.start
        joined_after = i + 1 < len(segs) and segs[i + 1].start == s.end
        assert joined_before or min(abs(s.start - t) for t in starts) <= TOL, s
        assert joined_after or min(abs(s.end - t) for t in ends) <= TOL, s
        for t in (s.start, s.end):
            assert not any(b0 + TOL < t < b1 - TOL for b0, b1 in bursts), (t, s)
    for b0, b1 in bursts:  # no speech lost: each burst lies inside exactly one segment
        covering = [s for s in segs if s.start <= b0 + TOL and s.end >= b1 - TOL]
        assert len(covering) == 1, (b0, b1, segs)


@pytest.mark.parametrize("noise", [0.0, 0.02])  # 0.02: background noise about 15 dB below the bursts
def test_seventy_second_clip_tone_bursts(noise):
    x = tone_bursts(BURSTS)
    x += np.random.default_rng(1).normal(0, noise, x.size).astype(np.float32)
    segs = segment(x, SR, max_seconds=30.0)
    check_against_truth(segs, BURSTS, 30.0)
    assert len(segs) >= 3  # 70 s of speech cannot fit in fewer
    assert segs[0].start == pytest.approx(0.7, abs=TOL) and segs[-1].end == pytest.approx(69.2, abs=TOL)


def test_shorter_window_splits_more():
    segs = segment(tone_bursts(BURSTS), SR, max_seconds=12.0)
    check_against_truth(segs, BURSTS, 12.0)
    assert len(segs) >= 7


def test_long_pause_always_splits_and_silence_is_dropped():
    bursts = [(1.0, 4.0), (9.0, 12.0)]  # a 5 s silence inside a clip that would fit one window
    segs = segment(tone_bursts(bursts, seconds=14.0), SR)
    check_against_truth(segs, bursts, 30.0)
    assert len(segs) == 2


def test_short_pauses_are_not_cuts():
    bursts = [(1.0, 3.0), (3.15, 6.0)]  # 0.15 s < min_silence: one phrase
    segs = segment(tone_bursts(bursts, seconds=8.0), SR)
    assert len(segs) == 1
    assert segs[0].start == pytest.approx(1.0, abs=TOL) and segs[0].end == pytest.approx(6.0, abs=TOL)


def test_tiny_segment_is_merged_into_neighbour():
    bursts = [(1.0, 1.4), (2.0, 10.0)]  # a 0.4 s word before a 0.6 s pause
    segs = segment(tone_bursts(bursts, seconds=11.0), SR)
    assert len(segs) == 1
    assert segs[0].start == pytest.approx(1.0, abs=TOL) and segs[0].end == pytest.approx(10.0, abs=TOL)


def test_forced_cut_at_quietest_point():
    # 45 s of continuous "speech" without any pause, with one short dip in level at 20 s: the cut goes there
    x = tone_bursts([(0.5, 45.5)], seconds=46.0)
    dip = slice(int(20.0 * SR), int(20.06 * SR))
    x[dip] *= 0.03
    segs = segment(x, SR, max_seconds=30.0)
    assert len(segs) == 2 and all(s.duration <= 30.0 for s in segs)
    assert segs[0].end == pytest.approx(20.03, abs=TOL) and segs[1].start == pytest.approx(20.03, abs=TOL)
    assert segs[0].start == pytest.approx(0.5, abs=TOL) and segs[1].end == pytest.approx(45.5, abs=TOL)


def test_forced_cuts_in_very_long_speech():
    x = tone_bursts([(0.0, 100.0)], seconds=100.0)
    segs = segment(x, SR, max_seconds=30.0)
    assert all(s.duration <= 30.0 for s in segs) and len(segs) >= 4
    assert segs[0].start <= TOL and segs[-1].end >= 100.0 - TOL
    assert all(b.start - a.end <= 1e-6 for a, b in zip(segs, segs[1:]))  # contiguous: nothing lost


def test_espeak_sentences(speak):
    sentences = ["The weather is nice today.", "We will meet tomorrow at noon in the old town.",
                 "Please bring the documents with you.", "Thank you very much for your help."]
    pause = np.zeros(int(1.0 * SR), np.float32)
    parts, bursts, t = [pause], [], 1.0
    for text in sentences:
        clip = speak(text)
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        clip = clip[loud[0]:loud[-1] + 1]  # the sentence from its first to its last audible sample
        parts += [clip, pause]
        bursts.append((t, t + clip.size / SR))
        t += clip.size / SR + 1.0
    x = np.concatenate(parts)
    segs = segment(x, SR, max_seconds=5.0)  # each sentence is under 5 s; no two fit together
    check_against_truth(segs, bursts, 5.0)
    assert len(segs) == len(sentences)


def test_silence_and_options():
    assert segment(np.zeros(SR * 5, np.float32), SR) == []
    assert segment(np.zeros(0, np.float32), SR) == []
    with pytest.raises(AudioError, match="mono"):
        segment(np.zeros((10, 2), np.float32), SR)
    with pytest.raises(AudioError, match="too short"):
        segment(np.zeros(SR, np.float32), SR, max_seconds=0.05)
    x = tone_bursts([(1.0, 3.0)], seconds=4.0)
    seg = segment(x, SR, options=SegmentOptions(pad=0.0))[0]
    assert seg.slice(x, SR).size == pytest.approx(2.0 * SR, abs=0.05 * SR)


def test_other_sample_rate():
    import soxr

    x = soxr.resample(tone_bursts(BURSTS), SR, 22050)  # hop of 220.5 samples rounds to 220: times must not drift
    check_against_truth(segment(x, 22050), BURSTS, 30.0)


@pytest.mark.parametrize("share", [0.02, 0.04, 0.06, 0.10])
def test_a_short_phrase_in_long_noise_is_found_and_nothing_else(share):
    """Before, the clip's level was its 95th-percentile frame: with speech under ~6% of a clip that frame is noise,
    the thresholds fell into the noise and the noise was cut blindly into 30 s segments."""
    phrase = (5.0, 6.5)
    seconds = (phrase[1] - phrase[0]) / share
    x = tone_bursts([phrase], seconds=seconds)
    x += np.random.default_rng(2).normal(0, 1e-3, x.size).astype(np.float32)  # steady noise at -60 dBFS
    segs = segment(x, SR)
    check_against_truth(segs, [phrase], 30.0)
    assert len(segs) == 1 and segs[0].duration < 2.0


def test_steady_noise_is_no_speech_but_a_steady_loud_clip_is():
    hiss = np.random.default_rng(3).normal(0, 3e-3, 40 * SR).astype(np.float32)  # -50 dBFS, nothing stands out
    assert segment(hiss, SR) == []
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR).astype(np.float32)  # no pause at all
    assert [(s.start, s.end) for s in segment(tone, SR)] == [(0.0, 2.0)]


def test_no_segment_ends_past_the_audio():
    x = tone_bursts([(0.5, 3.2109375)], seconds=3.2109375)  # 51375 samples: the end rounds up to 3.211 s
    assert segment(x, SR)[-1].end == 3.21


def test_rounding_to_milliseconds_never_takes_a_segment_past_the_window():
    """A span of exactly the longest frames, padded, could round outwards at both ends to 30.001 s: 16 samples more
    than Whisper's window, and the encoder refused the segment."""
    longest = []
    for k in range(40):  # the speech starts at another sub-millisecond offset each time
        start = 0.5 + 0.0037 * k
        x = tone_bursts([(start, start + 29.883)], seconds=start + 31.4)
        longest.append(max(s.slice(x, SR).size for s in segment(x, SR)))
    assert max(longest) == 30 * SR  # some segments fill the window, and none passes it


def test_a_click_standing_alone_is_no_segment_but_a_short_word_is():
    """A 0.12 s noise burst between long pauses got a segment of its own, and the model a subtitle made up for it."""
    x = tone_bursts([(0.5, 3.4)], seconds=12.0)
    x[int(8.4 * SR):int(8.52 * SR)] += np.random.default_rng(1).normal(0, 0.3, int(0.12 * SR)).astype(np.float32)
    segs = segment(x, SR)
    assert len(segs) == 1 and segs[0].end < 4.0, segs
    for seconds in (0.2, 0.3):  # "No." standing alone
        word = tone_bursts([(0.5, 3.4), (8.4, 8.4 + seconds)], seconds=12.0)
        assert len(segment(word, SR)) == 2
    assert segment(x[int(6 * SR):], SR) == []  # the click alone: no speech


def pink_noise(seconds: float, dbfs: float, seed: int = 0, power: float = 1.0) -> np.ndarray:
    """1/f**power noise at `dbfs` RMS: room tone (1/f) spreads 7-8 dB in 25 ms frames, white noise 1 dB, a rumble
    (1/f^2) 15 dB and more."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n)) / np.arange(1, n // 2 + 2) ** (power / 2)
    x = np.fft.irfft(spectrum, n)
    return (x / x.std() * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("dbfs", [-70.0, -60.0, -50.0])
def test_room_tone_and_a_dc_offset_are_no_speech_and_a_phrase_in_room_tone_is_found(dbfs):
    """Room tone's loud frames passed as speech at any level (the model then made up text for a quiet room), and a
    microphone's DC offset read as steady speech: a reviewer's finds. A phrase in the room tone is still found."""
    assert segment(pink_noise(30.0, dbfs), SR) == []
    assert segment(np.full(10 * SR, 0.01, np.float32), SR) == []  # -40 dBFS of DC: no sound at all
    x = pink_noise(60.0, dbfs, seed=1)
    phrase = tone_bursts([(0.1, 2.9)], seconds=3.0)
    x[30 * SR:33 * SR] += phrase / phrase.std() * 10 ** ((dbfs + 10) / 20)  # 10 dB above the room tone
    [found] = segment(x, SR)
    assert found.start == pytest.approx(30.1, abs=0.1) and found.end == pytest.approx(32.9, abs=0.1)
    assert segment(pink_noise(30.0, -40.0), SR)  # louder than STEADY_SPEECH_DB: steady speech, as documented


def test_speech_without_pauses_loses_no_quiet_word_ending(speak):
    """espeak-ng reading words without a pause: the noise floor (the quietest 10% of frames) sits inside the speech,
    the last word's final fricative falls under the thresholds, and the last segment ended before it (0.13 s of
    sound in no segment); where a cut fell in a short pause, a word's ending fell in neither segment (a reviewer's
    268 s monologue). A segment's end now reaches the sound that follows its speech, and segments of one phrase
    group meet at the quietest frame of their pause."""
    from llm_srt.segment import frame_db

    vocabulary = ("jumps markets brown while fox talk travel river lazy banks music history science dogs walk "
                  "weather food people over along about quick").split()
    x = speak(" ".join(np.random.default_rng(5).choice(vocabulary, 60)) + " banks")
    db = frame_db(x, SR)
    centres = np.arange(db.size) * 0.01 + 0.0075
    for max_seconds in (30.0, 8.0):
        segs = segment(x, SR, max_seconds=max_seconds)
        inside = np.zeros(db.size, bool)
        for seg in segs:
            inside |= (centres >= seg.start) & (centres < seg.end)
        assert not ((db > db.max() - 30) & ~inside).any(), (max_seconds, centres[(db > db.max() - 30) & ~inside])


def test_segments_of_one_phrase_group_meet_at_the_quietest_frame_of_their_pause():
    """A cut inside a phrase group (a pause shorter than split_silence) left the pause between the two segments
    padded by 0.05 s each: a quiet word ending there was in neither. They now meet at its quietest frame; across a
    pause of split_silence or more they are padded as before."""
    from llm_srt.segment import _meeting_frames, _to_seconds

    db = np.full(1000, -20.0)
    db[300:340] = -38.0  # a fricative after the speech, under the thresholds
    db[340:345] = -90.0  # the quietest frames of the pause
    db[345:360] = -45.0
    db[600:900] = -100.0  # a long pause: another group
    spans = [(0, 300), (360, 600), (900, 1000)]
    meets = _meeting_frames(spans, db, split=200, pad=5)
    assert meets[0] in range(340, 345) and meets[1] is None
    segs = _to_seconds(spans, 10.0, 0.05, 0.025, 0.01, 30.0, meets)
    assert segs[0].end == segs[1].start == pytest.approx(0.0075 + meets[0] * 0.01, abs=1e-3)  # the fricative: in
    assert segs[1].end == pytest.approx(6.0075 + 0.05, abs=1e-3) and segs[2].start == pytest.approx(8.9575, abs=1e-3)
    capped = _to_seconds(spans, 10.0, 0.05, 0.025, 0.01, 2.9, meets)  # no room for the pause: the speech first
    assert capped[0].start == 0.0 and capped[0].end == pytest.approx(2.9, abs=1e-3)


def test_segments_never_overlap_nor_pass_the_window_over_random_clips():
    """Tones of random lengths and levels between random pauses in noise, at random windows, pads and pause
    lengths: a segment that started at its meeting frame and was too long moved back to its speech's pad, before
    the neighbour's end (18 overlaps of 40-200 ms in 300 clips, a reviewer's randomized check)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(5.6 * SR)) / SR  # the reviewer's case: a forced cut, then a pause and a short tone
    x = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * t), np.zeros(SR), 0.3 * np.sin(2 * np.pi * 220 * t[:24000])])
    segs = segment((x + 1e-3 * rng.standard_normal(x.size)).astype(np.float32), SR, max_seconds=3.0)
    assert len(segs) == 3 and all(b.start >= a.end for a, b in zip(segs, segs[1:])), segs
    # across a pause between groups shorter than two pads, a segment made too long by its tail moved back there too
    t = np.arange(int(4.3 * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    x = np.concatenate([tone[:SR], np.zeros(int(0.4 * SR)), tone, 10 ** (-62 / 20) * rng.standard_normal(SR // 4),
                        np.zeros(3 * SR), tone[:SR]])
    segs = segment((x + 1e-4 * rng.standard_normal(x.size)).astype(np.float32), SR,
                   options=SegmentOptions(max_seconds=5.0, pad=0.3, split_silence=0.3))
    assert len(segs) == 3 and all(b.start >= a.end for a, b in zip(segs, segs[1:])), segs
    for _ in range(200):
        parts = []
        for _ in range(int(rng.integers(2, 8))):
            t = np.arange(int(rng.uniform(0.2, 4.5) * SR)) / SR
            tone = 10 ** (rng.uniform(-25, -5) / 20) * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
            parts += [tone * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)), np.zeros(int(rng.uniform(0.05, 2.5) * SR))]
        x = np.concatenate(parts)
        x = (x + 10 ** (rng.uniform(-70, -40) / 20) * rng.standard_normal(x.size)).astype(np.float32)
        opts = SegmentOptions(max_seconds=float(rng.choice([3.0, 5.0, 8.0, 30.0])), pad=float(rng.choice([0.05, 0.2])),
                              split_silence=float(rng.choice([2.0, 0.35])))
        segs = segment(x, SR, options=opts)
        assert all(b.start >= a.end for a, b in zip(segs, segs[1:])), (opts, segs)
        assert all(0 < s.duration <= opts.max_seconds + 1e-9 for s in segs), (opts, segs)


def test_the_meeting_frame_of_a_steady_pause_is_inside_it_not_at_its_edge():
    """A moving average over the pause padded with zeros made its first or last frame the quietest in 98% of
    steady pauses: the left segment lost its pad and the meeting was no quiet point at all."""
    from llm_srt.segment import _meeting_frames

    rng = np.random.default_rng(1)
    at_edge = 0
    for _ in range(50):
        db = np.full(500, -20.0)
        db[100:160] = -60.0 + rng.normal(0, 1.0, 60)  # a steady 0.6 s pause
        [meet] = _meeting_frames([(0, 100), (160, 500)], db, split=200, pad=5)
        assert 105 <= meet < 155
        at_edge += meet in (105, 106, 153, 154)
    assert at_edge <= 8  # 4 of the 50 frames: about 4 by chance


@pytest.mark.parametrize("seconds,max_seconds,bursts,whole", [
    (30.0, 30.0, [(0.0, 30.0)], (0.0, 30.0)),
    (29.95, 30.0, [(0.0, 29.95)], (0.0, 29.95)),
    (7.0, 7.0, [(0.0, 7.0)], (0.0, 7.0)),
    (30.0, 30.0, [(0.0, 14.0), (15.0, 30.0)], (0.0, 30.0)),  # one phrase group: a 1 s pause is no cut
    (40.0, 30.0, [(0.0, 29.93)], (0.0, 29.988)),  # at the start only: padded at its end alone
    (40.0, 30.0, [(10.07, 40.0)], (10.008, 40.0)),
    (10.0, 7.0, [(1.5, 8.45)], (1.472, 8.472)),  # between pauses: the room left split evenly (1.438-4.608-8.508)
], ids=["30.0s", "29.95s", "7.0s-max-7", "two-phrases", "at-the-start", "at-the-end", "6.95s-between-pauses"])
def test_speech_at_the_clips_edges_takes_no_room_for_padding_it_cannot_have(seconds, max_seconds, bursts, whole):
    """Room for 50 ms of padding each side was kept in every segment, even where the speech touches the clip's edge
    (where no padding can go): a 30.0 s clip of speech throughout was cut 25.588 + 4.412 s, and 29.93 s of speech at
    the start of a 40 s clip 1.938 + 28.05 s. Speech that fits without its full padding takes what room is left."""
    segs = segment(tone_bursts(bursts, seconds=seconds), SR, max_seconds=max_seconds)
    assert [(s.start, s.end) for s in segs] == [whole]


def test_a_quieter_speaker_in_noise_is_kept_and_a_rumble_is_not(speak):
    """An interview in street noise, the guest 10 dB under the host and the noise 12 dB under the guest: speech
    started only 16 dB above the noise floor, so the guest's sentence never did and left no segment (a reviewer's
    find: 0.57 of 5.58 s kept), nor after a dozen dropouts in the noise (0.56 of 1.83 s, until 2026-12-06). In
    narrow noise (white, room tone) speech now starts 10 dB above the floor, and a
    quieter word a short pause after a louder one is kept (the sentence's falling end, 9 dB above the noise, was
    lost); a wide rumble (1/f^2 noise, frames 12-14 dB above its floor) still needs 16 dB and stays no speech."""
    from llm_srt.segment import frame_db

    def at(clip, dbfs):  # the clip from its first to its last audible sample, its loud frames (95%) at `dbfs`
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        clip = clip[loud[0]:loud[-1] + 1]
        return clip * 10 ** ((dbfs - np.percentile(frame_db(clip), 95)) / 20)

    host = at(speak("We will meet tomorrow at noon in the old town."), -18.0)
    guest = at(speak("Please bring the documents with you."), -28.0)
    gap = np.zeros(int(2.5 * SR), np.float32)  # a pause that ends a segment (split_silence)
    x = np.concatenate([gap, host, gap, guest, gap])
    t0 = (2 * gap.size + host.size) / SR
    t1 = t0 + guest.size / SR
    noisy = x + np.random.default_rng(0).normal(0, 10 ** (-40 / 20), x.size).astype(np.float32)
    dropped = noisy.copy()  # a dozen 30 ms dropouts (digital zeros) in the first pause: their edge frames, 2-7 dB
    for a in np.random.default_rng(1).choice(gap.size - 600, 12, replace=False):  # under the noise, pulled its
        dropped[a:a + int(0.03 * SR)] = 0  # quietest frames down and its reach up: 0.56 of the guest's 1.83 s kept
    for lead, clip in ((0, noisy), (int(0.2 * SR), noisy), (0, dropped)):  # and after 0.2 s of digital silence (its
        segs = segment(np.concatenate([np.zeros(lead, np.float32), clip]), SR)  # frames: -100 dB)
        start, end = t0 + lead / SR, t1 + lead / SR
        assert len(segs) == 2, (lead, segs)
        assert sum(max(0.0, min(s.end, end) - max(s.start, start)) for s in segs) > 0.9 * (t1 - t0), (lead, segs)
    rumble = np.concatenate([gap, host, np.zeros(12 * SR, np.float32)])  # then 12 s of the rumble alone
    for seed in (0, 1):
        [found] = segment(rumble + pink_noise(rumble.size / SR, -40.0, seed, power=2.0), SR)
        assert found.end < (gap.size + host.size) / SR + 0.5, found


def test_dropout_frames_are_those_with_a_fifth_of_their_window_digital_silence():
    """`_dropout_frames`: a frame whose 25 ms window holds 5 ms or more of digital zeros (a dropout's edge, or the
    clip's end: `frame_db`'s zero padding); noise as quiet as 16-bit audio can be holds none."""
    from llm_srt.segment import _dropout_frames, frame_db

    rng = np.random.default_rng(0)
    noise = np.round(rng.normal(0, 30, SR)) / 32768  # a quiet 16-bit recording (-61 dBFS): 1% of samples 0
    assert 0.005 < (noise == 0).mean() < 0.05
    x = noise.copy()
    x[8000:8480] = 0  # 30 ms from frame 800 (hop 160, window 400)
    flags = _dropout_frames(x, SR)
    assert flags.shape == frame_db(x, SR).shape
    near = np.flatnonzero(flags[:-3])
    assert near.min() >= (8000 - 400 + 80) // 160 and near.max() <= (8480 - 80) // 160 and near.size >= 3
    assert not _dropout_frames(noise[:SR - 200], SR)[:-2].any() and _dropout_frames(noise[:SR - 200], SR)[-1]


def test_a_window_longer_than_whispers_is_refused():
    """The encoder takes no piece over 30 s: segment() took max_seconds=45 and the encoder later refused its pieces
    with "segment long audio first"."""
    x = tone_bursts([(1.0, 3.0)], seconds=4.0)
    assert segment(x, SR, max_seconds=30.0)
    for options in (SegmentOptions(max_seconds=45.0), SegmentOptions(max_seconds=float("nan"))):
        with pytest.raises(AudioError, match=r"max_seconds=[\w.]+ is longer than Whisper's 30 s window; use at most "
                                             "30"):
            segment(x, SR, options=options)
    with pytest.raises(AudioError, match="longer than Whisper's 30 s window"):
        segment(x, SR, max_seconds=30.5)



@pytest.mark.parametrize("fan_dbfs", [-47.0, -50.0])
def test_room_tone_rising_mid_clip_gets_no_segment(speak, fan_dbfs):
    """A talk over -60 dBFS noise, then 30 s of a fan (room tone) louder than that noise, then another sentence:
    the clip's noise floor (its quietest frames, the talk's pauses) lay under the fan, its thresholds took the fan
    for speech, and segments ran on to the clip's end (the model wrote 4 subtitles for the fan; a reviewer's find).
    The fan alone was no speech; now a stretch of it is judged alone. Speech runs straight into the fan and out of
    it: no segment reaches more than 1 s into it, and no word is lost either side."""
    def trimmed(text):  # the sentence from its first to its last audible sample
        clip = speak(text)
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        return clip[loud[0]:loud[-1] + 1]

    texts = ["Please bring the documents with you.", "We will meet tomorrow at noon in the old town.",
             "The weather is nice today.", "Thank you very much for your help."]
    pause, fan = np.zeros(SR, np.float32), pink_noise(30.0, fan_dbfs, seed=3)
    talk = [part for text in texts * 2 for part in (pause, trimmed(text))]  # 23 s, a third of it pauses
    parts = talk + [fan, trimmed("See you all next week."), pause]
    edges = np.cumsum([0] + [p.size for p in parts]) / SR
    x = np.concatenate(parts)
    fan_at = len(talk)  # the fan: parts[fan_at], from edges[fan_at] to edges[fan_at + 1]
    quiet = np.ones(x.size, bool)
    quiet[int(edges[fan_at] * SR):int(edges[fan_at + 1] * SR)] = False
    x[quiet] += np.random.default_rng(0).normal(0, 1e-3, quiet.sum()).astype(np.float32)  # the talk's -60 dBFS
    segs = segment(x, SR)
    assert all(s.end <= edges[fan_at] + 1.0 or s.start >= edges[fan_at + 1] - 1.0 for s in segs), segs
    for i in [*range(1, fan_at, 2), fan_at + 1]:  # every sentence whole in the segments
        a, b = edges[i], edges[i + 1]
        assert sum(max(0.0, min(s.end, b) - max(s.start, a)) for s in segs) >= b - a - 0.01, ((a, b), segs)
    assert segment(fan, SR) == []  # the fan alone: no speech, as before


def test_a_steady_sound_at_a_clips_edge_is_judged_as_in_its_middle(speak):
    """`_room_tone`'s windows at a clip's ends were cut to as little as 0.5 s, so a held note there (a hum at -52
    dBFS, 1.2 s, over a -85 dBFS floor) was judged alone and lost most of its audio ((0.0, 1.26) -> (0.96, 1.26));
    mid-clip it was kept whole. Each end's window is now a whole one inside the clip."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * SR)) / SR
    hum = np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    sentence = speak("Today we talk about the history of the old bridge and the railway station.")

    def at(x, dbfs):
        return x * 10 ** ((dbfs - 10 * np.log10(np.mean(x ** 2))) / 20)

    def hum_segment(parts, hum_at):  # the segment over the hum, from the hum's start
        x = np.concatenate(parts)
        x = (x + at(rng.standard_normal(x.size), -85)).astype(np.float32)
        [s] = [s for s in segment(x, SR) if s.end > hum_at and s.start < hum_at + 1.2]
        return round(max(s.start, hum_at) - hum_at, 2), round(min(s.end, hum_at + 1.2) - hum_at, 2)

    gap = np.zeros(2 * SR)
    middle = hum_segment([np.zeros(3 * SR), at(hum, -52), gap, at(sentence, -47), np.zeros(3 * SR)], 3.0)
    start = hum_segment([at(hum, -52), gap, at(sentence, -47), np.zeros(3 * SR)], 0.0)
    end_at = 1.0 + sentence.size / SR + 2.0
    end = hum_segment([np.zeros(SR), at(sentence, -47), gap, at(hum, -52)], end_at)
    assert middle[0] < 0.1 and middle[1] > 1.1, middle  # kept whole mid-clip
    assert start == middle and end[0] == middle[0] and end[1] > 1.1, (start, middle, end)


def test_a_quiet_sentence_over_the_clips_own_noise_is_no_room_tone(speak):
    """`_room_tone` judges only noise louder than the clip's floor: a quiet sentence 10 dB over the clip's -60 dBFS
    noise, after a loud one, is steady over 5 s as room tone is, and without that check lost its last 0.9 s."""
    from llm_srt.segment import frame_db

    def at(text, dbfs):  # the sentence from its first to its last audible sample, its loud frames (95%) at `dbfs`
        clip = speak(text)
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        clip = clip[loud[0]:loud[-1] + 1]
        return clip * 10 ** ((dbfs - np.percentile(frame_db(clip), 95)) / 20)

    gap = np.zeros(int(2.5 * SR), np.float32)
    loud = at("We will meet tomorrow at noon in the old town.", -18.0)
    quiet = at("Please bring the documents with you, and thank you very much for your help.", -50.0)
    x = np.concatenate([gap, loud, gap, quiet, gap]).astype(np.float32)
    x += np.random.default_rng(0).normal(0, 1e-3, x.size).astype(np.float32)
    start, end = (2 * gap.size + loud.size) / SR, (2 * gap.size + loud.size + quiet.size) / SR
    segs = segment(x, SR)
    assert len(segs) == 2 and segs[1].start <= start + 0.05 and segs[1].end >= end - 0.15, (start, end, segs)

def test_a_pause_of_split_silence_cuts_measured_from_sound_to_sound(speak):
    """README: a pause of 2 s or more cuts. Pauses were counted in whole frames, and a frame's 25 ms window reaches
    into the speech on each side: two phrases 2.00 s of digital silence apart gave one segment, 2.02 s two (a
    reviewer's find). Now the frames a pause leaves are counted as such; 1.95 s is still no cut."""
    clip = speak("Please call Stella and ask her to bring these things.")
    loud = np.flatnonzero(np.abs(clip) > 1e-4)
    clip = clip[loud[0]:loud[-1] + 1]
    for lead in range(0, 160, 37):  # the speech starts at another place within a frame's hop each time
        for gap, cuts in ((2.0, 2), (2.05, 2), (1.95, 1), (1.9, 1)):
            x = np.concatenate([np.zeros(SR // 2 + lead, np.float32), clip, np.zeros(int(gap * SR), np.float32),
                                clip, np.zeros(SR // 2, np.float32)])
            assert len(segment(x, SR)) == cuts, (lead, gap, segment(x, SR))
    for start in (1.0, 1.0037, 1.0081):  # tone bursts in faint noise, a pause of exactly 2 s
        assert len(segment(tone_bursts([(start, start + 2.0), (start + 4.0, start + 6.0)], seconds=8.5), SR)) == 2
