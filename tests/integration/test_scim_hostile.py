"""Hostile SCIM input (issue 9, items 6 and 9): refused with a SCIM 4xx before the database,
nothing written, on SQLite and PostgreSQL alike."""

import json

import pytest
from sqlalchemy import func, select

from bridge.models import AuditEvent, Group, User
from tests.integration.test_scim_protocol import scim_error

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def state(store, account):
    """What a refused request must leave as it was: users, groups, audit events."""
    with store.read() as db:
        return tuple(
            db.scalar(select(func.count()).select_from(m).where(m.account_id == account.id))
            for m in (User, Group, AuditEvent)
        )


def raw(scim, method, path, text):
    return scim.request(
        method,
        path,
        data=text.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/scim+json"},
    )


@pytest.mark.parametrize(
    ("text", "scim_type", "why"),
    [
        ('{"userName": "a\\ud800b"}', "invalidValue", "lone surrogate"),
        ('{"userName": "\\udfff"}', "invalidValue", "lone surrogate"),
        ('{"userName": "sam", "title": "x\\u0000y"}', "invalidValue", "NUL"),
        ('{"userName": "sam", "x\\u0000": 1}', "invalidValue", "NUL"),
        ('{"userName": "sam", "n": Infinity}', "invalidValue", "Infinity"),
        ('{"userName": "sam", "n": NaN}', "invalidValue", "NaN"),
        ('{"userName": "sam", "n": 1e400}', "invalidValue", "out of range"),
        (
            '{"userName": "sam", "a": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "invalidSyntax",
            "nested",
        ),
        ('{"userName": "sam", "a": ' + "[" * 40 + "]" * 40 + "}", "invalidSyntax", "nested"),
    ],
)
def test_unstorable_json_is_refused_before_the_database(scim, store, text, scim_type, why):
    """Lone surrogates, NULs, non-finite numbers and deep nesting: 400 naming why, nothing kept."""
    before = state(store, scim.account)
    body = scim_error(raw(scim, "POST", "Users", text), 400, scim_type)
    assert why in body["detail"]
    assert state(store, scim.account) == before


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({"userName": "u" * 257}, "users.user_name is 257 characters long; at most 256"),
        ({"userName": "sam", "displayName": "d" * 257}, "users.display_name is 257"),
        ({"userName": "sam", "locale": "l" * 65}, "users.locale is 65 characters long; at most 64"),
        ({"userName": "sam", "externalId": {}}, "externalId must be a string"),
        (
            {"userName": "sam", "emails": [{"value": f"{i}@a.test"} for i in range(101)]},
            "at most 100",
        ),
    ],
)
def test_values_that_do_not_fit_their_column_are_400(scim, store, doc, why):
    """Too long, wrong type or too many values: the same 400 on both databases, nothing kept."""
    before = state(store, scim.account)
    body = scim_error(scim.post("Users", json=doc), 400, "invalidValue")
    assert why in body["detail"]
    assert state(store, scim.account) == before


def test_group_external_id_must_be_a_string(scim, store):
    """Group `externalId: {}` is a 400, not a database error."""
    before = state(store, scim.account)
    body = scim_error(
        scim.post("Groups", json={"displayName": "G", "externalId": {}}), 400, "invalidValue"
    )
    assert body["detail"] == "externalId must be a string"  # named as the client sent it
    assert state(store, scim.account) == before


