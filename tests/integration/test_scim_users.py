"""SCIM Users through HTTP: create, read, replace, PATCH grammar, ETags, deprovisioning."""

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from bridge.models import AuditEvent, LoginSession, utcnow
from tests.integration.test_scim_protocol import scim_error

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def create(scim, user_name="ann@example.com", **extra):
    resp = scim.post("Users", json={"userName": user_name, **extra})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.json


def patch(scim, user, *ops, **kw):
    return scim.patch(
        f"Users/{user['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": list(ops),
        },
        **kw,
    )


def test_create_returns_resource_location_and_etag(scim):
    """POST /Users answers 201 with the resource, Location, ETag and meta."""
    resp = scim.post(
        "Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
            "userName": "Bjensen@Example.com",
            "externalId": "ext-1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
            "phoneNumbers": [{"value": "+1 555 0100", "type": "mobile"}],
            "addresses": [{"type": "work", "locality": "Hollywood", "country": "US"}],
            ENT: {"department": "Tour Operations", "employeeNumber": "701984"},
        },
    )
    assert resp.status_code == 201
    doc = resp.json
    assert resp.headers["Location"] == doc["meta"]["location"]
    assert resp.headers["ETag"] == doc["meta"]["version"] == 'W/"1"'
    assert doc["userName"] == "Bjensen@Example.com" and doc["active"] is True
    assert doc["name"] == {"givenName": "Barbara", "familyName": "Jensen"}
    assert doc[ENT] == {"department": "Tour Operations", "employeeNumber": "701984"}
    assert doc["emails"] == [{"value": "bjensen@example.com", "type": "work", "primary": True}]
    assert doc["meta"]["resourceType"] == "User" and "groups" not in doc


def test_password_is_accepted_never_returned_or_kept(scim, store):
    """A password is accepted, never echoed, and appears nowhere in the audit log."""
    doc = create(scim, "pw@example.com", password="S3cret-Pa55!")
    assert "password" not in doc
    assert "password" not in scim.get(f"Users/{doc['id']}").json
    with store.read() as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.account_id == scim.account.id)
        ).all()
    assert "S3cret-Pa55!" not in json.dumps([[e.before, e.after] for e in events])


def test_user_name_unique_in_any_case(scim):
    """A second user with the same userName in another case is 409 uniqueness."""
    create(scim, "dup@example.com")
    scim_error(scim.post("Users", json={"userName": "DUP@example.com"}), 409, "uniqueness")


def test_user_name_required(scim):
    """A user without userName is 400 invalidValue."""
    scim_error(scim.post("Users", json={"displayName": "Nobody"}), 400, "invalidValue")


def test_unknown_ids_are_404(scim):
    """Unknown or malformed ids are SCIM 404s."""
    scim_error(scim.get("Users/7b0c07bd-7a31-4b3a-9b36-0e6dfc1cb3b2"), 404)
    scim_error(scim.get("Users/not-an-id"), 404)


def test_put_replaces_and_ignores_read_only(scim):
    """PUT replaces the user, ignoring id and meta in the body, clearing what it omits."""
    doc = create(scim, "put@example.com", title="Engineer", nickName="Putty")
    body = {**doc, "id": "something-else", "meta": {"version": 'W/"99"'}, "title": "Manager"}
    body.pop("nickName")
    resp = scim.put(f"Users/{doc['id']}", json=body)
    assert resp.status_code == 200
    assert resp.json["id"] == doc["id"] and resp.json["title"] == "Manager"
    assert "nickName" not in resp.json
    assert resp.json["meta"]["version"] == 'W/"2"'


def test_a_put_that_does_not_mention_active_keeps_the_user_as_they_are(scim, store, account):
    """PUT clears what it omits, but not `active`: an omitted readWrite attribute may be read as
    not asserted (RFC 7644 §3.5.1), and a suspended user cleared to unset would sign in again
    (unset means active) without the IdP having said so. `active` in the body still counts."""
    from bridge.models import User

    doc = create(scim, "kept@example.com", title="Engineer")
    suspended = patch(scim, doc, {"op": "replace", "path": "active", "value": False}).json
    assert suspended["active"] is False
    body = {k: v for k, v in suspended.items() if k not in ("active", "title")}
    resp = scim.put(f"Users/{doc['id']}", json=body)
    assert resp.status_code == 200 and "title" not in resp.json  # the rest is replaced
    assert resp.json["active"] is False and scim.get(f"Users/{doc['id']}").json["active"] is False
    with store.read() as db:
        assert db.scalar(select(User.active).where(User.id == uuid.UUID(doc["id"]))) is False
    assert scim.put(f"Users/{doc['id']}", json={**body, "active": None}).json["active"] is False
    back = scim.put(f"Users/{doc['id']}", json={**body, "active": True}).json
    assert back["active"] is True
    assert scim.put(f"Users/{doc['id']}", json=body).json["active"] is True  # kept again


