"""OpenTelemetry tracing: off by default; with BRIDGE_OTLP_ENDPOINT a SCIM create reaches an
OTLP/HTTP collector as a request span carrying the request id, its SQL spans and a span per
provisioning step."""

from __future__ import annotations

import gzip
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bridge import accounts, create_app, tracing
from tests.conftest import ScimClient


@pytest.fixture
def collector():
    """A minimal OTLP/HTTP trace receiver on a free port: the decoded export requests."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append((self.path, request))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _spans(received):
    out = []
    for _path, request in received:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs = {a.key: a.value for a in span.attributes}
                    out.append((span, attrs))
    return out


def test_tracing_is_off_by_default(app):
    """With no endpoint configured nothing is instrumented."""
    assert tracing.EXTENSION not in app.extensions and tracing._tracer is None
    assert type(app.wsgi_app).__name__ != "_InstrumentedFlask" and "opentelemetry" not in str(
        type(app.wsgi_app)
    )


def test_scim_create_traced_with_request_id_sql_and_steps(settings, store, account, collector):
    """One trace: the request span (route template, status, request id), SQL spans under it,
    and the provisioning steps; delivered over OTLP/HTTP to the configured endpoint."""
    endpoint, received = collector
    app = create_app(replace(settings, otlp_endpoint=endpoint))
    try:
        token = accounts.issue_token(store, account.slug, label="t", actor="t")
        scim = ScimClient(app.test_client(), token.raw, account)
        user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "tr@ex.com"}
        resp = scim.post("Users", json=user, headers={"X-Request-ID": "trace-me-1"})
        assert resp.status_code == 201
    finally:
        tracing.shutdown(app)  # flushes the batch to the collector
        app.extensions["bridge.store"].dispose()
    assert received and all(path == "/v1/traces" for path, _ in received)
    spans = _spans(received)
    [(request_span, attrs)] = [
        (s, a) for s, a in spans if "bridge.request_id" in a and s.name.endswith("/scim/v2/Users")
    ]
    assert attrs["bridge.request_id"].string_value == "trace-me-1"
    assert request_span.name == "POST /scim/v2/Users" and request_span.parent_span_id == b""
    status = attrs.get("http.response.status_code", attrs.get("http.status_code"))
    assert status is not None and status.int_value == 201
    trace = [(s, a) for s, a in spans if s.trace_id == request_span.trace_id]
    names = {s.name for s, _ in trace}
    assert {"provisioning.write", "provisioning.policy"} <= names
    assert "provisioning.match" not in names  # a create does not look: the unique keys refuse
    assert {"provisioning.access", "audit.append"} <= names
    statements = [
        a.get("db.statement", a.get("db.query.text")).string_value
        for s, a in trace
        if "db.statement" in a or "db.query.text" in a
    ]
    # on PostgreSQL the user's rows, the event and the chain's head are one statement
    # (WITH queued0 AS (INSERT INTO users ...), ..., appended AS (INSERT INTO audit_events ...))
    assert any("INSERT INTO users" in q for q in statements)
    assert any("INSERT INTO audit_events" in q for q in statements)
    assert "tr@ex.com" not in " ".join(statements)  # parameters stay out of the spans
    by_id = {s.span_id: s for s, _ in trace}
    for span, _ in trace:  # every span hangs under the request span
        while span.parent_span_id:
            span = by_id[span.parent_span_id]
        assert span.span_id == request_span.span_id
