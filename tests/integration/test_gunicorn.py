"""The service as deployed: gunicorn with the project's config, on a real socket."""

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest

from bridge import accounts, serving
from tests.servers import GUNICORN, Gunicorn


@pytest.fixture
def server_with_log(database_url, tmp_path):
    """gunicorn serving the app on a free loopback port (one worker), stopped after the test."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    server = Gunicorn(database_url, tmp_path, workers=1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(server_with_log):
    """That server's port."""
    return server_with_log.port


def test_oversized_post_gets_a_413_the_client_receives(server, account):
    """A 32 MiB POST straight to gunicorn (no proxy) gets its 413, not a reset connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    body = b"SAMLResponse=" + b"A" * (32 * 1024 * 1024)
    conn.request(
        "POST",
        f"/saml/{account.slug}/acs",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    try:
        assert response.status == 413
        assert b"<html" in response.read().lower()
    finally:
        conn.close()


def test_readyz_and_request_id_through_gunicorn(server):
    """readyz answers 200 through gunicorn, echoing the request id."""
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    conn.request("GET", "/readyz", headers={"X-Request-ID": "via-gunicorn"})
    response = conn.getresponse()
    try:
        assert response.status == 200 and response.getheader("X-Request-ID") == "via-gunicorn"
    finally:
        conn.close()


def test_no_metrics_by_default_through_gunicorn(server):
    """A deployment that configured nothing serves no /metrics on its public port."""
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    try:
        assert response.status == 404 and b"bridge_" not in response.read()
    finally:
        conn.close()


def healthz_answers(port):
    """/healthz answers 200 three times in a row, each within 5 seconds."""
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and b'"ok"' in response.read()
        finally:
            conn.close()


def post(port, path, body, content_type):
    """(status, body) of one POST on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def held_open(port, beginnings):
    """A connection per item of `beginnings`, each sent that much of a request and held."""
    held = []
    try:
        for data in beginnings:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(data)
            held.append(s)
        yield
    finally:
        for s in held:
            s.close()


def test_slow_clients_do_not_starve_healthz(server):
    """40 connections each holding a partial request header (slowloris) leave /healthz
    answering, and a SCIM-sized POST body still streams through, while they hold on."""
    with held_open(server, [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "] * 40):
        healthz_answers(server)
        body = b'{"userName": "' + b"x" * 200_000 + b'"}'
        status, answer = post(server, "/scim/v2/Users", body, "application/scim+json")
        assert status == 401  # read whole, judged by the app: no token
        assert b"Bearer" in answer


def test_slow_request_bodies_do_not_starve_healthz(server, account):
    """40 connections each sending a complete header and part of a body the app would accept
    (announced small or large, or chunked: slow or stalled uploads) hold coroutines, not the
    app's threads: /healthz answers meanwhile, and a SAML response posted whole is judged."""
    form = "application/x-www-form-urlencoded"
    framing = [
        "Content-Length: 2000\r\n\r\nSAMLResponse=",
        "Content-Length: 900000\r\n\r\nSAMLResponse=",  # under BRIDGE_MAX_REQUEST_BYTES
        "Transfer-Encoding: chunked\r\n\r\nd\r\nSAMLResponse=\r\n",
    ]
    head = f"POST /saml/{account.slug}/acs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {form}\r\n"
    with held_open(server, [(head + framing[i % 3]).encode() for i in range(40)]):
        time.sleep(0.5)  # every one of them is in the server by now
        healthz_answers(server)
        status, _ = post(
            server, f"/saml/{account.slug}/acs", b"SAMLResponse=bm90IHhtbA%3D%3D", form
        )
        assert status == 400  # read whole and refused by the app: not XML


def test_a_streamed_response_arrives_whole_and_the_connection_stays_usable(server, store, account):
    """A SCIM group with members is streamed (a chunk per member, sent through the loop in
    pieces of STREAM_BUFFER bytes, the last with the end): each GET of a group longer than one
    piece, on one keep-alive connection, reads the whole document, and the next request on
    that connection is answered."""
    token = accounts.issue_token(store, account.slug, label="stream", actor="test").raw
    scim = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)

    def call(method, path, body=None):
        data = json.dumps(body) if body else None
        conn.request(method, f"/scim/v2/{path}", body=data, headers=scim)
        response = conn.getresponse()
        return response.status, response.read()

    try:
        ids = [
            json.loads(call("POST", "Users", {"userName": f"s{i}@x.test"})[1])["id"]
            for i in range(500)
        ]
        members = {"displayName": "streamed", "members": [{"value": i} for i in ids]}
        status, created = call("POST", "Groups", members)
        assert status == 201
        for _ in range(2):
            status, raw = call("GET", f"Groups/{json.loads(created)['id']}")
            assert status == 200 and len(raw) > serving.STREAM_BUFFER  # in two pieces
            assert sorted(m["value"] for m in json.loads(raw)["members"]) == sorted(ids)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    finally:
        conn.close()


def test_worker_sets_its_startup_heap_aside_from_the_collector(database_url, tmp_path):
    """Each worker, once the app is loaded, freezes what exists (gc.freeze) and logs how many
    objects: full collections later walk only newer objects instead of stopping every request
    thread for the whole startup heap (bench/saml's p99). The worker serves normally after.
    Its app threads are 4 on PostgreSQL and 1 on SQLite (gunicorn.conf.py says why)."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    server = Gunicorn(database_url, tmp_path, workers=2).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        conn.close()
        deadline = time.monotonic() + 60  # the second worker may still be loading the app
        while True:
            counts = [int(n) for n in re.findall(r"(\d+) startup objects set aside", server.log())]
            if len(counts) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # one line per worker; the app, SQLAlchemy and lxml make well over 50,000 objects
        assert len(counts) == 2 and min(counts) > 50_000, server.log()[-2000:]
        threads = re.findall(r"the app runs in (\d+) thread", server.log())
        assert threads == ["1" if database_url.startswith("sqlite") else "4"] * 2, threads
        # gunicorn's asyncio worker would warn that `threads` is unused: here it sizes the pool
        assert "does not use threads" not in server.log(), server.log()[-2000:]
    finally:
        server.stop()


def test_control_socket_only_at_a_path_of_its_own(database_url, tmp_path):
    """gunicorn's control socket is off by default (its default path is shared by every gunicorn
    of the user: another server would take it over); GUNICORN_CONTROL_SOCKET puts it at a path
    of this server's own, which the master removes when it stops."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    bare = Gunicorn(database_url, tmp_path / "bare", workers=1, env={"GUNICORN_CMD_ARGS": ""})
    bare.start()
    try:
        assert "Control socket" not in bare.log(), bare.log()[-2000:]
    finally:
        bare.stop()
    path = tmp_path / "own.ctl"
    own = Gunicorn(
        database_url,
        tmp_path / "own",
        workers=1,
        env={"GUNICORN_CMD_ARGS": "", "GUNICORN_CONTROL_SOCKET": str(path)},
    )
    own.start()
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.is_socket() and f"Control socket listening at {path}" in own.log()
        assert path.stat().st_mode & 0o077 == 0  # its owner's only
    finally:
        own.stop()
    assert not path.exists()


