"""The guard on the live path (issue 9): a SCIM change or a login that would take the last
master_admin away keeps that user's role, audits the refusal with the rule and the guard, and
/readyz and `idbridge policy check --store` say the active version breaks the guard."""

import os
import textwrap
import threading
import uuid

import pytest
from sqlalchemy import select

from bridge import idps, provisioning
from bridge.models import AuditEvent, RoleAssignment, User
from scim.schema import BULK_REQUEST as BULK
from tests.conftest import ScimClient
from tests.integration.test_saml import Login
from tests.integration.test_scim_protocol import scim_error
from tests.saml_idp import TestIdP

POLICY = """
account: {slug}
environments: [production, staging]
defaults: {{role: media_library_user, environments: [production]}}
rules:
  - name: owners
    when: {{department: {{equals: {owners}}}}}
    then: {{role: master_admin}}
guards: {{keep_at_least_one: master_admin}}
"""
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def policy(settings, account):
    path = settings.policy_dir / f"{account.slug}.yaml"

    def write(owners):
        path.write_text(textwrap.dedent(POLICY.format(slug=account.slug, owners=owners)))
        st = path.stat()  # every edit visible even within one mtime tick
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return path

    yield write
    path.unlink(missing_ok=True)


@pytest.fixture
def saml(client, store, account):
    """The account's test IdP, and a browser to sign in through it."""
    idps.add(store, account.slug, (idp := TestIdP()).metadata_xml(), name="test", actor="t")
    return Login(client, store, account, idp)


def role(store, user_id):
    with store.read() as db:
        return provisioning.access_of(db, db.get(User, uuid.UUID(str(user_id))))["role"]


def refusals(store, account):
    with store.read() as db:
        return db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == "user.guard_refused")
            .order_by(AuditEvent.seq)
        ).all()


def guard_feed(api_for, account):
    """The public event feed's user.guard_refused events (management API)."""
    r = api_for(account, "read").get("events", query_string={"type": "user.guard_refused"})
    assert r.status_code == 200, r.json
    return r.json["events"]


def test_scim_change_keeps_the_last_master_admin(
    scim, store, account, policy, client, cli, api_for
):
    """A new version that gives nobody master_admin: the owner's next SCIM change keeps their
    role, the refusal is audited (rule and guard), /readyz and `policy check --store` say so;
    a second owner can then lose it, and a version that keeps one clears the warning."""
    path = policy("Owners")
    owner = scim.post("Users", json={"userName": "o@a.test", ENT: {"department": "Owners"}}).json
    other = scim.post("Users", json={"userName": "p@a.test", ENT: {"department": "Owners"}}).json
    assert role(store, owner["id"])["role"] == "master_admin"
    assert "policy_guard_breaches" not in client.get("/readyz").json

    policy("Nobody")  # valid, so live at once
    patch = {"Operations": [{"op": "replace", "path": "title", "value": "t"}]}
    assert scim.patch(f"Users/{other['id']}", json=patch).status_code == 200
    demoted = {"role": "media_library_user", "provenance": "policy:defaults"}
    assert role(store, other["id"]) == demoted
    assert refusals(store, account) == []  # the owner still holds it: nothing to refuse

    assert scim.patch(f"Users/{owner['id']}", json=patch).status_code == 200
    assert role(store, owner["id"]) == {"role": "master_admin", "provenance": "policy:owners"}
    (event,) = refusals(store, account)
    assert event.target_id == owner["id"]
    assert event.after == {
        "refused_role": "media_library_user",
        "rule": "defaults",
        "guard": "keep_at_least_one: master_admin",
        "kept": "master_admin",
    }
    (public,) = guard_feed(api_for, account)  # the product hears of it too
    assert public["cursor"] == str(event.seq) and public["actor"] == event.actor
    assert public["data"] == {"user": {"id": owner["id"]}, **event.after}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["policy_guard_breaches"][account.slug] == [
        "guard keep_at_least_one: no user would keep the role master_admin"
    ]
    run = type(cli)({**cli.env, "BRIDGE_POLICY_DIR": str(path.parent)})
    checked = run("policy", "check", "--store", str(path))
    assert checked.exit_code == 1
    assert "breaks guard keep_at_least_one: no user would keep the role master_admin" in (
        checked.stderr
    )
    assert run("policy", "check", str(path)).exit_code == 0  # the file alone is valid


