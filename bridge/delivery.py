"""Delivery workers: queue what the audit log means for each endpoint, then send it at least once.

Projection: for each webhook endpoint (and each OIDC client with a back-channel logout URI)
whose cursor is behind its account's audit head, the events after the cursor become delivery
rows and the cursor moves, in one transaction (the row is locked with SKIP LOCKED on PostgreSQL,
so two workers never project the same endpoint; a unique message id per endpoint backs that up).

Sending: a worker claims due rows (SKIP LOCKED on PostgreSQL; SQLite's write lock serialises
claims) for a lease, sends each on its own thread (a slow endpoint holds one thread, never the
others), and records the attempt. A killed worker's lease runs out and another worker takes the
row: at-least-once, the receiver de-duplicates on the event id. Failures back off exponentially
with jitter for about three days; 410 Gone disables the endpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import random
import secrets
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import Select, func, insert, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from bridge import authcodes, egress, events, expiry, metrics, retention, sealing, signing_keys
from bridge.models import (
    Account,
    Delivery,
    DeliveryAttempt,
    OidcClient,
    WebhookEndpoint,
    utcnow,
)
from bridge.store import Store

log = logging.getLogger(__name__)
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
BATCH = 500
ENDPOINT_TTL = 5.0  # seconds a worker trusts its copy of an endpoint's URL and secrets
SWEEP_EVERY = 300.0  # seconds between sweeps: expired codes and tokens, certificate expiry
BACKLOG_EVERY = 2.0  # seconds between counts of pending deliveries (metrics)


@dataclass(frozen=True)
class Tuning:
    """How a worker behaves; tests shorten the delays."""

    threads: int = 8
    poll_seconds: float = 0.1
    lease: timedelta = timedelta(seconds=60)
    timeout_seconds: float = 10.0
    first_retry: timedelta = timedelta(seconds=5)
    max_retry: timedelta = timedelta(hours=12)
    give_up_after: timedelta = timedelta(days=3)
    retention: retention.Retention = field(default_factory=retention.Retention)


def backoff(attempts: int, tuning: Tuning) -> timedelta:
    """Exponential (x3 per attempt) with full jitter on its upper half, capped."""
    ceiling: timedelta = min(tuning.first_retry * 3 ** max(0, attempts - 1), tuning.max_retry)
    return ceiling * random.uniform(0.5, 1.0)


# projection ------------------------------------------------------------------------------------


def _skip_locked(db: Session) -> bool:
    return db.get_bind().dialect.name == "postgresql"


@dataclass(frozen=True)
class Grab:
    """A worker taking the rows it queues at once (no second transaction to claim them)."""

    worker: str
    until: datetime
    budget: int


@dataclass(frozen=True)
class Scan:
    """What one look at the queue found: endpoints and clients behind their account's audit
    head, and whether any delivery is due (a retry, a redeliver, a dead worker's claim)."""

    hooks: list[int]
    logouts: list[int]
    due: bool


def scan(store: Store) -> Scan:
    """One read transaction for a whole poll (most polls find nothing: no write for those)."""
    with store.read() as db:
        hooks = db.scalars(
            select(WebhookEndpoint.id)
            .join(Account, Account.id == WebhookEndpoint.account_id)
            .where(WebhookEndpoint.disabled.is_(None), WebhookEndpoint.cursor < Account.audit_seq)
        ).all()
        logouts = db.scalars(
            select(OidcClient.id)
            .join(Account, Account.id == OidcClient.account_id)
            .where(
                OidcClient.backchannel_logout_uri.is_not(None),
                OidcClient.logout_cursor < Account.audit_seq,
            )
        ).all()
        due = _any_due(db)
    return Scan(list(hooks), list(logouts), due)


def project(
    store: Store, grab: Grab | None = None, found: Scan | None = None
) -> tuple[int, list[Job]]:
    """Queue deliveries for every endpoint behind its account's audit head (as `found`, or as
    a fresh scan finds them); return how many, and (with `grab`) up to `grab.budget` of them
    already claimed by that worker."""
    found = found or scan(store)
    queued, taken = 0, list[Job]()
    work = [functools.partial(_project_hook, endpoint_id=i) for i in found.hooks]
    work += [functools.partial(_project_logout, client_pk=i) for i in found.logouts]
    for unit in work:
        left = None if grab is None else replace(grab, budget=grab.budget - len(taken))
        count, jobs = store.write(functools.partial(unit, grab=left))
        queued += count
        taken += jobs
    return queued, taken


def _queue(db: Session, rows: list[Delivery], grab: Grab | None) -> list[Job]:
    """Add the rows; claim the first `grab.budget` of them for the grabbing worker."""
    mine = rows[: max(0, grab.budget)] if grab is not None else []
    for row in mine:
        row.claimed_by, row.claimed_until = grab.worker, grab.until  # type: ignore[union-attr]
    db.add_all(rows)
    db.flush()
    return [_job(row) for row in mine]


def _locked(db: Session, model: type[WebhookEndpoint] | type[OidcClient], row_id: int):  # type: ignore[no-untyped-def]
    stmt = select(model).where(model.id == row_id)
    stmt = stmt.with_for_update(skip_locked=True) if _skip_locked(db) else stmt
    return db.scalar(stmt)


def _project_hook(db: Session, endpoint_id: int, grab: Grab | None) -> tuple[int, list[Job]]:
    hook: WebhookEndpoint | None = _locked(db, WebhookEndpoint, endpoint_id)
    if hook is None or hook.disabled is not None:
        return 0, []
    rows = events.audit_after(db, hook.account_id, hook.cursor, BATCH)
    wanted = frozenset(hook.events) or None
    found = [
        Delivery(
            account_id=hook.account_id,
            endpoint_id=hook.id,
            message_id=event.id,
            event_type=event.type,
            body=json.dumps(event.as_json(), separators=(",", ":"), sort_keys=True),
        )
        for event in events.project(rows, wanted)
    ]
    if rows:
        hook.cursor = rows[-1].seq
    return len(found), _queue(db, found, grab)


def _project_logout(db: Session, client_pk: int, grab: Grab | None) -> tuple[int, list[Job]]:
    client: OidcClient | None = _locked(db, OidcClient, client_pk)
    if client is None or not client.backchannel_logout_uri:
        return 0, []
    rows = events.audit_after(db, client.account_id, client.logout_cursor, BATCH)
    found = []
    for event, claims in _logouts(events.project(rows, LOGOUT_TYPES)):
        suffix = claims.pop("#", None)
        found.append(
            Delivery(
                account_id=client.account_id,
                client_pk=client.id,
                message_id=f"{event.id}_{suffix}" if suffix else event.id,
                event_type="backchannel_logout",
                body=json.dumps(claims),
            )
        )
    if rows:
        client.logout_cursor = rows[-1].seq
    return len(found), _queue(db, found, grab)


LOGOUT_TYPES = frozenset(
    {"user.deactivated", "user.deleted", "session.ended", "idp.removed", "idp.disabled"}
)


def _logouts(found: list[events.Event]) -> list[tuple[events.Event, dict[str, str]]]:
    """The logout tokens' subject claims each event calls for (OpenID Back-Channel Logout §2.4:
    `sub` for all of a user's sessions, `sid` for one)."""
    out: list[tuple[events.Event, dict[str, str]]] = []
    for event in found:
        if event.type in ("idp.removed", "idp.disabled"):
            for n, ended in enumerate(event.data.get("ended_sessions", [])):
                out.append((event, {"sub": ended["user"], "sid": ended["sid"], "#": str(n)}))
        elif event.type == "session.ended":
            out.append((event, {"sub": event.data["user"]["id"], "sid": event.data["sid"]}))
        else:
            out.append((event, {"sub": event.data["user"]["id"]}))
    return out


# claiming and sending --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    account_id: int
    endpoint_id: int | None
    client_pk: int | None
    message_id: str
    body: str
    attempts: int
    created: datetime


def _job(r: Delivery) -> Job:
    return Job(
        r.id,
        r.account_id,
        r.endpoint_id,
        r.client_pk,
        r.message_id,
        r.body,
        r.attempts,
        r.created or utcnow(),
    )


def _due(now: datetime) -> Select[Delivery]:
    return select(Delivery).where(
        Delivery.state == "pending",
        Delivery.next_attempt <= now,
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
    )


def _any_due(db: Session) -> bool:
    return db.scalar(_due(utcnow()).with_only_columns(Delivery.id).limit(1)) is not None


def claim(
    store: Store, worker: str, limit: int, tuning: Tuning, *, probe: bool = True
) -> list[Job]:
    """Take up to `limit` due deliveries for the lease (rows other workers hold are skipped);
    `probe=False` when a scan just found some due (no second read to ask again)."""
    if probe:
        with store.read() as db:  # most polls find nothing: no write transaction for those
            if not _any_due(db):
                return []

    def work(db: Session) -> list[Job]:
        now = utcnow()
        due = _due(now).order_by(Delivery.next_attempt, Delivery.id).limit(limit)
        if _skip_locked(db):
            due = due.with_for_update(skip_locked=True)
        rows = db.scalars(due).all()
        for row in rows:
            row.claimed_until = now + tuning.lease
            row.claimed_by = worker
        return [_job(r) for r in rows]

    return store.write(work)


@dataclass
class Sender:
    """Sends claimed deliveries and records their outcomes."""

    store: Store
    secret_key: str
    issuer: str
    allow_private: bool
    tuning: Tuning
    _endpoints: dict[int, tuple[float, str, list[str]]] = field(default_factory=dict, init=False)

    def send(self, job: Job) -> None:
        """Send one delivery and record the attempt."""
        self.record([(job, self.attempt(job))])

    def attempt(self, job: Job) -> egress.Answer:
        """Send one delivery; the answer, or why there was none (never raises)."""
        try:
            prepared = self._prepare(job)
            if prepared is None:
                return egress.Answer(None, 0, None, "endpoint or client no longer exists")
            url, body, headers = prepared
            timeout = self.tuning.timeout_seconds
            return egress.post(
                url, body, headers, allow_private=self.allow_private, timeout=timeout
            )
        except Exception:  # a delivery that cannot even be built is logged, not retried hot
            log.exception("delivery %d could not be prepared", job.id)
            return egress.Answer(None, 0, None, "the delivery could not be built (worker log)")

    def record(self, results: list[tuple[Job, egress.Answer]]) -> None:
        """Record finished attempts in one transaction. Should that fail, each is recorded in
        one of its own, so one that cannot be recorded costs none of the others; that one keeps
        its claim until the lease runs out and is then sent again (at least once)."""
        if not results:
            return
        try:
            outcomes = self.store.write(lambda db: self._record_all(db, results))
        except Exception:
            if len(results) == 1:
                log.exception("the attempt of delivery %d could not be recorded", results[0][0].id)
                return
            log.exception("%d attempts could not be recorded together: one by one", len(results))
            for one in results:
                self.record([one])
            return
        for (job, _), outcome in zip(results, outcomes, strict=True):
            kind = "webhook" if job.endpoint_id is not None else "logout"
            metrics.WEBHOOK_DELIVERIES.labels(kind, outcome).inc()  # after the commit: once

    def _endpoint(self, endpoint_id: int) -> tuple[str, list[str]] | None:
        """An endpoint's URL and signing secrets, cached for ENDPOINT_TTL seconds (a rotation
        or removal reaches the workers within that time)."""
        cached = self._endpoints.get(endpoint_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        with self.store.read() as db:
            hook = db.get(WebhookEndpoint, endpoint_id)
            if hook is None:
                return None
            now = utcnow()
            sealed = [hook.secret_sealed]
            if hook.previous_secret_sealed and hook.previous_until and hook.previous_until > now:
                sealed.append(hook.previous_secret_sealed)
            url = hook.url
        keys = [sealing.unseal(self.secret_key, k).decode() for k in sealed]
        self._endpoints[endpoint_id] = (time.monotonic() + ENDPOINT_TTL, url, keys)
        return url, keys

    def _prepare(self, job: Job) -> tuple[str, bytes, dict[str, str]] | None:
        if job.endpoint_id is not None:
            found = self._endpoint(job.endpoint_id)
            if found is None:
                return None
            return found[0], job.body.encode(), self._signed(found[1], job)
        with self.store.read() as db:
            client = db.get(OidcClient, job.client_pk)
            if client is None or not client.backchannel_logout_uri:
                return None
            url, client_id = client.backchannel_logout_uri, client.client_id
        token = self._logout_token(client_id, json.loads(job.body))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return url, urlencode({"logout_token": token}).encode(), headers

    def _signed(self, keys: list[str], job: Job) -> dict[str, str]:
        """Standard Webhooks headers; both signatures while a rotated-out secret overlaps."""
        now = datetime.now(UTC)
        signatures = [Webhook(key).sign(job.message_id, now, job.body) for key in keys]
        return {
            "Content-Type": "application/json",
            "webhook-id": job.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(signatures),
        }

    def _logout_token(self, client_id: str, claims: dict[str, str]) -> str:
        """OpenID Back-Channel Logout 1.0 §2.4: signed like ID tokens, no nonce, an events claim."""
        now = int(time.time())
        key = signing_keys.current(self.store, self.secret_key)
        body = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "events": {LOGOUT_EVENT: {}},
            **claims,
        }
        return signing_keys.sign(key, body, typ="logout+jwt")

    def _record_all(self, db: Session, results: list[tuple[Job, egress.Answer]]) -> list[str]:
        """Lock the rows (in id order: two workers never wait on each other in a circle), then
        log each attempt and move its row on; the outcomes, in order (metrics labels)."""
        ids = sorted({job.id for job, _ in results})
        locked = select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id)
        rows = {row.id: row for row in db.scalars(locked.with_for_update())}
        outcomes = [self._record(db, rows.get(job.id), answer) for job, answer in results]
        logged = [
            {
                "delivery_id": job.id,
                "status": answer.status,
                "latency_ms": answer.latency_ms,
                "response": answer.excerpt,
                "error": answer.error,
            }
            for job, answer in results
            if job.id in rows
        ]
        if logged:  # one statement for the round's attempts
            db.execute(insert(DeliveryAttempt), logged)
        return outcomes

    def _record(self, db: Session, row: Delivery | None, answer: egress.Answer) -> str:
        """Move the row on after an attempt; returns the outcome (a metrics label)."""
        if row is None:  # its endpoint or client was removed while the attempt was in flight
            return "missing"
        now = utcnow()
        row.attempts += 1
        if row.state == "pending" and row.claimed_until is None:
            # sent again by hand (webhooks.redeliver) while this attempt was in flight: it is
            # due again, and this older attempt's answer must not settle it
            return "retrying"
        row.claimed_until = None
        if answer.status is not None and 200 <= answer.status < 300:
            row.state, row.delivered = "delivered", now
            return "delivered"
        elif answer.status == 410 and row.endpoint_id is not None:
            row.state = "failed"  # Standard Webhooks: 410 Gone means stop sending
            db.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == row.endpoint_id)
                .values(disabled=now, disabled_reason="the endpoint answered 410 Gone")
            )
            return "gone"
        else:
            retry_at = now + backoff(row.attempts, self.tuning)
            if retry_at - row.created > self.tuning.give_up_after:
                row.state = "failed"
                return "failed"
            row.next_attempt = retry_at
        return "retrying"


