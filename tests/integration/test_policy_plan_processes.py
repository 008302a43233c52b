"""`policy plan` over a large account in several processes (one range of user ids each, the
ranges' changes handed on in id order) finds exactly what one process finds; a helper that
fails or dies makes the plan fail, never answer short."""

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert

from bridge import accounts, manual, planning, schema
from bridge.errors import InvalidInput
from bridge.models import Group, Membership, User, UserEmail, utcnow
from bridge.store import Store

ROOT = Path(__file__).resolve().parents[2]
DEPARTMENTS = ("Marketing", "Sales", "Engineering", "", "Support")
GROUPS = ("cld-admins", "cld-owners", "cld-contractors", "Everyone")


def fill(store: Store, slug: str, n: int) -> tuple[int, list[uuid.UUID]]:
    """An account of `n` users of several shapes (departments, e-mail domains, groups, none),
    inserted in bulk; returns its id and theirs."""
    account = accounts.create_account(store, slug, actor="test")
    for env in ("production", "staging", "development"):
        accounts.add_environment(store, slug, env, default=env == "production", actor="test")
    ids = [uuid.uuid4() for _ in range(n)]
    now = utcnow()
    with store.engine.begin() as conn:
        groups = {name: uuid.uuid4() for name in GROUPS}
        conn.execute(
            insert(Group.__table__),
            [
                {
                    "id": gid,
                    "account_id": account.id,
                    "display_name": name,
                    "display_name_key": name.lower(),
                    "managed_by": "scim",
                    "version": 1,
                    "created": now,
                    "last_modified": now,
                }
                for name, gid in groups.items()
            ],
        )
        users, emails, members = [], [], []
        for i, uid in enumerate(ids):
            name = f"u{i}@{'agency.example' if i % 7 == 0 else 'acme.example'}"
            users.append(
                {
                    "id": uid,
                    "account_id": account.id,
                    "user_name": name,
                    "user_name_key": name,
                    "active": i % 11 != 0,
                    "department": DEPARTMENTS[i % len(DEPARTMENTS)] or None,
                    "version": 1,
                    "created": now,
                    "last_modified": now,
                }
            )
            if i % 5:
                emails.append(
                    {
                        "user_id": uid,
                        "position": 0,
                        "value": name,
                        "value_key": name,
                        "type": "work",
                        "primary": True,
                    }
                )
            if i % 3:
                members.append(
                    {"group_id": groups[GROUPS[i % 4]], "user_id": uid, "provenance": "scim"}
                )
        conn.execute(insert(User.__table__), users)
        conn.execute(insert(UserEmail.__table__), emails)
        conn.execute(insert(Membership.__table__), [{**m, "created": now} for m in members])
    return account.id, ids


@pytest.fixture(scope="module")
def large(empty_database_url, tmp_path_factory):
    """A database of its own holding an account of PARALLEL_USERS + 500 users, a few with a
    role set by hand (kept by apply), and the policy to plan."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine)
    slug = "large"
    account_id, ids = fill(store, slug, planning.PARALLEL_USERS + 500)
    for uid in sorted(ids)[:: len(ids) // 7]:  # in every range
        manual.set_role(store, account_id, uid, "reports", actor="test")
    store.dispose()
    policy = ROOT / "policies/examples/cloudinary.yaml"
    candidate = tmp_path_factory.mktemp("policy") / "large.yaml"
    candidate.write_text(policy.read_text().replace("account: acme-media", f"account: {slug}"))
    return url, slug, candidate


def idbridge(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own (a process with no other thread: it may fork)."""
    env = {**os.environ, "BRIDGE_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_plans_a_large_account_in_two_processes_as_in_one(large):
    url, slug, candidate = large
    one = idbridge(url, "policy", "plan", slug, str(candidate), "--json", "--processes", "1")
    two = idbridge(url, "policy", "plan", slug, str(candidate), "--json", "--processes", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "planned in" not in one.stderr
    assert "planned in 2 processes" in two.stderr  # it did fork
    found, again = json.loads(one.stdout), json.loads(two.stdout)
    assert found == again  # every change, in the same (id) order, and every count
    assert found["users"] == planning.PARALLEL_USERS + 500
    ids = [change["id"] for change in found["changes"]]
    assert ids == sorted(ids, key=uuid.UUID) and len(ids) > planning.PARALLEL_USERS
    assert {c["role"][1] for c in found["changes"] if c["role"]} >= {"admin", "master_admin"}
    assert not any(c["role"] and c["role"][0] == "reports" for c in found["changes"])  # kept
    text = idbridge(url, "policy", "plan", slug, str(candidate), "--processes", "2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1].startswith(f"{planning.PARALLEL_USERS + 500} users: ")


def test_cli_refuses_zero_processes(large):
    url, slug, candidate = large
    refused = idbridge(url, "policy", "plan", slug, str(candidate), "--processes", "0")
    assert refused.returncode == 2
    assert "Invalid value for '--processes'" in refused.stderr
    assert refused.stdout == ""


@pytest.fixture
def forking(monkeypatch):
    """Plans fork even from this (threaded) test process: its helpers only read, on a database
    of their own, with connections of their own."""
    monkeypatch.setattr(planning, "_forkable", lambda: True)


def in_helpers(monkeypatch, act):
    """`act()` runs in each helper as it starts planning its range (not in this process)."""
    parent, real = os.getpid(), planning._outcomes

    def outcomes(*args, **kwargs):
        if os.getpid() != parent:
            act()
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "_outcomes", outcomes)


def test_a_helper_that_fails_fails_the_plan(large, forking, monkeypatch):
    url, slug, candidate = large

    def fail():
        raise InvalidInput("the helper's own error")

    in_helpers(monkeypatch, fail)
    store = Store(url)
    seen = []
    try:
        with pytest.raises(InvalidInput, match="the helper's own error"):
            planning.plan(
                store,
                slug,
                planning.load_candidate(str(candidate), slug),
                on_change=seen.append,
                processes=2,
            )
    finally:
        store.dispose()
    assert seen and len(seen) < planning.PARALLEL_USERS  # the first range's, no more


class Unreadable(Exception):
    """An exception that pickles but does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def test_a_helper_error_that_does_not_come_back_whole_is_named(large, forking, monkeypatch):
    url, slug, candidate = large

    def fail():
        raise Unreadable("the helper", "cannot be read back")

    in_helpers(monkeypatch, fail)
    store = Store(url)
    try:
        with pytest.raises(RuntimeError, match="planning failed: Unreadable"):
            planning.plan(store, slug, planning.load_candidate(str(candidate), slug), processes=2)
    finally:
        store.dispose()


def test_a_helper_that_dies_fails_the_plan(large, forking, monkeypatch):
    url, slug, candidate = large
    in_helpers(monkeypatch, lambda: os._exit(3))
    store = Store(url)
    try:
        with pytest.raises(RuntimeError, match=r"ended without its result \(exit status 3\)"):
            planning.plan(store, slug, planning.load_candidate(str(candidate), slug), processes=2)
    finally:
        store.dispose()


def test_a_plan_in_a_threaded_process_stays_in_it(large, monkeypatch):
    """A process running another thread (a server's) never forks, whatever plan is asked."""
    url, slug, candidate = large

    def no_fork():
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    other = threading.Event()
    thread = threading.Thread(target=other.wait)
    thread.start()
    store = Store(url)
    try:
        policy = planning.load_candidate(str(candidate), slug)
        result = planning.plan(store, slug, policy, processes=2)
    finally:
        other.set()
        thread.join()
        store.dispose()
    assert result.processes == 1 and result.users == planning.PARALLEL_USERS + 500
