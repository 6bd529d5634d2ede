"""Long-audio segmentation: cut a long recording into pieces of speech no longer than the model's window.

An energy voice-activity detector (numpy only, no model to download):
1. frame RMS in dB (25 ms frames, 10 ms hop), relative to the clip's noise floor (its quietest frames) and its speech
   level (its loud frames; when those are noise, the loud end of the frames that stand out from the floor, so that a
   phrase filling 2% of a recording is found as well as one filling all of it); in noise, speech starts above the
   noise's own loud frames (10 dB above the floor in white noise or room tone, 16 dB in a rumble); room tone louder
   than the clip's floor (a fan switching on mid-clip) is no speech where a stretch of it, judged alone, holds none;
2. hysteresis: a run of frames above the low threshold is speech if it reaches the high threshold somewhere (where
   no noise passes the low threshold, runs closer than `min_silence` count as one: a quiet word after a loud one);
3. quiet gaps shorter than `min_silence` are bridged (pauses inside a phrase), so what is left between speech
   regions are the pauses where a cut may fall;
4. every pause of at least `split_silence` ends a segment; a stretch still longer than `max_seconds` is split at
   its longest (then quietest) pause, recursively; a stretch with no pause at all is cut at its quietest frame;
5. leading/trailing silence is dropped, and segments shorter than `min_seconds` are merged into a neighbour
   when the result still fits.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from .audio import SAMPLE_RATE, WINDOW_SECONDS
from .errors import AudioError

FRAME_SECONDS = 0.025  # analysis window (Whisper's log-mel window is 25 ms too)
HOP_SECONDS = 0.010  # analysis hop: the time resolution of every boundary
LEVEL_PERCENTILE = 95  # the speech level: the loud frames, robust to a few clicks
FLOOR_PERCENTILE = 10  # the noise floor: the quietest frames (pauses, if the clip has any)
SILENCE_DB = -70.0  # absolute dBFS below which a frame is never speech (digital silence, dither)
DIGITAL_ZERO = 1e-5  # a sample this close to 0 is digital silence (a third of a 16-bit step: a dropout's zeros)
DROPOUT_SHARE = 0.2  # a frame with this share of its window digital silence holds a dropout's edge (5 ms of 25)
STEADY_SPEECH_DB = -45.0  # a clip at one steady level (nothing stands out from its floor) is speech only when louder
#                           than this (a tone, a pause-less phrase); quieter, it is hiss or room tone
STEADY_SPREAD_DB = 10.0  # loud frames (LEVEL_PERCENTILE) less than this above the floor: a steady level. Room tone
#                          (1/f noise) spreads 7-8 dB in 25 ms frames, white hiss 1 dB; speech in noise at 5 dB SNR
#                          12-15 dB (measured on espeak-ng speech)
NOISE_PERCENTILE = 1  # the noise's quietest frames: how far they lie below the floor measures the noise's spread
NOISE_REACH = 6.0  # ... and its loud frames (99.9%) reach about this many times as far above the floor: measured 3.8
#                    for white noise, 5.4-6.2 for 1/f room tone, 5.3-5.9 for 1/f^2 rumble (30 s at -40 dBFS)
STANDOUT_DB = 15.0  # in a steady clip, speech is frames standing out this far above the floor (their loud end);
#                     room tone's own loud frames reach 10-12 dB
CHUNK_FRAMES = 6_000  # frames per chunk when computing levels (1 minute of audio: ~40 MB of float64 work)
ROOM_SECONDS = 5.0  # room tone over the clip's thresholds (a fan switching on) is found over this long (_room_tone)
ROOM_STEP_SECONDS = 0.25  # ... judged block by block: what is kept of it past speech's end is at most two blocks
ROOM_RISE_DB = 3.0  # ... when its quietest frames lie this far above the clip's (twice the power)
SMOOTH_FRAMES = 5  # 50 ms moving average when looking for the quietest frame of a forced cut
TAIL_SECONDS = 0.3  # a segment's sound may go on this long after its speech (a quiet word ending: `_sound_ends`)
TAIL_DB = 3.0  # ... where frames stand this far above the clip's noise floor
_EPS = 1e-10


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the clip
    end: float  # seconds; end > start

    @property
    def duration(self) -> float:
        return self.end - self.start

    def slice(self, samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """This segment's samples, shape (round(duration * sr),)."""
        return samples[int(round(self.start * sr)):int(round(self.end * sr))]


