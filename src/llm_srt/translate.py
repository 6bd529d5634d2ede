"""`llm-srt translate`: run a system on audio files and print its outputs, or write one file per input.

    llm-srt translate talk.wav --model runs/embedded/srt/final --src eng --tgt deu --format srt --out-dir subs

Here: the command's arguments and the checks made before the model loads, each input's output as --format asks
(text, json, srt, vtt), what is written for an input that failed whole or in part, and the settings that decide an
output (recorded with each file, which --skip-existing compares). Where --out-dir's files go, the checks that keep
them from replacing other files, and their record are out_files.py's. Running the system (batches, segments,
results) is infer.py's, as are the options this command shares with `serve` (--model and its siblings,
--max-segment-seconds).
"""

import contextlib
import json
import logging
import os
import traceback
from pathlib import Path

from . import device as placement_of
from . import languages, subtitles
from .audio import WINDOW_SECONDS
from .errors import DeviceFailed, LLMSRTError, Terminated, open_regular, shown
from .infer import (MIN_LINE_WIDTH, TranslationResult, add_model_arguments, add_segment_argument, capped_note,
                    missing_cue_text, segment_options, translator_from_args, untranslated_note)
from .model.decoding import DecodingOptions, decoding_from_args
from .model.systems import AUTO_TASK, SYSTEMS, cannot_run, trained_task, trained_tasks
from .out_files import (INCOMPLETE, PARTIAL_JSON, check_not_inputs, check_not_others, check_results_kept,
                        files_fingerprint, incomplete, input_of, is_stale, record_key, record_written, recorded_places,
                        output_paths, write_whole, written_with)
from .prompts import Task
from .segment import SegmentOptions

SOME_FAILED = 3  # translate's exit code when some inputs failed, whole or in part (their audio decoded only in
#                  part, too), and others were translated or skipped (--skip-existing: their outputs there already)

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    """`llm-srt translate`'s options. Each that takes one value (the shared --model, --beam, --device ... too),
    given twice with two values, is refused in one line (`store_once`, which cli's parser applies), where argparse
    kept the last one unsaid (`--tgt deu --tgt fra` translated into fra alone); --transcript repeats, one per input."""
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate; up to 4 h each)")
    add_model_arguments(parser)
    parser.add_argument("--src", default=None, help="source language (ISO 639-3, e.g. eng), or 'auto'")
    parser.add_argument("--tgt", default=None, help="target language (ISO 639-3, e.g. deu)")
    parser.add_argument("--task", default=AUTO_TASK, choices=[AUTO_TASK, *(t.value for t in Task if t is not Task.MT)],
                        help="auto (default): what the model folder was trained for, from its train_config.json "
                             "(s2tt for a Baseline, asr for an ASR stage, asr+smt for an SMT stage, else srt; srt "
                             "for a folder without one and for whisper and cascade; mt takes smt only); srt: "
                             "transcript and translation in one pass; asr+smt: an SMT-stage model's own transcript, "
                             "then its SMT (two passes; the paper's w/o SRT ablation)")
    parser.add_argument("--transcript", action="append", default=None,
                        help="the transcript of each input, in order (task smt); repeat per input")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"])
    parser.add_argument("--subtitles", default="both", choices=list(subtitles.CUE_MODES),
                        help="what srt/vtt cues show")
    parser.add_argument("--line-width", type=int, default=subtitles.MAX_LINE_WIDTH, metavar="COLUMNS",
                        help="srt/vtt: lines of at most this many columns (a CJK character counts two), two lines a "
                             "cue; a segment that needs more becomes several cues (default %(default)s; 0: one "
                             "unwrapped cue a segment)")
    add_segment_argument(parser)
    parser.add_argument("--out-dir", default=None,
                        help="write one .txt/.srt/.vtt per input here, at the input's path relative to the inputs' "
                             "common folder (inputs that would share a file are refused); json: results.json")
    parser.add_argument("--skip-existing", action="store_true",
                        help="with --out-dir (text, srt, vtt): leave out the inputs whose output file is there "
                             "already (a run that goes on from a killed one; each file is written whole or not at all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --out-dir: replace an output file a run before wrote from another input of the "
                             "same name (day2/ZOOM0001.WAV after day1/ZOOM0001.WAV), or (json) a results.json or "
                             "results.partial.json holding inputs this run does not translate; without it, such a "
                             "run is refused before the model loads")


