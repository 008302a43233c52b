"""Secrets at rest (SP private keys): sealed with AES-256-GCM under a key derived from the
deployment's BRIDGE_SECRET_KEY, never stored in plain text."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CONTEXT = b"identity-bridge sealed secret v1"


def _key(secret_key: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=CONTEXT).derive(secret_key.encode())


def seal(secret_key: str, plaintext: bytes) -> str:
    """Ciphertext (base64) that only the same BRIDGE_SECRET_KEY opens."""
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, plaintext, CONTEXT)
    return base64.b64encode(nonce + sealed).decode()


def unseal(secret_key: str, token: str) -> bytes:
    """The plaintext; raises if the key is not the one that sealed it or the text was changed."""
    raw = base64.b64decode(token)
    return AESGCM(_key(secret_key)).decrypt(raw[:12], raw[12:], CONTEXT)
