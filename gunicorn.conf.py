"""gunicorn settings for the bridge; every value can be overridden from the environment."""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# An asyncio worker reads requests (a client sending its header slowly costs a coroutine, not a
# thread: slowloris cannot starve the app); `threads` run the WSGI app (bridge/serving.py).
worker_class = "bridge.serving.Worker"
# How many: 4 overlap PostgreSQL's round trips. On SQLite nothing waits on the network and the
# threads of a worker only contend (for the GIL, and for SQLite's write lock, which a waiter
# polls): one thread per worker served SCIM creates at 1.03-1.04x scim2-server's rate against
# 0.70-0.75x with 4, GETs at 1.65-1.74x against 1.17-1.18x, and SAML logins at 7.2 ms of CPU
# each against 11.1 ms, p99 1.5x p50 against 4x (bench/scim and bench/saml --sqlite, 2 cores).
# The cost of one: a SCIM group streamed to a client that reads slowly holds the worker's app.
_on_sqlite = (os.environ.get("BRIDGE_DATABASE_URL") or "sqlite").startswith("sqlite")
threads = int(os.environ.get("GUNICORN_THREADS") or (1 if _on_sqlite else 4))
worker_connections = int(os.environ.get("GUNICORN_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Reject oversized request lines and headers before they reach the app.
limit_request_line = 8190
limit_request_fields = 100
# gunicorn's control socket (gunicornc: worker counts, reload, shutdown) defaults to one path per
# user ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl): a second gunicorn of that user on the host
# takes it over, gunicornc then steers the wrong server, and the first to exit removes the other's
# socket. Off, unless GUNICORN_CONTROL_SOCKET names a path of this server's own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
# A JSON line per request on stdout (bridge.serving.AccessLog): the request id the app echoes in
# X-Request-ID ties it to the app's JSON logs.
accesslog = "-"
logger_class = "bridge.serving.AccessLog"

# Prometheus multiprocess mode (bridge/metrics.py): each worker writes its samples to files in one
# directory that a scrape adds up. It must be set before a worker imports prometheus_client, so
# here, in the master; a directory of our own is removed when the master exits.
# (A reload on SIGHUP reads this file again: the environment remembers whose directory it is.)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bridge-metrics-")
    os.environ["BRIDGE_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    """Drop samples a previous master left in an operator-given directory."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def when_ready(server):
    """The separate metrics listener, served by the master (BRIDGE_METRICS_BIND=host:port)."""
    bind = os.environ.get("BRIDGE_METRICS_BIND")
    if bind:
        from bridge import metrics

        metrics.serve(bind)
        server.log.info("metrics on http://%s/metrics", bind)


def child_exit(server, worker):
    """A dead worker's live gauges (pool connections in use) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get("BRIDGE_OWN_METRICS_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)
