"""The account store: every table, typed, the same on SQLite and PostgreSQL.

Every row belongs to exactly one account. Case-insensitive uniqueness (userName, group displayName)
uses a normalised shadow column so both databases compare the same way (SQLite's lower() only
folds ASCII); the key is bridge.identifiers.fold (RFC 8265 UsernameCaseMapped). Membership,
role, environment-access and grant rows carry provenance: `scim`, `saml`,
`policy:<rule>` or `manual`.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    configure_mappers,
    declared_attr,
    make_transient_to_detached,
    mapped_column,
    object_mapper,
    relationship,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlalchemy.orm.util import identity_key

from bridge import identifiers


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def fold(value: str) -> str:
    """The case-insensitive key of a name: the same on every database (bridge.identifiers)."""
    if value.isascii() and value.isprintable():  # no character to refuse, NFC is itself
        return value.lower()
    return identifiers.fold(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: Uuid(), dict[str, Any]: JSON()}


_T = TypeVar("_T", bound=Base)


@functools.cache
def _configured() -> None:
    """The mappers configured (once per process): an instance's attributes work after that."""
    configure_mappers()


def read_only(cls: type[_T], values: Mapping[Any, Any], prefix: str = "") -> _T:
    """An instance of `cls` holding its table's columns from `values` (a row's mapping or a
    dict: each column under its key, after `prefix`; anything else there, such as a joined
    table's columns, is left out), set as the ORM's own loading sets them: without the
    attribute events a constructor fires. It belongs to no session, for a caller that reads it
    only (bridge.provisioning's account, the SAML routes' account and IdPs), or until
    `loaded` makes it the session's: loading it through the ORM cost a SAML request twice the
    CPU of the same row read as Core. A column not in `values` reads None."""
    _configured()
    obj: _T = manager_of_class(cls).new_instance()
    found = obj.__dict__
    # one lookup a column: a row mapping's `in` is a Python call as costly as the lookup (a
    # SAML login's account and IdP took 14 us this way with `in`, 6 us with one lookup)
    for key, name in _column_names(cls, prefix):
        try:
            value = values[name]
        except KeyError:  # a row's NoSuchColumnError is one
            continue
        found[key] = value
    return obj


@functools.cache
def _column_keys(cls: type[Base]) -> tuple[str, ...]:
    return tuple(column.key for column in cls.__table__.columns)


@functools.cache
def _column_names(cls: type[Base], prefix: str) -> tuple[tuple[str, str], ...]:
    """Each column's key, with the name it has in `read_only`'s values after `prefix`."""
    return tuple((key, prefix + key) for key in _column_keys(cls))


def held(db: Session, cls: type[_T], *key: Any) -> _T | None:
    """The instance of `cls` with primary key `key` that `db` holds, if any."""
    return db.identity_map.get(identity_key(cls, key))


def loaded(db: Session, obj: _T, **collections: list[Any]) -> _T:
    """`obj` (made by `read_only` from every column of its row, read in `db`'s transaction) as
    the ORM's load of that row in `db` would leave it: persistent there and unmodified, with
    its `collections` (a relationship's key -> the related rows' instances, made the same way)
    loaded. For a write that reads its rows as Core and changes them through the ORM's unit of
    work (bridge.provisioning's stored users, bridge.groups' group): the ORM's load of a user
    and their three collections cost about twice the CPU of the same reads as Core. If `db`
    holds an instance of that row already, that one, as the ORM's load would answer (then
    `collections` are not used: a caller reads `held` first to spare their read)."""
    mapper = object_mapper(obj)
    same = held(db, type(obj), *mapper.primary_key_from_instance(obj))
    if same is not None:
        return same
    for items in collections.values():
        for item in items:
            make_transient_to_detached(item)
    make_transient_to_detached(obj)  # what it was not given (the collections) reads expired
    for key, items in collections.items():
        set_committed_value(obj, key, items)
    db.add(obj)  # persistent again, with what it holds (their save-update cascade)
    return obj


def _account_fk(*, index: bool = True) -> Mapped[int]:
    """The owning account. `index=False` where a key or index of the table starts with it
    (it serves every lookup by account, the cascade's too): one index fewer to write per row
    (migration 0015)."""
    return mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=index)


