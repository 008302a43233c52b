"""`idbridge dev-idp`: the development IdP (saml/devidp.py), for trying SSO on one machine."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bridge import accounts, idps
from bridge.errors import BridgeError
from bridge.settings import Settings
from bridge.store import Store
from saml import devidp

DEFAULT_URL = "http://127.0.0.1:8100"


def _url() -> str:
    return (os.environ.get("BRIDGE_DEV_IDP_URL") or DEFAULT_URL).rstrip("/")


def _home(settings: Settings) -> Path:
    return settings.instance_path / "dev-idp"


@click.group("dev-idp")
def dev_idp() -> None:
    """A development IdP that signs in whoever you type (never expose it)."""


@dev_idp.command("register")
@click.argument("slug")
def register(slug: str) -> None:
    """Register the dev IdP with account SLUG (idempotent) and print its login URL."""
    settings = Settings.from_env()
    _key, cert = devidp.keys(_home(settings))
    xml = devidp.metadata(_url(), cert)
    store = Store(settings.database_url)
    try:
        with store.read() as db:
            account = accounts.get_account(db, slug)
            names = {i.name for i in idps.list_for(db, account.id)}
        if "dev" in names:
            idps.refresh(store, slug, "dev", xml=xml, actor="cli:dev-idp")
        else:
            idps.add(store, slug, xml, name="dev", actor="cli:dev-idp")
    except BridgeError as exc:
        raise click.ClickException(exc.detail) from exc
    finally:
        store.dispose()
    click.echo(
        f"dev IdP registered with {slug}; sign in at {settings.base_url}/saml/{slug}/login?idp=dev"
    )


@dev_idp.command("serve")
@click.option("--port", default=None, type=int, help="Default: the port of BRIDGE_DEV_IDP_URL.")
def serve(port: int | None) -> None:
    """Run the dev IdP (Flask's development server, loopback only)."""
    from urllib.parse import urlsplit

    settings = Settings.from_env()
    url = _url()
    port = port or urlsplit(url).port or 8100
    app = devidp.create_app(_home(settings), url)
    app.run(host="127.0.0.1", port=port, debug=False, use_reloader=False)


COMMANDS = (dev_idp,)
