"""Run a system on audio: batched decoding, long audio split at pauses, results as dataclasses.

    SpeechTranslator.from_pretrained("runs/embedded/srt/final").translate(["a.wav"], src="eng", tgt="deu")

`model` may also be "whisper" (Whisper's own decoder), "cascade" (Whisper ASR, then an LLM translating the
transcript) or "mt" (text MT); see model/systems.py. `src`, `tgt` and `task` are one value for every input or one
per input: a batch mixes languages and tasks freely. Work items (what goes to the system) stay apart from the
results (built from the items and the system's outputs at the end).
"""

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import device as placement_of
from . import languages, subtitles
from .audio import SAMPLE_RATE, AudioInput, load_audio
from .errors import LLMSRTError, shown
from .model.decoding import (DecodingOptions, add_compile_argument, add_no_repeat_argument, add_srt_tags_argument,
                             decoding_from_args)
from .model.systems import Item, Output, System, cap, check_item, load_system
from .prompts import Task
from .segment import Segment, SegmentOptions, segment

WINDOW_SECONDS = 30.0  # Whisper's window: longer inputs are segmented
TOKENS_PER_SECOND = 12.0  # generous upper bound on text tokens per second of Latin-script speech, per text part
SCRIPT_TOKEN_FACTOR = {"Latn": 1.0, "Cyrl": 1.5}  # tokens per Latin token for the same speech; other scripts:
OTHER_SCRIPT_FACTOR = 2.5  # char-tokenized / byte-heavy scripts (Jpan, Hans, Hant, Kore, Thai) need far more
TEXT_TOKENS_PER_CHAR = 1.0  # text-only (MT) items: generous cap per character of the given transcript, per factor
MIN_NEW_TOKENS = 24
PENDING_SECONDS = 2 * 3600.0  # decoded inputs waiting for the model (230 MB at 16 kHz) before they are run

log = logging.getLogger(__name__)


@dataclass
class SegmentResult:
    start: float  # seconds
    end: float
    transcript: str
    translation: str
    forced_tags: bool = False  # SRT: its language tags were written for it (Output.forced_tags)


@dataclass
class TranslationResult:
    audio: str  # the input's name (path, or "<array i>")
    src: str | None
    tgt: str | None
    task: str
    transcript: str = ""
    translation: str = ""
    duration: float = 0.0  # seconds of audio
    segments: list[SegmentResult] = field(default_factory=list)
    error: str | None = None  # None when fine; else why this input failed (the others are unaffected)

    @property
    def forced_tags(self) -> bool:
        """SRT: a segment's language tags were written for it (the model would have ended after its transcript)."""
        return any(s.forced_tags for s in self.segments)

    def to_dict(self) -> dict:
        return {"audio": self.audio, "src": self.src, "tgt": self.tgt, "task": self.task,
                "transcript": self.transcript, "translation": self.translation, "duration": round(self.duration, 3),
                "segments": [vars(s) for s in self.segments], "forced_tags": self.forced_tags, "error": self.error}


@dataclass(frozen=True)
class _Input:
    """One input as asked for: its name, languages, task and given transcript (never changed afterwards)."""

    label: str
    src: str | None  # None / "auto": language ID decides, per input
    tgt: str | None
    task: Task
    transcript: str = ""


def script_factor(code: str | None) -> float:
    """How many more tokens than Latin-script text the same speech takes in language `code`'s script."""
    return SCRIPT_TOKEN_FACTOR.get(languages.get(code).script, OTHER_SCRIPT_FACTOR) if code else 1.0


def max_new_tokens(seconds: float, task: Task, cap: int, src: str | None = None, tgt: str | None = None) -> int:
    """Output-length cap for `seconds` of speech: a part per text the task writes, each scaled by its script."""
    task = Task(task)
    factor = (script_factor(src) if task in (Task.ASR, Task.SRT) else 0.0) + \
        (script_factor(tgt) if task.needs_translation else 0.0)
    return int(min(cap, MIN_NEW_TOKENS + factor * TOKENS_PER_SECOND * seconds))


