"""Events as a projection of the audit log, and their webhook deliveries: signed per Standard
Webhooks (checked with the `standardwebhooks` package), at least once, by workers sharing the
work through the database."""

import threading
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update

from bridge import delivery, events, webhooks
from bridge.errors import InvalidInput
from bridge.models import Account, Delivery, DeliveryAttempt, WebhookEndpoint
from tests.receiver import Receiver

FAST = delivery.Tuning(
    threads=4,
    poll_seconds=0.02,
    lease=timedelta(seconds=30),
    timeout_seconds=5,
    first_retry=timedelta(milliseconds=50),
    max_retry=timedelta(milliseconds=200),
)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Workers:
    """Delivery workers on threads, stopped (bounded) at the end of the test."""

    def __init__(self, store, settings):
        self.store, self.settings, self.running = store, settings, []

    def start(self, n=1, tuning=FAST):
        for i in range(n):
            stop = threading.Event()
            sender = delivery.Sender(
                self.store, self.settings.secret_key, "http://bridge.test", True, tuning
            )
            thread = threading.Thread(
                target=delivery.run,
                args=(self.store, sender),
                kwargs={"stop": stop, "worker": f"t{i}"},
                daemon=True,
            )
            thread.start()
            self.running.append((stop, thread))

    def stop(self):
        for stop, _ in self.running:
            stop.set()
        for _, thread in self.running:
            thread.join(timeout=15)
        self.running = []


@pytest.fixture
def workers(store, settings):
    w = Workers(store, settings.ensure_secret_key())
    yield w
    w.stop()
    # This test's receivers are gone: keep later tests' workers off its leftovers.
    store.write(
        lambda db: db.execute(
            update(Delivery).where(Delivery.state == "pending").values(state="failed")
        )
    )


def _hook(store, settings, account, url, types=None):
    return webhooks.add(
        store,
        account.slug,
        url,
        types=types,
        secret_key=settings.ensure_secret_key().secret_key,
        allow_private=True,
        actor="t",
    )


def _changes(scim):
    """A user created, renamed, deactivated; a group with them as member; the user deleted."""
    user = scim.post("Users", {"userName": "ann@example.com", "name": {"givenName": "Ann"}}).json
    scim.patch(
        f"Users/{user['id']}",
        {"Operations": [{"op": "replace", "path": "displayName", "value": "Ann A."}]},
    )
    scim.patch(
        f"Users/{user['id']}", {"Operations": [{"op": "replace", "value": {"active": False}}]}
    )
    group = scim.post("Groups", {"displayName": "Editors", "members": [{"value": user["id"]}]}).json
    scim.delete(f"Groups/{group['id']}")
    scim.delete(f"Users/{user['id']}")
    return user["id"]


def test_event_feed_projects_the_audit_log_in_order(scim, store):
    """Each change appears once, in order, with its type; paging by cursor loses nothing."""
    user_id = _changes(scim)
    with store.read() as db:
        every, cursor = events.page(db, scim.account.id, limit=1000)
        types = [e.type for e in every]
        assert [t for t in types if t.startswith(("user.", "group."))] == [
            "user.created",
            "user.updated",
            "user.deactivated",
            "group.created",
            "group.member_added",
            "group.deleted",
            "user.deleted",
        ]
        assert types[0] == "token.issued" and "raw" not in every[0].data
        created = every[types.index("user.created")]
        assert created.data["user"]["id"] == user_id and created.data["access"]["role"]
        paged, after = [], 0
        for _ in range(50):
            chunk, after = events.page(db, scim.account.id, after=after, limit=2)
            if not chunk:
                break
            paged += chunk
        assert paged == every and after == cursor
        only, _ = events.page(db, scim.account.id, types=frozenset({"user.deactivated"}))
        assert [e.type for e in only] == ["user.deactivated"]


def test_unknown_event_type_is_refused():
    """Asking for an event type that does not exist is a clear error, not an empty feed."""
    with pytest.raises(InvalidInput, match="unknown event type"):
        events.parse_types(["user.created,user.exploded"])


