"""Run a system on audio: batched decoding, audio cut into its speech segments, results as dataclasses.

    SpeechTranslator.from_pretrained("runs/embedded/srt/final").translate(["a.wav"], src="eng", tgt="deu")

`model` may also be "whisper" (Whisper's own decoder), "cascade" (Whisper ASR, then an LLM translating the transcript)
or "mt" (text MT); see model/systems.py. `src`, `tgt` and `task` are one value for every input or one per input: a batch
mixes languages and tasks freely. `task` "auto" (the default) is what the model folder was trained for
(`systems.auto_task`: s2tt for a Baseline folder, asr for an ASR stage, asr+smt for an SMT stage; srt for the others).
Work items (what goes to the system) stay apart from the results (built from the items and the system's outputs as each
input is finished). The items run in batches in batched.py (`run_items`, each item's token budget), re-exported here.

Here too: the command-line options that choose and run a model and cut its speech, shared by `llm-srt translate` and
`serve` (add_model_arguments, translator_from_args, add_segment_argument, segment_options), the check of
subtitles without a cue that both refuse (missing_cue_text), and the notes both give on segments without a
translation or cut at their token cap (untranslated_note, capped_note). The `translate` command itself (its
arguments, its outputs; the files of --out-dir are out_files.py's) is translate.py, which imports this module, never
the reverse.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import device as placement_of
from . import languages, subtitles
from .audio import (SAMPLE_RATE, WINDOW_SECONDS, AudioInput, array_rate, cut_overrun,  # the window: the longest
                    load_audio)  # segment
from .batched import (ALONE_OUT_OF_MEMORY, MAX_NEW_TOKENS, MAX_NEW_TOKENS_HELP, NOT_RUN, error_line,  # noqa: F401
                      give_back_gpu_memory, item_budget, max_new_tokens, run_items, script_factor)  # (re-exported)
from .errors import LLMSRTError, shown
from .model.decoding import DecodingOptions, add_compile_argument, add_no_repeat_argument, add_srt_tags_argument
from .model.protocol import CANNOT_RUN, Item, Output, System
from .model.systems import AUTO_TASK, auto_task, load_system
from .prompts import Task
from .segment import Segment, SegmentOptions, last_millisecond, segment

MIN_LINE_WIDTH = 10  # the narrowest --line-width (a line holds a few words)
MIN_SEGMENT_SECONDS = 2.0  # the shortest --max-segment-seconds (a segment holds at least a few words)
PENDING_SECONDS = 2 * 3600.0  # decoded inputs waiting for the model (461 MB at 16 kHz) before they are run
FINISH_WINDOW_SECONDS = 900.0  # a group's inputs run in windows of about this much audio, in order, longest segment
#   first within a window: inputs finish (and are written) as the group goes, not all at its end


@dataclass
class SegmentResult:
    start: float  # seconds
    end: float
    transcript: str
    translation: str
    forced_tags: bool = False  # SRT: its language tags were written for it (Output.forced_tags)
    error: str | None = None  # None when fine; else why the system failed on this segment (its texts are empty)
    capped: bool = False  # its output reached its token cap and was cut there (Output.capped)


@dataclass
class TranslationResult:
    audio: str  # the input's name (path, or "<array i>" / "<bytes i>" for the i-th input given as such)
    src: str | None
    tgt: str | None
    task: str
    transcript: str = ""
    translation: str = ""
    duration: float = 0.0  # seconds of audio
    segments: list[SegmentResult] = field(default_factory=list)  # its speech, in order; none: no speech found
    error: str | None = None  # None when fine; else why this input failed (the others are unaffected), or how many
    #                           of its segments failed (the others' texts are kept)
    warning: str | None = None  # its audio decoded only in part (damaged, cut short): load_audio's warning, naming
    #                             the seconds kept, which are all its texts and duration cover (as serve's answer says)
    by_content: bool = False  # its error comes from what its file holds (ContentError: an SMT clip over the window),
    #                           the same each time while the file is unchanged (evaluate's journal keeps such a row)

    @property
    def forced_tags(self) -> bool:
        """SRT: a segment's language tags were written for it (the model would have ended after its transcript)."""
        return any(s.forced_tags for s in self.segments)

    @property
    def capped(self) -> bool:
        """A segment's output reached its token cap (--max-new-tokens, or the segment's duration budget): cut there."""
        return any(s.capped for s in self.segments)

    @property
    def untranslated(self) -> int:
        """Segments that ran but came back without a translation, where the task writes one (the model wrote none,
        or stopped at its token budget first)."""
        if self.task not in [t.value for t in Task if t.needs_translation]:  # ASR, or a per-input task that is none
            return 0
        return sum(s.error is None and not s.translation for s in self.segments)

    @property
    def no_speech(self) -> bool:
        """The input was read and holds no speech: nothing was translated, and its texts are empty."""
        return self.error is None and not self.segments

    @property
    def kept(self) -> list[SegmentResult]:
        """The segments the system did not fail on."""
        return [s for s in self.segments if s.error is None]

    def to_dict(self) -> dict:
        return {"audio": self.audio, "src": self.src, "tgt": self.tgt, "task": self.task,
                "transcript": self.transcript, "translation": self.translation, "duration": round(self.duration, 3),
                "segments": [vars(s) for s in self.segments], "forced_tags": self.forced_tags, "capped": self.capped,
                "no_speech": self.no_speech, "untranslated": self.untranslated, "error": self.error,
                "warning": self.warning}


