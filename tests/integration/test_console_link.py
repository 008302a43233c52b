"""`idbridge console link`: a one-time sign-in link (10 minutes, used once, stored hashed)."""

import re
import secrets
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import select, update

from bridge import accounts, admins
from bridge.errors import NotFound
from bridge.models import AuditEvent, OneTimeLink, utcnow
from tests.console_support import ConsoleLogin


@pytest.fixture
def console(client, store, account, settings):
    login = ConsoleLogin(client, store, account, settings)
    login.sign_in("first.admin@example.com")  # makes the user (an admin, by the policy)
    client.delete_cookie("bridge_session")
    login.sign_in("staff@example.com", groups=("staff",))
    client.delete_cookie("bridge_session")
    return login


def _link(cli, slug, user):
    done = cli("console", "link", slug, user)
    assert done.exit_code == 0, done.output
    url = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"http://127\.0\.0\.1:8000/console/{slug}/link/ibl_[\w-]{{43}}", url)
    return url.removeprefix("http://127.0.0.1:8000")


def _csrf(page):
    return unescape(re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1])


def test_a_link_signs_an_admin_in_once(console, cli, store):
    """GET shows a button and uses nothing; the POST signs in; a second use is refused."""
    path = _link(cli, console.slug, "first.admin@example.com")
    page = console.client.get(path)
    assert page.status_code == 200 and "Sign in as first.admin@example.com" in page.get_data(
        as_text=True
    )
    assert console.client.get(path).status_code == 200  # looking twice uses nothing up
    token = _csrf(page)
    used = console.client.post(path, data={"csrf_token": token})
    assert used.status_code == 302 and used.headers["Location"] == f"/console/{console.slug}/"
    assert console.client.get(f"/console/{console.slug}/").status_code == 200
    again = console.client.post(path, data={"csrf_token": token})
    assert again.status_code == 409 and "already used" in again.get_data(as_text=True)
    with store.read() as db:
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == console.account.id,
                AuditEvent.action == "console.link_sign_in",
            )
        ).one()
        stored = db.scalars(
            select(OneTimeLink.token_hash).where(OneTimeLink.account_id == console.account.id)
        ).all()
    assert event.actor == "console:first.admin@example.com"
    assert path.rsplit("/", 1)[1] not in stored  # only the hash is kept


def test_a_link_post_without_csrf_is_refused_and_the_link_stays_usable(console, cli):
    path = _link(cli, console.slug, "first.admin@example.com")
    refused = console.client.post(path, data={})
    assert refused.status_code == 403 and "Form refused" in refused.get_data(as_text=True)
    assert console.client.get(f"/console/{console.slug}/").status_code == 302  # not signed in
    assert console.client.get(path).status_code == 200


def test_an_expired_link_is_refused(console, cli, store):
    path = _link(cli, console.slug, "first.admin@example.com")
    store.write(
        lambda db: db.execute(
            update(OneTimeLink)
            .where(OneTimeLink.account_id == console.account.id)
            .values(expires=utcnow() - timedelta(seconds=1))
        )
    )
    page = console.client.get(path)
    assert page.status_code == 409 and "expired" in page.get_data(as_text=True)


def test_a_link_of_another_account_or_made_up_is_refused(console, cli, store):
    """A link works only at its own account's URL; a made-up token is not found."""
    path = _link(cli, console.slug, "first.admin@example.com")
    made_up = path[:-6] + "AAAAAA"
    assert console.client.get(made_up).status_code == 404
    other = accounts.create_account(store, f"acct-{secrets.token_hex(4)}", actor="test")
    elsewhere = path.replace(f"/console/{console.slug}/", f"/console/{other.slug}/")
    page = console.client.get(elsewhere)
    assert page.status_code == 404 and "not one we issued for this account" in unescape(
        page.get_data(as_text=True)
    )
    with pytest.raises(NotFound):
        admins.redeem_link(store, other.slug, path.rsplit("/", 1)[1], "secret")


def test_links_are_only_for_admins(console, cli):
    """The CLI refuses a link for a non-admin or an unknown user, saying why."""
    staff = cli("console", "link", console.slug, "staff@example.com")
    assert staff.exit_code == 1
    assert "has the role media_library_user" in staff.output
    nobody = cli("console", "link", console.slug, "nobody@example.com")
    assert nobody.exit_code == 1 and "no user 'nobody@example.com'" in nobody.output


def test_concurrent_redeems_of_one_link_sign_in_once(console, cli, store):
    """Two redeems racing on one link: exactly one session opens."""
    import threading

    raw = _link(cli, console.slug, "first.admin@example.com").rsplit("/", 1)[1]
    outcomes = []

    def redeem(secret):
        try:
            admins.redeem_link(store, console.slug, raw, secret)
            outcomes.append("ok")
        except Exception as exc:  # the loser's refusal
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=redeem, args=(f"s{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["Conflict", "Conflict", "Conflict", "ok"]