def item_budget(item: Item, limit: int) -> int:
    """The output-length cap of one work item (speech: by duration; text only: by the given text's length)."""
    if item.audio is None:
        return int(min(limit, MIN_NEW_TOKENS + script_factor(item.tgt) * TEXT_TOKENS_PER_CHAR * len(item.transcript)))
    return max_new_tokens(item.audio.size / SAMPLE_RATE, item.task, limit, item.src, item.tgt)


def joiner(lang: str | None) -> str:
    return "" if lang and languages.get(lang).bleu_tokenize == "char" else " "


def error_line(e: BaseException) -> str:
    """One line for a failed batch: an LLMSRTError's own message, else the exception type and first line."""
    return str(e) if isinstance(e, LLMSRTError) else f"{type(e).__name__}: {e}".splitlines()[0]


def run_items(system: System, items: Sequence[Item], options: DecodingOptions = DecodingOptions(),
              batch_size: int = 8, progress: Callable[[int], object] | None = None) -> list[Output]:
    """One Output per item, in order, however mixed the languages and tasks. Items run longest first in batches of
    `batch_size` (similar lengths together; the first batch shows the peak memory); each item's output is capped
    by its own budget (item_budget: duration and scripts, or the given text's length). A batch that fails (a CUDA
    out-of-memory, any error) is retried once as two halves before its rows fail, so one long clip does not fail
    its neighbours; a failed row has `error` set, as has an item no system can run (model.systems.check_item),
    which never reaches the system. `progress(n)` is called as n more items are done (failed ones included)."""
    if batch_size < 1:
        raise LLMSRTError(f"batch size must be at least 1, got {batch_size} (--batch-size)")
    outputs: list[Output | None] = [None] * len(items)
    items = list(items)
    for k, it in enumerate(items):
        try:
            check_item(it)
        except LLMSRTError as e:
            outputs[k] = Output(error=str(e))
            continue
        items[k] = replace(it, max_new_tokens=item_budget(it, cap(it, options)))
    size = [it.audio.size if it.audio is not None else len(it.transcript) for it in items]
    order = sorted((k for k in range(len(items)) if outputs[k] is None),
                   key=lambda k: (items[k].audio is None, -size[k]))
    if progress is not None and len(order) < len(items):
        progress(len(items) - len(order))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for k, out in zip(chunk, _run_chunk(system, [items[k] for k in chunk], options, retry=True)):
            outputs[k] = out
        if progress is not None:
            progress(len(chunk))
    return outputs


