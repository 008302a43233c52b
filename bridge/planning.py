"""explain, plan and apply a policy over an account's stored users.

`plan` streams every user in batches (memory stays flat), evaluates the candidate policy on the
same Profile the write path uses, and compares the access the user has now with the access
`apply` would leave: only `policy:*` rows change, `scim`/`saml`/`manual` rows stay. Guards are
checked over the whole account: a plan that would leave no active `master_admin` is refused, and
so is the apply. `apply` re-evaluates through the one write path
(bridge.provisioning.reevaluate), one audit event per changed user with the rules behind each row.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import operator
import os
import pickle
import signal
import tempfile
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    bindparam,
    func,
    literal_column,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

import policies
from bridge import access, audit, profiles, provisioning
from bridge.accounts import get_account
from bridge.errors import Conflict, InvalidInput, NotFound
from bridge.models import (
    Account,
    Environment,
    EnvironmentAccess,
    Grant,
    Group,
    Membership,
    RoleAssignment,
    User,
    UserEmail,
    UserPhoneNumber,
    fold,
)
from bridge.policy import Choice, policy_for
from bridge.store import Store
from policies.conditions import InputError

BATCH = 1000
POLICY = access.POLICY


@dataclass
class Access:
    """A user's effective access, as comparable sets."""

    role: str | None = None
    role_manual: bool = False
    environments: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    grants: set[str] = field(default_factory=set)
    kept_environments: set[str] = field(default_factory=set)
    kept_groups: set[str] = field(default_factory=set)
    kept_grants: set[str] = field(default_factory=set)
    # groups compare case-insensitively (folded) but are shown as the file or the IdP spells them
    group_names: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # made for every changed user: no frozen __init__'s setattr calls
class Change:
    """What one user gains and loses."""

    user_name: str
    raw_id: Any  # the user's id as the driver gave it (see _as_uuid): a UUID when asked
    role: tuple[str | None, str | None] | None
    gains: dict[str, list[str]]
    losses: dict[str, list[str]]
    errors: tuple[str, ...] = ()

    @property
    def user_id(self) -> uuid.UUID:
        """The user's id (made when asked: most of a large plan's changes are only counted)."""
        return _as_uuid(self.raw_id)

    def describe(self) -> dict[str, Any]:
        return {
            "user": self.user_name,
            "id": str(self.user_id),
            "role": list(self.role) if self.role else None,
            "gains": self.gains,
            "losses": self.losses,
            "errors": list(self.errors),
        }


@dataclass
class Plan:
    """Who would gain or lose what; `refused` names a guard the result would break."""

    policy_source: str
    users: int = 0
    gaining: int = 0
    losing: int = 0
    role_changes: int = 0
    errors: int = 0
    changes: list[Change] = field(default_factory=list)
    # the users apply changes, by id as Change.raw_id (changed_ids: as UUIDs)
    changed: list[Any] = field(default_factory=list)
    role_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: str | None = None
    warnings: list[str] = field(default_factory=list)
    group_grants: list[GroupGrantChange] = field(default_factory=list)
    processes: int = 1  # how many processes planned the users (see plan's `processes`)

    @property
    def changed_ids(self) -> list[uuid.UUID]:
        """The users `apply` changes (every changed user but those kept as they are after
        errors), by id."""
        return [_as_uuid(raw) for raw in self.changed]

    def summary(self) -> str:
        return (
            f"{self.users} users: {self.gaining} gain, {self.losing} lose, "
            f"{self.role_changes} change role, {self.errors} kept as they are after errors"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.policy_source,
            "users": self.users,
            "gain": self.gaining,
            "lose": self.losing,
            "change_role": self.role_changes,
            "errors": self.errors,
            "refused": self.refused,
            "warnings": self.warnings,
            "changes": [c.describe() for c in self.changes],
            "group_grants": [g.describe() for g in self.group_grants],
        }


def load_candidate(path: str, slug: str) -> policies.Policy:
    """A policy file to plan with; its `account:` must be the account's slug."""
    policy = policies.load(path)
    if policy.account != slug:
        raise InvalidInput(f"{path}: account is {policy.account!r}, not {slug!r}")
    return policy


