"""The console's Policy screen over HTTP: the active version, the editor with every error inline,
plan before apply (gains, losses, role changes; a guard's refusal shown as such and nothing
written), apply, history with diffs, rollback; every change audited as the person."""

import re
from html import unescape

import pytest
from sqlalchemy import func, select

from bridge import provisioning
from bridge.models import AuditEvent, PolicyVersion
from tests import factories
from tests.console_support import POLICY, ConsoleLogin

CAMPAIGNS = """  - name: campaigns
    when: {department: {equals: Marketing}}
    then:
      grants:
        - {environment: staging, folder: "campaigns/", level: viewer}
"""


@pytest.fixture
def console(client, store, account, settings):
    login = ConsoleLogin(client, store, account, settings)
    login.sign_in("ann@example.com")
    return login


@pytest.fixture
def mia(store, account):
    """A Marketing user (SCIM)."""
    profile = factories.profile(user_name="mia@example.com", fields={"department": "Marketing"})
    return str(provisioning.provision(store, account.id, profile, actor="scim:t").user_id)


def _text(response):
    return unescape(response.get_data(as_text=True))


def _policy(slug, extra_rule="", guards=""):
    return POLICY.format(slug=slug) + extra_rule + guards


def _versions(store, account):
    with store.read() as db:
        return [
            (v.number, v.active)
            for v in db.scalars(
                select(PolicyVersion)
                .where(PolicyVersion.account_id == account.id)
                .order_by(PolicyVersion.number)
            )
        ]


def _audit_count(store, account):
    with store.read() as db:
        return db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.account_id == account.id)
        )


def _grants(console, user_id):
    page = _text(console.client.get(f"/console/{console.slug}/users/{user_id}"))
    return set(
        re.findall(r'data-what="grant" data-value="([^"]+)" data-provenance="([^"]+)"', page)
    )


def _plan_rows(page):
    return re.findall(r'<tr data-user="([^"]+)" data-role="([^"]*)">(.*?)</tr>', page, re.S)


def test_the_editor_starts_from_the_policy_serving_the_account(console):
    """No stored version yet: the page says what serves and the editor holds that file."""
    page = _text(console.client.get(f"/console/{console.slug}/policy"))
    assert "No version is stored yet" in page and f"{console.slug}.yaml" in page
    assert "- name: marketing" in page  # the file's text, in the editor
    assert "No stored version yet." in page


def test_every_error_shows_inline_and_nothing_is_written(console, store, account):
    broken = _policy(account.slug).replace("role: media_library_user", "role: emperor")
    broken = broken.replace("when: {{department", "whenn: {{department").replace(
        "  - name: marketing\n    when:", "  - name: marketing\n    whenn:"
    )
    before = _audit_count(store, account)
    for path in ("/policy/plan", "/policy/apply"):
        refused = console.post(path, {"source": broken})
        page = _text(refused)
        assert refused.status_code == 400
        errors = re.findall(r"<li><code>([^<]+)</code>", page)
        assert len(errors) >= 2 and all(e.startswith(f"{account.slug}.yaml:") for e in errors)
        assert any(":4:" in e and "emperor" in e for e in errors)
        assert '<pre class="at-line">4 |   role: emperor</pre>' in page  # next to its line
        assert 'aria-invalid="true"' in page and "whenn:" in page  # the edit is kept
    assert _versions(store, account) == [] and _audit_count(store, account) == before


def test_plan_then_apply_then_roll_back(console, store, account, mia):
    """Plan shows Mia gaining a folder (nothing saved); apply makes version 1 active and Mia
    holds it; a second version drops it; the history diffs them; rolling back restores it."""
    first = _policy(account.slug, CAMPAIGNS)
    plan = console.post("/policy/plan", {"source": first})
    page = _text(plan)
    assert plan.status_code == 200 and "Apply this policy</button>" in page
    (row,) = [r for r in _plan_rows(page) if r[0] == "mia@example.com"]
    assert "+ grants:" in row[2] and "staging:folder:campaigns/:viewer" in row[2]
    assert _versions(store, account) == []
    applied = console.post("/policy/apply", {"source": first})
    assert applied.status_code == 303
    assert "Version 1 is active" in _text(console.client.get(applied.headers["Location"]))
    assert ("staging:folder:campaigns/:viewer", "policy:campaigns") in _grants(console, mia)

    second = _policy(account.slug)
    plan = _text(console.post("/policy/plan", {"source": second}))
    (row,) = [r for r in _plan_rows(plan) if r[0] == "mia@example.com"]
    assert "\N{MINUS SIGN} grants:" in row[2] and "campaigns/" in row[2]
    console.post("/policy/apply", {"source": second})
    assert _versions(store, account) == [(1, False), (2, True)]
    assert not any(g[0].startswith("staging:folder:campaigns/") for g in _grants(console, mia))

    history = _text(console.client.get(f"/console/{console.slug}/policy"))
    assert '<tr data-version="2">' in history and '<tr data-version="1">' in history
    diff = _text(console.client.get(f"/console/{console.slug}/policy/versions/2"))
    assert '<span class="del">-  - name: campaigns</span>' in diff
    back = _text(console.client.get(f"/console/{console.slug}/policy/versions/1?plan=1"))
    (row,) = [r for r in _plan_rows(back) if r[0] == "mia@example.com"]
    assert "+ grants:" in row[2] and "Make version 1 active</button>" in back
    rolled = console.post("/policy/versions/1/activate")
    assert rolled.status_code == 303
    assert _versions(store, account) == [(1, True), (2, False)]
    assert ("staging:folder:campaigns/:viewer", "policy:campaigns") in _grants(console, mia)
    with store.read() as db:
        events = db.scalars(
            select(AuditEvent).where(
                AuditEvent.account_id == account.id,
                AuditEvent.action.in_(["policy.version", "policy.activate", "policy.apply"]),
            )
        ).all()
    assert len(events) == 2 + 3 + 3  # two versions; three activations, each applied
    assert {e.actor for e in events} == {"console:ann@example.com"}