def test_etags(scim):
    """If-None-Match on GET gives 304; a stale If-Match on PUT/PATCH/DELETE gives 412."""
    doc = create(scim, "etag@example.com")
    assert scim.get(f"Users/{doc['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert scim.get(f"Users/{doc['id']}", headers={"If-None-Match": 'W/"7"'}).status_code == 200
    stale = {"If-Match": 'W/"7"'}
    scim_error(scim.put(f"Users/{doc['id']}", json={"userName": "x"}, headers=stale), 412)
    op = {"op": "replace", "path": "title", "value": "t"}
    scim_error(patch(scim, doc, op, headers=stale), 412)
    scim_error(scim.delete(f"Users/{doc['id']}", headers=stale), 412)
    assert patch(scim, doc, op, headers={"If-Match": 'W/"1"'}).json["meta"]["version"] == 'W/"2"'


def test_patch_pathless_with_dotted_and_urn_keys(scim):
    """Entra's path-less replace: dotted sub-attributes and extension URN keys."""
    doc = create(scim, "pathless@example.com", name={"familyName": "Keep"})
    resp = patch(
        scim,
        doc,
        {
            "op": "Replace",
            "value": {
                "name.givenName": "Given",
                f"{ENT}:department": "Sales",
                "displayName": "Shown",
                "active": "False",
            },
        },
    )
    assert resp.status_code == 200
    out = resp.json
    assert out["name"] == {"familyName": "Keep", "givenName": "Given"}
    assert out[ENT]["department"] == "Sales" and out["displayName"] == "Shown"
    assert out["active"] is False


def test_patch_multi_valued_paths(scim):
    """Value-filtered paths add, replace and remove entries of multi-valued attributes."""
    doc = create(
        scim,
        "multi@example.com",
        emails=[{"value": "home@example.com", "type": "home"}],
    )
    out = patch(
        scim,
        doc,
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "w@example.com", "type": "work", "primary": True}],
        },
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "work@example.com"},
        {"op": "remove", "path": 'emails[type eq "home"]'},
        {"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0199"},
    ).json
    assert out["emails"] == [{"value": "work@example.com", "type": "work", "primary": True}]
    assert out["phoneNumbers"] == [{"value": "+1 555 0199", "type": "mobile", "primary": False}]


def test_patch_value_filter_pr_does_not_take_a_blank_value(scim):
    """`emails[display pr]` selects entries that have a display; one whose display was sent
    blank in the same PATCH has none (as a query's `pr` and the store see it), so only the
    other is removed."""
    doc = create(scim, "blank@example.com", emails=[{"value": "kept@example.com", "display": "K"}])
    out = patch(
        scim,
        doc,
        {"op": "add", "path": "emails", "value": [{"value": "b@example.com", "display": ""}]},
        {"op": "remove", "path": "emails[display pr]"},
    )
    assert out.status_code == 200, out.get_data(as_text=True)
    assert out.json["emails"] == [{"value": "b@example.com", "primary": False}]


def test_patch_manager_bare_string_and_removal(scim):
    """Entra sends manager as a bare string; it reads back as {value}, and remove clears it."""
    boss = create(scim, "boss@example.com", displayName="The Boss")
    doc = create(scim, "report@example.com")
    out = patch(scim, doc, {"op": "Add", "path": f"{ENT}:manager", "value": boss["id"]}).json
    assert out[ENT]["manager"]["value"] == boss["id"]
    assert out[ENT]["manager"]["displayName"] == "The Boss"
    # a GET reads the user with its token, and the manager's name apart
    got = scim.get(f"Users/{doc['id']}").json[ENT]["manager"]
    assert (got["value"], got["displayName"]) == (boss["id"], "The Boss")
    out = patch(scim, doc, {"op": "Remove", "path": f"{ENT}:manager"}).json
    assert ENT not in out or "manager" not in out[ENT]