def test_deliveries_survive_failures_and_match_the_feed(scim, store, settings, receiver, workers):
    """The receiver fails for a while, then recovers: every event arrives, verified, exactly as
    the feed lists it."""
    start = _head(store, scim.account) + 1  # the webhook.add event itself is not sent
    added = _hook(store, settings, scim.account, receiver.url)
    receiver.secrets = [added.secret]
    receiver.fail_next = 5
    workers.start(1)
    _changes(scim)
    with store.read() as db:
        want, _ = events.page(db, scim.account.id, after=0, limit=1000)
    want = [e.as_json() for e in want if e.seq > start]
    assert receiver.wait_for(lambda r: {p["id"] for p in r.received} >= {e["id"] for e in want})
    got = {p["id"]: p for p in receiver.received}
    assert [got[e["id"]] for e in want] == want
    assert receiver.rejected == 0
    workers.stop()  # lets the last attempts be recorded
    with store.read() as db:
        log = webhooks.log(db, scim.account.slug, added.id, limit=100)
    assert any(a["status"] == 500 for d in log for a in d["attempts"])
    assert {d["state"] for d in log} == {"delivered"} and len(log) == len(want)


def _head(store, account):
    with store.read() as db:
        return db.get(Account, account.id).audit_seq


def test_two_workers_deliver_each_event_once(scim, store, settings, receiver, workers):
    """Two workers share the queue through the database: no event is sent twice."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    workers.start(2)
    for i in range(30):
        scim.post("Users", {"userName": f"u{i}@example.com"})
    assert receiver.wait_for(lambda r: len(r.counts) == 30)
    workers.stop()
    assert set(receiver.counts.values()) == {1}


def test_a_killed_workers_claims_are_picked_up(scim, store, settings, receiver, workers):
    """Rows claimed by a worker that died are delivered by another once the lease runs out."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    for i in range(3):
        scim.post("Users", {"userName": f"k{i}@example.com"})
    delivery.project(store)
    short = replace(FAST, lease=timedelta(milliseconds=300))
    claimed = delivery.claim(store, "dead-worker", 100, short)  # and then it "dies"
    assert len(claimed) >= 3
    workers.start(1)
    assert receiver.wait_for(lambda r: len(r.counts) == 3)
    workers.stop()
    with store.read() as db:
        states = db.scalars(select(Delivery.state).where(Delivery.endpoint_id == added.id)).all()
    assert set(states) == {"delivered"}


def test_gone_disables_the_endpoint(scim, store, settings, receiver, workers):
    """410 Gone disables the endpoint: nothing more is sent to it."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    receiver.status = 410
    workers.start(1)
    scim.post("Users", {"userName": "gone@example.com"})
    assert receiver.wait_for(lambda r: len(r.counts) == 1)
    assert _wait_disabled(store, added.id)
    scim.post("Users", {"userName": "after@example.com"})
    assert not receiver.wait_for(lambda r: len(r.counts) > 1, timeout=1.0)


def test_an_answer_with_a_nul_is_recorded_once_and_not_sent_again(
    scim, store, settings, receiver, workers
):
    """An endpoint answering 200 with a NUL in its body: the attempt is recorded (the NUL as
    U+FFFD: PostgreSQL holds no NUL in text) and the delivery is done. Before, recording failed
    on PostgreSQL, so the delivery was sent again each time its lease ran out, for ever."""
    import time

    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets, receiver.status, receiver.reply = [added.secret], 200, b"ok\x00then"
    workers.start(1, tuning=replace(FAST, lease=timedelta(seconds=1)))
    scim.post("Users", {"userName": "nul@example.com"})
    assert receiver.wait_for(lambda r: len(r.counts) == 1)
    for _ in range(100):
        with store.read() as db:
            rows = db.execute(
                select(Delivery.state, DeliveryAttempt.status, DeliveryAttempt.response)
                .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id)
                .where(Delivery.endpoint_id == added.id)
            ).all()
        if rows:
            break
        time.sleep(0.05)
    assert [tuple(r) for r in rows] == [("delivered", 200, "ok\ufffdthen")]
    time.sleep(2.5)  # past the lease: a delivery left unrecorded would be claimed and sent again
    assert sum(receiver.counts.values()) == 1


def _wait_disabled(store, endpoint_id):
    import time

    for _ in range(100):
        with store.read() as db:
            hook = db.get(WebhookEndpoint, endpoint_id)
            if hook.disabled is not None:
                return "410" in hook.disabled_reason
        time.sleep(0.05)
    return False


def test_slow_endpoint_does_not_hold_up_others(scim, store, settings, workers):
    """One endpoint that takes seconds to answer does not delay another's deliveries."""
    slow, fast = Receiver(), Receiver()
    try:
        # held up, the fast endpoint's first delivery would wait out a slow one (5 s); the 4 s
        # allowed leave room for a loaded machine without letting that through
        slow.delay = 5.0
        a = _hook(store, settings, scim.account, slow.url, types=["user.created"])
        b = _hook(store, settings, scim.account, fast.url, types=["user.created"])
        slow.secrets, fast.secrets = [a.secret], [b.secret]
        workers.start(1)
        for i in range(3):
            scim.post("Users", {"userName": f"s{i}@example.com"})
        assert fast.wait_for(lambda r: len(r.counts) == 3, timeout=4.0)
        assert len(slow.counts) < 3  # still busy with the slow one
    finally:
        workers.stop()
        slow.close()
        fast.close()


