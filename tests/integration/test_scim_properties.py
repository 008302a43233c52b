"""Property tests: compiled filters agree with the reference evaluation; hostile input never 500s.

Strings are ASCII here: case-insensitive comparison of other scripts follows each database's
lower() (PostgreSQL's depends on the database's ctype), which the reference cannot know.
"""

import json
import random
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bridge import accounts, provisioning
from bridge.models import User
from scim import listing, mapping, schema
from scim.filters import Path, matches, parse
from scim.sql import USER_MAP

ENT = schema.ENTERPRISE
# `_` and `%` are LIKE wildcards: words holding them, and ones they would match as wildcards
WORDS = ["alpha", "Beta", "gamma", "DELTA", "al", "be", "ta", "x", "Alpha", "", "al_ha", "a%", "_"]
WORDS += ["true", "False"]  # a bare `title eq true` compares with the text "true"
STRING_PATHS = [
    "userName",
    "displayName",
    "title",
    "nickName",
    "name.givenName",
    "name.familyName",
    "externalId",
    "emails.value",
    "emails.type",
    "phoneNumbers.value",
    "addresses.locality",
    f"{ENT}:department",
    f"{ENT}:employeeNumber",
]
OPS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]


def _person(rng, i):
    pick = lambda: rng.choice(WORDS) or None  # noqa: E731
    doc = {
        "userName": f"{rng.choice(WORDS) or 'u'}{i}",
        "displayName": pick(),
        "title": pick(),
        "nickName": pick(),
        "externalId": pick(),
        "active": rng.choice([True, False]),
        "name": {"givenName": pick(), "familyName": pick()},
        "emails": [
            {
                "value": f"{rng.choice(WORDS) or 'e'}{i}{n}@ex.com",
                "type": rng.choice(["work", "home"]),
                "primary": n == 0 and rng.random() < 0.5,
            }
            for n in range(rng.randint(0, 2))
        ],
        "phoneNumbers": [{"value": str(rng.randint(100, 999))} for _ in range(rng.randint(0, 1))],
        "addresses": [{"locality": pick()} for _ in range(rng.randint(0, 1))],
        ENT: {"department": pick(), "employeeNumber": str(rng.randint(1, 30))},
    }
    return doc


@pytest.fixture(scope="module")
def population(store):
    """An account with varied users, and their SCIM documents for the reference (40 documents
    provisioned; those sharing an externalId are one user, updated)."""
    rng = random.Random(7)
    account = accounts.create_account(store, f"prop-{secrets.token_hex(4)}", actor="t")
    for i in range(40):
        doc = mapping.canonical(_person(rng, i), schema.USERS)
        provisioning.provision(store, account.id, mapping.user_profile(doc, active=True), actor="t")
    with store.read() as db:
        columns = mapping.user_columns(db.get_bind().dialect.name)
        rows = db.execute(select(*columns).where(User.account_id == account.id)).all()
        docs = mapping.user_documents(db, rows, "http://x")
    return account, {d["id"]: d for d in docs}


def _get(doc, path: Path):
    holder = doc.get(ENT, {}) if path.urn else doc
    for key, value in holder.items():
        if key.lower() == path.attr.lower():
            if path.sub is None:
                return value if isinstance(value, list) else [value]
            entries = value if isinstance(value, list) else [value]
            return [e.get(path.sub) for e in entries if isinstance(e, dict)]
    return []


def _describe(path: Path):
    if path.attr == "id":
        return "id", True  # compared as UUIDs, like the id column
    attr = schema.USERS.attr(path.attr, path.urn)
    if attr is not None and path.sub and attr.child(path.sub):
        attr = attr.child(path.sub)
    if attr is None:  # inside a value path: a sub-attribute of emails
        attr = schema.USERS.attr("emails").child(path.attr)
    return attr.type, attr.case_exact