def test_a_manager_the_account_does_not_hold_reads_back_as_its_value_alone(scim):
    """Entra pushes a report before their manager: the manager's id is kept, with no $ref and
    no displayName (nothing to point at or name yet); both appear once the manager is pushed,
    the name falling back to their userName."""
    missing = str(uuid.uuid4())
    doc = create(scim, "early@example.com", **{ENT: {"manager": {"value": missing}}})
    assert doc[ENT] == {"manager": {"value": missing}}
    assert scim.get(f"Users/{doc['id']}").json[ENT] == {"manager": {"value": missing}}
    boss = create(scim, "later@example.com")
    patch(scim, doc, {"op": "Add", "path": f"{ENT}:manager", "value": boss["id"]})
    got = scim.get(f"Users/{doc['id']}").json[ENT]["manager"]
    assert got.pop("$ref").endswith(f"/scim/v2/Users/{boss['id']}")
    assert got == {"value": boss["id"], "displayName": "later@example.com"}


def test_patch_errors(scim):
    """Read-only targets, bad paths, bad ops and path-less removes are typed 400s."""
    doc = create(scim, "errs@example.com")
    scim_error(
        patch(scim, doc, {"op": "replace", "path": "groups", "value": []}), 400, "mutability"
    )
    scim_error(
        patch(scim, doc, {"op": "replace", "path": "meta.created", "value": "x"}), 400, "mutability"
    )
    scim_error(
        patch(scim, doc, {"op": "replace", "path": "noSuchThing", "value": 1}), 400, "invalidPath"
    )
    for path in ("emails[type eq", "title pr or nickName", "(title)", 'emails[type eq "w"] or x'):
        body = scim_error(
            patch(scim, doc, {"op": "replace", "path": path, "value": 1}), 400, "invalidPath"
        )
        assert body["detail"] == f"invalid path {path!r}", body
    scim_error(patch(scim, doc, {"op": "move", "path": "title", "value": 1}), 400, "invalidSyntax")
    scim_error(patch(scim, doc, {"op": "remove"}), 400, "noTarget")
    scim_error(
        patch(scim, doc, {"op": "replace", "path": 'emails[type eq "work"]', "value": "x"}),
        400,
        "noTarget",
    )
    scim_error(scim.patch(f"Users/{doc['id']}", json={"Operations": []}), 400, "invalidSyntax")


@pytest.mark.parametrize(
    "path",
    [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER",  # URNs compare ignoring case
        " urn:ietf:params:scim:schemas:core:2.0:User ",
    ],
)
def test_patch_path_naming_the_core_schema_is_refused(scim, path):
    """The core schema's URN is not an attribute a PATCH can target (only the enterprise
    extension may be set as a whole): 400 invalidPath saying so, and nothing changes."""
    doc = create(scim, "schema-path@example.com", title="Kept")
    resp = patch(scim, doc, {"op": "replace", "path": path, "value": {"title": "Changed"}})
    body = scim_error(resp, 400, "invalidPath")
    assert body["detail"] == f"{path!r} names a schema, not an attribute"
    assert scim.get(f"Users/{doc['id']}").json == doc


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ('urn:nope:Thing:emails[type eq "work"].value', "urn:nope:Thing:emails.value"),
        ("urn:nope:Thing:title", "urn:nope:Thing:title"),
    ],
)
def test_patch_path_under_another_schema_is_refused(scim, path, named):
    """An attribute of a schema the User does not have is no attribute of the User, even when
    the core schema has one of that name: 400 invalidPath, and nothing changes."""
    doc = create(
        scim,
        "other-schema@example.com",
        title="Kept",
        emails=[{"value": "a@x.example", "type": "work"}],
    )
    resp = patch(scim, doc, {"op": "replace", "path": path, "value": "changed@x.example"})
    body = scim_error(resp, 400, "invalidPath")
    assert body["detail"] == f"no attribute {named!r}"
    assert scim.get(f"Users/{doc['id']}").json == doc


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("emails[primary gt false]", "emails.primary is a boolean: only eq, ne and pr apply"),
        ('emails[primary co "t"]', "emails.primary is a boolean: only eq, ne and pr apply"),
        ('emails[type eq "work" or primary le true]', "only eq, ne and pr apply"),
        ('emails[primary eq "yes"]', "emails.primary is a boolean; compare it with true or false"),
        ("emails[not (primary ge true)]", "only eq, ne and pr apply"),
        ("emails[value gt null]", "emails[value gt null] compares nothing"),
    ],
)
def test_patch_value_filter_a_query_refuses_is_refused(scim, path, detail):
    """A PATCH value filter that a query would refuse (RFC 7644 §3.4.2.2: a boolean is not
    ordered; only eq/ne compare with null) is 400 invalidFilter too, and the user keeps every
    e-mail."""
    emails = [{"value": "a@x.example", "primary": True}, {"value": "b@x.example"}]
    doc = create(scim, "flags@example.com", emails=emails)
    body = scim_error(patch(scim, doc, {"op": "remove", "path": path}), 400, "invalidFilter")
    assert detail in body["detail"]
    assert scim.get(f"Users/{doc['id']}").json["emails"] == doc["emails"]
    out = patch(scim, doc, {"op": "remove", "path": 'emails[primary eq "True"]'}).json
    assert [e["value"] for e in out["emails"]] == ["b@x.example"]


