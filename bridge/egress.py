"""Outbound HTTP to addresses customers give us (webhook and logout endpoints): https only, and
only to public addresses unless the deployment allows private ones (local development), so a
tenant cannot make the bridge call into its own network (SSRF). Redirects are never followed.
Every DNS answer is checked, and the connection goes to a checked address (bridge.fetch's
pinned connections), so a second lookup cannot rebind the name to a private one.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge import fetch
from bridge.errors import InvalidInput

EXCERPT = 500


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


def post(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float
) -> Answer:
    """POST `body`; the answer's status and first bytes, or the error (never raises)."""
    started = time.monotonic()
    try:
        address = check_url(url, allow_private=allow_private)
        parts = urlsplit(url)
        kind = fetch.PinnedHTTPS if parts.scheme == "https" else fetch.PinnedHTTP
        default_port = 443 if parts.scheme == "https" else 80
        conn = kind(parts.hostname or "", parts.port or default_port, address, timeout=timeout)
        try:
            path = parts.path or "/"
            conn.request("POST", f"{path}?{parts.query}" if parts.query else path, body, headers)
            response = conn.getresponse()
            excerpt = response.read(EXCERPT).decode("utf-8", errors="replace")
            status = response.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, InvalidInput) as exc:
        detail = exc.detail if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
        return Answer(None, _ms(started), None, detail[:EXCERPT])
    return Answer(status, _ms(started), excerpt, None)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