def test_the_plan_shows_group_grants_that_would_change(console, store, account, mia):
    """A policy whose group grant changes level: the plan lists the group, its members now and
    the level before and after (nobody's own access changes, so the user table is empty)."""
    grants = (
        '\ngrants:\n  Marketing:\n    - {environment: production, folder: "brand/", level: %s}\n'
    )
    rule = "      groups: [Marketing]\n"
    viewer = (
        POLICY.format(slug=account.slug).replace(
            "      environments: [production, staging]\n",
            "      environments: [production, staging]\n" + rule,
        )
        + grants % "viewer"
    )
    assert console.post("/policy/apply", {"source": viewer}).status_code == 303
    page = _text(console.post("/policy/plan", {"source": viewer.replace("viewer", "manager")}))
    assert "Nobody's access would change." in page
    table = page[page.index('<table id="plan-group-grants">') :]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", table)]
    assert cells[:5] == [
        "Marketing",
        "1",
        "production folder brand/",
        "viewer → manager",
        "policy:grants",
    ]
    again = _text(console.post("/policy/plan", {"source": viewer}))
    assert 'id="plan-group-grants"' not in again  # nothing to change: no table


def test_a_guard_refusal_is_shown_as_such_and_nothing_is_written(console, store, account, mia):
    """A policy under which nobody keeps master_admin: the plan says refused (no apply button);
    applying anyway is a 409 with the guard named; no version stored, no audit event."""
    guarded = _policy(account.slug, guards="guards: {keep_at_least_one: [master_admin]}\n")
    plan = console.post("/policy/plan", {"source": guarded})
    page = _text(plan)
    assert 'id="plan-refused"' in page and "Refused by a guard." in page
    assert "keep_at_least_one: no user would keep the role master_admin" in page
    assert "Apply this policy</button>" not in page
    before = _audit_count(store, account)
    refused = console.post("/policy/apply", {"source": guarded})
    assert refused.status_code == 409 and "Refused by a guard." in _text(refused)
    assert _versions(store, account) == [] and _audit_count(store, account) == before


def test_policy_changes_need_an_admin_and_a_csrf_token(app, console, store, account):
    source = _policy(account.slug, CAMPAIGNS)
    forged = console.client.post(f"/console/{account.slug}/policy/apply", data={"source": source})
    assert forged.status_code == 403 and "Form refused" in _text(forged)
    other = ConsoleLogin.__new__(ConsoleLogin)
    other.client, other.store, other.account, other.slug = (
        app.test_client(),
        store,
        account,
        account.slug,
    )
    other.idp = console.idp
    other.sign_in("bob@example.com", groups=("staff",))
    assert other.client.get(f"/console/{account.slug}/policy").status_code == 403
    assert other.post("/policy/apply", {"source": source}, csrf=False).status_code == 403
    assert _versions(store, account) == []


def test_the_new_screens_carry_the_console_headers_and_no_inline_script(console, store, account):
    """Groups, a group, Policy, a plan, a version, SCIM: strict CSP, no framing, no inline
    script, every form with its CSRF token."""
    group_id = console.post("/groups", {"display_name": "Ops"}).headers["Location"]
    console.post("/policy/apply", {"source": _policy(account.slug)})
    pages = [
        console.client.get(f"/console/{console.slug}/groups"),
        console.client.get(group_id),
        console.client.get(f"/console/{console.slug}/policy"),
        console.client.get(f"/console/{console.slug}/policy/versions/1"),
        console.client.get(f"/console/{console.slug}/scim"),
        console.post("/policy/plan", {"source": _policy(account.slug, CAMPAIGNS)}),
    ]
    for page in pages:
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp and page.headers["X-Frame-Options"] == "DENY"
        html = page.get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
        forms = re.findall(r'<form[^>]*method="post".*?</form>', html, re.S)
        assert forms and all('name="csrf_token"' in f for f in forms)


def test_the_editor_check_lists_errors_with_their_lines_and_writes_nothing(
    app, console, store, account
):
    """The check behind the editor (console.js): JSON errors with their lines, or what loads;
    CSRF and an admin required; no version and no audit event either way."""
    before = _audit_count(store, account)
    broken = _policy(account.slug).replace("role: media_library_user", "role: emperor")
    r = console.post("/policy/check", {"source": broken})
    assert r.status_code == 200 and r.json["ok"] is False
    (emperor,) = [p for p in r.json["problems"] if "emperor" in p["problem"]]
    assert emperor["line"] == 4 and emperor["text"] == "  role: emperor"
    r = console.post("/policy/check", {"source": _policy(account.slug, CAMPAIGNS)})
    assert r.json == {"ok": True, "problems": [], "summary": "Loads: 3 rules."}
    forged = console.client.post(f"/console/{account.slug}/policy/check", data={"source": broken})
    assert forged.status_code == 403 and forged.mimetype == "text/html"
    other = app.test_client()
    assert other.post(f"/console/{account.slug}/policy/check").status_code == 403
    assert _versions(store, account) == [] and _audit_count(store, account) == before
