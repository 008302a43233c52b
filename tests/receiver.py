"""A local webhook receiver on a loopback port picked at run time: verifies every delivery with
the `standardwebhooks` package and can fail, answer 410 or be slow on demand."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


class Receiver:
    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.fail_next = 0  # answer 500 to this many requests first
        self.status = 204
        self.delay = 0.0
        self.reply = b""  # the body of every answer
        self.received: list[dict] = []  # verified payloads, in arrival order
        self.arrived: dict[str, float] = {}  # event id -> first arrival (monotonic)
        self.counts: Counter[str] = Counter()
        self.forms: list[bytes] = []  # non-webhook posts (back-channel logout)
        self.rejected = 0
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = receiver.handle(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(code)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if "webhook-id" not in headers:
                self.forms.append(body)
                return 200
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500
            self.headers.append(headers)
            for secret in self.secrets:
                try:
                    payload = Webhook(secret).verify(body, headers)
                except Exception:  # noqa: S112 - not this secret: try the next one
                    continue
                assert payload == json.loads(body)
                self.received.append(payload)
                self.counts[payload["id"]] += 1
                self.arrived.setdefault(payload["id"], time.monotonic())
                return self.status
            self.rejected += 1
            return 400

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