@pytest.mark.parametrize(
    ("flt", "why"),
    [
        ('userName co "\\u0000"', "a filter may not contain a NUL character"),
        ('userName eq "\\ud800"', "the filter contains a lone surrogate (not valid Unicode)"),
        ("not (" * 300 + "userName pr" + ")" * 300, "the filter nests deeper than 32 levels"),
        (
            'meta.lastModified lt "9999-12-31T23:59:59-14:00"',
            "meta.lastModified: '9999-12-31T23:59:59-14:00' is outside the years 1 to 9999 in UTC",
        ),
        ('emails[value co "\\u0000"]', "a filter may not contain a NUL character"),
    ],
)
def test_hostile_filters_are_invalid_filter(scim, flt, why):
    """Filters no database can run the same way are invalidFilter, by GET and by .search, and
    the detail says exactly why."""
    scim.post("Users", json={"userName": "present@a.test"})
    by_get = scim_error(scim.get("Users", query_string={"filter": flt}), 400, "invalidFilter")
    assert by_get["detail"] == why
    by_post = scim.post("Users/.search", json={"schemas": [SEARCH], "filter": flt})
    assert scim_error(by_post, 400, "invalidFilter")["detail"] == why


@pytest.mark.parametrize(
    ("search", "why"),
    [
        ('{"startIndex": Infinity}', "Infinity"),
        ('{"count": 1e400}', "out of range"),
        ('{"startIndex": 1e300}', "startIndex must be between"),
        ('{"count": 99999999999999999999}', "count must be between"),
        ('{"count": true}', "count must be an integer"),
        ('{"schemas": 5}', "schemas must be a list"),
    ],
)
def test_search_parameters_out_of_range_are_400(scim, search, why):
    """startIndex/count beyond what OFFSET/LIMIT take, non-numbers and odd schemas: 400."""
    for path in ("Users/.search", "Groups/.search", ".search"):
        resp = raw(scim, "POST", path, search)
        assert resp.status_code == 400, resp.get_data(as_text=True)
        assert why in resp.json["detail"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("9" * 5000, "startIndex must be between -2147483647 and 2147483647"),
        ("-" + "1" * 20, "startIndex must be between -2147483647 and 2147483647"),
        ("0" * 40 + "7", None),  # leading zeros: still 7
        ("1" * 20 + "x", "startIndex must be an integer"),
        ("--" + "9" * 5000, "startIndex must be an integer"),  # one sign at most
    ],
)
def test_long_numbers_in_a_query_are_out_of_range_not_malformed(scim, value, why):
    """A startIndex of thousands of digits is a number too large (Python's int() refuses more
    than 4,300 digits: it was called 'not an integer'), by GET on Users and Groups."""
    scim.post("Users", json={"userName": "present@a.test"})
    for path in ("Users", "Groups"):
        resp = scim.get(path, query_string={"startIndex": value})
        if why is None:
            assert resp.status_code == 200, resp.get_data(as_text=True)
            assert resp.json["startIndex"] == 7
        else:
            assert scim_error(resp, 400, "invalidValue")["detail"] == why


def test_nested_bulk_is_refused_per_operation(scim, store):
    """A Bulk operation whose path is /Bulk is refused (invalidPath): no nesting past
    maxOperations, nothing created."""
    inner = {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": {"userName": f"n{i}"}}
            for i in range(3)
        ],
    }
    before = state(store, scim.account)
    resp = scim.post(
        "Bulk",
        json={
            "schemas": [BULK],
            "Operations": [{"method": "POST", "path": "/Bulk", "bulkId": "b", "data": inner}] * 2,
        },
    )
    assert resp.status_code == 200
    for result in resp.json["Operations"]:
        assert result["status"] == "400"
        assert result["response"]["scimType"] == "invalidPath"
    assert state(store, scim.account) == before