def test_a_slow_endpoint_with_more_events_than_threads_does_not_take_them_all(
    scim, store, settings, workers
):
    """A slow endpoint with more deliveries due than the worker has threads gets half of them
    while another endpoint waits: the other's deliveries all arrive meanwhile."""
    slow, fast = Receiver(), Receiver()
    try:
        slow.delay = 5.0
        a = _hook(store, settings, scim.account, slow.url, types=["user.created"])
        b = _hook(store, settings, scim.account, fast.url, types=["user.created"])
        slow.secrets, fast.secrets = [a.secret], [b.secret]
        for i in range(2 * FAST.threads):  # all queued in the worker's first poll
            scim.post("Users", {"userName": f"m{i}@example.com"})
        workers.start(1)
        assert fast.wait_for(lambda r: len(r.counts) == 2 * FAST.threads, timeout=4.0)
        assert not slow.counts  # its first sends are still waiting on the slow answers
    finally:
        workers.stop()
        slow.close()
        fast.close()


def test_a_stopping_worker_gives_back_the_claims_it_did_not_send(
    scim, store, settings, receiver, workers
):
    """Deliveries a worker claimed but had no thread for when it was stopped are due again at
    once (not when their lease runs out), and the next worker sends them."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    receiver.delay = 1.0
    for i in range(3):
        scim.post("Users", {"userName": f"g{i}@example.com"})
    workers.start(1, replace(FAST, threads=1))

    def claimed():
        with store.read() as db:
            return db.scalars(
                select(Delivery.claimed_by).where(Delivery.endpoint_id == added.id)
            ).all()

    assert _eventually(lambda: claimed() == ["t0"] * 3)  # one sending, two waiting
    workers.stop()
    with store.read() as db:
        rows = db.scalars(
            select(Delivery).where(Delivery.endpoint_id == added.id).order_by(Delivery.id)
        ).all()
    waiting = [r for r in rows if r.state == "pending"]
    assert len(rows) - len(waiting) == len(receiver.counts) == 1
    assert [(r.claimed_by, r.claimed_until, r.attempts) for r in waiting] == [(None, None, 0)] * 2
    receiver.delay = 0.0
    workers.start(1)
    assert receiver.wait_for(lambda r: len(r.counts) == 3, timeout=5.0)


def _eventually(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_an_endpoint_that_cannot_be_projected_holds_up_no_other(scim, store, settings, caplog):
    """Endpoints are projected in one transaction; when one of them cannot be (here a row
    already holds its next message id), the others are projected alone and it stays behind."""
    a = _hook(store, settings, scim.account, "http://127.0.0.1:9/a", types=["user.created"])
    b = _hook(store, settings, scim.account, "http://127.0.0.1:9/b", types=["user.created"])
    both = delivery.Scan([a.id, b.id], [], False)
    try:
        delivery.project(store, found=both)  # both at the head
        scim.post("Users", {"userName": "stuck@example.com"})
        message_id = f"evt_{_head(store, scim.account)}_0"

        def taken(db):  # what a second projection of the same event would have written
            db.add(
                Delivery(
                    account_id=scim.account.id,
                    endpoint_id=a.id,
                    message_id=message_id,
                    event_type="user.created",
                    body="{}",
                    state="delivered",
                )
            )

        store.write(taken)
        queued, _ = delivery.project(store, found=both)
        assert queued == 1
        assert "could not be projected" in caplog.text
        with store.read() as db:
            rows = db.scalars(select(Delivery).where(Delivery.account_id == scim.account.id)).all()
            cursors = {i: db.get(WebhookEndpoint, i).cursor for i in (a.id, b.id)}
        assert sorted((r.endpoint_id, r.state) for r in rows) == [
            (a.id, "delivered"),
            (b.id, "pending"),
        ]
        assert cursors[b.id] == _head(store, scim.account) and cursors[a.id] < cursors[b.id]
    finally:  # no stuck endpoint or pending delivery left for later tests' workers
        for hook in (a, b):
            webhooks.remove(store, scim.account.slug, hook.id, actor="t")


def test_a_projection_round_stops_near_a_batch_of_rows(scim, store, settings, monkeypatch):
    """One transaction queues about BATCH rows at most, whatever the number of endpoints behind
    (after an outage); the endpoints left over are projected in the next round."""
    a = _hook(store, settings, scim.account, "http://127.0.0.1:9/a", types=["user.created"])
    b = _hook(store, settings, scim.account, "http://127.0.0.1:9/b", types=["user.created"])
    both = delivery.Scan([a.id, b.id], [], False)
    try:
        delivery.project(store, found=both)  # both at the head
        for i in range(3):
            scim.post("Users", {"userName": f"batch{i}@example.com"})
        monkeypatch.setattr(delivery, "BATCH", 2)
        head = _head(store, scim.account)

        def cursors():
            with store.read() as db:
                return sorted(db.get(WebhookEndpoint, i).cursor for i in (a.id, b.id))

        assert delivery.project(store, found=both)[0] == 3  # one endpoint's three
        assert cursors()[1] == head and cursors()[0] < head
        assert delivery.project(store, found=both)[0] == 3  # then the other's
        assert cursors() == [head, head]
    finally:
        for hook in (a, b):
            webhooks.remove(store, scim.account.slug, hook.id, actor="t")


def test_rotation_sends_both_signatures(scim, store, settings, receiver, workers):
    """After a rotation each delivery verifies with the old secret and with the new one."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    new = webhooks.rotate_secret(
        store,
        scim.account.slug,
        added.id,
        secret_key=settings.ensure_secret_key().secret_key,
        actor="t",
    )
    receiver.secrets = [added.secret]
    workers.start(1)
    scim.post("Users", {"userName": "rot@example.com"})
    assert receiver.wait_for(lambda r: len(r.counts) == 1)
    receiver.secrets = [new]
    webhooks.redeliver(store, scim.account.slug, _only_delivery(store, added.id), actor="t")
    assert receiver.wait_for(lambda r: sum(r.counts.values()) == 2)  # the same id, again
    assert len(receiver.headers[-1]["webhook-signature"].split()) == 2


