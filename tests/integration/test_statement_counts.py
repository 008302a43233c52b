"""How many SQL statements each hot path costs, through HTTP (issue 14).

A count is a design fact, not a timing: a change that adds a round trip to a SCIM create or a
returning login fails here and has to be argued for (then the number below changes with it).
Statements are counted with a `before_cursor_execute` listener on the app's engine, which sees no
BEGIN (SQLite's are sent straight to the driver by bridge.store, PostgreSQL's by psycopg itself)
and no COMMIT; commits are counted apart, and
so are the connections taken from the pool (no ping is sent for those: bridge.store), and the
statements the ORM ran (ORM_READS). The SCIM
request log's row is not a statement of its request: it is queued (Store.append) and written
with the process's other queued rows in one transaction a few ms later; rows queued are counted
apart.

Counts are of a steady state: the SCIM token's last-used time and the request log's purge are
written at most once a minute, so each path is run once before it is counted, and the replay
cache's sweep (one login in a hundred, at random) is kept out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import event, select

from bridge import idps
from bridge.models import AuditEvent, User
from tests.saml_idp import TestIdP, parse_authn_request

BASE = "http://127.0.0.1:8000"
# (statements, commits) per request on SQLite (BEGIN aside). These requests' reads stand alone
# (bridge.store: the token's read, a login's account read, each on a connection of its own with
# no session, `Store.connection`, given back at once, and without a transaction): the only
# commit counted is the write's (a read session's transaction would end with a commit before the
# write: on SQLite a read left open while another connection commits keeps the WAL from being
# checkpointed, and every commit then pays).
# PostgreSQL's counts are the same, but for this: a user's write reads the account once (a
# returning login with the user: provisioning.unchanged_login); on SQLite, whose write lock the
# transaction holds from its BEGIN IMMEDIATE, that read is the audit chain's head too, and on
# PostgreSQL the head is read again under its row lock when the event is appended
# (bridge.audit.read_head): one statement more there (HEAD). And on PostgreSQL an audit event
# and the chain head it moves are one statement (bridge.audit, a data-modifying CTE), on SQLite
# two: one statement fewer there per event (`events`). And there the rows a write queued for its
# audit event (bridge.values: a new user's rows and access, a login's session and log line) are
# CTEs of the event's statement too, and so are the statements it queued (a login's remembered
# digest): one statement fewer per table or statement queued
# (`queued`), where SQLite sends an INSERT per table and each statement. And there a SCIM write
# of a user or group reads its account (and the policy's version) with the request's token,
# before its transaction (provisioning.AccountRead): one statement fewer (`account`).
CREATE = (10, 1)
GET = (1, 0)
FILTER = (1, 0)
GROUP_FILTER = (1, 0)  # and one more for the members, when they are wanted
PATCH = (9, 1)
FIRST_LOGIN = (16, 1)
RETURNING_LOGIN = (7, 1)
PUT_USER = (9, 1)
SP_RETURNING_LOGIN = (8, 1)
CHANGED_LOGIN = (14, 1)
PATCH_USER = (9, 1)
HEAD = 1
# Of those, the statements the ORM runs (Session.execute of an ORM statement: it loads objects,
# or rebuilds the statement), each costing about twice the CPU of the same SQL sent as a Core
# statement on the session's connection: none on these paths. The SAML routes' account, IdPs
# and pending AuthnRequest are made from Core rows (models.read_only), and so is a stored user a
# write changes (with their e-mails, phones and addresses: models.loaded); the ORM's unit of work
# still writes what changed in them (its flush is not an ORM execution).
ORM_READS = {"first login": 0, "returning login": 0, "SP-initiated returning login": 0}
# The first SAML login of a user SCIM made (found by userName, linked, changed): the account,
# the replay cache, the account with the policy and the user's digest (none: no link yet), the
# user, their e-mails, phones and addresses (one statement), their access; the link, their row's
# UPDATE, the audit event (two statements on SQLite), the digest remembered, session, log line,
# the login's audit event (two on SQLite). It took 22 (the user's ORM load with three selectin
# loads, the link's three statements), then 16 (the account read again after the digest's read).
SCIM_USER_FIRST_LOGIN = (15, 1)
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Counter:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    checkouts: int = 0
    appended: list[str] = field(default_factory=list)
    orm: list[str] = field(default_factory=list)
    dialect: str = ""

    def reset(self) -> None:
        self.statements.clear()
        self.commits = self.checkouts = 0
        self.appended.clear()
        self.orm.clear()

    def count(self) -> int:
        """Statements sent (no BEGIN is seen: see above)."""
        return len(self.statements)

    def __str__(self) -> str:
        return f"{self.count()} statements, {self.commits} commits:\n" + "\n".join(
            " ".join(s.split())[:150] for s in self.statements
        )


@contextmanager
def counting(store) -> Iterator[Counter]:
    """Every statement, commit and pool checkout on the store's engine while inside, and the
    table of every row queued with Store.append."""
    engine = store.engine
    counter = Counter(dialect=engine.dialect.name)
    append = store.append

    def appended(table, row):
        append(table, row)
        counter.appended.append(table.name)

    def on_statement(conn, cursor, statement, parameters, context, executemany):
        counter.statements.append(statement)

    def on_commit(conn):
        counter.commits += 1

    def on_checkout(*_args):
        counter.checkouts += 1

    def on_orm(state):
        counter.orm.append(" ".join(str(state.statement).split())[:60])

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    event.listen(engine.pool, "checkout", on_checkout)
    event.listen(store.sessions, "do_orm_execute", on_orm)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "append", appended)
            yield counter
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "commit", on_commit)
        event.remove(engine.pool, "checkout", on_checkout)
        event.remove(store.sessions, "do_orm_execute", on_orm)


@pytest.fixture
def sql(app, monkeypatch) -> Iterator[Counter]:
    from saml import sso

    # the replay cache's occasional sweep (one login in a hundred) is not part of a login
    monkeypatch.setattr(sso.secrets, "randbelow", lambda n: n - 1)
    with counting(app.extensions["bridge.store"]) as counter:
        yield counter


def user_doc(n: int) -> dict:
    return {
        "userName": f"user{n}@example.com",
        "externalId": f"ext-{n}",
        "name": {"givenName": "Ann", "familyName": f"Lee{n}"},
        "emails": [{"value": f"user{n}@example.com", "primary": True, "type": "work"}],
        "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
        "addresses": [{"locality": "Oslo", "country": "NO", "type": "work", "primary": True}],
        "title": "Editor",
        ENTERPRISE: {"department": "Marketing", "employeeNumber": str(n)},
    }


def measured(sql: Counter, call) -> tuple[int, int, object]:
    sql.reset()
    resp = call()
    return sql.count(), sql.commits, resp


def on_db(
    sql: Counter,
    expected: tuple[int, int],
    *,
    head: int = 0,
    events: int = 0,
    queued: int = 0,
    account: int = 0,
) -> tuple[int, int]:
    """The expected counts on the database counted (see above); `head`: the statements
    PostgreSQL spends reading the audit chain's head again; `events`: the audit events;
    `queued`: the tables whose rows PostgreSQL writes inside another statement; `account`: the
    account reads PostgreSQL makes with the token."""
    statements, commits = expected
    fewer = head - events - queued - account
    return statements + fewer * (sql.dialect == "postgresql"), commits


def scim_counts(sql: Counter, expected: tuple[int, int], **postgresql: int) -> tuple[int, int]:
    """A SCIM request's expected counts (on_db, with its keywords); its log row was queued."""
    assert sql.appended == ["scim_requests"]
    return on_db(sql, expected, **postgresql)


