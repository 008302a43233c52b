"""The audit chain detects edited, deleted and truncated events (`idbridge audit verify`)."""

from sqlalchemy import delete, select, update

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


def test_appends_around_a_savepoint_keep_the_chain(store, account, cli):
    """In one transaction that read the head with the account (SQLite keeps it for the first
    append), an append inside a savepoint, one rolled back with its savepoint and one after
    both leave a chain that verifies: the head is read again after each savepoint."""
    from bridge import audit

    def work(db):
        provisioning.account_in(db, account.id)  # the head, as a write reads it first
        with db.begin_nested():
            audit.record(
                db, account.id, actor="t", action="test.kept", target_type="t", target_id="1"
            )
        nested = db.begin_nested()
        audit.record(
            db, account.id, actor="t", action="test.undone", target_type="t", target_id="2"
        )
        nested.rollback()
        audit.record(db, account.id, actor="t", action="test.after", target_type="t", target_id="3")

    store.write(work)
    result = cli("audit", "verify", account.slug)
    assert result.exit_code == 0, result.output
    with store.read() as db:
        actions = db.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.account_id == account.id)
            .order_by(AuditEvent.seq)
        ).all()
    assert actions[-2:] == ["test.kept", "test.after"]


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


def _rewrite_whole_chain(store, account, seq, **values):
    """What someone with write access to the database can do: edit an event, then recompute
    every later hash and the head, so the chain agrees with itself again."""
    from sqlalchemy import select

    from bridge import audit
    from bridge.models import Account

    def work(db):
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.account_id == account.id).order_by(AuditEvent.seq)
        ).all()
        prev = ""
        for event in events:
            if event.seq == seq:
                for key, value in values.items():
                    setattr(event, key, value)
            event.prev_hash = prev
            event.hash = audit.event_hash(event)
            prev = event.hash
        db.get(Account, account.id).audit_head = prev

    store.write(work)


def test_checkpoint_catches_a_rewritten_chain(store, account, cli, tmp_path):
    """A whole-chain rewrite passes the chain check but not a checkpoint kept off the database:
    `audit verify --checkpoint FILE` names the line and the rewritten event."""
    _with_events(store, account)
    book = tmp_path / "checkpoints.jsonl"
    taken = cli("audit", "checkpoint", account.slug, "--append", str(book))
    assert taken.exit_code == 0, taken.output
    assert f"checkpoint of {account.slug} at event 6 appended" in taken.stdout
    provisioning.provision(store, account.id, profile("later"), actor="t")  # still holds after
    ok = cli("audit", "verify", account.slug, "--checkpoint", str(book))
    assert ok.exit_code == 0, ok.output
    assert "1 checkpoints of" in ok.stdout and "7 events intact" in ok.stdout

    _rewrite_whole_chain(store, account, 4, actor="someone-else")
    assert cli("audit", "verify", account.slug).exit_code == 0  # the chain alone is fooled
    caught = cli("audit", "verify", account.slug, "--checkpoint", str(book))
    assert caught.exit_code == 1
    assert "does NOT match checkpoint checkpoints.jsonl:1" in caught.stderr
    assert "event 6 no longer has the hash it had: the chain was rewritten" in caught.stderr


def test_forged_checkpoint_is_refused(store, account, cli, tmp_path):
    """A checkpoint written without the secret key (after a rewrite) does not verify."""
    import json

    _with_events(store, account)
    book = tmp_path / "checkpoints.jsonl"
    cli("audit", "checkpoint", account.slug, "--append", str(book))
    _rewrite_whole_chain(store, account, 2, actor="x")
    line = json.loads(book.read_text())
    with store.read() as db:
        from bridge.models import Account

        line["hash"] = db.get(Account, account.id).audit_head  # the attacker's new head
    book.write_text(json.dumps(line) + "\n")
    caught = cli("audit", "verify", account.slug, "--checkpoint", str(book))
    assert caught.exit_code == 1
    assert "its MAC does not match" in caught.stderr


def test_checkpoint_of_a_broken_chain_is_refused(store, account, cli):
    """No checkpoint vouches for a chain that is already broken."""
    _with_events(store, account)
    store.write(
        lambda db: db.execute(
            update(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.seq == 2)
            .values(actor="edited")
        )
    )
    result = cli("audit", "checkpoint", account.slug)
    assert result.exit_code == 1
    assert "the chain is broken at event 2" in result.stderr
