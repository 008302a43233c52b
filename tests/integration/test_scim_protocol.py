"""SCIM protocol hygiene: authentication, errors, content types, discovery, tenant isolation."""

import pytest

from bridge import accounts
from tests.conftest import ScimClient

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def scim_error(resp, status, scim_type=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/scim+json"
    body = resp.json
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    assert body.get("scimType") == scim_type
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def test_missing_token_is_401_with_challenge(client):
    """No Authorization header: 401, SCIM error JSON, and a Bearer challenge."""
    resp = client.get("/scim/v2/Users")
    scim_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_and_revoked_tokens_are_401(scim, store):
    """A token never issued, or one revoked, is refused at once; also on a GET by id or a
    filter, whose user or page is read in the token's statement (mapping.user_with_token,
    listing.page_with_token): nothing of the user is answered, and an id that is no id or a
    filter that is no filter is 401 too, not 404 or 400 (the token comes first)."""
    user = scim.post("Users", json={"userName": "asked@example.com"}).json
    bad = ScimClient(scim.client, "ibs_not-a-real-token", scim.account)
    scim_error(bad.get("Users"), 401)
    asked = {"filter": 'userName eq "asked@example.com"'}
    for path, query in (
        (f"Users/{user['id']}", {}),
        ("Users/not-an-id", {}),
        ("Users", asked),
        ("Users", {"filter": "userName eq"}),
    ):
        resp = bad.get(path, query_string=query)
        assert "unknown bearer token" in scim_error(resp, 401)["detail"]
        assert "asked@example.com" not in resp.get_data(as_text=True)
    token = accounts.issue_token(store, scim.account.slug, actor="t")
    fresh = ScimClient(scim.client, token.raw, scim.account)
    assert fresh.get("Users").status_code == 200
    assert fresh.get(f"Users/{user['id']}").json["userName"] == "asked@example.com"
    assert fresh.get("Users", query_string=asked).json["totalResults"] == 1
    accounts.revoke_token(store, scim.account.slug, token.id, actor="t")
    assert "revoked" in scim_error(fresh.get("Users"), 401)["detail"]
    for path, query in ((f"Users/{user['id']}", {}), ("Users", asked)):
        resp = fresh.get(path, query_string=query)
        assert "revoked" in scim_error(resp, 401)["detail"]
        assert "asked@example.com" not in resp.get_data(as_text=True)


BAD_QUERIES = [  # (query, the scimType its 400 names)
    ({"filter": "userName eq"}, "invalidFilter"),
    ({"filter": 'nosuch eq "x"'}, "invalidFilter"),
    ({"filter": 'meta.lastModified gt "not a time"'}, "invalidFilter"),
    ({"filter": 'userName eq "a"', "startIndex": "first"}, "invalidValue"),
    ({"filter": 'userName eq "a"', "sortOrder": "sideways"}, "invalidValue"),
    ({"filter": 'userName eq "a"', "sortBy": "nosuch"}, "invalidFilter"),
    ({"count": "many"}, "invalidValue"),
]


@pytest.mark.parametrize(("query", "scim_type"), BAD_QUERIES)
def test_a_bad_query_is_401_before_400(scim, query, scim_type):
    """A list's page is read with its token (listing.page_with_token) when the query is good;
    a bad one is refused after the token all the same: 401 without a good token, then the
    query's own 400, never a 500."""
    bad = ScimClient(scim.client, "ibs_not-a-real-token", scim.account)
    assert "unknown bearer token" in scim_error(bad.get("Users", query_string=query), 401)["detail"]
    scim_error(scim.get("Users", query_string=query), 400, scim_type)


def test_me_is_501(scim):
    """/Me is not implemented: tokens belong to the IdP."""
    scim_error(scim.get("Me"), 501)


def test_unknown_url_and_method_are_scim_errors(scim):
    """Unknown paths are SCIM 404s and wrong methods SCIM 405s, never HTML."""
    scim_error(scim.get("Nothing/here"), 404)
    scim_error(scim.delete("ServiceProviderConfig"), 405)
    scim_error(scim.post("Schemas", json={}), 405)


def test_malformed_json_is_invalid_syntax(scim):
    """A body that is not JSON, or not an object, is 400 invalidSyntax."""
    scim_error(
        scim.request(
            "POST", "Users", data=b"{nope", headers={"Content-Type": "application/scim+json"}
        ),
        400,
        "invalidSyntax",
    )
    scim_error(scim.post("Users", json=[1, 2]), 400, "invalidSyntax")


def test_plain_json_content_type_accepted(scim):
    """Requests may be application/json as well as application/scim+json."""
    resp = scim.post(
        "Users",
        json={"userName": "plain@example.com"},
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 201
    assert resp.mimetype == "application/scim+json"


def test_oversized_body_is_413(scim, app):
    """A body over the advertised maxPayloadSize is a SCIM 413."""
    big = {"userName": "x", "title": "y" * app.config["MAX_CONTENT_LENGTH"]}
    scim_error(scim.post("Users", json=big), 413)


def test_service_provider_config_tells_the_truth(scim, app):
    """What is advertised is what is implemented, with the real limits."""
    doc = scim.get("ServiceProviderConfig").json
    assert doc["patch"] == {"supported": True}
    assert doc["filter"] == {"supported": True, "maxResults": 1000}
    assert (
        doc["bulk"]["supported"]
        and doc["bulk"]["maxPayloadSize"] == app.config["MAX_CONTENT_LENGTH"]
    )
    assert doc["changePassword"] == {"supported": False}
    assert doc["sort"] == {"supported": True} and doc["etag"] == {"supported": True}
    assert doc["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(scim):
    """ResourceTypes and Schemas list User (with the enterprise extension) and Group."""
    types = scim.get("ResourceTypes").json
    assert {r["id"] for r in types["Resources"]} == {"User", "Group"}
    user = scim.get("ResourceTypes/User").json
    assert user["schemaExtensions"][0]["schema"].endswith("enterprise:2.0:User")
    scim_error(scim.get("ResourceTypes/Printer"), 404)
    schemas = scim.get("Schemas").json
    assert schemas["totalResults"] == 3
    core = scim.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:User").json
    names = {a["name"]: a for a in core["attributes"]}
    assert names["userName"]["uniqueness"] == "server" and names["userName"]["caseExact"] is False
    assert names["password"]["returned"] == "never"
    assert names["groups"]["mutability"] == "readOnly"
    assert "null" not in scim.get("Schemas").get_data(as_text=True)
    scim_error(scim.get("Schemas/urn:nope"), 404)


@pytest.fixture
def other(client, store):
    """A second account with its own token."""
    created = accounts.create_account(
        store, f"other-{id(client) % 100000}-{__import__('secrets').token_hex(3)}", actor="t"
    )
    token = accounts.issue_token(store, created.slug, actor="t")
    return ScimClient(client, token.raw, created)


def test_tenants_never_see_each_other(scim, other):
    """One account's token can neither list, read, change nor delete another's resources."""
    user = scim.post("Users", json={"userName": "private@example.com"}).json
    group = scim.post("Groups", json={"displayName": "Private"}).json
    assert other.get("Users").json["totalResults"] == 0
    assert (
        other.get("Users", query_string={"filter": 'userName eq "private@example.com"'}).json[
            "totalResults"
        ]
        == 0
    )
    assert other.get("Groups").json["totalResults"] == 0
    scim_error(other.get(f"Users/{user['id']}"), 404)
    scim_error(other.put(f"Users/{user['id']}", json={"userName": "stolen"}), 404)
    scim_error(
        other.patch(
            f"Users/{user['id']}",
            json={"Operations": [{"op": "replace", "value": {"active": False}}]},
        ),
        404,
    )
    scim_error(other.delete(f"Users/{user['id']}"), 404)
    scim_error(other.get(f"Groups/{group['id']}"), 404)
    scim_error(
        other.patch(
            f"Groups/{group['id']}",
            json={
                "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]
            },
        ),
        404,
    )
    scim_error(other.delete(f"Groups/{group['id']}"), 404)
    own = other.post("Groups", json={"displayName": "Theirs"}).json
    resp = other.patch(
        f"Groups/{own['id']}",
        json={"Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]},
    )
    scim_error(resp, 400, "invalidValue")
    assert scim.get(f"Users/{user['id']}").json["active"] is True