values = st.one_of(
    st.sampled_from(WORDS).map(json.dumps),
    st.integers(0, 40).map(str),
    st.sampled_from(["true", "false"]),
)
MULTI_VALUED = ["emails", "phoneNumbers", "addresses"]
# Filters on the population's own ids and timestamps: `{id:K:FORM}` and `{meta.created:K:FORM}`
# stand for user K's value written in FORM, filled in by _resolve once the population exists.
ID_FORMS = ["as-is", "upper", "hex", "other", "not-a-uuid"]
TIME_FORMS = ["as-is", "+02:00", "no-zone", "next-ms", "previous-ms", "seconds"]
# Every filter generated here is valid (RFC 7644 §3.4.2.2) and must compile: the oracle has no
# way out through InvalidFilter. Invalid ones are test_bad_filter_is_invalid_filter's.
comparison = st.one_of(
    st.builds(
        lambda p, o, v: f"{p} {o} {v}", st.sampled_from(STRING_PATHS), st.sampled_from(OPS), values
    ),
    st.builds(lambda p: f"{p} pr", st.sampled_from(STRING_PATHS + MULTI_VALUED)),
    st.builds(
        lambda p, o: f"{p} {o} null",
        st.sampled_from([*STRING_PATHS, *MULTI_VALUED, "active"]),
        st.sampled_from(["eq", "ne"]),
    ),
    st.builds(
        lambda o, v: f"active {o} {v}",
        st.sampled_from(["eq", "ne"]),
        st.sampled_from(["true", "false", '"True"', '"False"', '"true"']),  # Entra: strings
    ),
    st.builds(
        lambda t, o, v: f'emails[type eq "{t}" and value {o} {v}]',
        st.sampled_from(["work", "home"]),
        st.sampled_from(["co", "sw", "ew", "eq", "ne"]),
        values,
    ),
    st.builds(lambda v: f"emails[primary eq {v}]", st.sampled_from(["true", "false", '"True"'])),
    st.builds(
        lambda k, o, form: f'id {o} "{{id:{k}:{form}}}"',
        st.integers(0, 39),
        st.sampled_from(["eq", "ne"]),
        st.sampled_from(ID_FORMS),
    ),
    st.builds(
        lambda a, k, o, form: f'meta.{a} {o} "{{meta.{a}:{k}:{form}}}"',
        st.sampled_from(["created", "lastModified"]),
        st.integers(0, 39),
        st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]),
        st.sampled_from(TIME_FORMS),
    ),
    st.builds(lambda a: f"meta.{a} pr", st.sampled_from(["created", "lastModified"])),
)


STAND_IN = {
    "id": "6a1c0e2e-8d4b-4f7a-9a57-0b3f2f6c9d10",
    "meta": {"created": "2026-01-02T03:04:05.678Z", "lastModified": "2026-01-02T03:04:05.678Z"},
}


def _resolve(text: str, people: list[dict]) -> str:
    """The filter with each `{attr:K:FORM}` replaced by user K's value of attr in that form."""

    def value(match: re.Match[str]) -> str:
        attr, k, form = match.group(1), int(match.group(2)), match.group(3)
        doc = people[k % len(people)]
        if attr == "id":
            raw = uuid.UUID(doc["id"])
            return {
                "as-is": str(raw),
                "upper": str(raw).upper(),
                "hex": raw.hex,
                "other": str(uuid.UUID(int=raw.int ^ 1)),
                "not-a-uuid": "not-a-uuid",
            }[form]
        at = datetime.fromisoformat(doc["meta"][attr.split(".")[1]].replace("Z", "+00:00"))
        return {
            "as-is": at.isoformat().replace("+00:00", "Z"),
            "+02:00": at.astimezone(timezone(timedelta(hours=2))).isoformat(),
            "no-zone": at.replace(tzinfo=None).isoformat(),  # xsd:dateTime without a zone: UTC
            "next-ms": (at + timedelta(milliseconds=1)).isoformat(),
            "previous-ms": (at - timedelta(milliseconds=1)).isoformat(),
            "seconds": at.replace(microsecond=0).isoformat(),
        }[form]

    return re.sub(r"\{([\w.]+):(\d+):([\w:+-]+)\}", value, text)


