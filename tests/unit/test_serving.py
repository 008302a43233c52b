"""The WSGI-over-ASGI adapter gunicorn serves the app through (bridge/serving.py), driven at its
ASGI boundary as gunicorn's asyncio worker drives it: what reaches `send`, and when the request
body is read (on the loop before the app runs, or by the app's thread through the loop)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest

from bridge import serving
from bridge.serving import WsgiOnAsgi

LIMIT = 4  # bytes read before the app runs (the app's MAX_CONTENT_LENGTH in the worker)


def serve(app: Any, *, body: list[bytes] = (), headers: list[tuple[bytes, bytes]] = ()) -> Any:
    """One request through the adapter: (the messages sent, the order of events)."""
    events: list[str] = []
    sent: list[dict[str, Any]] = []
    parts = list(body)

    async def receive() -> dict[str, Any]:
        events.append("receive")
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        events.append("app")
        return app(environ, start_response)

    scope = {
        "type": "http",
        "method": "POST" if body else "GET",
        "path": "/x",
        "raw_path": b"/x",
        "query_string": b"",
        "headers": list(headers),
    }
    adapter = WsgiOnAsgi(wsgi, threads=1, prefetch=LIMIT)
    try:
        asyncio.run(adapter(scope, receive, send))
    finally:
        adapter.pool.shutdown()
    return sent, events


def answer(*chunks: bytes) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return list(chunks)

    return app


def test_a_one_chunk_response_goes_as_head_and_body_together():
    sent, _ = serve(answer(b"hello"))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"Content-Type", b"text/plain")],
        },
        {"type": "http.response.body", "body": b"hello", "more_body": False},
    ]


def test_a_streamed_response_of_small_chunks_goes_in_one_piece_with_its_end():
    """Chunks gathered under STREAM_BUFFER bytes: one body message, no hand-over per chunk."""
    sent, _ = serve(answer(b"a", b"", b"b", b"c"))
    assert [(m.get("body"), m.get("more_body")) for m in sent] == [
        (None, None),  # the head
        (b"abc", False),
    ]


def test_a_streamed_response_goes_in_pieces_of_the_buffer_the_last_one_ending_it(monkeypatch):
    monkeypatch.setattr(serving, "STREAM_BUFFER", 2)
    sent, _ = serve(answer(b"a", b"b", b"", b"cde", b"f", b"g"))
    assert [(m.get("body"), m.get("more_body")) for m in sent] == [
        (None, None),
        (b"ab", True),
        (b"cde", True),
        (b"fg", False),
    ]


def test_an_empty_response_still_ends():
    sent, _ = serve(answer())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}


def echo(environ: dict[str, Any], start_response: Any) -> Any:
    data = environ["wsgi.input"].read()
    start_response("200 OK", [])
    return [data]


def test_a_body_within_the_limit_is_read_before_the_app_runs():
    """So a slow or stalled upload holds a coroutine, never one of the app's threads."""
    for headers in ([(b"content-length", b"4")], [(b"transfer-encoding", b"chunked")]):
        sent, events = serve(echo, body=[b"ab", b"cd"], headers=headers)
        assert events == ["receive", "receive", "app"], headers
        assert sent[-1] == {"type": "http.response.body", "body": b"abcd", "more_body": False}


def test_a_body_announced_past_the_limit_is_left_to_the_app():
    """The app refuses it on its length alone; here (echo) it reads it as it asks."""
    sent, events = serve(echo, body=[b"ab", b"cd", b"e"], headers=[(b"content-length", b"5")])
    assert events == ["app", "receive", "receive", "receive"]
    assert sent[-1]["body"] == b"abcde"


def test_a_chunked_body_is_read_until_it_passes_the_limit_the_rest_by_the_app():
    chunks = [b"ab", b"cd", b"e", b"fg"]
    sent, events = serve(echo, body=chunks, headers=[(b"transfer-encoding", b"chunked")])
    assert events == ["receive"] * 3 + ["app", "receive"]
    assert sent[-1]["body"] == b"abcdefg"


def test_no_body_nothing_read():
    """Neither Content-Length nor Transfer-Encoding (RFC 9112 §6.3), or a length of 0: the
    app's read() ends at once, without waiting on the loop to ask gunicorn."""
    for headers in ([], [(b"content-length", b"0")]):
        sent, events = serve(echo, headers=headers)
        assert events == ["app"], headers
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