def test_login_keeps_the_last_master_admin(scim, store, account, policy, saml):
    """A SAML login (through the ACS) of the last master_admin under such a version signs them
    in with their role kept, and the refusal names the login as its actor."""
    policy("Owners")
    owner = scim.post("Users", json={"userName": "boss@a.test", ENT: {"department": "Owners"}})
    assert role(store, owner.json["id"])["role"] == "master_admin"
    policy("Nobody")
    request = saml.start("/welcome")
    resp = saml.post(saml.response(in_response_to=request.id, name_id="boss@a.test"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert saml.client.get("/session").json["role"] == "master_admin"
    (event,) = refusals(store, account)
    assert event.actor == "saml:test" and event.after["guard"] == "keep_at_least_one: master_admin"


def test_demotion_proceeds_while_another_holder_remains(scim, store, account, policy, client):
    """With a second master_admin kept by the policy, a demotion is not refused."""
    policy("Owners")
    first = scim.post("Users", json={"userName": "a@a.test", ENT: {"department": "Owners"}}).json
    scim.post("Users", json={"userName": "b@a.test", ENT: {"department": "Owners"}})
    patch = {"Operations": [{"op": "replace", "path": f"{ENT}:department", "value": "Sales"}]}
    assert scim.patch(f"Users/{first['id']}", json=patch).status_code == 200
    assert role(store, first["id"])["role"] == "media_library_user"
    assert refusals(store, account) == []
    assert account.slug not in client.get("/readyz").json.get("policy_guard_breaches", {})


# ---------------------------------------------------------------- deprovisioning the last holder

GUARD_DETAIL = "refused by guard keep_at_least_one: master_admin"
OFF = {"Operations": [{"op": "replace", "value": {"active": False}}]}  # Okta: path-less


def _state(store, account, user_id):
    """What a refused change must leave exactly as it was: the user's stored state and access,
    its version, the account's users and its audit events other than the refusal."""
    with store.read() as db:
        user = db.get(User, uuid.UUID(str(user_id)))
        return {
            "user": None if user is None else provisioning.snapshot(db, user),
            "version": None if user is None else user.version,
            "users": sorted(
                str(u) for u in db.scalars(select(User.id).where(User.account_id == account.id))
            ),
            "events": [
                (e.seq, e.action)
                for e in db.scalars(
                    select(AuditEvent)
                    .where(
                        AuditEvent.account_id == account.id,
                        AuditEvent.action != "user.guard_refused",
                    )
                    .order_by(AuditEvent.seq)
                )
            ],
        }


def _refused(resp):
    body = scim_error(resp, 409)  # no scimType: RFC 7644 has none for a business-rule refusal
    assert GUARD_DETAIL in body["detail"] and "last active master_admin" in body["detail"]
    return body


def _bulk(scim, method, user_id, data=None):
    op = {"method": method, "path": f"/Users/{user_id}", "bulkId": "b"}
    if data is not None:
        op["data"] = data
    resp = scim.post("Bulk", json={"schemas": [BULK], "Operations": [op]})
    assert resp.status_code == 200
    (result,) = resp.json["Operations"]
    return result


DEPROVISION = {
    "DELETE": lambda scim, uid: scim.delete(f"Users/{uid}"),
    "PATCH active false (Okta)": lambda scim, uid: scim.patch(f"Users/{uid}", json=OFF),
    'PATCH active "False" (Entra)': lambda scim, uid: scim.patch(
        f"Users/{uid}",
        json={"Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
    ),
    "PUT active false": lambda scim, uid: scim.put(
        f"Users/{uid}",
        json={**scim.get(f"Users/{uid}").json, "active": False},
    ),
}


@pytest.mark.parametrize("how", DEPROVISION)
def test_deprovisioning_the_last_active_master_admin_is_refused(
    scim, store, account, policy, saml, how, api_for
):
    """A SCIM DELETE, a PATCH or a PUT with active false of the account's last master_admin is a
    409 naming the guard; the user stays, active, signed in, with every row and version as it
    was, and the refusal is the one audit event written (guard, role kept, what was refused)."""
    policy("Owners")
    owner = scim.post("Users", json={"userName": "boss@a.test", ENT: {"department": "Owners"}}).json
    request = saml.start("/welcome")
    assert saml.post(saml.response(in_response_to=request.id, name_id="boss@a.test")).status_code
    assert saml.client.get("/session").json["role"] == "master_admin"
    before = _state(store, account, owner["id"])

    _refused(DEPROVISION[how](scim, owner["id"]))

    assert _state(store, account, owner["id"]) == before
    assert before["user"]["active"] is True
    assert saml.client.get("/session").status_code == 200  # the session was not ended
    (event,) = refusals(store, account)
    assert event.target_id == owner["id"] and event.actor.startswith("scim:token:")
    assert event.before == {"role": "master_admin", "provenance": "policy:owners", "active": True}
    assert event.after == {
        "refused": "delete" if how == "DELETE" else "deactivate",
        "guard": "keep_at_least_one: master_admin",
        "kept": "master_admin",
    }
    (public,) = guard_feed(api_for, account)
    assert public["type"] == "user.guard_refused" and public["cursor"] == str(event.seq)
    assert public["data"] == {"user": {"id": owner["id"]}, **event.after}


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_bulk_deprovisioning_the_last_master_admin_fails_that_operation(
    scim, store, account, policy, method
):
    """In a Bulk, the refused DELETE or deactivation is that operation's 409 (no 500 of the
    whole); the user stays as they were and the next operation still runs."""
    policy("Owners")
    owner = scim.post("Users", json={"userName": "o@a.test", ENT: {"department": "Owners"}}).json
    other = scim.post("Users", json={"userName": "x@a.test"}).json
    before = _state(store, account, owner["id"])["user"]
    ops = [
        {
            "method": method,
            "path": f"/Users/{owner['id']}",
            **({"data": OFF} if method == "PATCH" else {}),
        },
        {"method": "DELETE", "path": f"/Users/{other['id']}"},
    ]
    resp = scim.post("Bulk", json={"schemas": [BULK], "Operations": ops})
    assert resp.status_code == 200
    first, second = resp.json["Operations"]
    assert first["status"] == "409" and "scimType" not in first["response"]
    assert GUARD_DETAIL in first["response"]["detail"]
    assert second["status"] == "204"
    assert _state(store, account, owner["id"])["user"] == before
    assert len(refusals(store, account)) == 1


def test_a_master_admin_who_is_not_the_last_can_be_deprovisioned(scim, store, account, policy):
    """With three active master_admins, one is deactivated (PATCH) and one deleted (Bulk); the
    last is then refused, and no refusal was recorded before that."""
    policy("Owners")
    ids = [
        scim.post("Users", json={"userName": f"o{i}@a.test", ENT: {"department": "Owners"}}).json[
            "id"
        ]
        for i in range(3)
    ]
    assert scim.patch(f"Users/{ids[0]}", json=OFF).json["active"] is False
    assert _bulk(scim, "DELETE", ids[1])["status"] == "204"
    assert scim.get(f"Users/{ids[1]}").status_code == 404
    assert refusals(store, account) == []
    _refused(scim.delete(f"Users/{ids[2]}"))
    assert scim.get(f"Users/{ids[2]}").json["active"] is True
    # a deactivated holder is no holder; deleting them is not refused
    assert scim.delete(f"Users/{ids[0]}").status_code == 204


def test_a_deactivated_master_admin_does_not_count_as_the_one_kept(
    scim, store, account, policy, api
):
    """The guard counts active holders: with the other master_admin deactivated, neither
    deactivating the active one (SCIM) nor clearing their manual role (API) goes through."""
    policy("Owners")
    gone = scim.post("Users", json={"userName": "g@a.test", ENT: {"department": "Owners"}}).json
    boss = scim.post("Users", json={"userName": "b@a.test"}).json
    assert api.put(f"users/{boss['id']}/role", json={"role": "master_admin"}).status_code == 200
    assert scim.patch(f"Users/{gone['id']}", json=OFF).status_code == 200
    _refused(scim.patch(f"Users/{boss['id']}", json=OFF))
    cleared = api.delete(f"users/{boss['id']}/role")
    assert (
        cleared.status_code == 409 and "keep_at_least_one: master_admin" in cleared.json["detail"]
    )
    assert role(store, boss["id"]) == {"role": "master_admin", "provenance": "manual"}
    (event,) = refusals(store, account)
    assert event.before["provenance"] == "manual"  # any provenance: the role is what counts


def test_group_removal_that_drops_the_last_master_admin_keeps_the_role(
    scim, store, account, settings
):
    """A role given through a SCIM group: removing the last owner from the group (PATCH) and
    deleting the group both re-evaluate them, and the guard keeps their role each time."""
    path = settings.policy_dir / f"{account.slug}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            account: {account.slug}
            environments: [production]
            defaults: {{role: media_library_user, environments: [production]}}
            rules:
              - name: owners
                when: {{groups: {{contains: Owners}}}}
                then: {{role: master_admin}}
            guards: {{keep_at_least_one: master_admin}}
            """
        )
    )
    try:
        owner = scim.post("Users", json={"userName": "o@a.test"}).json["id"]
        group = scim.post("Groups", json={"displayName": "Owners", "members": [{"value": owner}]})
        assert role(store, owner)["role"] == "master_admin"
        remove = {"Operations": [{"op": "remove", "path": f'members[value eq "{owner}"]'}]}
        assert scim.patch(f"Groups/{group.json['id']}", json=remove).status_code == 204
        assert role(store, owner) == {"role": "master_admin", "provenance": "policy:owners"}
        assert len(refusals(store, account)) == 1
        add = {"Operations": [{"op": "add", "path": "members", "value": [{"value": owner}]}]}
        assert scim.patch(f"Groups/{group.json['id']}", json=add).status_code == 204
        assert len(refusals(store, account)) == 1  # back in the group: nothing to refuse
        assert scim.delete(f"Groups/{group.json['id']}").status_code == 204
        assert role(store, owner) == {"role": "master_admin", "provenance": "policy:owners"}
        assert [(e.target_id, e.after["guard"]) for e in refusals(store, account)] == [
            (owner, "keep_at_least_one: master_admin")
        ] * 2
    finally:
        path.unlink(missing_ok=True)


def _pair(fn):
    """fn(0) and fn(1) in two threads released at once; their results (or exceptions)."""
    barrier, out = threading.Barrier(2), [None, None]

    def run(i):
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # asserted on by the caller
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _active_master_admins(store, account):
    with store.read() as db:
        return sorted(
            db.scalars(
                select(User.user_name)
                .join(RoleAssignment, RoleAssignment.user_id == User.id)
                .where(
                    User.account_id == account.id,
                    User.active.is_not(False),
                    RoleAssignment.role == "master_admin",
                )
            )
        )


ROUNDS = 4


def _user_id(store, account, user_name):
    with store.read() as db:
        return str(
            db.scalar(
                select(User.id).where(User.account_id == account.id, User.user_name == user_name)
            )
        )


@pytest.mark.parametrize("kinds", [("PATCH", "PATCH"), ("DELETE", "DELETE"), ("PATCH", "DELETE")])
def test_concurrent_deprovisioning_of_the_last_two_keeps_one(scim, store, account, policy, kinds):
    """The last two master_admins deprovisioned at once, round after round: each time exactly
    one request succeeds, the other is the guard's 409, and one active master_admin remains."""
    policy("Owners")
    clients = [
        ScimClient(scim.client.application.test_client(), scim.token, account) for _ in kinds
    ]
    for n in range(ROUNDS):
        ids = [
            scim.post(
                "Users", json={"userName": f"r{n}{i}@a.test", ENT: {"department": "Owners"}}
            ).json["id"]
            for i in (0, 1)
        ]
        for name in _active_master_admins(store, account):  # the last round's survivor
            if not name.startswith(f"r{n}"):
                off = scim.patch(f"Users/{_user_id(store, account, name)}", json=OFF)
                assert off.status_code == 200

        def deprovision(i, ids=ids):
            c, path = clients[i], f"Users/{ids[i]}"
            resp = c.delete(path) if kinds[i] == "DELETE" else c.patch(path, json=OFF)
            return resp.status_code, resp.get_json(silent=True)

        results = _pair(deprovision)
        assert sorted(r[0] for r in results) in ([200, 409], [204, 409]), results
        refused = next(body for status, body in results if status == 409)
        assert "scimType" not in refused and GUARD_DETAIL in refused["detail"]
        (kept,) = _active_master_admins(store, account)
        assert kept.startswith(f"r{n}")
    assert len(refusals(store, account)) == ROUNDS


def test_concurrent_manual_role_clears_of_the_last_two_keep_one(
    scim, store, account, policy, api_for
):
    """Two API requests clearing the manual master_admin role of the last two holders at once,
    round after round: one 200, one 409 naming the guard, one master_admin left."""
    policy("Nobody")
    admin = api_for(account)
    clients = [api_for(account) for _ in (0, 1)]
    for c in clients:
        c.client = c.client.application.test_client()  # a client per thread
    for n in range(ROUNDS):
        ids = [scim.post("Users", json={"userName": f"m{n}{i}@a.test"}).json["id"] for i in (0, 1)]
        for uid in ids:
            assert admin.put(f"users/{uid}/role", json={"role": "master_admin"}).status_code == 200
        for name in _active_master_admins(store, account):  # the last round's survivor
            if not name.startswith(f"m{n}"):
                uid = _user_id(store, account, name)
                assert admin.delete(f"users/{uid}/role").status_code == 200

        results = _pair(lambda i, ids=ids: clients[i].delete(f"users/{ids[i]}/role"))
        assert sorted(r.status_code for r in results) == [200, 409], results
        refused = next(r for r in results if r.status_code == 409)
        assert "keep_at_least_one: master_admin" in refused.json["detail"]
        (kept,) = _active_master_admins(store, account)
        assert kept.startswith(f"m{n}")


def test_plan_and_apply_count_active_users_only(scim, store, account, policy, cli):
    """A version that keeps master_admin only for a deactivated user leaves nobody in charge:
    `policy plan` and `policy apply` refuse it, as the live guard would."""
    path = policy("Owners")
    kept = scim.post("Users", json={"userName": "k@a.test", ENT: {"department": "Keep"}}).json
    scim.post("Users", json={"userName": "o@a.test", ENT: {"department": "Owners"}})
    scim.post("Users", json={"userName": "o2@a.test", ENT: {"department": "Owners"}})
    assert scim.patch(f"Users/{kept['id']}", json=OFF).status_code == 200
    path = policy("Keep")  # only k@a.test, deactivated, would be master_admin
    run = type(cli)({**cli.env, "BRIDGE_POLICY_DIR": str(path.parent)})
    planned = run("policy", "plan", account.slug)
    assert planned.exit_code == 1
    assert "REFUSED: guard keep_at_least_one: no user would keep the role master_admin" in (
        planned.stderr
    )
    applied = run("policy", "apply", account.slug)
    assert applied.exit_code == 1 and "not applied" in applied.stderr
