"""Which policy applies to an account: its active version in the store (bridge.policy_versions),
read on every request so every process sees a new activation at once; parsed once per content
hash. An account with no stored version falls back to its file in BRIDGE_POLICY_DIR (the hot
reload of earlier releases, kept until the folder is synced with `idbridge policy sync`).

`<dir>/<slug>.yaml` (or `.yml`) is the account's policy. An edited file is picked up on the next
request, only if it is valid: a broken edit keeps the last good policy serving, is logged loudly
and shows in /readyz. A broken file with no good version behind it gives no policy at all, and
callers then keep every user's access as it is (an error never falls back to more access).
Without a file, the account's defaults apply (its default role and default environments).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    cast,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

import policies
from bridge import driver
from bridge.models import Account, Environment, PolicyVersion

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml")
STORED_CACHE = 256  # parsed stored versions kept per process


@dataclass
class _Entry:
    stamp: tuple[int, int]
    good: policies.Policy | None
    error: str | None


class PolicyRegistry:
    """Policy files by account slug, each loaded once per change of the file on disk."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._entries: dict[Path, _Entry] = {}
        self._stored: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def stored(self, slug: str, digest: str, source: Callable[[], str]) -> _Entry:
        """The parsed stored version with this content hash (parsed once per process)."""
        with self._lock:
            entry = self._stored.get(digest)
        if entry is not None:
            return entry
        entry = _parse_stored(slug, source())
        with self._lock:
            if len(self._stored) >= STORED_CACHE:
                self._stored.pop(next(iter(self._stored)))
            self._stored[digest] = entry
        return entry

    def path_for(self, slug: str) -> Path | None:
        if self.directory is None:
            return None
        for suffix in SUFFIXES:
            path = self.directory / f"{slug}{suffix}"
            if path.is_file():
                return path
        return None

    def load(self, path: Path, slug: str | None = None) -> _Entry:
        """The entry for `path`, reloading it when its mtime or size changed."""
        try:
            stat = path.stat()
        except OSError as exc:
            return _Entry((0, 0), None, f"{path}: cannot read ({exc.strerror})")
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry.stamp == stamp:
                return entry
            previous = entry.good if entry is not None else None
            try:
                loaded = policies.load(path)
                expected = slug or path.stem
                if loaded.account != expected:
                    raise policies.PolicyError(
                        (
                            policies.Problem(
                                str(path),
                                1,
                                1,
                                f"account is {loaded.account!r}, but "
                                f"this file is for account {expected!r}",
                            ),
                        )
                    )
            except Exception as exc:  # any unloadable file (PolicyError or not) is a policy error
                why = str(exc) if isinstance(exc, policies.PolicyError) else _unexpected(path, exc)
                log.error("policy file %s is broken; keeping its last good version: %s", path, why)
                entry = _Entry(stamp, previous, why)
            else:
                if entry is not None:
                    log.warning("policy file %s reloaded", path)
                entry = _Entry(stamp, loaded, None)
            self._entries[path] = entry
            return entry

    def problems(self) -> dict[str, str]:
        """Every policy file in the directory that does not load, with why."""
        if self.directory is None or not self.directory.is_dir():
            return {}
        found = {}
        for path in sorted(self.directory.iterdir()):
            if path.suffix in SUFFIXES:
                entry = self.load(path)
                if entry.error:  # unauthenticated readers (/readyz) see file names only
                    found[path.name] = entry.error.replace(str(path), path.name)
        return found


def _unexpected(path: Path, exc: Exception) -> str:
    """A loader failure that is not a PolicyError (a bug to fix), said like one."""
    log.exception("policy file %s: unexpected loader failure", path)
    return f"{path}: cannot load the policy file ({type(exc).__name__})"


@dataclass(frozen=True)
class Choice:
    """The policy to apply, or None when a broken file leaves nothing safe to apply."""

    policy: policies.Policy | None
    source: str
    error: str | None = None
    key: str = ""  # names this exact policy across processes (content hash, file stamp, defaults)


def _parse_stored(slug: str, source: str) -> _Entry:
    """A stored version was valid when stored; an engine upgrade could still refuse it."""
    try:
        return _Entry((0, 0), policies.loads(source, f"{slug}.yaml"), None)
    except policies.PolicyError as exc:
        log.error("stored policy of %s does not load any more: %s", slug, exc)
        return _Entry((0, 0), None, str(exc))


ENVIRONMENTS = "bridge.environments"  # db.info: account id -> its environments, once a session