@dataclass(frozen=True)
class _Input:
    """One input as asked for: its name, languages, task and given transcript (never changed afterwards)."""

    label: str
    src: str | None  # None / "auto": language ID decides, per input
    tgt: str | None
    task: Task | str  # a str: a per-input task that is none (its input fails with that error, never run)
    transcript: str = ""


UNSPACED_SCRIPTS = ("Jpan", "Hans", "Hant")  # written without spaces between words or sentences


def joiner(lang: str | None) -> str:
    """What joins the texts of consecutive segments in `lang`: nothing in Japanese and Chinese, a space elsewhere
    (Korean spaces its words; Thai, written without spaces between words, spaces its sentences)."""
    return "" if lang and languages.get(lang).script in UNSPACED_SCRIPTS else " "


def retryable(error: str | None) -> bool:
    """Whether a failed row may succeed if run again: any failure but one said before decoding (CANNOT_RUN: the
    whisper system into German, an SMT row without a transcript), which comes back the same every time; an
    evaluation that goes on from a killed one runs the others again (out of memory, a fixed audio file)."""
    return error is not None and not error.startswith(CANNOT_RUN)


class ContentError(LLMSRTError):
    """An input that fails by what its file holds (an SMT clip longer than the window), not by a passing error:
    its result's `by_content` is set."""

TASK_NAMES = ", ".join([AUTO_TASK] + [t.value for t in Task])


def _task_error(task) -> str | None:
    """Why `task` is no task translate() runs (None: it is one)."""
    if task == AUTO_TASK or isinstance(task, Task) or task in TASK_NAMES.split(", "):
        return None
    return f"task {task!r} is not a task: use one of {TASK_NAMES}"


