"""OpenTelemetry tracing: off unless BRIDGE_OTLP_ENDPOINT names an OTLP/HTTP collector.

When on, every request is a span (Flask instrumentation, named by its route template and
carrying `bridge.request_id`, the id of the JSON logs and X-Request-ID), every SQL statement a
child span (SQLAlchemy instrumentation), and each provisioning step a span of its own
(`@step`). When off, nothing is imported or wrapped and a step costs one check. The tracer
provider is the app's own (never the process-global one), so apps in one process do not mix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, g

from bridge.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
EXTENSION = "bridge.tracing"
_tracer: Any = None  # the tracer of the process's traced app; None while tracing is off


def init_app(app: Flask, settings: Settings, engine: Any, exporter: Any = None) -> None:
    """Trace `app` and `engine` when an OTLP endpoint is configured (or `exporter` is given)."""
    global _tracer
    if exporter is None and not settings.otlp_endpoint:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and _CERTIFICATE still apply.
        endpoint = str(settings.otlp_endpoint).rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
    resource = Resource.create({"service.name": "identity-bridge"})  # OTEL_SERVICE_NAME wins
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)  # type: ignore[no-untyped-call]
    # The instrumentor declares SQLAlchemy < 2.1 and patches create_engine process-wide (and
    # imports asyncio support, which needs greenlet); its EngineTracer alone listens to this one
    # engine's events, which 2.1 keeps (tests/integration/test_tracing.py sees the SQL spans).
    EngineTracer(  # type: ignore[no-untyped-call]
        provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"),
        engine,
        NoOpMeter("bridge").create_up_down_counter("db.client.connections.usage"),
    )
    app.after_request(_tag_request)
    app.extensions[EXTENSION] = provider
    _tracer = provider.get_tracer("bridge")


def _tag_request(response: Response) -> Response:
    from opentelemetry import trace

    if "request_id" in g:
        trace.get_current_span().set_attribute("bridge.request_id", g.request_id)
    return response


def step(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function in a span named `name` while tracing is on."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None:
                return fn(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return fn(*args, **kwargs)

        return traced

    return wrap


def shutdown(app: Flask) -> None:
    """Send what is buffered and stop tracing (an exiting process does this by itself)."""
    global _tracer
    provider = app.extensions.pop(EXTENSION, None)
    if provider is not None:
        provider.shutdown()
        _tracer = None
