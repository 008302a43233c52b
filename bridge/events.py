"""The public event feed: a projection of the audit log, never a second write.

Every change already appends an audit event in its own transaction; this module only reads
them and says what they mean to the product (`user.deactivated`, `access.changed`, ...). The
cursor is the account's audit sequence number: appends lock the account's chain head, so
sequence numbers commit in order and a reader never sees event n+1 without event n (complete and
gap-free). One audit event may mean several public events (a deactivation that also changed
access); their ids are `evt_<seq>_<n>`, stable, for consumers to de-duplicate on.
Payloads carry ids, names and access, never secrets (tokens appear by id and prefix only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.models import AuditEvent

TYPES = (
    "user.created",
    "user.updated",
    "user.deactivated",
    "user.reactivated",
    "user.deleted",
    "group.created",
    "group.updated",
    "group.deleted",
    "group.member_added",
    "group.member_removed",
    "group.grants_changed",
    "access.changed",
    "user.guard_refused",
    "token.issued",
    "token.revoked",
    "client.added",
    "client.removed",
    "idp.added",
    "idp.removed",
    "idp.disabled",
    "idp.enabled",
    "idp.certificate_expiring",
    "session.ended",
    "login.succeeded",
    "login.failed",
    "policy.activated",
    "policy.applied",
)
PAGE = 100
MAX_PAGE = 1000


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    type: str
    at: str
    actor: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": self.at,
            "actor": self.actor,
            "cursor": str(self.seq),
            "data": self.data,
        }


def _user(state: dict[str, Any] | None, user_id: str) -> dict[str, Any]:
    state = state or {}
    return {
        "id": user_id,
        "userName": state.get("user_name"),
        "externalId": state.get("external_id"),
        "active": state.get("active") is not False,
        "displayName": state.get("display_name"),
        "emails": [e.get("value") for e in state.get("emails", [])],
    }


def _access(state: dict[str, Any] | None) -> dict[str, Any]:
    access = (state or {}).get("access") or {}
    return {
        "role": access.get("role"),
        "environments": access.get("environments", []),
        "groups": access.get("groups", []),
        "grants": access.get("grants", []),
    }


class AuditRow(Protocol):
    """What projecting reads of an audit event: the ORM row, or a Core row of these columns
    (the delivery worker's)."""

    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def target_type(self) -> str: ...
    @property
    def target_id(self) -> str: ...
    @property
    def before(self) -> dict[str, Any] | None: ...
    @property
    def after(self) -> dict[str, Any] | None: ...


def meanings(event: AuditRow) -> Iterator[tuple[str, dict[str, Any]]]:
    """The public (type, data) pairs an audit event stands for (none for internal ones)."""
    action, before, after, target = event.action, event.before, event.after, event.target_id
    if action == "user.create":
        yield "user.created", {"user": _user(after, target), "access": _access(after)}
    elif action in ("user.update", "user.reevaluate"):
        was = (before or {}).get("active") is not False
        now = (after or {}).get("active") is not False
        user = _user(after, target)
        if was and not now:
            yield "user.deactivated", {"user": user}
        elif now and not was:
            yield "user.reactivated", {"user": user}
        plain = {k: v for k, v in (before or {}).items() if k not in ("access", "active")}
        if plain != {k: v for k, v in (after or {}).items() if k not in ("access", "active")}:
            yield "user.updated", {"user": user}
        if _access(before) != _access(after):
            yield (
                "access.changed",
                {
                    "user": {"id": target, "userName": user["userName"]},
                    "before": _access(before),
                    "after": _access(after),
                },
            )
    elif action == "user.delete":
        yield "user.deleted", {"user": _user(before, target)}
    elif action == "user.guard_refused":  # bridge.guards: the refused change, and the role kept
        yield "user.guard_refused", {"user": {"id": target}, **(after or {})}
    elif action in ("group.create", "group.update", "group.delete"):
        yield from _group(action, before, after, target)
    elif action in ("group.manual_grant", "group.policy_grants"):  # bridge.access
        group = {"id": target, "displayName": (after or {}).get("display_name")}
        was, now = (before or {}).get("grants", []), (after or {}).get("grants", [])
        yield "group.grants_changed", {"group": group, "before": was, "after": now}
    elif action in ("token.issue", "token.issued", "token.revoke", "token.revoked"):
        kind = "scim" if action in ("token.issue", "token.revoke") else "oidc"
        name = "token.issued" if action.startswith("token.issue") else "token.revoked"
        details = {k: v for k, v in (after or before or {}).items() if k in SAFE_TOKEN_KEYS}
        yield name, {"kind": kind, "target": target, **details}
    elif action in ("client.add", "client.remove"):
        name = "client.added" if action == "client.add" else "client.removed"
        yield name, {"client_id": target, **(after or before or {})}
    elif action in ("login.succeed", "login.fail"):
        name = "login.succeeded" if action == "login.succeed" else "login.failed"
        who = {"id": target} if event.target_type == "user" else None
        yield name, {"user": who, **(after or {})}
    elif action == "policy.apply":
        yield "policy.applied", dict(after or {})
    elif action == "policy.activate":  # push, sync, apply of a stored version, rollback
        yield (
            "policy.activated",
            {
                "version": (after or {}).get("active"),
                "previous": (before or {}).get("active"),
                "content_hash": (after or {}).get("hash"),
            },
        )
    elif action == "idp.certificate_expiring":  # bridge.expiry: once per certificate and threshold
        yield "idp.certificate_expiring", dict(after or {})
    elif action == "session.end":
        yield "session.ended", {"user": {"id": target}, "sid": (after or {}).get("sid")}
    elif action in ("idp.add", "idp.remove", "idp.disable", "idp.enable"):
        name = {
            "idp.add": "idp.added",
            "idp.remove": "idp.removed",
            "idp.disable": "idp.disabled",
            "idp.enable": "idp.enabled",
        }[action]
        state = before if action == "idp.remove" else after
        data = {"name": (state or {}).get("name"), "entity_id": (state or {}).get("entity_id")}
        if action in ("idp.remove", "idp.disable"):
            data["ended_sessions"] = (after or {}).get("ended_sessions", [])
        yield name, data


SAFE_TOKEN_KEYS = ("label", "prefix", "client", "scope", "reason", "tokens")


def _group(
    action: str, before: dict[str, Any] | None, after: dict[str, Any] | None, target: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    state = after or before or {}
    group = {"id": target, "displayName": state.get("display_name")}
    group["externalId"] = state.get("external_id")
    if action == "group.create":
        yield "group.created", {"group": group}
        members = state.get("members") or state.get("members_added") or []
        if members:
            yield "group.member_added", {"group": group, "members": members}
        return
    if action == "group.delete":
        yield "group.deleted", {"group": group}
        return
    attrs = ("display_name", "external_id")
    if {k: (before or {}).get(k) for k in attrs} != {k: (after or {}).get(k) for k in attrs}:
        yield "group.updated", {"group": group}
    if (after or {}).get("members_added"):
        yield "group.member_added", {"group": group, "members": after["members_added"]}  # type: ignore[index]
    if (after or {}).get("members_removed"):
        yield "group.member_removed", {"group": group, "members": after["members_removed"]}  # type: ignore[index]


def project(rows: Iterable[AuditRow], types: frozenset[str] | None = None) -> list[Event]:
    """Public events of audit rows, in order, optionally only of `types`."""
    found: list[Event] = []
    for row in rows:
        for n, (kind, data) in enumerate(meanings(row)):
            if types is None or kind in types:
                at = row.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                found.append(Event(f"evt_{row.seq}_{n}", row.seq, kind, at, row.actor, data))
    return found


def parse_types(values: Iterable[str]) -> frozenset[str] | None:
    """The event types asked for (comma-separated or repeated); None means all."""
    wanted = {t.strip() for value in values for t in value.split(",") if t.strip()}
    unknown = wanted - set(TYPES)
    if unknown:
        from bridge.errors import InvalidInput

        raise InvalidInput(f"unknown event type(s): {', '.join(sorted(unknown))}")
    return frozenset(wanted) or None


def audit_after(db: Session, account_id: int, after: int, limit: int) -> list[AuditEvent]:
    """The account's audit events after sequence number `after`, oldest first."""
    return list(
        db.scalars(
            select(AuditEvent)
            .where(AuditEvent.account_id == account_id, AuditEvent.seq > after)
            .order_by(AuditEvent.seq)
            .limit(limit)
        )
    )


def page(
    db: Session,
    account_id: int,
    *,
    after: int = 0,
    types: frozenset[str] | None = None,
    limit: int = PAGE,
) -> tuple[list[Event], int]:
    """Up to `limit` events after the cursor, and the cursor to ask from next time (the last
    audit event read, even one that matched no type, so a filtered reader moves on)."""
    limit = max(1, min(limit, MAX_PAGE))
    cursor, found = after, list[Event]()
    while len(found) < limit:
        rows = audit_after(db, account_id, cursor, limit)
        if not rows:
            break
        for row in rows:
            events = project([row], types)
            if found and len(found) + len(events) > limit:
                return found, cursor
            found.extend(events)
            cursor = row.seq
    return found, cursor
