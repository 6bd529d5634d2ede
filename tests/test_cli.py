import argparse
import errno
import importlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.errors import LLMSRTError


def test_verb_table_matches_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli.VERBS)


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_every_verb_module_has_its_entry_points(verb):
    module = importlib.import_module(cli.VERBS[verb][0])
    assert callable(module.add_arguments) and callable(module.main)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # must not raise


def test_help_lists_the_verbs():
    out = subprocess.run([sys.executable, "-m", "llm_srt.cli", "--help"], capture_output=True, text=True, check=True)
    for verb in cli.VERBS:
        assert verb in out.stdout


def test_user_error_is_one_line_without_traceback(capsys, tmp_path):
    rc = cli.main(["score", "--hyp", str(tmp_path / "nope.txt"), "--ref", str(tmp_path / "nope.txt"),
                   "--tgt-lang", "deu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("llm-srt score: error:") and "\n" not in err and "Traceback" not in err


def test_debug_after_the_verb_and_options_before_it(capsys, tmp_path):
    """`--debug` after the verb was an unknown argument of the verb; an unknown option before the verb was ignored,
    and `llm-srt --help train` complained about train's arguments instead of printing llm-srt's help."""
    missing = str(tmp_path / "none.yaml")
    assert cli.main(["train", "--debug", missing]) == 2  # --debug: the error's traceback, the exit code kept
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["train", missing]) == 2 and "none.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["--bogus", "score", "--help"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["--help", "train"])
    assert e.value.code == 0 and "VERB" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # --help among a verb's options before it: still the help
        cli.main(["--json", "--help", "bench"])
    assert e.value.code == 0 and "VERB" in capsys.readouterr().out


def test_debug_shows_the_traceback_and_keeps_the_exit_code(capsys, tmp_path):
    """`--debug` re-raised a refusal: the traceback, but exit code 1 where the command exits 2 without it, so a
    script's check changed with the flag. It prints the traceback and the usual line, and exits 2 as without."""
    missing = str(tmp_path / "nope.txt")
    argv = ["score", "--hyp", missing, "--ref", missing, "--tgt-lang", "deu"]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err
    assert cli.main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and "LLMSRTError: " in err and err.endswith(line)


@pytest.mark.parametrize("argv, prog, message", [
    (["translate", "x.wav", "--model", "whisper", "--beam", "x"], "llm-srt translate",
     "argument --beam: invalid int value: 'x'"),
    (["translate", "x.wav", "--model", "whisper", "--frob"], "llm-srt translate", "unrecognized arguments: --frob"),
    (["convert", "whisper-ct2", "src"], "llm-srt convert whisper-ct2", "the following arguments are required: dst"),
    (["--bogus"], "llm-srt", "unrecognized arguments: --bogus"),
    (["prepare", "mini", "--bad"], "llm-srt prepare mini", "unrecognized arguments: --bad"),  # (named the verb's
    (["convert", "gguf", "a", "b", "--bad", "x"], "llm-srt convert gguf", "unrecognized arguments: --bad x"),  # help)
    # a sub-verb's option with its value before the sub-verb: "invalid choice: 'x'", as if fleurs were not given
    (["prepare", "--out", "x", "fleurs", "--root", "r"], "llm-srt prepare",
     "unrecognized arguments: --out x; give a sub-verb's options after it: llm-srt prepare fleurs --out x ..."),
    # a verb's option with its value before the verb: "invalid choice: 'cpu'", as if translate were not given
    (["--device", "cpu", "translate", "a.wav", "--model", "m"], "llm-srt",
     "unrecognized arguments: --device cpu; give a verb's options after it: llm-srt translate --device cpu ..."),
    # a flag, an --opt=value and several options before the verb: named too (argparse's "unrecognized arguments:
    # --json" said nothing of where they go), llm-srt's own (--debug, abbreviated too) kept where they were
    (["--json", "bench"], "llm-srt",
     "unrecognized arguments: --json; give a verb's options after it: llm-srt bench --json ..."),
    (["--beam=5", "translate", "a.wav"], "llm-srt",
     "unrecognized arguments: --beam=5; give a verb's options after it: llm-srt translate --beam=5 ..."),
    (["--json", "--paper-shape", "qwen2.5-7b", "bench"], "llm-srt", "unrecognized arguments: --json --paper-shape "
     "qwen2.5-7b; give a verb's options after it: llm-srt bench --json --paper-shape qwen2.5-7b ..."),
    (["--debug", "--beam=5", "--compile", "--deb", "translate", "a.wav"], "llm-srt",
     "unrecognized arguments: --beam=5 --compile; give a verb's options after it: "
     "llm-srt --debug --deb translate --beam=5 --compile ..."),
    (["--debug=1", "score"], "llm-srt", "argument --debug: ignored explicit argument '1'"),  # argparse's, as before
    (["tranlsate", "--out-dir", "score"], "llm-srt",  # a mistyped verb is still argparse's own line
     "argument VERB: invalid choice: 'tranlsate' (choose from " + ", ".join(f"'{v}'" for v in cli.VERBS) + ")"),
])
def test_a_bad_option_is_one_line(capsys, argv, prog, message):
    """A bad option printed argparse's whole usage (10-14 lines for translate) before the error: it is one line, as
    every refusal of a verb, naming where the options are listed; the exit code stays 2."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err == f"{prog}: error: {message} ({prog} --help for the options)\n"


def test_help_is_argparses_own(capsys, monkeypatch):
    """The one-line errors change no --help: the same text as a plain argparse parser's."""
    shown = []
    for parser in (cli.Parser, argparse.ArgumentParser):
        monkeypatch.setattr(cli, "Parser", parser)
        for argv in (["--help"], ["translate", "--help"], ["convert", "gguf", "--help"]):
            with pytest.raises(SystemExit):
                cli.main(argv)
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] and "usage: llm-srt translate [-h] --model MODEL" in shown[0]