def environments_of(db: Session, account_id: int) -> list[tuple[int, str, bool]]:
    """The account's environments (id, name, default), read once per session: provisioning
    many users in one transaction asks for them once."""
    cache: dict[int, list[tuple[int, str, bool]]] = db.info.setdefault(ENVIRONMENTS, {})
    if account_id not in cache:
        cache[account_id] = [
            (env_id, name, bool(default))
            for env_id, name, default in db.execute(
                select(Environment.id, Environment.name, Environment.is_default)
                .where(Environment.account_id == account_id)
                .order_by(Environment.id)
            )
        ]
    return cache[account_id]


_ACTIVE = select(PolicyVersion.id, PolicyVersion.number, PolicyVersion.content_hash).where(
    PolicyVersion.account_id == bindparam("account_id"), PolicyVersion.active.is_(True)
)  # built once: every write that applies the policy reads it
# The active version and the account's environments in one round trip (a write that applies
# the policy needs both): kind 0 is the version (id, number, hash), kind 1 an environment
# (id, name, default). Built once.
_ACTIVE_AND_ENVIRONMENTS = union_all(
    select(
        literal(0).label("kind"),
        PolicyVersion.id,
        PolicyVersion.number,
        PolicyVersion.content_hash.label("text"),
        null().cast(Boolean).label("is_default"),
    ).where(PolicyVersion.account_id == bindparam("account_id"), PolicyVersion.active.is_(True)),
    select(
        literal(1),
        Environment.id,
        null().cast(Integer),
        Environment.name,
        Environment.is_default,
    ).where(Environment.account_id == bindparam("account_id")),
).order_by("kind", "id")


@dataclass(frozen=True)
class _Version:
    """An active stored policy version, as policy_for reads it."""

    id: int
    number: int
    content_hash: str


@dataclass(frozen=True)
class Known:
    """The account's active version and environments, read with the account in one statement
    (read_with_account) by a write that then applies the policy (policy_for(known=...)) with
    nothing written to either in between."""

    active: _Version | None
    environments: list[tuple[int, str, bool]]


class _json_rows(FunctionElement[Any]):
    """An aggregate of its arguments' rows as one JSON array of arrays: json_agg over
    json_build_array on PostgreSQL, json_group_array over json_array on SQLite (NULL or [] when
    there are no rows)."""

    type = JSON()
    inherit_cache = True
    name = "json_rows"


