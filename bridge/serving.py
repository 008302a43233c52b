"""How gunicorn serves the app: an event loop reads requests, a thread pool runs Flask.

gunicorn's threaded worker gives each connection a thread while it reads the request, so 40
clients each holding half a header stopped every thread (and /healthz) for as long as they held
on. Here gunicorn's asyncio worker reads and parses requests, so a slow client costs a coroutine,
never a thread; only a complete request header reaches the pool of `threads` that runs the WSGI
app (Flask and SQLAlchemy stay synchronous, exactly as before). The body is streamed to the app
as it reads it, and the response streamed back as the app yields it, gathered into pieces of
STREAM_BUFFER bytes (PEP 3333 over ASGI 3).
Selected in gunicorn.conf.py: `worker_class = "bridge.serving.Worker"`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Callable, Coroutine, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gasgi import ASGIWorker

Scope = MutableMapping[str, Any]
Receive = Callable[[], Coroutine[Any, Any, MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Coroutine[Any, Any, None]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Worker(ASGIWorker):  # type: ignore[misc]
    """gunicorn's asyncio worker, serving the WSGI app through `WsgiOnAsgi`."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """`threads` sizes the app's thread pool here (the parent warns it is unused)."""

    def _setup_event_loop(self) -> None:
        """asyncio's loop, as gunicorn makes it (uvloop is not installed), but _EventLoop."""
        self.loop = _EventLoop(int(self.cfg.backlog))
        asyncio.set_event_loop(self.loop)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        wsgi: WsgiApp = self.__dict__["asgi"]  # what `bridge:create_app()` made: a Flask app
        limit = getattr(wsgi, "config", {}).get("MAX_CONTENT_LENGTH") or PREFETCH
        threads = max(1, int(self.cfg.threads))
        self.asgi = WsgiOnAsgi(wsgi, threads=threads, prefetch=limit)
        self.log.info("the app runs in %d thread%s", threads, "s" if threads > 1 else "")
        self.log.info("%d startup objects set aside from the cycle collector", _set_aside())


class AccessLog(Logger):  # type: ignore[misc]
    """gunicorn's logger, with its access line a JSON object written by json.dumps.

    gunicorn fills a format string (`access_log_format`) with the request's values, quotes
    escaped and nothing else: a path with %0A in it (decoded: a line break) split the line in
    two, the second of the client's choosing (a forged access line), and a backslash made it
    invalid JSON. Here every value is JSON-encoded (a line break is `\\n`, anything not ASCII
    a `\\u` escape), so one request is always one line that parses. It is cheaper too, on the
    event loop's thread: gunicorn builds some 40 values (every header, every environ key) for
    the 8 the line holds: 14 us a request against 25 (timeit, a SCIM GET's headers).
    An operator who sets --access-logformat gets gunicorn's line, in that format."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        if self.cfg.access_log_format != _GUNICORN_FORMAT:
            super().access(resp, req, environ, request_time)
            return
        self.access_log.info(
            access_line(resp.status, resp.headers, resp.sent, environ, request_time)
        )


_GUNICORN_FORMAT = Config().access_log_format  # gunicorn's default: nobody asked for another


def access_line(
    status: Any, headers: Iterable[tuple[str, str]], sent: int | None, environ: Any, took: Any
) -> str:
    """The access log's line for one request: when it ended (UTC), its request id (the
    X-Request-ID the app answered with; null if the answer has none), the client's address,
    method and path (decoded; the query is left out: it can carry a SAMLRequest, a code or a
    state), the status, the body's bytes sent and the milliseconds from its first byte read to
    its last byte written."""
    request_id = None
    for name, value in headers:
        if name.lower() == "x-request-id":
            request_id = value
    if isinstance(status, str):  # gunicorn's WSGI workers give "200 OK"
        status = int(status.split(None, 1)[0])
    return json.dumps(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "logger": "access",
            "request_id": request_id,
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": status,
            "bytes": sent,
            "ms": round(took.seconds * 1000 + took.microseconds / 1000, 3),
        },
        separators=(",", ":"),  # compact, as the format string's lines were: `"method":"POST"`
    )


class _EventLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop, listening with gunicorn's backlog (`backlog`, 2048 by default).

    gunicorn's master listens with its `backlog`; each worker's asyncio server then listens again
    on that socket with the backlog it was given, and gunicorn gives none: asyncio's default,
    100, was the kernel's queue of connections not yet accepted (`ss -ltn` showed 100 whatever
    the setting). A burst of new connections past it (browsers posting the IdP's form at nine in
    the morning) would have had SYNs dropped and retried a second later."""

    def __init__(self, backlog: int) -> None:
        super().__init__()
        self._listen_backlog = backlog

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backlog", self._listen_backlog)
        return await super().create_server(*args, **kwargs)


