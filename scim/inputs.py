"""Request bodies checked before anything else reads them: JSON that every database can store.

RFC 8259 §9 lets a parser limit nesting depth and number ranges; RFC 7644 leaves limits to the
service provider. Refused with invalidSyntax/invalidValue (400): nesting past MAX_DEPTH,
`NaN`/`Infinity` and numbers beyond a double (`1e400`), and in any string (key or value) a NUL
(PostgreSQL text cannot hold it) or a lone UTF-16 surrogate (not encodable as UTF-8; SQLite
refuses it). Limits of single attributes (lengths, types) are the store's: bridge.values.
"""

from __future__ import annotations

import json
import math
from typing import Any

from scim.errors import InvalidSyntax, InvalidValue

MAX_DEPTH = 32


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`, checked; InvalidSyntax or InvalidValue otherwise."""
    try:
        doc = json.loads(raw, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise InvalidSyntax(f"the JSON body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidSyntax("the request body is not valid JSON") from None
    check_document(doc)
    return doc


def check_document(doc: Any) -> None:
    """Refuse a decoded document with deep nesting, a non-finite number or an unstorable string."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise InvalidSyntax(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                check_text(key, "a JSON key")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise InvalidSyntax(f"the JSON body is nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            check_text(value, "a JSON string")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue("numbers must be finite")


def check_text(text: str, what: str) -> None:
    """Refuse a NUL or a lone surrogate in `text` (`what` names it in the error)."""
    if "\x00" in text:
        raise InvalidValue(f"{what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(f"{what} contains a lone surrogate (not valid Unicode)") from None


def _constant(name: str) -> Any:
    raise InvalidValue(f"{name} is not a JSON number (RFC 8259 §6)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidValue(f"the number {text[:40]} is out of range")
    return value