def _run_chunk(system: System, chunk: list[Item], options: DecodingOptions, retry: bool) -> list[Output]:
    opts = replace(options, max_new_tokens=max(it.max_new_tokens for it in chunk))
    try:
        outs = system.run_batch(chunk, opts)
        if len(outs) != len(chunk):
            raise LLMSRTError(f"system {system.name} returned {len(outs)} outputs for {len(chunk)} items")
        return outs
    except Exception as e:  # one bad batch never loses the others
        error, oom = error_line(e), isinstance(e, torch.cuda.OutOfMemoryError)
    # out of the except block: the traceback (and the tensors its frames hold) is gone before the cache is freed
    if oom:
        torch.cuda.empty_cache()
    if retry and len(chunk) > 1:
        log.warning("a batch of %d failed (%s); retrying it as two halves", len(chunk), error)
        half = (len(chunk) + 1) // 2
        return (_run_chunk(system, chunk[:half], options, retry=False)
                + _run_chunk(system, chunk[half:], options, retry=False))
    return [Output(error=error)] * len(chunk)


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
        """`model`: a SpeechLLM folder, or a key of model.systems.SYSTEMS ("whisper", "cascade", "mt")."""
        placement = placement_of.resolve(device, dtype)
        return cls(load_system(model, placement, whisper=whisper, llm=llm, encoder=encoder), str(model))

    def translate(self, inputs: Sequence[AudioInput], src: str | Sequence[str | None] | None,
                  tgt: str | Sequence[str | None] | None = None,
                  task: Task | str | Sequence[Task | str] = Task.SRT, options: DecodingOptions = DecodingOptions(),
                  batch_size: int = 8, transcripts: Sequence[str] | None = None,
                  segment_options: SegmentOptions = SegmentOptions(), progress=None,
                  on_result: Callable[[int, TranslationResult], object] | None = None) -> list[TranslationResult]:
        """One result per input, in order. `src` / `tgt` / `task`: one value, or one per input ("auto" source:
        language ID per input). A bad input gets `error` set; the others are still translated. Inputs are decoded
        and run in groups of about PENDING_SECONDS of audio, so memory does not grow with the number of inputs;
        `on_result(i, result)` is called, in order, as each group's inputs are done (so a caller can write them
        out before the next group runs, and an interrupted run keeps what was finished)."""
        if batch_size < 1:
            raise LLMSRTError(f"batch size must be at least 1, got {batch_size} (--batch-size)")
        n = len(inputs)
        srcs, tgts = _per_input(src, n, "--src"), _per_input(tgt, n, "--tgt")
        tasks = [Task(t) for t in _per_input(task, n, "--task")]
        # one value for every input is an option: a bad one stops here; a bad per-input value fails its input only
        if isinstance(src, str) and src != "auto":
            languages.get(src)
        if tgt is None or isinstance(tgt, str):
            if tgt is not None:
                languages.get(tgt)
            elif any(k.needs_translation for k in tasks):
                raise LLMSRTError(f"task {next(k for k in tasks if k.needs_translation).value} needs a target "
                                  "language (--tgt)")
        if transcripts is not None and len(transcripts) != n:
            raise LLMSRTError(f"--transcript: {len(transcripts)} transcripts for {n} inputs; give one per input")
        if any(k is Task.SMT for k in tasks) and transcripts is None:
            raise LLMSRTError("task smt needs one transcript per input (--transcript)")
        asked = [_Input(shown(str(x)) if isinstance(x, (str, Path)) else f"<array {i}>", srcs[i],
                        tgts[i] if tasks[i].needs_translation else None, tasks[i],
                        transcripts[i] if transcripts else "") for i, x in enumerate(inputs)]

        errors: list[str | None] = [None] * n
        durations = [0.0] * n
        langs: list[str | None] = [a.src if a.src != "auto" else None for a in asked]
        segments: list[list[SegmentResult]] = [[] for _ in range(n)]
        work: list[tuple[int, Segment, Item]] = []  # (input index, its segment, the item for the system)

        def run_pending() -> None:  # decoded audio is held for PENDING_SECONDS of input at most, then let go
            outputs = run_items(self.system, [w[2] for w in work], options, batch_size, progress)
            for (i, s, _), out in zip(work, outputs):
                if out.error and errors[i] is None:
                    errors[i] = out.error
                segments[i].append(SegmentResult(round(s.start, 3), round(s.end, 3), out.transcript,
                                                 out.translation, out.forced_tags))
            work.clear()

        results: list[TranslationResult] = []

        def finish(upto: int) -> None:  # inputs before `upto` are done: build their results, hand them over
            for i in range(len(results), upto):
                a, ok = asked[i], errors[i] is None
                segs = segments[i] if ok else []
                results.append(TranslationResult(
                    a.label, langs[i], a.tgt, a.task.value, duration=durations[i], segments=segs, error=errors[i],
                    transcript=joiner(langs[i]).join(s.transcript for s in segs if s.transcript) if ok else "",
                    translation=joiner(a.tgt).join(s.translation for s in segs if s.translation) if ok else ""))
                if on_result is not None:
                    on_result(i, results[i])

        pending = 0.0
        for i, a in enumerate(asked):
            try:
                samples = load_audio(inputs[i], name=a.label)
                durations[i] = samples.size / SAMPLE_RATE
                segs = ([Segment(0.0, durations[i])] if durations[i] <= WINDOW_SECONDS
                        else segment(samples, options=segment_options) or [Segment(0.0, min(durations[i], 1.0))])
                if langs[i] is None:
                    langs[i] = self.system.detect_language(segs[0].slice(samples))
            except Exception as e:  # one input's failure (bad audio, language ID running out of memory) is its own
                errors[i] = error_line(e)
                continue
            work += [(i, s, Item(s.slice(samples), langs[i], a.tgt, a.task, a.transcript)) for s in segs]
            pending += durations[i]
            if pending >= PENDING_SECONDS:
                run_pending()
                pending = 0.0
                finish(i + 1)
        run_pending()
        finish(n)
        return results