def main(args) -> int:
    import sys

    if "-" in args.audio:  # said once the model had loaded, as "-: no such file"
        raise LLMSRTError("-: reading audio from stdin is not supported; save it to a file first (a file named -: "
                          "give it as ./-)")
    if args.src is None:
        raise LLMSRTError("give the source language with --src (ISO 639-3, e.g. eng) or --src auto")
    if args.model == "mt" and args.task != Task.SMT.value:  # else the LLM loaded, then every input failed
        raise LLMSRTError(f"--model mt translates given transcripts (text MT), and --task {args.task} reads the audio; "
                          "give --task smt with one --transcript per input, or --model cascade for speech")
    if args.task == AUTO_TASK:  # read before the model loads, so the checks of the task below come first
        args.task = trained_task(args.model).value
        if args.task != Task.SRT.value:  # srt: as before `auto` was the default, nothing to say
            print(f"llm-srt translate: --task auto: {args.task}, what {shown(args.model)} was trained for (its "
                  "training record); give --task to run another", file=sys.stderr)
    elif (note := _task_not_trained(args.model, Task(args.task))) is not None:
        print(f"llm-srt translate: warning: {note}", file=sys.stderr)
    segments = segment_options(args.max_segment_seconds)
    if args.line_width < 0 or 0 < args.line_width < MIN_LINE_WIDTH:
        raise LLMSRTError(f"--line-width {args.line_width}: give 0 (one unwrapped cue a segment) or at least "
                          f"{MIN_LINE_WIDTH} columns")
    if args.batch_size < 1:  # else refused by translate(), once the model has loaded (minutes for a 7B model)
        raise LLMSRTError(f"--batch-size {args.batch_size}: give at least 1 (the segments the model runs at once)")
    if args.task == "smt" and args.max_segment_seconds != WINDOW_SECONDS:
        raise LLMSRTError("--max-segment-seconds: --task smt translates each input whole with its transcript; leave "
                          "it out, or use --task srt to have the speech cut")
    if missing_cue_text(args.task, args.format, args.subtitles):
        raise LLMSRTError(f"--task {args.task} writes no {args.subtitles}, so --subtitles {args.subtitles} would give "
                          f"{args.format} files without a cue; use --subtitles both, or --task srt for both texts")
    if args.out_dir == "":  # an unset $OUT in a script: else every output went to stdout, exit code 0
        raise LLMSRTError("--out-dir is empty; give a folder, or leave --out-dir out to print to standard output")
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LLMSRTError(f"--out-dir {out_dir}: cannot create the folder ({e.strerror}); choose another") \
                from None
    outputs = output_paths(args.audio, out_dir, FILE_SUFFIX[args.format]) if out_dir and args.format != "json" \
        else None
    if outputs:
        outputs = recorded_places(args.audio, outputs, out_dir)
    if out_dir and args.format == "json":
        check_not_inputs(args.audio, [out_dir / "results.json", out_dir / PARTIAL_JSON])
        if (out_dir / "results.json").is_dir():  # else found only once every input had run, and printed
            raise LLMSRTError(f"--out-dir: {shown(str(out_dir / 'results.json'))} is a folder, so results.json "
                              "cannot be written; move that folder away, or choose another --out-dir")
        if not args.overwrite:
            check_results_kept(args.audio, out_dir)
    options = decoding_from_args(args)
    if args.skip_existing and not outputs:
        raise LLMSRTError("--skip-existing needs --out-dir and --format text, srt or vtt (one file per input; "
                          "json writes one results.json at the end)")
    if args.overwrite and not out_dir:
        raise LLMSRTError("--overwrite needs --out-dir (it lets a run replace files there that an earlier run wrote "
                          "from other inputs)")
    if args.transcript is not None and args.task != Task.SMT.value:
        raise LLMSRTError(f"--transcript goes with --task smt (the model translates the given transcript), not "
                          f"--task {args.task}, which reads the audio; drop --transcript or give --task smt")
    _check_inputs(args)  # as translate() would, but before the model loads (minutes for a 7B model), not after
    if outputs and not args.overwrite:
        check_not_others(args.audio, outputs, out_dir)
    settings = _settings(args, options, segments)

    def source(k: int) -> dict:  # input k as its record names it: the audio file, and its transcript (task smt)
        return input_of(args.audio[k], args.transcript[k] if args.transcript else None)

    skipped = 0  # inputs left out by --skip-existing, their outputs there already: done, for the exit code
    if args.skip_existing:
        written = written_with(out_dir)

        def why(k: int) -> str | None:  # None: the file is this input's output with these settings
            entry = written.get(record_key(outputs[k], out_dir))
            if entry is None:
                return "with no record of their settings"
            before = entry["settings"]
            if before != settings:
                return "with other settings (" + "; ".join(f"{key}: {json.dumps(before.get(key))} -> {json.dumps(v)}"
                                                           for key, v in settings.items() if before.get(key) != v) + ")"
            if entry.get("input") not in (None, source(k)):  # a record older than inputs: taken
                return f"from another input ({shown(str(entry['input'].get('path')))}, or it changed since)"
            return None

        gone = {k for k, audio in enumerate(args.audio) if not os.path.isfile(audio)}  # fails alone, as it would
        other = [k for k, path in enumerate(outputs) if path.is_file() and k not in gone and why(k) is not None]
        todo = [k for k, path in enumerate(outputs) if not path.is_file() or k in other or k in gone]
        skipped = len(outputs) - len(todo)
        if skipped:
            print(f"llm-srt translate: {skipped} of {len(outputs)} inputs skipped: their outputs "
                  f"are in {shown(str(out_dir))} already (--skip-existing)", file=sys.stderr)
        if other:
            print(f"llm-srt translate: {len(other)} of {len(outputs)} inputs translated again: their files in "
                  f"{shown(str(out_dir))} were written {why(other[0])} (--skip-existing)", file=sys.stderr)
        if not todo:
            return 0
        args.audio, outputs = [args.audio[k] for k in todo], [outputs[k] for k in todo]
        args.transcript = args.transcript and [args.transcript[k] for k in todo]
    unread = [_unreadable(audio) for audio in args.audio]
    # none can be read (a typo, a shell pattern that matched nothing): each fails as translate() fails it, but before
    # the model loads (minutes for a 7B model), not after; where some can, the others fail alone as they run
    translator = None if all(unread) else translator_from_args(args)
    before = written_with(out_dir) if outputs else {}  # what made the files already there
    whole: set[int] = set()  # inputs that failed in part whose earlier whole output (the same job's) was kept
    lost: set[int] = set()  # inputs whose output file could not be written
    ready: dict[int, tuple[str, str | None]] = {}  # stdout: (name, output or None) of inputs done before earlier ones
    shown_upto = 0  # stdout: the inputs before this one are printed
    finished: dict[int, dict] = {}  # json: each input's result as it is done, for Ctrl-C to print those done
    translated: set[int] = set()  # inputs done with an output (whole or in part), for a run stopped by an error
    stopped: dict[int, TranslationResult] = {}  # inputs the run was stopped in: their segments done (on_stopped)

    def emit(k: int, r: TranslationResult) -> None:  # as each input is done: its lines on stderr, its output
        nonlocal shown_upto
        if r.kept or not r.error:
            translated.add(k)
        for note in (_heard_note(r, args), _note(r, args), _capped_note(r)):
            if note is not None:
                print(f"llm-srt translate: {note}", file=sys.stderr)
        if args.format == "json":  # one array of every input, printed at the end
            finished[k] = _json_entry(r, args.audio[k])
            return
        text = _render(r, args) if r.kept or not r.error else None
        if outputs:
            if text is None and r.error and outputs[k].is_file() and is_stale(
                    before.get(record_key(outputs[k], out_dir)), settings, source(k)):
                try:
                    outputs[k].unlink()
                    print(f"llm-srt translate: {shown(str(outputs[k]))}, an earlier run's output, removed: this run "
                          "translated that input again, from other audio or with other settings, and failed",
                          file=sys.stderr)
                except OSError as e:
                    print(f"llm-srt translate: {shown(str(outputs[k]))}, an earlier run's output of other audio or "
                          f"settings, is left in place: cannot remove it ({e.strerror or e})", file=sys.stderr)
            if text is not None and r.error:  # failed in part: its segments that did not fail in *.incomplete
                kept = _keep_part(r, outputs[k], text, before.get(record_key(outputs[k], out_dir)),
                                  {"settings": settings, "input": source(k)})
                if kept == "whole":
                    whole.add(k)
                elif kept == "lost":
                    lost.add(k)
            elif text is not None:
                try:
                    write_whole(outputs[k], text)
                    record_written(out_dir, outputs[k], settings, source(k))
                    if incomplete(outputs[k]).is_file():  # an earlier run's output of it in part
                        incomplete(outputs[k]).unlink()
                except (LLMSRTError, OSError) as e:  # this input's output is lost, the others' are still written
                    lost.add(k)
                    print(f"llm-srt translate: {e}", file=sys.stderr)
            return
        ready[k] = (r.audio, text)
        while shown_upto in ready:  # stdout keeps the inputs' order
            name, shown_text = ready.pop(shown_upto)
            shown_upto += 1
            if shown_text is not None:
                if len(args.audio) > 1 and args.format != "text":
                    print(f"# {name}")
                print(shown_text, end="" if args.format == "text" else "\n", flush=True)

    try:
        if translator is None:
            results = [_failed_whole(args, audio, error) for audio, error in zip(args.audio, unread)]
            for k, r in enumerate(results):
                emit(k, r)
        else:
            results = translator.translate(args.audio, args.src, args.tgt, task=args.task, options=options,
                                           batch_size=args.batch_size, transcripts=args.transcript, on_result=emit,
                                           segment_options=segments, on_stopped=stopped.__setitem__)
    except (KeyboardInterrupt, Terminated, DeviceFailed) as e:  # Ctrl-C, SIGTERM, or the GPU failing for good
        # (infer._run_chunk: every later batch would fail too): the inputs done are printed (before, lost), and
        # those stopped part way kept as failed in part (their entries; their *.incomplete files; on stdout, their
        # segments done, with the inputs held back behind them)
        if args.format == "json":  # the array of those done, in input order; results.json too, unless none was
            # (an earlier run's is not replaced by [])
            finished.update({k: _json_entry(r, args.audio[k]) for k, r in stopped.items()})
            translated.update(k for k, r in stopped.items() if r.kept)  # kept in part: exit 3, as srt's
            part = f" ({len(stopped)} of them in part: their \"error\" says so)" if stopped else ""
            _print_json([finished[k] for k in sorted(finished)], out_dir if finished else None,
                        f"the {len(finished)} of {len(args.audio)} inputs done before the run was stopped{part}")
        elif outputs:
            for k, r in sorted(stopped.items()):
                if r.kept and _keep_part(r, outputs[k], _render(r, args), before.get(record_key(outputs[k], out_dir)),
                                         {"settings": settings, "input": source(k)}, stopped=True) == "written":
                    translated.add(k)
        else:
            for k, r in sorted(stopped.items()):
                if r.kept:
                    ready[k] = (r.audio, _render(r, args))
                    translated.add(k)
                    print(f"llm-srt translate: {r.audio}: {r.error}; the {len(r.kept)} translated are printed",
                          file=sys.stderr)
        for k in sorted(ready):  # the inputs done after one still running, which stdout's order held back, each
            name, shown_text = ready[k]  # under its name (one input alone: none, so `> talk.srt` is an SRT file)
            if shown_text is not None:
                if len(args.audio) > 1:
                    print(f"# {name}")
                print(shown_text, end="" if args.format == "text" else "\n", flush=True)
        if not isinstance(e, DeviceFailed):
            raise
        if getattr(args, "debug", False):  # the traceback, and the exit code as without --debug
            traceback.print_exc()
        print(f"llm-srt translate: error: {e}", file=sys.stderr)
        return SOME_FAILED if translated - lost or skipped else 1  # not 2, which says no input ran (a refusal)
    unwritten = args.format == "json" and not _print_json([_json_entry(r, a) for r, a in zip(results, args.audio)],
                                                          out_dir)
    failed = sum(k in lost or (r.error is not None and not r.kept) for k, r in enumerate(results))
    partly = sum(k not in lost | whole and r.error is not None and bool(r.kept) for k, r in enumerate(results))
    if failed and len(results) > 1:
        done = f"the other {len(results) - failed} translated" if failed < len(results) else "none translated"
        if partly:  # the line after counts them as failed in part
            done += f" ({partly} of them in part)"
        print(f"llm-srt translate: {failed} of {len(results)} inputs failed (named above); {done}", file=sys.stderr)
    if partly and len(results) > 1:
        where = (f"the segments that did not fail are in their *{INCOMPLETE} files in {shown(str(out_dir))}, and "
                 "--skip-existing translates them again" if outputs else
                 "their outputs hold the segments that did not fail")
        print(f"llm-srt translate: {partly} of {len(results)} inputs failed in part (named above); {where}",
              file=sys.stderr)
    # audio that decoded only in part (damaged, cut short; `warning`): translated as far as it goes, in an output
    # written as finished (not *.incomplete: a run again decodes the same; the file fixed, its record no longer
    # matches and --skip-existing translates it again), but counted, as an input failed in part is
    cut = sum(k not in lost and r.warning is not None and (bool(r.kept) or not r.error) for k, r in enumerate(results))
    if cut and len(results) > 1:
        print(f"llm-srt translate: {cut} of {len(results)} inputs decoded only in part (named above: damaged or cut "
              "short); their outputs hold the part that decoded", file=sys.stderr)
    if failed == len(results) and not skipped:  # 1: no input has an output (those skipped have theirs)
        return 1
    return SOME_FAILED if failed or partly or cut or unwritten else 0  # results.json unwritten: not 2, a refusal