def test_the_access_log_is_a_json_line_per_request_whatever_the_path(server_with_log):
    """Each request is one access line that parses as JSON, with its request id, method, path
    (decoded), status, bytes and duration. A path whose decoded form holds a line break and a
    forged JSON object stays inside its own line's "path" (gunicorn's format string put it on a
    line of its own), and a backslash or a quote cannot make the line invalid."""
    server = server_with_log
    hostile = '/x%5Cq%22y%0A{"logger":"access","status":200,"forged":true}%C3%A9'
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", hostile, headers={"X-Request-ID": "hostile-path"})
        first = conn.getresponse()
        body = first.read()
        conn.request("GET", "/healthz", headers={"X-Request-ID": "plain-path"})
        second = conn.getresponse()
        second.read()
    finally:
        conn.close()
    assert first.status == 404 and second.status == 200
    ids = {"hostile-path", "plain-path"}
    lines = _access_lines(server, len(ids), lambda line: line["request_id"] in ids)
    parsed = {line["request_id"]: line for line in lines}
    assert len(lines) == 2 and set(parsed) == {"hostile-path", "plain-path"}, lines
    forged = '{"logger":"access","status":200,"forged":true}'
    assert parsed["hostile-path"]["path"] == f'/x\\q"y\n{forged}é'
    assert parsed["hostile-path"]["status"] == 404
    assert parsed["hostile-path"]["bytes"] == len(body)
    assert parsed["hostile-path"]["method"] == "GET"
    assert parsed["plain-path"]["path"] == "/healthz" and parsed["plain-path"]["status"] == 200
    assert all(line["ms"] >= 0 and line["remote"] == "127.0.0.1" for line in lines)
    # nothing the client sent became a line of its own
    for raw in server.log().splitlines():
        assert "forged" not in raw or raw.startswith('{"time"'), raw


def test_a_request_gunicorn_refuses_itself_has_an_access_line(server_with_log):
    """A request gunicorn's parser refuses before the app sees it (a request line past
    limit_request_line: 414; more header fields than limit_request_fields: 431; not HTTP: 400)
    is one access line too (bridge.serving._Protocol), with the client's address, the status
    and the body's bytes the client got; no method, path, request id or duration (there was no
    request). gunicorn wrote none: such a client left no trace."""
    server = server_with_log
    refusals = {
        414: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431: b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n",
        400: b"NOT HTTP AT ALL\r\n\r\n",
    }
    bodies = {}
    for status, raw in refusals.items():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(raw)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, bodies[status] = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    # not the app's lines (the /healthz the server was started with): those have a request id
    lines = _access_lines(server, len(refusals), lambda line: line["request_id"] is None)
    assert sorted(line["status"] for line in lines) == sorted(refusals), lines
    for line in lines:
        assert line["remote"] == "127.0.0.1" and line["bytes"] == len(bodies[line["status"]])
        assert line["method"] is line["path"] is line["request_id"] is line["ms"] is None, line