# ---- CLI: llm-srt translate ---------------------------------------------------------------------------------------
def add_model_arguments(parser) -> None:
    """The options that choose and run a model, shared by `translate` and `serve` (see translator_from_args)."""
    parser.add_argument("--model", required=True,
                        help="model folder, or 'whisper' / 'cascade' (baselines) / 'mt' (text MT of --llm)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    add_srt_tags_argument(parser)
    add_no_repeat_argument(parser)
    add_compile_argument(parser)
    parser.add_argument("--whisper", default=None, help="Whisper folder for the baselines (default: embedded)")
    parser.add_argument("--llm", default=None,
                        help="LLM folder: the cascade's / mt's (default: embedded), or a model folder's own LLM "
                             "moved to another place")
    parser.add_argument("--encoder", default=None, help="a model folder's Whisper encoder moved to another place")
    placement_of.add_arguments(parser)


def translator_from_args(args) -> SpeechTranslator:
    return SpeechTranslator.from_pretrained(args.model, device=args.device, dtype=args.dtype, llm=args.llm,
                                            whisper=args.whisper, encoder=args.encoder)


def add_arguments(parser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate, any length)")
    add_model_arguments(parser)
    parser.add_argument("--src", default=None, help="source language (ISO 639-3, e.g. eng), or 'auto'")
    parser.add_argument("--tgt", default=None, help="target language (ISO 639-3, e.g. deu)")
    parser.add_argument("--task", default="srt", choices=[t.value for t in Task if t is not Task.MT])
    parser.add_argument("--transcript", action="append", default=None,
                        help="the transcript of each input, in order (task smt); repeat per input")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"])
    parser.add_argument("--subtitles", default="both", choices=list(subtitles.CUE_MODES),
                        help="what srt/vtt cues show")
    parser.add_argument("--out-dir", default=None,
                        help="write one .txt/.srt/.vtt per input here, at the input's path relative to the inputs' "
                             "common folder (inputs that would share a file are refused); json: results.json")
    parser.add_argument("--skip-existing", action="store_true",
                        help="with --out-dir (text, srt, vtt): leave out the inputs whose output file is there "
                             "already (a run that goes on from a killed one; each file is written whole or not at all)")


def main(args) -> int:
    import json
    import sys

    if args.src is None:
        raise LLMSRTError("give the source language with --src (ISO 639-3, e.g. eng) or --src auto")
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LLMSRTError(f"--out-dir {out_dir}: cannot create the folder ({e.strerror}); choose another") \
                from None
    outputs = output_paths(args.audio, out_dir, FILE_SUFFIX[args.format]) if out_dir and args.format != "json" \
        else None
    if out_dir and args.format == "json":
        check_not_inputs(args.audio, [out_dir / "results.json"])
    if args.skip_existing:
        if not outputs:
            raise LLMSRTError("--skip-existing needs --out-dir and --format text, srt or vtt (one file per input; "
                              "json writes one results.json at the end)")
        if args.transcript is not None and len(args.transcript) != len(outputs):
            raise LLMSRTError(f"--transcript: {len(args.transcript)} transcripts for {len(outputs)} inputs; give one "
                              "per input")
        todo = [k for k, path in enumerate(outputs) if not path.is_file()]
        if len(todo) < len(outputs):
            print(f"llm-srt translate: {len(outputs) - len(todo)} of {len(outputs)} inputs skipped: their outputs "
                  f"are in {shown(str(out_dir))} already (--skip-existing)", file=sys.stderr)
        if not todo:
            return 0
        args.audio, outputs = [args.audio[k] for k in todo], [outputs[k] for k in todo]
        args.transcript = args.transcript and [args.transcript[k] for k in todo]
    translator = translator_from_args(args)
    options = decoding_from_args(args)

    def emit(k: int, r: TranslationResult) -> None:  # as each input is done: its error line, or its output
        if r.error:
            print(f"llm-srt translate: {r.error}", file=sys.stderr)
        if r.error or args.format == "json":
            return
        text = _render(r, args)
        if outputs:
            try:
                _write(outputs[k], text)
            except LLMSRTError as e:  # this input's output is lost, the others' are still written
                r.error = str(e)
                print(f"llm-srt translate: {e}", file=sys.stderr)
        else:
            if len(args.audio) > 1 and args.format != "text":
                print(f"# {r.audio}")
            print(text, end="" if args.format == "text" else "\n", flush=True)

    results = translator.translate(args.audio, args.src, args.tgt, task=args.task, options=options,
                                   batch_size=args.batch_size, transcripts=args.transcript, on_result=emit)
    if args.format == "json":
        text = json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2)
        if out_dir:
            _write(out_dir / "results.json", text + "\n")
        print(text)
    failed = sum(r.error is not None for r in results)
    if failed and len(results) > 1:
        done = f"the other {len(results) - failed} translated" if failed < len(results) else "none translated"
        print(f"llm-srt translate: {failed} of {len(results)} inputs failed (named above); {done}", file=sys.stderr)
    return 0 if failed < len(results) else 1