def _keep_part(r: TranslationResult, output: Path, text: str, entry: dict | None, job: dict,
               stopped: bool = False) -> str:
    """Write `text`, an input that failed in part or that the run was `stopped` in (its segments done, `infer`
    on_stopped), to `output`'s *.incomplete file, whose name --skip-existing does not take for a finished input (a
    later run translates it again whole). `output` itself, an earlier run's output of this input from other audio or
    settings (its record `entry` is not this `job`'s {"settings", "input"}: `is_stale`), is removed; a file no record
    says is one is left. Not where `output` is this job's whole output from a run before: kept. Each said on stderr.
    "written", "whole" (the earlier whole output kept) or "lost" (cannot be written: said)."""
    import sys

    if output.is_file() and entry == job:
        print(f"llm-srt translate: {shown(str(output))}, an earlier run's whole output of that input with these "
              f"settings, kept: {r.error if stopped else 'this run failed on part of it'}", file=sys.stderr)
        return "whole"
    try:
        write_whole(incomplete(output), text)
    except (LLMSRTError, OSError) as e:  # this input's output is lost, the others' are still written
        print(f"llm-srt translate: {e}", file=sys.stderr)
        return "lost"
    if stopped:  # (an input failed in part has its error said already, its segments' count in the totals)
        print(f"llm-srt translate: {r.audio}: {r.error}; the {len(r.kept)} translated are in "
              f"{shown(str(incomplete(output)))} (--skip-existing translates it again whole)", file=sys.stderr)
    how = "was stopped in it" if stopped else "failed in part"
    if output.is_file() and is_stale(entry, job["settings"], job["input"]):
        try:
            output.unlink()
            print(f"llm-srt translate: {shown(str(output))}, an earlier run's output of other audio or settings, "
                  f"removed: this run translated that input again and {how}", file=sys.stderr)
        except OSError as e:
            print(f"llm-srt translate: {shown(str(output))}, an earlier run's output of other audio or settings, is "
                  f"left in place: cannot remove it ({e.strerror or e})", file=sys.stderr)
    elif output.is_file():
        print(f"llm-srt translate: {shown(str(output))} is left in place: no run's record says it is an earlier "
              "output of this input from other audio or settings (your own file, another input's, or a run killed "
              f"before its record); this run's segments {'done' if stopped else 'that did not fail'} are beside it",
              file=sys.stderr)
    return "written"


