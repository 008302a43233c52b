"""scim.filters.parse keeps one parsed tree per filter shape and puts each filter's strings back
into it: every answer, and every refusal with its words, must be what a parse of the filter
itself gives."""

from __future__ import annotations

import pytest

from scim import filters
from scim.errors import InvalidFilter

LONG = 'userName eq "' + "x" * (filters.MAX_FILTER - 14) + '"'

FILTERS = [
    'userName eq "ann@example.com"',
    'USERNAME Eq "Ann@Example.com"',
    'externalId eq "00u1"',
    'userName eq ""',
    'displayName eq "a \\"quoted\\" name"',
    'displayName eq "back\\\\slash"',
    'displayName eq "\\u00e9t\\u00e9 \\ud83d\\ude00"',
    'displayName eq "\\u0001"',  # what a hole holds, said by the filter itself
    'title eq "x" and (userType eq "y" or not (active eq true))',
    'a eq "1" or b eq "2" and c eq "3"',
    'emails[type eq "work" and value co "@example.com"]',
    'emails[type eq "work"].value eq "ann@example.com"',
    'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7"',
    'meta.lastModified gt "2026-01-01T00:00:00Z"',
    "active eq true and x eq 1.5e3 and y eq null and z pr",
    'members[value eq "9f1c2e4a-0000-4000-8000-000000000000"]',
    'userName eq "it\'s"',
    LONG,
    # refusals: each must come with the same words as ever
    'userName eq "\\q"',
    'userName eq "\\u0000"',
    'userName eq "\\ud800"',
    '"abc" eq "x"',
    'userName eq "unterminated',
    'userName zz "x"',
    'userName eq "x" and',
    "userName eq",
    '"',
    "",
    "(" * 40 + 'a eq "x"' + ")" * 40,
    'a eq "' + "\x00" + '"',
    LONG + " ",
    'a eq "" or b eq "" or c eq "" or ' * 60 + 'd eq ""',
]


def full(text: str) -> filters.Expr:
    return filters._convert(filters._tree(text))


@pytest.mark.parametrize("text", FILTERS)
def test_a_shape_answers_as_the_filter_itself(text):
    try:
        expected = full(text)
    except InvalidFilter as exc:
        with pytest.raises(InvalidFilter) as got:
            filters.parse(text)
        assert str(got.value) == str(exc)
        return
    assert filters.parse(text) == expected


def test_one_parse_per_shape():
    """Filters differing only in their strings share a parse; the strings are each one's own."""
    filters._shaped.cache_clear()
    first = filters.parse('userName eq "one@example.com"')
    second = filters.parse('userName eq "two@example.com"')
    info = filters._shaped.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert (first.value, second.value) == ("one@example.com", "two@example.com")
    assert first.path == second.path


def test_a_string_that_looks_like_a_hole_is_the_filters_own():
    """A filter whose string is itself a hole's text gets that text, not another string."""
    two = filters.parse('a eq "\\u00011" or b eq "second"')
    assert two.left.value == "\x011" and two.right.value == "second"


def test_a_patch_path_is_parsed_once():
    """A PATCH path is kept once parsed (an IdP names a handful); a refused one is refused
    every time, with its words."""
    from scim.errors import InvalidPath

    urns = ("urn:ietf:params:scim:schemas:core:2.0:User",)
    filters.parse_path.cache_clear()
    first = filters.parse_path('emails[type eq "work"].value', urns)
    again = filters.parse_path('emails[type eq "work"].value', urns)
    assert again is first and filters.parse_path.cache_info().hits == 1
    assert first == filters.parse_path.__wrapped__('emails[type eq "work"].value', urns)
    for _ in range(2):
        with pytest.raises(InvalidPath, match="invalid path 'emails\\[type eq'"):
            filters.parse_path("emails[type eq", urns)
