"""gunicorn settings for the bridge; every value can be overridden from the environment."""

import os

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Reject oversized request lines and headers before they reach the app.
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
# The request id the app echoes in X-Request-ID ties each access line to the app's JSON logs.
access_log_format = (
    '{"time":"%(t)s","request_id":"%({x-request-id}o)s","remote":"%(h)s",'
    '"method":"%(m)s","path":"%(U)s","status":%(s)s,"bytes":"%(B)s","ms":%(M)s}'
)
