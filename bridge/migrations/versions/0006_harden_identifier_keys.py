"""Identifier keys recomputed under RFC 8265 UsernameCaseMapped (issue 9 item 2)

The key columns (users.user_name_key, groups.display_name_key, user_emails.value_key) held
NFC + casefold(), which made `sam` with U+017F LONG S, `Kate` with U+212A KELVIN SIGN and
`STRAßE` equal to `sam`, `kate` and `strasse`. They now hold toLowerCase + NFC, and a name
holding a compatibility, control or format character keeps itself as its key
(bridge.identifiers). The rule is copied here as it stands at this revision, so later changes to
the code cannot change what this migration did.

Revision ID: 0006_harden_identifier_keys
Revises: 0005_console_links
"""

import unicodedata
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_harden_identifier_keys"
down_revision: str | None = "0005_console_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# (table, value column, key column, the column the key is unique within or None)
KEYS = (
    ("users", "user_name", "user_name_key", "account_id"),
    ("groups", "display_name", "display_name_key", "account_id"),
    ("user_emails", "value", "value_key", None),
)


def _problem(value: str) -> bool:
    for char in value:
        category = unicodedata.category(char)
        if char.isascii() and category not in REFUSED:
            continue
        if category in REFUSED or (category == "Zs" and char != " "):
            return True
        if unicodedata.normalize("NFKC", char) != char:
            return True
    return False


def new_key(value: str) -> str:
    return value if _problem(value) else unicodedata.normalize("NFC", value.lower())


def old_key(value: str) -> str:
    return unicodedata.normalize("NFC", value).casefold()


def _rekey(fold: Callable[[str], str]) -> None:
    conn = op.get_bind()
    for table, value_col, key_col, scope in KEYS:
        t = sa.table(table, sa.column("id"), sa.column(value_col), sa.column(key_col))
        if scope:
            t.append_column(sa.column(scope))
        rows = conn.execute(sa.select(*t.c)).mappings().all()
        changed = {r["id"]: fold(r[value_col]) for r in rows if fold(r[value_col]) != r[key_col]}
        if scope:
            seen: dict[tuple[object, str], object] = {}
            for r in rows:
                slot = (r[scope], changed.get(r["id"], r[key_col]))
                if slot in seen:
                    raise RuntimeError(
                        f"{table}: rows {seen[slot]} and {r['id']} would share the key "
                        f"{slot[1]!r}; rename one, then upgrade again"
                    )
                seen[slot] = r["id"]
        for row_id in changed:
            # Through a temporary value first: swapping keys between rows must not collide.
            conn.execute(sa.update(t).where(t.c.id == row_id).values({key_col: f"\x01{row_id}"}))
        for row_id, key in changed.items():
            conn.execute(sa.update(t).where(t.c.id == row_id).values({key_col: key}))


def upgrade() -> None:
    _rekey(new_key)


def downgrade() -> None:
    _rekey(old_key)