def test_a_redeliver_during_an_attempt_is_not_lost(scim, store, settings, receiver, workers):
    """Redeliver while an attempt is in flight: that attempt's answer does not settle the row,
    which stays due and is sent again."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    scim.post("Users", {"userName": "inflight@example.com"})
    delivery.project(store)
    (job,) = delivery.claim(store, "w-test", 10, FAST)
    webhooks.redeliver(store, scim.account.slug, job.id, actor="t")  # while it is "in flight"
    sender = delivery.Sender(store, settings.ensure_secret_key().secret_key, "x", True, FAST)
    sender.send(job)
    assert sum(receiver.counts.values()) == 1
    with store.read() as db:
        row = db.get(Delivery, job.id)
        assert (row.state, row.attempts, row.claimed_until) == ("pending", 1, None)
    workers.start(1)
    assert receiver.wait_for(lambda r: sum(r.counts.values()) == 2)
    workers.stop()
    with store.read() as db:
        assert db.get(Delivery, job.id).state == "delivered"


def _sent(store, settings, scim, n):
    """n users created, their deliveries queued, claimed and sent: the results to record."""
    for _ in range(n):
        scim.post("Users", {"userName": f"{uuid.uuid4().hex}@example.com"})
    delivery.project(store)
    jobs = delivery.claim(store, "w-test", 100, FAST)
    sender = delivery.Sender(store, settings.ensure_secret_key().secret_key, "x", True, FAST)
    return sender, [(job, sender.attempt(job)) for job in jobs]


@contextmanager
def _counted(store):
    """Statements and commits on the store's engine while the block runs."""
    seen = {"statements": 0, "commits": 0}

    def on_statement(*_args):
        seen["statements"] += 1

    def on_commit(_conn):
        seen["commits"] += 1

    event.listen(store.engine, "before_cursor_execute", on_statement)
    event.listen(store.engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", on_statement)
        event.remove(store.engine, "commit", on_commit)


def test_finished_attempts_are_recorded_in_one_transaction(scim, store, settings, receiver):
    """A round's finished attempts are logged and settled in one transaction, whose statements
    do not grow with the number of attempts."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    sender, results = _sent(store, settings, scim, 5)
    assert len(results) == 5 and sum(receiver.counts.values()) == 5
    with _counted(store) as two:
        sender.record(results[:2])
    with _counted(store) as three:
        sender.record(results[2:])
    assert two["commits"] == three["commits"] == 1
    assert two["statements"] == three["statements"]
    with store.read() as db:
        rows = db.scalars(select(Delivery).where(Delivery.endpoint_id == added.id)).all()
        assert {(r.state, r.attempts, r.claimed_until) for r in rows} == {("delivered", 1, None)}
        logged = db.scalars(
            select(DeliveryAttempt.delivery_id).where(
                DeliveryAttempt.delivery_id.in_([r.id for r in rows])
            )
        ).all()
    assert len(rows) == 5 and sorted(logged) == sorted(r.id for r in rows)  # one attempt each


def test_a_recorder_writes_what_finished_together_in_one_transaction(
    scim, store, settings, receiver
):
    """The worker's recorder writes the attempts that finished while it was busy (or lingering)
    in one transaction, and everything put before it closes is recorded."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    sender, results = _sent(store, settings, scim, 4)
    recorder = delivery.Recorder(sender)
    for job, answer in results:  # all finished before the recorder gets to them
        recorder.put(job, answer)
    with _counted(store) as seen:
        recorder.start()
        recorder.close()
    assert seen["commits"] == 1
    with store.read() as db:
        rows = db.scalars(select(Delivery).where(Delivery.endpoint_id == added.id)).all()
    assert len(rows) == 4
    assert {(r.state, r.attempts, r.claimed_until) for r in rows} == {("delivered", 1, None)}


def test_an_attempt_that_cannot_be_recorded_costs_none_of_the_others(
    scim, store, settings, receiver, workers, monkeypatch
):
    """When one attempt of a round cannot be recorded, the others still are; that one keeps its
    claim until the lease runs out, and is then sent again (at least once, never lost)."""
    added = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
    receiver.secrets = [added.secret]
    sender, results = _sent(store, settings, scim, 3)
    bad = results[1][0].id
    record = delivery.Sender._record

    def failing(self, db, row, answer):
        if row is not None and row.id == bad:
            raise RuntimeError("cannot record this one")
        return record(self, db, row, answer)

    monkeypatch.setattr(delivery.Sender, "_record", failing)
    sender.record(results)
    monkeypatch.setattr(delivery.Sender, "_record", record)
    with store.read() as db:
        rows = {
            r.id: r for r in db.scalars(select(Delivery).where(Delivery.endpoint_id == added.id))
        }
        logged = db.scalars(
            select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.delivery_id.in_(list(rows)))
        ).all()
        assert {i: (r.state, r.attempts) for i, r in rows.items()} == {
            i: ("pending", 0) if i == bad else ("delivered", 1) for i in rows
        }
        assert rows[bad].claimed_by == "w-test" and rows[bad].claimed_until is not None
    assert sorted(logged) == sorted(i for i in rows if i != bad)  # nothing written for it
    store.write(  # its lease runs out (as a worker's 60 s would)
        lambda db: db.execute(
            update(Delivery).where(Delivery.id == bad).values(claimed_until=Delivery.created)
        )
    )
    workers.start(1)
    assert receiver.wait_for(lambda r: sum(r.counts.values()) == 4)  # sent again
    workers.stop()
    with store.read() as db:
        assert db.get(Delivery, bad).state == "delivered"