FILE_SUFFIX = {"text": ".txt", "srt": ".srt", "vtt": ".vtt"}  # --format -> the extension of each input's file


def _render(r: TranslationResult, args) -> str:
    """One input's output as --format asks (text, srt or vtt)."""
    if args.format in ("srt", "vtt"):
        render = subtitles.to_srt if args.format == "srt" else subtitles.to_vtt
        return render(subtitles.segment_cues(r.segments, args.subtitles))
    lines = [r.audio]
    if r.transcript or args.task in ("asr", "srt"):
        lines.append(f"  transcript:  {r.transcript}")
    if args.task != "asr":
        lines.append(f"  translation: {r.translation}")
    return "\n".join(lines) + "\n"


def output_paths(inputs: Sequence[str], out_dir: Path, suffix: str) -> list[Path]:
    """Where each input's output goes under `out_dir`: its path relative to the deepest folder holding every input,
    with `suffix` for its extension (a/x.wav and b/x.wav -> OUT/a/x.srt and OUT/b/x.srt; inputs in one folder ->
    OUT/x.srt). Two different inputs that would still share an output (x.wav and x.flac, or names differing only
    in case) are refused before anything runs, naming both."""
    absolute = [Path(os.path.abspath(p)) for p in inputs]
    common = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    outputs = [out_dir / p.relative_to(common).with_suffix(suffix) for p in absolute]
    first: dict[str, int] = {}
    for k, out in enumerate(outputs):
        j = first.setdefault(str(out).casefold(), k)
        if absolute[j] != absolute[k]:
            raise LLMSRTError(f"--out-dir: {shown(inputs[j])} and {shown(inputs[k])} would both write "
                              f"{shown(str(outputs[j]))}; rename one, or translate them in separate runs")
    check_not_inputs(inputs, outputs)
    return outputs


def check_not_inputs(inputs: Sequence[str], outputs: Sequence[Path]) -> None:
    """Refuse outputs that would overwrite an input (an audio file named x.srt, translated into its own folder)."""
    given = {os.path.realpath(p): p for p in inputs}
    for out in outputs:
        if (hit := given.get(os.path.realpath(out))) is not None:
            raise LLMSRTError(f"--out-dir: the output {shown(str(out))} would overwrite the input {shown(hit)}; "
                              "choose another --out-dir")


def _write(path: Path, text: str) -> None:
    """Write an output whole or not at all (a temporary file beside it, then renamed: a kill never leaves half a
    file, which --skip-existing would take for a finished one)."""
    part = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise LLMSRTError(f"{path}: cannot write the output ({e.strerror or e}); check --out-dir") from None
