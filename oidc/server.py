"""Authlib's OAuth 2.0 / OIDC server wired to the bridge's services (no protocol by hand).

Authorization code flow (RFC 6749 §4.1) with PKCE (RFC 7636; S256 only, required for public
clients) and the OpenID Connect code extension (ID tokens with nonce and auth_time). Clients,
codes, tokens and keys live in bridge/ (clients, authcodes, signing_keys); this module only
adapts them to Authlib's mixins.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, current_app
from joserfc.jwk import ECKey
from sqlalchemy import exists, select

from bridge import authcodes, claims, clients, signing_keys
from bridge.models import OidcCode, User, utcnow
from bridge.web import get_store

SCOPES = ("openid", "profile", "email")
ID_TOKEN_SECONDS = 3600


def _base_url() -> str:
    return str(current_app.config["BRIDGE_SETTINGS"].base_url)


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


@dataclass(frozen=True)
class Client(ClientMixin):  # type: ignore[misc]
    info: clients.ClientInfo

    def get_client_id(self) -> str:
        return self.info.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # OIDC Core §3.1.2.1: redirect_uri is required

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.info.redirect_uris  # exact match, RFC 9700 §4.1.3

    def check_client_secret(self, client_secret: str) -> bool:
        return self.info.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return True
        if self.info.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass(frozen=True)
class Person:
    """The signed-in user a code is issued to, and the login session it came from."""

    user_id: uuid.UUID
    session_id: int | None
    auth_time: datetime


@dataclass(frozen=True)
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: authcodes.Code

    def get_redirect_uri(self) -> str:
        return self.code.redirect_uri

    def get_scope(self) -> str:
        return self.code.scope

    def get_nonce(self) -> str | None:
        return self.code.nonce

    def get_auth_time(self) -> int:
        return int(self.code.auth_time.timestamp())


@dataclass(frozen=True)
class Token(TokenMixin):  # type: ignore[misc]
    info: authcodes.TokenInfo

    def check_client(self, client: Client) -> bool:
        return bool(client.info.pk == self.info.client_pk)

    def get_scope(self) -> str:
        return self.info.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.info.expires - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.info.expires <= utcnow()

    def is_revoked(self) -> bool:
        return self.info.revoked


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        person: Person = request.user
        data = request.payload.data
        authcodes.save_code(
            get_store(),
            code,
            client_pk=request.client.info.pk,
            user_id=person.user_id,
            session_id=person.session_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.payload.scope or "",
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=person.auth_time,
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        claimed = authcodes.claim_code(get_store(), code, client.info.pk)
        return None if claimed is None else Code(claimed)

    def delete_authorization_code(self, authorization_code: Code) -> None:
        """Nothing to do: claim_code used the code up when it was redeemed."""

    def authenticate_user(self, authorization_code: Code) -> Person | None:
        code = authorization_code.code
        with get_store().read() as db:
            user = db.get(User, code.user_id)
            if user is None or user.active is False:
                return None
        return Person(code.user_id, code.session_id, code.auth_time)


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only (`plain` protects nothing), and required of public clients at the
    authorization request already (RFC 9700 §2.1.1), not only at the token request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        super().validate_code_challenge(grant, redirect_uri)
        data = grant.request.payload.data
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        if grant.request.client.info.public and not data.get("code_challenge"):
            raise InvalidRequestError("a public client must send a PKCE code_challenge (S256)")

    def get_authorization_code_challenge(self, authorization_code: Code) -> str | None:
        return authorization_code.code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: Code) -> str | None:
        return authorization_code.code.code_challenge_method


class OpenID(OpenIDCode):  # type: ignore[misc]
    def exists_nonce(self, nonce: str, request: Any) -> bool:
        """A nonce seen before with this client is refused (OIDC Core §15.5.2)."""
        with get_store().read() as db:
            return bool(
                db.scalar(
                    select(
                        exists().where(
                            OidcCode.client_pk == request.client.info.pk, OidcCode.nonce == nonce
                        )
                    )
                )
            )

    def _key(self) -> signing_keys.SigningKey:
        return signing_keys.current(get_store(), _secret_key())

    def resolve_client_private_key(self, client: Client) -> ECKey:
        return ECKey.import_key(self._key().private_pem)

    def get_client_algorithm(self, client: Client) -> str:
        return signing_keys.ALG

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": signing_keys.ALG, "kid": self._key().kid}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": _base_url(),
            "aud": [client.info.client_id],
            "iat": now,
            "exp": now + ID_TOKEN_SECONDS,
        }

    def generate_user_info(self, user: Person, scope: str) -> dict[str, Any]:
        with get_store().read() as db:
            found = claims.identity(db, user.user_id) or {"sub": str(user.user_id)}
        if user.session_id is not None:
            found["sid"] = str(user.session_id)  # OpenID Back-Channel Logout 1.0 §2.1
        return found


class Validator(BearerTokenValidator):  # type: ignore[misc]
    def authenticate_token(self, token_string: str) -> Token | None:
        with get_store().read() as db:
            info = authcodes.find_token(db, token_string)
        return None if info is None else Token(info)


def _query_client(client_id: str) -> Client | None:
    with get_store().read() as db:
        info = clients.find(db, client_id or "")
    return None if info is None else Client(info)


def _save_token(token: dict[str, Any], request: Any) -> None:
    authcodes.issue_token(
        get_store(),
        token["access_token"],
        request.authorization_code.code,
        expires_in=int(token["expires_in"]),
    )


def make_server(app: Flask) -> tuple[AuthorizationServer, ResourceProtector]:
    app.config.setdefault(
        "OAUTH2_TOKEN_EXPIRES_IN",
        {"authorization_code": int(authcodes.TOKEN_LIFETIME.total_seconds())},
    )
    server = AuthorizationServer(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(CodeGrant, [OpenID(require_nonce=False), S256Challenge(required=True)])
    protector = ResourceProtector()
    protector.register_token_validator(Validator())
    return server, protector