def test_an_endpoint_removed_during_an_attempt_does_not_fail_the_round(
    scim, store, settings, receiver
):
    """An endpoint removed while its delivery is in flight (its rows gone with it) does not stop
    the same round's other attempts from being recorded."""
    other = Receiver()
    try:
        gone = _hook(store, settings, scim.account, other.url, types=["user.created"])
        kept = _hook(store, settings, scim.account, receiver.url, types=["user.created"])
        other.secrets, receiver.secrets = [gone.secret], [kept.secret]
        sender, results = _sent(store, settings, scim, 1)
        assert {job.endpoint_id for job, _ in results} == {gone.id, kept.id}
        webhooks.remove(store, scim.account.slug, gone.id, actor="t")
        with _counted(store) as seen:
            sender.record(results)
        assert seen["commits"] == 1  # one transaction: nothing had to be recorded on its own
    finally:
        other.close()
    with store.read() as db:
        rows = db.scalars(select(Delivery).where(Delivery.account_id == scim.account.id)).all()
    assert [(r.endpoint_id, r.state, r.attempts) for r in rows] == [(kept.id, "delivered", 1)]
    assert other.counts and receiver.counts  # both were sent


def _only_delivery(store, endpoint_id):
    with store.read() as db:
        return db.scalar(select(Delivery.id).where(Delivery.endpoint_id == endpoint_id))