@pytest.fixture
def warm(scim):
    """One request first: the token's last-used write and the log's purge are behind us."""
    assert scim.get("Users", query_string={"count": 1}).status_code == 200
    return scim


def test_scim_create(warm, sql):
    """POST /Users: auth, the one write (user, e-mail, access, audit) and the request log. On
    PostgreSQL the user's rows in six tables (user, e-mail, phone, address, role, environment)
    are written with the audit event, in one statement."""
    n, commits, resp = measured(sql, lambda: warm.post("Users", json=user_doc(1)))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    expected = scim_counts(sql, CREATE, head=HEAD, events=1, queued=6, account=1)
    assert (n, commits) == expected, str(sql)
    assert sql.orm == []  # every statement Core, on the connection (see ORM_READS)
    # answered from what was written, not read back: the same document a read gives
    got = warm.get(f"Users/{resp.json['id']}")
    assert resp.json == got.json and resp.headers["ETag"] == got.headers["ETag"]
    assert resp.headers["Location"] == resp.json["meta"]["location"]


def test_a_create_of_a_taken_user_is_refused_by_the_unique_keys(warm, sql, store):
    """A create does not look for its userName and externalId first (a statement fewer for
    every create that succeeds): the unique keys refuse a taken one, and the work's retry looks
    to say which: 409 uniqueness naming it, and nothing written. Not counted as a conflict
    between writers (bridge_store_write_retries_total), which it is not."""
    from prometheus_client import REGISTRY

    def retries() -> float:
        sample = "bridge_store_write_retries_total"
        return REGISTRY.get_sample_value(sample, {"cause": "IntegrityError"}) or 0.0

    made = warm.post("Users", json={"userName": "Taken@example.com", "externalId": "ext-t"})
    assert made.status_code == 201
    events, users = audit_count(store), warm.get("Users").json["totalResults"]
    counted = retries()
    for doc, taken in (
        ({"userName": "TAKEN@example.com"}, "userName"),
        ({"userName": "other@example.com", "externalId": "ext-t"}, "externalId"),
    ):
        sql.reset()
        resp = warm.post("Users", json=doc)
        assert resp.status_code == 409, resp.get_data(as_text=True)
        assert resp.json["scimType"] == "uniqueness"
        assert resp.json["detail"] == f"a user with this {taken} already exists"
        # the first attempt's INSERT, refused; the retry's look, which finds the user
        assert any(s.lstrip().startswith("SELECT users.id") for s in sql.statements), str(sql)
    assert (audit_count(store), warm.get("Users").json["totalResults"]) == (events, users)
    assert retries() == counted  # the unique keys answered a look-up: no conflict to count