def _access_lines(server, count, keep):
    """The access lines `keep` takes, once `count` of them are written (after each response)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [
            json.loads(raw)
            for raw in server.log().splitlines()
            if raw.startswith("{") and '"logger":"access"' in raw
        ]
        lines = [line for line in lines if keep(line)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("defer", "loop"),
    [("0", "its own accepts"), ("2", "connections spread over the workers")],
    ids=["uvloop", "spreading"],
)
def test_the_listening_socket_keeps_gunicorns_backlog(database_url, tmp_path, defer, loop):
    """The kernel's queue of connections not yet accepted is gunicorn's `backlog` (here 321), not
    the 100 an event loop's server listens with by default (bridge.serving._UvLoop): with
    uvloop's own accepts, and with the worker's (bridge.serving._Spreading,
    GUNICORN_ACCEPT_DEFER_MS); the worker's log says which, and it serves."""
    env = {"GUNICORN_CMD_ARGS": "--backlog 321", "GUNICORN_ACCEPT_DEFER_MS": defer}
    server = _with_ss(database_url, tmp_path, 1, env)
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out[0] == "LISTEN" and out[2] == "321", out  # State Recv-Q Send-Q(backlog) ...
        assert f"event loop: uvloop, {loop}" in server.log(), server.log()[-2000:]
        healthz_answers(server.port)
    finally:
        server.stop()


def test_workers_spread_connections_unless_told_not_to(database_url, tmp_path):
    """With GUNICORN_ACCEPT_DEFER_MS unset (or empty), the workers spread connections (a
    worker's app runs on one core: two connections on one worker are served one after the
    other while the other may idle)."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    server = Gunicorn(database_url, tmp_path, env={"GUNICORN_ACCEPT_DEFER_MS": ""}).start()
    try:
        log = server.log()
        assert "event loop: uvloop, connections spread over the workers" in log, log[-2000:]
        healthz_answers(server.port)
    finally:
        server.stop()


def test_keep_alive_connections_spread_evenly_over_the_workers(database_url, tmp_path):
    """Four clients connecting at once to two workers hold two connections on each (uvloop
    took every waiting connection in whichever worker woke first: 4-0 in 4 of 40 trials);
    six, three on each. Each worker's count is on the master's board (bridge.serving._Board).
    Here with GUNICORN_ACCEPT_DEFER_MS set (bridge.serving._Spreading; 10 ms by default), and
    that generously, so a loaded machine cannot make a trial miss."""
    server = _with_ss(database_url, tmp_path, 2, {"GUNICORN_ACCEPT_DEFER_MS": "2000"})
    try:
        deadline = time.monotonic() + 60  # the second worker may still be loading the app
        while len(server.worker_pids()) < 2 or "startup objects set aside" not in server.log():
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.2)
        time.sleep(1)  # both workers' loops serving
        for clients in (4, 6, 4):
            assert _split(server.port, clients) == [clients // 2] * 2
    finally:
        server.stop()


def test_a_bad_accept_defer_setting_stops_gunicorn_before_it_serves(database_url, tmp_path):
    """An operator's typo or `inf` in GUNICORN_ACCEPT_DEFER_MS is not silently off (or endless):
    gunicorn exits at start, its log naming the variable and what it takes; nothing listens."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    for bad in ("2ms", "inf"):
        server = Gunicorn(database_url, tmp_path / bad, env={"GUNICORN_ACCEPT_DEFER_MS": bad})
        with pytest.raises(RuntimeError, match="gunicorn exited") as refused:
            server.start(timeout=30)
        assert (
            f"GUNICORN_ACCEPT_DEFER_MS must be milliseconds from 0 (off) to 10000, e.g. 2; "
            f"got '{bad}'" in str(refused.value)
        ), server.log()[-2000:]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def _with_ss(database_url, tmp_path, workers, env):
    """gunicorn started for a test that reads its sockets with `ss` (skipped without either)."""
    if not GUNICORN.exists():
        pytest.skip("gunicorn is installed by `make test`; this interpreter has none")
    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) shows sockets' backlogs and owners; this machine has none")
    return Gunicorn(database_url, tmp_path, workers=workers, env=env).start()


def _split(port, clients):
    """Open `clients` keep-alive connections at once, each answered once; how many each worker
    process holds (largest first), read with ss; then close them."""
    barrier = threading.Barrier(clients)
    conns = []

    def connect():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
        conns.append(conn)

    threads = [threading.Thread(target=connect) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        held = Counter(re.findall(r"pid=(\d+)", out))
        return sorted(held.values(), reverse=True)
    finally:
        for conn in conns:
            conn.close()
        time.sleep(0.3)  # the workers see the closes
