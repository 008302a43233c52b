"""How two identifiers (userName, group displayName, e-mail) compare: one rule, every path.

The reference is PRECIS UsernameCaseMapped (RFC 8265 §3.3): case mapping with Unicode
toLowerCase (not case folding: `STRAßE` is `straße`, never `strasse`), then NFC. SCIM uniqueness,
SAML matching, SCIM filters and the e-mail owner lookup all use `fold`, through the key columns.

Compatibility characters (RFC 8264 §9.17 HasCompat: U+017F LONG S, U+212A KELVIN SIGN,
ligatures, fullwidth forms), controls, format characters (zero-width joiners, bidi controls),
spaces other than U+0020, private-use, unassigned and surrogate code points are what would let
two different names become one (casefold() turns LONG S into `s`). Such an identifier is:
- refused as a new or changed userName (`identifier_problem`, an InvalidInput: SCIM 400
  invalidValue, SAML login refused with reason `invalid_identifier`);
- kept distinct wherever one is already stored or compared (a group name, an e-mail, a filter
  value): its key is the text exactly as given, which equals no folded key.
Differences from RFC 8265, deliberate: U+0020 is allowed inside a name (SCIM userNames and group
names carry spaces), and fullwidth forms are refused rather than width-mapped (stricter).
"""

from __future__ import annotations

import unicodedata

# General categories no identifier may hold (RFC 8264 §9: Controls, Unassigned, PrecisIgnorable).
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def fold(value: str) -> str:
    """The comparison key of an identifier: toLowerCase then NFC, or itself if it is not one."""
    if identifier_problem(value) is not None:
        return value  # compared exactly: never equal to a folded key
    return unicodedata.normalize("NFC", value.lower())


def identifier_problem(value: str) -> str | None:
    """Why `value` cannot be an identifier, naming the first offending character; else None."""
    for char in value:
        category = unicodedata.category(char)
        if char.isascii() and category not in REFUSED_CATEGORIES:
            continue
        if category in REFUSED_CATEGORIES or (category == "Zs" and char != " "):
            kind = "a control, format, unassigned or private-use character"
        elif unicodedata.normalize("NFKC", char) != char:
            kind = "a compatibility character (RFC 8264 HasCompat)"
        else:
            continue
        name = unicodedata.name(char, "unnamed")
        return f"contains U+{ord(char):04X} {name}, {kind}"
    return None
