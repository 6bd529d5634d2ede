"""Uploads to samples, with bounded work: a byte cap on the upload, a duration cap on the decoded audio (checked by
`load_audio` while it decodes, so a compressed bomb stops at the cap instead of filling memory) and a pool of
`workers` decode threads, with at most `max_waiting` more uploads queued for it (beyond: 503, retry later).

The decoder's work is capped too (load_audio's max_bytes): at most --max-audio-seconds of 48 kHz stereo
(REFERENCE_RATE x REFERENCE_CHANNELS), so a file at a higher rate or with more channels gets proportionally less
time: 120 KB of FLAC claiming 600 s at 768 kHz is refused at its header instead of being decoded (17 s of CPU).

An upload's bytes are read into memory inside its decode slot (until then they wait in the spooled temporary file
the form parser wrote), so memory holds at most `workers` uploads and their samples, however many requests wait.
A request that stops waiting (its timeout, its client gone) takes its decode out of the queue; a decode already
running is not interruptible inside libsndfile, so it finishes (bounded by the caps) in its thread, which stays
counted against `workers` until then, and its samples are dropped.

A full temporary disk (or quota) while an upload is spooled or read back is the server's problem, not the
request's: a 507 that says so, and an ERROR line for the operator (`storage_error`).

An upload that decodes only in part (cut short in transfer, damaged) is translated as far as it goes; load_audio's
warning, naming the seconds kept, goes into the caller's `notes` (the client's answer says so), not only the log.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
from fastapi import UploadFile

from ..audio import MAX_SECONDS_DEFAULT, MIN_SAMPLES, SAMPLE_RATE, load_audio
from ..errors import AudioError, AudioOverLimit, LLMSRTError, UndecodableAudio
from .batcher import BusyError, NotStarted
from .guard import check_number

log = logging.getLogger("llm_srt.serve")

MB = 1024 * 1024
AUDIO_MEDIA_PREFIXES = ("audio/", "video/")  # containers with sound; the decoder has the last word
AUDIO_MEDIA_TYPES = {"", "application/octet-stream", "application/ogg"}  # what clients send when they do not guess
REFERENCE_RATE, REFERENCE_CHANNELS = 48_000, 2  # the decoder may read max_seconds of this much audio at most
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space left, or the user's disk quota used up
MAX_AUDIO_SECONDS = MAX_SECONDS_DEFAULT  # the most --max-audio-seconds may be: translate() reads no longer input


def check_audio_seconds(seconds: float) -> None:
    """--max-audio-seconds: a finite number up to MAX_AUDIO_SECONDS. translate() reads each decoded upload again
    through load_audio, whose default cap that is: a longer one (up to 24 h was accepted) was decoded, then failed
    as a 500, and three in a row made /health "failing", so that an orchestrator restarted a healthy server."""
    check_number("--max-audio-seconds", seconds, 0.01)
    if seconds > MAX_AUDIO_SECONDS:
        hours = MAX_AUDIO_SECONDS / 3600
        raise LLMSRTError(f"--max-audio-seconds {seconds:g} is over {MAX_AUDIO_SECONDS:g} ({hours:g} h), the most the "
                          "model reads of one input; lower it (and split longer recordings)")


class UploadError(Exception):
    """A problem with the upload, answered with `status` and param 'file'."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def storage_error(e: OSError, doing: str) -> UploadError:
    """The answer to an upload the server could not keep in (or read back from) its temporary file, and its log
    line: 507 for a full temporary disk or quota, 500 for any other OSError. The message names no path (the log
    does): the client cannot act on the server's folders; the operator frees space or points TMPDIR elsewhere."""
    reason = e.strerror or type(e).__name__
    if e.errno in DISK_FULL:
        log.error("uploads: the temporary disk %s is full (%s) while %s; free space there or set TMPDIR to a larger "
                  "disk", tempfile.gettempdir(), reason, doing)
        return UploadError(507, "the server's temporary disk is full, so the upload could not be stored; retry "
                           "later, or tell the server's operator")
    log.error("uploads: %s failed in %s (%s)", doing, tempfile.gettempdir(), reason)
    return UploadError(500, f"the server's temporary disk failed {doing} ({reason}); retry later, or tell the "
                       "server's operator")


def check_upload(file: UploadFile, max_bytes: int) -> tuple[BinaryIO, str]:
    """(the upload's file, its name) without reading it; UploadError 415 for a media type that is not audio, 413
    over `max_bytes`."""
    name = (file.filename or "upload")[:200]
    media = (file.content_type or "").split(";")[0].strip().lower()
    if not (media in AUDIO_MEDIA_TYPES or media.startswith(AUDIO_MEDIA_PREFIXES)):
        raise UploadError(415, f"{name}: media type {media[:80]!r} is not audio; send wav, flac, ogg or mp3")
    size = file.size if file.size is not None else file.file.seek(0, 2)
    if size > max_bytes:
        raise UploadError(413, f"{name}: larger than {max_bytes / MB:g} MB (llm-srt serve --max-upload-mb)")
    return file.file, name