def explain(
    store: Store,
    slug: str,
    *,
    user_name: str | None = None,
    profile: policies.Profile | None = None,
) -> tuple[Choice, policies.Decision | None, policies.Profile]:
    """The account's policy's decision for a stored user or a captured profile, and why."""
    with store.read() as db:
        account = get_account(db, slug)
        choice = policy_for(db, account, store.policies)
        if profile is None:
            user = db.scalar(
                select(User).where(
                    User.account_id == account.id, User.user_name_key == fold(user_name or "")
                )
            )
            if user is None:
                raise NotFound(f"no user {user_name!r} in account {slug!r}")
            profile = profiles.stored(db, user)
    decision = policies.evaluate(choice.policy, profile) if choice.policy is not None else None
    return choice, decision, profile


def plan(
    store: Store,
    slug: str,
    candidate: policies.Policy | None = None,
    *,
    on_change: Callable[[Change], None] | None = None,
    on_start: Callable[[Plan], None] | None = None,
    processes: int = 1,
) -> Plan:
    """What applying `candidate` (default: the account's current policy) would change.

    Each user's change goes to `on_change` as it is found (memory stays flat however many
    users change); without one, changes are collected in `Plan.changes`. `on_start` gets the
    plan before the first change: its policy, warnings and group grant changes.

    With `processes` > 1, an account of at least PARALLEL_USERS users is planned in that many
    processes, each over a range of user ids (see _helpers): only from a process with no other
    thread (the CLI); a server's threads always plan in their own process.
    """
    with store.read() as db:
        account = get_account(db, slug)
        if candidate is None:
            choice = policy_for(db, account, store.policies)
            if choice.policy is None:
                raise Conflict(f"the policy of {slug!r} does not load: {choice.error}")
            candidate, source = choice.policy, choice.source
        else:
            source = candidate.file
        result = Plan(source)
        names = set(
            db.scalars(select(Environment.name).where(Environment.account_id == account.id))
        )
        for missing in sorted(set(candidate.environments) - names):
            result.warnings.append(f"environment {missing!r} is not one of the account's")
        result.group_grants = group_grant_changes(db, account, candidate)
        if on_start is not None:
            on_start(result)
        emit = result.changes.append if on_change is None else on_change
        decide = policies.Evaluator(candidate)
        ranges = _ranges(db, account, processes)
        result.processes = len(ranges)
        if len(ranges) == 1:
            with _old_objects_set_aside():
                _plan_range(db, account, decide, names, None, result, emit)
    if len(ranges) > 1:
        store.engine.dispose()  # no connection (nor SQLite's state of one) crosses a fork
        with _old_objects_set_aside(), _helpers(store, slug, decide, names, ranges[1:]) as helpers:
            with store.read() as db:
                account = get_account(db, slug)
                _plan_range(db, account, decide, names, ranges[0], result, emit)
            for helper in helpers:  # the ranges in id order, as one process would give them
                helper.replay(result, emit)
    for role in candidate.guards.keep_at_least_one:
        if result.role_counts.get(role, 0) == 0:
            result.refused = f"guard keep_at_least_one: no user would keep the role {role}"
    return result


def _plan_range(
    db: Session,
    account: Account,
    decide: policies.Evaluator,
    names: set[str],
    ids: Range,
    result: Plan,
    emit: Callable[[Change], None],
) -> None:
    with contextlib.closing(_outcomes(db, account, decide, names, ids)) as found:
        for user_id, user_name, active, outcome in found:
            _count(result, outcome, active)
            if outcome.changes:
                _change(result, emit, user_name, user_id, outcome)


def _count(result: Plan, outcome: _Outcome, active: bool | None) -> None:
    result.users += 1
    if outcome.role_after and active is not False:  # guards count active users
        result.role_counts[outcome.role_after] += 1


def _change(
    result: Plan, emit: Callable[[Change], None], user_name: str, user_id: Any, outcome: _Outcome
) -> None:
    """Count and hand on the Change `outcome` makes for this user."""
    change = Change(  # lists of its own: outcomes are shared
        user_name,
        user_id,
        outcome.role,
        _own(outcome.gains),
        _own(outcome.losses),
        outcome.errors,
    )
    result.gaining += outcome.gaining
    result.losing += outcome.losing
    result.role_changes += outcome.role is not None
    if outcome.errors:
        result.errors += 1
    else:
        result.changed.append(user_id)
    emit(change)


# A range of user ids, both ends included; None: every user.
Range = tuple[uuid.UUID, uuid.UUID] | None