def test_progress_bars_update_rarely_when_stderr_is_a_log_file():
    import subprocess
    import sys

    code = ("import os, time; from llm_srt import cli; cli.quiet_progress_when_logged(); from tqdm import tqdm\n"
            "for _ in tqdm(range(100), desc='work'): time.sleep(0.01)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TQDM_MININTERVAL"}
    logged = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stderr
    assert logged.count("\r") <= 3 and "100/100" in logged  # first and last state only, not one per update


def _decoding_options_of_translate_and_evaluate(flag: list[str], monkeypatch, tmp_path) -> list:
    """The DecodingOptions that `translate` and then `evaluate` run with, given `flag` on their command lines."""
    from llm_srt import translate
    from llm_srt.evaluate import run as evaluate_run

    seen = []

    class Fake:
        def translate(self, *a, options, **k):
            seen.append(options)
            return []

    monkeypatch.setattr(translate, "translator_from_args", lambda args: Fake())
    (tmp_path / "a.wav").touch()  # (an input none of which opens is said before the model loads)
    cli.main(["translate", str(tmp_path / "a.wav"), "--model", "m", "--src", "eng", "--tgt", "deu", *flag])
    monkeypatch.setattr(evaluate_run, "evaluate", lambda models, manifest, out, task, options, *a, **k:
                        seen.append(options))
    cli.main(["evaluate", "--model", "m", "--manifest", "x.jsonl", "--out", str(tmp_path), *flag])
    return seen


@pytest.mark.parametrize("flag, size", [([], 0), (["--no-repeat-ngram", "4"], 4)])
def test_no_repeat_ngram_reaches_the_decoding_options_of_translate_serve_and_evaluate(flag, size, monkeypatch,
                                                                                       tmp_path):
    from llm_srt.serve import app

    seen = [o.no_repeat_ngram_size for o in _decoding_options_of_translate_and_evaluate(flag, monkeypatch, tmp_path)]
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    seen.append(app.options_from_args(parser.parse_args(["--model", "m", *flag])).batch.decoding.no_repeat_ngram_size)
    assert seen == [size] * 3


def test_translate_of_stdin_is_refused_in_one_line_before_the_model_loads(monkeypatch, capsys):
    """`llm-srt translate -` said "-: no such file", and only once the model had loaded (minutes for a 7B model)."""
    from llm_srt import translate

    monkeypatch.setattr(translate, "translator_from_args", lambda args: pytest.fail("the model loaded"))
    assert cli.main(["translate", "-", "--model", "m", "--src", "eng", "--tgt", "deu"]) == 2
    assert capsys.readouterr().err == ("llm-srt translate: error: -: reading audio from stdin is not supported; save "
                                       "it to a file first (a file named -: give it as ./-)\n")


def test_a_negative_no_repeat_ngram_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["evaluate", "--model", "m", "--manifest", "x.jsonl", "--out", str(tmp_path),
                     "--no-repeat-ngram", "-1"]) != 0
    assert "--no-repeat-ngram must be >= 0 (0: off), not -1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [[], ["--no-force-srt-tags"]])