class Versioned:
    """created, lastModified and a version that goes up by one with every real change.

    The version doubles as an optimistic lock: every UPDATE of the row says WHERE version = the
    one read, so a concurrent writer's commit makes ours fail (StaleDataError) and the whole
    transaction is retried (bridge.store.Store.write). `touch` once per changing transaction.
    """

    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {
            "version_id_col": cls.__table__.c.version,  # type: ignore[attr-defined]
            "version_id_generator": False,
        }

    def touch(self) -> None:
        """Record a real change: the next version, modified now."""
        self.version += 1
        self.last_modified = utcnow()


class Account(Base):
    """The tenant. `audit_seq`/`audit_head` are the head of its audit chain (locked to append)."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    default_role: Mapped[str] = mapped_column(String(40), default="media_library_user")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    audit_head: Mapped[str] = mapped_column(String(64), default="")
    # Origins (scheme://host[:port]) a login's RelayState may send people back to, besides ours.
    origins: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # E-mail domains the account has proven it owns: only these may link a SAML login to an
    # existing user by e-mail.
    verified_domains: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    session_minutes: Mapped[int] = mapped_column(Integer, default=480, server_default="480")


class Environment(Base):
    """A product environment of an account; `is_default` ones are what the defaults give."""

    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    name: Mapped[str] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class User(Versioned, Base):
    """A person of an account, with the SCIM core and enterprise attributes we keep."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("account_id", "user_name_key"),
        # externalId names one user of the account (NULLs many times): migration 0013
        Index("uq_users_account_external_id", "account_id", "external_id", unique=True),
        Index("ix_users_account_created", "account_id", "created", "id"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[int] = _account_fk(index=False)  # its keys and indexes above lead with it
    user_name: Mapped[str] = mapped_column(String(256))
    user_name_key: Mapped[str] = mapped_column(String(256))
    external_id: Mapped[str | None] = mapped_column(String(256))
    # NULL: the IdP never said (or removed it); only an explicit false suspends the user.
    active: Mapped[bool | None] = mapped_column(Boolean, default=True)
    # name.*
    formatted_name: Mapped[str | None] = mapped_column(String(512))
    family_name: Mapped[str | None] = mapped_column(String(256))
    given_name: Mapped[str | None] = mapped_column(String(256))
    middle_name: Mapped[str | None] = mapped_column(String(256))
    honorific_prefix: Mapped[str | None] = mapped_column(String(64))
    honorific_suffix: Mapped[str | None] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(String(256))
    nick_name: Mapped[str | None] = mapped_column(String(256))
    profile_url: Mapped[str | None] = mapped_column(String(1024))
    title: Mapped[str | None] = mapped_column(String(256))
    user_type: Mapped[str | None] = mapped_column(String(64))
    preferred_language: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # urn:ietf:params:scim:schemas:extension:enterprise:2.0:User
    employee_number: Mapped[str | None] = mapped_column(String(64))
    cost_center: Mapped[str | None] = mapped_column(String(256))
    organization: Mapped[str | None] = mapped_column(String(256))
    division: Mapped[str | None] = mapped_column(String(256))
    department: Mapped[str | None] = mapped_column(String(256))
    # The manager's id as the IdP sent it: kept even before (or without) that user arriving here.
    manager_id: Mapped[str | None] = mapped_column(String(256), index=True)
    # The attributes of the user's last SAML login, so a policy can be re-applied without one.
    saml_attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    emails: Mapped[list[UserEmail]] = relationship(
        cascade="all, delete-orphan", order_by="UserEmail.position", lazy="selectin"
    )
    phone_numbers: Mapped[list[UserPhoneNumber]] = relationship(
        cascade="all, delete-orphan", order_by="UserPhoneNumber.position", lazy="selectin"
    )
    addresses: Mapped[list[UserAddress]] = relationship(
        cascade="all, delete-orphan", order_by="UserAddress.position", lazy="selectin"
    )


class _MultiValue:
    """A multi-valued attribute entry: value, type, primary (at most one primary per user)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    type: Mapped[str | None] = mapped_column(String(64))
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    display: Mapped[str | None] = mapped_column(String(256))


class UserEmail(_MultiValue, Base):
    __tablename__ = "user_emails"
    value: Mapped[str] = mapped_column(String(320))
    value_key: Mapped[str] = mapped_column(String(320), index=True)


class UserPhoneNumber(_MultiValue, Base):
    __tablename__ = "user_phone_numbers"
    value: Mapped[str] = mapped_column(String(64))


class UserAddress(_MultiValue, Base):
    __tablename__ = "user_addresses"
    formatted: Mapped[str | None] = mapped_column(String(1024))
    street_address: Mapped[str | None] = mapped_column(String(512))
    locality: Mapped[str | None] = mapped_column(String(256))
    region: Mapped[str | None] = mapped_column(String(256))
    postal_code: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(64))


class Group(Versioned, Base):
    """A user group: pushed by SCIM, managed by a policy, or made by hand."""

    __tablename__ = "groups"
    __table_args__ = (
        UniqueConstraint("account_id", "display_name_key"),
        Index("ix_groups_account_external_id", "account_id", "external_id"),
        Index("ix_groups_account_created", "account_id", "created", "id"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[int] = _account_fk(index=False)  # its keys and indexes above lead with it
    display_name: Mapped[str] = mapped_column(String(256))
    display_name_key: Mapped[str] = mapped_column(String(256))
    external_id: Mapped[str | None] = mapped_column(String(256))
    managed_by: Mapped[str] = mapped_column(String(64), default="scim")


class Membership(Base):
    """A user in a group, once per provenance (SCIM and a policy may both put them there)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("group_id", "user_id", "provenance"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provenance: Mapped[str] = mapped_column(String(160))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class RoleAssignment(Base):
    """The one primary role of a user."""

    __tablename__ = "role_assignments"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    role: Mapped[str] = mapped_column(String(40))
    provenance: Mapped[str] = mapped_column(String(160))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class EnvironmentAccess(Base):
    """A user may use an environment; `environment_id` NULL means all of the account's."""

    __tablename__ = "environment_access"
    __table_args__ = (
        Index(
            "uq_environment_access_listed",
            "user_id",
            "environment_id",
            "provenance",
            unique=True,
            sqlite_where=text("environment_id IS NOT NULL"),
            postgresql_where=text("environment_id IS NOT NULL"),
        ),
        Index(
            "uq_environment_access_all",
            "user_id",
            "provenance",
            unique=True,
            sqlite_where=text("environment_id IS NULL"),
            postgresql_where=text("environment_id IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    environment_id: Mapped[int | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    provenance: Mapped[str] = mapped_column(String(160))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Grant(Base):
    """A permission on content: (user or group) x environment x folder/collection path x level."""

    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_subject"),
        CheckConstraint("kind IN ('folder', 'collection')", name="kind"),
        CheckConstraint("level IN ('viewer', 'contributor', 'editor', 'manager')", name="level"),
        Index(
            "uq_grants_user",
            "user_id",
            "environment_id",
            "kind",
            "path",
            "provenance",
            unique=True,
            sqlite_where=text("user_id IS NOT NULL"),
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index(
            "uq_grants_group",
            "group_id",
            "environment_id",
            "kind",
            "path",
            "provenance",
            unique=True,
            sqlite_where=text("group_id IS NOT NULL"),
            postgresql_where=text("group_id IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    level: Mapped[str] = mapped_column(String(16))
    provenance: Mapped[str] = mapped_column(String(160))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class ScimToken(Base):
    """A SCIM bearer token: only its SHA-256 is kept; `prefix` lets people tell tokens apart."""

    __tablename__ = "scim_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    label: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[datetime | None] = mapped_column()


class IdentityProvider(Versioned, Base):
    """A SAML IdP of an account, from its metadata."""

    __tablename__ = "identity_providers"
    __table_args__ = (
        UniqueConstraint("account_id", "name"),
        UniqueConstraint("account_id", "entity_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    name: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(1024))
    metadata_url: Mapped[str | None] = mapped_column(String(2048))
    metadata_xml: Mapped[str] = mapped_column(Text)
    sso_url: Mapped[str] = mapped_column(String(2048))
    slo_url: Mapped[str | None] = mapped_column(String(2048))
    certificates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allow_idp_initiated: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_jit: Mapped[bool] = mapped_column(Boolean, default=True)
    # "name_id", or the name of the attribute whose value is the userName.
    match_by: Mapped[str] = mapped_column(String(256), default="name_id")
    # Link a first login to an existing user with the same e-mail (verified domains only).
    link_by_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Accept a Response signed as a whole with its assertion unsigned (SAML Profiles 4.1.3.5
    # allows either; Keycloak and others sign only the Response by default).
    accept_response_signature: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # A disabled IdP signs nobody in; disabling it ended its sessions.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    refreshed: Mapped[datetime | None] = mapped_column()
    # SHA-256 of each signing certificate -> the tightest expiry threshold (days) already
    # announced by an `idp.certificate_expiring` audit event (bridge.expiry): once each.
    expiry_notices: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")


class IdpDomain(Base):
    """An e-mail domain an account's admin declared for one of its IdPs: /oidc/authorize sends a
    `login_hint` on this domain straight to that IdP. One IdP per domain within an account;
    other accounts may declare the same domain (routing never leaves the client's account)."""

    __tablename__ = "idp_domains"
    __table_args__ = (UniqueConstraint("account_id", "domain"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    idp_id: Mapped[int] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(253))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class SpKey(Base):
    """An account's SP signing/encryption key pair; the private key is sealed, never plain.

    The newest active key signs; every key not retired is published, so a rotation overlaps.
    """

    __tablename__ = "sp_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    cert_pem: Mapped[str] = mapped_column(Text)
    key_sealed: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    not_after: Mapped[datetime] = mapped_column()
    retired: Mapped[datetime | None] = mapped_column()


class AuthnRequest(Base):
    """An AuthnRequest we sent: its ID must come back once, in a signed assertion."""

    __tablename__ = "authn_requests"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[int] = _account_fk()
    idp_id: Mapped[int] = mapped_column(ForeignKey("identity_providers.id", ondelete="CASCADE"))
    relay_state: Mapped[str | None] = mapped_column(String(2048))
    # SHA-256 of the nonce in the cookie of the browser that started the login: its answer is
    # accepted from that browser only (login CSRF).
    browser_hash: Mapped[str | None] = mapped_column(String(64))
    # ForceAuthn was asked (OIDC prompt=login / max_age): the answer's AuthnInstant must be new.
    force_authn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime] = mapped_column(index=True)


class LoginAttempt(Base):
    """Every SAML login, with a typed reason when refused (`idbridge logins`)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_account_at", "account_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    idp_id: Mapped[int | None] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="SET NULL")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))
    name_id: Mapped[str | None] = mapped_column(String(1024))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    detail: Mapped[str | None] = mapped_column(String(1024))


class SamlIdentity(Base):
    """Links (IdP, NameID) to a user: how a returning SAML user is recognised."""

    __tablename__ = "saml_identities"
    __table_args__ = (UniqueConstraint("idp_id", "name_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    idp_id: Mapped[int] = mapped_column(ForeignKey("identity_providers.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name_id: Mapped[str] = mapped_column(String(1024))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # What this identity's last provisioned login depended on (bridge.provisioning.login_digest):
    # a returning login with the same digest has nothing to write.
    login_digest: Mapped[str | None] = mapped_column(String(64))


class LoginSession(Base):
    """A signed-in browser session; only the hash of the cookie's secret is kept."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = _account_fk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    idp_id: Mapped[int | None] = mapped_column(
        ForeignKey("identity_providers.id", ondelete="SET NULL")
    )
    name_id: Mapped[str | None] = mapped_column(String(1024))
    # The rest of the assertion's NameID, sent back whole in our LogoutRequest (SAML Profiles
    # 4.4.4.1: it must strongly match the one in the assertion).
    name_id_format: Mapped[str | None] = mapped_column(String(256))
    name_qualifier: Mapped[str | None] = mapped_column(String(1024))
    sp_name_qualifier: Mapped[str | None] = mapped_column(String(1024))
    sp_provided_id: Mapped[str | None] = mapped_column(String(1024))
    session_index: Mapped[str | None] = mapped_column(String(256))
    # The ID of the LogoutRequest we sent when this session ended: the IdP's answer names it.
    logout_request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # When the person authenticated at the IdP (the assertion's AuthnInstant, never later than
    # `created`): an IdP may answer from a session of its own hours old. None: at `created`.
    authenticated: Mapped[datetime | None] = mapped_column()
    expires: Mapped[datetime] = mapped_column()
    ended: Mapped[datetime | None] = mapped_column()


class SeenAssertion(Base):
    """The replay cache: an assertion ID is accepted once until it expires, across processes."""

    __tablename__ = "seen_assertions"
    __table_args__ = (UniqueConstraint("idp_id", "assertion_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    idp_id: Mapped[int] = mapped_column(ForeignKey("identity_providers.id", ondelete="CASCADE"))
    assertion_id: Mapped[str] = mapped_column(String(256))
    expires: Mapped[datetime] = mapped_column(index=True)


class AuditEvent(Base):
    """One change to the store, chained to the account's previous event by `prev_hash`."""

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("account_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk(index=False)  # (account_id, seq) leads with it
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ApiKey(Base):
    """A management API key: only its SHA-256 is kept; `scope` is read, write or admin."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    label: Mapped[str] = mapped_column(String(200), default="")
    scope: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    expires: Mapped[datetime | None] = mapped_column()
    last_used: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[datetime | None] = mapped_column()


class OidcClient(Base):
    """A relying party (the product) of an account: exact redirect URIs, hashed secret.

    `secret_hash` NULL makes a public client (PKCE S256 required).
    """

    __tablename__ = "oidc_clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2048))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # The audit sequence number up to which logout tokens have been queued for this client.
    logout_cursor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class OidcCode(Base):
    """An authorization code (only its hash): single use, short-lived, bound to its client
    and redirect URI (RFC 6749 §4.1.2, §10.5)."""

    __tablename__ = "oidc_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_pk: Mapped[int] = mapped_column(
        ForeignKey("oidc_clients.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="SET NULL")
    )
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(512))
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    auth_time: Mapped[datetime] = mapped_column()
    expires: Mapped[datetime] = mapped_column(index=True)
    used: Mapped[datetime | None] = mapped_column()


class OidcToken(Base):
    """An access token (only its hash) and the code it came from (a replayed code revokes it)."""

    __tablename__ = "oidc_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(
        ForeignKey("oidc_clients.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="SET NULL"), index=True
    )
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(512))
    issued: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime] = mapped_column()
    revoked: Mapped[datetime | None] = mapped_column()


class OidcKey(Base):
    """An ID-token signing key of the issuer (private key sealed); published until not_after."""

    __tablename__ = "oidc_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    key_sealed: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    signs_until: Mapped[datetime] = mapped_column()
    not_after: Mapped[datetime] = mapped_column()


class WebhookEndpoint(Base):
    """Where an account's events are POSTed, signed per Standard Webhooks.

    The secret is sealed (signing needs it back); after a rotation the previous one signs too
    until `previous_until`. `cursor` is the audit sequence number up to which deliveries have
    been queued (the projection's progress, advanced by the workers).
    """

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_sealed: Mapped[str] = mapped_column(Text)
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[datetime | None] = mapped_column()
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    disabled: Mapped[datetime | None] = mapped_column()
    disabled_reason: Mapped[str | None] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One message to send at least once: a webhook event or a back-channel logout token.

    Claimed by a worker until `claimed_until` (a killed worker's claim runs out and another takes
    it); retried at `next_attempt` with backoff until delivered or given up.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "message_id"),
        UniqueConstraint("client_pk", "message_id"),
        Index("ix_deliveries_due", "state", "next_attempt"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    client_pk: Mapped[int | None] = mapped_column(
        ForeignKey("oidc_clients.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # pending -> delivered | failed (given up, or the endpoint said 410 Gone)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    delivered: Mapped[datetime | None] = mapped_column()


class DeliveryAttempt(Base):
    """The delivery log: every attempt's status, latency and the start of the answer."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(String(512))


class OneTimeLink(Base):
    """A one-time console link (sign in as an admin, or a self-serve set-up page): only the
    hash of its token is kept; `used` is set once, by the request that redeems it."""

    __tablename__ = "one_time_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    expires: Mapped[datetime] = mapped_column()
    used: Mapped[datetime | None] = mapped_column()


class PolicyVersion(Base):
    """One version of an account's policy, immutable once stored; at most one is active."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("account_id", "number"),
        Index(
            "uq_policy_versions_active",
            "account_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = _account_fk()
    number: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated: Mapped[datetime | None] = mapped_column()


class ScimRequest(Base):
    """One SCIM request an IdP made: what, how it ended, how long it took; for a failure, the
    body with secrets redacted. Kept for BRIDGE_SCIM_LOG_DAYS days."""

    __tablename__ = "scim_requests"
    __table_args__ = (Index("ix_scim_requests_account_at", "account_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("scim_tokens.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2048))
    status: Mapped[int] = mapped_column(Integer)
    scim_type: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(1024))
    body: Mapped[str | None] = mapped_column(Text)
