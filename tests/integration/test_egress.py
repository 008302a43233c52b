"""Outbound posts keep their connection alive per endpoint (bridge.egress.Pool): reused only
while fit (read to the end, not closed by the server, not idle or old), never for a send the
SSRF guard would refuse, and with Nagle's algorithm off."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge import egress


class Server:
    """A loopback HTTP/1.1 server that records each request's connection (client port)."""

    def __init__(self, *, close_after: bool = False, body: bytes = b"", extra: dict | None = None):
        self.ports: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                server.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                # closes without saying so (no Connection: close), as an idle timeout does
                self.close_connection = close_after

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pool():
    p = egress.Pool()
    yield p
    p.close()


def _post(url: str, pool: egress.Pool | None, *, allow_private: bool = True) -> egress.Answer:
    return egress.post(url, b"{}", {}, allow_private=allow_private, timeout=5, pool=pool)


def test_sends_to_one_endpoint_share_a_connection(pool):
    """Three posts through a pool use one connection; without a pool, three."""
    server = Server()
    try:
        assert [_post(server.url, pool).status for _ in range(3)] == [200, 200, 200]
        assert len(set(server.ports)) == 1
        assert [_post(server.url, None).status for _ in range(3)] == [200, 200, 200]
        assert len(set(server.ports[3:])) == 3
    finally:
        server.close()


def test_a_kept_connection_has_nagle_off(pool):
    """http.client writes headers and body apart: with Nagle on, a kept connection's body would
    wait for the peer's delayed ACK (40 ms a send on Linux)."""
    server = Server()
    try:
        assert _post(server.url, pool).status == 200
        (kept,) = pool._idle[("http", "127.0.0.1", server.httpd.server_address[1], True)]
        assert kept.conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.close()


def test_a_connection_the_server_closed_is_not_reused(pool):
    """The server closes after each answer: the next post notices (the idle socket reads as
    closed) and opens a new connection."""
    server = Server(close_after=True)
    try:
        assert _post(server.url, pool).status == 200
        assert _post(server.url, pool).status == 200
        assert len(set(server.ports)) == 2
    finally:
        server.close()


def test_a_post_on_a_connection_closed_under_it_goes_again_on_a_new_one(pool, monkeypatch):
    """A kept connection the server closed just as it was taken fails before any answer: the
    post goes once more on a fresh connection (the receiver de-duplicates on the id)."""
    server = Server(close_after=True)
    try:
        assert _post(server.url, pool).status == 200
        monkeypatch.setattr(egress, "_readable", lambda conn: False)  # the close goes unseen
        answer = _post(server.url, pool)
        assert answer.status == 200 and answer.error is None
        assert len(server.ports) == 2 and len(set(server.ports)) == 2
    finally:
        server.close()


def test_answers_that_end_the_connection_or_run_long_are_not_kept(pool):
    """`Connection: close`, or an answer longer than the pool reads past its excerpt, leaves
    nothing in the pool."""
    closing = Server(extra={"Connection": "close"})
    long = Server(body=b"x" * (egress.EXCERPT + egress.DRAIN + 1))
    try:
        for server in (closing, long):
            answer = _post(server.url, pool)
            assert answer.status == 200
            assert len(answer.excerpt) == (egress.EXCERPT if server is long else 0)
            assert _post(server.url, pool).status == 200
            assert len(set(server.ports)) == 2
        assert not any(pool._idle.values())
    finally:
        closing.close()
        long.close()


def test_an_idle_connection_is_not_reused_past_its_time(pool, monkeypatch):
    """A connection idle longer than KEEP_IDLE is closed, not reused (servers drop idle ones)."""
    server = Server()
    try:
        assert _post(server.url, pool).status == 200
        monkeypatch.setattr(egress, "KEEP_IDLE", -1.0)
        assert _post(server.url, pool).status == 200
        assert len(set(server.ports)) == 2
    finally:
        server.close()


def test_a_kept_connection_never_carries_a_send_the_guard_refuses(pool):
    """A connection opened while private addresses were allowed is not used for the same URL
    when they are not: the guard refuses that send, and nothing reaches the server."""
    server = Server()
    try:
        assert _post(server.url, pool).status == 200
        refused = _post(server.url, pool, allow_private=False)
        assert refused.status is None and "must be https" in refused.error
        https = server.url.replace("http:", "https:")
        refused = _post(https, pool, allow_private=False)
        assert refused.status is None and "non-public address" in refused.error
        assert len(server.ports) == 1
    finally:
        server.close()
