"""Redirect targets judged as a browser will read them: a plain local path or an allowed origin.

A browser resolving a Location header strips leading/trailing C0 controls and spaces, removes
every tab, CR and LF anywhere, reads `\\` as `/` in http(s) URLs and treats `//host` as another
origin (WHATWG URL Standard, "basic URL parser"). So `/\\t/evil.example` or `/\\\\evil.example`
leave the site although they start with `/`. Rather than emulate every such rewrite, a target is
refused when any of them could apply: what is accepted is read the same by every parser. Percent
escapes are decoded (repeatedly) and the decoded forms must pass too, so a later decoder cannot
turn an accepted target into a different one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MAX_LENGTH = 2048
_DECODE_ROUNDS = 4


class UnsafeRedirect(ValueError):
    """A redirect target that is not a plain local path or an allowed origin."""


def local_target(value: str, allowed_origins: Iterable[str]) -> str:
    """`value` unchanged when it is a plain local path (`/a/b?c#d`) or an http(s) URL on one of
    `allowed_origins` (`scheme://host[:port]`); UnsafeRedirect naming the problem otherwise."""
    if len(value) > MAX_LENGTH:
        raise UnsafeRedirect(f"longer than {MAX_LENGTH} characters")
    for form in _decodings(value):
        _plain(form)
    parts = urlsplit(value)
    if not parts.scheme and not parts.netloc:
        if not value.startswith("/"):
            raise UnsafeRedirect("not an absolute path (it must start with /)")
        return value
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise UnsafeRedirect(f"not a local path, nor an http(s) URL (scheme {parts.scheme!r})")
    if parts.username is not None or parts.password is not None:
        raise UnsafeRedirect("carries user information (user@host)")
    try:
        origin = origin_of(value)
    except ValueError as exc:
        raise UnsafeRedirect(str(exc)) from None
    if origin not in _origins(allowed_origins):
        raise UnsafeRedirect(f"origin {origin} is not one of ours")
    return value


def origin_of(url: str) -> str:
    """`scheme://host[:port]` in lower case, the default port dropped (RFC 6454 §4)."""
    parts = urlsplit(url)
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if not host:
        raise ValueError(f"{url[:100]!r} names no host")
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _origins(urls: Iterable[str]) -> set[str]:
    found = set()
    for url in urls:
        try:
            found.add(origin_of(url))
        except ValueError:  # a malformed configured origin allows nothing
            continue
    return found


def _decodings(value: str) -> list[str]:
    forms = [value]
    for _ in range(_DECODE_ROUNDS):
        try:
            decoded = unquote(forms[-1], errors="strict")
        except UnicodeDecodeError:
            raise UnsafeRedirect("percent-encodes bytes that are not UTF-8") from None
        if decoded == forms[-1]:
            return forms
        forms.append(decoded)
    raise UnsafeRedirect("percent-encoded more times than any link needs")


def _plain(form: str) -> None:
    """No character a browser would drop or rewrite, no second origin, no dot segments."""
    for char in form:
        if char == "\\":
            raise UnsafeRedirect("contains a backslash (browsers read it as /)")
        if char.isspace() or unicodedata.category(char)[0] in ("C", "Z"):
            raise UnsafeRedirect(f"contains the control or space character U+{ord(char):04X}")
    if form.startswith("//"):
        raise UnsafeRedirect("starts with // (another origin)")
    if any(s in (".", "..") for s in urlsplit(form).path.split("/")):
        raise UnsafeRedirect("contains a . or .. path segment")
