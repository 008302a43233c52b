"""A mixed SCIM + SAML load against real servers that remembers every answer, and the checks
that the store holds exactly what was acknowledged: nothing lost, nothing twice, no half write,
an audit chain that verifies."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

from sqlalchemy import func, select

from bridge import accounts, audit, idps
from bridge.models import Account, AuditEvent, LoginAttempt, Membership, RoleAssignment, User
from bridge.store import Store
from tests.saml_idp import TestIdP
from tests.servers import call

BASE_URL = "http://bridge.test"  # every instance publishes one base URL, as behind a balancer
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DROPPED = 0  # the status recorded when the connection broke before an answer


@dataclass
class Outcome:
    kind: str  # create | login | member
    key: str  # userName, SAML NameID, or the member's user id
    status: int
    retry_after: str | None
    body: bytes = b""


@dataclass
class Tenant:
    """An account with a SCIM token, a group to fill, and an IdP allowed to start logins."""

    slug: str
    account_id: int
    token: str
    idp: TestIdP
    group_id: str = ""

    @classmethod
    def make(cls, store: Store, slug: str) -> Tenant:
        account = accounts.create_account(store, slug, name=slug, actor="test")
        accounts.add_environment(store, slug, "production", default=True, actor="test")
        token = accounts.issue_token(store, slug, label="load", actor="test").raw
        idp = TestIdP()
        idps.add(store, slug, idp.metadata_xml(), name="test", allow_idp_initiated=True, actor="t")
        return cls(slug, account.id, token, idp)

    def scim_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/scim+json"}


@dataclass
class Load:
    """Threads sending creates, group member adds and logins round-robin over `ports`."""

    tenant: Tenant
    ports: list[int]
    prefix: str = "u"
    limit: int | None = None  # stop after this many operations (a fixed load), else at `stop`
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _n: itertools.count = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def make_group(self) -> None:
        body = {"schemas": [GROUP_SCHEMA], "displayName": f"{self.prefix}-group"}
        reply = call(
            self.ports[0], "POST", "/scim/v2/Groups", body=body, headers=self.tenant.scim_headers()
        )
        assert reply.status == 201, reply.body
        self.tenant.group_id = reply.json()["id"]

    def _send(self, kind, key, port, method, path, body, headers) -> Outcome:
        try:
            reply = call(port, method, path, body=body, headers=headers, timeout=60)
            outcome = Outcome(kind, key, reply.status, reply.headers.get("retry-after"), reply.body)
        except (OSError, http.client.HTTPException):
            outcome = Outcome(kind, key, DROPPED, None)
        with self._lock:
            self.outcomes.append(outcome)
        return outcome

    def create(self, n: int, port: int) -> Outcome:
        name = f"{self.prefix}{n}@load.test"
        body = {"schemas": [USER_SCHEMA], "userName": name, "externalId": f"x-{name}"}
        out = self._send(
            "create", name, port, "POST", "/scim/v2/Users", body, self.tenant.scim_headers()
        )
        if out.status == 201:
            self.add_member(json.loads(out.body)["id"], port)
        return out

    def add_member(self, user_id: str, port: int) -> Outcome:
        body = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
        }
        path = f"/scim/v2/Groups/{self.tenant.group_id}"
        return self._send("member", user_id, port, "PATCH", path, body, self.tenant.scim_headers())

    def login(self, n: int, port: int) -> Outcome:
        name = f"{self.prefix}{n}@sso.test"
        xml = self.tenant.idp.response(
            destination=f"{BASE_URL}/saml/{self.tenant.slug}/acs",
            audience=f"{BASE_URL}/saml/{self.tenant.slug}/metadata",
            name_id=name,
            attributes={"email": [name]},
        )
        form = urlencode(self.tenant.idp.post_form(xml))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self._send(
            "login", name, port, "POST", f"/saml/{self.tenant.slug}/acs", form, headers
        )

    def _worker(self, pause: float) -> None:
        while not self.stop.is_set():
            n = next(self._n)
            if self.limit is not None and n >= self.limit:
                return
            port = self.ports[n % len(self.ports)]
            (self.login if n % 3 == 2 else self.create)(n, port)
            time.sleep(pause)

    def run(self, threads: int = 4, pause: float = 0.0) -> list[threading.Thread]:
        started = [
            threading.Thread(target=self._worker, args=(pause,), daemon=True)
            for _ in range(threads)
        ]
        for t in started:
            t.start()
        return started

    def finish(self, started: list[threading.Thread], *, drain: bool = False) -> None:
        """Stop the threads (with `drain`, first let a `limit`ed load run to its end)."""
        if drain:
            for t in started:
                t.join(300)
        self.stop.set()
        for t in started:
            t.join(90)
            assert not t.is_alive(), "a load thread is stuck"

    def statuses(self) -> Counter:
        return Counter(o.status for o in self.outcomes)


def check_store(store: Store, tenant: Tenant, outcomes: list[Outcome]) -> dict[str, int]:
    """Every acknowledged change is stored exactly once, nothing is half written, the audit chain
    verifies. Returns counts for the caller's own comparisons."""
    with store.read() as db:
        users = {
            u.user_name: u
            for u in db.scalars(select(User).where(User.account_id == tenant.account_id))
        }
        names = Counter(
            db.scalars(select(User.user_name_key).where(User.account_id == tenant.account_id))
        )
        assert all(c == 1 for c in names.values())
        creates = Counter(
            db.scalars(
                select(AuditEvent.target_id).where(
                    AuditEvent.account_id == tenant.account_id, AuditEvent.action == "user.create"
                )
            )
        )
        roles = set(
            db.scalars(
                select(RoleAssignment.user_id).where(
                    RoleAssignment.user_id.in_([u.id for u in users.values()])
                )
            )
        )
        members = Counter(
            str(m)
            for m in db.scalars(
                select(Membership.user_id).where(Membership.group_id == _uuid(tenant.group_id))
            )
        )
        ok_logins = Counter(
            db.scalars(
                select(LoginAttempt.name_id).where(
                    LoginAttempt.account_id == tenant.account_id, LoginAttempt.ok.is_(True)
                )
            )
        )
        held, broken = audit.verify(db, tenant.account_id)
        events = db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.account_id == tenant.account_id)
        )
        head = db.get_one(Account, tenant.account_id).audit_seq
    assert broken is None, broken
    assert held == events == head
    # No half write: every stored user was created by one committed transaction with its role
    # and its audit event.
    for user in users.values():
        assert creates[str(user.id)] == 1, user.user_name
        assert user.id in roles, user.user_name
    assert sum(creates.values()) == len(users)
    for o in outcomes:
        if o.kind == "create":
            stored = 1 if o.key in users else 0
            assert stored == 1 if o.status == 201 else stored <= 1, (o.key, o.status)
        elif o.kind == "login" and o.status == 302:
            assert o.key in users and ok_logins[o.key] == 1, o.key
        elif o.kind == "member":
            assert members[o.key] == (1 if o.status in (200, 204) else members[o.key]), o.key
            assert members[o.key] <= 1
    return {
        "users": len(users),
        "members": sum(members.values()),
        "logins": sum(ok_logins.values()),
        "events": events,
    }


def _uuid(raw: str):
    import uuid

    return uuid.UUID(raw)
