"""The admin console over HTTP: signing in through the account's SSO, who is refused, CSRF,
security headers, and the screens built on the bridge/ services (tokens, IdPs, logins, audit)."""

import io
import re
import secrets
from dataclasses import replace
from html import unescape

import pytest
from sqlalchemy import func, select, update

from bridge import accounts, logins, webhooks
from bridge.models import AuditEvent, IdentityProvider, ScimToken
from tests.console_support import ConsoleLogin
from tests.saml_idp import TestIdP


@pytest.fixture
def console(client, store, account, settings):
    return ConsoleLogin(client, store, account, settings)


def _text(response):
    return unescape(response.get_data(as_text=True))


def _tokens(store, account):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(ScimToken).where(ScimToken.account_id == account.id)
        )


def _events(store, account, action):
    with store.read() as db:
        return db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).all()


def test_admin_signs_in_through_sso_and_sees_the_overview(console):
    """Console -> sign-in -> the account's IdP -> ACS -> back on the console's overview."""
    done = console.sign_in("ann@example.com")
    assert done.status_code == 302 and done.headers["Location"] == f"/console/{console.slug}/"
    page = console.client.get(done.headers["Location"])
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "<h1>Overview</h1>" in text
    assert "ann@example.com" in text and ">admin<" in text
    assert re.search(r"test</strong>:\s+signing certificate expires <time", text)


