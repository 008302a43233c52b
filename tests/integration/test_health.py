"""/healthz and /readyz, and the app-wide JSON error handling."""

import dataclasses

import pytest

from bridge import create_app, schema
from bridge.store import Store


@pytest.fixture
def app_on(settings):
    """Apps on other databases, their connections closed after the test."""
    made = []

    def make(url):
        app = create_app(dataclasses.replace(settings, database_url=url))
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["bridge.store"].dispose()


def test_healthz_answers_while_process_is_up(client):
    """Liveness needs nothing but the process."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_ok_at_head(client):
    """A reachable database at the newest migration is ready."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ok" and response.json["schema"] == schema.head()


def test_readyz_reports_unmigrated_database(empty_database_url, app_on):
    """A database that was never migrated is not ready, and the reason says what to run."""
    app = app_on(empty_database_url())
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "idbridge db upgrade" in response.json["reason"]
    assert "at nothing" in response.json["reason"]


def test_readyz_reports_database_behind_head(empty_database_url, app_on):
    """A database at an older migration than the code's head is not ready, and says so."""
    url = empty_database_url()
    store = Store(url)
    schema.upgrade(store.engine, "0001")
    store.dispose()
    response = app_on(url).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["reason"].startswith(
        f"database schema at 0001, code expects {schema.head()}"
    )


def test_readyz_reports_unreachable_database(app_on):
    """An unreachable database is a 503 with a reason, not a 500."""
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    response = app_on(url).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "reason": "database unreachable"}


def test_unknown_url_is_json_404(client):
    """Unknown URLs answer JSON, never an HTML page."""
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.is_json and response.json["error"] == "Not Found"


def test_request_id_is_echoed_or_made(client):
    """A sane X-Request-ID is echoed back; otherwise one is generated."""
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "<script>"}).headers["X-Request-ID"]
    assert made != "<script>" and len(made) == 16


def test_unexpected_error_is_bare_500(settings, app_on):
    """An unexpected exception is logged and answered without a traceback."""
    app = app_on(settings.database_url)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 500
    assert response.json == {"error": "Internal Server Error", "request_id": "req-1"}
    assert b"secret internals" not in response.data


def test_oversized_body_is_413(client, app):
    """A body over the configured limit is refused before the app reads it."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/healthz", data=b"x" * (limit + 1))
    assert response.status_code == 413
    assert response.is_json


def test_no_flask_cookie_session(app, client):
    """Nothing is kept in Flask's signed cookie (bridge.web.NoCookieSession): a value put in
    `flask.session` by mistake is refused, not sent to the browser, and a `session` cookie a
    client sends is never read nor answered."""
    import flask

    with app.test_request_context("/healthz"):
        assert flask.session.get("anything") is None
        with pytest.raises(RuntimeError, match="keeps nothing in Flask's cookie session"):
            flask.session["role"] = "admin"
    client.set_cookie("session", "eyJyb2xlIjoiYWRtaW4ifQ.forged.sig")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
