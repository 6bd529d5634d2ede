"""Stopping `llm-srt serve` while `--compile` warms up, before it listens: a second Ctrl-C leaves at once."""

import argparse
import signal
import threading
import time

import pytest

from llm_srt.serve import app as serve_app


class Exited(Exception):
    """os._exit, for the test: the process would be gone."""


def test_a_second_ctrl_c_during_the_compile_warm_up_exits_at_once_with_130(model_dir, monkeypatch):
    """uvicorn reads a second Ctrl-C as 'force exit' but looks at it only once start-up is over, and start-up waits
    for the warm-up's batch, which compiles for minutes on a large model: the second Ctrl-C did nothing until then."""
    parser = argparse.ArgumentParser()
    serve_app.add_arguments(parser)
    released, state, exits = threading.Event(), {}, []
    main = threading.get_ident()

    def warm_up(translator, options, log, stopping):  # on the model thread, as the real one runs
        ctrl_c = lambda: signal.pthread_kill(main, signal.SIGINT)  # noqa: E731 - to the main thread, as a terminal's
        ctrl_c()  # the first: uvicorn stops once started, and the warm-up is told
        if stopping.wait(10):
            time.sleep(0.3)  # a moment later (the main thread back waiting for this warm-up)
            ctrl_c()  # the second, while this batch still compiles
        state["warm-up ended"] = released.wait(15)

    def exit_now(code):  # the process would be gone here: whether the warm-up's batch was still running
        exits.append((code, "warm-up ended" in state))
        released.set()  # (lets the test's warm-up thread go)
        raise Exited(code)

    monkeypatch.setattr(serve_app, "warm_up", warm_up)
    monkeypatch.setattr(serve_app.os, "_exit", exit_now)
    monkeypatch.setattr(serve_app, "show_server_log", lambda: None)  # its handler would outlive the test
    try:
        with pytest.raises(Exited):
            serve_app.main(parser.parse_args(["--model", str(model_dir), "--port", "0", "--device", "cpu",
                                              "--compile"]))
        assert exits[0] == (130, False)  # gone while the warm-up's batch was still running
    finally:
        released.set()