def test_patch_is_all_or_nothing(scim):
    """When one operation fails, none of the request's operations are applied."""
    doc = create(scim, "atomic@example.com", title="Before")
    resp = patch(
        scim,
        doc,
        {"op": "replace", "path": "title", "value": "After"},
        {"op": "replace", "path": "groups", "value": []},
    )
    scim_error(resp, 400, "mutability")
    assert scim.get(f"Users/{doc['id']}").json["title"] == "Before"


def test_noop_patch_keeps_version(scim):
    """A PATCH that changes nothing leaves the version (and ETag) alone."""
    doc = create(scim, "same@example.com", title="Same")
    out = patch(scim, doc, {"op": "replace", "path": "title", "value": "Same"}).json
    assert out["meta"]["version"] == 'W/"1"'


def test_deactivation_suspends_and_keeps_user_readable(scim, store):
    """active=false ends live sessions at once; the user stays readable and filterable."""
    doc = create(scim, "leaver@example.com")
    import uuid as uuid_module

    def open_session(db):
        db.add(
            LoginSession(
                secret_hash=uuid_module.uuid4().hex,
                account_id=scim.account.id,
                user_id=uuid_module.UUID(doc["id"]),
                expires=utcnow() + timedelta(hours=1),
            )
        )

    store.write(open_session)
    out = patch(scim, doc, {"op": "replace", "value": {"active": False}}).json
    assert out["active"] is False
    with store.read() as db:
        row = db.scalar(
            select(LoginSession).where(LoginSession.user_id == uuid_module.UUID(doc["id"]))
        )
        assert row.ended is not None
    assert scim.get(f"Users/{doc['id']}").json["active"] is False
    found = scim.get("Users", query_string={"filter": "active eq false"}).json
    assert [r["id"] for r in found["Resources"]] == [doc["id"]]
    assert (
        patch(scim, doc, {"op": "replace", "path": "active", "value": True}).json["active"] is True
    )


def test_delete_then_404(scim):
    """DELETE answers 204; later reads, filters and deletes find nothing."""
    doc = create(scim, "gone@example.com")
    group = scim.post("Groups", json={"displayName": "G", "members": [{"value": doc["id"]}]}).json
    assert scim.delete(f"Users/{doc['id']}").status_code == 204
    scim_error(scim.get(f"Users/{doc['id']}"), 404)
    assert (
        scim.get("Users", query_string={"filter": 'userName eq "gone@example.com"'}).json[
            "totalResults"
        ]
        == 0
    )
    assert (
        "members" not in scim.get(f"Groups/{group['id']}").json
        or not scim.get(f"Groups/{group['id']}").json["members"]
    )
    scim_error(scim.delete(f"Users/{doc['id']}"), 404)


def test_patch_add_without_value_is_invalid(scim):
    """add with a null value is 400 invalidValue (found by the property test), replace clears."""
    doc = create(scim, "nullvalue@example.com", emails=[{"value": "n@example.com"}])
    scim_error(
        patch(scim, doc, {"op": "add", "path": "emails", "value": None}), 400, "invalidValue"
    )
    assert "emails" not in patch(scim, doc, {"op": "replace", "path": "emails", "value": None}).json


GROUP_POLICY = """\
account: {slug}
defaults: {{role: media_library_user}}
rules:
  - name: marketing
    when: {{department: {{equals: Marketing}}}}
    then: {{groups: [Marketing]}}
"""


def test_create_answers_the_groups_the_policy_gave(scim, settings):
    """A user the policy puts in a group at their create is answered in it, as a read shows."""
    slug = scim.account.slug
    (settings.policy_dir / f"{slug}.yaml").write_text(GROUP_POLICY.format(slug=slug))
    resp = scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert [g["display"] for g in resp.json["groups"]] == ["Marketing"]
    got = scim.get(f"Users/{resp.json['id']}")
    assert resp.json == got.json and resp.headers["ETag"] == got.headers["ETag"]
