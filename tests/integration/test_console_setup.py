"""`idbridge console setup-link`: a one-time page for a customer's IT admin that can connect an
IdP and get one SCIM token, each once, and nothing else; every use audited as the link."""

import io
import re
from datetime import timedelta
from html import unescape

from sqlalchemy import select, update

from bridge import accounts
from bridge.models import AuditEvent, IdentityProvider, OneTimeLink, utcnow
from tests.saml_idp import TestIdP


def _link(cli, slug, *flags):
    done = cli("console", "setup-link", slug, *flags)
    assert done.exit_code == 0, done.output
    url = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"http://127\.0\.0\.1:8000/console/{slug}/setup/ibu_[\w-]{{43}}", url)
    return url.removeprefix("http://127.0.0.1:8000")


def _text(response):
    return unescape(response.get_data(as_text=True))


def _csrf(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', _text(page))[1]


def test_a_setup_link_connects_an_idp_and_issues_one_token(client, cli, store, account):
    path = _link(cli, account.slug)
    page = client.get(path)
    text = _text(page)
    assert page.status_code == 200 and "Reply URL (Assertion Consumer Service URL)" in text
    assert "Audience URI (SP Entity ID)" in text and "Get a SCIM token" in text
    token = _csrf(page)
    idp = TestIdP(entity_id="https://okta.example.test/metadata")
    connected = client.post(
        f"{path}/idp",
        data={
            "csrf_token": token,
            "name": "okta",
            "metadata_file": (io.BytesIO(idp.metadata_xml().encode()), "metadata.xml"),
        },
        content_type="multipart/form-data",
    )
    assert connected.status_code == 200 and "IdP okta connected." in _text(connected)
    again = client.post(
        f"{path}/idp",
        data={
            "csrf_token": token,
            "metadata_file": (io.BytesIO(idp.metadata_xml().encode()), "m.xml"),
        },
        content_type="multipart/form-data",
    )
    assert again.status_code == 409 and "may not do 'sso'" in _text(again)
    issued = client.post(f"{path}/scim", data={"csrf_token": token, "label": "okta"})
    raw = re.search(r'id="s-token"[^>]*>(ibs_[^<]+)<', _text(issued))[1]
    assert accounts.authenticate(store, raw)[0].id == account.id
    assert "Set-up complete" in _text(issued)
    used = client.get(path)
    assert used.status_code == 409 and "already used" in _text(used)
    with store.read() as db:
        actors = set(
            db.scalars(
                select(AuditEvent.actor).where(
                    AuditEvent.account_id == account.id,
                    AuditEvent.action.in_(["idp.add", "token.issue"]),
                )
            )
        )
    assert len(actors) == 1 and actors.pop().startswith("setup-link:")


def test_a_setup_link_does_only_its_steps(client, cli, store, account):
    """A --scim link cannot connect an IdP; a POST without its CSRF token writes nothing."""
    path = _link(cli, account.slug, "--scim")
    page = client.get(path)
    assert "Connect IdP" not in _text(page)
    refused = client.post(
        f"{path}/idp",
        data={"csrf_token": _csrf(page), "metadata_url": "https://idp.example.test/m"},
    )
    assert refused.status_code == 409 and "may not do 'sso'" in _text(refused)
    forged = client.post(f"{path}/scim", data={"label": "x"})
    assert forged.status_code == 403
    with store.read() as db:
        assert accounts.list_tokens(db, account.slug) == []
        assert (
            db.scalars(
                select(IdentityProvider).where(IdentityProvider.account_id == account.id)
            ).all()
            == []
        )


def test_an_expired_setup_link_is_refused(client, cli, store, account):
    path = _link(cli, account.slug, "--sso", "--expires", "1")
    store.write(
        lambda db: db.execute(
            update(OneTimeLink)
            .where(OneTimeLink.account_id == account.id)
            .values(expires=utcnow() - timedelta(seconds=1))
        )
    )
    page = client.get(path)
    assert page.status_code == 409 and "expired" in _text(page)


def test_setup_link_bad_options(cli, account):
    too_long = cli("console", "setup-link", account.slug, "--expires", "100000")
    assert too_long.exit_code == 2