def _print_json(entries: list[dict], out_dir: Path | None, partial: str | None = None) -> bool:
    """Print `entries` as one JSON array, then write them to results.json in `out_dir` (if given) whole or not at
    all; False, said on stderr, when it cannot be written. `partial`: what they are, when not every input: then
    written to PARTIAL_JSON instead (said on stderr), so an earlier whole run's results.json is kept; a whole run
    removes an earlier stopped run's PARTIAL_JSON. The file is written whatever became of standard output: its
    reader gone (`| head`), a full disk under `>` (the error then goes on up); it was not, every result lost."""
    text = json.dumps(entries, ensure_ascii=False, indent=2)
    try:
        print(text, flush=True)  # first: a results.json that cannot be written must not lose every result
    finally:
        written = _save_json(text, out_dir, partial)
    return written


def _save_json(text: str, out_dir: Path | None, partial: str | None) -> bool:
    """`_print_json`'s file: `text` written to results.json (PARTIAL_JSON with `partial`) in `out_dir`, if given."""
    import sys

    if out_dir is None:
        return True
    file = out_dir / (PARTIAL_JSON if partial else "results.json")
    try:
        write_whole(file, text + "\n")
    except LLMSRTError as e:
        print(f"llm-srt translate: {e}", file=sys.stderr)
        return False
    if partial:
        print(f"llm-srt translate: {shown(str(file))} holds {partial}", file=sys.stderr)
    else:
        with contextlib.suppress(OSError):  # (not this run's: a stopped run's)
            (out_dir / PARTIAL_JSON).unlink(missing_ok=True)
    return True


