"""OpenID Connect clients of an account (the product as relying party): register, list,
remove, rotate the secret.

A secret is shown once and only its SHA-256 is kept (it is 256 random bits, so one hash
suffices). Redirect URIs are matched exactly (RFC 9700 §4.1.3): https, or http on a loopback
address for native and development apps (RFC 8252 §7.3); no fragment. Every change is audited
in its own transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import audit, owned
from bridge.accounts import get_account
from bridge.errors import InvalidInput
from bridge.models import Account, OidcClient
from bridge.store import Store

CLIENT_PREFIX = "ibc_"
SECRET_PREFIX = "ibs_"  # noqa: S105 - a prefix, not a secret
MAX_REDIRECT_URIS = 20


def hash_secret(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Registered:
    """What `add` and `rotate_secret` hand back once: the id and the raw secret (None: public)."""

    client_id: str
    secret: str | None


@dataclass(frozen=True)
class ClientInfo:
    """A client as the OIDC adapter and listings see it (never the secret)."""

    pk: int
    account_id: int
    account: str
    client_id: str
    name: str
    public: bool
    redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    secret_hash: str | None

    def check_secret(self, raw: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(
            self.secret_hash, hash_secret(raw)
        )


def check_uri(uri: str, *, what: str = "redirect URI") -> str:
    """`uri` if it is an absolute https URL (or http on loopback) without a fragment."""
    parts = urlsplit(uri)
    if not parts.hostname or parts.fragment or len(uri) > 2048:
        raise InvalidInput(f"{what} {uri[:200]!r} must be an absolute URL without a fragment")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and _loopback(parts.hostname):
        return uri
    raise InvalidInput(f"{what} {uri[:200]!r} must be https (http only on 127.0.0.1/localhost)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add(
    store: Store,
    slug: str,
    *,
    name: str,
    redirect_uris: list[str],
    public: bool = False,
    backchannel_logout_uri: str | None = None,
    actor: str,
) -> Registered:
    """Register a client; its secret (for a confidential client) is returned this once."""
    if not name.strip():
        raise InvalidInput("a client needs a --name")
    if not redirect_uris or len(redirect_uris) > MAX_REDIRECT_URIS:
        raise InvalidInput(f"a client needs 1 to {MAX_REDIRECT_URIS} redirect URIs")
    uris = [check_uri(u) for u in dict.fromkeys(redirect_uris)]
    logout = (
        check_uri(backchannel_logout_uri, what="back-channel logout URI")
        if (backchannel_logout_uri)
        else None
    )
    client_id = CLIENT_PREFIX + secrets.token_urlsafe(16)
    secret = None if public else SECRET_PREFIX + secrets.token_urlsafe(32)

    def work(db: Session) -> Registered:
        account = get_account(db, slug)
        row = OidcClient(
            account_id=account.id,
            client_id=client_id,
            name=name.strip()[:200],
            secret_hash=hash_secret(secret) if secret else None,
            redirect_uris=uris,
            backchannel_logout_uri=logout,
        )
        db.add(row)
        db.flush()
        audit.record(
            db,
            account.id,
            actor=actor,
            action="client.add",
            target_type="client",
            target_id=client_id,
            after=_public_view(row),
        )
        return Registered(client_id, secret)

    return store.write(work)


def _public_view(row: OidcClient) -> dict[str, object]:
    return {
        "name": row.name,
        "public": row.secret_hash is None,
        "redirect_uris": list(row.redirect_uris),
        "backchannel_logout_uri": row.backchannel_logout_uri,
    }


def _info(row: OidcClient, account: Account) -> ClientInfo:
    return ClientInfo(
        pk=row.id,
        account_id=row.account_id,
        account=account.slug,
        client_id=row.client_id,
        name=row.name,
        public=row.secret_hash is None,
        redirect_uris=tuple(row.redirect_uris),
        backchannel_logout_uri=row.backchannel_logout_uri,
        secret_hash=row.secret_hash,
    )


def find(db: Session, client_id: str) -> ClientInfo | None:
    """The client with this id, in whatever account (the client id decides the account)."""
    row = db.execute(
        select(OidcClient, Account)
        .join(Account, Account.id == OidcClient.account_id)
        .where(OidcClient.client_id == client_id)
    ).first()
    return None if row is None else _info(*row)


def list_for(db: Session, slug: str) -> list[ClientInfo]:
    account = get_account(db, slug)
    rows = db.scalars(
        select(OidcClient).where(OidcClient.account_id == account.id).order_by(OidcClient.id)
    )
    return [_info(row, account) for row in rows]


def logout_targets(db: Session, account_id: int) -> list[ClientInfo]:
    """The account's clients that take back-channel logout tokens."""
    account = db.get_one(Account, account_id)
    rows = db.scalars(
        select(OidcClient).where(
            OidcClient.account_id == account_id, OidcClient.backchannel_logout_uri.is_not(None)
        )
    )
    return [_info(row, account) for row in rows]


def _row(db: Session, slug: str, client_id: str) -> tuple[Account, OidcClient]:
    return owned.locked(
        db, slug, OidcClient, OidcClient.client_id, client_id, f"client {client_id!r}"
    )


def remove(store: Store, slug: str, client_id: str, *, actor: str) -> None:
    """Delete a client with its codes and tokens (they stop working at once)."""
    owned.remove(
        store,
        slug,
        OidcClient,
        OidcClient.client_id,
        client_id,
        what=f"client {client_id!r}",
        action="client.remove",
        describe=_public_view,
        actor=actor,
    )


def rotate_secret(store: Store, slug: str, client_id: str, *, actor: str) -> Registered:
    """A new secret replaces the old one at once (the old one stops working)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)

    def work(db: Session) -> Registered:
        account, row = _row(db, slug, client_id)
        if row.secret_hash is None:
            raise InvalidInput(f"client {client_id!r} is public: it has no secret to rotate")
        row.secret_hash = hash_secret(secret)
        audit.record(
            db,
            account.id,
            actor=actor,
            action="client.rotate_secret",
            target_type="client",
            target_id=client_id,
        )
        return Registered(client_id, secret)

    return store.write(work)
