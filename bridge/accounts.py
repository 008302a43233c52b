"""Accounts, their environments and their SCIM tokens: created, listed, revoked, audited."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, bindparam, select, update
from sqlalchemy.orm import Session

from bridge import audit, driver, idp_domains
from bridge.errors import Conflict, InvalidInput, NotFound, Unauthorized
from bridge.models import Account, Environment, ScimToken, utcnow
from bridge.store import Store

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
TOKEN_PREFIX = "ibs_"  # noqa: S105 - a marker that helps secret scanners, not a secret
LAST_USED_EVERY = timedelta(minutes=1)  # coarse, so reads do not turn into writes


def get_account(db: Session, slug: str) -> Account:
    """The account with this slug, or NotFound."""
    account = db.scalar(select(Account).where(Account.slug == slug))
    if account is None:
        raise NotFound(f"no account {slug!r}")
    return account


def create_account(store: Store, slug: str, *, name: str | None = None, actor: str) -> Account:
    """A new, empty account."""
    if not SLUG.fullmatch(slug):
        raise InvalidInput(
            f"account slug {slug!r} must be lower-case letters, digits and inner hyphens (max 64)"
        )

    def work(db: Session) -> Account:
        if db.scalar(select(Account.id).where(Account.slug == slug)) is not None:
            raise Conflict(f"account {slug!r} already exists")
        account = Account(slug=slug, name=name or slug)
        db.add(account)
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="account.create",
            target_type="account",
            target_id=slug,
            after={"slug": slug, "name": account.name},
        )
        return account

    return store.write(work)


def add_environment(
    store: Store, slug: str, name: str, *, default: bool = False, actor: str
) -> Environment:
    """A new environment of the account; `default` ones are what the account's defaults give."""
    if not SLUG.fullmatch(name):
        raise InvalidInput(f"environment name {name!r} must be lower-case letters, digits, hyphens")

    def work(db: Session) -> Environment:
        account = get_account(db, slug)
        exists = db.scalar(
            select(Environment.id).where(
                Environment.account_id == account.id, Environment.name == name
            )
        )
        if exists is not None:
            raise Conflict(f"environment {name!r} already exists in account {slug!r}")
        env = Environment(account_id=account.id, name=name, is_default=default)
        db.add(env)
        audit.record(
            db,
            account.id,
            actor=actor,
            action="environment.create",
            target_type="environment",
            target_id=name,
            after={"name": name, "default": default},
        )
        return env

    return store.write(work)


def list_environments(db: Session, slug: str) -> list[Environment]:
    account = get_account(db, slug)
    return list(
        db.scalars(
            select(Environment)
            .where(Environment.account_id == account.id)
            .order_by(Environment.name)
        )
    )


