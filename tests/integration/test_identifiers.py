"""Identifiers compare under one rule, RFC 8265 UsernameCaseMapped (issue 9 item 2): SCIM
uniqueness and SAML matching never merge two different names through case folding."""

import pytest
from sqlalchemy import select

from bridge import idps
from bridge.models import User
from tests.integration.test_saml import Login
from tests.integration.test_scim_protocol import scim_error
from tests.saml_idp import TestIdP

LONG_S = "\u017fam@a.test"  # LATIN SMALL LETTER LONG S: casefold() made it "sam@a.test"
KELVIN = "\u212aate@a.test"  # KELVIN SIGN: NFC made it "Kate@a.test"


@pytest.fixture
def saml(client, store, account):
    """The account's test IdP, and a browser to sign in through it."""
    idps.add(store, account.slug, (idp := TestIdP()).metadata_xml(), name="test", actor="t")
    return Login(client, store, account, idp)


def login(saml, name_id):
    """An SP-initiated login answered for `name_id`."""
    request = saml.start("/welcome")
    return saml.post(saml.response(in_response_to=request.id, name_id=name_id))


def names(store, account):
    with store.read() as db:
        return sorted(db.scalars(select(User.user_name).where(User.account_id == account.id)))


@pytest.mark.parametrize(("stored", "sent"), [("sam@a.test", LONG_S), ("kate@a.test", KELVIN)])
def test_saml_login_with_a_compatibility_character_never_lands_in_another_user(
    saml, scim, store, stored, sent
):
    """A NameID with LONG S or KELVIN SIGN is refused (`invalid_identifier`): the SCIM user it
    used to fold into is neither signed in nor renamed."""
    assert saml.account.id == scim.account.id
    scim.post("Users", json={"userName": stored})
    resp = login(saml, sent)
    assert resp.status_code == 403
    assert saml.last_reason() == "invalid_identifier"
    assert names(store, saml.account) == [stored]
    assert saml.client.get("/session").status_code == 401


def test_sharp_s_is_not_double_s(saml, scim, store):
    """`STRAßE@a.test` lowercases to `straße@a.test`: a user of its own, not `strasse@a.test`,
    while a change of case still signs in the same user."""
    scim.post("Users", json={"userName": "strasse@a.test"})
    first = login(saml, "STRAßE@a.test")
    assert first.status_code == 302, first.get_data(as_text=True)
    assert names(store, saml.account) == ["STRAßE@a.test", "strasse@a.test"]
    again = login(saml, "straße@a.test")
    assert again.status_code == 302
    assert len(names(store, saml.account)) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [("sam@a.test", LONG_S), ("kate@a.test", KELVIN), ("strasse@a.test", "STRAßE@a.test")],
)
def test_scim_uniqueness_uses_the_same_rule(scim, store, first, second):
    """SCIM: LONG S and KELVIN SIGN are 400 invalidValue naming the character; `STRAßE` is a
    user of its own; `SAM@A.TEST` is the same name as `sam@a.test` (409)."""
    scim.post("Users", json={"userName": first})
    resp = scim.post("Users", json={"userName": second})
    if second in (LONG_S, KELVIN):
        body = scim_error(resp, 400, "invalidValue")
        assert "compatibility character" in body["detail"] and "U+" in body["detail"]
        assert names(store, scim.account) == [first]
    else:
        assert resp.status_code == 201
    scim_error(scim.post("Users", json={"userName": first.upper()}), 409, "uniqueness")


def test_renaming_into_a_compatibility_character_is_refused(scim, store):
    """PATCH userName to a name with KELVIN SIGN: 400, the user keeps their name."""
    user = scim.post("Users", json={"userName": "k@a.test"}).json
    patch = {"Operations": [{"op": "replace", "path": "userName", "value": KELVIN}]}
    scim_error(scim.patch(f"Users/{user['id']}", json=patch), 400, "invalidValue")
    assert names(store, scim.account) == ["k@a.test"]


def test_filter_compares_under_the_same_rule(scim):
    """`userName eq` finds the case variant, never the LONG S or double-s spelling."""
    scim.post("Users", json={"userName": "sam@a.test"})
    scim.post("Users", json={"userName": "straße@a.test"})
    found = lambda f: [  # noqa: E731
        r["userName"] for r in scim.get("Users", query_string={"filter": f}).json["Resources"]
    ]
    assert found('userName eq "SAM@A.TEST"') == ["sam@a.test"]
    assert found(f'userName eq "{LONG_S}"') == []
    assert found('userName eq "STRASSE@A.TEST"') == []
    assert found('userName eq "STRAßE@A.TEST"') == ["straße@a.test"]


@pytest.mark.parametrize("name", ["Ops\u200dTeam", "\uff2f\uff50\uff53"])  # ZWJ, fullwidth
def test_group_names_with_such_characters_stay_distinct(scim, name):
    """Group displayNames keep their text as the key when it holds a format or compatibility
    character: `Ops` and a look-alike are two groups, not a 409 and not a merge."""
    assert scim.post("Groups", json={"displayName": "Ops"}).status_code == 201
    made = scim.post("Groups", json={"displayName": name})
    assert made.status_code == 201
    assert made.json["displayName"] == name


def _emails(scim, user_id):
    return [
        (e["value"], e.get("type")) for e in scim.get(f"Users/{user_id}").json.get("emails", [])
    ]


def test_patch_value_filters_compare_under_the_same_rule_as_queries(scim):
    """A PATCH value filter (`emails[value eq ...]`, `emails[type eq ...]`) matches exactly the
    strings a GET filter does: a change of case matches, LONG S, KELVIN SIGN and `ss` for `ß`
    match nothing (casefold() made them `sam`, `kate` and `strasse`), so nothing is removed."""
    user = scim.post(
        "Users",
        json={
            "userName": "u@a.test",
            "emails": [
                {"value": "sam@a.test", "type": "work"},
                {"value": "kate@a.test", "type": "Straße"},
            ],
        },
    ).json
    kept = [("sam@a.test", "work"), ("kate@a.test", "Straße")]
    for flt in (f'value eq "{LONG_S}"', f'value eq "{KELVIN}"', 'type eq "STRASSE"'):
        query = scim.get("Users", query_string={"filter": f"emails[{flt}]"}).json
        assert query["totalResults"] == 0, flt
        patch = {"Operations": [{"op": "remove", "path": f"emails[{flt}]"}]}
        assert scim.patch(f"Users/{user['id']}", json=patch).status_code == 200
        assert _emails(scim, user["id"]) == kept, flt
        replace = {"Operations": [{"op": "replace", "path": f"emails[{flt}]", "value": {}}]}
        scim_error(scim.patch(f"Users/{user['id']}", json=replace), 400, "noTarget")
    for flt, left in (
        ('value eq "SAM@A.TEST"', [("kate@a.test", "Straße")]),
        ('type eq "STRAẞE"', []),  # U+1E9E CAPITAL SHARP S lowercases to ß
    ):
        assert (
            scim.get("Users", query_string={"filter": f"emails[{flt}]"}).json["totalResults"] == 1
        ), flt
        patch = {"Operations": [{"op": "remove", "path": f"emails[{flt}]"}]}
        assert scim.patch(f"Users/{user['id']}", json=patch).status_code == 200
        assert _emails(scim, user["id"]) == left, flt