def _set_aside() -> int:
    """Move the objects that exist once the app is loaded (modules, the app, SQLAlchemy's and
    lxml's structures: some 160,000) out of the cycle collector's sight (gc.freeze), and say
    how many. They live as long as the worker, yet each full collection walked them all while
    holding the GIL: in a warmed worker 3 full collections per 1,200 requests, each stopping
    every app thread for 40-130 ms (the logins' p99 is made of such pauses); frozen, the same
    collections take under 2 ms. Garbage first, so nothing dead is kept for good."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class WsgiOnAsgi:
    """An ASGI 3 application running a WSGI application in a thread pool."""

    def __init__(self, app: WsgiApp, *, threads: int, prefetch: int = 0) -> None:
        self.app, self.prefetch = app, prefetch
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        read = _body_read(scope, self.prefetch)
        body = _Body(receive, loop, empty=read == NO_BODY)
        if read == BEFORE:
            # read here: a slow or stalled upload holds a coroutine, never one of the app's
            # threads, and the app's thread never waits on the loop for its body
            await body.prefetch(self.prefetch)
        environ = _environ(scope, body)
        # the response's last messages (all of a one-chunk response) come back with the
        # thread's result and are sent here: no hand-over to the loop and back to send them
        for message in await loop.run_in_executor(self.pool, _run, self.app, environ, send, loop):
            await send(message)


PREFETCH = 1_048_576  # bytes read before the app runs, when the app sets no MAX_CONTENT_LENGTH


NO_BODY, BEFORE, BY_APP = "no body", "before the app", "by the app"


def _body_read(scope: Scope, limit: int) -> str:
    """When the request's body is read. BEFORE the app runs: one announced (Content-Length) at
    most `limit` bytes, or a chunked one (read until it ends or passes the limit). BY_APP as it
    asks: one announced larger (the app refuses it on its length alone: 413). NO_BODY: neither
    header (RFC 9112 §6.3: a request without them has none) or a length of 0; the app's reads
    end at once, without asking the loop."""
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"content-length":
            if value == b"0":
                return NO_BODY
            return BEFORE if value.isdigit() and int(value) <= limit else BY_APP
        if name == b"transfer-encoding":
            return BEFORE
    return NO_BODY


async def _send_all(send: Send, messages: tuple[dict[str, Any], ...]) -> None:
    for message in messages:
        await send(message)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


STREAM_BUFFER = 65_536  # bytes of a streamed response gathered before a hand-over to the loop


def _run(
    app: WsgiApp, environ: dict[str, Any], send: Send, loop: Any
) -> tuple[dict[str, Any], ...]:
    """Call the WSGI app in this (pool) thread; return the response's last messages, which the
    loop sends when it takes the result.

    Each hand-over to the loop costs this thread a wait for the loop's thread to take the GIL
    from the app's other threads (up to the 5 ms switch interval each when they are busy), and
    both threads a wake-up (a futex, the loop's self-pipe). So a response of one chunk (what
    Flask returns but for streamed ones) goes back whole with the result, head and body
    together; a streamed one (a SCIM group yields a chunk per member) is gathered into
    STREAM_BUFFER bytes at a time, each sent through the loop as the next chunk comes, the
    last with the end returned."""
    head: dict[str, Any] = {"sent": False}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and head["sent"]:  # PEP 3333: too late to change the status
            raise exc_info[1].with_traceback(exc_info[2])
        head["status"] = int(status.split(" ", 1)[0])
        head["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return lambda data: None  # the legacy write() callable: unused by Flask

    def messages(chunk: bytes, *, more: bool) -> tuple[dict[str, Any], ...]:
        body = {"type": "http.response.body", "body": chunk, "more_body": more}
        if head["sent"]:
            return (body,)
        head["sent"] = True
        start = {"type": "http.response.start", "status": head["status"]}
        return {**start, "headers": head["headers"]}, body

    result = app(environ, start_response)
    try:
        pending: list[bytes] = []  # gathered, sent when full and more comes, or at the end
        size = 0
        for chunk in result:
            if chunk:
                if size >= STREAM_BUFFER:
                    sending = _send_all(send, messages(b"".join(pending), more=True))
                    asyncio.run_coroutine_threadsafe(sending, loop).result()
                    pending, size = [], 0
                pending.append(chunk)
                size += len(chunk)
        return messages(b"".join(pending), more=False)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


class _Body:
    """wsgi.input: the request body, read from the event loop as the app asks for it."""

    def __init__(self, receive: Receive, loop: Any, *, empty: bool = False) -> None:
        self._receive, self._loop = receive, loop
        self._buffer = bytearray()
        self._done = empty

    async def prefetch(self, limit: int) -> None:
        """Read the body on the loop (before the app runs) until it ends or passes `limit`
        bytes; the app reads any rest as it asks (and refuses a body that long)."""
        while not self._done and len(self._buffer) <= limit:
            self._take(await self._receive())

    def _fill(self) -> None:
        self._take(asyncio.run_coroutine_threadsafe(self._receive(), self._loop).result())

    def _take(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] != "http.request":  # http.disconnect
            self._done = True
            return
        self._buffer += message.get("body", b"")
        self._done = not message.get("more_body", False)

    def read(self, size: int | None = -1) -> bytes:
        while not self._done and (size is None or size < 0 or len(self._buffer) < size):
            self._fill()
        n = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and not self._done:
            if size is not None and size >= 0 and len(self._buffer) >= size:
                break
            self._fill()
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        out = bytes(self._buffer[:end])
        del self._buffer[:end]
        return out

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def _environ(scope: Scope, body: _Body) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI HTTP scope (PATH_INFO as latin-1 of the raw bytes)."""
    raw_path = scope.get("raw_path")
    path = (
        unquote_to_bytes(raw_path.split(b"?", 1)[0]) if raw_path else scope["path"].encode("utf-8")
    )
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,  # the worker de-chunks: read to the end (Werkzeug)
    }
    for raw_name, raw_value in scope.get("headers", []):
        name, value = (
            raw_name.decode("latin-1").upper().replace("-", "_"),
            raw_value.decode("latin-1"),
        )
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
