"""Concurrent writers settle in the database: no duplicates, no lost updates (both databases)."""

import multiprocessing
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from bridge import audit, provisioning
from bridge.errors import Conflict
from bridge.models import User
from tests.factories import profile

THREADS = 8


def _race(fn):
    """Run fn(i) in THREADS threads released at once; return their results or exceptions."""
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _count(store, account, name):
    with store.read() as db:
        return db.scalar(
            select(func.count())
            .select_from(User)
            .where(User.account_id == account.id, User.user_name_key == name)
        )


def test_same_user_from_eight_threads_is_one_user(store, account):
    """Eight concurrent provisionings of one userName (in mixed case) yield one user."""
    results = _race(
        lambda i: provisioning.provision(
            store,
            account.id,
            profile("Race@Example.com".swapcase() if i % 2 else "race@example.com"),
            actor=f"t{i}",
        )
    )
    assert all(isinstance(r, provisioning.Outcome) for r in results), results
    assert len({r.user_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert _count(store, account, "race@example.com") == 1
    with store.read() as db:
        assert audit.verify(db, account.id)[1] is None


def test_eight_creates_give_one_winner_and_seven_conflicts(store, account):
    """Create-only calls racing for one userName: exactly one succeeds, the rest conflict."""
    results = _race(
        lambda i: provisioning.provision(
            store, account.id, profile("only@example.com"), actor=f"t{i}", must_create=True
        )
    )
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Outcome": 1, "Conflict": 7}, results
    assert all(isinstance(r, provisioning.Outcome | Conflict) for r in results)
    assert _count(store, account, "only@example.com") == 1


def test_concurrent_updates_of_one_user_lose_nothing(store, account):
    """Eight threads each set a different attribute of one user; all eight land."""
    fields = [
        "title",
        "department",
        "division",
        "organization",
        "cost_center",
        "employee_number",
        "nick_name",
        "locale",
    ]
    base = provisioning.provision(store, account.id, profile("busy@example.com"), actor="t")
    results = _race(
        lambda i: provisioning.provision(
            store,
            account.id,
            profile("busy@example.com", fields={fields[i]: f"v{i}"}),
            actor=f"t{i}",
        )
    )
    assert all(isinstance(r, provisioning.Outcome) for r in results), results
    with store.read() as db:
        user = db.get(User, base.user_id)
        assert {f: getattr(user, f) for f in fields} == {f: f"v{i}" for i, f in enumerate(fields)}
        assert user.version == 1 + THREADS
        assert audit.verify(db, account.id)[1] is None


def test_concurrent_creates_of_different_users_all_land(store, account):
    """Eight different users created at once all land (no deadlock on the audit chain's head)."""
    results = _race(
        lambda i: provisioning.provision(
            store, account.id, profile(f"crowd{i}@example.com"), actor=f"t{i}"
        )
    )
    assert all(isinstance(r, provisioning.Outcome) and r.created for r in results), results
    with store.read() as db:
        assert audit.verify(db, account.id)[1] is None


PROCESSES = 4


def _provision_in_process(url, account_id, jobs, barrier, results):
    """One writer process with its own engine: provision each (userName, fields, must_create)."""
    from bridge.store import Store  # a fresh interpreter: its own connections and pool

    store = Store(url)
    barrier.wait(60)
    for name, fields, must_create in jobs:
        try:
            outcome = provisioning.provision(
                store,
                account_id,
                profile(name, fields=fields),
                actor="proc",
                must_create=must_create,
            )
            results.put(("created" if outcome.created else "updated", str(outcome.user_id)))
        except Conflict:
            results.put(("conflict", None))
        except Exception as exc:  # reported to the parent, which fails on it
            results.put(("error", repr(exc)))
    store.dispose()


def _race_processes(store, account, jobs_of):
    """Run PROCESSES writer processes released at once; return every result they report."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(
            target=_provision_in_process,
            args=(store.url, account.id, jobs_of(i), barrier, results),
        )
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    expected = sum(len(jobs_of(i)) for i in range(PROCESSES))
    out = [results.get(timeout=120) for _ in range(expected)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return out


def test_processes_racing_to_create_one_user_make_one(store, account):
    """Writer processes (several connections, on SQLite too) racing to create one userName:
    one creates it, the others are refused as conflicts, and one row exists."""
    results = _race_processes(
        store,
        account,
        lambda i: [
            ("proc-race@example.com".upper() if i % 2 else "proc-race@example.com", {}, True)
        ],
    )
    assert Counter(kind for kind, _ in results) == {"created": 1, "conflict": PROCESSES - 1}, (
        results
    )
    assert _count(store, account, "proc-race@example.com") == 1


def test_processes_updating_one_user_lose_nothing(store, account):
    """Writer processes each setting their own attributes of one user, several times: every
    change lands, the version counts every write and the audit chain stays whole."""
    fields = ["title", "department", "division", "organization"]
    base = provisioning.provision(store, account.id, profile("proc-busy@example.com"), actor="t")
    rounds = 3
    results = _race_processes(
        store,
        account,
        lambda i: [
            ("proc-busy@example.com", {fields[i]: f"v{i}-{n}"}, False) for n in range(rounds)
        ],
    )
    assert [kind for kind, _ in results] == ["updated"] * (PROCESSES * rounds), results
    with store.read() as db:
        user = db.get(User, base.user_id)
        assert {f: getattr(user, f) for f in fields} == {
            f: f"v{i}-{rounds - 1}" for i, f in enumerate(fields)
        }
        assert user.version == 1 + PROCESSES * rounds
        assert audit.verify(db, account.id)[1] is None


POLICY = """account: {slug}
environments: [production, staging]
defaults: {{role: {role}, environments: [production]}}
"""


def _stale_retries() -> float:
    """Writes this process ran again because what they decided from changed meanwhile."""
    from prometheus_client import REGISTRY

    sample = REGISTRY.get_sample_value(
        "bridge_store_write_retries_total", {"cause": "StaleDataError"}
    )
    return sample or 0.0


def _holdings(store, account) -> tuple[list[str], list[str]]:
    """The roles and environments the account's users hold."""
    from bridge.models import Environment, EnvironmentAccess, RoleAssignment

    with store.read() as db:
        users = select(User.id).where(User.account_id == account.id)
        roles = db.scalars(select(RoleAssignment.role).where(RoleAssignment.user_id.in_(users)))
        envs = db.scalars(
            select(Environment.name)
            .join(EnvironmentAccess, EnvironmentAccess.environment_id == Environment.id)
            .where(EnvironmentAccess.user_id.in_(users))
        )
        return sorted(roles), sorted(envs)


@pytest.mark.parametrize(
    ("change", "roles", "envs", "again"),
    [
        # a new policy version activated (and applied to the users it finds) meanwhile: the
        # user holds its role either way (SQLite: the apply after the write re-evaluates them)
        ("policy", ["admin"], ["production"], 1),
        # staging made a default environment meanwhile: a default for users made after it,
        # which on PostgreSQL this one is (the change committed first), on SQLite not (the
        # change waited for this write)
        ("environment", ["media_library_user"], ["production", "staging"], 1),
        # another user written meanwhile: nothing this write decided from changed
        ("another user", ["media_library_user"] * 2, ["production"] * 2, 0),
    ],
)
def test_a_write_decided_from_an_account_that_changes_meanwhile_decides_again(
    scim, store, monkeypatch, change, roles, envs, again
):
    """A SCIM create decides the user's access from the account's policy and environments, then
    writes. A change to those committed between the decision and the write (an admin
    activating a policy while the IdP pushes users) must not leave the user with access the
    account no longer gives: on PostgreSQL the write is run again and decides anew (its audit
    append checks the account under the account's row lock); on SQLite the change waits for the
    write's lock and then applies to the user too. A change to something else (another user)
    costs no second run."""
    from bridge import accounts, policy_versions
    from bridge.models import Account

    account = scim.account
    slug = account.slug
    if change == "policy":
        policy_versions.push(
            store, slug, POLICY.format(slug=slug, role="media_library_user"), origin="t", actor="t"
        )

    def concurrent_change():
        if change == "policy":
            policy_versions.push(
                store, slug, POLICY.format(slug=slug, role="admin"), origin="t", actor="t"
            )
        elif change == "environment":
            accounts.set_default_environment(store, account.id, "staging", True, actor="t")
        else:
            provisioning.provision(
                store, account.id, profile("other@example.com"), actor="t", must_create=True
            )

    decide, started = provisioning._decide, []

    def decide_then_change(*args, **kwargs):
        decided = decide(*args, **kwargs)
        if not started:  # once (the change's own decisions, and a retry's, go undisturbed)
            thread = threading.Thread(target=concurrent_change)
            started.append(thread)
            thread.start()
            # PostgreSQL: the change commits before this write goes on; SQLite: it waits for
            # this write's lock, held since the write began
            thread.join(0.3 if store.dialect == "sqlite" else 30)
        return decided

    monkeypatch.setattr(provisioning, "_decide", decide_then_change)
    retries = _stale_retries()
    resp = scim.post("Users", json={"userName": "pushed@example.com", "externalId": "ext-p"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    started[0].join(30)
    assert not started[0].is_alive()
    if store.dialect == "sqlite" and change == "environment":
        envs = ["production"]
    assert _holdings(store, account) == (roles, envs)
    expected = again if store.dialect == "postgresql" else 0
    assert _stale_retries() == retries + expected
    with store.read() as db:
        assert db.get(Account, account.id).audit_seq == audit.verify(db, account.id)[0]


@pytest.mark.parametrize("returning", [False, True])
def test_a_login_decided_under_a_policy_replaced_meanwhile_decides_again(
    client, store, account, monkeypatch, returning
):
    """A SAML login (a first one, JIT; or a returning user's whose attributes changed) decides
    the user's access, then writes; a policy version activated between the two leaves the user
    with the new version's access: on PostgreSQL the login's write runs again (its second
    attempt reads the account again, in its own transaction), on SQLite the activation waits for
    the login's lock and its apply re-evaluates the user. The audit chain holds."""
    from bridge import policy_versions
    from bridge.models import Account
    from tests.integration.test_statement_counts import Logins

    slug = account.slug
    policy_versions.push(
        store, slug, POLICY.format(slug=slug, role="media_library_user"), origin="t", actor="t"
    )
    logins = Logins(client, store, account)
    if returning:
        assert logins.post("jo@example.com", givenName=["Jo"]).status_code == 302
    decide, started = provisioning._decide, []

    def decide_then_change(*args, **kwargs):
        decided = decide(*args, **kwargs)
        if not started:
            thread = threading.Thread(
                target=policy_versions.push,
                args=(store, slug, POLICY.format(slug=slug, role="admin")),
                kwargs={"origin": "t", "actor": "t"},
            )
            started.append(thread)
            thread.start()
            if store.dialect == "sqlite":  # the activation waits for this login's lock
                thread.join(0.3)
            else:  # PostgreSQL: the activation commits before this write goes on (its apply
                # may then wait for the returning user's row, which this login share-locked)
                deadline = time.monotonic() + 30
                while _active_number(store, account.id) != 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
        return decided

    monkeypatch.setattr(provisioning, "_decide", decide_then_change)
    retries = _stale_retries()
    resp = logins.post("jo@example.com", givenName=["Joanna"])
    assert resp.status_code == 302, resp.get_data(as_text=True)
    started[0].join(30)
    assert not started[0].is_alive()
    assert _holdings(store, account) == (["admin"], ["production"])
    assert _stale_retries() == retries + (1 if store.dialect == "postgresql" else 0)
    with store.read() as db:
        user = db.scalar(select(User).where(User.account_id == account.id))
        assert user is not None and user.given_name == "Joanna"
        assert db.get(Account, account.id).audit_seq == audit.verify(db, account.id)[0]


def _active_number(store, account_id: int) -> int | None:
    from bridge import policy_versions

    with store.sessions() as db:
        active = policy_versions.active(db, account_id)
        return None if active is None else active.number
