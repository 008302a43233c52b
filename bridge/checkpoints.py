"""Audit checkpoints: the chain's head, exported where the database cannot rewrite it.

The hash chain (bridge.audit) shows that events agree with each other, but anyone who can write
the database can edit an event and recompute every later hash and the head. A checkpoint is the
head (account, seq, hash, time) written out of the database, by `idbridge audit checkpoint`, with
an HMAC-SHA256 under a key derived from BRIDGE_SECRET_KEY (which the database does not hold), so
a checkpoint cannot be forged without it. `idbridge audit verify --checkpoint FILE` then checks
that event `seq` still has that hash: a rewrite of any event up to a checkpoint is detected.
What it does not prove: anything about events after the newest checkpoint (keep taking them),
nor that the service recorded the truth in the first place (a compromised process can write
false events and checkpoint them), nor anything if the attacker holds BRIDGE_SECRET_KEY and can
also replace the checkpoint file (store it append-only, off this host).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import audit
from bridge.errors import Conflict, InvalidInput
from bridge.models import Account, AuditEvent

CONTEXT = b"identity-bridge audit checkpoint v1"
FIELDS = ("account", "seq", "hash", "at")


@dataclass(frozen=True)
class Mismatch:
    """Where the stored chain disagrees with a checkpoint, in words a person can act on."""

    where: str
    reason: str


def _key(secret_key: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=CONTEXT).derive(secret_key.encode())


def _mac(secret_key: str, body: dict[str, Any]) -> str:
    text = json.dumps({k: body[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"))
    return hmac.new(_key(secret_key), text.encode(), hashlib.sha256).hexdigest()


def take(db: Session, account: Account, secret_key: str) -> dict[str, Any]:
    """A checkpoint of the account's chain as it stands; refused if the chain is broken."""
    count, broken = audit.verify(db, account.id)
    if broken is not None:
        raise Conflict(
            f"the chain is broken at event {broken.seq} ({broken.reason}): no checkpoint"
        )
    body: dict[str, Any] = {
        "account": account.slug,
        "seq": count,
        "hash": account.audit_head,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    body["mac"] = _mac(secret_key, body)
    return body


def check(
    db: Session, account: Account, path: Path, secret_key: str
) -> tuple[int, Mismatch | None]:
    """Check this account's checkpoints in `path` (JSON lines): how many held, the first miss."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the checkpoint file ({exc})") from None
    held = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            body = json.loads(line)
            if not isinstance(body, dict) or body.get("account") != account.slug:
                continue
            seq, wanted = int(body["seq"]), str(body["hash"])
            mac = str(body["mac"])
        except (ValueError, KeyError, TypeError):
            return held, Mismatch(where, "not a checkpoint line")
        if not hmac.compare_digest(mac, _mac(secret_key, body)):
            return held, Mismatch(where, "its MAC does not match (forged, or another secret key)")
        stored = db.scalar(
            select(AuditEvent.hash).where(
                AuditEvent.account_id == account.id, AuditEvent.seq == seq
            )
        )
        if seq > 0 and stored is None:
            return held, Mismatch(where, f"event {seq} it vouches for is gone")
        if seq > 0 and stored != wanted:
            return held, Mismatch(
                where, f"event {seq} no longer has the hash it had: the chain was rewritten"
            )
        held += 1
    return held, None