@pytest.mark.parametrize(
    ("op", "why"),
    [
        ({"method": "PATCH", "path": "/Users/x", "version": "a\nb"}, "version must be an ETag"),
        ({"method": "PATCH", "path": "/Users/x", "version": {"a": 1}}, "version must be an ETag"),
        ({"method": "PUT", "path": "/Users"}, "path must be /Users or /Groups"),
        ({"method": "POST", "path": "/Users/1", "bulkId": "z"}, "path must be /Users or /Groups"),
        ({"method": "DELETE", "path": "/Schemas/x"}, "path must be /Users or /Groups"),
    ],
)
def test_bulk_reports_each_bad_operation_and_runs_the_rest(scim, store, op, why):
    """A bad operation fails alone with a 400 in its result; the good one beside it commits."""
    resp = scim.post(
        "Bulk",
        json={
            "schemas": [BULK],
            "Operations": [
                {**op, "data": {"Operations": [{"op": "replace", "path": "title", "value": "t"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "ok", "data": {"userName": "ok1"}},
            ],
        },
    )
    assert resp.status_code == 200
    bad, good = resp.json["Operations"]
    assert bad["status"] == "400" and why in bad["response"]["detail"]
    assert good["status"] == "201"


def test_bulk_operation_refused_by_the_store_rolls_back_alone(scim, store):
    """An operation the store refuses (a 257-character userName) is a 400 in its result and
    leaves nothing of itself; the operations before and after it commit."""
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": "a1"}},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": "b" * 257}},
        {"method": "POST", "path": "/Users", "bulkId": "c", "data": {"userName": "c1"}},
    ]
    before = state(store, scim.account)
    resp = scim.post("Bulk", json={"schemas": [BULK], "Operations": ops})
    assert [o["status"] for o in resp.json["Operations"]] == ["201", "400", "201"]
    assert state(store, scim.account)[0] == before[0] + 2


def test_patch_with_too_many_operations_is_413_before_any_work(scim, store):
    """More than 1,000 operations in one PATCH: 413, the user untouched."""
    user = scim.post("Users", json={"userName": "patched@a.test"}).json
    before = state(store, scim.account)
    ops = [
        {"op": "add", "path": "emails", "value": [{"value": f"{i}@a.test"}]} for i in range(1001)
    ]
    resp = scim.patch(f"Users/{user['id']}", json={"schemas": [PATCH], "Operations": ops})
    body = scim_error(resp, 413)
    assert "1001 operations is more than 1000" in body["detail"]
    assert state(store, scim.account) == before


def test_patch_growing_a_multi_valued_attribute_past_its_cap_is_400(scim, store):
    """Adds that would give a user 101 e-mails are refused as the PATCH is read, nothing kept."""
    user = scim.post("Users", json={"userName": "grown@a.test"}).json
    before = state(store, scim.account)
    ops = [{"op": "add", "path": "emails", "value": [{"value": f"{i}@a.test"}]} for i in range(101)]
    ops += [
        {"op": "replace", "path": f'emails[value eq "{i}@a.test"].type', "value": "w"}
        for i in range(800)
    ]
    resp = scim.patch(f"Users/{user['id']}", json={"schemas": [PATCH], "Operations": ops})
    assert "emails may hold at most 100 values" in scim_error(resp, 400, "invalidValue")["detail"]
    assert state(store, scim.account) == before
    assert scim.get(f"Users/{user['id']}").json.get("emails") is None


def test_patch_schemas_not_a_list_is_400(scim):
    """`"schemas": 5` on a PATCH is invalidSyntax, not a TypeError."""
    user = scim.post("Users", json={"userName": "s5@a.test"}).json
    resp = scim.patch(
        f"Users/{user['id']}",
        json={"schemas": 5, "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
    )
    assert "schemas must be a list" in scim_error(resp, 400, "invalidSyntax")["detail"]


def test_limits_are_announced(scim):
    """ServiceProviderConfig announces maxOperations; the README names the PATCH caps."""
    conf = scim.get("ServiceProviderConfig").json
    assert conf["bulk"]["maxOperations"] == 1000
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "1,000 operations" in readme and "100 values" in readme


def test_json_nesting_is_counted_iteratively():
    """The depth check itself never recurses (a 10,000-deep document decoded elsewhere)."""
    from scim import errors, inputs

    doc = []
    for _ in range(10_000):
        doc = [doc]
    with pytest.raises(errors.InvalidSyntax):
        inputs.check_document(doc)
    inputs.check_document(json.loads("[" * 32 + "]" * 32))
