"""Policy versions in the store: every process reads the account's active version from the
database, so several processes on several machines agree, and a newly activated version is seen on
each one's next request.

A version is immutable: source text, content hash, author, origin, time. Creating one validates
it first (every problem as file:line:col, and the policy's own tests); a source identical to the
newest version makes no new one. Activating runs the plan first: a guard the result would break
refuses it (GuardRefused) and nothing changes; otherwise the version becomes the one active
version (a partial unique index holds that under concurrent activations) and every user is
re-evaluated through the one write path. Rolling back is activating an earlier version.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

import policies
from bridge import audit, planning
from bridge.accounts import get_account
from bridge.errors import GuardRefused, NotFound, PolicyInvalid
from bridge.models import PolicyVersion, utcnow
from bridge.store import Store

MAX_SOURCE = 256 * 1024


def content_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def filename(slug: str) -> str:
    """The name problems are reported against: the file a team keeps the policy in."""
    return f"{slug}.yaml"


def parse(slug: str, source: str) -> policies.Policy:
    """Validate a source for the account: every problem as file:line:col, and its own tests."""
    if len(source.encode()) > MAX_SOURCE:
        raise PolicyInvalid([f"{filename(slug)}:1:1: the policy is over {MAX_SOURCE} bytes"])
    try:
        policy = policies.loads(source, filename(slug))
    except policies.PolicyError as exc:
        raise PolicyInvalid([str(p) for p in exc.problems]) from None
    if policy.account != slug:
        raise PolicyInvalid(
            [f"{filename(slug)}:1:1: account is {policy.account!r}, but this is account {slug!r}"]
        )
    failed = [str(r) for r in policies.run_tests(policy) if not r.passed]
    if failed:
        raise PolicyInvalid(failed)
    return policy


@dataclass(frozen=True)
class Created:
    version: PolicyVersion
    new: bool


def create(store: Store, slug: str, source: str, *, origin: str, actor: str) -> Created:
    """Store a new (inactive) version of the account's policy, after validating it."""
    parse(slug, source)
    digest = content_hash(source)

    def work(db: Session) -> Created:
        account = get_account(db, slug)
        newest = _newest(db, account.id)
        if newest is not None and newest.content_hash == digest:
            return Created(newest, False)
        version = PolicyVersion(
            account_id=account.id,
            number=(newest.number if newest else 0) + 1,
            source=source,
            content_hash=digest,
            author=actor,
            origin=origin,
            active=False,
        )
        db.add(version)
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="policy.version",
            target_type="policy",
            target_id=str(version.number),
            after={"number": version.number, "hash": digest, "origin": origin},
        )
        return Created(version, True)

    return store.write(work)


def _newest(db: Session, account_id: int) -> PolicyVersion | None:
    return db.scalar(
        select(PolicyVersion)
        .where(PolicyVersion.account_id == account_id)
        .order_by(PolicyVersion.number.desc())
        .limit(1)
    )


def active(db: Session, account_id: int) -> PolicyVersion | None:
    return db.scalar(
        select(PolicyVersion).where(
            PolicyVersion.account_id == account_id, PolicyVersion.active.is_(True)
        )
    )


def get(db: Session, account_id: int, number: int) -> PolicyVersion:
    version = db.scalar(
        select(PolicyVersion).where(
            PolicyVersion.account_id == account_id, PolicyVersion.number == number
        )
    )
    if version is None:
        raise NotFound(f"no policy version {number}")
    return version


def history(db: Session, account_id: int, *, limit: int = 100) -> list[PolicyVersion]:
    """The account's versions, newest first."""
    return list(
        db.scalars(
            select(PolicyVersion)
            .where(PolicyVersion.account_id == account_id)
            .order_by(PolicyVersion.number.desc())
            .limit(limit)
        )
    )


def plan(store: Store, slug: str, source: str) -> planning.Plan:
    """What activating `source` would change for every stored user (nothing is written)."""
    return planning.plan(store, slug, parse(slug, source))


def activate(store: Store, slug: str, number: int, *, actor: str) -> planning.Plan:
    """Make version `number` the active one and re-evaluate every user; a guard it would break
    refuses it (GuardRefused) and nothing changes."""
    with store.read() as db:
        account = get_account(db, slug)
        source = get(db, account.id, number).source
    result = planning.plan(store, slug, parse(slug, source))
    if result.refused:
        guard, _, detail = result.refused.partition(": ")
        raise GuardRefused(guard.removeprefix("guard "), detail or result.refused)

    def work(db: Session) -> None:
        account = get_account(db, slug)
        version = get(db, account.id, number)
        current = active(db, account.id)
        if current is not None and current.id == version.id:
            return
        db.execute(
            update(PolicyVersion)
            .where(PolicyVersion.account_id == account.id, PolicyVersion.active.is_(True))
            .values(active=False)
        )
        db.flush()
        version.active, version.activated = True, utcnow()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="policy.activate",
            target_type="policy",
            target_id=str(number),
            before={"active": current.number if current else None},
            after={"active": number, "hash": version.content_hash},
        )

    store.write(work)
    return planning.apply(store, slug, actor=actor)


def push(
    store: Store, slug: str, source: str, *, origin: str, actor: str
) -> tuple[Created, planning.Plan]:
    """Store `source` as a version (or find it unchanged as the newest) and activate it: what
    `idbridge policy push|sync` and `idbridge demo` do in one step (PolicyInvalid, GuardRefused)."""
    created = create(store, slug, source, origin=origin, actor=actor)
    return created, activate(store, slug, created.version.number, actor=actor)


def diff(db: Session, account_id: int, number: int, against: int) -> list[str]:
    """A unified diff from version `against` to version `number`."""
    old, new = get(db, account_id, against), get(db, account_id, number)
    return list(
        difflib.unified_diff(
            old.source.splitlines(),
            new.source.splitlines(),
            f"version {against}",
            f"version {number}",
            lineterm="",
        )
    )


def describe(version: PolicyVersion, *, source: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "number": version.number,
        "active": version.active,
        "author": version.author,
        "origin": version.origin,
        "created": version.created,
        "activated": version.activated,
        "content_hash": version.content_hash,
    }
    if source:
        doc["source"] = version.source
    return doc


def parsed(policy: policies.Policy) -> dict[str, Any]:
    """The parts of a parsed policy a person checks first."""
    envs = policy.defaults.environments
    return {
        "account": policy.account,
        "environments": list(policy.environments),
        "defaults": {
            "role": policy.defaults.role,
            "environments": envs if isinstance(envs, str) else list(envs),
        },
        "precedence": policy.precedence,
        "rules": [rule.name for rule in policy.rules],
        "group_grants": sorted(policy.group_grants),
        "guards": {"keep_at_least_one": list(policy.guards.keep_at_least_one)},
        "tests": len(policy.tests),
    }
