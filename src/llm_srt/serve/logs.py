"""The server's own log lines (a client gone, a batch failed, a connection closed) on stderr at INFO, beside
uvicorn's (`llm-srt serve`, serve/app.py)."""

import logging
import sys

LOG_FORMAT = "%(levelname)s:     %(name)s: %(message)s"  # beside uvicorn's own lines ("INFO:     ...")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged (not the stream it was made with)."""

    llm_srt_serve = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_server_log() -> None:
    """The server's own lines (a client gone, a batch failed, a connection closed) on stderr at INFO, as uvicorn's:
    without a handler only warnings reached stderr, bare, and the INFO lines were lost."""
    logger = logging.getLogger("llm_srt")
    if not any(getattr(h, "llm_srt_serve", False) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