def test_a_retried_write_reads_its_account_again(warm, sql, store, monkeypatch):
    """The account a SCIM write read with its token (PostgreSQL) serves its first attempt only:
    a write retried after a conflict reads the account again in its own transaction, as SQLite's
    attempts each do. One user and one audit event come of it."""
    from sqlalchemy.exc import OperationalError

    from bridge import provisioning

    class Deadlock(Exception):
        sqlstate = "40P01"  # deadlock_detected: bridge.store retries the work

    write, failed = provisioning._write, []

    def write_once_failing(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise OperationalError("INSERT", {}, Deadlock())
        return write(*args, **kwargs)

    monkeypatch.setattr(provisioning, "_write", write_once_failing)
    events = audit_count(store)
    _, _, resp = measured(sql, lambda: warm.post("Users", json=user_doc(7)))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    reads = [
        s
        for s in sql.statements
        if "known_version_id" in s and not s.lstrip().startswith("SELECT scim_tokens")
    ]
    # PostgreSQL: the retry's read (the first attempt had the token's); SQLite: each attempt's
    assert len(reads) == (1 if sql.dialect == "postgresql" else 2), str(sql)
    assert (
        warm.get("Users", query_string={"filter": 'userName eq "user7@example.com"'}).json[
            "totalResults"
        ]
        == 1
    )
    assert audit_count(store) == events + 1


def audit_count(store) -> int:
    from sqlalchemy import func, select

    from bridge.models import AuditEvent

    with store.read() as db:
        return db.scalar(select(func.count()).select_from(AuditEvent))


def test_scim_get_by_id(warm, sql):
    """GET /Users/<id>: the token and the document in one statement, the request log."""
    made = warm.post("Users", json=user_doc(2)).json
    n, commits, resp = measured(sql, lambda: warm.get(f"Users/{made['id']}"))
    assert resp.status_code == 200 and resp.json["userName"] == "user2@example.com"
    assert (n, commits) == scim_counts(sql, GET), str(sql)
    assert sql.orm == []


def test_scim_filter_username(warm, sql):
    """GET /Users?filter=userName eq: the token and the page with its count and documents in
    one statement, the log."""
    warm.post("Users", json=user_doc(3))
    query = {"filter": 'userName eq "USER3@example.com"'}
    n, commits, resp = measured(sql, lambda: warm.get("Users", query_string=query))
    assert resp.status_code == 200 and resp.json["totalResults"] == 1
    assert (n, commits) == scim_counts(sql, FILTER), str(sql)
    assert sql.orm == []


def test_scim_filter_group_display_name(warm, sql):
    """GET /Groups?filter=displayName eq (what Okta and Entra send before they push a group):
    the token and the page of groups in one statement, the log; their members stream from one
    more statement when the reply holds them."""
    user = warm.post("Users", json=user_doc(7)).json
    warm.post("Groups", json={"displayName": "Looked Up", "members": [{"value": user["id"]}]})
    query = {"filter": 'displayName eq "looked up"', "excludedAttributes": "members"}
    _n, _commits, resp = measured(sql, lambda: warm.get("Groups", query_string=query))
    assert resp.status_code == 200 and resp.json["totalResults"] == 1, resp.json
    assert "members" not in resp.json["Resources"][0]
    # counted once the streamed reply was read
    assert (sql.count(), sql.commits) == scim_counts(sql, GROUP_FILTER), str(sql)
    del query["excludedAttributes"]
    sql.reset()
    resp = warm.get("Groups", query_string=query)
    assert [m["value"] for m in resp.json["Resources"][0]["members"]] == [user["id"]]
    assert (sql.count(), sql.commits) == (GROUP_FILTER[0] + 1, GROUP_FILTER[1]), str(sql)


def test_scim_patch_one_member(warm, sql):
    """PATCH /Groups/<id> adding one member: auth, the group write (the account read with the
    policy's version, as a user's write reads it: on SQLite that is the audit head too; the
    group locked, the member looked up, the user checked, the membership, the group's version)
    with its audit, the log. Every read Core (it took ten statements, four of them the ORM's)."""
    user = warm.post("Users", json=user_doc(4)).json
    group = warm.post("Groups", json={"displayName": "Counted"}).json
    op = {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
    body = {"schemas": [PATCH_OP], "Operations": [op]}
    n, commits, resp = measured(sql, lambda: warm.patch(f"Groups/{group['id']}", json=body))
    assert resp.status_code == 204, resp.get_data(as_text=True)
    assert (n, commits) == scim_counts(sql, PATCH, head=HEAD, events=1, account=1), str(sql)
    assert sql.orm == []


def test_scim_put_user(warm, sql):
    """PUT /Users/<id> changing a name: auth, the one write (the user locked and read with
    their access, one UPDATE of the row, the policy applied, audit), the answer, the log."""
    made = warm.post("Users", json=user_doc(5)).json
    doc = {**user_doc(5), "name": {"givenName": "Bo", "familyName": "Lee5"}}
    n, commits, resp = measured(sql, lambda: warm.put(f"Users/{made['id']}", json=doc))
    assert resp.status_code == 200 and resp.json["name"]["givenName"] == "Bo"
    assert resp.headers["ETag"] == 'W/"2"'
    assert (n, commits) == scim_counts(sql, PUT_USER, head=HEAD, events=1, account=1), str(sql)
    assert sql.orm == []


def test_scim_patch_user(warm, sql):
    """PATCH /Users/<id> replacing a name: auth, the one write (the user locked and read once,
    the document patched from that, one UPDATE of the row, the policy, audit), the answer, the
    log."""
    made = warm.post("Users", json=user_doc(6)).json
    op = {"op": "replace", "path": "name.givenName", "value": "Bo"}
    body = {"schemas": [PATCH_OP], "Operations": [op]}
    n, commits, resp = measured(sql, lambda: warm.patch(f"Users/{made['id']}", json=body))
    assert resp.status_code == 200 and resp.json["name"]["givenName"] == "Bo"
    assert resp.headers["ETag"] == 'W/"2"'
    assert (n, commits) == scim_counts(sql, PATCH_USER, head=HEAD, events=1, account=1), str(sql)
    assert sql.orm == []


class Logins:
    """IdP-initiated logins of the test IdP against the account's ACS."""

    def __init__(self, client, store, account):
        self.client, self.store, self.account = client, store, account
        self.idp = TestIdP()
        idps.add(store, account.slug, self.idp.metadata_xml(), name="test", actor="t")

        def allow(db):
            idps.get(db, account.id, "test").allow_idp_initiated = True

        store.write(allow)

    def post(self, name: str, in_response_to: str | None = None, **attributes):
        attributes.setdefault("email", [name])
        xml = self.idp.response(
            name_id=name,
            destination=f"{BASE}/saml/{self.account.slug}/acs",
            audience=f"{BASE}/saml/{self.account.slug}/metadata",
            in_response_to=in_response_to,
            attributes=attributes,
        )
        form = self.idp.post_form(xml)
        return self.client.post(f"/saml/{self.account.slug}/acs", data=form)

    def start(self) -> str:
        """SP-initiated: the ID of the AuthnRequest our /login sends (this browser's)."""
        resp = self.client.get(f"/saml/{self.account.slug}/login")
        assert resp.status_code == 302, resp.get_data(as_text=True)
        return parse_authn_request(resp.headers["Location"]).id

    def audit_actions(self) -> list[str]:
        with self.store.read() as db:
            return list(
                db.scalars(
                    select(AuditEvent.action)
                    .where(AuditEvent.account_id == self.account.id)
                    .order_by(AuditEvent.seq)
                )
            )


@pytest.fixture
def logins(client, store, account):
    made = Logins(client, store, account)
    assert made.post("warm@example.com").status_code == 302  # the account's SP key is made
    return made


def test_first_saml_login(logins, sql):
    """A first login: the replay cache, the user made through the policy, session, log. On
    PostgreSQL the user and their e-mail go with their link to the IdP, their role and
    environment with their audit event, the remembered digest, the session and the log line
    with the login's."""
    n, commits, resp = measured(sql, lambda: logins.post("ann@example.com", givenName=["Ann"]))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert (n, commits) == on_db(sql, FIRST_LOGIN, head=HEAD, events=2, queued=7), str(sql)
    assert len(sql.orm) == ORM_READS["first login"], sql.orm


def test_first_saml_login_of_a_scim_user(warm, logins, sql):
    """The first login of a user SCIM made (the usual order with Okta and Entra): found by
    userName, linked to the IdP identity with one statement (the user's read said they were
    linked to no one), their row, e-mail and access changed through the one write path."""
    made = warm.post("Users", json=user_doc(8)).json
    name = made["userName"]
    n, commits, resp = measured(sql, lambda: logins.post(name, givenName=["Zed"]))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    expected = on_db(sql, SCIM_USER_FIRST_LOGIN, head=HEAD, events=2, queued=3)
    assert (n, commits) == expected, str(sql)
    assert sql.orm == []
    got = warm.get(f"Users/{made['id']}").json
    assert got["name"]["givenName"] == "Zed" and got["meta"]["version"] == 'W/"2"', got
    assert logins.audit_actions()[-2:] == ["user.update", "login.succeed"]


def test_returning_saml_login_unchanged(logins, sql):
    """A returning user with the same attributes, policy and state: one read of the user (with
    the policy's active version and the environments), the replay cache, the session row, the
    login record and its audit event; no provisioning."""
    assert logins.post("bo@example.com", givenName=["Bo"]).status_code == 302
    before = logins.audit_actions()
    n, commits, resp = measured(sql, lambda: logins.post("bo@example.com", givenName=["Bo"]))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert logins.audit_actions() == [*before, "login.succeed"]  # no user.update
    assert (n, commits) == on_db(sql, RETURNING_LOGIN, head=HEAD, events=1, queued=2), str(sql)
    assert len(sql.orm) == ORM_READS["returning login"], sql.orm
    with logins.store.read() as db:
        user = db.scalar(
            select(User).where(
                User.account_id == logins.account.id, User.user_name == "bo@example.com"
            )
        )
        assert user is not None and user.given_name == "Bo"


def test_returning_saml_login_changed(logins, sql):
    """A returning user whose attributes changed goes down the one write path with the account
    as the returning-user check read it (with the user, in the write's transaction): the
    account is not read again, and the change is written."""
    assert logins.post("di@example.com", givenName=["Di"]).status_code == 302
    n, commits, resp = measured(sql, lambda: logins.post("di@example.com", givenName=["Dee"]))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert logins.audit_actions()[-2:] == ["user.update", "login.succeed"]
    reads = [s for s in sql.statements if s.lstrip().startswith("SELECT")]
    # the account's row: read with its IdPs before the transaction, and on SQLite with the user
    # in it (under the write lock); PostgreSQL's write path takes the first read (AccountRead)
    rows_read = 2 if sql.dialect == "sqlite" else 1
    assert sum("accounts.slug" in s for s in reads) == rows_read, str(sql)
    expected = on_db(sql, CHANGED_LOGIN, head=HEAD, events=2, queued=3)
    assert (n, commits) == expected, str(sql)
    assert sql.orm == []
    with logins.store.read() as db:
        user = db.scalar(
            select(User).where(
                User.account_id == logins.account.id, User.user_name == "di@example.com"
            )
        )
        assert user is not None and user.given_name == "Dee" and user.version == 2


def test_sp_initiated_returning_login(logins, sql):
    """The same login answering our AuthnRequest: the pending request is read once before the
    checks (to name the IdP and tell a test login apart), with the account (it took a statement
    of its own), then used up under its lock."""
    assert logins.post("cy@example.com", givenName=["Cy"]).status_code == 302
    request_id = logins.start()
    n, commits, resp = measured(
        sql, lambda: logins.post("cy@example.com", in_response_to=request_id, givenName=["Cy"])
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert (n, commits) == on_db(sql, SP_RETURNING_LOGIN, head=HEAD, events=1, queued=2), str(sql)
    assert len(sql.orm) == ORM_READS["SP-initiated returning login"], sql.orm


PLAN_POLICY = """
account: {slug}
environments: [production]
rules:
  - name: staff
    when: {{{when}}}
    then: {{role: admin, environments: all}}
"""


@pytest.mark.parametrize(
    "when",
    [
        "email_domain: {in: [example.com]}",  # the e-mails come with the users
        "department: {equals: Marketing}",  # e-mails (and phones) unread: not queried
    ],
)
def test_policy_plan_statements_per_account(warm, store, account, monkeypatch, when):
    """`policy plan` streams the users (with their e-mails when the policy reads them) from one
    statement and what they hold from another, each in user id order, however many users
    there are and whatever they hold. (It read e-mails and held rows once per batch of users:
    3 batches of 2 here took 6 or 3 statements.) Run on a store of its own, as `idbridge
    policy plan` runs."""
    import policies
    from bridge import planning

    for n in range(10, 15):
        warm.post("Users", json=user_doc(n))
    monkeypatch.setattr(planning, "BATCH", 2)
    candidate = policies.loads(PLAN_POLICY.format(slug=account.slug, when=when))
    with counting(store) as sql:
        result = planning.plan(store, account.slug, candidate)
    assert result.users == 5 and result.role_changes == 5
    # the account and its environments; the policy group grants held (none declared: no second
    # read of the environments); the users, streamed; what they hold, streamed
    assert sql.count() == 2 + 1 + 1 + 1, str(sql)


# The delivery worker (bridge.delivery), per poll that finds events, whatever their number:
# the scan (endpoints behind, any row due) is one statement; queueing and claiming what it
# found is one transaction (lock the endpoints, read the log once for endpoints at the same
# place in it, one insert, one cursor update); claiming rows due is one (lock, claim);
# recording a round of attempts is one (lock the rows, one update, one insert of the log).
WORKER_SCAN = (1, 0)
WORKER_PROJECT = (4, 1)
WORKER_CLAIM = (2, 1)
WORKER_RECORD = (3, 1)


def test_delivery_worker_statements_per_poll(scim, store, settings):
    """A poll's statements do not grow with the events it finds, nor with the endpoints at the
    same place in the log (two here)."""
    from datetime import timedelta

    from sqlalchemy import update

    from bridge import delivery, egress, webhooks
    from bridge.models import Delivery, utcnow

    key = settings.ensure_secret_key().secret_key
    hooks = [
        webhooks.add(
            store,
            scim.account.slug,
            f"http://127.0.0.1:9/hook{n}",
            types=["user.created"],
            secret_key=key,
            allow_private=True,
            actor="t",
        ).id
        for n in range(2)
    ]
    tuning = delivery.Tuning()
    sender = delivery.Sender(store, key, "x", True, tuning)
    delivery.project(store)  # both endpoints at the head (each was added after the other)
    # Earlier tests' endpoints were just brought to the head too, and their deliveries (to
    # receivers long gone) would make the scan report due work: not this poll's to count.
    store.write(
        lambda db: db.execute(
            update(Delivery).where(Delivery.state == "pending").values(state="failed")
        )
    )
    seen = []
    for n, users in enumerate((1, 4)):
        for i in range(users):
            scim.post("Users", {"userName": f"poll{n}-{i}@example.com"})
        with counting(store) as scanned:
            found = delivery.scan(store)
        assert sorted(found.hooks) == hooks and not found.due
        grab = delivery.Grab("w-count", utcnow() + timedelta(minutes=1), users)  # half of them
        with counting(store) as projected:
            queued, jobs = delivery.project(store, grab, found)
        assert queued == 2 * users and len(jobs) == users
        with counting(store) as claimed:
            rest = delivery.claim(store, "w-count", 100, tuning, probe=False)
        assert len(rest) == users
        answers = [(job, egress.Answer(204, 1, "", None)) for job in [*jobs, *rest]]
        with counting(store) as recorded:
            sender.record(answers)
        seen.append([(c.count(), c.commits) for c in (scanned, projected, claimed, recorded)])
    assert seen[0] == seen[1] == [WORKER_SCAN, WORKER_PROJECT, WORKER_CLAIM, WORKER_RECORD], seen