def stdout_utf8(args) -> bool:
    """Whether this run's standard output is written in UTF-8 whatever the locale's encoding: --format srt, vtt and
    json, the formats' own (WebVTT's and JSON's by their specifications; players read SRT as UTF-8): `> talk.srt`
    under a Latin-1 locale stopped at the first Chinese cue in a UnicodeEncodeError traceback (json: every result
    lost, results.json unwritten). --format text keeps the locale's (a terminal's), what it cannot write escaped.
    cli sets it for its run and sets it back (`cli.writable_stdout`); main alone leaves sys.stdout as it is."""
    return args.format != "text"


def _unreadable(audio: str) -> str | None:
    """An input's line where it cannot be opened as a regular file (missing, a folder, unreadable), as translate()
    gives it; None where it can (its audio is not read here)."""
    try:
        os.close(open_regular(audio, audio))
    except LLMSRTError as e:
        return str(e)
    return None


def _failed_whole(args, audio: str, error: str) -> TranslationResult:
    """The result translate() gives an input that failed before any of it ran."""
    return TranslationResult(shown(audio), None if args.src == "auto" else args.src,
                             args.tgt if Task(args.task).needs_translation else None, args.task, error=error)


def _check_inputs(args) -> None:
    """The checks of translate()'s arguments a typo fails, with the option named: --src and --tgt codes, a target
    for a task that translates, one the system can translate into (`cannot_run`: whisper's English alone), one
    --transcript per input (task smt)."""
    for option, code in (("--src", args.src), ("--tgt", args.tgt)):
        if code is None or option == "--src" and code == "auto":  # auto: language ID finds the source
            continue
        try:
            languages.get(code)
        except LLMSRTError as e:
            raise LLMSRTError(f"{option}: {e}") from None
    if args.tgt is None and Task(args.task).needs_translation:
        raise LLMSRTError(f"task {args.task} needs a target language (--tgt)")
    if (why := cannot_run(args.model, None if args.src == "auto" else args.src, args.tgt, Task(args.task))):
        raise LLMSRTError(f"--tgt {args.tgt}: {why} (or --task asr for the transcript alone)")
    if args.task == Task.SMT.value and args.transcript is None:
        raise LLMSRTError("task smt needs one transcript per input (--transcript)")
    if args.transcript is not None and len(args.transcript) != len(args.audio):
        raise LLMSRTError(f"--transcript: {len(args.transcript)} transcripts for {len(args.audio)} inputs; give one "
                          "per input")


