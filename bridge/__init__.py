"""Identity Bridge: SAML 2.0 SSO and SCIM 2.0 provisioning into the account store."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import FunctionType
from typing import Any

from flask import Flask

from bridge.settings import Settings

ADAPTERS = ("scim", "saml", "api", "oidc", "console")


class App(Flask):
    """Flask, asking once per function whether a hook or view is a coroutine function: Flask
    asks at every call (ensure_sync: four calls into inspect, a dozen times a request)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        found = self._sync.get(func)
        if found is None:
            found = super().ensure_sync(func)
            if isinstance(func, FunctionType):  # a bound method is a new object at every access
                self._sync[func] = found
        return found


def create_app(config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """The WSGI app. `config` may be Settings, or overrides of the settings read from the env."""
    from bridge import logs, metrics, tracing, web
    from bridge.store import Store

    if not isinstance(config, Settings):
        config = Settings.from_env(**dict(config or {}))
    settings = config.ensure_folders().ensure_secret_key()
    app = App(__name__, instance_path=str(settings.instance_path))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        BRIDGE_SETTINGS=settings,
    )
    logs.configure(settings.log_level)
    store = Store(settings.database_url, policy_dir=settings.policy_dir)
    metrics.instrument_store(store.sessions, store.engine)
    metrics.init_app(app, settings)  # first, so its clock starts before any other hook runs
    web.init_app(app, store)
    tracing.init_app(app, settings, store.engine)
    for adapter in ADAPTERS:  # the composition root: the only place bridge/ names its adapters
        importlib.import_module(adapter).init_app(app)
    return app