def test_backoff_grows_and_gives_up_after_three_days():
    """Retries back off exponentially with jitter up to the cap, for about three days."""
    tuning = delivery.Tuning()
    waits = [delivery.backoff(n, tuning) for n in range(1, 15)]
    assert timedelta(seconds=2.5) <= waits[0] <= timedelta(seconds=5)
    assert all(w <= tuning.max_retry for w in waits) and waits[-1] >= tuning.max_retry / 2
    total, n = timedelta(0), 0
    while total < tuning.give_up_after:
        n += 1
        total += delivery.backoff(n, tuning)
    assert 10 <= n <= 30


def test_private_and_plain_http_urls_are_refused(store, settings, account):
    """https only and public addresses only (unless the deployment allows private ones);
    nothing is written when refused."""
    key = settings.ensure_secret_key().secret_key
    for url, reason in (
        ("http://example.com/hook", "must be https"),
        ("https://127.0.0.1/hook", "non-public address"),
        ("https://10.1.2.3/hook", "non-public address"),
    ):
        with pytest.raises(InvalidInput, match=reason):
            webhooks.add(
                store, account.slug, url, types=None, secret_key=key, allow_private=False, actor="t"
            )
    with store.read() as db:
        assert webhooks.list_for(db, account.slug) == []


def test_cli_webhooks_add_prints_the_secret_last(cli, account, store):
    """`idbridge webhooks add` prints the signing secret alone on the last line; list hides it."""
    cli.env["BRIDGE_ALLOW_PRIVATE_WEBHOOKS"] = "1"
    out = cli(
        "webhooks",
        "add",
        account.slug,
        "http://127.0.0.1:9/hook",
        "--events",
        "user.created,user.deleted",
    )
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    listed = cli("webhooks", "list", account.slug).output
    assert "user.created,user.deleted" in listed and secret not in listed
    with store.read() as db:
        row = db.scalar(select(WebhookEndpoint).where(WebhookEndpoint.account_id == account.id))
        assert secret not in row.secret_sealed
    bad = cli("webhooks", "add", account.slug, "https://example.com/h", "--events", "nope")
    assert bad.exit_code == 1 and "unknown event type" in bad.output


