"""The console's SCIM screen shows the SCIM request log next to the tokens (status, SCIM error
type, the failure's body with secrets redacted, failed-only filter, pages), and the overview the
last request and how it ended."""

import logging
import re
from html import unescape

import pytest

from bridge import scim_log
from tests.console_support import ConsoleLogin

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def console(client, store, account, settings):
    login = ConsoleLogin(client, store, account, settings)
    login.sign_in("ann@example.com")
    return login


def _text(response):
    return unescape(response.get_data(as_text=True))


def _rows(page):
    return re.findall(r'data-request="([^"]+)" data-status="(\d+)" data-scim-type="([^"]*)"', page)


def test_requests_show_with_status_and_scim_error_type(console, scim):
    """A create, a duplicate (409 uniqueness, its password redacted) and a bad filter (400
    invalidFilter): newest first, each with its token; failed-only hides the 201."""
    body = {"schemas": [USER], "userName": "mia@example.com", "password": "hunter2-secret"}
    assert scim.post("Users", json=body).status_code == 201
    assert scim.post("Users", json=body).status_code == 409
    assert scim.get("Users?filter=userName%20zz%20%22x%22").status_code == 400
    page = _text(console.client.get(f"/console/{console.slug}/scim"))
    assert _rows(page) == [
        ("GET /scim/v2/Users?filter=userName%20zz%20%22x%22", "400", "invalidFilter"),
        ("POST /scim/v2/Users", "409", "uniqueness"),
        ("POST /scim/v2/Users", "201", ""),
    ]
    assert "hunter2-secret" not in page and "[redacted]" in page
    assert scim.token not in page and "… test)" in page  # the token, by prefix and label
    failed = _text(console.client.get(f"/console/{console.slug}/scim?failed=1"))
    assert [status for _r, status, _t in _rows(failed)] == ["400", "409"]
    overview = _text(console.client.get(f"/console/{console.slug}/"))
    last = re.search(r'<p id="last-scim">.*?</p>', overview, re.S)[0]
    assert "GET /scim/v2/Users?filter=" in last and ">400<" in last and "invalidFilter" in last


def test_the_request_log_pages_back_fifty_at_a_time(console, store, account):
    for n in range(55):
        scim_log.record(
            store,
            account.id,
            token_id=None,
            method="GET",
            path=f"/scim/v2/Users/{n}",
            status=404,
            scim_type=None,
            duration_ms=1,
            detail="not found",
            body=b"",
            retention_days=14,
        )
    store.flush()  # this store's rows; the console's flushes the app's own
    first = _text(console.client.get(f"/console/{console.slug}/scim"))
    paths = [r for r, _s, _t in _rows(first)]
    assert len(paths) == 50 and paths[0] == "GET /scim/v2/Users/54"
    older = re.search(r'href="([^"]+)" rel="next">Older entries', first)[1]
    rest = [r for r, _s, _t in _rows(_text(console.client.get(unescape(older))))]
    assert rest == [f"GET /scim/v2/Users/{n}" for n in range(4, -1, -1)]


def test_the_scim_screen_is_for_admins_only(app, store, account, settings, scim):
    assert scim.get("Users").status_code == 200
    login = ConsoleLogin(app.test_client(), store, account, settings)
    login.sign_in("bob@example.com", groups=("staff",))
    refused = login.client.get(f"/console/{account.slug}/scim")
    assert refused.status_code == 403 and "/scim/v2/Users" not in _text(refused)


def test_a_log_row_that_cannot_be_written_leaves_the_request_as_answered(
    app, scim, store, account, monkeypatch, caplog
):
    """The log row is made after the answer: when it cannot be kept (refused as it is queued;
    a refusal by the database when the batch is written: test_store_append), the create still
    stands and nothing is half-kept."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    from bridge.models import ScimRequest, User

    def refuse(table, row):
        raise OperationalError("INSERT INTO scim_requests", {}, Exception("disk I/O error"))

    monkeypatch.setattr(app.extensions["bridge.store"], "append", refuse)
    with caplog.at_level(logging.ERROR, logger="bridge.scim_log"):
        made = scim.post("Users", json={"schemas": [USER], "userName": "lee@example.com"})
    assert made.status_code == 201 and made.json["userName"] == "lee@example.com"
    assert "could not write the SCIM request log" in caplog.text
    app.extensions["bridge.store"].flush()  # nothing queued, nothing written
    with store.read() as db:
        assert db.scalar(select(User.user_name).where(User.account_id == account.id)) == (
            "lee@example.com"
        )
        logged = select(func.count()).where(ScimRequest.account_id == account.id)
        assert db.scalar(logged.select_from(ScimRequest)) == 0


def test_a_refused_body_nested_past_pythons_stack_is_logged_as_text(app, scim, store, account):
    """A body nested 100,000 deep is refused (invalidSyntax) and still reaches the log, kept as
    text: its redaction cannot parse it (the JSON parser runs out of stack), so it is not lost."""
    from sqlalchemy import select

    from bridge.models import ScimRequest

    text = '{"userName": "sam", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = scim.request(
        "POST", "Users", data=text, headers={"Content-Type": "application/scim+json"}
    )
    assert resp.status_code == 400 and resp.json["scimType"] == "invalidSyntax"
    app.extensions["bridge.store"].flush()  # the log row is queued (Store.append)
    with store.read() as db:
        row = db.execute(
            select(ScimRequest.status, ScimRequest.scim_type, ScimRequest.body).where(
                ScimRequest.account_id == account.id
            )
        ).one()
    assert row.status == 400 and row.scim_type == "invalidSyntax"
    assert row.body == text[: scim_log.MAX_BODY]
