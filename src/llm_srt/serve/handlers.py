"""A request's wait for its work (a deadline, a client that leaves) and the app's exception handlers: every error
JSON, a client gone answered with nobody to read it (logged), a full disk the server's (`serve.app.create_app`)."""

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .forms import APIError
from .guard import SERVER_CLOSED, error_response
from .uploads import storage_error

if TYPE_CHECKING:
    from .app import ServeOptions

log = logging.getLogger("llm_srt.serve")

CLIENT_GONE = 499  # nginx's "client closed request": logged, never seen by the client


class ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


def client_gone(request: Request, what: str) -> Response:
    """The 499 of a client that left, which nobody reads: uvicorn writes no access line once the connection is gone,
    so this line, shaped as its access lines ("ADDRESS - "POST PATH HTTP/1.1" STATUS ..."), is the one saying 499."""
    scope = request.scope
    address = "%s:%d" % tuple(scope["client"][:2]) if scope.get("client") else "-"
    path = urllib.parse.quote(scope.get("root_path", "") + scope["path"])  # quoted as uvicorn's: one line, always
    log.info('%s - "%s %s HTTP/%s" %d Client Closed Request: %s', address, scope["method"][:20],
             path if len(path) <= 100 else path[:100] + "...", scope.get("http_version", "1.1"), CLIENT_GONE, what)
    return Response(status_code=CLIENT_GONE)


async def until_done(request: Request, work, timeout_s: float):
    """`work`'s result; TimeoutError after `timeout_s`, ClientGone if the client disconnects first. Either way
    `work` is cancelled: a queued decode never starts, a queued batch entry leaves the queue."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({job, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        job.cancel()
        gone.cancel()
        await asyncio.gather(job, gone, return_exceptions=True)
    if job in done:
        return job.result()
    if gone in done:
        raise ClientGone()
    raise TimeoutError()


async def _disconnect(receive) -> None:
    """Returns when the client disconnects (the body is already read: receive() now waits for that)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.01)  # a server that answers at once with empty bodies must not make this spin


def add_error_handlers(app: FastAPI, options: "ServeOptions") -> None:
    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, retry=exc.retry)

    @app.exception_handler(ClientDisconnect)
    async def gone_mid_upload(request: Request, _exc: ClientDisconnect) -> Response:
        if SERVER_CLOSED in request.scope:  # a timeout's 408 closed it (guard.py answered and logged it)
            return Response(status_code=408)  # nobody to read it either
        return client_gone(request, "the client disconnected while sending its upload")  # nobody to answer

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = str(err["loc"][-1]) if err.get("loc") else None
        hint = " (send multipart/form-data with the audio in the field 'file')" if param == "file" else ""
        return error_response(400, f"{param}: {err['msg']}{hint}" if param else err["msg"], param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__  # FastAPI answers any exception while it parses the form as 400 "There was an error
        if exc.status_code == 400 and isinstance(cause, ClientDisconnect):  # parsing the body": a client that left
            return await gone_mid_upload(request, cause)
        if exc.status_code == 400 and isinstance(cause, OSError) and not isinstance(cause, ConnectionError):
            err = storage_error(cause, "storing the upload")  # a full disk (the spooled upload's)
            return error_response(err.status, err.message, "file")  # is the server's, not a malformed body
        path = request.url.path if len(request.url.path) <= 100 else request.url.path[:100] + "..."
        messages = {
            413: too_large_message(options),
            404: f"no such endpoint {path}; see / for the page and /openapi.json for the API",
            405: f"{request.method[:20]} is not allowed on {path}",
        }
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                              "file" if exc.status_code == 413 else None, exc.headers)  # a 405's Allow


def too_large_message(options: "ServeOptions") -> str:
    return f"the upload is larger than {options.max_upload_mb:g} MB (llm-srt serve --max-upload-mb)"