@dataclass(frozen=True)
class SegmentOptions:
    max_seconds: float = 30.0  # no segment is longer than this (Whisper's window)
    min_silence: float = 0.3  # a quiet stretch at least this long is a pause (a place a cut may fall)
    split_silence: float = 2.0  # a pause at least this long always ends a segment
    min_seconds: float = 1.0  # shorter segments are merged into a neighbour when the result fits
    min_speech: float = 0.08  # louder runs shorter than this are clicks, not speech
    min_alone: float = 0.15  # speech standing alone (pauses of split_silence around it) shorter than this is a
    #                          click, a knock or a breath, not an utterance (a 0.12 s noise burst got a subtitle);
    #                          a short word standing alone ("Ja.", 0.2-0.3 s) is kept
    threshold_db: float = -35.0  # high threshold: a frame this far below the clip's level starts speech
    hysteresis_db: float = 10.0  # low threshold = high - this: speech continues until the level falls below it
    floor_margin_db: float = 6.0  # both thresholds stay at least this far above the noise floor (noisy clips);
    #                               frames this far above it stand out from the noise (see _thresholds); the high
    #                               one this + hysteresis_db above it, less where the noise is narrow (_noise_top)
    pad: float = 0.05  # seconds kept before and after each segment's speech (soft onsets, decays)

    def check(self, where: str = "segment()") -> None:
        """AudioError (one line, starting with `where`) for options no clip can be cut with: a `max_seconds` too short
        for a segment, or longer than the window. A caller with many clips checks once, before any."""
        if self.max_seconds <= 2 * self.pad + 10 * HOP_SECONDS:
            raise AudioError(f"{where}: max_seconds={self.max_seconds} is too short; use at least 1 second")
        if not self.max_seconds <= WINDOW_SECONDS:  # the encoder takes no longer piece (NaN fails too)
            raise AudioError(f"{where}: max_seconds={self.max_seconds} is longer than Whisper's {WINDOW_SECONDS} s "
                             f"window; use at most {WINDOW_SECONDS}")


def segment(samples: np.ndarray, sr: int = SAMPLE_RATE, max_seconds: float | None = None,
            min_silence: float | None = None, options: SegmentOptions | None = None) -> list[Segment]:
    """Speech segments of `samples` (shape (N,), float in [-1, 1]), each at most `max_seconds` long, in order.

    `max_seconds` (default 30.0) and `min_silence` (default 0.3), when given, override the same fields of
    `options`. Returns [] for a clip without speech (silence, or steady hiss or room tone).
    """
    opts = options or SegmentOptions()
    overrides = {"max_seconds": max_seconds, "min_silence": min_silence}
    opts = replace(opts, **{k: v for k, v in overrides.items() if v is not None})
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise AudioError(f"segment(): expected mono samples of shape (N,), got shape {samples.shape}")
    opts.check()
    if samples.size == 0:
        return []
    win, hop = (n / sr for n in _frame_samples(sr))  # seconds, exact for this rate
    db = frame_db(samples, sr)
    min_len = int(round(opts.min_speech / hop))
    noise_top = _noise_top(db[(db > SILENCE_DB) & ~_dropout_frames(samples, sr)])
    floor = float(np.percentile(db, FLOOR_PERCENTILE))  # the clip's noise floor
    thresholds = _thresholds(db, floor, min_len, opts, noise_top)
    if thresholds is None:
        return []
    room = _room_tone(db, min_len, hop, thresholds[1], floor)
    regions = _speech_regions(db, opts, hop, noise_top, thresholds, room)
    if not regions:
        return []
    max_frames = int((opts.max_seconds - 2 * opts.pad) / hop)
    split = _pause_frames(opts.split_silence, win, hop)
    groups = _split_at(regions, split)
    groups = [g for g in groups if sum(b - a for a, b in g) * hop >= opts.min_alone]
    if not groups:
        return []
    spans: list[tuple[int, int]] = []
    for group in groups:
        spans += [(group[0][0], group[-1][1])] if _fits_whole(group, opts, samples.size / sr, win, hop) else \
            _fit(group, db, max_frames)
    spans = _merge_short(spans, int(round(opts.min_seconds / hop)), split, max_frames)
    meets = _meeting_frames(spans, db, split, int(round(opts.pad / hop)))
    tails = _sound_ends(spans, meets, db, floor, int(round(TAIL_SECONDS / hop)), room)
    return _to_seconds(spans, samples.size / sr, opts.pad, win, hop, opts.max_seconds, meets, tails)