def _outcomes(
    db: Session,
    account: Account,
    decide: policies.Evaluator,
    names: set[str],
    ids: Range,
) -> Generator[tuple[Any, str, bool | None, _Outcome], None, None]:
    """Each user (of the range) in id order with what the policy's decision does to what they
    hold: users alike in the policy's inputs and in what they hold share one outcome."""
    key_of = decide.key
    outcomes: dict[tuple[policies.memo.Key, Held], _Outcome] = {}
    users = _users(db, account, decide.attributes, ids)
    with contextlib.closing(users):  # reading stops here
        for user_id, user_name, active, parts, groups, held in users:
            source, idp, attributes = parts
            try:  # the values of the policy's inputs, from the parts (no Profile)
                key: policies.memo.Key | None = key_of(source, user_name, idp, attributes, groups)
            except InputError:
                key = None  # evaluate says why, uncached
            outcome = outcomes.get((key, held)) if key is not None else None
            if outcome is None:
                profile = policies.Profile(
                    source=source,
                    user_name=user_name,
                    idp=idp,
                    attributes=attributes,
                    groups=groups,
                )
                if key is None:
                    decision = policies.evaluate(decide.policy, profile)
                else:
                    decision = decide.decision(key, profile)
                outcome = _outcome(held, decision, names)
                if key is not None:
                    if len(outcomes) >= OUTCOMES:
                        outcomes.clear()
                    outcomes[(key, held)] = outcome
            yield user_id, user_name, active, outcome


