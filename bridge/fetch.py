"""Fetching IdP metadata by URL without becoming a proxy into our own network (an SSRF guard).

Every hop (the URL and each redirect) is judged before it is requested: https only, and every
address its name resolves to must be public (one private answer refuses the hop: a resolver may
hand either to the connection). The connection then goes to an address that was checked, never
through a second lookup (DNS rebinding), with TLS verified against the name. Redirects are
followed by hand, at most MAX_REDIRECTS, each one judged again. Size and time are limited.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from bridge.errors import InvalidInput

MAX_BYTES = 1_048_576
TIMEOUT_SECONDS = 10
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}

# How a name resolves (a seam for tests): host, port -> addresses, every answer.
Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidInput(f"cannot resolve {host}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch(url: str, *, allow_private: bool = False, resolver: Resolver | None = None) -> str:
    """The document at `url`, every hop checked (see the module docstring)."""
    resolver = resolver or resolve
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidInput(f"metadata URL {url!r} must be https")
        port = parts.port or 443
        address = _checked_address(url, resolver(parts.hostname, port), allow_private)
        conn = PinnedHTTPS(parts.hostname, port, address, timeout=TIMEOUT_SECONDS)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"Accept": "application/samlmetadata+xml"})
            with conn.getresponse() as response:
                status, location = response.status, response.getheader("Location")
                body = response.read(MAX_BYTES + 1) if status == 200 else b""
        except (OSError, http.client.HTTPException) as exc:
            raise InvalidInput(f"cannot fetch {url}: {exc}") from exc
        finally:
            conn.close()
        if status in REDIRECTS:
            if not location:
                raise InvalidInput(f"{url} redirects nowhere")
            url = urljoin(url, location)
            continue
        if status != 200:
            raise InvalidInput(f"cannot fetch {url}: HTTP {status}")
        if len(body) > MAX_BYTES:
            raise InvalidInput(f"metadata at {url} is larger than {MAX_BYTES} bytes")
        return body.decode("utf-8", errors="replace")
    raise InvalidInput(f"metadata URL {url!r}: more than {MAX_REDIRECTS} redirects")


def public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is on the public internet (not loopback, private, link-local...)."""
    return ip.is_global


def _checked_address(url: str, addresses: list[str], allow_private: bool) -> str:
    if not addresses:
        raise InvalidInput(f"metadata URL {url!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not allow_private and not public(ip):
            raise InvalidInput(
                f"metadata URL {url!r} points at a non-public address ({ip}); "
                "set BRIDGE_ALLOW_PRIVATE_METADATA=1 to allow it"
            )
    return addresses[0]


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, the certificate verified for the URL's name."""

    def __init__(self, host: str, port: int, address: str, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = _connected(self._address, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class PinnedHTTP(http.client.HTTPConnection):
    """Plain HTTP to a checked address (development only: private addresses allowed)."""

    def __init__(self, host: str, port: int, address: str, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = _connected(self._address, self.port, self.timeout)


def _connected(address: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection with Nagle's algorithm off, as http.client's own connect makes it:
    http.client sends a request's headers and body in two writes, and on a kept-alive
    connection the body would otherwise wait for the peer's delayed ACK (40 ms on Linux)."""
    sock = socket.create_connection((address, port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
