"""Retention: finished deliveries (with their attempt log) and login attempts older than their
settings are deleted by `idbridge webhooks prune` and by the worker's sweep; pending deliveries,
recent rows and the audit log stay."""

import re
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bridge import delivery, logins, retention, webhooks
from bridge.models import AuditEvent, Delivery, DeliveryAttempt, LoginAttempt, utcnow
from tests.integration.test_webhooks import FAST


@pytest.fixture
def queued(scim, store, settings):
    """Five deliveries of a webhook endpoint (never sent: the URL is a closed port), each with
    an attempt: two delivered 40 days ago, one given up 40 days ago, one pending since 40 days
    ago, one delivered today."""
    key = settings.ensure_secret_key().secret_key
    hook = webhooks.add(
        store,
        scim.account.slug,
        "http://127.0.0.1:9/hook",
        types=["user.created"],
        secret_key=key,
        allow_private=True,
        actor="t",
    )
    for i in range(5):
        scim.post("Users", {"userName": f"r{i}@example.com"})
    delivery.project(store)
    old = utcnow() - timedelta(days=40)
    with store.read() as db:
        ids = db.scalars(
            select(Delivery.id).where(Delivery.endpoint_id == hook.id).order_by(Delivery.id)
        ).all()
    assert len(ids) == 5
    states = [
        ("delivered", old),
        ("delivered", old),
        ("failed", old),
        ("pending", old),
        ("delivered", utcnow()),
    ]

    def age(db):
        for row_id, (state, at) in zip(ids, states, strict=True):
            db.execute(
                update(Delivery)
                .where(Delivery.id == row_id)
                .values(state=state, next_attempt=at, created=at, attempts=1)
            )
            db.add(DeliveryAttempt(delivery_id=row_id, at=at, status=200, latency_ms=3))

    store.write(age)
    return hook, ids


def _left(store, ids):
    with store.read() as db:
        rows = db.scalars(select(Delivery.id).where(Delivery.id.in_(ids))).all()
        attempts = db.scalar(
            select(func.count())
            .select_from(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
        )
    return sorted(rows), attempts


def _logins(store, account):
    """Two login attempts, one from 100 days ago; their ids, oldest first."""
    logins.record(store, account.id, ok=False, reason="bad_signature")
    logins.record(store, account.id, ok=False, reason="expired")
    with store.read() as db:
        ids = db.scalars(
            select(LoginAttempt.id)
            .where(LoginAttempt.account_id == account.id)
            .order_by(LoginAttempt.id)
        ).all()
    store.write(
        lambda db: db.execute(
            update(LoginAttempt)
            .where(LoginAttempt.id == ids[0])
            .values(at=utcnow() - timedelta(days=100))
        )
    )
    return ids


def test_cli_prune_deletes_finished_old_deliveries_and_old_logins(queued, store, cli, scim):
    """`idbridge webhooks prune`: the old delivered and given-up deliveries go with their
    attempts; the old pending one and today's stay; the 100-day-old login attempt goes, today's
    stays; the audit log is untouched."""
    hook, ids = queued
    login_ids = _logins(store, scim.account)
    with store.read() as db:
        audit = db.scalar(select(func.count()).select_from(AuditEvent))
    out = cli("webhooks", "prune")
    assert out.exit_code == 0, out.output
    assert re.fullmatch(r"deleted \d+ finished deliveries and \d+ login attempts\n", out.output)
    assert _left(store, ids) == ([ids[3], ids[4]], 2)
    with store.read() as db:
        assert [e["id"] for e in webhooks.log(db, scim.account.slug, hook.id)] == [ids[4], ids[3]]
        assert db.scalars(select(LoginAttempt.id).where(LoginAttempt.id.in_(login_ids))).all() == [
            login_ids[1]
        ]
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == audit


def test_cli_prune_follows_the_settings_and_refuses_bad_ones(queued, store, cli):
    """BRIDGE_DELIVERY_LOG_DAYS=60 keeps the 40-day-old rows; a value that is no whole number of
    days is refused with its name and nothing is deleted."""
    _, ids = queued
    for bad in ("0", "-3", "ten", "1.5"):
        cli.env["BRIDGE_DELIVERY_LOG_DAYS"] = bad
        out = cli("webhooks", "prune")
        assert out.exit_code == 1 and "BRIDGE_DELIVERY_LOG_DAYS must be a whole number" in (
            out.output
        )
    cli.env["BRIDGE_DELIVERY_LOG_DAYS"] = "60"
    assert cli("webhooks", "prune").exit_code == 0
    assert _left(store, ids) == (sorted(ids), 5)
    cli.env["BRIDGE_DELIVERY_LOG_DAYS"] = "30"
    assert cli("webhooks", "prune").exit_code == 0
    assert _left(store, ids) == ([ids[3], ids[4]], 2)


def test_prune_works_through_a_backlog_in_batches(queued, store, monkeypatch):
    """More old rows than one batch: every one goes (a batch per transaction)."""
    _, ids = queued
    monkeypatch.setattr(retention, "BATCH", 1)
    done = retention.prune(store, retention.Retention())
    assert done.deliveries >= 3
    assert _left(store, ids) == ([ids[3], ids[4]], 2)


def test_a_redelivered_old_delivery_is_kept(queued, store, scim):
    """A delivery sent again by hand counts from the redelivery, not from its first send."""
    _, ids = queued
    webhooks.redeliver(store, scim.account.slug, ids[0], actor="t")
    store.write(
        lambda db: db.execute(
            update(Delivery).where(Delivery.id == ids[0]).values(state="delivered")
        )
    )
    retention.prune(store, retention.Retention())
    assert _left(store, ids)[0] == [ids[0], ids[3], ids[4]]


def test_the_worker_prunes_in_its_sweep(queued, store, settings):
    """A worker prunes when it starts (and every five minutes): its own retention applies."""
    _, ids = queued
    tuning = replace(FAST, retention=retention.Retention(deliveries=timedelta(days=30)))
    sender = delivery.Sender(store, settings.ensure_secret_key().secret_key, "x", True, tuning)
    stop = threading.Event()
    thread = threading.Thread(
        target=delivery.run, args=(store, sender), kwargs={"stop": stop}, daemon=True
    )
    thread.start()
    try:
        for _ in range(200):
            if _left(store, ids)[0] == [ids[3], ids[4]]:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=15)
        store.write(  # the closed-port endpoint's pending row: keep later tests' workers off it
            lambda db: db.execute(
                update(Delivery).where(Delivery.state == "pending").values(state="failed")
            )
        )
    assert _left(store, ids)[0] == [ids[3], ids[4]]


def test_a_sweep_with_nothing_old_writes_nothing(queued, store, monkeypatch):
    """Once pruned, the next prune finds nothing by index probes and opens no write transaction
    (every worker sweeps every five minutes, for every account)."""
    retention.prune(store, retention.Retention())
    writes = []
    real = store.write
    monkeypatch.setattr(store, "write", lambda work: writes.append(work) or real(work))
    assert retention.prune(store, retention.Retention()) == retention.Pruned(0, 0)
    assert writes == []