PARALLEL_USERS = 20_000  # an account this large is planned in several processes, when asked


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def _ranges(db: Session, account: Account, processes: int) -> list[Range]:
    """The ranges of user ids to plan, one per process: [None] (every user, in this process)
    unless `processes` > 1, this process runs no other thread (a forked child has only the
    forking one: another's locks would stay held in it forever) and the account has at least
    PARALLEL_USERS users. Ids are random (uuid4), so equal ranges hold about as many users."""
    if processes <= 1 or not _forkable():
        return [None]
    users = db.scalar(select(func.count()).select_from(User).where(User.account_id == account.id))
    if (users or 0) < PARALLEL_USERS:
        return [None]
    span = 1 << 128
    starts = [span * n // processes for n in range(processes)]
    ends = [*(start - 1 for start in starts[1:]), span - 1]
    return [(uuid.UUID(int=a), uuid.UUID(int=b)) for a, b in zip(starts, ends, strict=True)]


def _forkable() -> bool:
    """Whether this process may fork a helper: it runs no other thread."""
    return threading.active_count() == 1


class _Helper:
    """A forked process planning one range of users; what it found comes back through a file
    (memory stays flat in both processes), read once it is done."""

    def __init__(self, pid: int, spool: Any) -> None:
        self.pid, self.spool = pid, spool
        self.status: int | None = None

    def wait(self) -> None:
        if self.status is None:
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def stop(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()
        self.spool.close()

    def replay(self, result: Plan, emit: Callable[[Change], None]) -> None:
        """Count and hand on the range's changes as this process would have found them."""
        self.wait()
        self.spool.seek(0)
        while True:
            try:
                kind, data = pickle.load(self.spool)  # noqa: S301  (our own child wrote it)
            except EOFError:
                raise RuntimeError(
                    f"a planning process ended without its result (exit status {self.status})"
                ) from None
            if kind == "failed":
                raise data
            if kind == "done":
                users, role_counts = data
                result.users += users
                for role, count in role_counts.items():
                    result.role_counts[role] += count
                return
            outcomes, changes = data
            for user_name, user_id, n in changes:
                _change(result, emit, user_name, user_id, outcomes[n])


@contextmanager
def _helpers(
    store: Store,
    slug: str,
    decide: policies.Evaluator,
    names: set[str],
    ranges: list[Range],
) -> Iterator[list[_Helper]]:
    """A forked process per range, each planning it in a read transaction of its own, on
    connections of its own (the pool it inherits is left to this process); all stopped on
    exit (killed if they are still running: this process stopped early)."""
    helpers: list[_Helper] = []
    try:
        for ids in ranges:
            spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the helper's stop)
            pid = os.fork()
            if pid == 0:  # the helper: never returns
                _help(store, slug, decide, names, ids, spool)
            helpers.append(_Helper(pid, spool))
        yield helpers
    finally:
        for helper in helpers:
            helper.stop()


def _help(
    store: Store,
    slug: str,
    decide: policies.Evaluator,
    names: set[str],
    ids: Range,
    spool: Any,
) -> None:
    """In a forked process: plan the range `ids`, write what it found to `spool` (batches of
    changes, each with the outcomes they name, then the counts, or the error), and exit."""
    status = 0
    try:
        store.engine.dispose(close=False)  # the parent's connections stay the parent's
        mine = Plan("")
        batch: list[tuple[str, Any, int]] = []
        table: dict[int, int] = {}  # id of an outcome in `outcomes` -> its index
        outcomes: list[_Outcome] = []
        with store.read() as db:
            account = get_account(db, slug)
            found = _outcomes(db, account, decide, names, ids)
            for user_id, user_name, active, outcome in found:
                _count(mine, outcome, active)
                if outcome.changes:
                    n = table.get(id(outcome))
                    if n is None:
                        n = table[id(outcome)] = len(outcomes)
                        outcomes.append(outcome)  # kept alive: its id stays its own
                    batch.append((user_name, user_id, n))
                    if len(batch) >= BATCH:
                        pickle.dump(("changes", (outcomes, batch)), spool, PICKLE)
                        batch, table, outcomes = [], {}, []
        if batch:
            pickle.dump(("changes", (outcomes, batch)), spool, PICKLE)
        pickle.dump(("done", (mine.users, dict(mine.role_counts))), spool, PICKLE)
    except BaseException as exc:  # whatever it is, the parent raises it
        status = 1
        try:  # whole, or not at all: a record cut short would hide the error
            record = pickle.dumps(("failed", exc), PICKLE)
            pickle.loads(record)  # noqa: S301  (the parent must be able to read it back)
        except Exception:  # an exception that does not pickle, or not back
            record = pickle.dumps(("failed", RuntimeError(f"planning failed: {exc!r}")), PICKLE)
        spool.write(record)
    finally:
        try:
            spool.flush()
            store.engine.dispose()
        finally:
            os._exit(status)  # no parent's cleanup (atexit, its connections) runs here


PICKLE = pickle.HIGHEST_PROTOCOL


def apply(store: Store, slug: str, *, actor: str, processes: int = 1) -> Plan:
    """Re-evaluate every user with the account's current policy, unless a guard refuses
    (planned in `processes`, as `plan`)."""
    result = plan(store, slug, processes=processes)
    if result.refused:
        raise Conflict(f"refused: {result.refused}")

    def reconcile(db: Session) -> None:
        account = get_account(db, slug)
        choice = policy_for(db, account, store.policies)
        if choice.policy is not None:
            _reconcile_group_grants(db, account, choice.policy, actor=actor)
        audit.record(  # the event feed's policy.applied
            db,
            account.id,
            actor=actor,
            action="policy.apply",
            target_type="account",
            target_id=account.slug,
            after={"policy": choice.source, "users_changing": len(result.changed)},
        )

    store.write(reconcile)
    ids = result.changed_ids
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]

        def work(db: Session, chunk: list[uuid.UUID] = chunk) -> None:
            account = get_account(db, slug)
            provisioning.reevaluate(db, account, chunk, registry=store.policies, actor=actor)

        store.write(work)
    return result


# A stored user's Profile parts: source, IdP link and the attributes the policy reads.
_Parts = tuple[policies.Source, policies.IdpLink | None, dict[str, tuple[Any, ...]]]
# What a user holds now, as rows: (kind, value, kept), where kept means not policy-given (kept by
# apply) and, for the role, manual. Users holding the same rows compare equal.
Held = frozenset[tuple[str, str, bool]]
OUTCOMES = 10_000  # distinct (inputs, held) outcomes kept while planning


@dataclass(frozen=True)
class _Outcome:
    """What the decision does to what a user holds: the Change's parts and the role after."""

    role_after: str | None
    role: tuple[str | None, str | None] | None = None
    gains: Mapping[str, list[str]] = field(default_factory=dict)
    losses: Mapping[str, list[str]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    changes: bool = False
    gaining: bool = False  # what Plan counts of each Change made from it
    losing: bool = False


_set_aside = threading.Lock()
_planning = 0  # plans running in this process
_froze = False  # whether the first of them froze the heap (and the last must thaw it)


@contextmanager
def _old_objects_set_aside() -> Iterator[None]:
    """Plan makes many short-lived acyclic objects (rows, parts, changes) that reference
    counting frees; a batch's live long enough to be promoted, and each full collection then
    walked every object of the process: a fifth of plan's CPU over 20,000 users, measured with
    gc.callbacks. While plans run, the objects that existed before the first began are moved
    out of the collector's sight (gc.freeze): collections go on, for every thread, but walk
    only newer objects. A cycle among the older ones that becomes garbage meanwhile is
    collected once the last plan ends. A process that froze its heap itself (a pre-fork
    server) is left as it is."""
    global _planning, _froze
    with _set_aside:
        _planning += 1
        if _planning == 1:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
    try:
        yield
    finally:
        with _set_aside:
            _planning -= 1
            if _planning == 0 and _froze:
                gc.unfreeze()
                _froze = False


def _outcome(held: Held, decision: policies.Decision, names: set[str]) -> _Outcome:
    now = _access(held)
    after = _after(now, decision, names) if decision.ok else now
    errors = () if decision.ok else decision.errors
    gains, losses = _diff(now, after)
    role = (now.role, after.role) if now.role != after.role else None
    gaining, losing = any(gains.values()), any(losses.values())
    changes = bool(role or gaining or losing or errors)
    return _Outcome(after.role, role, gains, losses, errors, changes, gaining, losing)


def _users(
    db: Session, account: Account, attributes: frozenset[str], ids: Range = None
) -> Generator[tuple[Any, str, bool | None, _Parts, tuple[str, ...], Held], None, None]:
    """Users in id order (the id as the driver gives it: see _as_uuid), each with the parts of
    the Profile the write path would build (source, IdP link and only the `attributes` the
    policy can look at: the same Decision), their SCIM group names and what they hold now.

    A few statements, each streamed in user id order (memory stays flat) and read alongside:
    the users, with their e-mails when the policy reads them (a row per e-mail); their phones,
    when it reads them; what they hold. No range of random UUIDs per batch, each of whose rows
    sat on a page of its own: the database reads a kind's rows in the order it keeps them
    (memberships through the account's groups, which SQLite reads from their unique index
    alone) and sorts them. With `ids`, only the users whose id is in that range."""
    fields = [f for f, path in profiles.SCIM_PATHS.items() if path in attributes]
    if profiles.MANAGER in attributes:
        fields.append("manager_id")
    names = tuple(dict.fromkeys(("id", "user_name", "active", "saml_attributes", *fields)))
    parts = profiles.Reader(names, attributes).parts
    emails = "emails.value" in attributes
    conn = db.connection()
    key = _id_key(conn)
    ranged = ids is not None
    bound: dict[str, Any] = {"account": account.id}
    if ids is not None:
        bound["lo"], bound["hi"] = ids
    with contextlib.ExitStack() as streams:
        users = streams.enter_context(_stream(conn, _users_statement(names, emails, ranged), bound))
        phones = (
            _Following(streams.enter_context(_stream(conn, _phones_statement(ranged), bound)), key)
            if "phoneNumbers.value" in attributes
            else None
        )
        held_rows = _Following(
            streams.enter_context(_stream(conn, _held_statement(ranged), bound)), key
        )
        none: tuple[str, ...] = ()
        kinds = KINDS
        rows = itertools.chain.from_iterable(users.partitions())
        user = next(rows, None)
        while user is not None:
            number = key(user[0])
            following = next(rows, None)
            found_emails = none
            if emails:  # the last column, one row per e-mail (NULL: none)
                if user[-1] is not None:
                    found_emails = (user[-1],)
                while following is not None and key(following[0]) == number:
                    found_emails += (following[-1],)
                    following = next(rows, None)
            held: list[tuple[str, str, bool]] = []
            groups: list[str] = []
            for _, code, value, provenance in held_rows.take(number):
                if code == ALL_ENVIRONMENTS and not value:
                    value = "all"  # access to every environment, present and future
                held.append((kinds[code], value, not provenance.startswith(POLICY)))
                if code == GROUPS and provenance == "scim":
                    groups.append(value)
            yield (
                user[0],
                user[1],
                user[2],
                parts(
                    user,
                    found_emails,
                    tuple(r[1] for r in phones.take(number)) if phones is not None else none,
                ),
                tuple(groups),
                frozenset(held),
            )
            user = following


# What a user holds, by the code the held statement gives each kind of row.
KINDS = ("role", "environments", "groups", "grants")
ALL_ENVIRONMENTS, GROUPS = KINDS.index("environments"), KINDS.index("groups")


def _id_key(conn: Connection) -> Callable[[Any], Any]:
    """How user ids as the driver gives them compare in the order the database sorts them:
    PostgreSQL's driver gives UUIDs (compared in Python, so by their number); SQLite's, the
    stored hex text (sorted as text)."""
    if conn.dialect.supports_native_uuid:
        return operator.attrgetter("int")
    return _same


def _same(value: Any) -> Any:
    return value


def _as_uuid(raw: Any) -> uuid.UUID:
    """A user id as the driver gave it (a UUID, or SQLite's hex text) as a UUID."""
    return raw if type(raw) is uuid.UUID else uuid.UUID(raw)


@contextmanager
def _stream(conn: Connection, statement: Any, bound: dict[str, Any]) -> Iterator[Any]:
    """`statement`'s rows, fetched BATCH at a time while they are read (a server-side cursor on
    PostgreSQL); closed on exit."""
    result = conn.execute(statement, bound, execution_options={"yield_per": BATCH})
    with contextlib.closing(result):
        yield result


class _Following:
    """The rows of a statement sorted by user id (the first column), taken a user at a time as
    the users, in the same order, go by; rows of a user who is not among them (one who came
    or went between the statements) are passed over."""

    __slots__ = ("_at", "_head", "_key", "_rows")

    def __init__(self, result: Any, key: Callable[[Any], Any]) -> None:
        self._rows = itertools.chain.from_iterable(result.partitions())
        self._key = key
        self._head = next(self._rows, None)
        self._at = None if self._head is None else key(self._head[0])

    def take(self, user: Any) -> list[Any]:
        """The rows of the user whose id's key is `user`."""
        head, at = self._head, self._at
        if head is None or at > user:
            return []
        found = []
        rows, key = self._rows, self._key
        while at <= user:
            if at == user:
                found.append(head)
            head = next(rows, None)
            if head is None:
                break
            at = key(head[0])
        self._head, self._at = head, at
        return found


def _raw(column: Any) -> Any:
    """A user id column as the driver gives it (no conversion per row; see _id_key)."""
    return type_coerce(column, NullType()).label("user_id")


def _in_range(column: Any, ranged: bool) -> Any:
    """`column` (a user id) in the range :lo to :hi (both included), or true when not `ranged`."""
    return column.between(bindparam("lo"), bindparam("hi")) if ranged else true()


@functools.cache
def _users_statement(names: tuple[str, ...], emails: bool, ranged: bool = False) -> Any:
    """The account's users in id order, the columns `names` (the id first) and, with `emails`,
    each of their e-mails last (a row each, in the order profiles.stored gives them: the
    primary first, then by position); `ranged`: those whose id is in :lo to :hi. Built once."""
    table = User.__table__
    statement = select(_raw(table.c.id), *(table.c[name] for name in names[1:]))
    chosen = (table.c.account_id == bindparam("account"), _in_range(table.c.id, ranged))
    if not emails:
        return statement.where(*chosen).order_by(table.c.id)
    return (
        statement.add_columns(UserEmail.value)
        .outerjoin(UserEmail, UserEmail.user_id == table.c.id)
        .where(*chosen)
        .order_by(table.c.id, UserEmail.primary.desc(), UserEmail.position, UserEmail.value)
    )


@functools.cache
def _phones_statement(ranged: bool = False) -> Any:
    """The account's users' phone numbers by user id, each user's by position (as
    profiles.stored gives them); built once."""
    return (
        select(_raw(UserPhoneNumber.user_id), UserPhoneNumber.value)
        .select_from(User)
        .join(UserPhoneNumber, UserPhoneNumber.user_id == User.id)
        .where(User.account_id == bindparam("account"), _in_range(User.id, ranged))
        .order_by(User.id, UserPhoneNumber.position, UserPhoneNumber.value)
    )


@functools.cache
def _held_statement(ranged: bool = False) -> Any:
    """Role, environments, groups and grants of the account's users in one statement, by user
    id and, a user's, by value (the profile's SCIM groups come by name, as profiles.scim_groups
    gives them); each row's kind is its index in KINDS. Built once (building the union costs
    more than running it)."""
    account: Any = bindparam("account")
    text = String()

    def kind(name: str) -> Any:
        return literal_column(str(KINDS.index(name)), Integer())

    held_rows = union_all(
        select(
            RoleAssignment.user_id.label("user_id"),
            kind("role").label("kind"),
            RoleAssignment.role.cast(text).label("value"),
            RoleAssignment.provenance.label("provenance"),
        )
        .join(User, User.id == RoleAssignment.user_id)
        .where(User.account_id == account, _in_range(User.id, ranged)),
        select(
            EnvironmentAccess.user_id,
            kind("environments"),
            Environment.name,  # NULL: every environment
            EnvironmentAccess.provenance,
        )
        .select_from(EnvironmentAccess)
        .join(User, User.id == EnvironmentAccess.user_id)
        .outerjoin(Environment, Environment.id == EnvironmentAccess.environment_id)
        .where(User.account_id == account, _in_range(User.id, ranged)),
        select(  # through the account's groups: the unique index holds every column read
            Membership.user_id,
            kind("groups"),
            Group.display_name,
            Membership.provenance,
        )
        .select_from(Group)
        .join(Membership, Membership.group_id == Group.id)
        .where(Group.account_id == account, _in_range(Membership.user_id, ranged)),
        select(
            Grant.user_id,
            kind("grants"),
            Environment.name
            + ":"
            + Grant.kind.cast(text)
            + ":"
            + Grant.path
            + ":"
            + Grant.level.cast(text),
            Grant.provenance,
        )
        .join(Environment, Environment.id == Grant.environment_id)
        .where(
            Grant.account_id == account,
            Grant.user_id.is_not(None),
            _in_range(Grant.user_id, ranged),
        ),
    ).subquery()
    c = held_rows.c
    return select(_raw(c.user_id), c.kind, c.value, c.provenance).order_by(c.user_id, c.value)


def _access(held: Held) -> Access:
    """The Access these rows give (groups compared folded, shown as stored)."""
    now = Access()
    for kind, value, kept in held:
        if kind == "role":
            now.role, now.role_manual = value, kept
            continue
        key = fold(value) if kind == "groups" else value
        getattr(now, kind).add(key)
        if kept:
            getattr(now, f"kept_{kind}").add(key)
        if kind == "groups":
            now.group_names.setdefault(key, value)
    return now


def _after(now: Access, decision: policies.Decision, names: set[str]) -> Access:
    """The access `access.apply` leaves: kept rows plus what the decision gives."""
    envs = (
        {"all"}
        if decision.environments == policies.ALL_ENVIRONMENTS
        else {e for e in decision.environments if e in names}
    )
    return Access(
        role=now.role if now.role_manual else decision.role,
        role_manual=now.role_manual,
        environments=now.kept_environments | envs,
        groups=now.kept_groups | {fold(g.name) for g in decision.groups},
        group_names={**now.group_names, **{fold(g.name): g.name for g in decision.groups}},
        grants=now.kept_grants
        | {
            f"{g.environment}:{g.kind}:{g.path}:{g.level}"
            for g in decision.grants
            if g.subject == "user" and g.environment in names
        },
    )


def _own(found: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """A copy of what _diff found, with lists of its own (spelt out: the copy is made for
    every changed user)."""
    return {
        "environments": [*found["environments"]],
        "groups": [*found["groups"]],
        "grants": [*found["grants"]],
    }


def _diff(now: Access, after: Access) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What `after` gains and loses against `now`, each sorted (groups by their shown name)."""
    gains = {
        k: sorted(getattr(after, k) - getattr(now, k)) for k in ("environments", "groups", "grants")
    }
    losses = {
        k: sorted(getattr(now, k) - getattr(after, k)) for k in ("environments", "groups", "grants")
    }
    if "all" in after.environments:  # `all` covers every environment: moving to it loses none
        losses["environments"] = []
    names = {**now.group_names, **after.group_names}
    for found in (gains, losses):
        found["groups"] = sorted(names.get(g, g) for g in found["groups"])
    return gains, losses


GroupKey = tuple[str, int, str, str, str]  # group's folded name, environment id, kind, path, rule


def _group_grant_diff(
    db: Session, account: Account, policy: policies.Policy
) -> tuple[dict[GroupKey, str], dict[GroupKey, Grant], dict[str, str]]:
    """The group grants `policy` declares (key -> level), the policy group grants the account's
    groups hold now (key -> row), and each group's name by its folded one. One row per key: a
    changed level is an update of that row (an insert beside it breaks the unique index)."""
    envs = (
        dict(
            db.execute(
                select(Environment.name, Environment.id).where(Environment.account_id == account.id)
            ).all()
        )
        if policy.group_grants
        else {}
    )
    wanted: dict[GroupKey, str] = {}
    names: dict[str, str] = {}
    for group_name, specs in policy.group_grants.items():
        for spec in specs:
            if spec.environment not in envs:
                continue
            name = spec.group or group_name
            names.setdefault(fold(name), name)
            key = (fold(name), envs[spec.environment], spec.kind, spec.path, POLICY + spec.rule)
            wanted[key] = spec.level
    have: dict[GroupKey, Grant] = {}
    for grant, group_key, display in db.execute(
        select(Grant, Group.display_name_key, Group.display_name)
        .join(Group, Group.id == Grant.group_id)
        .where(Grant.account_id == account.id, Grant.provenance.startswith(POLICY))
    ).all():
        have[(group_key, grant.environment_id, grant.kind, grant.path, grant.provenance)] = grant
        names[group_key] = display  # the stored group's own spelling
    return wanted, have, names


def _changed(wanted: dict[GroupKey, str], have: dict[GroupKey, Grant]) -> list[GroupKey]:
    return sorted(
        key
        for key in have.keys() | wanted.keys()
        if (have[key].level if key in have else None) != wanted.get(key)
    )


@dataclass(frozen=True)
class GroupGrantChange:
    """A policy group grant that applying would add (before None), remove (after None) or
    re-level: every member of the group holds it."""

    group: str
    members: int
    environment: str
    kind: str
    path: str
    before: str | None
    after: str | None
    provenance: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        level = f"{self.before or '(none)'} -> {self.after or '(none)'}"
        return (
            f"group {self.group} (members now: {self.members}): {self.environment} {self.kind} "
            f"{self.path} {level} [{self.provenance}]"
        )


def group_grant_changes(
    db: Session, account: Account, policy: policies.Policy
) -> list[GroupGrantChange]:
    """What `policy apply` would change in the account's policy group grants (read only)."""
    wanted, have, names = _group_grant_diff(db, account, policy)
    changed = _changed(wanted, have)
    if not changed:
        return []
    envs = dict(
        db.execute(
            select(Environment.id, Environment.name).where(Environment.account_id == account.id)
        ).all()
    )
    members = dict(
        db.execute(
            select(Group.display_name_key, func.count(func.distinct(Membership.user_id)))
            .join(Membership, Membership.group_id == Group.id)
            .where(
                Group.account_id == account.id,
                Group.display_name_key.in_({key[0] for key in changed}),
            )
            .group_by(Group.display_name_key)
        ).all()
    )
    return [
        GroupGrantChange(
            names[key[0]],
            members.get(key[0], 0),
            envs[key[1]],
            key[2],
            key[3],
            have[key].level if key in have else None,
            wanted.get(key),
            key[4],
        )
        for key in changed
    ]


def _reconcile_group_grants(
    db: Session, account: Account, policy: policies.Policy, *, actor: str
) -> None:
    """Group grants the policy declares exist at its levels; policy group grants it no longer
    declares go. One audit event per group changed (its grants before and after)."""
    wanted, have, names = _group_grant_diff(db, account, policy)
    changed = _changed(wanted, have)
    groups = {
        k: access.policy_group(db, account, names[k]) for k in sorted({c[0] for c in changed})
    }
    before = {k: access.group_grants(db, group) for k, group in groups.items()}
    for key in changed:
        if key not in wanted:
            db.delete(have[key])
        elif key in have:
            have[key].level = wanted[key]
        else:
            db.add(
                Grant(
                    account_id=account.id,
                    group_id=groups[key[0]].id,
                    environment_id=key[1],
                    kind=key[2],
                    path=key[3],
                    level=wanted[key],
                    provenance=key[4],
                )
            )
    for k, group in groups.items():
        access.record_group_grants(
            db, account.id, group, before[k], actor=actor, action=access.GROUP_POLICY
        )


def decision_json(decision: policies.Decision) -> dict[str, Any]:
    """A Decision as plain data: what it gives, by which rule, and the explanation."""
    envs = decision.environments
    return {
        "role": {"value": decision.role, "rule": decision.role_rule},
        "environments": {
            "value": envs if isinstance(envs, str) else list(envs),
            "rule": decision.environments_rule,
        },
        "groups": [{"name": g.name, "rule": g.rule} for g in decision.groups],
        "grants": [
            {
                "subject": g.group or "user",
                "environment": g.environment,
                g.kind: g.path,
                "level": g.level,
                "rule": g.rule,
            }
            for g in decision.grants
        ],
        "errors": list(decision.errors),
        "explanation": [
            {"rule": s.rule, "matched": s.matched, "detail": s.detail} for s in decision.explanation
        ],
    }