def test_pages_carry_strict_security_headers(console):
    """CSP without inline script, no framing, no caching, no referrer; assets are our own."""
    console.sign_in("ann@example.com")
    page = console.client.get(f"/console/{console.slug}/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    text = page.get_data(as_text=True)
    assert "<script>" not in text and " onclick=" not in text and " style=" not in text
    for src in re.findall(r'(?:src|href)="([^"#]+)"', text):
        assert src.startswith("/"), src  # nothing from another site
    with console.client.get("/console/static/console.css") as css:
        assert css.status_code == 200 and css.mimetype == "text/css"


def test_a_person_who_is_not_an_admin_is_refused(console, store):
    """A signed-in media_library_user gets a 403 page that says why, and can change nothing."""
    done = console.sign_in("bob@example.com", groups=("staff",))
    assert done.status_code == 302
    page = console.client.get(f"/console/{console.slug}/")
    text = page.get_data(as_text=True)
    assert page.status_code == 403
    assert "bob@example.com has the role media_library_user" in text
    assert "only master_admin and admin may use the console" in text
    before = _tokens(store, console.account)
    token = re.search(r'name="csrf_token" value="([^"]+)"', text)[1]
    refused = console.client.post(
        f"/console/{console.slug}/scim/tokens", data={"csrf_token": token, "label": "x"}
    )
    assert refused.status_code == 403 and _tokens(store, console.account) == before


def test_a_session_of_another_account_opens_nothing_here(console, store, settings):
    """An admin of one account visiting another account's console is sent to sign in there."""
    console.sign_in("ann@example.com")
    other = accounts.create_account(store, f"acct-{secrets.token_hex(4)}", actor="test")
    page = console.client.get(f"/console/{other.slug}/")
    assert page.status_code == 302 and f"/console/{other.slug}/signin" in page.headers["Location"]
    post = console.client.post(
        f"/console/{other.slug}/scim/tokens", data={"csrf_token": console.csrf(), "label": "x"}
    )
    assert post.status_code == 403 and _tokens(store, other) == 0


def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(console, store):
    """No token, another session's token, or a made-up one: 403 'Form refused', nothing kept."""
    console.sign_in("ann@example.com")
    for data in ({"label": "evil"}, {"label": "evil", "csrf_token": "0" * 64}):
        refused = console.client.post(f"/console/{console.slug}/scim/tokens", data=data)
        assert refused.status_code == 403
        assert "Form refused" in refused.get_data(as_text=True)
    assert _tokens(store, console.account) == 0
    assert not _events(store, console.account, "token.issue")


def test_issue_a_scim_token_shown_once_then_revoke_it(console, store):
    """Issued: the raw token on that response only; revoked; both audited as the person."""
    console.sign_in("ann@example.com")
    issued = console.post("/scim/tokens", {"label": "okta"})
    raw = re.search(r'id="new-token"[^>]*>(ibs_[^<]+)<', issued.get_data(as_text=True))[1]
    assert issued.status_code == 200 and issued.headers["Cache-Control"] == "no-store"
    account, _token = accounts.authenticate(store, raw)
    assert account.id == console.account.id
    listing = console.client.get(f"/console/{console.slug}/scim").get_data(as_text=True)
    assert raw not in listing and raw[:10] in listing
    with store.read() as db:
        token_id = accounts.list_tokens(db, console.slug)[0].id
    gone = console.post(f"/scim/tokens/{token_id}/revoke")
    assert gone.status_code == 302
    with pytest.raises(Exception, match="revoked"):
        accounts.authenticate(store, raw)
    actors = {e.actor for e in _events(store, console.account, "token.issue")}
    actors |= {e.actor for e in _events(store, console.account, "token.revoke")}
    assert actors == {"console:ann@example.com"}


def test_add_an_idp_from_a_metadata_file_and_remove_it(console, store):
    """Upload metadata: the IdP is listed with its certificate expiry; remove takes it away."""
    console.sign_in("ann@example.com")
    other = TestIdP(entity_id="https://entra.example.test/metadata")
    added = console.post(
        "/idp",
        {
            "name": "entra",
            "metadata_file": (io.BytesIO(other.metadata_xml().encode()), "metadata.xml"),
        },
        content_type="multipart/form-data",
    )
    assert added.status_code == 302
    page = console.client.get(added.headers["Location"]).get_data(as_text=True)
    assert "IdP entra added." in page and "https://entra.example.test/metadata" in page
    assert "Reply URL (Assertion Consumer Service URL)" in page and "Single sign-on URL" in page
    assert f"http://127.0.0.1:8000/saml/{console.slug}/acs" in page
    broken = console.post(
        "/idp",
        {"name": "bad", "metadata_file": (io.BytesIO(b"<nope/>"), "m.xml")},
        content_type="multipart/form-data",
    )
    assert broken.status_code == 400 and "names no IdP entityID" in _text(broken)
    assert console.post("/idp/entra/remove").status_code == 302
    with store.read() as db:
        names = set(
            db.scalars(
                select(IdentityProvider.name).where(
                    IdentityProvider.account_id == console.account.id
                )
            )
        )
    assert names == {"test"}
    assert [e.actor for e in _events(store, console.account, "idp.remove")] == [
        "console:ann@example.com"
    ]


def test_idp_sign_in_settings_and_verified_domains(console, store):
    """The IdP page's settings form sets IdP-initiated, JIT, e-mail linking and routing domains
    at once (an unticked box turns a setting off), and the account's verified domains; each
    save is audited with the admin as actor. A bad domain is a 400 page naming it, and nothing
    changes; a form without its CSRF token changes nothing either."""
    console.sign_in("ann@example.com")
    page = console.client.get(f"/console/{console.slug}/idp").get_data(as_text=True)
    assert 'aria-label="Settings of test"' in page and 'name="link_by_email">' in page

    def idp():
        with store.read() as db:
            row = db.scalar(
                select(IdentityProvider).where(
                    IdentityProvider.account_id == console.account.id,
                    IdentityProvider.name == "test",
                )
            )
            return row.allow_idp_initiated, row.allow_jit, row.link_by_email

    form = {"allow_jit": "on", "link_by_email": "on", "domains": "Corp.Example, corp-eu.example"}
    saved = console.post("/idp/test/settings", form)
    assert saved.status_code == 302 and "saved=test" in saved.headers["Location"]
    assert idp() == (False, True, True)
    page = _text(console.client.get(saved.headers["Location"]))
    assert "Settings of test saved." in page
    assert 'value="corp-eu.example corp.example"' in page
    assert 'name="link_by_email" checked>' in page and 'name="allow_idp_initiated">' in page
    (event,) = _events(store, console.account, "idp.update")
    assert event.actor == "console:ann@example.com"
    assert event.after["domains"] == ["corp-eu.example", "corp.example"]

    bad = console.post("/idp/test/settings", {"allow_jit": "on", "domains": "not a domain"})
    assert bad.status_code == 400 and "'not'" in _text(bad)
    refused = console.post("/idp/test/settings", {"domains": ""}, csrf=False)
    assert refused.status_code == 403 and "Nothing was changed" in _text(refused)
    assert idp() == (False, True, True) and len(_events(store, console.account, "idp.update")) == 1

    verified = console.post("/idp/verified-domains", {"domains": "Example.com example.org"})
    assert verified.status_code == 302
    page = _text(console.client.get(verified.headers["Location"]))
    assert "Verified domains saved." in page and 'value="example.com example.org"' in page
    (event,) = _events(store, console.account, "account.verified_domains")
    assert event.actor == "console:ann@example.com"
    bad = console.post("/idp/verified-domains", {"domains": "example.com 192.0.2.7"})
    assert bad.status_code == 400 and "is an address" in _text(bad)
    with store.read() as db:
        held = accounts.get_account(db, console.slug).verified_domains
    assert sorted(held) == ["example.com", "example.org"]
    assert len(_events(store, console.account, "account.verified_domains")) == 1


def test_a_metadata_url_to_a_private_address_is_refused(console):
    """The SSRF guard of `idps.fetch` holds from the console too: a clear 400, nothing added."""
    console.sign_in("ann@example.com")
    refused = console.post("/idp", {"name": "x", "metadata_url": "https://127.0.0.1/metadata"})
    assert refused.status_code == 400
    assert "non-public address" in refused.get_data(as_text=True)


def test_overview_counts_refused_logins_by_reason(console, store):
    """Failed logins of the last 24 hours, by typed reason, each a link to the filtered log."""
    console.sign_in("ann@example.com")
    for reason in ("expired", "expired", "replayed"):
        logins.record(store, console.account.id, ok=False, reason=reason)
    text = console.client.get(f"/console/{console.slug}/").get_data(as_text=True)
    assert "1 succeeded, 3 refused." in text
    assert re.search(r"<code>expired</code></a></td><td class=\"num\">2<", text)
    filtered = console.client.get(f"/console/{console.slug}/logins?failed=1&reason=expired")
    body = filtered.get_data(as_text=True)
    assert body.count("<code>expired</code>") == 2 and "<code>replayed</code>" not in body


def test_the_login_log_paginates(console, store):
    """50 lines a page, newest first, and a link to the older ones."""
    console.sign_in("ann@example.com")
    for n in range(55):
        logins.record(store, console.account.id, ok=False, reason="expired", detail=f"n{n}")
    first = console.client.get(f"/console/{console.slug}/logins").get_data(as_text=True)
    assert first.count('class="badge bad">refused') == 50 and ">n54<" in first
    older = re.search(r'href="([^"]+before=\d+[^"]*)"', first)[1].replace("&amp;", "&")
    second = console.client.get(older).get_data(as_text=True)
    assert ">n4<" in second and ">n0<" in second and ">n5<" not in second
    assert second.count("<tr>") == 1 + 6  # header + 5 refusals + the admin's own sign-in
    assert second.count('class="badge ok">signed in') == 1


def test_audit_verify_reports_a_broken_chain(console, store):
    """The verify button says the chain holds, then where it breaks once an event is edited."""
    console.sign_in("ann@example.com")
    ok = console.post("/audit/verify").get_data(as_text=True)
    assert "The chain holds" in ok
    with store.read() as db:
        first = db.scalar(
            select(AuditEvent.id).where(
                AuditEvent.account_id == console.account.id, AuditEvent.seq == 2
            )
        )
    store.write(
        lambda db: db.execute(update(AuditEvent).where(AuditEvent.id == first).values(actor="x"))
    )
    broken = console.post("/audit/verify").get_data(as_text=True)
    assert "The chain is broken at event 2: its content was changed" in broken


def test_audit_filters_by_action_prefix(console, store):
    console.sign_in("ann@example.com")
    page = console.client.get(f"/console/{console.slug}/audit?action=idp.").get_data(as_text=True)
    assert "<code>idp.add</code>" in page and "<code>environment.create</code>" not in page


def test_sign_out_ends_the_session(console):
    console.sign_in("ann@example.com")
    out = console.post("/signout")
    assert out.status_code == 302 and out.headers["Location"].endswith("/signin?out=1")
    again = console.client.get(f"/console/{console.slug}/")
    assert again.status_code == 302 and "/signin" in again.headers["Location"]


def test_unknown_account_is_a_person_facing_404(client):
    page = client.get("/console/no-such-account/")
    assert page.status_code == 404 and "no account 'no-such-account'" in _text(page)
    assert page.mimetype == "text/html"


def test_webhooks_add_secret_once_redeliver_remove(console, store, settings, monkeypatch):
    """An endpoint added from the console: its secret shown once, listed, its log, removed."""
    config = console.client.application.config
    lenient = replace(config["BRIDGE_SETTINGS"], allow_private_webhooks=True)
    monkeypatch.setitem(config, "BRIDGE_SETTINGS", lenient)
    console.sign_in("ann@example.com")
    added = console.post("/webhooks", {"url": "http://127.0.0.1:9/hooks", "events": "user.created"})
    text = _text(added)
    assert added.status_code == 200 and "shown only once" in text
    secret = re.search(r'id="new-secret"[^>]*>(whsec_[^<]+)<', text)[1]
    listing = _text(console.client.get(f"/console/{console.slug}/webhooks"))
    assert "http://127.0.0.1:9/hooks" in listing and secret not in listing
    assert "user.created" in listing
    with store.read() as db:
        endpoint = webhooks.list_for(db, console.slug)[0]["id"]
    log = console.client.get(f"/console/{console.slug}/webhooks/{endpoint}")
    assert log.status_code == 200
    assert console.post(f"/webhooks/{endpoint}/remove").status_code == 302
    with store.read() as db:
        assert webhooks.list_for(db, console.slug) == []
    actors = {e.actor for e in _events(store, console.account, "webhook.add")}
    assert actors == {"console:ann@example.com"}


def test_a_webhook_to_a_private_address_is_refused(console, store):
    console.sign_in("ann@example.com")
    refused = console.post("/webhooks", {"url": "https://127.0.0.1/hooks"})
    assert refused.status_code == 400 and "non-public address" in _text(refused)
    with store.read() as db:
        assert webhooks.list_for(db, console.slug) == []
