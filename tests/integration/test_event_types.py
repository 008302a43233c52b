"""`idp.certificate_expiring` (written by the worker's sweep or `idbridge idps check-expiry`, once
per certificate and threshold however many check) and `policy.activated` (push, sync, rollback):
audit events first, then the event feed (management API) and webhooks (Standard Webhooks,
verified by the `standardwebhooks` package in the receiver)."""

import re
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bridge import expiry, idps
from bridge.models import AuditEvent, Delivery, utcnow
from tests.integration.test_api_policy import source
from tests.integration.test_webhooks import FAST, Workers, _hook
from tests.receiver import Receiver
from tests.saml_idp import KeyPair, TestIdP


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def workers(store, settings):
    w = Workers(store, settings.ensure_secret_key())
    yield w
    w.stop()
    # This test's receiver is gone: keep later tests' workers off its leftovers.
    store.write(
        lambda db: db.execute(
            update(Delivery).where(Delivery.state == "pending").values(state="failed")
        )
    )


def _feed(api, kind):
    r = api.get("events", query_string={"type": kind, "limit": 1000})
    assert r.status_code == 200, r.json
    return r.json["events"]


def _audit(store, account, action):
    with store.read() as db:
        return db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.account_id == account.id, AuditEvent.action == action)
        )


def _expiring_idp(store, account, days, name="okta"):
    idp = TestIdP(
        entity_id=f"https://{name}.example.test/metadata",
        keys=[KeyPair.generate("Expiring IdP", days=days)],
    )
    idps.add(store, account.slug, idp.metadata_xml(), name=name, actor="t")
    return idp


def test_certificate_expiring_once_per_threshold(store, account, cli, api_for):
    """A certificate 5 days from expiry: the check announces the 7-day threshold once (a second
    check writes nothing); later the 1-day and the expired thresholds, each once; a certificate
    a year from expiry is never announced."""
    _expiring_idp(store, account, days=5)
    _expiring_idp(store, account, days=365, name="fine")
    out = cli("idps", "check-expiry")
    assert out.exit_code == 0 and re.search(r"^\d+ idp\.certificate_expiring event", out.output)
    again = cli("idps", "check-expiry")
    assert again.exit_code == 0
    api = api_for(account, "read")
    found = _feed(api, "idp.certificate_expiring")
    assert len(found) == 1
    data = found[0]["data"]
    assert data["name"] == "okta" and data["threshold_days"] == 7 and data["days_left"] == 4
    assert data["certificate"]["subject"] == "CN=Expiring IdP"
    assert re.fullmatch(r"[0-9a-f]{64}", data["certificate"]["sha256"])
    assert found[0]["actor"] == "bridge:expiry"
    later = utcnow() + timedelta(days=4, hours=12)
    expiry.check(store, later)
    expiry.check(store, later)
    expiry.check(store, utcnow() + timedelta(days=6))
    expiry.check(store, utcnow() + timedelta(days=9))
    found = _feed(api, "idp.certificate_expiring")
    assert [e["data"]["threshold_days"] for e in found] == [7, 1, 0]
    assert [e["data"]["days_left"] for e in found] == [4, 0, 0]
    assert {e["data"]["name"] for e in found} == {"okta"}
    assert _audit(store, account, "idp.certificate_expiring") == 3


def test_a_new_certificate_is_announced_afresh_and_a_disabled_idp_never(store, account):
    """Metadata with another expiring certificate gets its own notice; a disabled IdP's
    certificates are not announced."""
    _expiring_idp(store, account, days=20)
    expiry.check(store)
    replacement = TestIdP(
        entity_id="https://okta.example.test/metadata", keys=[KeyPair.generate("Next IdP", days=20)]
    )
    idps.refresh(store, account.slug, "okta", xml=replacement.metadata_xml(), actor="t")
    expiry.check(store)
    _expiring_idp(store, account, days=3, name="off")
    idps.set_disabled(store, account.slug, "off", True, actor="t")
    expiry.check(store)
    with store.read() as db:
        rows = db.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.account_id == account.id,
                AuditEvent.action == "idp.certificate_expiring",
            )
            .order_by(AuditEvent.seq)
        ).all()
    assert [(r.target_id, r.after["certificate"]["subject"]) for r in rows] == [
        ("okta", "CN=Expiring IdP"),
        ("okta", "CN=Next IdP"),
    ]
    assert [r.after["threshold_days"] for r in rows] == [30, 30]


def test_concurrent_checks_write_one_event(store, account):
    """Four checks racing (two workers, a cron job, a person) write one event per threshold."""
    _expiring_idp(store, account, days=2)
    barrier = threading.Barrier(4)
    errors = []

    def check():
        barrier.wait()
        try:
            expiry.check(store)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _audit(store, account, "idp.certificate_expiring") == 1


def test_two_workers_deliver_one_certificate_webhook(store, settings, account, receiver, workers):
    """Two delivery workers, each sweeping when it starts: the webhook receives the
    certificate event exactly once, signed."""
    added = _hook(store, settings, account, receiver.url, types=["idp.certificate_expiring"])
    receiver.secrets = [added.secret]
    _expiring_idp(store, account, days=6)
    workers.start(2, FAST)
    assert receiver.wait_for(lambda r: len(r.counts) == 1)
    time.sleep(0.5)  # a duplicate would have arrived by now
    workers.stop()
    assert list(receiver.counts.values()) == [1] and receiver.rejected == 0
    body = receiver.received[0]
    assert body["type"] == "idp.certificate_expiring" and body["data"]["threshold_days"] == 7
    assert _audit(store, account, "idp.certificate_expiring") == 1


def test_policy_activated_on_push_sync_and_rollback(
    store, settings, account, cli, tmp_path, api_for, receiver, workers
):
    """Each version that becomes active (push, sync, rollback) is one policy.activated event
    with the version before it; pushing the active source again is none; webhooks get each."""
    added = _hook(store, settings, account, receiver.url, types=["policy.activated"])
    receiver.secrets = [added.secret]
    workers.start(1, FAST)
    path = tmp_path / f"{account.slug}.yaml"
    path.write_text(source(account.slug, "billing"))
    assert cli("policy", "push", account.slug, str(path)).exit_code == 0
    assert cli("policy", "push", account.slug, str(path)).exit_code == 0  # unchanged: no event
    path.write_text(source(account.slug, "reports"))
    assert cli("policy", "sync", str(tmp_path)).exit_code == 0
    admin = api_for(account, "admin")
    assert admin.post("policy/rollback", json={"version": 1}).status_code == 200
    found = _feed(api_for(account, "read"), "policy.activated")
    assert [(e["data"]["version"], e["data"]["previous"]) for e in found] == [
        (1, None),
        (2, 1),
        (1, 2),
    ]
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["data"]["content_hash"]) for e in found)
    assert found[0]["data"]["content_hash"] == found[2]["data"]["content_hash"]
    assert receiver.wait_for(lambda r: len(r.counts) == 3)
    assert receiver.rejected == 0
    assert sorted(p["id"] for p in receiver.received) == sorted(e["id"] for e in found)