def test_no_force_srt_tags_reaches_the_decoding_options_of_translate_serve_and_evaluate(flag, monkeypatch, tmp_path):
    from llm_srt.serve import app

    seen = [o.force_srt_tags for o in _decoding_options_of_translate_and_evaluate(flag, monkeypatch, tmp_path)]
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    args = parser.parse_args(["--model", "m", *flag])
    seen.append(app.options_from_args(args).batch.decoding.force_srt_tags)
    assert seen == [not flag] * 3


@pytest.mark.parametrize("flag", [[], ["--compile"]])
def test_compile_reaches_the_decoding_options_of_translate_serve_and_evaluate(flag, monkeypatch, tmp_path):
    from llm_srt.serve import app

    seen = [o.compile for o in _decoding_options_of_translate_and_evaluate(flag, monkeypatch, tmp_path)]
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    seen.append(app.options_from_args(parser.parse_args(["--model", "m", *flag])).batch.decoding.compile)
    assert seen == [bool(flag)] * 3


def test_serve_on_a_port_in_use_stops_before_the_model_loads(monkeypatch, capsys):
    """`serve` on a busy port loaded the model (minutes for a large one), said it was serving, then failed with
    uvicorn's "address already in use" and exit 3. Now one line naming the port, exit 2, no model loaded; the port
    is held from then on (a second serve is refused while the first loads) and let go on Ctrl-C during the load."""
    import socket

    from llm_srt.serve import app

    def no_model(args):
        pytest.fail("the model was loaded")

    monkeypatch.setattr(app, "translator_from_args", no_model)
    monkeypatch.setattr(app, "show_server_log", lambda: None)  # its handler would outlive the test (the worker's)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--model", "no/such/model", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == (f"llm-srt serve: error: cannot listen on 127.0.0.1:{port} (Address already in use); another "
                   "program uses it? choose another --port\n")

    def interrupted(args):  # Ctrl-C while the model loads
        with pytest.raises(OSError):  # meanwhile the port is this server's, though it does not listen yet
            socket.create_server(("127.0.0.1", port))
        assert cli.main(["serve", "--model", "m", "--port", str(port)]) == 2 and str(port) in capsys.readouterr().err
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "translator_from_args", interrupted)
    assert cli.main(["serve", "--model", "no/such/model", "--port", str(port)]) == 130
    socket.create_server(("127.0.0.1", port)).close()  # let go


def test_ctrl_c_while_the_verb_imports_is_the_interrupted_line(monkeypatch, capsys):
    """The verb's module imports torch and transformers for seconds before it runs: Ctrl-C then printed an import
    traceback, where once it runs it prints one line and exits 130."""
    def interrupted(name, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["train", "x.yaml"]) == 130
    assert capsys.readouterr().err == "llm-srt train: interrupted\n"


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_reader_that_stops_early_gets_no_traceback(debug):
    """`llm-srt translate ... | head -1`: the pipe closed under a verb printing its results, which ended in a
    BrokenPipeError traceback (and another as Python flushed stdout at exit). Now no traceback, exit 141 (as a shell
    reports a process SIGPIPE ended); --debug shows the traceback, and the exit code stays (it was 1)."""
    code = ("import sys\n"
            "import llm_srt.evaluate.score as score\n"
            "from llm_srt import cli\n"
            "score.main = lambda args: [print('x' * 100) for _ in range(100_000)] and 0\n"
            f"sys.exit(cli.main({debug} + ['score', '--hyp', 'h', '--ref', 'r', '--tgt-lang', 'deu']))\n")
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # as `head -1` does
    err = reader.stderr.read().decode()
    assert reader.wait(60) == cli.BROKEN_PIPE == 141
    assert err == "" if not debug else err.startswith("Traceback") and "BrokenPipeError" in err


def test_a_broken_pipe_other_than_stdouts_is_an_error_shown(monkeypatch):
    """Only stdout's reader gone is the quiet exit 141: a broken pipe to a subprocess or a socket is a real error."""
    import llm_srt.evaluate.score as score

    def main(args):
        raise BrokenPipeError("a subprocess's pipe")

    monkeypatch.setattr(score, "main", main)
    with pytest.raises(BrokenPipeError, match="a subprocess's pipe"):
        cli.main(["score", "--hyp", "h", "--ref", "r", "--tgt-lang", "deu"])


