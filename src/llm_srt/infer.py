"""Run a model on audio: batched decoding, long audio split at pauses, results as dataclasses.

    SpeechTranslator.from_pretrained("runs/embedded/srt/final").translate(["a.wav"], src="eng", tgt="deu")

`model` may also be "whisper" (Whisper's own decoder) or "cascade" (Whisper ASR, then the LLM translating the
transcript); see evaluate/baselines.py.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import languages, subtitles
from .audio import SAMPLE_RATE, AudioInput, load_audio
from .errors import LLMSRTError
from .model.decoding import DecodingOptions
from .prompts import Task, build, clean, parse_srt
from .segment import Segment, SegmentOptions, segment

WINDOW_SECONDS = 30.0  # Whisper's window: longer inputs are segmented
TOKENS_PER_SECOND = 12.0  # generous upper bound on text tokens per second of speech, per text part
MIN_NEW_TOKENS = 24


@dataclass
class SegmentResult:
    start: float  # seconds
    end: float
    transcript: str
    translation: str


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

    def to_dict(self) -> dict:
        return {"audio": self.audio, "src": self.src, "tgt": self.tgt, "task": self.task,
                "transcript": self.transcript, "translation": self.translation, "duration": round(self.duration, 3),
                "segments": [vars(s) for s in self.segments], "error": self.error}


@dataclass
class _Item:
    index: int  # which input
    seg: Segment
    samples: np.ndarray
    transcript: str = ""  # given transcript (SMT) for this item


def max_new_tokens(seconds: float, task: Task, cap: int) -> int:
    parts = 2 if task is Task.SRT else 1
    return int(min(cap, MIN_NEW_TOKENS + parts * TOKENS_PER_SECOND * seconds))


def joiner(lang: str | None) -> str:
    return "" if lang and languages.get(lang).bleu_tokenize == "char" else " "


class SpeechTranslator:
    """A SpeechLLM (or a baseline) behind one `translate()` call."""

    def __init__(self, model, name: str = "model"):
        self.model = model
        self.name = name

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | None = None, llm: str | None = None,
                        whisper: str | None = None) -> "SpeechTranslator":
        from .evaluate import baselines

        if str(model) in baselines.BASELINES:
            return cls(baselines.BASELINES[str(model)](whisper=whisper, llm=llm, device=device), str(model))
        from .model.speech_llm import SpeechLLM

        m = SpeechLLM.from_pretrained(model, device=device)
        m.eval()
        return cls(m, str(model))

    def translate(self, inputs: Sequence[AudioInput], src: str | None, tgt: str | None = None,
                  task: Task | str = Task.SRT, options: DecodingOptions = DecodingOptions(), batch_size: int = 8,
                  transcripts: Sequence[str] | None = None, segment_options: SegmentOptions = SegmentOptions(),
                  progress=None) -> list[TranslationResult]:
        """One result per input, in order. A bad input gets `error` set; the others are still translated."""
        task = Task(task)
        if batch_size < 1:
            raise LLMSRTError(f"batch size must be at least 1, got {batch_size} (--batch-size)")
        if src is not None and src != "auto":
            languages.get(src)
        if task is not Task.ASR:
            if tgt is None:
                raise LLMSRTError(f"task {task.value} needs a target language (--tgt)")
            languages.get(tgt)
        if task is Task.SMT and (transcripts is None or len(transcripts) != len(inputs)):
            raise LLMSRTError("task smt needs one transcript per input (--transcript)")
        results, items = [], []
        for i, x in enumerate(inputs):
            label = str(x) if isinstance(x, (str, Path)) else f"<array {i}>"
            result = TranslationResult(label, src, tgt if task is not Task.ASR else None, task.value)
            results.append(result)
            try:
                samples = load_audio(x, name=label)
            except LLMSRTError as e:
                result.error = str(e)
                continue
            result.duration = samples.size / SAMPLE_RATE
            segs = ([Segment(0.0, result.duration)] if result.duration <= WINDOW_SECONDS
                    else segment(samples, options=segment_options) or [Segment(0.0, min(result.duration, 1.0))])
            for s in segs:
                items.append(_Item(i, s, s.slice(samples), transcripts[i] if transcripts else ""))
        if src == "auto":
            self._detect_languages(results, items)
        # longest first, so batches hold similar lengths and the first batch shows the peak memory
        order = sorted(range(len(items)), key=lambda k: -items[k].samples.size)
        outputs: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            chunk = [items[k] for k in order[start:start + batch_size]]
            opts = replace(options, max_new_tokens=max_new_tokens(max(c.seg.duration for c in chunk), task,
                                                                  options.max_new_tokens))
            try:
                texts = self._run(chunk, results, task, opts)
            except Exception as e:  # one bad batch never loses the others
                message = str(e) if isinstance(e, LLMSRTError) else f"{type(e).__name__}: {e}".splitlines()[0]
                for c in chunk:
                    results[c.index].error = message
                continue
            for k, text in zip(order[start:start + batch_size], texts):
                outputs[k] = text
            if progress is not None:
                progress(len(chunk))
        for k, item in enumerate(items):
            r = results[item.index]
            if k not in outputs or r.error:
                continue
            transcript, translation = split_output(outputs[k], task, item.transcript)
            r.segments.append(SegmentResult(round(item.seg.start, 3), round(item.seg.end, 3), transcript, translation))
        for r in results:
            if r.error is None:
                r.transcript = joiner(r.src).join(s.transcript for s in r.segments if s.transcript)
                r.translation = joiner(r.tgt).join(s.translation for s in r.segments if s.translation)
        return results

    def _run(self, chunk: list[_Item], results: list[TranslationResult], task: Task,
             options: DecodingOptions) -> list[str]:
        srcs = [results[c.index].src for c in chunk]
        tgts = [results[c.index].tgt for c in chunk]
        if hasattr(self.model, "run_batch"):  # a baseline
            return self.model.run_batch([c.samples for c in chunk], srcs, tgts, task, options)
        prompts = [build(task, s, t, transcript=c.transcript)[0] for c, s, t in zip(chunk, srcs, tgts)]
        with torch.inference_mode():
            return self.model.generate({"audio": [c.samples for c in chunk], "prompts": prompts}, options)

    def _detect_languages(self, results: list[TranslationResult], items: list[_Item]) -> None:
        from .evaluate.baselines import detect_language

        first = {}
        for item in items:
            first.setdefault(item.index, item.samples)
        whisper = getattr(self.model, "config", None)
        folder = whisper.encoder if whisper is not None else getattr(self.model, "whisper_dir", None)
        for index, samples in first.items():
            results[index].src = detect_language(folder, samples)


def split_output(text: str, task: Task, given_transcript: str = "") -> tuple[str, str]:
    """Model output -> (transcript, translation) for `task`."""
    if task is Task.SRT:
        out = parse_srt(text)
        return out.transcript, out.translation
    if task is Task.ASR:
        return clean(text), ""
    return given_transcript.strip(), clean(text)


# ---- CLI: llm-srt translate ---------------------------------------------------------------------------------------
def add_model_arguments(parser) -> None:
    """The options that choose and run a model, shared by `translate` and `serve` (see translator_from_args)."""
    parser.add_argument("--model", required=True, help="model folder, or 'whisper' / 'cascade' (baselines)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--whisper", default=None, help="Whisper folder for the baselines (default: embedded)")
    parser.add_argument("--llm", default=None, help="LLM folder for the cascade (default: embedded)")
    parser.add_argument("--device", default=None)


def translator_from_args(args) -> SpeechTranslator:
    return SpeechTranslator.from_pretrained(args.model, device=args.device, llm=args.llm, whisper=args.whisper)


def add_arguments(parser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate, any length)")
    add_model_arguments(parser)
    parser.add_argument("--src", default=None, help="source language (ISO 639-3, e.g. eng), or 'auto'")
    parser.add_argument("--tgt", default=None, help="target language (ISO 639-3, e.g. deu)")
    parser.add_argument("--task", default="srt", choices=[t.value for t in Task if t is not Task.MT])
    parser.add_argument("--transcript", action="append", default=None,
                        help="the transcript of each input, in order (task smt); repeat per input")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-repeat-ngram", type=int, default=0, help="forbid repeated n-grams of this size")
    parser.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"])
    parser.add_argument("--subtitles", default="both", choices=list(subtitles.CUE_MODES),
                        help="what srt/vtt cues show")
    parser.add_argument("--out-dir", default=None, help="write one .srt/.vtt/.json per input here")


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
    translator = translator_from_args(args)
    options = DecodingOptions(beam_size=args.beam, max_new_tokens=args.max_new_tokens,
                              no_repeat_ngram_size=args.no_repeat_ngram)
    results = translator.translate(args.audio, args.src, args.tgt, task=args.task, options=options,
                                   batch_size=args.batch_size, transcripts=args.transcript)
    for r in results:
        if r.error:
            print(f"llm-srt translate: {r.error}", file=sys.stderr)
    if args.format == "json":
        text = json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2)
        if out_dir:
            (out_dir / "results.json").write_text(text + "\n")
        print(text)
    elif args.format in ("srt", "vtt"):
        render = subtitles.to_srt if args.format == "srt" else subtitles.to_vtt
        for r in results:
            if r.error:
                continue
            text = render(subtitles.segment_cues(r.segments, args.subtitles))
            if out_dir:
                (out_dir / f"{Path(r.audio).stem}.{args.format}").write_text(text)
            else:
                if len(results) > 1:
                    print(f"# {r.audio}")
                print(text)
    else:
        for r in results:
            if r.error:
                continue
            print(r.audio)
            if r.transcript or args.task in ("asr", "srt"):
                print(f"  transcript:  {r.transcript}")
            if args.task != "asr":
                print(f"  translation: {r.translation}")
    return 0 if any(r.error is None for r in results) else 1
