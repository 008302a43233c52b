"""A sample product signing people in through Identity Bridge (any stock OIDC client works;
this one is Authlib's Flask client) and listening to its events (standardwebhooks verifier).

    BRIDGE_URL=http://127.0.0.1:8000 CLIENT_ID=... CLIENT_SECRET=... WEBHOOK_SECRET=whsec_... \
        flask --app examples/product/app.py run --port 5000
"""

import os
import secrets

from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, jsonify, redirect, request, session, url_for
from joserfc import jwt
from joserfc.jwk import KeySet
from standardwebhooks import Webhook

SESSIONS: dict[str, dict] = {}  # the product's own sessions, server-side: what logout drops


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_hex(16),
        **{
            k: os.environ.get(k)
            for k in ("BRIDGE_URL", "CLIENT_ID", "CLIENT_SECRET", "WEBHOOK_SECRET")
        },
    )
    app.config.update(config or {})
    oauth = OAuth(app)
    bridge = oauth.register(
        "bridge",
        client_id=app.config["CLIENT_ID"],
        client_secret=app.config["CLIENT_SECRET"],
        server_metadata_url=f"{app.config['BRIDGE_URL']}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )

    def drop(**match: str) -> None:
        for key, person in list(SESSIONS.items()):
            if all(person.get(k) == v for k, v in match.items()):
                del SESSIONS[key]

    @app.get("/")
    def home():
        person = SESSIONS.get(session.get("id", ""))
        return jsonify(person) if person else redirect(url_for("login"))

    @app.get("/login")
    def login():
        return bridge.authorize_redirect(url_for("callback", _external=True))

    @app.get("/callback")
    def callback():
        token = bridge.authorize_access_token()  # checks state, the ID token's signature, nonce
        claims, info = token["userinfo"], bridge.userinfo(token=token)
        session["id"] = secrets.token_urlsafe(16)
        SESSIONS[session["id"]] = {
            "sub": claims["sub"],
            "sid": claims.get("sid"),
            "email": claims.get("email"),
            "role": claims["role"],
            "environments": claims["environments"],
            "grants": info["grants"],
        }
        return redirect("/")

    @app.post("/backchannel-logout")  # OpenID Back-Channel Logout 1.0 §2.5
    def backchannel_logout():
        keys = KeySet.import_key_set(bridge.fetch_jwk_set())
        token = jwt.decode(request.form.get("logout_token", ""), keys)
        c = token.claims
        events = c.get("events", {})
        if (
            c.get("iss") != app.config["BRIDGE_URL"]
            or c.get("aud") not in (app.config["CLIENT_ID"], [app.config["CLIENT_ID"]])
            or "http://schemas.openid.net/event/backchannel-logout" not in events
        ):
            abort(400)
        drop(**({"sid": c["sid"]} if c.get("sid") else {"sub": c["sub"]}))
        return "", 200

    @app.post("/webhooks")
    def webhooks():
        event = Webhook(app.config["WEBHOOK_SECRET"]).verify(request.get_data(), request.headers)
        if event["type"] in ("user.deactivated", "user.deleted"):
            drop(sub=event["data"]["user"]["id"])
        return "", 204

    return app