def test_sigterm_inside_atomic_file_under_the_cli_leaves_no_temporary_file(tmp_path):
    """torchrun, SLURM, `docker stop` and timeout(1) send SIGTERM, whose default action ran no clean-up: each kill
    left a `.NAME.XXXX.tmp` (or a model-sized `NAME.tmp-PID` folder). Under the CLI it unwinds: both are removed,
    the old file and folder kept, and the exit code is 143, one line saying why."""
    script = textwrap.dedent(f"""
        import os, signal, sys, types
        from pathlib import Path
        from llm_srt import cli, paths

        def main(args):
            out = Path({str(tmp_path)!r})
            with paths.atomic_dir(out / "final") as tmp:
                (tmp / "weights.bin").write_text("new")
                with paths.atomic_file(out / "talk.srt") as f:
                    f.write("1\\n00:00:00,000 --> 00:00:01,000\\nhello\\n")
                    os.kill(os.getpid(), signal.SIGTERM)
                    signal.pause()  # (the handler runs before this is reached)
            return 0

        sys.modules["fake_verb"] = types.SimpleNamespace(add_arguments=lambda p: None, main=main)
        cli.VERBS["fake"] = ("fake_verb", "a verb SIGTERMed mid-write")
        sys.exit(cli.main(["fake"]))
        """)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "weights.bin").write_text("old")
    (tmp_path / "talk.srt").write_text("old\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip() == "llm-srt fake: stopped by SIGTERM"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "talk.srt"]
    assert (tmp_path / "talk.srt").read_text() == "old\n" and (tmp_path / "final" / "weights.bin").read_text() == "old"


def test_a_forked_child_sigtermed_under_the_cli_dies_as_before(tmp_path):
    """A DataLoader worker forks from the main process and inherits its handler; torch ends its workers with
    SIGTERM: the worker must die of it at once, not unwind a copy of the parent's stack (its `finally`s would
    remove the parent's files). The parent's handler is put back when main returns."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        from llm_srt import cli

        with cli.stop_on_sigterm():
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(30)
                finally:
                    print("child unwound", flush=True)
                os._exit(0)
            time.sleep(0.2)
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, flush=True)
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["True", "True"], done.stdout + done.stderr


def test_a_second_sigterm_ends_the_process_at_once():
    """A clean-up that hangs must not keep the process: the second SIGTERM has its default action."""
    script = textwrap.dedent("""
        import os, signal, time
        from llm_srt import cli

        with cli.stop_on_sigterm():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                print("unwinding", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                print("not reached", flush=True)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM and done.stdout.split() == ["unwinding"], done.stdout + done.stderr


def _a_host_of_two_addresses(monkeypatch, taken) -> tuple[list, list]:
    """serve's sockets on a host of two addresses (localhost: 127.0.0.1 and ::1), whose `taken(n)` n-th bind fails
    as "address in use" -> (the addresses bound, the sockets opened)."""
    import errno
    import socket
    import types

    from llm_srt.serve import app

    binds, opened = [], []

    class Taken:  # a socket whose bind fails where `taken` says
        def __init__(self, *args):
            self.sock = socket.socket(*args)
            opened.append(self.sock)

        def bind(self, where):
            binds.append(where)
            if taken(len(binds)):
                raise OSError(errno.EADDRINUSE, "Address already in use")
            self.sock.bind(where)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in ("127.0.0.1", "127.0.0.2")]
    shim = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket) if k.isupper()},
                                 getaddrinfo=lambda *a, **k: infos, socket=Taken)
    monkeypatch.setattr(app, "socket", shim)
    return binds, opened


def test_serve_port_0_on_a_host_of_two_addresses_is_picked_again_where_the_second_has_it_taken(monkeypatch):
    """--port 0: the port picked on a host's first address may be taken on its second (localhost: 127.0.0.1 and
    ::1); that was "address in use; choose another --port" to someone who asked for any port."""
    from llm_srt.serve import app

    binds, _ = _a_host_of_two_addresses(monkeypatch, lambda n: n == 2)  # the second address, the first time
    sockets = app.bind_sockets("localhost", 0)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(sockets) == 2 and len(ports) == 1 and len(binds) == 4  # picked again, once
    finally:
        for s in sockets:
            s.close()


def test_serve_port_0_gives_up_in_one_line_after_five_picks_all_taken_on_the_second_address(monkeypatch):
    from llm_srt.serve import app

    binds, opened = _a_host_of_two_addresses(monkeypatch, lambda n: n % 2 == 0)  # the second address, every time
    with pytest.raises(LLMSRTError, match=r"cannot listen on localhost:\d+ .*choose another --port"):
        app.bind_sockets("localhost", 0)
    assert len(binds) == 10 and all(s.fileno() == -1 for s in opened)  # five picks, every socket closed