class Closing:
    """A WSGI response iterable noting when it is iterated and closed."""

    def __init__(self, chunks: list[bytes], events: list[str]) -> None:
        self.chunks, self.events = chunks, events

    def __iter__(self) -> Any:
        for chunk in self.chunks:
            self.events.append(f"yield {chunk.decode()}")
            yield chunk

    def close(self) -> None:
        self.events.append("close")


def traced(chunks: list[bytes]) -> tuple[Any, list[str]]:
    """An app answering `chunks`, and the events of its thread and of what reaches `send`."""
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return Closing(chunks, events)

    return app, events


def test_a_one_chunk_response_is_sent_by_the_loop_once_the_app_is_done():
    """No hand-over to the loop and back: the head and body come back with the thread's
    result (the app has closed its response by then) and the loop sends them."""
    app, events = traced([b"a"])
    sent = run_recorded(app, events)
    assert events == ["yield a", "close", "send start", "send a (end)"]
    assert sent[-1] == {"type": "http.response.body", "body": b"a", "more_body": False}


def test_a_streamed_response_sends_each_full_buffer_while_the_app_runs(monkeypatch):
    """Each STREAM_BUFFER bytes go through the loop when the next chunk comes, before the app
    is done; the rest, with the end, comes back with the result."""
    monkeypatch.setattr(serving, "STREAM_BUFFER", 2)
    app, events = traced([b"a", b"b", b"c", b"d", b"e"])
    run_recorded(app, events)
    assert events == [
        "yield a",
        "yield b",
        "yield c",
        "send start",
        "send ab",
        "yield d",
        "yield e",
        "send cd",
        "close",
        "send e (end)",
    ]


def run_recorded(app: Any, events: list[str]) -> list[dict[str, Any]]:
    """One GET through the adapter, `send` noting each message in `events`."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            events.append("send start")
        else:
            end = "" if message["more_body"] else " (end)"
            events.append(f"send {message['body'].decode()}{end}")

    scope = {"type": "http", "method": "GET", "path": "/x", "raw_path": b"/x", "headers": []}
    adapter = WsgiOnAsgi(app, threads=1, prefetch=LIMIT)
    try:
        asyncio.run(adapter(scope, receive, send))
    finally:
        adapter.pool.shutdown()
    return sent


def test_an_operators_access_log_format_is_gunicorns(tmp_path):
    """--access-logformat set by the operator: gunicorn's own line in that format; unset, ours
    (a JSON object)."""
    from types import SimpleNamespace

    from gunicorn.config import Config

    def line_of(cfg):
        log = serving.AccessLog(cfg)
        resp = SimpleNamespace(status=201, headers=[("X-Request-ID", "r1")], sent=12)
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/p",
            "REMOTE_ADDR": "10.0.0.1",
            "RAW_URI": "/p",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        took = SimpleNamespace(seconds=0, microseconds=2500)
        log.access(resp, SimpleNamespace(headers=[]), environ, took)
        for handler in log.access_log.handlers + log.error_log.handlers:
            handler.close()
        return (tmp_path / "access.log").read_text().splitlines()[-1]

    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    ours = json.loads(line_of(cfg))
    assert ours["status"] == 201 and ours["request_id"] == "r1" and ours["bytes"] == 12
    assert ours["ms"] == 2.5 and ours["path"] == "/p" and ours["remote"] == "10.0.0.1"
    cfg.set("access_log_format", "%(s)s %(U)s %({x-request-id}o)s")
    assert line_of(cfg) == "201 /p r1"


def test_the_board_of_open_connections():
    """The master claims a slot per worker (a dead worker's slot again for its replacement);
    each worker writes its count; a loop reads the fewest any other started worker holds."""
    import os
    import subprocess

    board = serving._Board()
    first, second = board.claim(), board.claim()
    assert (first, second) == (0, 1)
    assert board.least_other(first) is None  # the other is claimed, not started
    board.publish(first, os.getpid(), 3)
    board.publish(second, os.getppid(), 1)
    assert board.least_other(first) == 1 and board.least_other(second) == 3
    dead = subprocess.Popen(["true"])
    dead.wait()
    board.publish(second, dead.pid, 0)  # that worker died
    assert board.least_other(first) is None  # its slot does not count
    assert board.claim() == 1  # and goes to the worker that replaces it
    board.release(first)
    assert board.claim() == 0


def test_the_accept_defer_setting_is_milliseconds_within_bounds():
    """GUNICORN_ACCEPT_DEFER_MS: unset or empty, 10 ms (DEFAULT_ACCEPT_DEFER); 0 is off; a
    number of milliseconds up to the bound is seconds here; anything else is refused with the
    variable's name and what it takes (`inf` would let a hung worker hold every new connection
    back; a typo must not turn it off)."""
    assert serving.accept_defer_limit(None) == serving.accept_defer_limit(" ") == 0.01
    assert serving.accept_defer_limit("0") == 0
    assert serving.accept_defer_limit(" 2 ") == 0.002
    assert serving.accept_defer_limit(str(serving.MAX_ACCEPT_DEFER_MS)) == 10
    for bad in ("abc", "2ms", "inf", "nan", "-1", str(serving.MAX_ACCEPT_DEFER_MS + 1)):
        with pytest.raises(ValueError, match=r"GUNICORN_ACCEPT_DEFER_MS must be milliseconds"):
            serving.accept_defer_limit(bad)


class _Deferring:
    """A worker as _Spreading sees it: leaves the first `defer` connections' accepts to others."""

    def __init__(self, defer: int) -> None:
        self.defer, self.asked, self.taken = defer, 0, 0
        self.log = logging.getLogger("test")

    def defer_accept(self) -> bool:
        self.asked += 1
        return self.asked <= self.defer

    def accepted(self) -> None:
        self.taken += 1