def _note(r: TranslationResult, args) -> str | None:
    """One input's line for stderr, if any: its error (naming it), that it holds no speech, or that it got no cue."""
    if r.error:
        return r.error if r.error.startswith(f"{r.audio}: ") else f"{r.audio}: {r.error}"
    if r.no_speech:
        return f"{r.audio}: no speech found (silence or steady noise); nothing to translate"
    if args.format in ("srt", "vtt") and not subtitles.segment_cues(r.segments, args.subtitles):
        return (f"{r.audio}: no cue to write: the model gave its {len(r.segments)} segments no text to show "
                f"(--subtitles {args.subtitles})")
    if (note := untranslated_note(r)) is not None:
        return f"{r.audio}: {note}"
    return None


def _heard_note(r: TranslationResult, args) -> str | None:
    """With --src auto, the language that language ID heard in an input (else said only in --format json: a German clip
    Whisper heard as English was "translated" into English without a word)."""
    return f"{r.audio}: source language heard as {r.src} (--src auto)" if args.src == "auto" and r.src else None


DIRECT_OR_SRT = (Task.S2TT, Task.SRT)  # one prompt ("translate into X"): a model trained on one answers it as such


def _task_not_trained(model: str, told: Task) -> str | None:
    """A warning where `told` is s2tt and the folder trained srt but not s2tt, or the reverse (the one prompt of the
    two, answered as its training taught: German came back for --tgt fra); None where it trained `told`, has no
    record, or a record that cannot be read (the task given explicitly is run as asked)."""
    try:
        trained = trained_tasks(model)
    except LLMSRTError:
        return None
    if told not in DIRECT_OR_SRT or told in trained or not set(trained) & set(DIRECT_OR_SRT):
        return None
    other = next(t for t in trained if t in DIRECT_OR_SRT)
    return (f"--task {told.value}, but {shown(model)} was trained for {other.value}, not {told.value} (its training "
            f"record): its answers to the {told.value} prompt may be in the wrong language or form; leave --task out "
            f"to run what it was trained for")