class _FullDisk(io.RawIOBase):
    """A file on a full disk: every write fails with ENOSPC (until `full` is cleared, for the test's clean-up)."""
    full = True

    def writable(self):
        return True

    def write(self, data):
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)


@pytest.mark.parametrize("size", [10, 100_000], ids=["buffered", "written-through"])
def test_stdout_on_a_full_disk_is_one_line(size, capsys, monkeypatch):
    """`llm-srt score ... > full/o.txt` on a full disk: an OSError traceback from the verb's print (a large write)
    or Python's "Exception ignored" at exit (a short one, still buffered; exit 120). Now one line, exit 1."""
    import llm_srt.evaluate.score as score

    disk = _FullDisk()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(disk), encoding="utf-8"))
    monkeypatch.setattr(score, "main", lambda args: print("x" * size) or 0)
    try:
        assert cli.main(["score", "--hyp", "h", "--ref", "r", "--tgt-lang", "deu"]) == 1
    finally:
        disk.full = False
    assert capsys.readouterr().err == ("llm-srt score: error: standard output: No space left on device; free space "
                                       "there or redirect it elsewhere\n")


def test_a_full_disk_under_another_file_keeps_its_traceback(monkeypatch):
    """Only stdout's own failed write is that line: another file's ENOSPC names no file either, and is not taken
    for stdout's."""
    import llm_srt.evaluate.score as score

    def main(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(score, "main", main)
    with pytest.raises(OSError, match="No space left on device"):
        cli.main(["score", "--hyp", "h", "--ref", "r", "--tgt-lang", "deu"])


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="writes fail with ENOSPC on /dev/full (Linux)")
def test_score_into_dev_full_is_one_line_and_no_traceback(tmp_path):
    """The real command, its stdout a device that is always full: one line, exit 1, nothing at exit after it."""
    (tmp_path / "h.txt").write_text("the cat sat\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "llm_srt.cli", "score", "--hyp", str(tmp_path / "h.txt"),
                               "--ref", str(tmp_path / "h.txt"), "--tgt-lang", "eng"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == ("llm-srt score: error: standard output: No space left on device; "
                                                    "free space there or redirect it elsewhere\n"), done.stderr


def _manifest(path: Path, rows: list[str], split="train") -> str:
    """A manifest of one row per text in `rows` ("{bad}" for a row with no duration)."""
    import json

    lines = []
    for i, text in enumerate(rows):
        row = {"id": f"u{i}", "audio": "a.wav", "duration": 2.0, "src_lang": "eng", "transcript": text,
               "tgt_lang": "", "translation": "", "split": split, "corpus": "test", "sentence_id": str(i)}
        if text == "{bad}":
            del row["duration"]
        lines.append(json.dumps(row) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    with wave.open(str(path.parent / "a.wav"), "wb") as w:  # 2 s of silence
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(bytes(64000))
    return str(path)


def test_a_sub_verbs_options_and_files_in_any_order(tmp_path, capsys):
    """`prepare check a.jsonl --no-check-audio b.jsonl` was "unrecognized arguments: b.jsonl", where a verb without
    sub-verbs takes its options and positionals in any order."""
    a, b = _manifest(tmp_path / "a.jsonl", ["Hello."]), _manifest(tmp_path / "b.jsonl", ["Hi.", "Bye."])
    assert cli.main(["prepare", "check", a, "--no-check-audio", b]) == 0
    out = capsys.readouterr().out
    assert f"{a}: 1 row ok" in out and f"{b}: 2 rows ok" in out
    with pytest.raises(SystemExit) as e:  # an option before the sub-verb is the verb's, which has none
        cli.main(["prepare", "--no-check-audio", "check", a])
    assert e.value.code == 2 and "llm-srt prepare: error: unrecognized arguments: --no-check-audio" in \
        capsys.readouterr().err


def test_llm_srts_own_warnings_are_one_line_under_the_cli(tmp_path, monkeypatch, capsys):
    """`data.skip_bad=true` on a manifest with a bad row printed Python's "/.../train/data.py:505: UserWarning: ..."
    and the source line under it: under the CLI it is one line, the verb's; others' warnings are as Python shows
    them, and the hook is gone after the run."""
    import types
    import warnings

    from llm_srt.prompts import Task
    from llm_srt.train.data import DataSection, read_stage_rows

    manifest = _manifest(tmp_path / "tr.jsonl", ["Hello.", "{bad}", "Bye."])

    def main(args):
        rows = read_stage_rows(DataSection(train=manifest, tasks={"asr": 1.0}, skip_bad=True), Task.ASR,
                               hashes=False)
        warnings.warn_explicit("a library's", UserWarning, "/elsewhere/lib.py", 7)
        return 0 if len(rows.train[0]) == 2 else 3

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, "fake", ("fake_verb", "a verb whose data has a bad row"))
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        shown = warnings.showwarning
        assert cli.main(["fake"]) == 0
        assert warnings.showwarning is shown
    err = capsys.readouterr().err
    assert err.startswith(f"llm-srt fake: warning: {manifest}: skipped 1 bad rows (first: {manifest}:2: ")
    assert err.count("\n") == 1 and "Warning" not in err
    assert [(str(w.message), w.filename) for w in theirs] == [("a library's", "/elsewhere/lib.py")]


def test_a_file_named_with_a_leading_dash_is_given_after_double_dash(tmp_path, monkeypatch, capsys):
    """`--` ends the options, the POSIX way to give a file whose name begins with "-": with only options before
    it, `translate --model m -- -take1.wav` was refused ("the following arguments are required: audio"), and
    `prepare check -- -a.jsonl` alike (Python 3.11's intermixed parse lost the `--`)."""
    from llm_srt import translate

    monkeypatch.chdir(tmp_path)
    _manifest(tmp_path / "-a.jsonl", ["Hello."])
    assert cli.main(["prepare", "check", "--no-check-audio", "--", "-a.jsonl"]) == 0
    assert "-a.jsonl: 1 row ok" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr(translate, "main", lambda args: seen.append((args.audio, args.src)))
    assert cli.main(["translate", "--model", "m", "--src", "eng", "--", "-take 1.wav", "b.wav"]) == 0
    assert cli.main(["translate", "a.wav", "--model", "m", "--", "-take 1.wav", "--src"]) == 0  # (as before)
    assert seen == [(["-take 1.wav", "b.wav"], "eng"), (["a.wav", "-take 1.wav", "--src"], None)]
    with pytest.raises(SystemExit) as e:  # an unknown option before `--` is still named
        cli.main(["translate", "--model", "m", "--frob", "--", "-take 1.wav"])
    assert e.value.code == 2 and "error: unrecognized arguments: --frob (" in capsys.readouterr().err


@pytest.mark.parametrize("verb, advice", [
    ("train", "run the same command again to resume from its last checkpoint, if it saved one (else the run starts "
              "again from step 0)"),  # (where the recipe knows what it saved: tests/train/test_stop_lines.py)
    ("evaluate", "the rows decoded so far are kept: run the same command again to go on from them"),
])
def test_a_rank_whose_peer_died_stops_in_one_line_that_says_to_run_again(verb, advice, monkeypatch, capsys):
    """`torchrun --nproc_per_node 2 -m llm_srt.cli train ...`, rank 1 killed: rank 0 died in a 33-line traceback
    ending in gloo's "Connection closed by peer". It is one line naming the rank gone and the fix, exit status 2 as
    every refusal, the traceback above it with --debug; a collective's other errors (a bug) keep their traceback.
    (tests/train/test_peer_gone.py: the same from a real gloo run of two processes.)"""
    import types

    import torch.distributed as dist

    raised = []

    def main(args):
        raise raised[-1]

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, verb, ("fake_verb", "a verb whose other rank was killed"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    closed = "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:23456"
    nccl = ("NCCL error in: NCCLUtils.cpp:77, remote process exited or there was a network error, NCCL version 2.26.2"
            "\nncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely.")
    for error, gone in ((RuntimeError(closed), "rank 1 at 10.0.0.2:23456 is gone (gloo: Connection closed by peer)"),
                        (dist.DistBackendError(nccl), "rank 1 is gone (NCCL: remote process exited or network error)")):
        raised.append(error)
        line = f"llm-srt {verb}: error: [rank 0] {gone}: this rank stops; {advice}\n"
        assert cli.main([verb]) == 2
        assert capsys.readouterr().err == line
        assert cli.main(["--debug", verb]) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and err.endswith(f"{type(error).__name__}: {error}\n{line}")
    for error in (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"),
                  dist.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp:3356, invalid usage, NCCL version "
                                        "2.26.2\nncclInvalidUsage: Duplicate GPU detected")):
        raised.append(error)
        with pytest.raises(type(error)) as caught:
            cli.main([verb])
        assert caught.value is error and "error:" not in capsys.readouterr().err
