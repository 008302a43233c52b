"""The one write path for users: Profile -> policy Decision -> store, in one transaction, audited.

SAML just-in-time login, SCIM, the CLI and policy re-evaluation all call `provision`. It matches
the profile to a stored user (by id, SAML identity, externalId, then userName; never by e-mail),
creates or updates the user, applies the account policy's Decision with provenance on every row,
and appends an audit event with the state before and after. Re-applying a Decision replaces only
rows whose provenance is `policy:*`; `scim`, `saml` and `manual` rows are never touched here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Row,
    Select,
    String,
    Table,
    bindparam,
    cast,
    false,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session

import policies
from bridge import (
    access,
    accounts,
    audit,
    driver,
    guards,
    metrics,
    profiles,
    sessions,
    tracing,
    values,
)
from bridge.access import access_of
from bridge.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from bridge.identifiers import identifier_problem
from bridge.models import (
    Account,
    IdentityProvider,
    SamlIdentity,
    ScimToken,
    User,
    UserAddress,
    UserEmail,
    UserPhoneNumber,
    fold,
    held,
    loaded,
    read_only,
    utcnow,
)
from bridge.policy import (
    Choice,
    Known,
    PolicyRegistry,
    environments_of,
    known_of,
    policy_for,
    read_with_account,
    with_known,
)
from bridge.store import ATTEMPT, UNLOOKED, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

SCALAR_FIELDS = frozenset(
    {
        "external_id",
        "active",
        "formatted_name",
        "family_name",
        "given_name",
        "middle_name",
        "honorific_prefix",
        "honorific_suffix",
        "display_name",
        "nick_name",
        "profile_url",
        "title",
        "user_type",
        "preferred_language",
        "locale",
        "timezone",
        "employee_number",
        "cost_center",
        "organization",
        "division",
        "department",
        "manager_id",
    }
)
MULTI_VALUED: dict[str, type[UserEmail | UserPhoneNumber | UserAddress]] = {
    "emails": UserEmail,
    "phone_numbers": UserPhoneNumber,
    "addresses": UserAddress,
}
MAX_ENTRIES = 100  # values of one multi-valued attribute (README: limits)
ENTRY_KEYS = {
    "emails": ("value", "type", "primary", "display"),
    "phone_numbers": ("value", "type", "primary", "display"),
    "addresses": (
        "type",
        "primary",
        "formatted",
        "street_address",
        "locality",
        "region",
        "postal_code",
        "country",
    ),
}


USERS: Table = User.__table__  # type: ignore[assignment]
SAML_IDENTITIES: Table = SamlIdentity.__table__  # type: ignore[assignment]
IDPS: Table = IdentityProvider.__table__  # type: ignore[assignment]
ENTRY_TABLES: dict[str, Table] = {
    key: model.__table__  # type: ignore[misc]
    for key, model in MULTI_VALUED.items()
}


class NewUser:
    """A user this transaction creates, as plain values: the `users` row (every column an
    attribute, as on User) and each multi-valued attribute's rows as dicts. `insert` writes
    them with one Core INSERT per table, rather than through the ORM's unit of work, whose
    flush costs several times the SQL it sends; a reply is built from the same values."""

    id: uuid.UUID
    user_name: str
    user_name_key: str | None
    external_id: str | None
    active: bool | None
    manager_id: str | None
    saml_attributes: dict[str, Any] | None
    created: datetime
    last_modified: datetime
    version: int

    def __init__(self, account_id: int) -> None:
        for column in USERS.columns:
            setattr(self, column.key, None)
        self.id, self.account_id, self.active, self.version = uuid.uuid4(), account_id, True, 1
        self.emails: list[dict[str, Any]] = []
        self.phone_numbers: list[dict[str, Any]] = []
        self.addresses: list[dict[str, Any]] = []

    def insert(self, db: Session) -> None:
        """Write the user and their entries (each row checked first, as a flush checks it)."""
        self.created = self.last_modified = utcnow()
        row = {column.key: getattr(self, column.key) for column in USERS.columns}
        if row["saml_attributes"] is None:
            del row["saml_attributes"]  # SQL NULL, as the ORM leaves an unset JSON column
        # queued, as are the rows inserted after them (their access), until the transaction's
        # audit event: on PostgreSQL one statement writes them all (bridge.values)
        values.insert_rows(db, USERS, [row], later=True)
        for key in MULTI_VALUED:
            values.insert_rows(db, ENTRY_TABLES[key], getattr(self, key))
        metrics.count_created(db, "user")

    def profile(self, trigger: policies.Profile) -> policies.Profile:
        """What `profiles.stored` gives for this user once written (in no group yet)."""
        emails = sorted(self.emails, key=lambda e: (not e["primary"], e["position"]))
        return profiles.build(
            {field: getattr(self, field) for field in profiles.STORED_FIELDS},
            emails=tuple(e["value"] for e in emails),
            phones=tuple(p["value"] for p in self.phone_numbers),
            groups=(),
            trigger=trigger,
        )


@dataclass(frozen=True)
class Outcome:
    """What a provisioning call did."""

    user_id: uuid.UUID
    created: bool
    changed: bool
    version: int
    decision: policies.Decision | None
    policy_key: str | None = None  # the policy applied as it decided (no error, no guard held)
    active: bool = True
    user: User | NewUser | None = None  # the user as written (a User's collections loaded)

    @property
    def created_as_written(self) -> NewUser | None:
        """The user this call created, when what was written is all a read of them would show;
        None when a read must look more up (their manager's name, groups a policy put them in)
        or nobody was created."""
        user = self.user
        if not isinstance(user, NewUser) or user.manager_id is not None:
            return None
        if self.decision is not None and self.decision.ok and self.decision.groups:
            return None
        return user


ProfileBuilder = Callable[[Session, User], policies.Profile]
SETTLED = "bridge.settled"  # db.info: user id -> key of the policy applied as it decided


def provision(
    store: Store,
    account_id: int,
    profile: policies.Profile,
    *,
    actor: str,
    user_id: uuid.UUID | None = None,
    create: bool = True,
    must_create: bool = False,
    account_read: AccountRead | None = None,
) -> Outcome:
    """Create or update the user `profile` describes and apply the account's policy.

    `user_id` names the user to update (NotFound if absent); `create=False` refuses unknown users;
    `must_create=True` refuses a profile that matches a stored user (Conflict); `account_read`:
    the account as read with the request's token (AccountRead).
    """

    return _write_guarded(
        store,
        lambda db: provision_in(
            db,
            store.policies,
            account_id,
            profile,
            actor=actor,
            user_id=user_id,
            create=create,
            must_create=must_create,
            account_read=account_read,
        ),
    )


def provision_in(
    db: Session,
    registry: PolicyRegistry | None,
    account_id: int,
    profile: policies.Profile,
    *,
    actor: str,
    user_id: uuid.UUID | None = None,
    create: bool = True,
    must_create: bool = False,
    account_read: AccountRead | None = None,
) -> Outcome:
    """`provision` inside the caller's transaction (a SAML login writes its replay-cache entry,
    the user and the session together)."""
    account, known = account_and_policy_in(db, account_id, account_read)
    if must_create and user_id is None and profile.idp is None and db.info.get(ATTEMPT) == 1:
        # A profile that must create matches no one or is refused: its first attempt inserts
        # without looking, and the unique keys of userName and externalId refuse one that
        # matches (as they refuse a concurrent insert of the same user); the work is then
        # retried, and the retry looks (the match read as keys only) to say which is taken.
        db.info[UNLOOKED] = True
        row, linked = None, None
    else:
        row, linked = _find(db, account, profile, user_id, keys=must_create and user_id is None)
    if row is None:
        if user_id is not None or not create:
            raise NotFound(f"no user {profile.user_name!r} in account {account.slug!r}")
        new = NewUser(account.id)
        return _write(db, account, new, profile, registry=registry, actor=actor, known=known)
    if must_create:
        taken = "externalId" if row.user_name_key != fold(profile.user_name) else "userName"
        raise Conflict(f"a user with this {taken} already exists")
    user = _stored(db, row)
    return _write(
        db, account, user, profile, registry=registry, actor=actor, known=known, linked=linked
    )


def update_user(
    store: Store,
    account_id: int,
    user_id: uuid.UUID,
    build: ProfileBuilder,
    *,
    actor: str,
    if_version: int | None = None,
    account_read: AccountRead | None = None,
) -> Outcome:
    """Update a stored user to the profile `build` makes from its current state.

    `build` runs inside the transaction, on the state as it is now, and again if a concurrent
    writer forces a retry: a read-modify-write (SCIM PATCH) never loses another writer's change.
    `account_read`: the account as read with the request's token (AccountRead).
    """

    def work(db: Session) -> Outcome:
        account, known = account_and_policy_in(db, account_id, account_read)
        user = _by_id(db, account, user_id)
        if user is None:
            raise NotFound(f"no user {user_id} in account {account.slug!r}")
        if if_version is not None and user.version != if_version:
            raise PreconditionFailed(f"user {user_id} is at version {user.version}")
        profile = build(db, user)
        return _write(db, account, user, profile, registry=store.policies, actor=actor, known=known)

    return _write_guarded(store, work)


def _write_guarded(store: Store, work: Callable[[Session], T]) -> T:
    """`store.write(work)`; a guard's refusal (guards.Refused) rolls the whole change back and
    is then audited in a transaction of its own."""
    try:
        return store.write(work)
    except guards.Refused as refused:
        store.write(refused.record)
        raise


def reevaluate(
    db: Session,
    account: Account,
    user_ids: Iterable[uuid.UUID],
    *,
    registry: PolicyRegistry | None,
    actor: str,
    changed_input: str | None = None,
    known: Known | None = None,
) -> int:
    """Apply the policy again to stored users whose inputs changed; return how many changed.

    Runs inside the caller's transaction (a group membership change re-evaluates its members).
    With `changed_input` (a SCIM path such as "groups"), a policy none of whose inputs read it
    cannot decide differently, so nobody is re-evaluated. `known`: the policy's version and
    environments as read with the account.
    """
    changed = 0
    choice = policy_for(db, account, registry, known=known)
    if changed_input is not None and (
        choice.policy is None or not policies.reads_scim_path(choice.policy, changed_input)
    ):
        return 0
    for user_id in sorted(user_ids):  # locked in id order, as _find locks: no deadlock
        user = _by_id(db, account, user_id)
        if user is None:
            continue
        before = snapshot(db, user)
        _, now = _decide(
            db, account, user, choice, profiles.stored(db, user), actor=actor, known=before
        )
        changed += _record(
            db, account, user, before, actor=actor, action="user.reevaluate", access_now=now
        )
    return changed


def reapply(
    db: Session, account: Account, user: User, *, registry: PolicyRegistry | None, actor: str
) -> Choice:
    """Apply the account's policy to one user again, inside the caller's transaction (after a
    manual change: a cleared manual role goes back to the policy's). Returns the policy used."""
    choice = policy_for(db, account, registry)
    _decide(db, account, user, choice, profiles.stored(db, user), actor=actor)
    return choice


def record_change(
    db: Session,
    account: Account,
    user: User,
    before: dict[str, Any] | None,
    *,
    actor: str,
    action: str,
) -> int:
    """Audit a change to a user (next version, before and after), if there was one."""
    return _record(db, account, user, before, actor=actor, action=action)


@tracing.step("provisioning.policy")
def _decide(
    db: Session,
    account: Account,
    user: User | NewUser,
    choice: Choice,
    profile: policies.Profile,
    *,
    actor: str,
    known: dict[str, Any] | None = None,
) -> tuple[policies.Decision | None, dict[str, Any] | None]:
    """Evaluate and apply the policy; on any error keep the user's access exactly as it was.
    db.info[SETTLED] keeps, per user, the key of a policy applied exactly as it decided (None
    after an error or a guard's hold: their next login must evaluate again). Returns the
    Decision applied and the user's access now as `access.access_of` would read it, when that
    is known without reading it: for a NewUser, and for a stored user whose `snapshot` taken
    earlier in this transaction is `known` (see access.apply); else None."""
    decision = policies.evaluate(choice.policy, profile) if choice.policy is not None else None
    result = "no_policy" if decision is None else "applied" if decision.ok else "error"
    metrics.on_commit(db, metrics.child(metrics.POLICY_EVALUATIONS, result).inc)
    db.info.setdefault(SETTLED, {})[user.id] = None
    if choice.policy is not None and decision is not None and decision.ok:
        if isinstance(user, NewUser):  # no role yet, so no guard can keep one for them
            db.info[SETTLED][user.id] = choice.key
            return decision, access.create(db, account, user.id, decision, actor=actor)
        held = guards.hold(db, account, user, choice.policy, decision, actor=actor)
        now = access.apply(
            db, account, user, held, actor=actor, known=None if known is None else known["access"]
        )
        if held is decision:
            db.info[SETTLED][user.id] = choice.key
        return held, now
    why = list(decision.errors) if decision is not None else [choice.error or "no policy"]
    log.warning("policy not applied to user %s: %s", user.id, "; ".join(why))
    db.flush()
    audit.record(
        db,
        account.id,
        actor=actor,
        action="user.policy_error",
        target_type="user",
        target_id=str(user.id),
        after={"policy": choice.source, "errors": why, "access": "kept"},
    )
    if isinstance(user, NewUser):
        return decision, access.no_access()
    return decision, None if known is None else known["access"]  # kept as it was


def login_digest(
    profile: policies.Profile, policy_key: str, environments: list[Any], version: int
) -> str:
    """What a SAML login's provisioning depends on, hashed: the profile it was given, the policy
    (by key), the account's environments and the stored user's version (bumped by every change
    to the user or their access, bridge.models.User.touch)."""
    body = {
        "user_name": profile.user_name,
        "external_id": profile.external_id,
        "idp": None if profile.idp is None else [profile.idp.entity_id, profile.idp.name_id],
        "fields": profile.fields,
        "attributes": {k: list(v) for k, v in profile.attributes.items()},
        "groups": list(profile.groups),
        "policy": policy_key,
        "environments": environments,
        "version": version,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def unchanged_login(
    db: Session, registry: PolicyRegistry | None, account: Account, profile: policies.Profile
) -> tuple[uuid.UUID | None, AccountRead | None]:
    """The active user a returning SAML login names, when nothing its provisioning depends on
    changed since their last login (`remember_login`): then there is nothing to write. None
    sends the login down the one write path (`provision_in`) with what this read of the
    account (AccountRead: `provision_in` need not read it again; a first login's read has the
    account and no user).

    The user's row is share-locked (PostgreSQL): a concurrent change to them waits for this
    login, or this login for it, as on the write path. On SQLite the read has the account's
    row, read under the write lock, and the chain's head is taken from it (audit.read_head); on
    PostgreSQL the account as the request read it before its transaction does (AccountRead)."""
    if profile.idp is None:
        return None, None
    idp = {"entity_id": profile.idp.entity_id, "name_id": profile.idp.name_id}
    sqlite = db.get_bind().dialect.name == "sqlite"
    statement = _RETURNING_WITH_ACCOUNT if sqlite else _RETURNING
    rows = list(db.connection().execute(statement, {"account_id": account.id, **idp}))
    if not rows:
        return None, None
    row = rows[0]
    read: AccountRead | None = None
    if sqlite:
        audit.read_head(db, account.id, row.audit_seq, row.audit_head)
        read = AccountRead(rows, in_transaction=True)
    elif db.info.get(ATTEMPT) == 1:  # as a SCIM write's token read: a retry reads it again
        read = AccountRead(rows, account=account)
    if row.user_id is None or row.login_digest is None or row.user_active is False:
        return None, read
    # the version and environments as read with the user, in this transaction
    choice = policy_for(db, account, registry, known=known_of(rows))
    if choice.policy is None or not choice.key:
        return None, read
    digest = login_digest(
        profile, choice.key, [list(e) for e in environments_of(db, account.id)], row.user_version
    )
    return (row.user_id, None) if digest == row.login_digest else (None, read)


def remember_login(
    db: Session, account: Account, profile: policies.Profile, outcome: Outcome
) -> None:
    """After a login went down the write path: what it depended on, for `unchanged_login`;
    nothing (so the next login writes again) when the policy was not applied as it decided."""
    if profile.idp is None:
        return
    digest = None
    if outcome.policy_key:
        envs = [list(e) for e in environments_of(db, account.id)]
        digest = login_digest(profile, outcome.policy_key, envs, outcome.version)
    # with the login's rows, by its audit event (on PostgreSQL inside that event's statement)
    values.queue_statement(
        db,
        _REMEMBER,
        {
            "b_user": outcome.user_id,
            "b_account": account.id,
            "b_entity": profile.idp.entity_id,
            "b_name": profile.idp.name_id,
            "b_digest": digest,
        },
    )


# unchanged_login's and remember_login's statements, built once (a login runs them inside its
# write transaction: on SQLite, under the database's one write lock). An UPDATE's bind names
# must differ from its columns' (b_*).
ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
# _RETURNING is the login's user, if the account has them (their row share-locked on
# PostgreSQL: a locking clause applies inside a subquery, not to the nullable side of an outer
# join), outer-joined to their account, with what policy_for reads of it (with_known): one row,
# the user's columns None when there is no such user. On SQLite with the account's row
# (_RETURNING_WITH_ACCOUNT), read under the write lock.
_LOGIN_USER = (
    select(
        User.id.label("user_id"),
        User.version.label("user_version"),
        User.active.label("user_active"),
        SamlIdentity.login_digest,
    )
    .join(SamlIdentity, SamlIdentity.user_id == User.id)
    .join(IdentityProvider, IdentityProvider.id == SamlIdentity.idp_id)
    .where(
        User.account_id == bindparam("account_id"),
        IdentityProvider.entity_id == bindparam("entity_id"),
        SamlIdentity.name_id == bindparam("name_id"),
    )
    .with_for_update(read=True, of=User)
    .subquery("login_user")
)


def _returning(*account_columns: Any) -> Select[*tuple[Any, ...]]:
    return with_known(
        select(*_LOGIN_USER.c, *account_columns)
        .select_from(ACCOUNTS.outerjoin(_LOGIN_USER, true()))
        .where(ACCOUNTS.c.id == bindparam("account_id")),
        ACCOUNTS.c.id,
    )


_RETURNING = _returning()
_RETURNING_WITH_ACCOUNT = _returning(*ACCOUNTS.c)
_REMEMBER = (  # Core, on the table: the ORM's UPDATE rebuilt the statement at every login
    update(SAML_IDENTITIES)
    .where(
        SAML_IDENTITIES.c.user_id == bindparam("b_user"),
        SAML_IDENTITIES.c.name_id == bindparam("b_name"),
        SAML_IDENTITIES.c.idp_id
        == select(IDPS.c.id)
        .where(
            IDPS.c.account_id == bindparam("b_account"),
            IDPS.c.entity_id == bindparam("b_entity"),
        )
        .scalar_subquery(),
    )
    .values(login_digest=bindparam("b_digest"))
)


def verified_email_owner(
    db: Session, account: Account, profile: policies.Profile
) -> uuid.UUID | None:
    """The one user whose e-mail matches the profile's, only on a domain the account verified:
    how a first SAML login may join a user made by hand. E-mail alone never matches otherwise."""
    emails = [e["value"] for e in profile.fields.get("emails", [])] or (
        [profile.user_name] if "@" in profile.user_name else []
    )
    verified = {d.lower() for d in account.verified_domains}
    for email in emails:
        if email.rpartition("@")[2].lower() not in verified:
            continue
        found = set(
            db.scalars(
                select(UserEmail.user_id)
                .join(User, User.id == UserEmail.user_id)
                .where(User.account_id == account.id, UserEmail.value_key == fold(email))
            )
        )
        if len(found) == 1:
            return found.pop()
    return None


def delete_user(
    store: Store,
    account_id: int,
    user_id: uuid.UUID,
    *,
    actor: str,
    if_version: int | None = None,
) -> None:
    """Remove a user with their memberships, grants, identities and sessions."""

    def work(db: Session) -> None:
        account = account_in(db, account_id)
        user = _by_id(db, account, user_id)
        if user is None:
            raise NotFound(f"no user {user_id} in account {account.slug!r}")
        if if_version is not None and user.version != if_version:
            raise PreconditionFailed(f"user {user_id} is at version {user.version}")
        if user.active is not False:
            policy = policy_for(db, account, store.policies).policy
            guards.keep_active_holder(db, account, user, policy, change="delete", actor=actor)
        before = snapshot(db, user)
        db.delete(user)
        audit.record(
            db,
            account.id,
            actor=actor,
            action="user.delete",
            target_type="user",
            target_id=str(user_id),
            before=before,
        )

    _write_guarded(store, work)


@tracing.step("provisioning.write")
def _write(
    db: Session,
    account: Account,
    user: User | NewUser,
    profile: policies.Profile,
    *,
    registry: PolicyRegistry | None,
    actor: str,
    known: Known | None = None,
    linked: bool | None = None,
) -> Outcome:
    """Write `profile` onto `user` (new or stored), apply the policy, audit the difference
    (`known`: the policy's version and environments as read with the account; `linked`: whether
    the stored user is linked to the profile's IdP identity, when `_find` found that out)."""
    stored = None if isinstance(user, NewUser) else user
    is_new = stored is None
    before = None if stored is None else snapshot(db, stored)
    was_active = user.active is not False
    # A new user: `_find` just looked for their userName, externalId and IdP identity in this
    # transaction and found none of them, or a SCIM create did not look (provision_in); either
    # way the unique keys refuse a taken one (a concurrent insert too), and the work is
    # retried. They have no rows yet: none of that is read again, and what is written is what
    # they are (their access included: nothing is read back).
    with db.no_autoflush:
        _set_identity(db, account, user, profile, fresh=is_new)
        free = profile.external_id if is_new else None
        _set_fields(db, account, user, profile.fields, free_external_id=free)
        if profile.source == policies.Source.SAML:  # kept so a policy can be re-applied later
            user.saml_attributes = profiles.saml_state(profile)
    touched = False
    if isinstance(user, NewUser):
        user.insert(db)
    elif before is not None and _state(user, before["access"]) != before:
        user.touch()  # it changes, and is audited: one UPDATE of its row, new version included
        touched = True
    _link_identity(db, account, user.id, profile.idp, fresh=is_new, linked=linked)
    choice = policy_for(db, account, registry, known=known)
    deactivated = stored is not None and was_active and stored.active is False
    if stored is not None and deactivated:
        guards.keep_active_holder(
            db, account, stored, choice.policy, change="deactivate", actor=actor
        )
    if isinstance(user, NewUser):
        seen = user.profile(profile)
    else:  # their SCIM groups are read only for a policy that reads them
        reads = choice.policy is not None and policies.reads_scim_path(choice.policy, "groups")
        seen = profiles.stored(db, user, profile, groups=None if reads else ())
    decision, written = _decide(db, account, user, choice, seen, actor=actor, known=before)
    if deactivated:
        sessions.end_for_user(db, user.id)  # suspension takes effect at once
    if stored is None:
        audit.record(
            db,
            account.id,
            actor=actor,
            action="user.create",
            target_type="user",
            target_id=str(user.id),
            after=_state(user, written or access.no_access()),
        )
        changed = True
    else:
        changed = bool(
            _record(
                db,
                account,
                stored,
                before,
                actor=actor,
                action="user.update",
                access_now=written,
                touched=touched,
            )
        )
    settled = db.info.get(SETTLED, {}).get(user.id)
    active = user.active is not False
    return Outcome(user.id, is_new, changed, user.version, decision, settled, active, user)


def _record(
    db: Session,
    account: Account,
    user: User,
    before: dict[str, Any] | None,
    *,
    actor: str,
    action: str,
    access_now: dict[str, Any] | None = None,
    touched: bool = False,
) -> int:
    """If the user really changed: next version, and an audit event with before and after.
    `access_now`: their access, when known (not read again); `touched`: the caller already
    moved them to their next version (their own values changed)."""
    after = snapshot(db, user) if access_now is None else _state(user, access_now)
    if after == before:
        return 0
    if not touched:
        user.touch()  # children may be all that changed: the row's version says so too
    audit.record(
        db,
        account.id,
        actor=actor,
        action=action,
        target_type="user",
        target_id=str(user.id),
        before=before,
        after=after,
    )
    return 1


def account_in(db: Session, account_id: int) -> Account:
    """The account as this transaction reads it, with one Core SELECT: an ORM load of the row
    (identity map, loader) cost more than the rest of a SCIM create's reads together. It is not
    added to the session (an Account has no relationships, and nothing here changes it: the
    audit chain's head moves through bridge.audit's own UPDATE)."""
    rows = driver.rows(db.connection(), _ACCOUNT, {"account_id": account_id})
    return _account_of(db, account_id, rows[0] if rows else None)


def account_and_policy_in(
    db: Session, account_id: int, account_read: AccountRead | None = None
) -> tuple[Account, Known]:
    """account_in, with the account's active policy version and environments read in the same
    statement, for a write that applies the policy (`_write(known=...)`): one round trip fewer
    than account_in and policy_for's own read. `account_read`: that read as made earlier (with
    the request's token, or by a SAML login's returning-user check), taken instead by the
    write's first attempt where it may be (AccountRead)."""
    taken = None if account_read is None else account_read.take(db, account_id)
    if taken is not None:
        return taken
    row, known = read_with_account(db, account_id)
    return _account_of(db, account_id, row), known


# A SCIM token's row with its account's and what policy_for reads of it
# (policy.with_known): a write's read of the account made with the request's token. Built once.
ACCOUNT_WITH_TOKEN = with_known(
    accounts.BY_HASH.add_columns(*Account.__table__.c).join(
        Account.__table__, Account.__table__.c.id == ScimToken.account_id
    ),
    Account.__table__.c.id,
)


class AccountRead:
    """The rows of ACCOUNT_WITH_TOKEN a request read (its token's account), for the first
    attempt of its write on PostgreSQL (account_and_policy_in), a round trip fewer than reading
    the account again after BEGIN. The same read: PostgreSQL's READ COMMITTED gives each
    statement of a transaction a snapshot of its own, taken as it starts, and a plain SELECT
    locks nothing, so the account read just before BEGIN is what the transaction's first
    statement would have read a moment later (on PostgreSQL nothing of the audit chain's head
    is taken from it: bridge.audit reads the head under its row lock; a decision on a version,
    environments or default role changed since is made again: policy.DECIDED_HOLDS). Not on
    SQLite, whose write transaction reads the account under its write lock (and takes the
    chain's head from it), unless the rows were read `in_transaction`, the write's own (a SAML
    login's returning-user read on SQLite, provisioning.unchanged_login): then on both. Or the
    rows are only what policy_for reads, and `account` is the account as the request read it
    before its transaction (a SAML login's on PostgreSQL). Taken once: a retried attempt reads
    the account again."""

    def __init__(
        self,
        rows: list[Row[Any]],
        *,
        in_transaction: bool = False,
        account: Account | None = None,
    ) -> None:
        self._rows: list[Row[Any]] | None = rows
        self.in_transaction = in_transaction
        self.account = account

    def take(self, db: Session, account_id: int) -> tuple[Account, Known] | None:
        """The account and what policy_for reads of it, the first time, if they are
        `account_id`'s and may be used on this database; None after."""
        rows, self._rows = self._rows, None
        if not rows or not (self.in_transaction or db.get_bind().dialect.name == "postgresql"):
            return None
        if self.account is not None:
            return (self.account, known_of(rows)) if self.account.id == account_id else None
        if rows[0].id != account_id:
            return None
        return _account_of(db, account_id, rows[0]), known_of(rows)


def _account_of(db: Session, account_id: int, row: Any) -> Account:
    """The account from its row (read in this transaction), or NotFound."""
    if row is None:
        raise NotFound(f"no account {account_id}")
    audit.read_head(db, account_id, row.audit_seq, row.audit_head)
    return read_only(Account, row._mapping)


_ACCOUNT = select(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("account_id"))


def match(
    db: Session, account: Account, profile: policies.Profile, user_id: uuid.UUID | None = None
) -> User | None:
    """The stored user a login or SCIM request with `profile` would update (row locked)."""
    row, _linked = _find(db, account, profile, user_id)
    return None if row is None else _stored(db, row)


@tracing.step("provisioning.match")
def _find(
    db: Session,
    account: Account,
    profile: policies.Profile,
    user_id: uuid.UUID | None,
    *,
    keys: bool = False,
) -> tuple[Row[Any] | None, bool | None]:
    """The stored user this profile describes, as a Core row of all their columns (`keys`: only
    their id, userName key and externalId, for a caller that refuses any match), and whether
    they are linked to the profile's IdP identity (None: not looked up). E-mail alone never
    identifies anyone."""
    # FOR UPDATE OF users: concurrent writers of one user queue on its row (a database lock,
    # released at commit) instead of both rewriting its e-mails from a stale read. Only the
    # user's row: locking the joined IdP row too would deadlock concurrent logins, which hold
    # key-share locks on it through their replay-cache inserts. SQLite's write lock does the same.
    if user_id is not None:
        return _row_by_id(db, account, user_id), None
    key, external = fold(profile.user_name), profile.external_id or None
    params = {"account_id": account.id, "key": key, "external_id": external}
    if profile.idp is not None:
        params |= {"entity_id": profile.idp.entity_id, "name_id": profile.idp.name_id}
    # every key in one round trip: at most a row each (each is unique in the account)
    stmt = _match_statement(profile.idp is not None, external is not None, keys)
    found: list[Row[Any]] = []
    for row in values.flushed(db).execute(stmt, params).all():
        if row.linked:
            return row, True
        found.append(row)
    linked = None if profile.idp is None else False
    by_external = next((u for u in found if external and u.external_id == external), None)
    if by_external is not None:
        return by_external, linked
    by_name = next((u for u in found if u.user_name_key == key), None)
    if (
        by_name is not None
        and profile.external_id
        and by_name.external_id
        and by_name.external_id != profile.external_id
    ):
        raise Conflict(f"userName {profile.user_name!r} belongs to another externalId")
    return by_name, linked


def _by_id(db: Session, account: Account, user_id: uuid.UUID) -> User | None:
    """The account's user `user_id` (row locked), or None."""
    row = _row_by_id(db, account, user_id)
    return None if row is None else _stored(db, row)


def _row_by_id(db: Session, account: Account, user_id: uuid.UUID) -> Row[Any] | None:
    """The row of the account's user `user_id` (locked), or None."""
    params = {"account_id": account.id, "user_id": user_id}
    return values.flushed(db).execute(_BY_ID, params).first()


def _stored(db: Session, row: Row[Any]) -> User:
    """The User of `row` (every column of theirs, read in this transaction), with their
    e-mails, phone numbers and addresses read by one more statement, persistent in the session
    as the ORM's load would make them (models.loaded): its load with three selectin loads cost
    four ORM statements, each about twice the CPU of the same SQL as Core (a round trip each on
    PostgreSQL). The session's own instance if it holds one, as the ORM's load would answer."""
    same = held(db, User, row.id)
    if same is not None:
        return same
    entries: dict[str, list[Any]] = {key: [] for key in MULTI_VALUED}
    for entry in db.connection().execute(_entries_statement(), {"user_id": row.id}):
        entries[entry.kind].append(read_only(MULTI_VALUED[entry.kind], entry._mapping))
    user = read_only(User, row._mapping)
    return loaded(db, user, **entries)


@functools.cache
def _entries_statement() -> CompoundSelect[Any]:
    """A user's e-mails, phone numbers and addresses in one statement (built once): a row each,
    `kind` naming its collection (MULTI_VALUED), in position order; each table's columns, NULL
    for another's."""
    types: dict[str, Any] = {}
    for table in ENTRY_TABLES.values():
        for column in table.columns:
            types.setdefault(column.key, column.type)
    selects = [
        select(
            literal(kind, String()).label("kind"),
            *(
                table.c[name] if name in table.c else cast(null(), kind_of).label(name)
                for name, kind_of in types.items()
            ),
        ).where(table.c.user_id == bindparam("user_id"))
        for kind, table in ENTRY_TABLES.items()
    ]
    union = union_all(*selects)
    return union.order_by(union.selected_columns.kind, union.selected_columns.position)


_BY_ID = (
    select(USERS)
    .where(USERS.c.account_id == bindparam("account_id"), USERS.c.id == bindparam("user_id"))
    .with_for_update(of=USERS)
)


@functools.cache
def _match_statement(linked: bool, external: bool, keys: bool = False) -> Select[Any]:
    """The users of the account a profile may name: linked to its IdP identity (`linked`), with
    its externalId (`external`), with its userName, each flagged whether it is the linked one
    (all their columns; `keys`: only their id, userName key and externalId). Rows are locked in
    id order, so two writers naming the same users cannot deadlock."""
    users, idps, identities = USERS.c, IDPS.c, SAML_IDENTITIES.c
    match = [users.user_name_key == bindparam("key")]
    if external:
        match.append(users.external_id == bindparam("external_id"))
    is_linked: ColumnElement[bool] = false()
    if linked:
        is_linked = users.id.in_(
            select(identities.user_id)
            .join(IDPS, idps.id == identities.idp_id)
            .where(
                idps.entity_id == bindparam("entity_id"),
                identities.name_id == bindparam("name_id"),
            )
        )
        match.append(is_linked)
    what = (users.id, users.user_name_key, users.external_id) if keys else tuple(users)
    return (
        select(*what, is_linked.label("linked"))
        .where(users.account_id == bindparam("account_id"), or_(*match))
        .order_by(users.id)
        .with_for_update(of=USERS)
    )


def _set_identity(
    db: Session,
    account: Account,
    user: User | NewUser,
    profile: policies.Profile,
    *,
    fresh: bool = False,
) -> None:
    name = profile.user_name.strip()
    if not name:
        raise InvalidInput("userName must not be empty")
    problem = identifier_problem(name) if name != user.user_name else None
    if problem is not None:  # a new or changed name only: stored ones keep working
        raise InvalidInput(f"userName {name!r} {problem}; see RFC 8265 (PRECIS)")
    key = fold(name)
    if key != user.user_name_key and not (fresh and key == fold(profile.user_name)):
        taken = db.scalar(
            select(User.id).where(
                User.account_id == account.id, User.user_name_key == key, User.id != user.id
            )
        )
        if taken is not None:
            raise Conflict(f"userName {name!r} is already taken")
    user.user_name, user.user_name_key = name, key
    if profile.external_id is not None and "external_id" not in profile.fields:
        _set_external_id(
            db, account, user, profile.external_id, fresh=fresh and bool(profile.external_id)
        )


def _set_external_id(
    db: Session, account: Account, user: User | NewUser, value: Any, *, fresh: bool = False
) -> None:
    """externalId names one user of the account (RFC 7643 §3.1): a taken one is a Conflict.
    `fresh`: `_find` looked this value up in this transaction and found no one."""
    if value is not None and value != user.external_id and not fresh:
        taken = db.scalar(
            select(User.id).where(
                User.account_id == account.id, User.external_id == value, User.id != user.id
            )
        )
        if taken is not None:
            raise Conflict("externalId is already taken by another user")
    user.external_id = value


def _set_fields(
    db: Session,
    account: Account,
    user: User | NewUser,
    fields: Mapping[str, Any],
    *,
    free_external_id: str | None = None,
) -> None:
    for key, value in fields.items():
        if key in MULTI_VALUED:
            _set_multi(user, key, value or [])
        elif key == "manager_id":
            _set_manager(db, user, value)
        elif key == "external_id":
            fresh = value is not None and value == free_external_id
            _set_external_id(db, account, user, value, fresh=fresh)
        elif key in SCALAR_FIELDS:
            if key == "active" and value is not None and not isinstance(value, bool):
                raise InvalidInput("active must be true or false")
            if getattr(user, key) != value:
                setattr(user, key, value)
        else:
            raise InvalidInput(f"unknown user field {key!r}")


def _set_multi(user: User | NewUser, key: str, entries: list[Mapping[str, Any]]) -> None:
    keys = ENTRY_KEYS[key]
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput(f"{key} may hold at most {MAX_ENTRIES} values")
    wanted: list[dict[str, Any]] = [{k: entry.get(k) for k in keys} for entry in entries]
    for entry in wanted:
        entry["primary"] = bool(entry["primary"])
        if key != "addresses" and not entry["value"]:
            raise InvalidInput(f"every entry of {key} needs a value")
    if sum(1 for entry in wanted if entry["primary"]) > 1:
        raise InvalidInput(f"at most one entry of {key} may be primary")  # RFC 7643 §2.4
    if isinstance(user, NewUser):  # rows for `NewUser.insert`
        rows_of = []
        for position, entry in enumerate(wanted):
            row = {**entry, "user_id": user.id, "position": position}
            if key == "emails":
                row["value_key"] = fold(entry["value"])
            rows_of.append(row)
        setattr(user, key, rows_of)
        return
    current = getattr(user, key)
    if _entries(user, key) == wanted:
        return
    model = MULTI_VALUED[key]
    rows = []
    for position, entry in enumerate(wanted):
        extra = {"value_key": fold(entry["value"])} if model is UserEmail else {}
        rows.append(model(position=position, **entry, **extra))
    current[:] = rows


def _set_manager(db: Session, user: User | NewUser, manager_id: str | None) -> None:
    """The manager's id as sent: IdPs may name a manager before provisioning them."""
    if manager_id is not None and _same_id(manager_id, user.id):
        raise InvalidInput("a user cannot be their own manager")
    if user.manager_id != manager_id:
        user.manager_id = manager_id


def _same_id(text: str, user_id: uuid.UUID) -> bool:
    """Whether `text` names `user_id` in any spelling a UUID has (case, braces, no dashes)."""
    try:
        return uuid.UUID(text.strip()) == user_id
    except (ValueError, AttributeError):
        return False


def _link_identity(
    db: Session,
    account: Account,
    user_id: uuid.UUID,
    link: policies.IdpLink | None,
    *,
    fresh: bool,
    linked: bool | None = None,
) -> None:
    """Link the IdP identity to the user; `fresh`: a new user, whom `_find` looked this identity
    up for in this transaction (linked to no one); `linked`: a stored user `_find` looked it up
    for, linked to them (True: nothing to write) or to no one (False)."""
    if link is None or linked:
        return
    unknown = f"IdP {link.entity_id!r} is not registered for this account"
    if fresh or linked is False:  # one statement: the INSERT reads the IdP's id (a concurrent
        # link of the identity fails its unique key, and the work is retried); the row checked
        # as a flush would
        row = {"user_id": user_id, "name_id": link.name_id, "created": utcnow()}
        values.check_values(SAML_IDENTITIES, row)
        params = {**row, "account_id": account.id, "entity_id": link.entity_id}
        # with a new user's queued rows; their access is queued after it
        written = values.write_queued(db, _LINK_NEW, params, keep=fresh)
        if written != 1:
            raise InvalidInput(unknown)
        return
    idp_id = db.scalar(
        select(IdentityProvider.id).where(
            IdentityProvider.account_id == account.id,
            IdentityProvider.entity_id == link.entity_id,
        )
    )
    if idp_id is None:
        raise InvalidInput(unknown)
    db.flush()
    current = db.scalar(
        select(SamlIdentity).where(
            SamlIdentity.idp_id == idp_id, SamlIdentity.name_id == link.name_id
        )
    )
    if current is None:
        db.add(SamlIdentity(idp_id=idp_id, user_id=user_id, name_id=link.name_id))
    elif current.user_id != user_id:
        raise Conflict("this IdP identity is linked to another user")


_LINK_NEW = (
    insert(SAML_IDENTITIES)
    .from_select(  # (IdP id by entity ID, user, NameID)
        ["idp_id", "user_id", "name_id", "created"],
        select(
            IdentityProvider.id,
            bindparam("user_id", type_=SAML_IDENTITIES.c.user_id.type),
            bindparam("name_id", type_=SAML_IDENTITIES.c.name_id.type),
            bindparam("created", type_=SAML_IDENTITIES.c.created.type),
        ).where(
            IdentityProvider.account_id == bindparam("account_id"),
            IdentityProvider.entity_id == bindparam("entity_id"),
        ),
    )
    .execution_options(preserve_rowcount=True)
)  # an INSERT's rowcount is not kept otherwise


def snapshot(db: Session, user: User) -> dict[str, Any]:
    """The user's stored state and access as JSON-able data, for audit and change detection."""
    db.flush()
    return _state(user, access_of(db, user))


def _state(user: User | NewUser, user_access: dict[str, Any]) -> dict[str, Any]:
    """`snapshot` of a user whose access is known."""
    state: dict[str, Any] = {"user_name": user.user_name}
    for key in sorted(SCALAR_FIELDS):
        value = getattr(user, key)
        state[key] = str(value) if isinstance(value, uuid.UUID) else value
    for key in MULTI_VALUED:
        state[key] = _entries(user, key)
    state["access"] = user_access
    return state


def _entries(user: User | NewUser, key: str) -> list[dict[str, Any]]:
    """A multi-valued attribute's entries as stored (ENTRY_KEYS), in order."""
    keys = ENTRY_KEYS[key]
    if isinstance(user, NewUser):
        return [{k: row[k] for k in keys} for row in getattr(user, key)]
    return [{k: getattr(row, k) for k in keys} for row in getattr(user, key)]