def hash_token(raw: str) -> str:
    """Tokens are 256-bit random values, so one SHA-256 suffices (no slow hash needed)."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: int
    raw: str
    prefix: str


def issue_token(
    store: Store, slug: str, *, label: str = "", actor: str, replace: bool = False
) -> IssuedToken:
    """A new SCIM bearer token. The raw value is returned once; only its hash is stored. With
    `replace`, the account's live tokens of the same label are revoked in the same transaction
    (the demo's token: one live token however often `make run` runs)."""
    return store.write(
        lambda db: issue_token_in(db, slug, label=label, actor=actor, replace=replace)
    )


def issue_token_in(
    db: Session, slug: str, *, label: str = "", actor: str, replace: bool = False
) -> IssuedToken:
    """`issue_token` inside the caller's transaction (a set-up link claims its step with it)."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = raw[: len(TOKEN_PREFIX) + 6]
    account = get_account(db, slug)
    if replace:
        # the account row's lock queues concurrent replacers (PostgreSQL; SQLite's write
        # transactions already queue), so exactly one token stays live
        db.execute(select(Account.id).where(Account.id == account.id).with_for_update())
        for old in db.scalars(
            select(ScimToken).where(
                ScimToken.account_id == account.id,
                ScimToken.label == label,
                ScimToken.revoked.is_(None),
            )
        ):
            old.revoked = utcnow()
            audit.record(
                db,
                account.id,
                actor=actor,
                action="token.revoke",
                target_type="token",
                target_id=str(old.id),
                before={"revoked": None},
                after={"revoked": old.revoked.isoformat(), "replaced": True},
            )
    token = ScimToken(account_id=account.id, label=label, prefix=prefix, token_hash=hash_token(raw))
    db.add(token)
    db.flush()
    audit.record(
        db,
        account.id,
        actor=actor,
        action="token.issue",
        target_type="token",
        target_id=str(token.id),
        after={"label": label, "prefix": prefix},
    )
    return IssuedToken(token.id, raw, prefix)


def list_tokens(db: Session, slug: str) -> list[ScimToken]:
    account = get_account(db, slug)
    return list(
        db.scalars(
            select(ScimToken).where(ScimToken.account_id == account.id).order_by(ScimToken.id)
        )
    )


def revoke_token(store: Store, slug: str, token_id: int, *, actor: str) -> ScimToken:
    """Revoke a token at once; a revoked token authenticates nothing."""

    def work(db: Session) -> ScimToken:
        account = get_account(db, slug)
        token = db.scalar(
            select(ScimToken).where(ScimToken.account_id == account.id, ScimToken.id == token_id)
        )
        if token is None:
            raise NotFound(f"no token {token_id} in account {slug!r}")
        if token.revoked is not None:
            raise Conflict(f"token {token_id} was already revoked")
        token.revoked = utcnow()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="token.revoke",
            target_type="token",
            target_id=str(token_id),
            before={"revoked": None},
            after={"revoked": token.revoked.isoformat()},
        )
        return token

    return store.write(work)


# built once: every SCIM request runs it; columns, not ORM objects (a request needs two ids),
# labelled apart so that a caller may join the resource it reads to it (token_use's `statement`)
BY_HASH = select(
    ScimToken.id.label("token_id"),
    ScimToken.account_id.label("token_account_id"),
    ScimToken.token_hash.label("token_hash"),
    ScimToken.last_used.label("token_last_used"),
    ScimToken.revoked.label("token_revoked"),
).where(ScimToken.token_hash == bindparam("digest"))


@dataclass(frozen=True)
class TokenUse:
    """Who a SCIM request is from: the account and the token it was sent with."""

    account_id: int
    token_id: int


def token_use(
    store: Store,
    raw: str,
    statement: Select[Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[TokenUse, list[Row[Any]]]:
    """The account and token of a bearer token, or Unauthorized. Records when it was last used.

    `statement` is BY_HASH (None), or BY_HASH with more columns outer-joined to the token's
    row (the resources a request reads, bound to the token's account in the statement): one
    round trip for both. The rows read are answered too, each with the token's columns; nothing
    in them beyond the token may be used unless the token is good (this raises first)."""
    digest = hash_token(raw)
    with store.connection() as conn:
        if statement is None:  # built once: it may go straight to the driver
            rows = driver.rows(conn, BY_HASH, {"digest": digest})
        else:
            rows = list(conn.execute(statement, {**(params or {}), "digest": digest}))
    row = rows[0] if rows else None
    # The lookup is by hash, so timing reveals nothing of the token; compare again regardless.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("unknown bearer token")
    if row.token_revoked is not None:
        raise Unauthorized("this bearer token was revoked")
    now = utcnow()
    if row.token_last_used is None or now - row.token_last_used > LAST_USED_EVERY:
        _touch(store, row.token_id, now)
    return TokenUse(row.token_account_id, row.token_id), rows


def authenticate(store: Store, raw: str) -> tuple[Account, TokenUse]:
    """The account a bearer token belongs to (token_use, then the account read)."""
    use, _rows = token_use(store, raw)
    with store.read() as db:
        account = db.get_one(Account, use.account_id)  # a token's account: a foreign key
        db.expunge(account)
    return account, use


def _touch(store: Store, token_id: int, now: datetime) -> None:
    store.write(
        lambda db: db.execute(
            update(ScimToken).where(ScimToken.id == token_id).values(last_used=now)
        )
    )


def list_accounts(db: Session) -> list[Account]:
    return list(db.scalars(select(Account).order_by(Account.slug)))


def set_default_environment(
    store: Store, account_id: int, name: str, default: bool, *, actor: str
) -> Environment:
    """Make an environment one of the account's defaults, or not."""

    def work(db: Session) -> Environment:
        env = db.scalar(
            select(Environment).where(
                Environment.account_id == account_id, Environment.name == name
            )
        )
        if env is None:
            raise NotFound(f"no environment {name!r}")
        if env.is_default != default:
            env.is_default = default
            audit.record(
                db,
                account_id,
                actor=actor,
                action="environment.update",
                target_type="environment",
                target_id=name,
                before={"default": not default},
                after={"default": default},
            )
        return env

    return store.write(work)


MAX_VERIFIED_DOMAINS = 50


def set_verified_domains(
    store: Store, account_id: int, domains: list[str], *, actor: str
) -> list[str]:
    """Make `domains` the account's whole list of verified e-mail domains (audited when it
    changes). An IdP added with `--link-by-email` may join a first login to an existing user
    only through an e-mail address on one of them. Declared by the account's admin, like IdP
    routing domains (`bridge.idp_domains`), not proven in DNS. Returns the list now held."""
    if len(domains) > MAX_VERIFIED_DOMAINS:  # before any work, as the API's model counts
        raise InvalidInput(f"at most {MAX_VERIFIED_DOMAINS} verified domains per account")
    wanted = sorted({idp_domains.normalize(d) for d in domains})

    def work(db: Session) -> list[str]:
        account = db.scalar(select(Account).where(Account.id == account_id).with_for_update())
        if account is None:
            raise NotFound(f"no account {account_id}")
        before = sorted(account.verified_domains)
        if before != wanted:
            account.verified_domains = wanted
            audit.record(
                db,
                account.id,
                actor=actor,
                action="account.verified_domains",
                target_type="account",
                target_id=account.slug,
                before={"verified_domains": before},
                after={"verified_domains": wanted},
            )
        return wanted

    return store.write(work)
