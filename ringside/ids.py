"""Identifier and secret generation: prefixed, random, URL-safe."""

from __future__ import annotations

import hashlib
import secrets
import string

_BASE62 = string.digits + string.ascii_letters
API_KEY_PREFIX = "sk_live_"


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}_{secrets.token_hex(nbytes)}"


def new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def new_api_key() -> str:
    return API_KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(40))


def hash_api_key(key: str) -> bytes:
    # Keys carry ~238 bits of entropy, so a fast unsalted digest is safe and lets the
    # lookup be a plain index probe.
    return hashlib.sha256(key.encode()).digest()