def _per_input(value, n: int, option: str) -> list:
    """A scalar (the same for every input) or a sequence of one value per input -> a list of n values."""
    if value is None or isinstance(value, (str, Task)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise LLMSRTError(f"{option}: {len(values)} values for {n} inputs; give one, or one per input")
    return values


class SpeechTranslator:
    """A system (speech LLM or baseline) behind one `translate()` call."""

    def __init__(self, system: System, name: str | None = None):
        self.system = system
        self.name = name or system.name

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | torch.device | None = "auto",
                        dtype: str | torch.dtype | None = "auto", llm: str | None = None, whisper: str | None = None,
                        encoder: str | None = None) -> "SpeechTranslator":
        """`model`: a SpeechLLM folder, or a key of model.systems.SYSTEMS ("whisper", "cascade", "mt"). An indexed
        CUDA device (`device="cuda:1"`) is made the calling thread's current GPU before the model loads, as the CLI's
        verbs do: what runs on "the current GPU" (the CUDA graphs of --compile, library handles, synchronize, memory
        stats) ran on cuda:0 beside a model on cuda:1 (`device.make_current`)."""
        placement = placement_of.resolve(device, dtype)
        placement_of.make_current(placement)
        return cls(load_system(model, placement, whisper=whisper, llm=llm, encoder=encoder), str(model))

    @property
    def auto_task(self) -> Task:
        """The task `auto` runs: what the model folder was trained for (`systems.auto_task`; SRT for the others)."""
        return auto_task(self.system)

    def translate(self, inputs: Sequence[AudioInput], src: str | Sequence[str | None] | None,
                  tgt: str | Sequence[str | None] | None = None,
                  task: Task | str | Sequence[Task | str] = AUTO_TASK, options: DecodingOptions = DecodingOptions(),
                  batch_size: int = 8, transcripts: Sequence[str] | None = None,
                  segment_options: SegmentOptions = SegmentOptions(), progress=None,
                  on_result: Callable[[int, TranslationResult], object] | None = None,
                  whole_clips: bool = False, shortest_first: bool = False,
                  cancelled: Callable[[int], bool] | None = None, remember_out_of_memory: bool = True,
                  between_batches: Callable[[float], object] | None = None,
                  on_stopped: Callable[[int, TranslationResult], object] | None = None,
                  sample_rate: int = SAMPLE_RATE) -> list[TranslationResult]:
        """One result per input, in order. An input is a path, the bytes of a file (any rate: resampled), or a float
        array or torch tensor of shape (samples,) or (samples, channels) at `sample_rate` Hz (default 16000,
        Whisper's: an array at another rate, e.g. sf.read's 44.1 kHz, is resampled from the rate given here).
        `src` / `tgt` / `task`: one value, or one per input ("auto" source:
        language ID per input, from its longest speech segment; "auto" task: `auto_task`, what the model was trained
        for). Each input goes to the system as its speech
        segments (`speech_segments`); one without speech gets no segment and empty texts. `whole_clips` (evaluate:
        test utterances as the paper scores them), and any input with its transcript (SMT, whose transcript belongs
        to the whole clip): an input of at most segment_options.max_seconds goes whole, silences included (a longer
        SMT input fails). A bad input gets `error` set; the others are still translated; a segment that fails
        leaves its input's other segments translated (the input's `error` counts it). Inputs are decoded and run in
        groups of about PENDING_SECONDS of audio, so memory does not grow with the number of inputs; `on_result(i,
        result)` is called as each input is done (its last segment back from the system, so not in input order), so a
        caller can write it out at once and an interrupted run keeps every input that was finished.
        `shortest_first` (a server's batch of requests): the inputs with the least audio run first, so a short request
        is answered before a long one's other segments run (else a group's inputs run in windows of about
        FINISH_WINDOW_SECONDS of audio, in order, and segments longest first within a window, whatever their input: run
        longest first over the whole group, no input was finished, and so written, until near its end, and an
        interrupted run of long files kept none). `cancelled(i)`: input i's caller has stopped waiting (a timeout, a
        client gone): its segments not yet in a batch are left out (NOT_RUN), so the model runs on for no one no longer
        than the batch it is in. `remember_out_of_memory`: see `run_items`; `between_batches(left)`: its `between`,
        and before each later group, with the share of the whole call's audio not yet run (the groups to come counted
        by their arrays' lengths; a path or bytes from when it is decoded), not of the group running.
        `on_stopped(i, result)`: when the run is stopped (Ctrl-C, SIGTERM, the GPU failing for good: whatever leaves
        this call), before that goes on up, for each input with some segments back but not all: a result of those
        (`error` says how many were not), so that a caller keeps them (a 1 h recording stopped after 200 of its 240
        segments kept none)."""
        if batch_size < 1:
            raise LLMSRTError(f"batch size must be at least 1, got {batch_size} (--batch-size)")
        sample_rate = array_rate(sample_rate)  # the arrays' rate, for every one of them: a bad one stops here
        segment_options.check("segment_options")  # as every input's: else each failed alone with the same error
        n = len(inputs)
        srcs, tgts = _per_input(src, n, "--src"), _per_input(tgt, n, "--tgt")
        # one value for every input is an option: a bad one stops here; a bad per-input value fails its input only
        if (task is None or isinstance(task, str)) and (error := _task_error(task)):
            raise LLMSRTError(f"{error} (--task)")
        given = _per_input(task, n, "--task")
        bad_task = {i: error for i, t in enumerate(given) if (error := _task_error(t))}
        tasks = [None if i in bad_task else self.auto_task if t == AUTO_TASK else Task(t) for i, t in enumerate(given)]
        if isinstance(src, str) and src != "auto":
            languages.get(src)
        if tgt is None or isinstance(tgt, str):
            if tgt is not None:
                languages.get(tgt)
            elif any(k and k.needs_translation for k in tasks):
                raise LLMSRTError(f"task {next(k for k in tasks if k and k.needs_translation).value} needs a target "
                                  "language (--tgt)")
        if transcripts is not None and len(transcripts) != n:
            raise LLMSRTError(f"--transcript: {len(transcripts)} transcripts for {n} inputs; give one per input")
        if any(k is Task.SMT for k in tasks) and transcripts is None:
            raise LLMSRTError("task smt needs one transcript per input (--transcript)")
        asked = [_Input(shown(str(x)) if isinstance(x, (str, Path)) else  # the bytes of a file are no array
                        f"<{'bytes' if isinstance(x, (bytes, bytearray, memoryview)) else 'array'} {i}>", srcs[i],
                        tgts[i] if tasks[i] is None or tasks[i].needs_translation else None, tasks[i] or str(given[i]),
                        transcripts[i] if transcripts else "") for i, x in enumerate(inputs)]

        durations = [0.0] * n
        warnings: list[list[str]] = [[] for _ in range(n)]  # load_audio's warning of an input decoded only in part
        langs: list[str | None] = [a.src if a.src != "auto" else None for a in asked]
        segments: list[list[SegmentResult | None]] = [[] for _ in range(n)]
        left = [0] * n  # segments of each input still to come back from the system
        results: list[TranslationResult | None] = [None] * n
        work: list[tuple[int, int, Segment, Item]] = []  # (input index, segment index, segment, item for the system)

        def done(i: int, error: str | None = None, by_content: bool = False) -> None:  # input i is finished: its
            #   result, handed over
            results[i] = _result(asked[i], langs[i], durations[i], segments[i], error, warnings[i], by_content)
            if on_result is not None:
                on_result(i, results[i])

        def on_output(k: int, out: Output) -> None:
            i, j, s, _ = work[k]
            end = min(round(s.end, 3), last_millisecond(durations[i]))  # never past the audio's end
            segments[i][j] = SegmentResult(round(s.start, 3), end, out.transcript, out.translation, out.forced_tags,
                                           out.error, out.capped)
            left[i] -= 1
            if left[i] == 0:
                done(i)

        pending = 0.0
        window = [0] * n  # each input's window of its group (FINISH_WINDOW_SECONDS)
        ahead = [x.shape[0] / sample_rate if getattr(x, "ndim", 0) else 0.0 for x in inputs]  # arrays, tensors

        def run(work: list[tuple[int, int, Segment, Item]], seconds: float, reached: int) -> None:
            # the group holds `seconds` of the inputs before `reached`: run_items' share of it -> the whole call's
            later = sum(ahead[reached:])
            total = sum(map(max, ahead, durations)) or 1.0  # every input's, run or not (failed, left out)
            between = None if between_batches is None else lambda share: between_batches(
                (share * seconds + later) / total)
            try:
                run_items(self.system, [w[3] for w in work], options, batch_size, progress, on_output,
                          first=[durations[w[0]] if shortest_first else window[w[0]] for w in work],
                          skip=None if cancelled is None else lambda k: cancelled(work[k][0]),
                          remember_out_of_memory=remember_out_of_memory, between=between)
            except BaseException:
                for i in sorted({w[0] for w in work}):  # the inputs stopped part way: what came back of them
                    if on_stopped is not None and results[i] is None and left[i] < len(segments[i]):
                        back = [s for s in segments[i] if s is not None]
                        on_stopped(i, _result(asked[i], langs[i], durations[i], back, f"the run was stopped before "
                                              f"{left[i]} of {len(segments[i])} segments were done", warnings[i]))
                raise
            if between is not None and reached < n:  # a later group comes: a waiting short request runs before its
                between(0.0)  # decoding and language ID and first batch (run_items calls `between` inside a group)

        for i, a in enumerate(asked):
            if cancelled is not None and cancelled(i) or i in bad_task:
                done(i, bad_task.get(i, NOT_RUN))
                continue
            try:
                # a file decoding in part is translated as far as it goes, but not where its reference (evaluate's
                # whole clips) or its given transcript (SMT) belongs to the whole of it: there it fails, counted
                samples = load_audio(inputs[i], name=a.label, salvage=not (whole_clips or a.transcript),
                                     on_salvage=warnings[i].append, sample_rate=sample_rate)
                if whole_clips or a.transcript:  # a frame over the window: cut to it, as in training
                    samples = cut_overrun(samples, segment_options.max_seconds)
                durations[i] = samples.size / SAMPLE_RATE
                if a.transcript and durations[i] > segment_options.max_seconds:
                    raise ContentError(f"{a.label}: {durations[i]:.3f} s of audio with its transcript (SMT): the "
                                      f"transcript goes with the whole clip, which must be at most "
                                      f"{segment_options.max_seconds:g} s; cut it, or translate it with --task srt")
                whole = (whole_clips or a.transcript) and durations[i] <= segment_options.max_seconds
                segs = [Segment(0.0, durations[i])] if whole else speech_segments(samples, segment_options)
                if segs and langs[i] is None:
                    langs[i] = self.system.detect_language(max(segs, key=lambda s: s.end - s.start).slice(samples))
            except Exception as e:  # one input's failure (bad audio, language ID running out of memory) is its own
                done(i, error_line(e), by_content=isinstance(e, ContentError))
                continue
            if not segs:  # no speech: nothing for the system to make up a text from
                done(i)
                continue
            segments[i], left[i] = [None] * len(segs), len(segs)
            work += [(i, j, s, Item(s.slice(samples), langs[i], a.tgt, a.task, a.transcript))
                     for j, s in enumerate(segs)]
            window[i] = int(pending // FINISH_WINDOW_SECONDS)
            pending += durations[i]
            if pending >= PENDING_SECONDS:  # decoded audio is held for PENDING_SECONDS of input at most
                run(work, pending, i + 1)
                work = []
                pending = 0.0
        run(work, pending, n)
        return results


def speech_segments(samples: np.ndarray, options: SegmentOptions = SegmentOptions()) -> list[Segment]:
    """The pieces of a clip that go to the system: its speech segments (segment.segment), none for a clip without
    speech. One segment that fills the clip but for silences shorter than a cut's pause (options.split_silence) at
    its ends stands for the whole clip, which goes in as it is, as clips did in training."""
    duration = samples.size / SAMPLE_RATE
    segs = segment(samples, options=options)
    if len(segs) == 1 and duration <= options.max_seconds and segs[0].start < options.split_silence \
            and duration - segs[0].end < options.split_silence:
        return [Segment(0.0, duration)]
    return segs


def segments_error(segments: Sequence[SegmentResult]) -> str | None:
    """One line on an input's failed segments (None: none failed): a lone segment's own error, else how many failed
    and the first one's time and error."""
    failed = [s for s in segments if s.error]
    if not failed:
        return None
    if len(segments) == 1:
        return failed[0].error
    first = failed[0]
    said = CANNOT_RUN if all(not retryable(s.error) for s in failed) else ""  # known before decoding, every one
    return (f"{said}{len(failed)} of {len(segments)} segments failed (the first, "
            f"{subtitles.timestamp(first.start, '.')} to {subtitles.timestamp(first.end, '.')}: {first.error})")


def _result(a: _Input, lang: str | None, duration: float, segments: list[SegmentResult],
            error: str | None, warnings: list[str], by_content: bool = False) -> TranslationResult:
    """An input's result from its segments (the failed ones have no text) or its own error (`by_content`: a
    ContentError's), and the warning of its audio decoded only in part, if it was."""
    return TranslationResult(
        a.label, lang, a.tgt, getattr(a.task, "value", a.task), duration=duration, segments=segments,
        error=error or segments_error(segments), transcript=_joined([s.transcript for s in segments], lang),
        translation=_joined([s.translation for s in segments], a.tgt), warning=warnings[0] if warnings else None,
        by_content=by_content and error is not None)


def untranslated_note(r: TranslationResult) -> str | None:
    """The line on a result's segments that came back without a translation, if any (`translate` prints it after the
    input's name; `serve` answers it as the warning: an empty translation was a plain 200)."""
    return (f"{r.untranslated} of {len(r.segments)} segments got no translation (the model wrote none, or reached "
            "the segment's token budget first); their transcripts are kept") if r.untranslated else None


def capped_note(r: TranslationResult, option: str = "--max-new-tokens") -> str | None:
    """The line on a result's segments cut at their token cap, if any (beside `untranslated_note`); `option`: what
    sets the cap where it is read (serve: the request's max_new_tokens field)."""
    n = sum(s.capped for s in r.segments)
    return (f"{n} of {len(r.segments)} segments reached their token cap ({option}, or the segment's duration "
            "budget): their text is cut there") if n else None


def _joined(texts: list[str], lang: str | None) -> str:
    """The segments' texts in `lang` as one ("" when none has text: a language no system knows is not looked up)."""
    texts = [t for t in texts if t]
    return joiner(lang).join(texts) if texts else ""


# ---- command-line options shared by `translate` and `serve` ------------------------------------------------------
def add_model_arguments(parser) -> None:
    """The options that choose and run a model, shared by `translate` and `serve` (see translator_from_args)."""
    parser.add_argument("--model", required=True,
                        help="model folder, or 'whisper' / 'cascade' (baselines) / 'mt' (text MT of --llm)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help=MAX_NEW_TOKENS_HELP)
    add_srt_tags_argument(parser)
    add_no_repeat_argument(parser)
    add_compile_argument(parser)
    parser.add_argument("--whisper", default=None, help="Whisper folder for the baselines (default: embedded)")
    parser.add_argument("--llm", default=None,
                        help="LLM folder: the cascade's / mt's (default: embedded), or a model folder's own LLM "
                             "moved to another place")
    parser.add_argument("--encoder", default=None, help="a model folder's Whisper encoder moved to another place")
    placement_of.add_arguments(parser)


def add_segment_argument(parser) -> None:
    """--max-segment-seconds, shared by `translate` and `serve` (see segment_options)."""
    parser.add_argument("--max-segment-seconds", type=float, default=WINDOW_SECONDS, metavar="S",
                        help=f"cut speech into segments of at most S seconds ({MIN_SEGMENT_SECONDS:g} to "
                             f"{WINDOW_SECONDS:g}), at its longest pauses; each segment is translated on its own and "
                             "is its own srt/vtt cue or cues (e.g. 7 for cues of a readable length; shorter segments "
                             "give the model less context)")


def segment_options(max_seconds: float) -> SegmentOptions:
    """SegmentOptions for --max-segment-seconds, checked: one-line error outside MIN_SEGMENT_SECONDS..30."""
    if not MIN_SEGMENT_SECONDS <= max_seconds <= WINDOW_SECONDS:  # NaN fails too
        raise LLMSRTError(f"--max-segment-seconds {max_seconds:g}: give {MIN_SEGMENT_SECONDS:g} to "
                          f"{WINDOW_SECONDS:g} seconds (Whisper's window is the longest a segment can be)")
    return SegmentOptions(max_seconds=max_seconds)


def translator_from_args(args) -> SpeechTranslator:
    # --device cuda:N made the current GPU before the model loads, as evaluate and serve do: what runs on "the
    # current GPU" (the CUDA graphs of --compile, library handles) ran on cuda:0 beside a model on cuda:N
    placement_of.make_current(placement_of.resolve(args.device, args.dtype))
    return SpeechTranslator.from_pretrained(args.model, device=args.device, dtype=args.dtype, llm=args.llm,
                                            whisper=args.whisper, encoder=args.encoder)


NO_TEXT = {"asr": "translation", "s2tt": "transcript"}  # --task -> the text it never writes (--subtitles)


def missing_cue_text(task: str, fmt: str, mode: str) -> bool:
    """Whether subtitles (`fmt` srt or vtt) of `mode` show a text the task never writes: files without a cue
    (translate refuses them, and so does serve)."""
    return fmt in ("srt", "vtt") and mode == NO_TEXT.get(task)