def _watched_loop(worker: _Deferring) -> tuple[Any, list[float]]:
    """A spreading uvloop loop for `worker`, and how long its server left the listening socket
    alone each time (its calls of _Spreading._watch)."""
    loop = serving._UvLoop(16, worker)  # type: ignore[arg-type]
    left: list[float] = []
    call_later = loop.call_later

    def leaving(delay: float, callback: Any, *args: Any) -> Any:
        if getattr(callback, "__func__", None) is serving._Spreading._watch:
            left.append(delay)
        return call_later(delay, callback, *args)

    loop.call_later = leaving
    return loop, left


def test_a_spreading_server_accepts_after_leaving_the_socket_alone_and_stops_when_closed():
    """bridge.serving._Spreading on uvloop's loop: asked to defer, it leaves the waiting
    connection for ACCEPT_DEFER_STEP, then accepts it and hands it to uvloop (the protocol
    answers over uvloop's transport, TCP_NODELAY set); closed, it accepts nothing more (the
    connection waits in the socket's queue) and the socket stays open (it is gunicorn's)."""
    worker = _Deferring(defer=2)
    answers: list[bytes] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            sock = transport.get_extra_info("socket")
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.write(b"nodelay %d" % nodelay)
            transport.close()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        port = listening.getsockname()[1]
        server = await loop.create_server(Echo, sock=listening)
        assert isinstance(server, serving._Spreading) and server.is_serving()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers.append(await asyncio.wait_for(reader.read(100), 5))
        writer.close()
        assert (worker.asked, worker.taken) == (3, 1)
        assert left == [serving.ACCEPT_DEFER_STEP] * 2  # asked again after leaving it alone
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the kernel's queue
        await asyncio.sleep(0.05)
        assert (worker.asked, worker.taken) == (3, 1)  # never looked at
        writer.close()
        assert listening.fileno() != -1
        listening.close()

    loop, left = _watched_loop(worker)
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert answers == [b"nodelay 1"]


def test_a_spreading_server_that_cannot_accept_rests_a_second_and_says_why(caplog):
    """Out of descriptors (EMFILE), an accept fails: _Spreading logs why, leaves the socket
    alone for a second (as asyncio does) instead of spinning on it, and then accepts again."""
    worker = _Deferring(defer=0)
    failing = [OSError(24, "Too many open files")]

    class Refusing:
        """The listening socket, whose first accept fails as an exhausted process's does."""

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def accept(self) -> Any:
            if failing:
                raise failing.pop()
            return self.sock.accept()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        server = await loop.create_server(asyncio.Protocol, sock=listening)
        server._sock = Refusing(listening)
        _reader, writer = await asyncio.open_connection(*listening.getsockname())
        for _ in range(100):
            if worker.taken:
                break
            await asyncio.sleep(0.02)
        writer.close()
        server.close()
        listening.close()

    loop, left = _watched_loop(worker)
    with caplog.at_level(logging.ERROR, logger="test"):
        try:
            loop.run_until_complete(scenario())
        finally:
            loop.close()
    assert left == [1.0] and worker.taken == 1
    assert "could not accept a connection: [Errno 24] Too many open files" in caplog.text
