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
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

import uvloop
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gasgi import ASGIWorker

Scope = MutableMapping[str, Any]
Receive = Callable[[], Coroutine[Any, Any, MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Coroutine[Any, Any, None]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Worker(ASGIWorker):  # type: ignore[misc]
    """gunicorn's asyncio worker, serving the WSGI app through `WsgiOnAsgi`; when it spreads
    connections over the workers (unless GUNICORN_ACCEPT_DEFER_MS is 0), its open connections
    on the master's board (`_Board`) for its loop's accepts (`_Spreading`). Otherwise no board:
    nothing is claimed or written."""

    _board: _Board | None = None  # made in the master by the first worker; shared by the forks

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """`threads` sizes the app's thread pool here (the parent warns it is unused)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slot: int | None = None
        self._pending = 0  # accepted, not yet counted by gunicorn (its connection_made)
        self._deferring: float | None = None
        super().__init__(*args, **kwargs)  # runs in the master, before the fork
        if ACCEPT_DEFER_LIMIT > 0:
            if Worker._board is None:
                Worker._board = _Board()
            self._slot = Worker._board.claim()

    @property
    def nr_conns(self) -> int:
        """gunicorn's count of this worker's open connections, published on the board."""
        return int(self.__dict__.get("_nr_conns", 0))

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        if value > self.__dict__.get("_nr_conns", 0) and self._pending:
            self._pending -= 1  # an accepted connection is now gunicorn's
        self.__dict__["_nr_conns"] = value
        self._publish()

    def _publish(self) -> None:
        if self._board is not None and self._slot is not None and self.pid == os.getpid():
            self._board.publish(self._slot, self.pid, self.nr_conns + self._pending)

    def defer_accept(self) -> bool:
        """Whether to leave a waiting connection to another worker: one holds fewer open
        connections than this one (with those this one accepted and has not counted yet), and
        this one has not left connections waiting for ACCEPT_DEFER_LIMIT already (a worker
        that hangs with few connections, until gunicorn's timeout kills it, delays each new
        connection by that much at most)."""
        least = None
        if self._board is not None and self._slot is not None:
            least = self._board.least_other(self._slot)
        if least is None or self.nr_conns + self._pending <= least:
            self._deferring = None
            return False
        now = time.monotonic()
        if self._deferring is None:
            self._deferring = now
        if now - self._deferring >= ACCEPT_DEFER_LIMIT:
            self._deferring = None
            return False
        return True

    def accepted(self) -> None:
        self._pending += 1
        self._deferring = None
        self._publish()

    def notify(self) -> None:
        """gunicorn's heartbeat (every second): a connection accepted a second ago has been
        counted or has failed; either way it is no longer pending."""
        super().notify()
        if self._pending:
            self._pending = 0
            self._publish()

    def _setup_event_loop(self) -> None:
        """uvloop's event loop (_UvLoop; accepting as _Spreading says, unless
        GUNICORN_ACCEPT_DEFER_MS is 0). The loop's side of a request (reading it, handing it to
        a thread, writing the answer) then runs in C, and hands over to the app's threads more
        cheaply: a SCIM GET by id cost a worker 0.95 ms of CPU against 1.07 on asyncio's loop
        (its loop's thread 0.29 against 0.33, its app threads 0.66 against 0.74), 1,430 req/s
        against 1,142, better in each of 5 rounds (PostgreSQL, 2 workers, 4 keep-alive clients,
        both servers in the same rounds: bench/scim/cpu.py)."""
        spreading = None
        if self._board is not None and self._slot is not None:
            self._board.publish(self._slot, self.pid, 0)  # this worker's, from now on
            spreading = self
        self.loop: asyncio.AbstractEventLoop = _UvLoop(
            int(self.cfg.backlog), spreading, protocol=lambda: _Protocol(self)
        )
        asyncio.set_event_loop(self.loop)
        how = "its own accepts" if spreading is None else "connections spread over the workers"
        self.log.info("event loop: uvloop, %s", how)

    async def _shutdown(self) -> None:
        """Off the board first: a stopping worker accepts nothing, none should wait for it."""
        if self._board is not None and self._slot is not None:
            self._board.release(self._slot)
            self._slot = None
        await super()._shutdown()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        wsgi: WsgiApp = self.__dict__["asgi"]  # what `bridge:create_app()` made: a Flask app
        limit = getattr(wsgi, "config", {}).get("MAX_CONTENT_LENGTH") or PREFETCH
        threads = max(1, int(self.cfg.threads))
        self.asgi = WsgiOnAsgi(wsgi, threads=threads, prefetch=limit)
        self.log.info("the app runs in %d thread%s", threads, "s" if threads > 1 else "")
        self.log.info("%d startup objects set aside from the cycle collector", _set_aside())


class _Protocol(ASGIProtocol):  # type: ignore[misc]
    """gunicorn's protocol for a connection, writing an access line for a request it refuses
    itself, which gunicorn logs nowhere: its parser's (400 malformed, 414 a request line past
    limit_request_line, 431 past limit_request_fields, 501 an unknown transfer coding) and a
    WebSocket upgrade's (426, 400). A client refused so (a proxy's or an IdP's oversized
    request, say) now shows in the log: its address, the status and the body's bytes; no
    method, path or request id (the request was not read as one). gunicorn's 500 for an app
    that answered nothing comes after the app ran, and gunicorn logs it as any request.
    `_send_error_response` is gunicorn's own (pinned in pyproject.toml):
    tests/integration/test_gunicorn.py fails if these lines stop being written."""

    def _send_error_response(self, status: int, message: str, extra_headers: Any = ()) -> None:
        super()._send_error_response(status, message, extra_headers)
        if status != 500 and isinstance(self.log, AccessLog):
            peer = self.transport.get_extra_info("peername") if self.transport else None
            remote = peer[0] if isinstance(peer, tuple) else None
            self.log.refused(status, extra_headers, len(message.encode()), remote)


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

    def refused(self, status: int, headers: Any, sent: int, remote: str | None) -> None:
        """The access line of a request gunicorn refused before the app saw it (_Protocol); in
        our format only (an operator's --access-logformat needs the request gunicorn never
        made)."""
        if self.access_log_enabled and self.cfg.access_log_format == _GUNICORN_FORMAT:
            self.access_log.info(access_line(status, headers, sent, {"REMOTE_ADDR": remote}))


_GUNICORN_FORMAT = Config().access_log_format  # gunicorn's default: nobody asked for another


def access_line(
    status: Any,
    headers: Iterable[tuple[str, str]],
    sent: int | None,
    environ: Any,
    took: Any = None,
) -> str:
    """The access log's line for one request: when it ended (UTC), its request id (the
    X-Request-ID the app answered with; null if the answer has none), the client's address,
    method and path (decoded; the query is left out: it can carry a SAMLRequest, a code or a
    state), the status, the body's bytes sent and the milliseconds from its first byte read to
    its last byte written (null when not measured: a request gunicorn refused)."""
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
            "ms": None
            if took is None
            else round(took.seconds * 1000 + took.microseconds / 1000, 3),
        },
        separators=(",", ":"),  # compact, as the format string's lines were: `"method":"POST"`
    )


class _Board:
    """How many connections each worker holds, in memory the master shares with the workers it
    forks (an anonymous shared mmap): a slot per worker (its pid and count), claimed by the
    master when it makes the worker, written by the worker only, read by every worker's loop
    when a connection waits (_Spreading). A slot whose worker died is claimed again by the
    master for the worker that replaces it."""

    SLOTS = 64
    ENTRY = struct.Struct("=ii")  # pid (0: free, -1: claimed, the worker not started), count

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, self.SLOTS * self.ENTRY.size)

    def claim(self) -> int | None:
        for slot, (pid, _) in enumerate(self.ENTRY.iter_unpack(self.memory)):
            if pid == 0 or (pid > 0 and not _alive(pid)):
                self.ENTRY.pack_into(self.memory, slot * self.ENTRY.size, -1, 0)
                return slot
        return None  # more workers than slots: this one accepts as uvloop does

    def publish(self, slot: int, pid: int, count: int) -> None:
        self.ENTRY.pack_into(self.memory, slot * self.ENTRY.size, pid, count)

    def release(self, slot: int) -> None:
        self.ENTRY.pack_into(self.memory, slot * self.ENTRY.size, 0, 0)

    def least_other(self, slot: int) -> int | None:
        """The fewest connections another live worker holds (None: there is none). A worker
        killed (SIGKILL, gunicorn's timeout) leaves its slot as it was until the master claims
        it again, and a master told to run fewer workers does not: so a slot that would count is
        first checked to be a live process (a signal 0, a few microseconds)."""
        least = None
        for other, (pid, count) in enumerate(self.ENTRY.iter_unpack(self.memory)):
            if pid > 0 and other != slot and (least is None or count < least) and _alive(pid):
                least = count
        return least


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ACCEPT_DEFER_STEP = 0.001  # seconds a loop leaves a waiting connection to a less busy worker
# ... and at most, before it accepts the connection itself (GUNICORN_ACCEPT_DEFER_MS; 0: uvloop's
# own accept, every waiting connection, whatever the others hold). Bounded: a worker that hangs
# holding few connections (gunicorn kills it after its timeout, 30 s) must not hold new
# connections back for longer than this (the tests use 2,000)
MAX_ACCEPT_DEFER_MS = 10_000
# two of the GIL's switch intervals (5 ms): a worker's loop waits for its running app thread's
# (bench/scim --sqlite: 2 ms left one round of three split 3-1 where 10 split every round 2-2)
DEFAULT_ACCEPT_DEFER = 0.010


def accept_defer_limit(raw: str | None) -> float:
    """GUNICORN_ACCEPT_DEFER_MS in seconds: milliseconds from 0 (off) to MAX_ACCEPT_DEFER_MS;
    DEFAULT_ACCEPT_DEFER when unset or empty. Anything else stops the server before it starts,
    saying so: `inf` would let a hung worker hold every new connection back, and a typo must
    not turn it off."""
    text = (raw or "").strip()
    if not text:
        return DEFAULT_ACCEPT_DEFER
    try:
        ms = float(text)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= MAX_ACCEPT_DEFER_MS:  # also NaN
        raise ValueError(
            f"GUNICORN_ACCEPT_DEFER_MS must be milliseconds from 0 (off) to "
            f"{MAX_ACCEPT_DEFER_MS}, e.g. 2; got {raw!r}"
        )
    return ms / 1000


ACCEPT_DEFER_LIMIT = accept_defer_limit(os.environ.get("GUNICORN_ACCEPT_DEFER_MS"))


class _UvLoop(uvloop.Loop):
    """uvloop's event loop, listening with gunicorn's backlog, and accepting a connection in the
    worker where fewer are open (`_Spreading`; uvloop's own accepts when GUNICORN_ACCEPT_DEFER_MS
    is 0).

    Every worker's loop watches the one socket gunicorn's master listens on, and uvloop takes
    every connection waiting there when its loop wakes (libuv's accept, in C): 4 clients
    connecting at once to 2 workers landed 2-2 in 19 of 40 trials, 3-1 in 17, 4-0 in 4. A
    keep-alive connection (an IdP pushing SCIM, bench/scim's clients) stays where it landed, and
    a worker's app runs on one core (one thread on SQLite; the GIL's on PostgreSQL): 4
    connections on one worker queue behind each other while the other worker idles. Spread
    (bench/scim, 4 keep-alive clients, every round 2-2): SQLite's SCIM creates 1.38x-1.49x
    scim2-server in full runs (one round split 4-0: 0.73x); PostgreSQL's GETs by id 1.75x and
    1.89x in quick runs against 1.46x and 1.44x unspread (split 3-1 and 4-0), its creates and
    SAML first logins no slower. (On asyncio's loop, which this once needed, spreading cost a
    SCIM GET some 11 % more CPU and one account's creates 10-20 %.)

    It listens with gunicorn's backlog: gunicorn's master listens with its `backlog`; each
    worker's server then listens again on that socket with the backlog it was given, and
    gunicorn gives none: the loop's default, 100, was the kernel's queue of connections not yet
    accepted (`ss -ltn` showed 100 whatever the setting). A burst of new connections past it
    (browsers posting the IdP's form at nine in the morning) would have had SYNs dropped and
    retried a second later."""

    def __init__(
        self,
        backlog: int,
        worker: Worker | None = None,
        *,
        protocol: Callable[[], asyncio.Protocol] | None = None,
    ) -> None:
        super().__init__()
        self._listen_backlog = backlog
        self._worker = worker
        self._protocol = protocol  # the worker's (_Protocol), in place of the one it is given

    async def create_server(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        if self._protocol is not None:  # gunicorn's worker gives its ASGIProtocol: ours is one
            protocol_factory = self._protocol
        sock = kwargs.get("sock")
        if self._worker is None or sock is None or args:  # uvloop's own accepts
            kwargs.setdefault("backlog", self._listen_backlog)
            return await super().create_server(protocol_factory, *args, **kwargs)
        return _Spreading(self, self._worker, protocol_factory, sock, kwargs.get("ssl"))


class _Spreading:
    """A listening socket's server whose accepts the worker makes itself, one connection at a
    time, and none while another worker holds fewer open connections (the master's `_Board`):
    it leaves the socket alone for ACCEPT_DEFER_STEP, so the other worker's loop takes it, for
    ACCEPT_DEFER_LIMIT at most (DEFAULT_ACCEPT_DEFER: a loop that waits on its socket wakes in well
    under 1 ms, unless its worker's app thread holds the GIL). A connection it accepts is then
    uvloop's, as one its own accept made (`connect_accepted_socket`: the same transport,
    TCP_NODELAY set): only the accept is in Python, once a connection. What gunicorn's worker
    asks of a server: `close`, `wait_closed`, `is_serving`."""

    def __init__(
        self, loop: _UvLoop, worker: Worker, factory: Any, sock: socket.socket, ssl: Any
    ) -> None:
        self._loop, self._worker, self._factory, self._ssl = loop, worker, factory, ssl
        self._sock = sock
        sock.setblocking(False)
        sock.listen(loop._listen_backlog)
        self._fd = sock.fileno()
        self._serving = True
        self._waiting = False  # the socket left alone for a while (call_later: _watch)
        self._handing: set[asyncio.Task[None]] = set()  # accepted, being handed to uvloop
        loop.add_reader(self._fd, self._ready)

    def _ready(self) -> None:
        if not self._serving:
            return
        if self._worker.defer_accept():
            self._leave(ACCEPT_DEFER_STEP)
            return
        try:
            conn, _addr = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as exc:  # out of descriptors and the like: as asyncio, a second's rest
            self._worker.log.error("could not accept a connection: %s", exc)
            self._leave(1.0)
            return
        conn.setblocking(False)
        self._worker.accepted()
        task = self._loop.create_task(self._serve(conn))
        self._handing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._handing.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except Exception as exc:  # a TLS handshake that failed, a client gone: its own loss
            self._worker.log.debug("connection dropped before it was served: %s", exc)
            conn.close()

    def _leave(self, seconds: float) -> None:
        if not self._waiting:
            self._waiting = True
            self._loop.remove_reader(self._fd)
            self._loop.call_later(seconds, self._watch)

    def _watch(self) -> None:
        """Watch the listening socket again, if this server still serves (not while stopping)."""
        self._waiting = False
        if self._serving:
            self._loop.add_reader(self._fd, self._ready)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Accept nothing more (the socket is the master's: it stays open)."""
        if self._serving:
            self._serving = False
            if not self._waiting:
                self._loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        """Nothing to wait for: the connections it made are the worker's (gunicorn counts them)."""


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
