"""Real servers for the operations tests: gunicorn with the project's config on a free port, an
HTTP client that never reuses a connection, and a SCIM + SAML load that remembers what was
acknowledged."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def call(port, method, path, *, body=None, headers=None, timeout=30) -> Reply:
    """One request on a fresh connection (raises OSError/HTTPException if the server drops it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes | str | None) else json.dumps(body)
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@dataclass
class Gunicorn:
    """`gunicorn --config gunicorn.conf.py "bridge:create_app()"`, as the Procfile runs it."""

    database_url: str
    instance: Path
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Gunicorn:
        self.port = self.port or free_port()
        self.log_path = self.instance / f"gunicorn-{self.port}.log"
        env = {
            **os.environ,
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "BRIDGE_DATABASE_URL": self.database_url,
            "BRIDGE_INSTANCE_PATH": str(self.instance),
            "BRIDGE_BASE_URL": f"http://127.0.0.1:{self.port}",
            "BRIDGE_LOG_LEVEL": "WARNING",
            **self.env,
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each master makes its own
        self.instance.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(GUNICORN), "--config", "gunicorn.conf.py", "bridge:create_app()"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()[-2000:]}")
            try:
                if call(self.port, "GET", "/healthz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not come up: {self.log()[-2000:]}")

    def worker_pids(self) -> list[int]:
        """The master's live children (its workers)."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
