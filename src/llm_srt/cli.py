"""The one console script, `llm-srt VERB ...`. Each verb lives in its own module (imported only when used),
which provides `add_arguments(parser)` and `main(args) -> int`."""

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator

from . import paths
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
    (argparse makes them of their parent's class). --help is argparse's own."""

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


BROKEN_PIPE = 141  # the exit code when stdout's reader has gone: a shell's for a process SIGPIPE ended (128 + 13)
PROGRESS_LOG_INTERVAL_S = 30  # progress-bar updates at most this often when stderr is a file or a pipe


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


def main(argv: list[str] | None = None) -> int:
    with stop_on_sigterm():
        return _main(argv)


def _with_sub_verb(parser: argparse.ArgumentParser, rest: list[str]) -> argparse.Namespace:
    """A verb with sub-verbs (`prepare mini`, `convert gguf`): its arguments, an unknown option refused by the
    sub-verb's own parser, whose --help lists the options (argparse handed it up, so the error named the verb's)."""
    args, unknown = parser.parse_known_args(rest)
    while unknown:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or getattr(args, sub.dest, None) not in sub.choices:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser = sub.choices[getattr(args, sub.dest)]
    return args


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
        args = _with_sub_verb(verb_parser, rest) if has_sub_verbs else verb_parser.parse_intermixed_args(rest)
        args.verb, args.debug = verb, debug
    else:
        args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        return int(module.main(args) or 0)
    except LLMSRTError as e:
        if debug:  # the traceback, and the exit code as without --debug (a script's check must not change)
            traceback.print_exc()
        print(f"llm-srt {verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm-srt {verb}: interrupted", file=sys.stderr)
        return 130
    except Terminated:  # its clean-ups have run
        print(f"llm-srt {verb}: stopped by SIGTERM", file=sys.stderr)
        return TERMINATED
    except BrokenPipeError:  # stdout's reader has gone (`llm-srt translate ... | head -1`): no traceback
        if not _stdout_broken():  # another pipe (a subprocess's, a socket): a real error, shown
            raise
        if debug:
            traceback.print_exc()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor another at exit, flushing stdout
        return BROKEN_PIPE


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