def test_worker_command_delivers_and_stops_on_sigterm(
    database_url, tmp_path, scim, store, settings, receiver
):
    """`idbridge worker` (the Procfile's worker:) delivers, and stops cleanly on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    key = settings.ensure_secret_key().secret_key
    added = webhooks.add(
        store,
        scim.account.slug,
        receiver.url,
        types=["user.created"],
        secret_key=key,
        allow_private=True,
        actor="t",
    )
    receiver.secrets = [added.secret]
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_SECRET_KEY": key,
        "BRIDGE_INSTANCE_PATH": str(tmp_path),
        "BRIDGE_ALLOW_PRIVATE_WEBHOOKS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker", "--threads", "2"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        scim.post("Users", {"userName": "cli-worker@example.com"})
        assert receiver.wait_for(lambda r: len(r.counts) == 1, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_logins_appear_in_the_feed_with_their_reason(client, store, account):
    """A refused SAML login is `login.failed` with its typed reason; a good one
    `login.succeeded` naming the user."""
    from bridge import idps
    from tests.saml_idp import TestIdP, parse_authn_request

    idp = TestIdP()
    idps.add(store, account.slug, idp.metadata_xml(), name="test", actor="t")
    base = f"http://127.0.0.1:8000/saml/{account.slug}"
    kw = {"destination": f"{base}/acs", "audience": f"{base}/metadata", "name_id": "z@example.com"}
    client.post(f"/saml/{account.slug}/acs", data=idp.post_form(idp.response(**kw)))
    sent = parse_authn_request(client.get(f"/saml/{account.slug}/login").headers["Location"])
    client.post(
        f"/saml/{account.slug}/acs", data=idp.post_form(idp.response(in_response_to=sent.id, **kw))
    )
    with store.read() as db:
        found, _ = events.page(db, account.id, types=frozenset({"login.failed", "login.succeeded"}))
    assert [(e.type, e.data["reason"], e.data["idp"]) for e in found] == [
        ("login.failed", "idp_initiated_not_allowed", "test"),
        ("login.succeeded", "ok", "test"),
    ]
    assert found[0].data["user"] is None and found[1].data["user"]["id"]


def test_cli_events_pages_by_cursor(cli, scim):
    """`idbridge events SLUG --after N` pages through the feed; a bad type is a clear error."""
    import json

    _changes(scim)
    slug = scim.account.slug
    whole = json.loads(cli("events", slug, "--limit", "1000").output)
    seen, after = [], "0"
    for _ in range(50):
        page = json.loads(cli("events", slug, "--after", after, "--limit", "3").output)
        if not page["events"]:
            break
        seen += page["events"]
        after = page["next_cursor"]
    assert seen == whole["events"] and after == whole["next_cursor"]
    only = json.loads(cli("events", slug, "--type", "user.deleted").output)["events"]
    assert [e["type"] for e in only] == ["user.deleted"]
    bad = cli("events", slug, "--type", "user.gone")
    assert bad.exit_code == 1 and "unknown event type" in bad.output


def test_membership_changes_are_events(scim, store):
    """SCIM member add and remove on an existing group are group.member_added/removed naming
    the members; a rename is group.updated."""
    ann = scim.post("Users", {"userName": "m1@example.com"}).json["id"]
    group = scim.post("Groups", {"displayName": "Team"}).json["id"]
    patch = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    scim.patch(
        f"Groups/{group}",
        {
            "schemas": [patch],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": ann}]}],
        },
    )
    scim.patch(
        f"Groups/{group}",
        {
            "schemas": [patch],
            "Operations": [
                {"op": "remove", "path": f'members[value eq "{ann}"]'},
                {"op": "replace", "path": "displayName", "value": "Team B"},
            ],
        },
    )
    with store.read() as db:
        found, _ = events.page(db, scim.account.id, limit=1000)
    mine = [(e.type, e.data.get("members")) for e in found if e.type.startswith("group.")]
    assert mine == [
        ("group.created", None),
        ("group.member_added", [ann]),
        ("group.updated", None),
        ("group.member_removed", [ann]),
    ]
