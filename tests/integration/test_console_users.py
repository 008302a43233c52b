"""The console's Users screens over HTTP: find a user, their access with provenance and why,
manual grants and roles (audited as the person), sessions, filters and pages."""

import re
import uuid
from html import unescape

import pytest
from sqlalchemy import select

from bridge import accounts, provisioning
from bridge.models import AuditEvent, Grant, User
from tests.conftest import ScimClient
from tests.console_support import ConsoleLogin
from tests.factories import profile

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def console(client, store, account, settings):
    login = ConsoleLogin(client, store, account, settings)
    login.sign_in("ann@example.com")
    token = accounts.issue_token(store, account.slug, label="idp", actor="test")
    login.scim = ScimClient(client, token.raw, account)
    return login


def _mia(console):
    made = console.scim.post(
        "Users", json={"userName": "mia@example.com", ENT: {"department": "Marketing"}}
    )
    assert made.status_code == 201, made.json
    return made.json["id"]


def _manual_grants(store, user_id):
    with store.read() as db:
        return db.scalars(
            select(Grant.path).where(
                Grant.provenance == "manual", Grant.user_id == uuid.UUID(str(user_id))
            )
        ).all()


def _text(response):
    return unescape(response.get_data(as_text=True))


def _rows(page):
    """The effective-access rows of a user page: (what, value, provenance)."""
    return set(
        re.findall(r'<tr data-what="([^"]+)" data-value="([^"]+)" data-provenance="([^"]+)">', page)
    )


def test_find_a_user_and_see_why_they_have_editor_on_marketing(console):
    """Search finds the user; their page shows the grant, its provenance and the rule's why."""
    user_id = _mia(console)
    found = _text(console.client.get(f"/console/{console.slug}/users?q=MIA"))
    assert f'href="/console/{console.slug}/users/{user_id}">mia@example.com<' in found
    assert f"users/{user_id}" in found and ">ann@example.com</a>" not in found
    page = _text(console.client.get(f"/console/{console.slug}/users/{user_id}"))
    assert ("grant", "production:folder:marketing/:editor", "policy:marketing") in _rows(page)
    assert "policy rule 'marketing'" in page
    assert re.search(r"matched</span> <code>marketing</code>", page)


def test_grant_a_folder_by_hand_then_remove_it(console, store):
    """A manual grant shows with provenance manual, is audited as the person, and goes again."""
    user_id = _mia(console)
    added = console.post(
        f"/users/{user_id}/grants",
        {"environment": "staging", "kind": "folder", "path": "campaigns/", "level": "viewer"},
    )
    assert added.status_code == 302
    page = _text(console.client.get(added.headers["Location"]))
    assert "Grant added by hand." in page
    assert ("grant", "staging:folder:campaigns/:viewer", "manual") in _rows(page)
    assert "given by hand (API, console or CLI)" in page
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.target_id == user_id, AuditEvent.action == "user.manual_access")
            .order_by(AuditEvent.seq.desc())
        ).first()
    assert event.actor == "console:ann@example.com"
    removed = console.post(
        f"/users/{user_id}/grants/remove",
        {"environment": "staging", "kind": "folder", "path": "campaigns/"},
    )
    assert removed.status_code == 302
    page = _text(console.client.get(f"/console/{console.slug}/users/{user_id}"))
    assert not any(p == "manual" for _w, _v, p in _rows(page))
    assert ("grant", "production:folder:marketing/:editor", "policy:marketing") in _rows(page)


def test_a_bad_grant_is_a_clear_400_and_writes_nothing(console, store):
    user_id = _mia(console)
    for form, says in (
        ({"environment": "staging", "kind": "folder", "path": "x/", "level": "owner"}, "level"),
        ({"environment": "nowhere", "kind": "folder", "path": "x/", "level": "viewer"}, "nowhere"),
        ({"environment": "staging", "kind": "folder", "path": "  ", "level": "viewer"}, "path"),
    ):
        refused = console.post(f"/users/{user_id}/grants", form)
        assert refused.status_code in (400, 404) and says in _text(refused)
    assert _manual_grants(store, user_id) == []


def test_a_grant_without_csrf_is_refused(console, store):
    user_id = _mia(console)
    refused = console.client.post(
        f"/console/{console.slug}/users/{user_id}/grants",
        data={"environment": "staging", "kind": "folder", "path": "x/", "level": "viewer"},
    )
    assert refused.status_code == 403 and "Form refused" in _text(refused)
    assert _manual_grants(store, user_id) == []


def test_set_and_clear_a_manual_role(console):
    """A manual role outranks the policy's; clearing it gives the policy's role back."""
    user_id = _mia(console)
    console.post(f"/users/{user_id}/role", {"role": "reports"})
    page = _text(console.client.get(f"/console/{console.slug}/users/{user_id}"))
    assert ("role", "reports", "manual") in _rows(page)
    cleared = console.post(f"/users/{user_id}/role", {"role": ""})
    page = _text(console.client.get(cleared.headers["Location"]))
    assert "Manual role cleared" in page
    assert [(v, p) for w, v, p in _rows(page) if w == "role"] == [
        ("media_library_user", "policy:defaults")
    ]


def test_clearing_a_role_nobody_set_by_hand_is_a_409(console):
    user_id = _mia(console)
    refused = console.post(f"/users/{user_id}/role", {"role": ""})
    assert refused.status_code == 409 and "no manual role to clear" in _text(refused)


def test_users_page_by_page_and_filtered(console, store):
    """50 a page with a link to the next; the provenance filter narrows to manual access."""
    for n in range(55):
        provisioning.provision(
            store, console.account.id, profile(f"u{n:02d}@example.com"), actor="t"
        )
    user_id = _mia(console)
    first = _text(console.client.get(f"/console/{console.slug}/users"))
    assert first.count('<tr><td><a href="/console/') == 50
    nxt = re.search(r'href="([^"]+cursor=[^"]+)"', first)[1]
    second = _text(console.client.get(nxt))
    assert second.count('<tr><td><a href="/console/') == 57 - 50
    console.post(
        f"/users/{user_id}/grants",
        {"environment": "staging", "kind": "folder", "path": "c/", "level": "viewer"},
    )
    manual = _text(console.client.get(f"/console/{console.slug}/users?provenance=manual"))
    assert manual.count('<tr><td><a href="/console/') == 1 and "mia@example.com" in manual


def test_a_user_of_another_account_is_not_found(console, store):
    other = accounts.create_account(store, "other-" + console.slug[-8:], actor="t")
    stranger = provisioning.provision(store, other.id, profile("x@example.com"), actor="t")
    page = console.client.get(f"/console/{console.slug}/users/{stranger.user_id}")
    assert page.status_code == 404


def test_end_a_users_sessions(console, store):
    """The admin's own page lists their session; ending it signs them out."""
    with store.read() as db:
        me = db.scalar(
            select(User.id).where(
                User.account_id == console.account.id, User.user_name == "ann@example.com"
            )
        )
    page = _text(console.client.get(f"/console/{console.slug}/users/{me}"))
    assert "End all sessions" in page
    ended = console.post(f"/users/{me}/sessions/end")
    assert ended.status_code == 302
    again = console.client.get(f"/console/{console.slug}/")
    assert again.status_code == 302 and "/signin" in again.headers["Location"]