# the worker loop -------------------------------------------------------------------------------


def count_backlog(store: Store) -> None:
    """Set the backlog gauges: how many deliveries wait, and for how long the oldest has."""
    with store.read() as db:
        pending, oldest = db.execute(
            select(func.count(), func.min(Delivery.created)).where(Delivery.state == "pending")
        ).one()
    metrics.WEBHOOK_BACKLOG.set(pending)
    age = (utcnow() - _aware(oldest)).total_seconds() if oldest is not None else 0.0
    metrics.WEBHOOK_OLDEST_PENDING.set(max(0.0, age))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite drops the zone


def sweep(store: Store, tuning: Tuning) -> None:
    """The periodic chores: expired codes and tokens go, due certificate notices are written,
    finished deliveries and login attempts past their retention go."""
    authcodes.purge(store)
    expiry.check(store)
    retention.prune(store, tuning.retention)


class Recorder:
    """Records finished attempts on a thread of its own, one transaction for all that finished
    while it lingered or wrote the last one (group commit): the loop that projects and claims
    never waits on it, and a burst of attempts costs one transaction, not one each."""

    LINGER = 0.05  # seconds the first result of a round waits for others to join it

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.results: queue.SimpleQueue[tuple[Job, egress.Answer] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, job: Job, answer: egress.Answer) -> None:
        self.results.put((job, answer))

    def close(self) -> None:
        """Record everything put so far, then stop."""
        self.results.put(None)
        self.thread.join()

    def _run(self) -> None:
        closing = False
        while not closing:
            batch = [self.results.get()]
            time.sleep(self.LINGER if batch[0] is not None else 0)
            while not self.results.empty():
                batch.append(self.results.get())
            closing = None in batch
            try:
                self.sender.record([r for r in batch if r is not None])
            except Exception:  # never: record logs its own failures; the thread must not die
                log.exception("recording failed")