def _capped_note(r: TranslationResult) -> str | None:
    """One input's line for stderr on its segments cut at their token cap, if any (beside `_note`'s)."""
    return f"{r.audio}: {note}" if (note := capped_note(r)) is not None else None


FILE_SUFFIX = {"text": ".txt", "srt": ".srt", "vtt": ".vtt"}  # --format -> the extension of each input's file


def _render(r: TranslationResult, args) -> str:
    """One input's output as --format asks (text, srt or vtt)."""
    if args.format in ("srt", "vtt"):
        render = subtitles.to_srt if args.format == "srt" else subtitles.to_vtt
        return render(subtitles.segment_cues(r.segments, args.subtitles, args.line_width))
    lines = [r.audio]  # each text on its one line (a line break in a model's text left the rest unindented)
    if r.transcript or Task(args.task).writes_transcript:
        lines.append(f"  transcript:  {subtitles.one_line(r.transcript)}")
    if args.task != "asr":
        lines.append(f"  translation: {subtitles.one_line(r.translation)}")
    return "\n".join(lines) + "\n"


def _json_entry(r: TranslationResult, given: str) -> dict:
    """An input's result in --format json: `to_dict`, and "path", the input's absolute path, links resolved ("audio"
    is the path as given, relative to the folder the command ran in), by which a later run's check_results_kept
    knows it; shown (`errors.shown`) as "audio" is, a name that is not UTF-8 escaped."""
    return {**r.to_dict(), "path": shown(os.path.realpath(given))}


def _settings(args, options: DecodingOptions, segments: SegmentOptions) -> dict:
    """What decides the files a translate run writes (not how fast: --batch-size, --compile, the device; but the
    dtype, as resolved: `--dtype auto` is bfloat16 on one machine and float32 on another, and bfloat16 changes
    outputs)."""
    model = Path(args.model)
    dtype = placement_of.resolve(args.device, args.dtype).dtype_name
    folders = {k: Path(v) for k in ("whisper", "llm", "encoder") if (v := getattr(args, k, None))}
    return {"model": str(model.resolve()) if model.exists() else args.model, "src": args.src, "tgt": args.tgt,
            "dtype": dtype,
            "task": args.task, "format": args.format, "subtitles": args.subtitles, "line_width": args.line_width,
            "models": {k: str(v.resolve()) for k, v in folders.items()},
            "files": {k: files_fingerprint(v) for k, v in {"model": model, **folders}.items()
                      if v.exists() and not (k == "model" and args.model in SYSTEMS)},  # a baseline's name
            "decoding": {k: v for k, v in vars(options).items() if k != "compile"}, "segments": vars(segments)}