def read_and_decode(upload: BinaryIO, name: str, max_seconds: float, notes: list[str] | None = None) -> np.ndarray:
    """In a decode slot: the upload's bytes, then decode_audio's samples (and `notes`)."""
    try:
        upload.seek(0)
        data = upload.read()
    except ValueError as e:  # closed: the request ended while this waited (nobody reads the answer)
        raise UploadError(400, f"{name}: the upload could not be read back ({e})") from None
    except OSError as e:  # the server's temporary file, not the client's upload
        raise storage_error(e, "reading the upload back") from None
    return decode_audio(data, name, max_seconds, notes)


def decode_budget(max_seconds: float) -> int:
    """load_audio's max_bytes for a duration cap: that long at 48 kHz stereo, as float32."""
    return int(max_seconds * REFERENCE_RATE * REFERENCE_CHANNELS * 4)


def _limit_named(e: AudioOverLimit, max_seconds: float) -> str:
    """The serve option behind load_audio's AudioOverLimit: its duration limit is --max-audio-seconds itself, its
    limit on decoded audio (reached first by a file beyond 48 kHz stereo) that long at 48 kHz stereo. Told apart by
    the error's `limit` (max_bytes: decoded audio), not by its words, which load_audio may reword."""
    flag = f"llm-srt serve --max-audio-seconds {max_seconds:g}"
    if e.limit != "max_bytes":
        return flag
    return (f"{flag}: the limit on decoded audio is {max_seconds:g} s at {REFERENCE_RATE // 1000} kHz, "
            f"{REFERENCE_CHANNELS} channels")


def decode_audio(data: bytes, name: str, max_seconds: float, notes: list[str] | None = None) -> np.ndarray:
    """16 kHz mono float32 (N,), at most `max_seconds` long. UploadError 415 for bytes no decoder opens, 413 for
    audio longer than `max_seconds` or decoding to more than decode_budget(max_seconds), 400 for anything else wrong
    with it. `notes` gets the warning of an upload that decodes only in part."""
    try:
        # an upload decoding in part (cut short in transfer, damaged) is translated as far as it goes, with a warning
        # for the client as well as the log (it was the log's alone: a client got a 200 for 5 s of its 20 s)
        samples = load_audio(data, name=name, max_seconds=max_seconds, max_bytes=decode_budget(max_seconds),
                             salvage=True, on_salvage=None if notes is None else notes.append)
    except UndecodableAudio as e:
        raise UploadError(415, f"{name}: cannot decode this audio ({e.detail}); send wav, flac, ogg or mp3") from None
    except AudioOverLimit as e:  # by its type: the message begins with the client's file name, which may say "limit"
        raise UploadError(413, f"{e} ({_limit_named(e, max_seconds)})") from None
    except AudioError as e:
        raise UploadError(400, str(e)) from None
    except MemoryError:
        raise UploadError(413, f"{name}: the decoded audio does not fit in memory; send a shorter file") from None
    # load_audio lets the file's last frame and the resampler's rounding past the cap (1 ms at most, a 1 kHz frame):
    # cut, so that an upload at --max-audio-seconds fits a --max-queued-seconds as long (else the batcher's 413)
    return samples[:max(int(max_seconds * SAMPLE_RATE), MIN_SAMPLES)]


class DecodePool:
    """`workers` threads decoding uploads, `max_waiting` more queued; use between start() and stop()."""

    def __init__(self, workers: int, max_waiting: int, max_seconds: float):
        self.workers, self.max_waiting, self.max_seconds = workers, max_waiting, max_seconds
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0  # decodes queued or running (a running one counts until its thread is done)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="llm-srt-decode")

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def decode(self, upload: BinaryIO, name: str, notes: list[str] | None = None) -> np.ndarray:
        """The upload's samples (`read_and_decode`; its warnings into `notes`) from a decode thread."""
        if self._executor is None:  # an app mounted without its lifespan: an AttributeError, retried by SDKs
            raise NotStarted()
        with self._lock:
            if self._pending >= self.workers + self.max_waiting:
                raise BusyError(f"{self._pending} uploads are already being decoded or waiting; retry later")
            self._pending += 1
        job = self._executor.submit(read_and_decode, upload, name, self.max_seconds, notes)
        job.add_done_callback(self._done)
        try:
            return await asyncio.wrap_future(job)
        finally:
            job.cancel()  # still queued: it never runs (a cancelled await gets here too)

    def _done(self, _job: Future) -> None:
        with self._lock:
            self._pending -= 1