def run(
    store: Store,
    sender: Sender,
    *,
    stop: threading.Event,
    worker: str | None = None,
) -> None:
    """Project and deliver until `stop` is set; one slow endpoint occupies one thread only.

    Threads send; a Recorder records what they finished, a transaction per round of attempts
    (a transaction per attempt was most of the worker's cost to the SCIM writers)."""
    worker = worker or f"w-{secrets.token_hex(4)}"
    tuning = sender.tuning
    inflight: set[Future[None]] = set()
    swept = counted = -SWEEP_EVERY  # the first sweep runs at once
    recorder = Recorder(sender)
    recorder.start()
    with ThreadPoolExecutor(tuning.threads, thread_name_prefix=worker) as pool:

        def start(jobs: list[Job]) -> None:
            for job in jobs:
                inflight.add(pool.submit(lambda j: recorder.put(j, sender.attempt(j)), job))

        while not stop.is_set():
            busy = False
            try:
                inflight = {f for f in inflight if not f.done()}
                if time.monotonic() - swept > SWEEP_EVERY:
                    swept = time.monotonic()
                    sweep(store, tuning)
                if time.monotonic() - counted > BACKLOG_EVERY:
                    count_backlog(store)
                    counted = time.monotonic()
                free = tuning.threads - len(inflight)
                grab = Grab(worker, utcnow() + tuning.lease, free)
                found = scan(store)  # one read: what to project, and whether any row is due
                queued, fresh = project(store, grab, found)
                # Go round again at once only with work left over (a backlog); otherwise wait a
                # poll, so a steady stream of events is projected a poll's worth per transaction
                # instead of one transaction per event (the worker's cost to the SCIM writers).
                busy = queued > len(fresh) or queued >= BATCH
                start(fresh)  # queued and claimed in one transaction: sent at once
                free -= len(fresh)
                if free > 0 and found.due:
                    claimed = claim(store, worker, free, tuning, probe=False)
                    start(claimed)
                    free -= len(claimed)
                    busy = busy or not free
            except Exception:  # the database may be away for a moment: keep the loop alive
                log.exception("delivery loop failed; retrying")
                free = 1
            if free <= 0:  # every thread sending: wait for one to finish, never spin
                wait(inflight, timeout=tuning.poll_seconds, return_when=FIRST_COMPLETED)
            elif not busy:
                stop.wait(tuning.poll_seconds)
        wait(inflight)  # sends in flight finish and are recorded before the worker exits
    recorder.close()
