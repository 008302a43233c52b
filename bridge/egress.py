"""Outbound HTTP to addresses customers give us (webhook and logout endpoints): https only, and
only to public addresses unless the deployment allows private ones (local development), so a
tenant cannot make the bridge call into its own network (SSRF). Redirects are never followed.
Every DNS answer is checked, and the connection goes to a checked address (bridge.fetch's
pinned connections), so a second lookup cannot rebind the name to a private one.

Connections are kept alive (HTTP/1.1) in a `Pool`, one set per scheme, host, port and guard
setting: a later send to the same endpoint reuses a connection the guard approved when it was
opened, for at most KEEP_AGE seconds (then the name is resolved and checked again) and only
after at most KEEP_IDLE seconds idle (servers close idle connections: Node.js after 5 s).
"""

from __future__ import annotations

import http.client
import ipaddress
import select
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge import fetch, values
from bridge.errors import InvalidInput

EXCERPT = 500
DRAIN = 64 * 1024  # bytes of an answer read past the excerpt to keep its connection for reuse
KEEP_IDLE = 4.0
KEEP_AGE = 60.0
KEEP_PER_ENDPOINT = 8


def check_url(url: str, *, allow_private: bool, what: str = "URL") -> str:
    """Refuse a URL that is not https, or resolves to a non-public address (unless allowed);
    return the checked address to connect to."""
    parts = urlsplit(url)
    if not parts.hostname or len(url) > 2048:
        raise InvalidInput(f"{what} {url[:200]!r} is not an absolute URL")
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise InvalidInput(f"{what} {url[:200]!r} must be https")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InvalidInput(f"cannot resolve {parts.hostname}: {exc.strerror}") from exc
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not allow_private and not ip.is_global:
            raise InvalidInput(
                f"{what} {url[:200]!r} points at a non-public address ({ip}); "
                "set BRIDGE_ALLOW_PRIVATE_WEBHOOKS=1 to allow it (development only)"
            )
    if not infos:
        raise InvalidInput(f"{what} {url[:200]!r} resolves to no address")
    return str(infos[0][4][0])


@dataclass(frozen=True)
class Answer:
    status: int | None
    latency_ms: int
    excerpt: str | None
    error: str | None


Key = tuple[str, str, int, bool]  # scheme, host, port, private addresses allowed


@dataclass
class _Kept:
    conn: http.client.HTTPConnection
    opened: float
    idle_since: float = 0.0


class Pool:
    """Idle kept-alive connections by endpoint, shared by the threads of one worker (each
    connection serves one send at a time: it is taken out while in use)."""

    def __init__(self) -> None:
        self._idle: dict[Key, list[_Kept]] = {}
        self._lock = threading.Lock()

    def take(self, key: Key) -> _Kept | None:
        """The most recently used idle connection still fit for reuse, or None."""
        now = time.monotonic()
        while True:
            with self._lock:
                kept = self._idle.get(key, []).pop() if self._idle.get(key) else None
            if kept is None:
                return None
            fresh = now - kept.idle_since <= KEEP_IDLE and now - kept.opened <= KEEP_AGE
            if fresh and not _readable(kept.conn):  # the server has not closed it (or said more)
                return kept
            kept.conn.close()

    def give(self, key: Key, kept: _Kept) -> None:
        kept.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < KEEP_PER_ENDPOINT:
                idle.append(kept)
                return
        kept.conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for kept in (k for ks in idle.values() for k in ks):
            kept.conn.close()


def _readable(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read: the server's close (EOF) or stray bytes."""
    if conn.sock is None:
        return True
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


# A kept connection the server closed while idle fails like this before any answer: the one
# case where the request goes again on a fresh connection (the receiver de-duplicates anyway).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
    pool: Pool | None = None,
) -> Answer:
    """POST `body`; the answer's status and first bytes, or the error (never raises). With a
    pool, the connection is kept for the next send to the same endpoint."""
    started = time.monotonic()
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        key: Key = (scheme, host, parts.port or (443 if scheme == "https" else 80), allow_private)
        path = parts.path or "/"
        target = f"{path}?{parts.query}" if parts.query else path
        kept = pool.take(key) if pool is not None else None
        if kept is not None:
            try:
                return _exchange(kept, key, target, body, headers, pool, started)
            except _STALE:
                pass  # closed by _exchange; a fresh connection below
        address = check_url(url, allow_private=allow_private)
        kind = fetch.PinnedHTTPS if scheme == "https" else fetch.PinnedHTTP
        conn = kind(host, key[2], address, timeout=timeout)
        return _exchange(_Kept(conn, time.monotonic()), key, target, body, headers, pool, started)
    except (OSError, ValueError, http.client.HTTPException, InvalidInput) as exc:
        detail = exc.detail if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
        # a server's bytes can be in it (a bad status line)
        return Answer(None, _ms(started), None, values.storable(detail[:EXCERPT]))


def _exchange(
    kept: _Kept,
    key: Key,
    target: str,
    body: bytes,
    headers: dict[str, str],
    pool: Pool | None,
    started: float,
) -> Answer:
    """One request and answer on `kept`; the connection goes back to the pool only when the
    answer was read to its end and the server keeps the connection open."""
    conn, reusable = kept.conn, False
    try:
        conn.request("POST", target, body, headers)
        response = conn.getresponse()
        excerpt = values.storable(response.read(EXCERPT).decode("utf-8", errors="replace"))
        if pool is not None and not response.will_close:
            response.read(DRAIN)  # the rest of a short answer; a longer one ends the connection
            reusable = response.isclosed()
        status = response.status
    finally:
        if reusable and pool is not None:
            pool.give(key, kept)
        else:
            conn.close()
    return Answer(status, _ms(started), excerpt, None)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