def _fits_whole(group: list[tuple[int, int]], opts: SegmentOptions, duration: float, win: float, hop: float) -> bool:
    """Whether a group of speech regions is at most `opts.max_seconds` long, its speech alone: `_to_seconds` pads
    it with what room is left (never past the clip's edges). `max_frames` leaves room for full padding on both sides,
    so a phrase that fits without it was cut in two mid-speech: a 30.0 s clip of speech throughout, 29.227 + 0.773 s;
    a 7.0 s phrase between pauses at --max-segment-seconds 7, 3.6 + 3.5 s."""
    return (group[-1][1] - group[0][0]) * hop <= opts.max_seconds + 1e-9  # frames x hop: rounding's slack


def _pause_frames(seconds: float, win: float, hop: float) -> int:
    """The fewest frames between two speech regions that a pause of `seconds` leaves: the frames whose windows
    reach into neither side's sound, floor((seconds - win) / hop) of them or one more. In whole hops a 2.00 s pause
    of digital silence was 197-198 frames, and split_silence=2.0 (200) cut only from 2.02 s."""
    return max(1, math.floor((seconds - win) / hop + 1e-6))


def _sound_ends(spans: list[tuple[int, int]], meets: list[int | None], db: np.ndarray, floor: float, reach: int,
                room: np.ndarray) -> list[int]:
    """Where each span's sound ends: past its speech, the last frame within `reach` frames that stands TAIL_DB above
    the clip's `floor` (a word's quiet ending, a fricative 10-15 dB under the speech after a stop's silent closure,
    falls under the thresholds when the floor sits inside pause-less speech) and is no room tone (`room`: louder
    than that floor throughout), else its speech's end; a span that meets its neighbour (`meets`) reaches the
    meeting frame already."""
    tails = []
    for i, (_, end) in enumerate(spans):
        stop = min(end + reach, spans[i + 1][0] if i + 1 < len(spans) else db.size)
        if i + 1 < len(spans) and meets[i] is not None or stop <= end:
            tails.append(end)
            continue
        sound = np.flatnonzero((db[end:stop] > floor + TAIL_DB) & ~room[end:stop])
        tails.append(end + int(sound[-1]) + 1 if sound.size else end)
    return tails


