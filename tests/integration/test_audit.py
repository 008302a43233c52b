"""The audit chain detects edited, deleted and truncated events (`idbridge audit verify`)."""

from sqlalchemy import delete, update

from bridge import provisioning
from bridge.models import AuditEvent
from tests.factories import profile


def _with_events(store, account, n=3):
    for i in range(n):
        provisioning.provision(store, account.id, profile(f"audited-{i}"), actor="t")


def test_intact_chain_verifies(store, account, cli):
    """An untouched chain verifies, counting every event."""
    _with_events(store, account)
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 0, result.output
    # create account + 2 environments + 3 users
    assert f"audit chain of {account.slug} verified: 6 events intact" in result.stdout


def test_edited_event_is_named(store, account, cli):
    """Changing an event's content breaks the chain at that event."""
    _with_events(store, account)
    store.write(
        lambda db: db.execute(
            update(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.seq == 4)
            .values(actor="someone-else")
        )
    )
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 1
    assert "BROKEN at event 4: its content was changed" in result.stderr


def test_deleted_event_is_named(store, account, cli):
    """Deleting an event from the middle breaks the chain where it was."""
    _with_events(store, account)
    store.write(
        lambda db: db.execute(
            delete(AuditEvent).where(AuditEvent.account_id == account.id, AuditEvent.seq == 5)
        )
    )
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 1
    assert "BROKEN at event 5: event 5 is missing" in result.stderr


def test_deleted_newest_event_is_detected(store, account, cli):
    """Deleting the newest event is caught by the head kept on the account."""
    _with_events(store, account)
    store.write(
        lambda db: db.execute(
            delete(AuditEvent).where(AuditEvent.account_id == account.id, AuditEvent.seq == 6)
        )
    )
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 1
    assert "BROKEN at event 6: events after 5 are missing" in result.stderr


def test_rehashed_edit_still_breaks_the_link(store, account, cli):
    """Recomputing an edited event's own hash does not hide it: the next link breaks."""
    from bridge.audit import event_hash

    _with_events(store, account)

    def forge(db):
        event = db.query(AuditEvent).filter_by(account_id=account.id, seq=3).one()
        event.actor = "forger"
        event.hash = event_hash(event)

    store.write(forge)
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 1
    assert "BROKEN at event 4: its link to the previous event is broken" in result.stderr


def test_tail_shows_newest_events(store, account, cli):
    """`audit tail` lists the newest events, oldest first, with actor and action."""
    _with_events(store, account)
    result = cli("audit", "tail", account.slug, "-n", "2")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "5" and "user.create" in lines[1]
