"""The one console script, `llm-srt VERB ...`. Each verb lives in its own module (imported only when used),
which provides `add_arguments(parser)` and `main(args) -> int`, and may provide `stdout_utf8(args) -> bool`: whether
the run's standard output is written in UTF-8 whatever the locale's (translate's srt, vtt and json)."""

import argparse
import codecs
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from . import paths, ranks
from .arguments import store_once
from .errors import TERMINATED, LLMSRTError, Terminated

# verb -> (module, one-line help). tests/test_cli.py keeps this table and the parser in sync.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("llm_srt.demo", "the main job: train and evaluate LLM-SRT end to end on the embedded default"),
    "setup": ("llm_srt.embedded", "convert the embedded default models (Whisper base, Gemma-3-270M) once"),
    "convert": ("llm_srt.model.convert", "convert models: whisper-ct2 | gguf | slam -> our folders"),
    "prepare": ("llm_srt.data.prepare", "build manifests: fleurs | covost2 | commonvoice | mini"),
    "train": ("llm_srt.train.recipe", "train one stage from a YAML config (key=value overrides)"),
    "curriculum": ("llm_srt.train.curriculum", "run ASR -> SMT -> SRT, each stage from the last (resumable)"),
    "translate": ("llm_srt.translate", "translate / transcribe audio files (srt, s2tt, asr, smt)"),
    "evaluate": ("llm_srt.evaluate.run", "run a model over a test manifest: BLEU matrix, WER/CER, report"),
    "serve": ("llm_srt.serve.app", "serve a model over HTTP: OpenAI-style audio API, web page, dynamic batching"),
    "bench": ("llm_srt.bench", "speed benchmark (paper Table 7): Q-Former vs 750-token peer; --paper-shape on a GPU"),
    "score": ("llm_srt.evaluate.score", "corpus BLEU / chrF / WER / CER of a hypothesis file"),
}


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad option is one line, as every verb's refusals are: argparse printed its whole
    usage first (10-14 lines for translate), burying the line that says what was wrong. Every subparser is one too
    (argparse makes them of their parent's class). --help is argparse's own. Every option that takes one value is a
    `StoreOnce` (`store_once`), on every verb's and sub-verb's parser alike: given twice with two values, refused in
    one line, where argparse kept the last one unsaid (`serve --port 8000 --port 8001`); append and flags repeat."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        store_once(self)  # before any option is added: a verb's add_arguments, a sub-verb's parser (this class too)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help for the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llm-srt", description="Many-to-many speech-to-text translation with speech LLMs (LLM-SRT).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily (see main) so `llm-srt --help` imports no heavy library.
    return parser


# what a run keeps when it stops before its end, by verb, and what to do: because another rank has gone
# (`ranks.peer_gone`), by Ctrl-C, or by SIGTERM (torchrun's to the ranks left when one dies, SLURM's preemption;
# evaluate has no line of its own on it). Training's, and evaluate's once its journals are open, say what the stop
# kept (`stopped_advice`, TRAINING; evaluate's the rows: `_kept_rows_advice`); this, before then
ON_STOPPED = {
    "evaluate": "the rows decoded so far are kept: run the same command again to go on from them",
}
BROKEN_PIPE = 141  # the exit code when stdout's reader has gone: a shell's for a process SIGPIPE ended (128 + 13)
PROGRESS_LOG_INTERVAL_S = 30  # progress-bar updates at most this often when stderr is a file or a pipe
TRAINING = {"train": ("its", "the run"), "curriculum": ("the stage's", "the stage")}  # whose checkpoints, what restarts


def stopped_advice(verb: str, error: BaseException) -> str:
    """ON_STOPPED's advice after Ctrl-C, SIGTERM or another rank gone, where training's is what the stop kept
    (`train.signals.Kept`, on the exception): "the stage's last checkpoint" was claimed after a second Ctrl-C had
    stopped the stage before any was saved, and after a dead peer whatever the run had saved, and the same command
    started it again from step 0. Without it (a stop before the recipe knew where the run starts), the advice says
    where the rerun starts either way. A curriculum's names the stage that stopped and those finished before it
    (`error.curriculum_stage`: "the stage's" was any of them)."""
    if verb == "evaluate" and (kept := getattr(error, "kept", None)) is not None:
        return _kept_rows_advice(kept)
    if verb not in TRAINING:
        return f"; {ON_STOPPED[verb]}" if verb in ON_STOPPED else ""
    whose, what = TRAINING[verb]
    finished = ""
    if verb == "curriculum" and (at := getattr(error, "curriculum_stage", None)) is not None:
        name, done = at
        whose, what = f"stage {name}'s", f"stage {name}"
        if done:
            many = len(done) > 1
            finished = f"; stage{'s' if many else ''} {', '.join(done)} {'are' if many else 'is'} finished (the " \
                       f"rerun skips {'them' if many else 'it'})"
    return _kept_advice(getattr(error, "kept", None), whose, what) + finished


def out_of_memory_line(error: BaseException) -> str | None:
    """One line for running out of memory where no verb said what it was doing (loading a model): what ran out
    (`device.out_of_memory_reason`), where in llm-srt (the last of its frames: the loader), what to do; None for any
    other error."""
    from . import device  # (torch: the verb has imported it already)

    if not device.is_out_of_memory(error):
        return None
    package = Path(__file__).resolve().parent
    ours = [f for f in traceback.extract_tb(error.__traceback__) if package in Path(f.filename).resolve().parents]
    at = (f" in {Path(ours[-1].filename).resolve().relative_to(package.parent)}:{ours[-1].lineno} ({ours[-1].name})"
          if ours else "")
    return f"out of memory{at}: {device.out_of_memory_reason(error)}; use {device.OUT_OF_MEMORY_ADVICE}"


def _kept_rows_advice(kept) -> str:
    """What an evaluation stopped with `kept` (`evaluate.journal.Kept`, on the error) keeps: how many decoded rows,
    where ("the rows decoded so far are kept" was said where a stop within a group of rows had kept none)."""
    return f"; {kept.said()}: {kept.again()}"  # (the words a journal's failed write uses too)


def _kept_advice(kept, whose: str, what: str) -> str:
    """What a training run stopped with `kept` (None: not known) keeps, and where the same command goes on from."""
    either = f"resume from {whose} last checkpoint, if it saved one (else {what} starts again from step 0)"
    if kept is None:  # (not imported: train.signals imports tqdm, and --help imports nothing)
        return f"; run the same command again to {either}"
    if kept.saved:
        return f"; the training state is {whose} checkpoint saved at step {kept.step}: run the same command again " \
               "to resume from it"
    if kept.step is None:
        return f"; the step in progress was not saved: run the same command again to {either}"
    if kept.newest is not None:
        return f"; step {kept.step} was not saved: run the same command again to resume from {whose} last " \
               f"checkpoint, {kept.newest}"
    if not kept.step:  # (stopped before its first step ended: another rank gone, a signal while data loads)
        return f"; no checkpoint was saved: run the same command again and {what} starts again from step 0"
    return f"; step {kept.step} was not saved, nor any step before it: run the same command again and {what} " \
           "starts again from step 0"


def quiet_progress_when_logged() -> None:
    """Progress bars redraw ~10 times a second; into a log file (nohup, CI, `make demo > log`) that is thousands
    of lines of carriage returns, so there they update every PROGRESS_LOG_INTERVAL_S (tqdm reads TQDM_MININTERVAL)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_LOG_INTERVAL_S))


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within it, a SIGTERM raises `Terminated` in the main thread. Its default action ended the process on the
    spot, running no clean-up: torchrun sends it to the ranks left when one fails (SLURM, `docker stop` and
    `timeout` too), and each left its half-written `.NAME.XXXX.tmp` files or a model-sized `NAME.tmp-PID` folder.
    A second SIGTERM ends the process at once (clean-ups that hang), as does one in a forked child (a DataLoader
    worker inherits the handler: it must die as before, not unwind the parent's stack). Python runs a handler
    between bytecodes only: a process blocked inside one C call (a collective waiting on a rank that died) acts on
    either SIGTERM once that call returns, or dies by torchrun's SIGKILL (30 s later by default), where the default
    action ended it at once. Where the caller is not the main thread (no handler can be set there), nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def stop(signum, _frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != owner:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        # a caller that runs main in-process keeps its own (None: one set from C, which cannot be set back)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _ending_line(verb: str, stop: Terminated) -> str | None:
    """The line of the error the run was already ending on when the SIGTERM came (in its clean-up: torchrun's to the
    rank that met a dead peer first, during `device.release`), as without the signal: it said "stopped by SIGTERM ...
    if it saved one", the peer and the checkpoint kept unsaid; None where it ended on none (the exit status is the
    signal's either way). The error is the nearest one being handled as the signal came (`__context__`)."""
    error = stop.__context__
    while error is not None and not isinstance(error, LLMSRTError) and (
            not isinstance(error, RuntimeError) or ranks.peer_gone(error) is None):
        error = error.__context__
    if error is None:
        return None
    if not hasattr(error, "curriculum_stage") and hasattr(stop, "curriculum_stage"):  # (set on the signal's)
        error.curriculum_stage = stop.curriculum_stage
    if isinstance(error, LLMSRTError):
        return f"error: {error}"
    return f"error: {_peer_gone_line(verb, error, ranks.peer_gone(error))}"


def _peer_gone_line(verb: str, error: BaseException, gone: str) -> str:
    """A dead peer's line (`ranks.peer_gone`'s words), with what was kept or the same command's advice."""
    return f"{gone}{stopped_advice(verb, error) or '; run the same command again'}"


def main(argv: list[str] | None = None) -> int:
    with stop_on_sigterm():
        return _main(argv)


def _with_sub_verb(parser: argparse.ArgumentParser, rest: list[str]) -> argparse.Namespace:
    """A verb with sub-verbs (`prepare mini`, `convert gguf`): its arguments, the sub-verb's own parsed with options
    and positionals in any order, as a verb without sub-verbs takes them (`prepare check a.jsonl --no-check-audio
    b.jsonl` was refused), and an unknown option refused by the sub-verb's own parser, whose --help lists the
    options (argparse handed it up, so the error named the verb's)."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    own_options = {s for a in parser._actions for s in a.option_strings}  # the verb's own: -h alone
    at = next((k for k, a in enumerate(rest) if sub is not None and a in sub.choices), None)
    if at and not own_options.intersection(rest[:at]):
        # the sub-verb's options, given before it: argparse took the first value among them for the sub-verb
        # (`prepare --out x fleurs`: "invalid choice: 'x'", as if fleurs were not given)
        parser.error(f"unrecognized arguments: {' '.join(rest[:at])}; give a sub-verb's options after it: "
                     f"{parser.prog} {rest[at]} {' '.join(rest[:at])} ...")
    args, unknown = parser.parse_known_args(rest)
    chosen = getattr(args, sub.dest, None) if sub is not None else None
    if chosen not in (sub.choices if sub is not None else ()):
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args
    at = rest.index(chosen)
    sub_parser = sub.choices[chosen]
    if any(isinstance(a, argparse._SubParsersAction) for a in sub_parser._actions):
        own = _with_sub_verb(sub_parser, rest[at + 1:])
    else:
        own = parse_intermixed(sub_parser, rest[at + 1:])
    for name, value in vars(own).items():
        setattr(args, name, value)
    return args


def parse_intermixed(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """`parser.parse_intermixed_args(args)`, but `--` ends the options as it does for parse_args, so a file whose
    name begins with "-" can be given (`translate --model m -- -take1.wav`): Python 3.11's intermixed parse lost a
    `--` that no positional came before, read the names after it as options, and refused them ("the following
    arguments are required: audio"). With only options before `--`, the plain parse reads it right."""
    if "--" in args and not _positionals_in(parser, args[:args.index("--")]):
        return parser.parse_args(args)
    return parser.parse_intermixed_args(args)


def _positionals_in(parser: argparse.ArgumentParser, head: list[str]) -> bool:
    """Whether `head` holds a positional, not only options and their values (as the first pass of
    parse_intermixed_args sees it: with the positionals set aside, what is left over; an error there is the one
    that parse would give)."""
    positionals = [a for a in parser._actions if not a.option_strings]
    saved = [(a, a.nargs, a.default) for a in positionals]
    usage = parser.usage
    try:
        parser.usage = parser.format_usage().removeprefix("usage: ").rstrip("\n")  # --help's, as before
        for a in positionals:
            a.nargs = a.default = argparse.SUPPRESS
        left = parser.parse_known_args(head)[1]
        return any(parser._parse_optional(a) is None for a in left)  # (an unknown option: refused either way)
    finally:
        parser.usage = usage
        for a, nargs, default in saved:
            a.nargs, a.default = nargs, default


def _not_own(parser: argparse.ArgumentParser, head: list[str]) -> list[str]:
    """What in `head`, the arguments before the verb, is not one of llm-srt's own options (--debug, --help, as
    argparse reads them: abbreviated too): a verb's options (`--json`, `--beam=5`, `--beam 5`) and their values, in
    order; none where `head` asks for --help (argparse's own, shown as before)."""
    probe = Parser(prog=parser.prog, add_help=False)
    for action in parser._actions:
        if action.option_strings:  # (flags alone: llm-srt's own options take no value)
            probe.add_argument(*action.option_strings, dest=action.dest, action="store_true")
    known, unknown = probe.parse_known_args(head)
    return [] if getattr(known, "help", False) else unknown


def _without(items: list[str], taken: list[str]) -> list[str]:
    """`items` less `taken`, a sub-sequence of them, in order."""
    left = list(taken)
    kept = []
    for item in items:
        if left and item == left[0]:
            left.pop(0)
        else:
            kept.append(item)
    return kept


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    paths.default_offline()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # our own progress bars and messages only
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    quiet_progress_when_logged()
    # peft reads transformers' deprecated `is_gradient_checkpointing` on every LoRA model: noise for our users
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    parser = build_parser()
    debug = "--debug" in argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    later = next((k for k, a in enumerate(argv) if a in VERBS), None)
    if later and argv[0].startswith("-") and (foreign := _not_own(parser, argv[:later])):
        # a verb's options before the verb: argparse took a value for the verb (`llm-srt --device cpu translate
        # ...`: "invalid choice: 'cpu'", as if translate were not given) or named them without saying where they go
        kept = _without(argv[:later], foreign)
        parser.error(f"unrecognized arguments: {' '.join(foreign)}; give a verb's options after it: "
                     f"llm-srt {' '.join([*kept, argv[later], *foreign])} ...")
    if verb in VERBS:
        # the options before the verb are llm-srt's own (--debug, --help): anything else there is an error, not
        # ignored
        head = parser.parse_args(argv[:argv.index(verb)])
        debug = head.debug or debug
        # Rebuild the chosen verb's sub-parser with its real arguments.
        try:
            module = importlib.import_module(VERBS[verb][0])  # torch, transformers: seconds
        except KeyboardInterrupt:  # Ctrl-C as it starts: the same line as once it runs, not an import traceback
            print(f"llm-srt {verb}: interrupted", file=sys.stderr)
            return 130
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        module.add_arguments(sub.choices[verb])
        # parse the verb's own arguments with options and positionals in any order (key=value lists)
        rest = [a for a in argv[argv.index(verb) + 1:] if a != "--debug"]  # --debug may follow the verb too
        verb_parser = sub.choices[verb]
        has_sub_verbs = any(isinstance(a, argparse._SubParsersAction) for a in verb_parser._actions)
        args = _with_sub_verb(verb_parser, rest) if has_sub_verbs else parse_intermixed(verb_parser, rest)
        args.verb, args.debug = verb, debug
    else:
        args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    stdout = sys.stdout
    utf8 = getattr(module, "stdout_utf8", None)
    found = writable_stdout(stdout, utf8 is not None and utf8(args))
    sys.stdout = watched = WatchedStdout(stdout) if stdout is not None else None
    shown = warnings.showwarning
    warnings.showwarning = one_line_warnings(verb, shown)
    try:
        code = int(module.main(args) or 0)
        if sys.stdout is not None:  # what is left in its buffer: a full disk's error here, not at exit (rc 120)
            sys.stdout.flush()
        return code
    except LLMSRTError as e:
        if debug:  # the traceback, and the exit code as without --debug (a script's check must not change)
            traceback.print_exc()
        print(f"llm-srt {verb}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:  # a collective's, where another rank has gone (killed, out of memory,
        #   its node lost): one line, as when the launcher is gone (ranks.stop_with_launcher); running out of memory
        #   where no verb said what it was doing (loading a model): one line too; any other keeps its traceback
        gone = ranks.peer_gone(e) if isinstance(e, RuntimeError) else None
        memory = out_of_memory_line(e) if gone is None else None
        if gone is None and memory is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"llm-srt {verb}: error: {memory or _peer_gone_line(verb, e, gone)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:  # training saved its step as on SIGTERM (train.signals): the same advice
        print(f"llm-srt {verb}: interrupted{stopped_advice(verb, e)}", file=sys.stderr)
        return 130
    except Terminated as e:  # its clean-ups have run
        ending = _ending_line(verb, e)
        if debug and ending is not None:  # the error's traceback, as without the signal
            traceback.print_exc()
        print(f"llm-srt {verb}: {ending or 'stopped by SIGTERM' + stopped_advice(verb, e)}", file=sys.stderr)
        return TERMINATED
    except BrokenPipeError:  # stdout's reader has gone (`llm-srt translate ... | head -1`): no traceback
        if not _stdout_broken():  # another pipe (a subprocess's, a socket): a real error, shown
            raise
        if debug:
            traceback.print_exc()
        _stdout_to_devnull(stdout)
        return BROKEN_PIPE
    except OSError as e:  # stdout written to a full disk, over a quota, or a failing one (`llm-srt score > o.txt`)
        if not getattr(e, STDOUT_FAILED, False) or e.errno not in paths.WRITE_ERRNOS | {errno.EIO}:
            raise
        if debug:
            traceback.print_exc()
        hint = f"{paths.WRITE_HINTS[e.errno]} or " if e.errno in paths.WRITE_HINTS else ""
        print(f"llm-srt {verb}: error: standard output: {e.strerror or e}; {hint}redirect it elsewhere",
              file=sys.stderr)
        _stdout_to_devnull(stdout)
        return 1
    finally:
        if sys.stdout is watched:
            sys.stdout = stdout
        if found is not None:  # (a caller that runs main in-process keeps its stream as it was)
            with contextlib.suppress(AttributeError, LookupError, ValueError, OSError):
                stdout.reconfigure(encoding=found[0], errors=found[1])
        if warnings.showwarning is not shown:
            warnings.showwarning = shown


def writable_stdout(stream, utf8: bool = False) -> tuple[str, str] | None:
    """A standard output whose encoding cannot write every character (a Latin-1 or ASCII locale, PYTHONIOENCODING)
    made to write them all: in UTF-8 where `utf8` (the verb's `stdout_utf8`: a format's own encoding), else those it
    cannot as \\uXXXX escapes; a model's Chinese or Russian text ended the run in a UnicodeEncodeError traceback,
    the outputs not yet printed lost. Returns its (encoding, errors) before, for the run's end to set back (None:
    left as it was, a UTF encoding or a stream without one)."""
    try:
        before = stream.encoding, stream.errors
        name = codecs.lookup(stream.encoding).name
        if utf8 and name != "utf-8":
            stream.reconfigure(encoding="utf-8")
        elif name.startswith("utf") or stream.errors != "strict":
            return None
        else:
            stream.reconfigure(errors="backslashreplace")
        return before
    except (AttributeError, TypeError, LookupError, ValueError, OSError):
        return None


STDOUT_FAILED = "llm_srt_stdout_failed"  # the attribute WatchedStdout sets on an OSError of its own write


class WatchedStdout:
    """sys.stdout while a verb runs, marking the OSError of its own write or flush (STDOUT_FAILED): a full disk
    under `> out.txt` is then one line, where an OSError of another file, uncaught, keeps its traceback (neither
    names a file, and a failed large write leaves nothing in the buffer to try again). All else is stdout's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        with self._marked():
            return self._stream.write(text)

    def writelines(self, lines):
        with self._marked():
            return self._stream.writelines(lines)

    def flush(self):
        with self._marked():
            return self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)

    @staticmethod
    @contextlib.contextmanager
    def _marked() -> Iterator[None]:
        try:
            yield
        except OSError as e:
            setattr(e, STDOUT_FAILED, True)
            raise


def _stdout_to_devnull(stdout) -> None:
    """Point stdout's descriptor at /dev/null: what is left in its buffer is flushed at exit, and that must not fail
    again (a second traceback). A stdout without a descriptor is left as it is."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())


PACKAGE = str(Path(__file__).resolve().parent)  # llm_srt's own files: their warnings are one line under the CLI


def one_line_warnings(verb: str, shown):
    """warnings.showwarning for a verb's run: a UserWarning or RuntimeWarning of llm_srt's own code (a manifest's
    skipped rows, --compile giving up) as one line, `llm-srt VERB: warning: MESSAGE`, where Python printed
    "/.../train/data.py:505: UserWarning: ..." and the source line under it; any other warning as `shown` does."""
    def show(message, category, filename, lineno, file=None, line=None):
        ours = os.path.realpath(filename).startswith(PACKAGE + os.sep)
        if not (ours and issubclass(category, (UserWarning, RuntimeWarning))):
            return shown(message, category, filename, lineno, file, line)
        with contextlib.suppress(OSError, ValueError):  # as Python's: a warning is never the error that ends a run
            text, out = f"llm-srt {verb}: warning: {message}", sys.stderr if file is None else file
            bars = sys.modules.get("tqdm")  # a progress bar on the line (evaluate's, train's): the warning printed
            if bars is not None and getattr(bars.tqdm, "_instances", None):  # after its text; tqdm.write clears
                bars.tqdm.write(text, file=out)  # the bar, writes the line and draws the bar again under it
            else:
                print(text, file=out)

    return show


def _stdout_broken() -> bool:
    """Whether standard output's reader has gone: a pipe whose reading end is closed polls as an error (where
    poll() is missing, the broken pipe is taken for stdout's)."""
    import select

    if not hasattr(select, "poll"):
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # stdout closed or replaced by an object without a descriptor
        return False


if __name__ == "__main__":
    sys.exit(main())