@compiles(_json_rows, "postgresql")
def _json_rows_postgresql(element: _json_rows, compiler: Any, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


@compiles(_json_rows)
def _json_rows_sqlite(element: _json_rows, compiler: Any, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


def with_known(statement: Select[*tuple[Any, ...]], account_id: Any) -> Select[*tuple[Any, ...]]:
    """`statement` with what policy_for reads of the account `account_id` (a column of it):
    its active version's columns, if any (outer-joined), and its environments as one JSON
    column (known_environments), so the statement's rows are not one per environment: each
    row of the account's would carry, and decode, every column again (on PostgreSQL an
    account's two JSON columns and its datetime: 65,000 instructions a row). Read the rows
    with known_of."""
    environments = (
        select(_json_rows(Environment.id, Environment.name, Environment.is_default))
        .where(Environment.account_id == account_id)
        .scalar_subquery()
    )
    return statement.add_columns(
        PolicyVersion.id.label("known_version_id"),
        PolicyVersion.number.label("known_version_number"),
        PolicyVersion.content_hash.label("known_version_hash"),
        type_coerce(environments, JSON).label("known_environments"),
    ).outerjoin(
        PolicyVersion,
        and_(PolicyVersion.account_id == account_id, PolicyVersion.active.is_(True)),
    )


def known_of(rows: Sequence[Any]) -> Known:
    """What with_known's rows (at least one; each carries it all) say of the account's version
    and environments (in id order)."""
    first = rows[0]
    active = (
        None
        if first.known_version_id is None
        else _Version(first.known_version_id, first.known_version_number, first.known_version_hash)
    )
    environments = sorted(
        (int(env_id), name, bool(default))
        for env_id, name, default in first.known_environments or ()
    )
    return Known(active, environments)


_ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
# The account's row with its active version's columns and its environments. Built once.
_WITH_ACCOUNT = with_known(
    select(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("account_id")), _ACCOUNTS.c.id
)


def read_with_account(db: Session, account_id: int) -> tuple[Any, Known]:
    """The account's row (its columns by name, bridge.driver's; None when there is no such
    account) and what policy_for reads of it (Known), in one round trip."""
    rows = driver.rows(db.connection(), _WITH_ACCOUNT, {"account_id": account_id})
    if not rows:
        return None, Known(None, [])
    return rows[0], known_of(rows)


def _active(db: Session, account_id: int) -> _Version | None:
    """The active stored version's (id, number, content_hash), or None; the environments too
    (into the session's cache of environments_of) when they are not known yet."""
    cache: dict[int, list[tuple[int, str, bool]]] = db.info.setdefault(ENVIRONMENTS, {})
    if account_id in cache:
        row = db.execute(_ACTIVE, {"account_id": account_id}).first()
        return None if row is None else _Version(*row)
    active: _Version | None = None
    environments: list[tuple[int, str, bool]] = []
    for kind, row_id, number, text, default in db.execute(
        _ACTIVE_AND_ENVIRONMENTS, {"account_id": account_id}
    ):
        if kind == 0:
            active = _Version(row_id, number, text)
        else:
            environments.append((row_id, text, bool(default)))
    cache[account_id] = environments
    return active


# db.info: account id -> what policy_for read of the account in this session (version id,
# environments, default role), which a write's decisions rest on. On PostgreSQL the audit
# chain's append checks it against the account as it is once the append holds the account's
# row lock (bridge.audit, DECIDED_HOLDS): a policy activated or an environment added or made a
# default in between (each appends an event of its own, under that lock) makes the write run
# again, deciding anew (the default role is checked too, though nothing changes it yet).
# Without it a user written while a new policy was activated and applied kept the old one's
# access (the apply read the users before that write committed). On SQLite the write lock
# serialises them.
DECIDED_FROM = "bridge.decided_from"


def decided_params(db: Session, account_id: int) -> dict[str, Any]:
    """DECIDED_HOLDS's parameters for what this session decided from for the account (it
    holds, unchecked, when nothing was decided)."""
    decided = db.info.get(DECIDED_FROM, {}).get(account_id)
    if decided is None:
        return {
            "decided_check": False,
            "decided_version": None,
            "decided_environments": "[]",
            "decided_role": "",
        }
    version_id, environments, default_role = decided
    return {
        "decided_check": True,
        "decided_version": version_id,
        "decided_environments": json.dumps(
            [[env_id, bool(default), name] for env_id, name, default in environments]
        ),
        "decided_role": default_role,
    }


# SQL (PostgreSQL), for a statement on the accounts table: the account's active version, its
# environments and its default role are those decided_params names (or nothing was decided:
# decided_check false).
_PV, _ENV = PolicyVersion.__table__, Environment.__table__
_NOW_VERSION = (
    select(_PV.c.id)
    .where(_PV.c.account_id == _ACCOUNTS.c.id, _PV.c.active.is_(True))
    .scalar_subquery()
)
_NOW_ENVIRONMENTS = (
    select(
        func.coalesce(
            func.jsonb_agg(
                aggregate_order_by(
                    func.jsonb_build_array(_ENV.c.id, _ENV.c.is_default, _ENV.c.name), _ENV.c.id
                )
            ),
            func.jsonb_build_array(),  # none: []
        )
    )
    .where(_ENV.c.account_id == _ACCOUNTS.c.id)
    .scalar_subquery()
)
DECIDED_HOLDS = or_(
    not_(bindparam("decided_check", type_=Boolean)),
    and_(
        _NOW_VERSION.is_not_distinct_from(bindparam("decided_version", type_=Integer)),
        cast(bindparam("decided_environments", type_=String), JSONB) == _NOW_ENVIRONMENTS,
        _ACCOUNTS.c.default_role == bindparam("decided_role", type_=String),
    ),
)


def policy_for(
    db: Session, account: Account, registry: PolicyRegistry | None, *, known: Known | None = None
) -> Choice:
    """The account's policy now: its active stored version, else its file, else its defaults
    (`known`: the version and environments as read with the account in this transaction)."""
    if known is None:
        active = _active(db, account.id)
    else:
        active = known.active
        db.info.setdefault(ENVIRONMENTS, {}).setdefault(account.id, known.environments)
    db.info.setdefault(DECIDED_FROM, {})[account.id] = (
        None if active is None else active.id,
        environments_of(db, account.id),
        account.default_role,
    )
    if active is not None:

        def source() -> str:
            return db.scalars(
                select(PolicyVersion.source).where(PolicyVersion.id == active.id)
            ).one()

        entry = (
            registry.stored(account.slug, active.content_hash, source)
            if registry is not None
            else _parse_stored(account.slug, source())
        )
        return Choice(
            entry.good,
            f"store: version {active.number}",
            entry.error,
            f"store:{active.content_hash}",
        )
    path = registry.path_for(account.slug) if registry is not None else None
    if registry is not None and path is not None:
        entry = registry.load(path, account.slug)
        return Choice(entry.good, str(path), entry.error, f"file:{path}:{entry.stamp}")
    defaults = sorted(name for _, name, default in environments_of(db, account.id) if default)
    return Choice(
        policies.Policy(
            account=account.slug,
            defaults=policies.Defaults(role=account.default_role, environments=tuple(defaults)),
        ),
        "account defaults",
        key=f"defaults:{account.default_role}:{','.join(defaults)}",
    )
