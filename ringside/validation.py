"""Checks for JSON request bodies that are stored: objects, text, metadata, small integers.

Every string that reaches PostgreSQL goes through :func:`text` (or is an id matched exactly), so
no NUL or other control character is ever stored, and every length is bounded. Prose (an
assistant's instructions, a message's text) goes through :func:`free_text` instead: newlines
and tabs are its content, so only NUL is refused there (and length still bounded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ringside.errors import InvalidRequest

# OpenAI's metadata rule (assistants, threads, batches, ...).
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
INT32_MAX = 2**31 - 1


def body_object(body: Any, allowed: Iterable[str]) -> dict[str, Any]:
    """The body as a dict; an unknown field is refused, so a typo never passes silently."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    known = set(allowed)
    for name in body:
        if name not in known:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name!r}.", param=str(name)[:64]
            )
    return body


def text(value: Any, param: str, *, max_len: int, min_len: int = 1, strip_ok: bool = True) -> str:
    """A printable string of ``min_len`` to ``max_len`` characters. Unless ``strip_ok``,
    leading or trailing whitespace is refused (for identifiers)."""
    if (
        not isinstance(value, str)
        or not min_len <= len(value) <= max_len
        or not value.isprintable()
        or (not strip_ok and value != value.strip())
        or (min_len > 0 and not value.strip())
    ):
        extra = "" if strip_ok else ", without surrounding whitespace"
        raise InvalidRequest(
            f"'{param}' must be a string of {min_len} to {max_len} printable characters{extra}.",
            param=param,
        )
    return value


def optional_text(value: Any, param: str, *, max_len: int, strip_ok: bool = True) -> str | None:
    return None if value is None else text(value, param, max_len=max_len, strip_ok=strip_ok)


def email(value: Any, param: str = "email") -> str | None:
    if value is None:
        return None
    address = text(value, param, max_len=320, strip_ok=False)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or " " in address:
        raise InvalidRequest(f"'{param}' must be an email address.", param=param)
    return address


def metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata: at most 16 string keys (64 characters) to string values (512)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object of string values.", param=param)
    if len(value) > METADATA_MAX_KEYS:
        raise InvalidRequest(f"'{param}' can hold at most {METADATA_MAX_KEYS} keys.", param=param)
    for key, item in value.items():
        text(key, f"{param} key", max_len=METADATA_MAX_KEY)
        # Values are free text, as at OpenAI (newlines included); only NUL is refused.
        if not isinstance(item, str) or len(item) > METADATA_MAX_VALUE or "\x00" in item:
            raise InvalidRequest(
                f"'{param}.{key}' must be a string of at most {METADATA_MAX_VALUE} characters.",
                param=f"{param}.{key}",
            )
    return dict(value)


def positive_int(value: Any, param: str, *, maximum: int = INT32_MAX) -> int | None:
    """A positive integer (``null`` allowed: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRequest(
            f"'{param}' must be an integer from 1 to {maximum}, or null.", param=param
        )
    return value


def free_text(value: Any, param: str, *, max_len: int, min_len: int = 0) -> str:
    """Prose (instructions, descriptions, message text): any characters, newlines included,
    ``min_len`` to ``max_len`` of them. NUL never arrives here (``read_json`` refuses it)."""
    if not isinstance(value, str) or not min_len <= len(value) <= max_len or "\x00" in value:
        raise InvalidRequest(
            f"'{param}' must be a string of {min_len} to {max_len} characters.", param=param
        )
    return value


def optional_free_text(value: Any, param: str, *, max_len: int) -> str | None:
    return None if value is None else free_text(value, param, max_len=max_len)
