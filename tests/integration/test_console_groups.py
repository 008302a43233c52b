"""The console's Groups screen over HTTP: groups with who manages them, a group's members with the
provenance of each membership and its grants, manual grants and members added and removed, manual
groups made, renamed and deleted; SCIM groups refused with the reason and nothing written."""

import re
import uuid
from html import unescape

import pytest
from sqlalchemy import func, select

from bridge import groups, provisioning
from bridge.models import AuditEvent, Grant, Group, Membership
from tests import factories
from tests.console_support import ConsoleLogin


@pytest.fixture
def console(client, store, account, settings):
    login = ConsoleLogin(client, store, account, settings)
    login.sign_in("ann@example.com")
    return login


def _text(response):
    return unescape(response.get_data(as_text=True))


def _user(store, account, name):
    return provisioning.provision(
        store, account.id, factories.profile(user_name=name), actor="scim:t"
    ).user_id


def _scim_group(store, account, name, members=()):
    """A group as SCIM makes it (the service the SCIM adapter calls)."""
    return groups.create_group(store, account.id, name, members=members, actor="scim:t").group_id


def _events(store, account, action, target=None):
    with store.read() as db:
        stmt = select(AuditEvent).where(
            AuditEvent.account_id == account.id, AuditEvent.action == action
        )
        if target is not None:
            stmt = stmt.where(AuditEvent.target_id == str(target))
        return db.scalars(stmt.order_by(AuditEvent.seq)).all()


def _members(page):
    return set(re.findall(r'data-member="([^"]+)" data-provenance="([^"]+)"', page))


def _grants(page):
    return set(re.findall(r'data-grant="([^"]+)" data-provenance="([^"]+)"', page))


def _count(store, model, *where):
    with store.read() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where))


def test_groups_list_and_a_group_page_with_members_and_provenance(console, store, account):
    """A SCIM group and a manual member of it: the list says who manages it and counts members;
    the group page shows each membership with where it came from."""
    mia = _user(store, account, "mia@example.com")
    _user(store, account, "leo@example.com")
    group_id = _scim_group(store, account, "Engineering", [mia])
    listed = _text(console.client.get(f"/console/{console.slug}/groups"))
    row = re.search(r'<tr data-group="Engineering">.*?</tr>', listed, re.S)[0]
    assert 'class="badge scim">scim<' in row and "<td>1</td>" in row
    added = console.post(f"/groups/{group_id}/members", {"user_name": "LEO@example.com"})
    assert added.status_code == 302
    page = _text(console.client.get(added.headers["Location"]))
    assert "Member added by hand." in page
    assert _members(page) == {("mia@example.com", "scim"), ("leo@example.com", "manual")}
    assert "pushed by the IdP over SCIM" in page and "given by hand" in page
    assert "rename or delete it there" in page and "Delete group" not in page
    (event,) = [
        e
        for e in _events(store, account, "user.manual_access")
        if e.actor == "console:ann@example.com"
    ]
    assert event.target_type == "user"


def test_a_manual_group_is_made_renamed_filled_and_deleted_and_audited(console, store, account):
    made = console.post("/groups", {"display_name": "Campaign team"})
    assert made.status_code == 302
    group_id = made.headers["Location"].split("/groups/")[1].split("?")[0]
    page = _text(console.client.get(made.headers["Location"]))
    assert "Group made." in page and 'class="badge manual">manual<' in page
    renamed = console.post(f"/groups/{group_id}/rename", {"display_name": "Campaigns"})
    assert "Group renamed." in _text(console.client.get(renamed.headers["Location"]))
    with store.read() as db:
        assert db.get(Group, uuid.UUID(group_id)).display_name == "Campaigns"
    deleted = console.post(f"/groups/{group_id}/delete")
    assert deleted.status_code == 302
    assert "Group deleted." in _text(console.client.get(deleted.headers["Location"]))
    assert _count(store, Group, Group.account_id == account.id) == 0
    for action in ("group.create", "group.update", "group.delete"):
        (event,) = _events(store, account, action, group_id)
        assert event.actor == "console:ann@example.com"


def test_a_group_grant_is_added_held_by_members_and_removed(console, store, account):
    mia = _user(store, account, "mia@example.com")
    group_id = _scim_group(store, account, "Design", [mia])
    added = console.post(
        f"/groups/{group_id}/grants",
        {"environment": "staging", "kind": "folder", "path": "brand/", "level": "editor"},
    )
    page = _text(console.client.get(added.headers["Location"]))
    assert "every member holds it" in page
    assert _grants(page) == {("staging:folder:brand/:editor", "manual")}
    user_page = _text(console.client.get(f"/console/{console.slug}/users/{mia}"))
    assert 'data-value="staging:folder:brand/:editor" data-provenance="group:Design"' in user_page
    (event,) = _events(store, account, "group.manual_grant", group_id)
    assert event.actor == "console:ann@example.com"
    removed = console.post(
        f"/groups/{group_id}/grants/remove",
        {"environment": "staging", "kind": "folder", "path": "brand/"},
    )
    assert _grants(_text(console.client.get(removed.headers["Location"]))) == set()
    assert _count(store, Grant, Grant.group_id == group_id) == 0


def test_a_scim_group_cannot_be_renamed_or_deleted_here(console, store, account):
    """409 naming who manages it; the group, its name and the audit log stay as they were."""
    group_id = _scim_group(store, account, "Engineering")
    before = _count(store, AuditEvent, AuditEvent.account_id == account.id)
    for path, form in (("rename", {"display_name": "Eng"}), ("delete", {})):
        refused = console.post(f"/groups/{group_id}/{path}", form)
        assert refused.status_code == 409
        assert "managed by scim; change it there" in _text(refused)
    with store.read() as db:
        assert db.get(Group, group_id).display_name == "Engineering"
    assert _count(store, AuditEvent, AuditEvent.account_id == account.id) == before


def test_refusals_say_why_and_write_nothing(console, store, account):
    """A taken name, an unknown userName, a bad level, no CSRF token: each refused, nothing
    written."""
    group_id = _scim_group(store, account, "Engineering")
    taken = console.post("/groups", {"display_name": "engineering"})
    assert taken.status_code == 409 and "already" in _text(taken)
    nobody = console.post(f"/groups/{group_id}/members", {"user_name": "ghost@example.com"})
    assert nobody.status_code == 404 and "ghost@example.com" in _text(nobody)
    bad = console.post(
        f"/groups/{group_id}/grants",
        {"environment": "staging", "kind": "folder", "path": "x/", "level": "owner"},
    )
    assert bad.status_code == 400 and "level" in _text(bad)
    forged = console.client.post(f"/console/{console.slug}/groups", data={"display_name": "Forged"})
    assert forged.status_code == 403 and "Form refused" in _text(forged)
    assert _count(store, Group, Group.account_id == account.id) == 1
    assert _count(store, Membership, Membership.group_id == group_id) == 0
    assert _count(store, Grant, Grant.group_id == group_id) == 0


def test_a_person_who_is_not_an_admin_cannot_open_or_change_groups(app, store, account, settings):
    login = ConsoleLogin(app.test_client(), store, account, settings)
    login.sign_in("bob@example.com", groups=("staff",))
    assert login.client.get(f"/console/{account.slug}/groups").status_code == 403
    refused = login.post("/groups", {"display_name": "Mine"}, csrf=False)
    assert refused.status_code == 403
    assert _count(store, Group, Group.account_id == account.id) == 0