def _combined(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """and/or/not/grouping over smaller filters (a def: Hypothesis reads a lambda's source to
    check it recurses, and a multi-line lambda's source is not always readable)."""
    return st.one_of(
        st.builds(lambda a, b: f"{a} and {b}", inner, inner),
        st.builds(lambda a, b: f"{a} or {b}", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
        st.builds(lambda a: f"({a})", inner),
    )


filters = st.recursive(comparison, _combined, max_leaves=5)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=filters)
# the same instant written in another zone, or with no zone (UTC), compares equal
@example(text='meta.created eq "{meta.created:3:+02:00}"')
@example(text='meta.lastModified le "{meta.lastModified:5:+02:00}"')
@example(text='meta.created gt "{meta.created:7:no-zone}"')
# ordering at equality: several users have the title alpha (or Alpha: not caseExact)
@example(text='title lt "alpha"')
@example(text='title le "alpha"')
@example(text='title gt "alpha"')
@example(text='title ge "alpha"')
# a bare true compares with the text "true" (externalId: caseExact); ew in and out of [...]
@example(text="title eq true")
@example(text="externalId eq true")
@example(text='externalId eq "alpha"')  # caseExact: not the users whose externalId is Alpha
@example(text='title ew "TA"')
@example(text='emails[type eq "work" and value ew "ex.com"]')
def test_sql_agrees_with_reference(store, population, text):
    """For any valid filter, the database returns exactly the users the reference selects."""
    account, docs = population
    text = _resolve(text, sorted(docs.values(), key=lambda d: d["userName"]))
    expr = parse(text)
    with store.read() as db:
        _, rows = listing.page(
            db, USER_MAP, User, account.id, listing.Query(filter=expr, count=1000)
        )
    got = {str(r.id) for r in rows}
    want = {i for i, d in docs.items() if matches(expr, d, _get, _describe)}
    assert got == want, text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
paths = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "title",
            "emails",
            'emails[type eq "work"].value',
            "name.givenName",
            "members",
            f"{ENT}:manager",
            "groups",
            "meta",
            "id",
            'members[value eq "x"]',
            "bad[",
            "",
        ]
    ),
    st.text(max_size=30),
)
operation = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "replace", "remove", "Add", "bogus"]),
        "path": paths,
        "value": json_values,
    }
)


PATCH_SCIM_TYPES = {"invalidPath", "noTarget", "invalidValue", "mutability", "invalidSyntax"}
PATCH_SCIM_TYPES |= {"invalidFilter", "uniqueness"}


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(operation, min_size=1, max_size=3), kind=st.sampled_from(["Users", "Groups"]))
def test_random_patches_never_500(scim, ops, kind):
    """Any PATCH body is applied or refused with a SCIM 4xx naming its scimType, never a 500;
    a refused PATCH leaves the resource as it was."""
    if not hasattr(scim, "ids"):
        scim.ids = {
            "Users": scim.post("Users", json={"userName": "fuzz@example.com"}).json["id"],
            "Groups": scim.post("Groups", json={"displayName": "Fuzz"}).json["id"],
        }
    before = scim.get(f"{kind}/{scim.ids[kind]}").json
    resp = scim.patch(f"{kind}/{scim.ids[kind]}", json={"Operations": ops})
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert resp.status_code == 204 or resp.mimetype == "application/scim+json"
    if resp.status_code >= 400:
        # RFC 7644 §3.5.2: a PATCH is atomic, so a refused one changes nothing, and says why
        assert resp.status_code in (400, 409), resp.json
        assert resp.json["scimType"] in PATCH_SCIM_TYPES, resp.json
        assert scim.get(f"{kind}/{scim.ids[kind]}").json == before


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=st.text(max_size=60).map(lambda t: (t, False)) | filters.map(lambda f: (f, True)))
def test_random_filters_never_500(scim, case):
    """Any filter string is answered or refused with 400 invalidFilter, never a 500; a valid
    filter is always answered."""
    text, valid = case
    if valid:
        text = _resolve(text, [STAND_IN] * 40)
    resp = scim.get("Users", query_string={"filter": text})
    assert resp.status_code in ((200,) if valid else (200, 400)), resp.get_data(as_text=True)
    if resp.status_code == 400:
        assert resp.json["scimType"] == "invalidFilter", resp.json