def _meeting_frames(spans: list[tuple[int, int]], db: np.ndarray, split: int, pad: int) -> list[int | None]:
    """Where each two neighbouring spans meet: cut inside one phrase group (a pause shorter than `split` frames),
    at the quietest frame of their pause, so that no sound between them is left out (in speech without pauses the
    thresholds sit inside the speech, and a word's quiet ending, a fricative at 10 dB under the speech, fell in
    the "pause" between two segments and in neither); each span keeps its `pad` frames where the pause is long
    enough. None between groups, where the pause is silence."""
    meets: list[int | None] = []
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start - end >= split:
            meets.append(None)
        elif start <= end:  # a forced cut: the spans touch
            meets.append(end)
        else:
            lo, hi = (end + pad, start - pad) if start - end > 2 * pad else (end, start)
            power = 10.0 ** (db[lo:hi] / 10.0)
            k = min(SMOOTH_FRAMES, hi - lo)  # windows of the pause's own frames (padded with zeros, its first and
            smooth = np.convolve(power, np.ones(k) / k, mode="valid")  # last frames looked the quietest)
            meets.append(lo + int(np.argmin(smooth)) + k // 2)  # the quietest window's centre
    return meets


def frame_db(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """RMS level of each frame in dBFS, its own mean left out (a microphone's DC offset is no sound: 0.01 of it
    read as steady speech at -40 dBFS), shape (F,): frame i covers samples [i*hop, i*hop + win)."""
    win, _ = _frame_samples(sr)
    squares, sums = _frame_sums(samples, sr, lambda x: x * x, lambda x: x)
    mean = sums / win
    return 10.0 * np.log10(np.maximum(squares / win - mean * mean, 0.0) + _EPS)


def _dropout_frames(samples: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Whether each frame (as `frame_db`'s) holds digital silence in DROPOUT_SHARE of its window or more: a
    dropout's edge (a frame half on the noise, half on the dropout's zeros, lies a few dB under the noise). The last
    frame's window past the clip's end (`frame_db`'s zero padding) counts as digital silence."""
    win, _ = _frame_samples(sr)
    [zeros] = _frame_sums(samples, sr, lambda x: np.abs(x) < DIGITAL_ZERO)
    return zeros >= DROPOUT_SHARE * win


def _frame_sums(samples: np.ndarray, sr: int, *terms) -> list[np.ndarray]:
    """For each of `terms` (a function of float64 samples, one value a sample), its sum over each frame's window,
    shape (F,) each: frame i covers samples [i*hop, i*hop + win), the last one padded with zeros. From cumulative
    sums, chunk by chunk: O(N) time, memory bounded by a chunk, not by the input (the last frame's zero padding is
    added to the last chunk only, never to a copy of hours of audio)."""
    win, hop = _frame_samples(sr)
    n_frames = max(1, int(np.ceil(max(samples.size - win, 0) / hop)) + 1)
    out = [np.empty(n_frames) for _ in terms]
    for f0 in range(0, n_frames, CHUNK_FRAMES):
        f1 = min(f0 + CHUNK_FRAMES, n_frames)
        a, b = f0 * hop, (f1 - 1) * hop + win
        chunk = samples[a:b].astype(np.float64)
        chunk = np.pad(chunk, (0, b - a - chunk.size)) if chunk.size < b - a else chunk
        starts = np.arange(f1 - f0) * hop
        for sums, term in zip(out, terms):
            cs = np.concatenate([[0.0], np.cumsum(term(chunk))])
            sums[f0:f1] = cs[starts + win] - cs[starts]
    return out


def _frame_samples(sr: int) -> tuple[int, int]:
    """(window, hop) in samples at rate `sr`."""
    return int(round(FRAME_SECONDS * sr)), int(round(HOP_SECONDS * sr))


def _speech_regions(db: np.ndarray, opts: SegmentOptions, hop: float, noise_top: float,
                    thresholds: tuple[float, float], room: np.ndarray) -> list[tuple[int, int]]:
    """Speech as frame ranges [a, b), pauses shorter than min_silence bridged, clicks dropped; `noise_top`: the
    level the noise's own loud frames reach (`_noise_top`); `thresholds`: (high, low) (`_thresholds`); `room`:
    frames of room tone, never speech (`_room_tone`)."""
    min_len = int(round(opts.min_speech / hop))
    high, low = thresholds
    loud = (db > high) & ~room
    runs = _runs((db > low) & ~room)
    # Where the noise's loud frames stay under the low threshold (white noise, a quiet room), runs above it are
    # speech: a quieter word a short pause after a loud one is kept (a sentence's falling end 9 dB above street
    # noise was lost). Else (a rumble, a loud room) they are often the noise: each must reach the high one itself.
    if noise_top >= low:
        runs = [(a, b) for a, b in runs if loud[a:b].any()]
    bridged: list[tuple[int, int]] = []
    min_gap = int(round(opts.min_silence / hop))
    for a, b in runs:
        if bridged and a - bridged[-1][1] < min_gap:
            bridged[-1] = (bridged[-1][0], b)
        else:
            bridged.append((a, b))
    return [(a, b) for a, b in bridged if b - a >= min_len and loud[a:b].any()]


def _thresholds(db: np.ndarray, floor: float, min_frames: int, opts: SegmentOptions,
                noise_top: float) -> tuple[float, float] | None:
    """(high, low) speech thresholds in dBFS for frame levels `db` over a noise `floor` (FLOOR_PERCENTILE), or None
    when the clip holds no speech.

    The speech level is the clip's loud frames (LEVEL_PERCENTILE) when they stand out from its noise floor. When
    they do not, speech fills a few percent of the clip at most (or none of it), and thresholds under them would
    cut the noise blindly: the level is then taken from the frames that do stand out. Fewer than `min_frames` of
    those: the clip is at one steady level, all speech when louder than STEADY_SPEECH_DB, else none.
    """
    level = float(np.percentile(db, LEVEL_PERCENTILE))
    if level < floor + STEADY_SPREAD_DB:  # the loud frames are noise: speech, if any, fills a few percent
        risen = _standout_level(db, floor, min_frames)
        if risen is not None:
            level = risen
        elif level < STEADY_SPEECH_DB:  # (room tone's own loud frames stand out less: its level stays its own)
            return None
    # Relative to the speech level; in noise (a high floor) raised above the floor, but kept below the level
    # itself; never below the absolute silence level.
    high = level + opts.threshold_db
    start = min(max(noise_top - floor, STEADY_SPREAD_DB), opts.floor_margin_db + opts.hysteresis_db)
    high = min(max(high, floor + start), level - opts.floor_margin_db)
    low = min(max(high - opts.hysteresis_db, floor + opts.floor_margin_db), high)
    return max(high, SILENCE_DB), max(low, SILENCE_DB)


def _standout_level(db: np.ndarray, floor: float, min_frames: int) -> float | None:
    """The loud end (LEVEL_PERCENTILE) of the frames of `db` that stand out from the noise `floor`, when at least
    `min_frames` do and it lies STANDOUT_DB above the floor; else None: nothing stands out."""
    risen = db[db > floor + STEADY_SPREAD_DB]
    if risen.size < min_frames:
        return None
    level = float(np.percentile(risen, LEVEL_PERCENTILE))
    return level if level >= floor + STANDOUT_DB else None


def _room_tone(db: np.ndarray, min_frames: int, hop: float, low: float, floor: float) -> np.ndarray:
    """Whether each frame of levels `db` is room tone, shape (F,): it lies in a stretch of ROOM_SECONDS, starting a
    block (ROOM_STEP_SECONDS) before its own or ending a block after it, that holds no speech as `_thresholds`
    judges a clip alone, and is noise louder than the clip's: its quietest frames ROOM_RISE_DB above the clip's
    `floor`, its loud ones reaching the clip's `low` threshold (the block on each side keeps a word that starts or
    ends at a block's edge). The clip's floor lay under room tone that rose mid-clip, and its thresholds took the
    room tone for speech: a talk over -60 dBFS noise, then 30 s of a fan at -50 dBFS, was cut into segments to the
    clip's end and the model wrote 4 subtitles for the fan, where the fan alone was no speech. (Noise at the clip's
    floor is left to its thresholds: a quiet sentence 8-10 dB above it, its frames steady, was taken for noise.)"""
    step = max(1, int(round(ROOM_STEP_SECONDS / hop)))
    blocks = max(3, int(round(ROOM_SECONDS / hop)) // step)  # a window's length in blocks
    span, n_blocks = blocks * step, -(-db.size // step)
    first = 2 - blocks  # window j covers frames [j * step, j * step + span), moved inside the clip at its ends
    windows = np.arange(first, n_blocks - 1)  # block b lies in windows b + 2 - blocks (its left) and b - 1
    whole = (windows >= 0) & (windows * step + span <= db.size)
    quiet = np.zeros(windows.size, bool)
    for i in np.flatnonzero(~whole):  # at the clip's ends: the whole window inside the clip nearest (a window cut
        # to 0.5 s judged a held note there alone, and cut it; a clip shorter than a window is judged whole)
        lo = min(max(0, int(windows[i]) * step), max(0, db.size - span))
        quiet[i] = _no_speech(db[lo:lo + span][None], min_frames, low, floor)[0]
    if whole.any():
        rows = np.lib.stride_tricks.sliding_window_view(db, span)
        inner = np.flatnonzero(whole)
        for k in range(0, inner.size, CHUNK_FRAMES // 10):  # (600, span) floats at a time
            chunk = inner[k:k + CHUNK_FRAMES // 10]
            quiet[chunk] = _no_speech(rows[windows[chunk] * step], min_frames, low, floor)
    room = quiet[:n_blocks] | quiet[blocks - 3:blocks - 3 + n_blocks]
    return np.repeat(room, step)[:db.size]


def _no_speech(rows: np.ndarray, min_frames: int, low: float, clip_floor: float) -> np.ndarray:
    """For each row of frame levels (K, W), whether it is noise louder than the clip's (its floor ROOM_RISE_DB above
    `clip_floor`, its loud frames (LEVEL_PERCENTILE) reaching `low`) in which `_thresholds` finds no speech, as in a
    clip alone: its loud frames less than STEADY_SPREAD_DB above its floor and quieter than STEADY_SPEECH_DB, none
    standing out (`_standout_level`)."""
    floor, level = np.percentile(rows, [FLOOR_PERCENTILE, LEVEL_PERCENTILE], axis=1)
    quiet = (floor >= clip_floor + ROOM_RISE_DB) & (level >= low) & (level < floor + STEADY_SPREAD_DB) & \
        (level < STEADY_SPEECH_DB)
    for i in np.flatnonzero(quiet & ((rows > (floor + STEADY_SPREAD_DB)[:, None]).sum(axis=1) >= min_frames)):
        quiet[i] = _standout_level(rows[i], float(floor[i]), min_frames) is None
    return quiet


def _noise_top(audible: np.ndarray) -> float:
    """The level (dB) the noise's own loud frames reach: NOISE_REACH times as far above the noise floor as its
    quietest frames lie below it (no speech can change those), both of the `audible` frames: those above SILENCE_DB
    (a few dropouts or 0.2 s of digital silence at the start made the quietest frames -100 dB: the reach, ~240 dB)
    and holding no dropout's edge (`_dropout_frames`: a dozen 30 ms dropouts in the noise, their edge frames 2-7 dB
    under it, pulled the quietest frames down and the reach up, and the quieter guest below was lost). Speech starts
    above it, at least STEADY_SPREAD_DB and at most floor_margin_db + hysteresis_db above the floor: always at the
    most, a guest 10 dB quieter than the host in street noise 12 dB under the guest never started speech; now it
    starts 10 dB above the floor in white noise or room tone, and 16 dB above it still in a rumble (1/f^2 noise,
    loud frames 12-14 dB above its floor)."""
    if audible.size == 0:
        return SILENCE_DB
    floor = float(np.percentile(audible, FLOOR_PERCENTILE))
    return floor + NOISE_REACH * (floor - float(np.percentile(audible, NOISE_PERCENTILE)))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) ranges where `mask` is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _split_at(regions: list[tuple[int, int]], gap: int) -> list[list[tuple[int, int]]]:
    """Group consecutive regions; a pause of at least `gap` frames starts a new group."""
    groups = [[regions[0]]]
    for r in regions[1:]:
        if r[0] - groups[-1][-1][1] >= gap:
            groups.append([r])
        else:
            groups[-1].append(r)
    return groups


def _fit(group: list[tuple[int, int]], db: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Split a group of speech regions into spans of at most `max_frames`, at the longest, quietest pauses."""
    # pause i lies before region i: ranked by length, then by how quiet it is
    pauses = [(0, 0.0)] + [(group[i][0] - group[i - 1][1], -float(db[group[i - 1][1]:group[i][0]].mean()))
                           for i in range(1, len(group))]

    spans, todo = [], [(0, len(group))]  # an explicit stack of region ranges lo..hi-1: no recursion limit
    while todo:
        lo, hi = todo.pop()
        a, b = group[lo][0], group[hi - 1][1]
        if b - a <= max_frames:
            spans.append((a, b))
        elif hi - lo == 1:
            spans += _force_cuts(a, b, db, max_frames)
        else:
            best = max(range(lo + 1, hi), key=pauses.__getitem__)
            todo += [(lo, best), (best, hi)]
    return sorted(spans)


def _force_cuts(a: int, b: int, db: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Cut speech with no pause at its quietest frames, so that every piece is at most `max_frames`."""
    power = 10.0 ** (db / 10.0)
    smooth = 10.0 * np.log10(np.convolve(power, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same") + _EPS)
    spans = []
    while b - a > max_frames:
        # Two pieces fit: cut anywhere that leaves both <= max. Otherwise cut in the second half of a full window.
        lo, hi = (b - max_frames, a + max_frames) if b - a <= 2 * max_frames else (a + max_frames // 2,
                                                                                 a + max_frames)
        cut = lo + int(np.argmin(smooth[lo:hi + 1]))
        spans.append((a, cut))
        a = cut
    return spans + [(a, b)]


def _merge_short(spans: list[tuple[int, int]], min_frames: int, max_gap: int,
                 max_frames: int) -> list[tuple[int, int]]:
    """Merge spans shorter than `min_frames` into the neighbour across the smaller gap, when the result fits."""
    spans = list(spans)
    changed = True
    while changed:
        changed = False
        for i, (a, b) in enumerate(spans):
            if b - a >= min_frames:
                continue
            options = []
            if i > 0 and a - spans[i - 1][1] < max_gap and b - spans[i - 1][0] <= max_frames:
                options.append((a - spans[i - 1][1], i - 1))
            if i + 1 < len(spans) and spans[i + 1][0] - b < max_gap and spans[i + 1][1] - a <= max_frames:
                options.append((spans[i + 1][0] - b, i + 1))
            if options:
                j = min(options)[1]
                lo, hi = min(i, j), max(i, j)
                spans[lo:hi + 1] = [(spans[lo][0], spans[hi][1])]
                changed = True
                break
    return spans


def _to_seconds(spans: list[tuple[int, int]], duration: float, pad: float, win: float, hop: float,
                max_seconds: float, meets: list[int | None] | None = None,
                tails: list[int] | None = None) -> list[Segment]:
    """Frame ranges -> padded times; padding never crosses into a neighbour (it stops halfway across a pause), and
    rounding to milliseconds never takes a segment past `max_seconds` (Whisper's window takes no sample more).
    `meets[i]`: the frame where spans i and i + 1 meet (`_meeting_frames`): both reach it, as far as `max_seconds`
    lets them (the span's own padded speech first); None: padded as above. `tails[i]`: where span i's sound ends
    (`_sound_ends`), padded as its speech."""
    offset = (win - hop) / 2  # [a, b) spans the centres of its frames, +-half a hop
    times = [(offset + a * hop, offset + b * hop) for a, b in spans]
    meet = [None if m is None else offset + m * hop for m in (meets or [None] * (len(spans) - 1))]
    last_ms = last_millisecond(duration)  # no end rounded past the clip's
    out = []
    for i, (start, end) in enumerate(times):
        left = (times[i - 1][1] + start) / 2 if i > 0 else 0.0
        right = (end + times[i + 1][0]) / 2 if i + 1 < len(times) else duration
        before = meet[i - 1] if i > 0 else None  # where it meets the span before, if it does
        after = meet[i] if i + 1 < len(times) else None
        speech = end - start
        if tails is not None:
            end = max(end, offset + tails[i] * hop)
        s, e = max(start - pad, left, 0.0), min(end + pad, right, duration)
        if before is not None:
            s = before
        if after is not None:
            e = after
        if e - s > max_seconds:  # the pause or the tail does not fit whole: the speech first, then the end's reach
            # (speech that fits without its full padding keeps an even share of the room left on each side)
            keep = pad if speech > max_seconds + 1e-9 else min(pad, max(max_seconds - speech, 0.0) / 2)
            s = min(max(s, e - max_seconds), max(start - keep, 0.0))
            s = max(s, left if before is None else before)  # never before the neighbour's end
            e = min(e, s + max_seconds)
        s, e = round(s, 3), min(round(e, 3), last_ms)
        if e - s > max_seconds:  # both ends rounded outwards by up to half a millisecond
            e = math.floor(round((s + max_seconds) * 1000, 6)) / 1000
        out.append(Segment(s, e))
    return [seg for seg in out if seg.end > seg.start]


def last_millisecond(duration: float) -> float:
    """A clip's end in whole milliseconds, rounded down: a time given to 3 decimals never passes it."""
    return math.floor(duration * 1000) / 1000
